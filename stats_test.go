package chat

// Server.Stats after a scripted session over net.Pipe: every count known in
// advance, and the bytes checked against what the clients wrote and read.

import (
	"errors"
	"io"
	"maps"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// statsConn is the server's end of a pipe: its writes can be made to fail
// as a write that makes no progress before its deadline does, which is how
// the server meets a slow consumer, without waiting for WriteTimeout.
type statsConn struct {
	net.Conn
	stuck atomic.Bool
}

func (c *statsConn) Write(b []byte) (int, error) {
	if c.stuck.Load() {
		return 0, os.ErrDeadlineExceeded
	}
	return c.Conn.Write(b)
}

// statsClient is a client speaking raw frames over a pipe to ServeConn,
// counting the bytes it writes and reads.
type statsClient struct {
	nc     net.Conn
	fr     *FrameReader
	server *statsConn
	served chan error     // ServeConn's result
	wrote  *atomic.Uint64 // the session's total
}

// statsCounted counts the bytes read through it.
type statsCounted struct {
	net.Conn
	n *atomic.Uint64
}

func (c statsCounted) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(uint64(n))
	return n, err
}

// statsSession is a server with its clients' byte totals.
type statsSession struct {
	srv             *Server
	wrote, readFrom atomic.Uint64 // bytes written and read by all clients
}

func (ss *statsSession) connect(t *testing.T) *statsClient {
	t.Helper()
	c, s := net.Pipe()
	sc := &statsConn{Conn: s}
	cl := &statsClient{
		nc:     c,
		fr:     NewFrameReader(statsCounted{c, &ss.readFrom}, 0),
		server: sc,
		served: make(chan error, 1),
		wrote:  &ss.wrote,
	}
	go func() { cl.served <- ss.srv.ServeConn(sc) }()
	t.Cleanup(func() { c.Close() })
	return cl
}

func (c *statsClient) send(t *testing.T, frame []byte) {
	t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(testTimeout))
	n, err := c.nc.Write(frame)
	c.wrote.Add(uint64(n))
	if err != nil {
		t.Fatalf("write: %v", err)
	}
}

// expect reads frames, described as describe does, which must be
// want.
func (c *statsClient) expect(t *testing.T, what string, want ...string) {
	t.Helper()
	for _, w := range want {
		c.nc.SetReadDeadline(time.Now().Add(testTimeout))
		f, err := c.fr.Next()
		if err != nil {
			t.Fatalf("%s: reading %q: %v", what, w, err)
		}
		if got := describe(f); got != w {
			t.Fatalf("%s: got %q, want %q", what, got, w)
		}
	}
}

// do sends a request and reads its reply, which must be want.
func (c *statsClient) do(t *testing.T, what string, frame []byte, want string) {
	t.Helper()
	c.send(t, frame)
	c.expect(t, what, want)
}

// end reads until the server closes the connection, which must happen
// with EOF, and returns ServeConn's result.
func (c *statsClient) end(t *testing.T, what string) error {
	t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(testTimeout))
	if f, err := c.fr.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("%s: got %s (%v), want EOF", what, describe(f), err)
	}
	return c.wait(t, what)
}

// wait returns ServeConn's result.
func (c *statsClient) wait(t *testing.T, what string) error {
	t.Helper()
	select {
	case err := <-c.served:
		return err
	case <-time.After(testTimeout):
		t.Fatalf("%s: ServeConn did not return", what)
		return nil
	}
}

// statsCheck compares the gauges and the connection counters.
func statsCheck(t *testing.T, when string, st Stats, conns, users int, accepted, refused, slow, floods, tooLarge uint64) {
	t.Helper()
	type gauges struct {
		Conns, Users                                  int
		Accepted, Refused, Slow, Floods, TooLarge, TO uint64
	}
	got := gauges{st.Conns, st.Users, st.ConnsAccepted, st.ConnsRefused, st.SlowConsumers, st.FloodsDropped, st.FramesTooLarge, st.TimedOut}
	want := gauges{conns, users, accepted, refused, slow, floods, tooLarge, 0}
	if got != want {
		t.Errorf("%s: %+v, want %+v", when, got, want)
	}
}

// TestStats runs a scripted session and checks every count of
// Server.Stats, along the way and at the end.
func TestStats(t *testing.T) {
	ss := &statsSession{srv: &Server{
		MaxConns:     3,
		MaxFrameSize: 4096,
		// Each connection may make 20 requests, and is closed at its
		// third refusal in a row.
		RateLimit:  1e-6,
		RateBurst:  20,
		FloodLimit: 3,
	}}
	srv := ss.srv
	defer srv.Close()
	const (
		ok        = "RESPONSE ok"
		failure   = "RESPONSE failure"
		malformed = "RESPONSE malformed packet"
	)

	alice, bob := ss.connect(t), ss.connect(t)
	alice.do(t, "login alice", AppendLogin(nil, "alice"), ok)
	bob.do(t, "login bob", AppendLogin(nil, "bob"), ok)
	statsCheck(t, "alice and bob logged in", srv.Stats(), 2, 2, 2, 0, 0, 0, 0)

	sink := ss.connect(t)
	sink.do(t, "login sink", AppendLogin(nil, "sink"), ok)
	if err := ss.connect(t).end(t, "a connection beyond MaxConns"); err != ErrTooManyConns {
		t.Errorf("ServeConn beyond MaxConns: %v, want ErrTooManyConns", err)
	}
	statsCheck(t, "a connection refused", srv.Stats(), 3, 3, 3, 1, 0, 0, 0)

	alice.do(t, "login again", AppendLogin(nil, "alice"), failure)        // already_logged_in
	alice.do(t, "sendto carol", AppendSendTo(nil, "carol", "x"), failure) // no_recipient
	alice.do(t, "sendto bob", AppendSendTo(nil, "bob", "hello"), ok)      // relayed
	bob.expect(t, "bob's message", "SENDTO alice: hello")
	alice.do(t, "list", AppendList(nil), "LIST alice bob sink")
	alice.do(t, "an unknown frame type", withBody(0x7f), malformed)                // malformed
	bob.do(t, "sendto invalid UTF-8", AppendSendTo(nil, "alice", "\xff"), failure) // bad_text
	bob.do(t, "logout", AppendLogout(nil), ok)
	bob.do(t, "logout again", AppendLogout(nil), failure)                     // not_logged_in
	bob.do(t, "sendto logged out", AppendSendTo(nil, "alice", "hi"), failure) // not_logged_in
	bob.do(t, "login b o b", AppendLogin(nil, "b o b"), failure)              // bad_name
	bob.do(t, "login as alice", AppendLogin(nil, "alice"), failure)           // name_taken
	bob.do(t, "login bob again", AppendLogin(nil, "bob"), ok)

	// The sink stops reading: the message for it is queued (Success), and
	// the write of it fails.
	sink.server.stuck.Store(true)
	alice.do(t, "sendto sink", AppendSendTo(nil, "sink", "are you there?"), ok)
	if err := sink.wait(t, "the sink"); err != ErrSlowConsumer {
		t.Errorf("ServeConn of the sink: %v, want ErrSlowConsumer", err)
	}
	statsCheck(t, "the sink dropped", srv.Stats(), 2, 2, 3, 1, 1, 0, 0)

	// A flood: 20 requests allowed, then 3 refused, and the connection closed.
	flooder := ss.connect(t)
	var lists []byte
	for range 23 {
		lists = AppendList(lists)
	}
	flooder.send(t, lists)
	for range 20 {
		flooder.expect(t, "the flood's allowed lists", "LIST alice bob")
	}
	flooder.expect(t, "the flood's refused lists", failure, failure, failure)
	if err := flooder.end(t, "the flood"); err != ErrFlooding {
		t.Errorf("ServeConn of the flood: %v, want ErrFlooding", err)
	}
	statsCheck(t, "the flood closed", srv.Stats(), 2, 2, 4, 1, 1, 1, 0)

	// A length beyond MaxFrameSize: Malformed packet, and closed.
	big := ss.connect(t)
	big.send(t, header(4097))
	big.expect(t, "a frame too large", malformed)
	if err := big.end(t, "a frame too large"); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("ServeConn of a frame too large: %v, want ErrFrameTooLarge", err)
	}
	statsCheck(t, "the frame too large closed", srv.Stats(), 2, 2, 5, 1, 1, 1, 1)

	for _, c := range []*statsClient{alice, bob} {
		c.nc.Close()
		if err := c.wait(t, "a client leaving"); err != nil {
			t.Errorf("ServeConn of a client that closed: %v", err)
		}
	}

	// Every connection is closed: the counts are final.
	st := srv.Stats()
	statsCheck(t, "at the end", st, 0, 0, 5, 1, 1, 1, 1)
	wantIn := map[FrameType]uint64{TypeLogin: 7, TypeList: 21, TypeSendTo: 5, TypeLogout: 2}
	wantOut := map[FrameType]uint64{TypeResponse: 19, TypeNames: 21, TypeMessage: 2}
	wantFail := map[FailureReason]uint64{}
	for r := range FailureReason(numFailureReasons) {
		wantFail[r] = 0
	}
	maps.Copy(wantFail, map[FailureReason]uint64{
		FailAlreadyLoggedIn: 1, FailNoRecipient: 1, FailBadName: 1, FailBadText: 1,
		FailNotLoggedIn: 2, FailNameTaken: 1, FailRateLimited: 3,
	})
	if st.Malformed != 2 {
		t.Errorf("Malformed = %d, want 2", st.Malformed)
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
	if st.Relayed != 2 {
		t.Errorf("Relayed = %d, want 2 (to bob and to the sink)", st.Relayed)
	}
	// The server read every byte the clients wrote, and the clients read
	// every byte the server wrote (the sink's message was never written).
	if wrote := ss.wrote.Load(); st.BytesIn != wrote || wrote == 0 {
		t.Errorf("BytesIn = %d, the clients wrote %d", st.BytesIn, wrote)
	}
	if read := ss.readFrom.Load(); st.BytesOut != read || read == 0 {
		t.Errorf("BytesOut = %d, the clients read %d", st.BytesOut, read)
	}
}
