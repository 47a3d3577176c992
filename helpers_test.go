package chat

// The helpers shared by the package's tests: the bounds on their waits, a
// context for their requests, polling, a Server served over net.Pipe or
// loopback TCP, a raw client that speaks frames and validates nothing, and
// frames described for comparisons. The frames themselves are built by the
// Append functions, or by withBody and header (frame_test.go) where they
// must break the rules. The attacks' environment (hostileEnv, hostileLogin)
// is in hostile_test.go, the test certificate authority (identityNewCA) in
// identity_test.go.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testTimeout bounds every single wait of these tests: a read, a write, a
// reply, a condition polled for, Serve or ServeConn returning. It is
// generous for a loaded machine running the race detector; a passing run
// never gets near it. It makes a broken test fail instead of hang.
const testTimeout = 10 * time.Second

// testCtxTimeout bounds the context of testCtx, under which a test may make
// all of its requests. It is a minute, not testTimeout, because a test's
// requests add up: TestHostileLoginLogoutStorm makes 600 connections' worth
// under one context, TestHostileSendToLeaving 900 messages to users coming
// and going, on a loaded machine under the race detector, while each read
// and reply within them is bounded by testTimeout on its own. A passing
// test never comes near it either: it only turns a hang into a failure,
// after a minute rather than 10 s.
const testCtxTimeout = time.Minute

// testCtx returns a context for a test's requests, bounded by
// testCtxTimeout and cancelled once the test and its cleanups are done.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testCtxTimeout)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond on a short ticker until it holds, for use only
// where no event tells when it does; it fails the test after testTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if cond() {
		return
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(testTimeout)
	for {
		select {
		case <-tick.C:
			if cond() {
				return
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// isTimeout reports whether err is a read or write deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isReset reports whether err is a connection reset by the peer.
func isReset(err error) bool { return strings.Contains(err.Error(), "connection reset") }

// testServer is a Server under test and the way to reach it.
type testServer struct {
	srv *Server

	// dial returns a new connection to the server, closed when the test
	// ends.
	dial func() net.Conn

	// stopped waits until the server has stopped serving (after Shutdown
	// or Close) and returns what it returned: Serve's error over TCP, the
	// error of every ServeConn over pipes.
	stopped func() []error
}

// transport connects clients to a Server: over net.Pipe through ServeConn,
// or over loopback TCP through Serve.
type transport struct {
	name  string
	start func(t testing.TB, srv *Server) *testServer
}

var transports = []transport{
	{"pipe", startPipe},
	{"tcp", startTCP},
}

// forEachTransport runs f as a parallel subtest over each transport.
func forEachTransport(t *testing.T, f func(t *testing.T, tr transport)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			f(t, tr)
		})
	}
}

// startPipe serves srv one net.Pipe at a time, until the test ends.
func startPipe(t testing.TB, srv *Server) *testServer {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	t.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})
	wait := func() []error {
		done := make(chan struct{})
		go func() {
			wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(testTimeout):
			t.Fatal("ServeConn did not return")
		}
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(errs)
	}
	dial := func() net.Conn {
		client, server := net.Pipe()
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := srv.ServeConn(server)
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}()
		t.Cleanup(func() { client.Close() })
		return client
	}
	return &testServer{srv: srv, dial: dial, stopped: wait}
}

// startTCP serves srv on a loopback listener until the test ends, as
// serveTCP does.
func startTCP(t testing.TB, srv *Server) *testServer {
	ts := serveTCP(t, srv)
	return &testServer{
		srv:     srv,
		dial:    func() net.Conn { return ts.dial(t) },
		stopped: func() []error { return []error{ts.wait()} },
	}
}

// tcpServer is a Server serving a loopback listener for one test.
type tcpServer struct {
	srv  *Server
	addr string

	done chan struct{} // closed when Serve has returned
	err  error         // what Serve returned, once done is closed

	stopOnce sync.Once
}

// serveTCP serves srv on a new listener on 127.0.0.1 until the test ends,
// and then checks that Close made Serve return ErrServerClosed.
func serveTCP(t testing.TB, srv *Server) *tcpServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveListener(t, srv, l)
}

// serveListener is serveTCP on a listener of the caller's.
func serveListener(t testing.TB, srv *Server, l net.Listener) *tcpServer {
	t.Helper()
	ts := &tcpServer{srv: srv, addr: l.Addr().String(), done: make(chan struct{})}
	go func() {
		ts.err = srv.Serve(l)
		close(ts.done)
	}()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop closes the server and checks that Serve returned ErrServerClosed;
// the end of the test does it too, the first time only.
func (ts *tcpServer) stop(t testing.TB) {
	t.Helper()
	ts.stopOnce.Do(func() {
		ts.srv.Close()
		if err := ts.wait(); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
}

// wait waits until Serve has returned, for up to testTimeout, and returns
// what it returned.
func (ts *tcpServer) wait() error {
	select {
	case <-ts.done:
		return ts.err
	case <-time.After(testTimeout):
		return errors.New("Serve did not return")
	}
}

// stillServing fails the test if Serve has returned.
func (ts *tcpServer) stillServing(t *testing.T) {
	t.Helper()
	select {
	case <-ts.done:
		t.Fatalf("Serve returned during the test: %v", ts.err)
	default:
	}
}

// waitConns waits until the server holds exactly n connections.
func (ts *tcpServer) waitConns(t *testing.T, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("the server to hold %d connections", n), func() bool {
		return ts.srv.Stats().Conns == n
	})
}

// dial connects to the server, until the test ends.
func (ts *tcpServer) dial(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", ts.addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// raw is a client that speaks the protocol frame by frame and validates
// nothing, over a pipe or TCP: it sends what another client, or an
// attacker, could. Every read and write is bounded by testTimeout. Its
// methods fail the test on an error; those named try return it instead,
// for a connection the server may close and for goroutines other than the
// test's.
type raw struct {
	t  *testing.T // nil for a raw client that only tries
	c  net.Conn
	fr *FrameReader
}

func newRaw(t *testing.T, c net.Conn) *raw {
	return &raw{t: t, c: c, fr: NewFrameReader(c, 0)}
}

// dialRaw connects a raw client over TCP, closed when the test ends.
func dialRaw(t *testing.T, addr string) *raw {
	t.Helper()
	r, err := tryDialRaw(t, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r
}

// tryDialRaw connects a raw client over TCP with d (nil for a default
// dialer), for the caller to close; t may be nil where only the try
// methods are used.
func tryDialRaw(t *testing.T, addr string, d *net.Dialer) (*raw, error) {
	if d == nil {
		d = &net.Dialer{}
	}
	d.Timeout = testTimeout
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return newRaw(t, c), nil
}

func (r *raw) trySend(frame []byte) error {
	r.c.SetWriteDeadline(time.Now().Add(testTimeout))
	_, err := r.c.Write(frame)
	return err
}

func (r *raw) send(frame []byte) {
	r.t.Helper()
	if err := r.trySend(frame); err != nil {
		r.t.Fatalf("sending: %v", err)
	}
}

// closeWrite half-closes the connection, a TCP one.
func (r *raw) closeWrite() error { return r.c.(*net.TCPConn).CloseWrite() }

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

func (r *raw) next() Frame {
	r.t.Helper()
	f, err := r.tryNext()
	if err != nil {
		r.t.Fatalf("reading: %v", err)
	}
	return f
}

// expect reads a frame that must be the RESPONSE want; what, if given,
// names the request in the failure.
func (r *raw) expect(want Result, what ...string) {
	r.t.Helper()
	label := ""
	if len(what) > 0 {
		label = strings.Join(what, " ") + ": "
	}
	f, err := r.tryNext()
	switch {
	case err != nil:
		r.t.Fatalf("%sreading the reply: %v", label, err)
	case f.Type != TypeResponse || f.Result != want:
		r.t.Fatalf("%sreply %s, want RESPONSE %v", label, describe(f), want)
	}
}

// do sends frame and expects the RESPONSE want.
func (r *raw) do(frame []byte, want Result) {
	r.t.Helper()
	r.send(frame)
	r.expect(want)
}

// names reads a frame that must be a LIST, the reply to what, and returns
// its names.
func (r *raw) names(what string) []string {
	r.t.Helper()
	f, err := r.tryNext()
	if err != nil {
		r.t.Fatalf("%s: reading the reply: %v", what, err)
	}
	if f.Type != TypeNames {
		r.t.Fatalf("%s: reply %s, want LIST", what, describe(f))
	}
	return frameNames(f.Names)
}

// list sends a list and returns the names of its reply.
func (r *raw) list() []string {
	r.t.Helper()
	r.send(AppendList(nil))
	return r.names("reply to list")
}

func (r *raw) expectMessage(from, text string) {
	r.t.Helper()
	if f := r.next(); f.Type != TypeMessage || string(f.Name) != from || string(f.Text) != text {
		r.t.Fatalf("got %.60s; want a message from %q: %.40q", describe(f), from, text)
	}
}

// expectInAnyOrder reads as many frames as want, which must be those
// described (see describe) in any order: a sendto to oneself gets its
// reply and the message in an order not fixed.
func (r *raw) expectInAnyOrder(want ...string) {
	r.t.Helper()
	var got []string
	for range want {
		got = append(got, describe(r.next()))
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		r.t.Fatalf("got %q, want %q in any order", got, want)
	}
}

// expectEOF reads frames until the server closes the connection, and fails
// the test if it does not. What it reads, and how the connection ends
// (EOF or a reset), does not matter; expectEnd is the strict one.
func (r *raw) expectEOF() {
	r.t.Helper()
	for {
		_, err := r.tryNext()
		if err == nil || errors.Is(err, ErrMalformedFrame) {
			continue
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isReset(err) {
			r.t.Fatalf("want the connection closed by the server, got %v", err)
		}
		return
	}
}

// readToEnd reads frames until the connection ends, and returns their
// descriptions and the error that ended it, which is never a timeout: the
// test fails if the server does not close the connection.
func (r *raw) readToEnd(what string) ([]string, error) {
	r.t.Helper()
	var got []string
	for {
		f, err := r.tryNext()
		if err != nil {
			if isTimeout(err) {
				r.t.Fatalf("%s: the server did not close the connection (read %q so far)", what, got)
			}
			return got, err
		}
		got = append(got, describe(f))
	}
}

// expectEnd reads frames until the connection ends, which must be a clean
// end of stream after exactly the frames want.
func (r *raw) expectEnd(what string, want ...string) {
	r.t.Helper()
	got, err := r.readToEnd(what)
	if !errors.Is(err, io.EOF) {
		r.t.Errorf("%s: connection ended with %v, want EOF", what, err)
	}
	if !slices.Equal(got, want) {
		r.t.Errorf("%s: got frames %q before EOF, want %q", what, got, want)
	}
}

// describe names a frame for comparisons: "RESPONSE ok",
// "LIST alice bob", "SENDTO alice: hi".
func describe(f Frame) string {
	switch f.Type {
	case TypeResponse:
		return "RESPONSE " + f.Result.String()
	case TypeNames:
		return strings.Join(append([]string{"LIST"}, frameNames(f.Names)...), " ")
	case TypeMessage:
		return fmt.Sprintf("SENDTO %s: %s", f.Name, f.Text)
	}
	return f.Type.String()
}

// frameNames returns the names of a LIST's payload, as far as they go.
// (listNames, in frame_test.go, is for a payload DecodeFrame accepted.)
func frameNames(payload []byte) []string {
	names := []string{}
	for rest := payload; len(rest) > 0; {
		var name []byte
		name, rest, _ = nextName(rest)
		names = append(names, string(name))
	}
	return names
}

// failureDelta returns how much each failure reason grew from before to
// after.
func failureDelta(before, after Stats) map[string]uint64 {
	d := map[string]uint64{}
	for k, v := range after.Failures {
		if v != before.Failures[k] {
			d[k.String()] = v - before.Failures[k]
		}
	}
	return d
}
