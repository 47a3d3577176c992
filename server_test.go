package chat

// The server rules of docs/USAGE.md, each test written once and run over two
// transports: net.Pipe pairs served by ServeConn, and loopback TCP served
// by Serve (the transports, and the raw client the tests speak through, are
// in helpers_test.go). Attacks are in hostile_test.go, the optional limits
// in limits_test.go, nothing-lost under load in stress_test.go.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

func TestServerLogin(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ts := tr.start(t, &Server{})
		a, b := newRaw(t, ts.dial()), newRaw(t, ts.dial())

		a.do(AppendLogin(nil, "alice"), ResultOK)
		a.do(AppendLogin(nil, "bob"), ResultFailure)   // this connection is logged in
		a.do(AppendLogin(nil, "alice"), ResultFailure) // even under the same name
		b.do(AppendLogin(nil, "alice"), ResultFailure) // taken on another connection
		b.do(AppendLogin(nil, "Alice"), ResultOK)      // names are case sensitive
		b.do(AppendLogout(nil), ResultOK)

		// Names that break the rules, sent as raw frames.
		for _, bad := range []string{
			"", " ", "b b", "b\tb", "bob\n", "\x1b[31m", "bo\x7fb", "bo\u00a0b", "a\u2028",
			"\xff", "caf\xe9", "\ufffd", "alice\u200b", "😀", "Zoe\u0308",
			strings.Repeat("x", MaxNameLen+1),
			strings.Repeat("名", MaxNameLen+1),
		} {
			b.do(AppendLogin(nil, bad), ResultFailure)
		}
		if got := b.list(); !slices.Equal(got, []string{"alice"}) {
			t.Fatalf("list after refused logins = %q, want [alice]", got)
		}
		// 20 characters are fine, however many bytes they take.
		for _, good := range []string{strings.Repeat("x", MaxNameLen), strings.Repeat("名", MaxNameLen), strings.Repeat("𠀀", MaxNameLen)} {
			b.do(AppendLogin(nil, good), ResultOK)
			if got := b.list(); !slices.Equal(got, []string{"alice", good}) {
				t.Fatalf("list = %q, want [alice %s]", got, good)
			}
			b.do(AppendLogout(nil), ResultOK)
		}

		// A closed connection is logged out: its name is free again.
		a.c.Close()
		eventually(t, "alice logged out after closing", func() bool { return !slices.Contains(b.list(), "alice") })
		b.do(AppendLogin(nil, "alice"), ResultOK)
	})
}

func TestServerList(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ts := tr.start(t, &Server{})
		asker := newRaw(t, ts.dial())
		if got := asker.list(); got == nil || len(got) != 0 {
			t.Fatalf("list with nobody logged in = %q, want []", got)
		}
		// Logged in out of order; listed in byte order (upper case and
		// digits before lower case, multibyte letters last).
		logins := []string{"bob", "Zoë", "alice", "Émile", "_x", "9lives", "Bob"}
		users := make(map[string]*raw)
		for _, name := range logins {
			users[name] = newRaw(t, ts.dial())
			users[name].do(AppendLogin(nil, name), ResultOK)
		}
		want := []string{"9lives", "Bob", "Zoë", "_x", "alice", "bob", "Émile"}
		if !slices.IsSorted(want) {
			t.Fatal("the expected list is not sorted")
		}
		if got := asker.list(); !slices.Equal(got, want) { // asker is not logged in
			t.Fatalf("list = %q, want %q", got, want)
		}
		if got := users["bob"].list(); !slices.Equal(got, want) {
			t.Fatalf("list asked by bob = %q, want %q", got, want)
		}
		users["alice"].do(AppendLogout(nil), ResultOK)
		want = slices.DeleteFunc(want, func(s string) bool { return s == "alice" })
		if got := asker.list(); !slices.Equal(got, want) {
			t.Fatalf("list after alice logged out = %q, want %q", got, want)
		}
	})
}

func TestServerSendTo(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ts := tr.start(t, &Server{})
		a, b := newRaw(t, ts.dial()), newRaw(t, ts.dial())
		a.do(AppendLogin(nil, "alice"), ResultOK)
		b.do(AppendLogin(nil, "bob"), ResultOK)

		// Delivered with the sender's name, the text exactly as sent.
		for _, text := range []string{
			"Hi, how are you?",
			"  spaces  kept  ",
			"",
			"tab\there, \x1b[31mescapes\x1b[0m are the client's business",
			"名前 😀 \u202e",
			strings.Repeat("€", MaxTextLen), // the longest, in 3-byte characters
		} {
			a.do(AppendSendTo(nil, "bob", text), ResultOK)
			b.expectMessage("alice", text)
		}
		b.do(AppendSendTo(nil, "alice", "Fine"), ResultOK)
		a.expectMessage("bob", "Fine")

		// Refused: no such user, a name differing in case, texts that
		// break the rules. Nothing is delivered.
		a.do(AppendSendTo(nil, "carol", "hi"), ResultFailure)
		a.do(AppendSendTo(nil, "Bob", "hi"), ResultFailure)
		a.do(AppendSendTo(nil, "", "hi"), ResultFailure)
		a.do(AppendSendTo(nil, "bob", "caf\xe9"), ResultFailure)
		a.do(AppendSendTo(nil, "bob", strings.Repeat("x", MaxTextLen+1)), ResultFailure)
		a.do(AppendSendTo(nil, "bob", strings.Repeat("€", MaxTextLen+1)), ResultFailure)
		// Bob's next frame is the reply to his own request: nothing refused
		// reached him.
		b.do(AppendSendTo(nil, "alice", "after the refusals"), ResultOK)
		a.expectMessage("bob", "after the refusals")

		// To oneself: Success and the message, in either order.
		a.send(AppendSendTo(nil, "alice", "me"))
		a.expectInAnyOrder("RESPONSE ok", "SENDTO alice: me")

		// Messages from one sender to one recipient arrive in order, and
		// replies come in the order of the requests, even pipelined.
		const n = 200
		var batch []byte
		for i := range n {
			batch = AppendSendTo(batch, "bob", strconv.Itoa(i))
			batch = AppendSendTo(batch, "nobody", "x")
			batch = AppendList(batch)
		}
		a.send(batch)
		for i := range n {
			a.expect(ResultOK)
			a.expect(ResultFailure)
			if f := a.next(); f.Type != TypeNames {
				t.Fatalf("reply %d: %s, want LIST", 3*i+2, describe(f))
			}
		}
		for i := range n {
			b.expectMessage("alice", strconv.Itoa(i))
		}
	})
}

func TestServerBeforeLogin(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ts := tr.start(t, &Server{})
		a, b := newRaw(t, ts.dial()), newRaw(t, ts.dial())
		b.do(AppendLogin(nil, "bob"), ResultOK)
		a.do(AppendSendTo(nil, "bob", "hi"), ResultFailure)
		a.do(AppendLogout(nil), ResultFailure)
		if got := a.list(); !slices.Equal(got, []string{"bob"}) { // list needs no login
			t.Fatalf("list = %q", got)
		}
		// Bob got nothing: his next frame is the reply to his own request.
		if got := b.list(); !slices.Equal(got, []string{"bob"}) {
			t.Fatalf("list = %q", got)
		}
	})
}

func TestServerLogoutRelogin(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ts := tr.start(t, &Server{})
		a, b := newRaw(t, ts.dial()), newRaw(t, ts.dial())
		a.do(AppendLogin(nil, "alice"), ResultOK)
		b.do(AppendLogin(nil, "bob"), ResultOK)

		b.do(AppendLogout(nil), ResultOK)
		b.do(AppendLogout(nil), ResultFailure)               // not logged in any more
		b.do(AppendSendTo(nil, "alice", "x"), ResultFailure) // nor can send
		a.do(AppendSendTo(nil, "bob", "there?"), ResultFailure)
		if got := b.list(); !slices.Equal(got, []string{"alice"}) { // still connected
			t.Fatalf("list after logout = %q", got)
		}

		// The same connection logs in again, under another name, then its own.
		b.do(AppendLogin(nil, "robert"), ResultOK)
		a.do(AppendSendTo(nil, "robert", "hi robert"), ResultOK)
		b.expectMessage("alice", "hi robert")
		b.do(AppendLogout(nil), ResultOK)
		b.do(AppendLogin(nil, "bob"), ResultOK)
		a.do(AppendSendTo(nil, "robert", "gone?"), ResultFailure)
		a.do(AppendSendTo(nil, "bob", "back"), ResultOK)
		b.expectMessage("alice", "back")
		if got := a.list(); !slices.Equal(got, []string{"alice", "bob"}) {
			t.Fatalf("list = %q", got)
		}
	})
}

func TestServerMalformed(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ts := tr.start(t, &Server{})
		a := newRaw(t, ts.dial())
		a.do(AppendLogin(nil, "alice"), ResultOK)
		for _, tt := range []struct {
			what string
			body []byte
		}{
			{"empty body", nil},
			{"unknown type", []byte{0x7f}},
			{"type 0", []byte{0x00}},
			{"list with a payload", []byte{0x02, 0}},
			{"logout with a payload", []byte{0x04, 'x'}},
			{"login without a name length", []byte{0x01}},
			{"login name beyond the frame", []byte{0x01, 9, 'a'}},
			{"login with bytes after the name", []byte{0x01, 1, 'a', 'b'}},
			{"sendto without a name length", []byte{0x03}},
			{"sendto name beyond the frame", []byte{0x03, 200, 'b', 'o', 'b'}},
			{"server RESPONSE", []byte{0x81, 0}},
			{"server LIST", []byte{0x82}},
			{"server SENDTO", []byte{0x83, 1, 'a'}},
		} {
			a.send(withBody(tt.body...))
			if f := a.next(); f.Type != TypeResponse || f.Result != ResultMalformed {
				t.Fatalf("%s: reply %s, want RESPONSE malformed packet", tt.what, describe(f))
			}
		}
		// The connection goes on, still logged in, the stream in step.
		if got := a.list(); !slices.Equal(got, []string{"alice"}) {
			t.Fatalf("list after malformed frames = %q", got)
		}
		a.send(AppendSendTo(nil, "alice", "still here"))
		a.expectInAnyOrder("RESPONSE ok", "SENDTO alice: still here")
		if st := ts.srv.Stats(); st.Malformed != 13 {
			t.Errorf("Stats().FramesIn[malformed] = %d, want 13", st.Malformed)
		}
	})
}

// TestServerOversize: a length beyond MaxFrameSize is answered Malformed
// packet and closes that one connection; a frame of exactly MaxFrameSize is
// served.
func TestServerOversize(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		const max = 1024
		ts := tr.start(t, &Server{MaxFrameSize: max})
		a, b := newRaw(t, ts.dial()), newRaw(t, ts.dial())
		a.do(AppendLogin(nil, "alice"), ResultOK)
		b.do(AppendLogin(nil, "bob"), ResultOK)

		text := strings.Repeat("x", max-1-1-len("bob")) // type, name length, name
		frame := AppendSendTo(nil, "bob", text)
		if len(frame) != HeaderSize+max {
			t.Fatalf("frame of %d bytes, want %d", len(frame), HeaderSize+max)
		}
		a.do(frame, ResultOK)
		b.expectMessage("alice", text)

		a.send(header(max + 1))
		a.expect(ResultMalformed)
		a.expectEOF()

		// Only that connection: bob goes on, and alice is logged out.
		eventually(t, "alice logged out", func() bool { return slices.Equal(b.list(), []string{"bob"}) })
		b.send(AppendSendTo(nil, "bob", "ok"))
		b.expectInAnyOrder("RESPONSE ok", "SENDTO bob: ok")
		if st := ts.srv.Stats(); st.FramesTooLarge != 1 {
			t.Errorf("Stats().FramesTooLarge = %d, want 1", st.FramesTooLarge)
		}
	})
}

func TestServerFilters(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		type loginAsk struct {
			conn net.Conn
			name string
		}
		logins := make(chan loginAsk, 10)
		messages := make(chan [3]string, 10)
		ts := tr.start(t, &Server{
			AllowLogin: func(conn net.Conn, name string) error {
				logins <- loginAsk{conn, name}
				if name == "mallory" {
					return errors.New("banned")
				}
				return nil
			},
			AllowMessage: func(from, to, text string) error {
				messages <- [3]string{from, to, text}
				if strings.Contains(text, "spam") {
					return errors.New("spam")
				}
				return nil
			},
		})
		ac, bc := ts.dial(), ts.dial()
		a, b := newRaw(t, ac), newRaw(t, bc)

		a.do(AppendLogin(nil, "mallory"), ResultFailure)
		if got := <-logins; got.name != "mallory" || got.conn == nil || got.conn.RemoteAddr().String() != ac.LocalAddr().String() {
			t.Errorf("AllowLogin(conn, %q), want alice's connection and mallory", got.name)
		}
		if got := b.list(); len(got) != 0 {
			t.Errorf("list after a vetoed login = %q", got)
		}
		a.do(AppendLogin(nil, "alice"), ResultOK)
		<-logins
		b.do(AppendLogin(nil, "bob"), ResultOK)
		<-logins

		// Filters see only requests that pass the rules.
		a.do(AppendLogin(nil, "again"), ResultFailure)        // already logged in
		b.do(AppendSendTo(nil, "carol", "hi"), ResultFailure) // no recipient
		select {
		case got := <-logins:
			t.Errorf("AllowLogin called for a login already refused: %q", got.name)
		case got := <-messages:
			t.Errorf("AllowMessage called for a message already refused: %q", got)
		default:
		}

		a.do(AppendSendTo(nil, "bob", "buy spam"), ResultFailure)
		if got, want := <-messages, [3]string{"alice", "bob", "buy spam"}; got != want {
			t.Errorf("AllowMessage%q, want %q", got, want)
		}
		a.do(AppendSendTo(nil, "bob", "ham"), ResultOK)
		<-messages
		b.expectMessage("alice", "ham") // and not the spam
		if st := ts.srv.Stats(); st.Failures[FailVetoed] != 2 {
			t.Errorf("Stats().Failures[vetoed] = %d, want 2", st.Failures[FailVetoed])
		}
	})
}

func TestServerHooks(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		type event struct {
			what string
			conn net.Conn
			err  error
		}
		events := make(chan event, 20)
		ts := tr.start(t, &Server{
			OnLogin: func(conn net.Conn, name string) {
				events <- event{what: "login " + name, conn: conn}
			},
			OnMessage: func(from, to, text string) {
				events <- event{what: "message " + from + " " + to + " " + text}
			},
			OnLogout: func(conn net.Conn, name string, err error) {
				events <- event{what: "logout " + name, conn: conn, err: err}
			},
		})
		next := func(want string) event {
			t.Helper()
			select {
			case e := <-events:
				if e.what != want {
					t.Fatalf("event %q, want %q", e.what, want)
				}
				return e
			case <-time.After(testTimeout):
				t.Fatalf("no event %q", want)
				return event{}
			}
		}
		ac, bc := ts.dial(), ts.dial()
		a, b := newRaw(t, ac), newRaw(t, bc)

		a.do(AppendLogin(nil, "alice"), ResultOK)
		aliceConn := next("login alice").conn
		if aliceConn == nil {
			t.Fatal("OnLogin got a nil connection")
		}
		if aliceConn.RemoteAddr().String() != ac.LocalAddr().String() {
			t.Errorf("OnLogin got a connection from %v, want alice's (%v)", aliceConn.RemoteAddr(), ac.LocalAddr())
		}
		b.do(AppendLogin(nil, "bob"), ResultOK)
		bobConn := next("login bob").conn
		if bobConn == aliceConn {
			t.Error("OnLogin got the same connection for alice and bob")
		}

		// Refused requests call no hook.
		b.do(AppendLogin(nil, "bobby"), ResultFailure)
		a.do(AppendSendTo(nil, "carol", "x"), ResultFailure)
		a.do(AppendSendTo(nil, "bob", "hi there"), ResultOK)
		next("message alice bob hi there")
		b.expectMessage("alice", "hi there")

		// A logout request: err is nil.
		b.do(AppendLogout(nil), ResultOK)
		if e := next("logout bob"); e.err != nil || e.conn != bobConn {
			t.Errorf("OnLogout after a logout request: %v (bob's connection: %t), want nil", e.err, e.conn == bobConn)
		}
		b.c.Close() // logged out already: no second OnLogout

		// A disconnect: err is io.EOF.
		a.c.Close()
		if e := next("logout alice"); e.err != io.EOF || e.conn != aliceConn {
			t.Errorf("OnLogout after the client closed: %v (alice's connection: %t), want io.EOF", e.err, e.conn == aliceConn)
		}

		// Once the server has stopped, every hook has been called.
		ts.srv.Close()
		ts.stopped()
		close(events)
		for e := range events {
			t.Errorf("unexpected event %q", e.what)
		}
	})
}

// TestServerSlowRecipient: a recipient that never reads blocks nobody; its
// senders get Failure once its queue is full, and after WriteTimeout it is
// dropped and logged out.
func TestServerSlowRecipient(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		logouts := make(chan error, 1)
		srv := &Server{
			Logger:       zaptest.NewLogger(t),
			QueueSize:    64 << 10,
			WriteTimeout: 250 * time.Millisecond, // short, yet long for a client that reads
			OnLogout: func(_ net.Conn, name string, err error) {
				if name == "sink" {
					logouts <- err
				}
			},
		}
		ts := tr.start(t, srv)
		sink, a, b := newRaw(t, ts.dial()), newRaw(t, ts.dial()), newRaw(t, ts.dial())
		sink.do(AppendLogin(nil, "sink"), ResultOK)
		a.do(AppendLogin(nil, "alice"), ResultOK)
		b.do(AppendLogin(nil, "bob"), ResultOK)

		// The sink reads nothing from here on. Alice sends until refused;
		// every request is answered, and others chat on meanwhile.
		text := strings.Repeat("x", 30000)
		for sent := 0; ; sent++ {
			if sent > 2000 {
				t.Fatal("60 MB queued for a client that reads nothing")
			}
			a.send(AppendSendTo(nil, "sink", text))
			if f := a.next(); f.Type != TypeResponse {
				t.Fatalf("reply %s", describe(f))
			} else if f.Result == ResultFailure {
				break
			}
			b.do(AppendSendTo(nil, "alice", "still here"), ResultOK)
			a.expectMessage("bob", "still here")
		}
		// A refusal can come while the writer is still moving the queue
		// into the socket's buffers; the sink is dropped once writes to it
		// make no progress, so keep something waiting for it until then.
		deadline := time.After(testTimeout)
	wait:
		for {
			select {
			case err := <-logouts:
				if !errors.Is(err, ErrSlowConsumer) {
					t.Errorf("the sink was logged out with %v, want a slow consumer", err)
				}
				break wait
			case <-deadline:
				t.Fatal("the sink was not dropped")
			default:
				a.send(AppendSendTo(nil, "sink", text))
				if f := a.next(); f.Type != TypeResponse {
					t.Fatalf("reply %s", describe(f))
				}
			}
		}
		sink.expectEOF()
		a.do(AppendSendTo(nil, "sink", "gone?"), ResultFailure)
		if got := a.list(); !slices.Equal(got, []string{"alice", "bob"}) {
			t.Errorf("list = %q", got)
		}
		if n := srv.Stats().SlowConsumers; n != 1 {
			t.Errorf("Stats().SlowConsumers = %d, want 1", n)
		}
	})
}

// TestServerQueueFull: with a WriteTimeout longer than the test, a
// recipient that does not read keeps its connection; messages beyond its
// queue are refused, and once it reads it gets every message accepted, in
// order.
func TestServerQueueFull(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		srv := &Server{QueueSize: 100 << 10, WriteTimeout: 10 * time.Minute}
		ts := tr.start(t, srv)
		sink, a, b := newRaw(t, ts.dial()), newRaw(t, ts.dial()), newRaw(t, ts.dial())
		sink.do(AppendLogin(nil, "sink"), ResultOK)
		a.do(AppendLogin(nil, "alice"), ResultOK)
		b.do(AppendLogin(nil, "bob"), ResultOK)

		text := strings.Repeat("y", 40000)
		accepted := 0
		for {
			if accepted > 2000 {
				t.Fatal("80 MB queued for a client that reads nothing")
			}
			a.send(AppendSendTo(nil, "sink", fmt.Sprintf("%06d%s", accepted, text)))
			if f := a.next(); f.Type != TypeResponse {
				t.Fatalf("reply %s", describe(f))
			} else if f.Result == ResultFailure {
				break
			}
			accepted++
		}
		st := srv.Stats()
		if st.Failures[FailQueueFull] != 1 || st.SlowConsumers != 0 {
			t.Errorf("Failures[queue_full] = %d, SlowConsumers = %d; want 1, 0", st.Failures[FailQueueFull], st.SlowConsumers)
		}
		// Nobody else is held up, and the sink is still there.
		b.do(AppendSendTo(nil, "alice", "not blocked"), ResultOK)
		a.expectMessage("bob", "not blocked")
		if got := b.list(); !slices.Equal(got, []string{"alice", "bob", "sink"}) {
			t.Errorf("list = %q", got)
		}

		for i := range accepted {
			sink.expectMessage("alice", fmt.Sprintf("%06d%s", i, text))
		}
		a.do(AppendSendTo(nil, "sink", "room again"), ResultOK)
		sink.expectMessage("alice", "room again")
	})
}

// TestServerMaxConns: connections beyond MaxConns are closed at once
// (ServeConn returns ErrTooManyConns); a place that frees up is taken
// again.
func TestServerMaxConns(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ts := tr.start(t, &Server{MaxConns: 2})
		a, b := newRaw(t, ts.dial()), newRaw(t, ts.dial())
		a.do(AppendLogin(nil, "alice"), ResultOK)
		b.do(AppendLogin(nil, "bob"), ResultOK) // both are being served

		newRaw(t, ts.dial()).expectEOF()
		c, s := net.Pipe()
		defer c.Close()
		if err := ts.srv.ServeConn(s); err != ErrTooManyConns {
			t.Fatalf("ServeConn beyond MaxConns: %v, want ErrTooManyConns", err)
		}
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("the refused connection reads %v, want io.EOF", err)
		}
		a.do(AppendSendTo(nil, "bob", "unaffected"), ResultOK)
		b.expectMessage("alice", "unaffected")

		b.c.Close()
		eventually(t, "one connection left", func() bool { return ts.srv.Stats().Conns == 1 })
		newRaw(t, ts.dial()).do(AppendLogin(nil, "carol"), ResultOK)
		if st := ts.srv.Stats(); st.ConnsRefused != 2 || st.ConnsAccepted != 3 {
			t.Errorf("ConnsRefused = %d, ConnsAccepted = %d; want 2, 3", st.ConnsRefused, st.ConnsAccepted)
		}
	})
}

// TestServerShutdown: Shutdown stops reading, writes every reply and
// message already owed, then closes the connections; Serve and ServeConn
// return ErrServerClosed, and so does every later call to serve.
func TestServerShutdown(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		const n, size = 200, 40000 // 8 MB: more than loopback buffers take from a reader that reads nothing
		relayed := make(chan struct{}, n)
		srv := &Server{
			QueueSize:    2 * n * size,
			WriteTimeout: 10 * time.Minute,
			OnMessage:    func(string, string, string) { relayed <- struct{}{} },
		}
		ts := tr.start(t, srv)
		a, b := newRaw(t, ts.dial()), newRaw(t, ts.dial())
		a.do(AppendLogin(nil, "alice"), ResultOK)
		b.do(AppendLogin(nil, "bob"), ResultOK)

		// Alice sends without reading the replies; bob reads nothing.
		var batch []byte
		text := strings.Repeat("z", size)
		for i := range n {
			batch = AppendSendTo(batch, "bob", fmt.Sprintf("%03d%s", i, text))
		}
		a.send(batch)
		for range n {
			select {
			case <-relayed:
			case <-time.After(testTimeout):
				t.Fatal("messages not relayed")
			}
		}

		shut := make(chan error, 1)
		go func() { shut <- srv.Shutdown(context.Background()) }()
		for i := range n {
			b.expectMessage("alice", fmt.Sprintf("%03d%s", i, text))
		}
		b.expectEOF()
		for range n {
			a.expect(ResultOK)
		}
		a.expectEOF()
		select {
		case err := <-shut:
			if err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("Shutdown did not return")
		}
		for _, err := range ts.stopped() {
			if err != ErrServerClosed {
				t.Errorf("Serve or ServeConn returned %v, want ErrServerClosed", err)
			}
		}

		// Closed for good.
		_, s := net.Pipe()
		if err := srv.ServeConn(s); err != ErrServerClosed {
			t.Errorf("ServeConn after Shutdown: %v", err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Serve(l); err != ErrServerClosed {
			t.Errorf("Serve after Shutdown: %v", err)
		}
		if _, err := l.Accept(); err == nil {
			t.Error("Serve left its listener open")
		}
		if err := srv.ListenAndServe("127.0.0.1:0"); err != ErrServerClosed {
			t.Errorf("ListenAndServe after Shutdown: %v", err)
		}
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Errorf("a second Shutdown: %v", err)
		}
		if err := srv.Close(); err != nil {
			t.Errorf("Close after Shutdown: %v", err)
		}
	})
}

// TestServerShutdownContext: a Shutdown whose context ends before the
// connections are done closes them at once and returns the context's
// error.
func TestServerShutdownContext(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"expired", func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(context.Background(), time.Unix(1, 0))
		}, context.DeadlineExceeded},
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			forEachTransport(t, func(t *testing.T, tr transport) {
				// A filter that holds alice's request keeps her connection
				// from finishing until the test lets it go.
				entered, release := make(chan struct{}), make(chan struct{})
				srv := &Server{AllowMessage: func(string, string, string) error {
					close(entered)
					<-release
					return nil
				}}
				ts := tr.start(t, srv)
				a, b := newRaw(t, ts.dial()), newRaw(t, ts.dial())
				a.do(AppendLogin(nil, "alice"), ResultOK)
				b.do(AppendLogin(nil, "bob"), ResultOK)
				a.send(AppendSendTo(nil, "bob", "held"))
				<-entered

				ctx, cancel := tt.ctx()
				defer cancel()
				shut := make(chan error, 1)
				go func() { shut <- srv.Shutdown(ctx) }()
				// Shutdown gives up waiting and closes the connections.
				a.expectEOF()
				b.expectEOF()
				close(release)
				select {
				case err := <-shut:
					if err != tt.want {
						t.Errorf("Shutdown: %v, want %v", err, tt.want)
					}
				case <-time.After(testTimeout):
					t.Fatal("Shutdown did not return")
				}
				for _, err := range ts.stopped() {
					if err != ErrServerClosed {
						t.Errorf("Serve or ServeConn returned %v, want ErrServerClosed", err)
					}
				}
				for range 2 {
					if err := srv.Close(); err != nil {
						t.Errorf("Close: %v", err)
					}
				}
			})
		})
	}
}

// TestServerClose: Close drops every connection at once, queued data
// included, and is idempotent, also called from several goroutines.
func TestServerClose(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		srv := &Server{WriteTimeout: 10 * time.Minute}
		ts := tr.start(t, srv)
		a, b := newRaw(t, ts.dial()), newRaw(t, ts.dial())
		a.do(AppendLogin(nil, "alice"), ResultOK)
		b.do(AppendLogin(nil, "bob"), ResultOK)
		text := strings.Repeat("q", 60000)
		for range 10 {
			a.do(AppendSendTo(nil, "bob", text), ResultOK) // bob reads none yet
		}

		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				if err := srv.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
		}
		wg.Wait()
		a.expectEOF()
		b.expectEOF()
		for _, err := range ts.stopped() {
			if err != ErrServerClosed {
				t.Errorf("Serve or ServeConn returned %v, want ErrServerClosed", err)
			}
		}
		if err := srv.Close(); err != nil {
			t.Errorf("Close again: %v", err)
		}
		if st := srv.Stats(); st.Conns != 0 || st.Users != 0 {
			t.Errorf("after Close: %d connections, %d users", st.Conns, st.Users)
		}
	})
}

func TestServerListenAndServeBadAddress(t *testing.T) {
	t.Parallel()
	srv := &Server{}
	if err := srv.ListenAndServe("127.0.0.1:-1"); err == nil {
		t.Fatal("ListenAndServe on a bad address succeeded")
	}
	srv.Close()
}
