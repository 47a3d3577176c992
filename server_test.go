package chat

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// testTimeout bounds every wait in these tests; a passing run never gets
// near it.
const testTimeout = 10 * time.Second

// transport connects clients to a Server: over net.Pipe through ServeConn,
// or over loopback TCP through Serve.
type transport struct {
	name  string
	start func(t *testing.T, srv *Server) (dial func() net.Conn)
}

var transports = []transport{
	{"pipe", func(t *testing.T, srv *Server) func() net.Conn {
		var wg sync.WaitGroup
		t.Cleanup(func() {
			srv.Close()
			wg.Wait()
		})
		return func() net.Conn {
			client, server := net.Pipe()
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv.ServeConn(server)
			}()
			t.Cleanup(func() { client.Close() })
			return client
		}
	}},
	{"tcp", func(t *testing.T, srv *Server) func() net.Conn {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(l) }()
		t.Cleanup(func() {
			srv.Close()
			if err := <-served; err != ErrServerClosed {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		})
		return func() net.Conn {
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}
	}},
}

// forEachTransport runs f as a subtest over each transport.
func forEachTransport(t *testing.T, f func(t *testing.T, tr transport)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { f(t, tr) })
	}
}

// raw speaks the protocol frame by frame, without the Client's checks.
type raw struct {
	t  *testing.T
	c  net.Conn
	fr *FrameReader
}

func newRaw(t *testing.T, c net.Conn) *raw {
	return &raw{t: t, c: c, fr: NewFrameReader(c, 0)}
}

func (r *raw) send(frame []byte) {
	r.t.Helper()
	r.c.SetWriteDeadline(time.Now().Add(testTimeout))
	if _, err := r.c.Write(frame); err != nil {
		r.t.Fatalf("sending: %v", err)
	}
}

func (r *raw) next() Frame {
	r.t.Helper()
	f, err := r.tryNext()
	if err != nil {
		r.t.Fatalf("reading: %v", err)
	}
	return f
}

func (r *raw) tryNext() (Frame, error) {
	r.c.SetReadDeadline(time.Now().Add(testTimeout))
	f, err := r.fr.Next()
	if err != nil {
		return f, err
	}
	// Copy: the frame's slices live only until the next read.
	f.Name, f.Text, f.Names = slices.Clone(f.Name), slices.Clone(f.Text), slices.Clone(f.Names)
	return f, nil
}

// do sends frame and expects the RESPONSE want.
func (r *raw) do(frame []byte, want Result) {
	r.t.Helper()
	r.send(frame)
	if f := r.next(); f.Type != TypeResponse || f.Result != want {
		r.t.Fatalf("reply %v %v, want RESPONSE %v", f.Type, f.Result, want)
	}
}

func (r *raw) list() []string {
	r.t.Helper()
	r.send(AppendList(nil))
	f := r.next()
	if f.Type != TypeNames {
		r.t.Fatalf("reply to list: %v %v", f.Type, f.Result)
	}
	names := []string{}
	for rest := f.Names; len(rest) > 0; {
		name, r, _ := NextName(rest)
		names, rest = append(names, string(name)), r
	}
	return names
}

func (r *raw) expectMessage(from, text string) {
	r.t.Helper()
	if f := r.next(); f.Type != TypeMessage || string(f.Name) != from || string(f.Text) != text {
		r.t.Fatalf("got %v from %q: %q; want a message from %q: %q", f.Type, f.Name, f.Text, from, text)
	}
}

func (r *raw) expectEOF() {
	r.t.Helper()
	for {
		_, err := r.tryNext()
		if err == nil {
			continue
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
			r.t.Fatalf("want the connection closed, got %v", err)
		}
		return
	}
}

func isReset(err error) bool { return strings.Contains(err.Error(), "connection reset") }

// eventually asks cond, which makes a round trip to the server, until it
// holds or the test times out.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, testTimeout)
		}
	}
}

func TestServerRules(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		dial := tr.start(t, &Server{})
		a, b := newRaw(t, dial()), newRaw(t, dial())

		if got := a.list(); len(got) != 0 {
			t.Fatalf("list before any login: %q", got)
		}
		a.do(AppendSendTo(nil, "bob", "hi"), ResultFailure) // not logged in
		a.do(AppendLogout(nil), ResultFailure)              // not logged in
		a.do(AppendLogin(nil, "alice"), ResultOK)
		a.do(AppendLogin(nil, "bob"), ResultFailure)   // already logged in
		b.do(AppendLogin(nil, "alice"), ResultFailure) // taken
		b.do(AppendLogin(nil, "Alice"), ResultOK)      // case sensitive
		b.do(AppendLogout(nil), ResultOK)
		for _, bad := range []string{"", "b b", strings.Repeat("x", 21), "\x1b", "\xff"} {
			b.do(AppendLogin(nil, bad), ResultFailure)
		}
		b.do(AppendLogin(nil, "bob"), ResultOK)
		if got := b.list(); !slices.Equal(got, []string{"alice", "bob"}) {
			t.Fatalf("list = %q", got)
		}

		a.do(AppendSendTo(nil, "bob", "Hi, how are you?"), ResultOK)
		b.expectMessage("alice", "Hi, how are you?")
		b.do(AppendSendTo(nil, "alice", "  Fine  "), ResultOK)
		a.expectMessage("bob", "  Fine  ")
		a.do(AppendSendTo(nil, "carol", "hi"), ResultFailure)                     // no such user
		a.do(AppendSendTo(nil, "bob", "caf\xe9"), ResultFailure)                  // invalid UTF-8
		a.do(AppendSendTo(nil, "bob", strings.Repeat("€", 65536)), ResultFailure) // too long
		a.do(AppendSendTo(nil, "bob", strings.Repeat("€", 65535)), ResultOK)
		b.expectMessage("alice", strings.Repeat("€", 65535))

		// To oneself: Success and the message, in either order.
		a.send(AppendSendTo(nil, "alice", "me"))
		f1, f2 := a.next(), a.next()
		if f1.Type == TypeMessage {
			f1, f2 = f2, f1
		}
		if f1.Type != TypeResponse || f1.Result != ResultOK || f2.Type != TypeMessage || string(f2.Text) != "me" {
			t.Fatalf("sendto self: %v %v, %v %q", f1.Type, f1.Result, f2.Type, f2.Text)
		}

		// Malformed frames are answered and the connection goes on.
		for _, body := range [][]byte{{0x7f}, {0x02, 1}, {0x01, 9, 'a'}, {0x81, 0}, {0x83, 1, 'a'}, {}} {
			a.do(withBody(body...), ResultMalformed)
		}
		if got := a.list(); !slices.Equal(got, []string{"alice", "bob"}) {
			t.Fatalf("list after malformed frames = %q", got)
		}

		// Logout keeps the connection; the name is free again.
		b.do(AppendLogout(nil), ResultOK)
		a.do(AppendSendTo(nil, "bob", "there?"), ResultFailure)
		if got := b.list(); !slices.Equal(got, []string{"alice"}) {
			t.Fatalf("list after logout = %q", got)
		}
		b.do(AppendLogin(nil, "bob"), ResultOK)

		// A connection that closes is logged out.
		b.c.Close()
		eventually(t, "bob logged out after closing", func() bool { return !slices.Contains(a.list(), "bob") })

		// Replies come in the order of the requests, even pipelined.
		var batch []byte
		for range 50 {
			batch = AppendList(batch)
			batch = AppendSendTo(batch, "nobody", "x")
		}
		a.send(batch)
		for i := range 100 {
			f := a.next()
			if want := []FrameType{TypeNames, TypeResponse}[i%2]; f.Type != want {
				t.Fatalf("reply %d: %v, want %v", i, f.Type, want)
			}
		}

		// A length beyond the limit: answered, then the connection closes.
		a.send([]byte{0x7f, 0xff, 0xff, 0xff})
		if f := a.next(); f.Type != TypeResponse || f.Result != ResultMalformed {
			t.Fatalf("reply to an oversize frame: %v %v", f.Type, f.Result)
		}
		a.expectEOF()
	})
}

func TestServerCallbacks(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		var mu sync.Mutex
		var events []string
		record := func(s string) {
			mu.Lock()
			events = append(events, s)
			mu.Unlock()
		}
		logouts := make(chan error, 10)
		srv := &Server{
			AllowLogin: func(conn net.Conn, name string) error {
				if conn == nil {
					t.Error("AllowLogin without the connection")
				}
				if name == "mallory" {
					return errors.New("banned")
				}
				return nil
			},
			AllowMessage: func(from, to, text string) error {
				if text == "spam" {
					return errors.New("spam")
				}
				return nil
			},
			OnLogin:   func(_ net.Conn, name string) { record("login " + name) },
			OnMessage: func(from, to, text string) { record("message " + from + " " + to + " " + text) },
			OnLogout: func(_ net.Conn, name string, err error) {
				record("logout " + name)
				logouts <- err
			},
		}
		dial := tr.start(t, srv)
		a, b := newRaw(t, dial()), newRaw(t, dial())
		a.do(AppendLogin(nil, "mallory"), ResultFailure)
		a.do(AppendLogin(nil, "alice"), ResultOK)
		b.do(AppendLogin(nil, "bob"), ResultOK)
		a.do(AppendSendTo(nil, "bob", "spam"), ResultFailure)
		a.do(AppendSendTo(nil, "bob", "ham"), ResultOK)
		b.expectMessage("alice", "ham")
		b.do(AppendLogout(nil), ResultOK)
		if err := <-logouts; err != nil {
			t.Errorf("OnLogout after a logout request: %v, want nil", err)
		}
		a.c.Close()
		select {
		case err := <-logouts:
			if err != io.EOF {
				t.Errorf("OnLogout after the client closed: %v, want io.EOF", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("no OnLogout after the client closed")
		}
		mu.Lock()
		defer mu.Unlock()
		want := []string{"login alice", "login bob", "message alice bob ham", "logout bob", "logout alice"}
		if !slices.Equal(events, want) {
			t.Errorf("events %q, want %q", events, want)
		}
	})
}

// TestServerSlowRecipient: a recipient that never reads blocks nobody; its
// senders get Failure once its queue is full, and after WriteTimeout it is
// dropped and logged out.
func TestServerSlowRecipient(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		logouts := make(chan error, 1)
		srv := &Server{
			Logger:       zaptest.NewLogger(t),
			QueueSize:    64 << 10,
			WriteTimeout: 100 * time.Millisecond,
			OnLogout: func(_ net.Conn, name string, err error) {
				if name == "sink" {
					logouts <- err
				}
			},
		}
		dial := tr.start(t, srv)
		sink, a, b := newRaw(t, dial()), newRaw(t, dial()), newRaw(t, dial())
		sink.do(AppendLogin(nil, "sink"), ResultOK)
		a.do(AppendLogin(nil, "alice"), ResultOK)
		b.do(AppendLogin(nil, "bob"), ResultOK)

		// The sink reads nothing from here on. Alice sends until refused;
		// every request is answered.
		text := strings.Repeat("x", 30000)
		refused := 0
		for sent := 0; refused == 0; sent++ {
			if sent > 10000 {
				t.Fatal("10,000 messages of 30 KB queued for a client that reads nothing")
			}
			a.send(AppendSendTo(nil, "sink", text))
			if f := a.next(); f.Result == ResultFailure {
				refused++
			}
			// Others chat on meanwhile.
			b.do(AppendSendTo(nil, "alice", "still here"), ResultOK)
			a.expectMessage("bob", "still here")
		}
		select {
		case err := <-logouts:
			if !strings.Contains(err.Error(), "slow consumer") {
				t.Errorf("the sink was logged out with %v, want a slow consumer", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("the sink was not dropped")
		}
		a.do(AppendSendTo(nil, "sink", "gone?"), ResultFailure)
		if got := a.list(); !slices.Equal(got, []string{"alice", "bob"}) {
			t.Errorf("list = %q", got)
		}
		if n := srv.Stats().SlowConsumers; n != 1 {
			t.Errorf("Stats().SlowConsumers = %d, want 1", n)
		}
	})
}

func TestServerMaxConns(t *testing.T) {
	srv := &Server{MaxConns: 1}
	defer srv.Close()
	c1, s1 := net.Pipe()
	defer c1.Close()
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(s1) }()
	r := newRaw(t, c1)
	r.do(AppendLogin(nil, "alice"), ResultOK) // the first is being served

	c2, s2 := net.Pipe()
	defer c2.Close()
	if err := srv.ServeConn(s2); err != ErrTooManyConns {
		t.Fatalf("second connection: %v, want ErrTooManyConns", err)
	}
	if _, err := c2.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the refused connection reads %v, want io.EOF", err)
	}
	r.do(AppendLogout(nil), ResultOK) // the first goes on
	c1.Close()
	if err := <-done; err != nil {
		t.Errorf("ServeConn after the client closed: %v, want nil", err)
	}
	if st := srv.Stats(); st.ConnsRefused != 1 {
		t.Errorf("ConnsRefused = %d, want 1", st.ConnsRefused)
	}
}

// TestServerShutdownFlushes: replies owed when Shutdown is called are
// delivered before the connection closes.
func TestServerShutdownFlushes(t *testing.T) {
	loggedIn := make(chan struct{})
	srv := &Server{OnLogin: func(net.Conn, string) { close(loggedIn) }}
	c, s := net.Pipe()
	defer c.Close()
	served := make(chan error, 1)
	go func() { served <- srv.ServeConn(s) }()
	r := newRaw(t, c)
	r.send(AppendLogin(nil, "alice")) // the reply cannot be written: nobody reads yet
	<-loggedIn

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	if f := r.next(); f.Type != TypeResponse || f.Result != ResultOK {
		t.Fatalf("the owed reply: %v %v", f.Type, f.Result)
	}
	r.expectEOF()
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != ErrServerClosed {
		t.Errorf("ServeConn: %v, want ErrServerClosed", err)
	}
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
	if err := srv.ListenAndServe("127.0.0.1:0"); err != ErrServerClosed {
		t.Errorf("ListenAndServe after Shutdown: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("Close after Shutdown: %v", err)
	}
}

// TestServerShutdownDeadline: a Shutdown whose context ends first closes
// what is left and returns the context's error.
func TestServerShutdownDeadline(t *testing.T) {
	loggedIn := make(chan struct{})
	srv := &Server{OnLogin: func(net.Conn, string) { close(loggedIn) }}
	c, s := net.Pipe()
	defer c.Close()
	served := make(chan error, 1)
	go func() { served <- srv.ServeConn(s) }()
	newRaw(t, c).send(AppendLogin(nil, "alice")) // and never read the reply
	<-loggedIn
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.Shutdown(ctx); err != context.Canceled {
		t.Errorf("Shutdown: %v, want context.Canceled", err)
	}
	if err := <-served; err != ErrServerClosed {
		t.Errorf("ServeConn: %v", err)
	}
	for range 2 {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

func TestServerListenAndServeBadAddress(t *testing.T) {
	srv := &Server{}
	if err := srv.ListenAndServe("127.0.0.1:-1"); err == nil {
		t.Fatal("ListenAndServe on a bad address succeeded")
	}
	srv.Close()
}
