package chat

import (
	"maps"
	"net"
	"testing"
)

// TestStats runs a scripted session over net.Pipe and checks every count.
func TestStats(t *testing.T) {
	srv := &Server{MaxConns: 2}
	defer srv.Close()
	var conns []net.Conn
	served := make(chan error, 3)
	serve := func() *raw {
		c, s := net.Pipe()
		conns = append(conns, c)
		go func() { served <- srv.ServeConn(s) }()
		return newRaw(t, c)
	}
	a, b := serve(), serve()
	a.do(AppendLogin(nil, "alice"), ResultOK)
	b.do(AppendLogin(nil, "bob"), ResultOK)
	serve() // refused: MaxConns
	if err := <-served; err != ErrTooManyConns {
		t.Fatalf("third connection: %v", err)
	}
	st := srv.Stats()
	if st.Conns != 2 || st.Users != 2 || st.ConnsAccepted != 2 || st.ConnsRefused != 1 {
		t.Errorf("after logins: %+v", st)
	}

	a.do(AppendLogin(nil, "alice"), ResultFailure)       // already logged in
	b.do(AppendSendTo(nil, "carol", "x"), ResultFailure) // no recipient
	a.do(AppendSendTo(nil, "bob", "hello"), ResultOK)
	b.expectMessage("alice", "hello")
	if got := a.list(); len(got) != 2 {
		t.Fatalf("list: %q", got)
	}
	a.do(withBody(0x7f), ResultMalformed)
	b.do(AppendLogout(nil), ResultOK)
	b.do(AppendLogout(nil), ResultFailure) // not logged in

	st = srv.Stats()
	wantIn := map[string]uint64{"login": 3, "list": 1, "sendto": 2, "logout": 2, "malformed": 1}
	wantOut := map[string]uint64{"RESPONSE": 8, "LIST": 1, "SENDTO": 1}
	wantFail := map[string]uint64{"already_logged_in": 1, "no_recipient": 1, "not_logged_in": 1}
	for name := range st.Failures {
		if _, ok := wantFail[name]; !ok {
			wantFail[name] = 0
		}
	}
	if !maps.Equal(st.FramesIn, wantIn) {
		t.Errorf("FramesIn = %v, want %v", st.FramesIn, wantIn)
	}
	if !maps.Equal(st.FramesOut, wantOut) {
		t.Errorf("FramesOut = %v, want %v", st.FramesOut, wantOut)
	}
	if !maps.Equal(st.Failures, wantFail) {
		t.Errorf("Failures = %v, want %v", st.Failures, wantFail)
	}
	if st.Relayed != 1 || st.Users != 1 {
		t.Errorf("Relayed %d, Users %d; want 1, 1", st.Relayed, st.Users)
	}
	// Bytes: everything both clients sent, and everything they read.
	wantBytesIn := len(AppendLogin(nil, "alice"))*2 + len(AppendLogin(nil, "bob")) +
		len(AppendSendTo(nil, "carol", "x")) + len(AppendSendTo(nil, "bob", "hello")) +
		len(AppendList(nil)) + len(withBody(0x7f)) + 2*len(AppendLogout(nil))
	wantBytesOut := 8*len(AppendResponse(nil, ResultOK)) + len(AppendNames(nil, []string{"alice", "bob"})) +
		len(AppendMessage(nil, "alice", []byte("hello")))
	if st.BytesIn != uint64(wantBytesIn) {
		t.Errorf("BytesIn %d, want %d", st.BytesIn, wantBytesIn)
	}

	// Closed connections keep counting.
	for _, c := range conns {
		c.Close()
	}
	for range 2 {
		<-served
	}
	after := srv.Stats()
	if after.Conns != 0 || after.Users != 0 || after.BytesIn != st.BytesIn || after.FramesIn["login"] != 3 {
		t.Errorf("after closing: %+v", after)
	}
	// Bytes out are counted once written, which the client may see first:
	// check them once the connections are gone.
	if after.BytesOut != uint64(wantBytesOut) {
		t.Errorf("BytesOut %d, want %d", after.BytesOut, wantBytesOut)
	}
}
