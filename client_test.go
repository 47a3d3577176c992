package chat

// The Client against a real Server (over net.Pipe and loopback TCP, see
// forEachTransport in helpers_test.go) and against a fake server scripted
// with the Append functions and a FrameReader, which controls every reply.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// inbox collects the messages a Client receives.
type inbox struct{ ch chan Message }

func newInbox() *inbox { return &inbox{ch: make(chan Message, 1000)} }

func (in *inbox) handler(m Message) { in.ch <- m }

func (in *inbox) expect(t *testing.T, from, text string) {
	t.Helper()
	select {
	case m := <-in.ch:
		if m.From != from || m.Text != text {
			t.Fatalf("message %q: %q, want %q: %q", m.From, m.Text, from, text)
		}
	case <-time.After(testTimeout):
		t.Fatalf("no message %q: %q", from, text)
	}
}

// expectNone fails if a message has arrived.
func (in *inbox) expectNone(t *testing.T) {
	t.Helper()
	select {
	case m := <-in.ch:
		t.Fatalf("unexpected message %q: %q", m.From, m.Text)
	default:
	}
}

func TestClientAgainstServer(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ctx := testCtx(t)
		ts := tr.start(t, &Server{})
		inA, inB := newInbox(), newInbox()
		a := NewClient(ts.dial(), OnMessage(inA.handler))
		defer a.Close()
		b := NewClient(ts.dial(), OnMessage(inB.handler))
		defer b.Close()

		if names, err := a.List(ctx); err != nil || names == nil || len(names) != 0 {
			t.Fatalf("List before logins: %#v, %v; want [], nil", names, err)
		}
		if err := a.SendTo(ctx, "bob", "hi"); !errors.Is(err, ErrFailure) {
			t.Fatalf("SendTo before login: %v, want ErrFailure", err)
		}
		if err := a.Logout(ctx); !errors.Is(err, ErrFailure) {
			t.Fatalf("Logout before login: %v, want ErrFailure", err)
		}
		if err := a.Login(ctx, "alice"); err != nil {
			t.Fatalf("Login: %v", err)
		}
		if err := a.Login(ctx, "alice2"); !errors.Is(err, ErrFailure) {
			t.Fatalf("Login when logged in: %v, want ErrFailure", err)
		}
		if err := b.Login(ctx, "alice"); !errors.Is(err, ErrFailure) {
			t.Fatalf("Login with a taken name: %v, want ErrFailure", err)
		}
		if err := b.Login(ctx, "bob"); err != nil {
			t.Fatalf("Login: %v", err)
		}
		if names, err := b.List(ctx); err != nil || !slices.Equal(names, []string{"alice", "bob"}) {
			t.Fatalf("List: %q, %v", names, err)
		}
		if err := a.SendTo(ctx, "bob", "Hi, how are you?"); err != nil {
			t.Fatalf("SendTo: %v", err)
		}
		inB.expect(t, "alice", "Hi, how are you?")
		if err := b.SendTo(ctx, "alice", "\x1b[31m red"); err != nil {
			t.Fatalf("SendTo: %v", err)
		}
		inA.expect(t, "bob", "\x1b[31m red") // raw here; Console escapes
		if err := a.SendTo(ctx, "carol", "hi"); !errors.Is(err, ErrFailure) {
			t.Fatalf("SendTo nobody: %v, want ErrFailure", err)
		}
		if err := a.SendTo(ctx, "alice", "me"); err != nil {
			t.Fatalf("SendTo self: %v", err)
		}
		inA.expect(t, "alice", "me")

		if err := b.Logout(ctx); err != nil {
			t.Fatalf("Logout: %v", err)
		}
		if err := b.Logout(ctx); !errors.Is(err, ErrFailure) {
			t.Fatalf("second Logout: %v, want ErrFailure", err)
		}
		if err := a.SendTo(ctx, "bob", "gone?"); !errors.Is(err, ErrFailure) {
			t.Fatalf("SendTo a logged-out user: %v, want ErrFailure", err)
		}
		if names, err := b.List(ctx); err != nil || !slices.Equal(names, []string{"alice"}) {
			t.Fatalf("List after Logout: %q, %v", names, err)
		}
		if err := b.Login(ctx, "bob"); err != nil {
			t.Fatalf("Login after Logout: %v", err)
		}
		if a.Err() != nil || b.Err() != nil {
			t.Fatalf("Err while connected: %v, %v", a.Err(), b.Err())
		}
		inA.expectNone(t)
		inB.expectNone(t)
	})
}

// TestClientValidates: names and texts that break the rules are refused
// without asking the server.
func TestClientValidates(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c, srv := fakeServer(t)
	for _, tt := range []struct {
		what string
		call func() error
		want error
	}{
		{"Login empty", func() error { return c.Login(ctx, "") }, ErrBadUsername},
		{"Login with a space", func() error { return c.Login(ctx, "b b") }, ErrBadUsername},
		{"Login 21 characters", func() error { return c.Login(ctx, strings.Repeat("名", 21)) }, ErrBadUsername},
		{"Login invalid UTF-8", func() error { return c.Login(ctx, "\xff") }, ErrBadUsername},
		{"SendTo bad name", func() error { return c.SendTo(ctx, "a\tb", "hi") }, ErrBadUsername},
		{"SendTo bad name and text", func() error { return c.SendTo(ctx, "", "\xff") }, ErrBadUsername},
		{"SendTo invalid UTF-8", func() error { return c.SendTo(ctx, "bob", "caf\xe9") }, ErrBadMessage},
		{"SendTo too long", func() error { return c.SendTo(ctx, "bob", strings.Repeat("x", MaxTextLen+1)) }, ErrBadMessage},
	} {
		if err := tt.call(); err != tt.want {
			t.Errorf("%s: %v, want %v", tt.what, err, tt.want)
		}
	}
	// Nothing was sent: the first frame the server gets is the next request.
	done := make(chan error, 1)
	go func() { done <- c.SendTo(ctx, "bob", strings.Repeat("€", MaxTextLen)) }()
	if f := srv.next(); f.Type != TypeSendTo || string(f.Name) != "bob" || len(f.Text) != 3*MaxTextLen {
		t.Fatalf("the server got %.40s", describe(f))
	}
	srv.send(AppendResponse(nil, ResultOK))
	if err := <-done; err != nil {
		t.Fatalf("SendTo: %v", err)
	}
}

// TestClientConcurrent: many goroutines share one Client against a real
// server; each gets the reply to its own request.
func TestClientConcurrent(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ctx := testCtx(t)
		ts := tr.start(t, &Server{})
		in := newInbox()
		a := NewClient(ts.dial(), OnMessage(in.handler))
		defer a.Close()
		b := NewClient(ts.dial())
		defer b.Close()
		if err := a.Login(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if err := b.Login(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		const workers, each = 20, 25
		var wg sync.WaitGroup
		errs := make(chan error, workers*each*3)
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					if err := b.SendTo(ctx, "alice", fmt.Sprintf("%d/%d", w, i)); err != nil {
						errs <- fmt.Errorf("SendTo: %w", err)
					}
					if names, err := b.List(ctx); err != nil || len(names) != 2 {
						errs <- fmt.Errorf("List: %q, %w", names, err)
					}
					if err := b.SendTo(ctx, "nobody", "x"); !errors.Is(err, ErrFailure) {
						errs <- fmt.Errorf("SendTo nobody: %v", err)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		// Every message arrived once, and each worker's in order.
		next := make([]int, workers)
		for range workers * each {
			select {
			case m := <-in.ch:
				var w, i int
				if _, err := fmt.Sscanf(m.Text, "%d/%d", &w, &i); err != nil || m.From != "bob" {
					t.Fatalf("unexpected message %q: %q", m.From, m.Text)
				}
				if i != next[w] {
					t.Fatalf("worker %d: message %d, want %d", w, i, next[w])
				}
				next[w]++
			case <-time.After(testTimeout):
				t.Fatal("messages missing")
			}
		}
		in.expectNone(t)
	})
}

// startLogout calls c.Logout in a goroutine and returns its result's
// channel once the scripted server srv has read the request.
func startLogout(t *testing.T, c *Client, srv *raw, ctx context.Context) chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Logout(ctx) }()
	if f := srv.next(); f.Type != TypeLogout {
		t.Fatalf("the server got %v, want logout", f.Type)
	}
	return done
}

// fakeServer is the server end of a net.Pipe, scripted by the test.
func fakeServer(t *testing.T, opts ...Option) (*Client, *raw) {
	c, s := net.Pipe()
	t.Cleanup(func() { s.Close() })
	client := NewClient(c, opts...)
	t.Cleanup(func() { client.Close() })
	return client, newRaw(t, s)
}

// resultFor is the fake server's answer to a request naming s: it starts
// with "ok", "fail" or "bad".
func resultFor(s string) Result {
	switch {
	case strings.HasPrefix(s, "ok"):
		return ResultOK
	case strings.HasPrefix(s, "fail"):
		return ResultFailure
	}
	return ResultMalformed
}

// TestClientConcurrentFake: many goroutines make calls at once; the fake
// server answers each request by what it asks (and slips a message in
// after each sendto), so a reply handed to the wrong call would show.
func TestClientConcurrentFake(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	in := newInbox()
	c, srv := fakeServer(t, OnMessage(in.handler))
	served := make(chan error, 1)
	go func() {
		var out []byte
		for {
			f, err := srv.fr.Next() // no deadline: ends when the client closes
			if err != nil {
				served <- err
				return
			}
			out = out[:0]
			switch f.Type {
			case TypeLogin:
				out = AppendResponse(out, resultFor(string(f.Name)))
			case TypeSendTo:
				out = AppendResponse(out, resultFor(string(f.Text)))
				out = AppendMessage(out, string(f.Name), f.Text)
			case TypeList:
				out = AppendNames(out, []string{"listed"})
			case TypeLogout:
				out = AppendResponse(out, ResultOK)
			}
			if _, err := srv.c.Write(out); err != nil {
				served <- err
				return
			}
		}
	}()

	const workers, each = 32, 40
	kinds := []string{"ok", "fail", "bad"}
	wantErr := map[string]error{"ok": nil, "fail": ErrFailure, "bad": ErrMalformedPacket}
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				kind := kinds[(w+i)%3]
				var err error
				var what string
				switch i % 4 {
				case 0:
					what = fmt.Sprintf("%s%d_%d", kind, w, i)
					err = c.Login(ctx, what)
				case 1:
					what = fmt.Sprintf("%s %d %d", kind, w, i)
					err = c.SendTo(ctx, fmt.Sprintf("peer%d", w), what)
				case 2:
					what = "list"
					var names []string
					if names, err = c.List(ctx); err == nil && !slices.Equal(names, []string{"listed"}) {
						err = fmt.Errorf("names %q", names)
					}
					kind = "ok"
				case 3:
					what = "logout"
					err = c.Logout(ctx)
					kind = "ok"
				}
				if want := wantErr[kind]; err != want {
					errs <- fmt.Errorf("%s: %v, want %v", what, err, want)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if c.Err() != nil {
		t.Fatalf("Err: %v", c.Err())
	}

	// One message per sendto, each worker's in order.
	next := make([]int, workers)
	for range workers * each / 4 {
		select {
		case m := <-in.ch:
			var kind string
			var w, i int
			if _, err := fmt.Sscanf(m.Text, "%s %d %d", &kind, &w, &i); err != nil || m.From != fmt.Sprintf("peer%d", w) {
				t.Fatalf("unexpected message %q: %q", m.From, m.Text)
			}
			if i != 4*next[w]+1 {
				t.Fatalf("worker %d: message of call %d, want %d", w, i, 4*next[w]+1)
			}
			next[w]++
		case <-time.After(testTimeout):
			t.Fatal("messages missing")
		}
	}
	in.expectNone(t)

	c.Close()
	select {
	case err := <-served:
		if !errors.Is(err, io.EOF) {
			t.Errorf("the fake server ended with %v, want io.EOF", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("the fake server did not see the client close")
	}
}

func TestClientReplies(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c, srv := fakeServer(t)
	type result struct {
		names []string
		err   error
	}
	call := func(f func() ([]string, error)) chan result {
		ch := make(chan result, 1)
		go func() {
			names, err := f()
			ch <- result{names, err}
		}()
		return ch
	}
	logout := func() ([]string, error) { return nil, c.Logout(ctx) }
	list := func() ([]string, error) { return c.List(ctx) }
	for _, tt := range []struct {
		what      string
		call      func() ([]string, error)
		reply     []byte
		wantNames []string
		wantErr   error
	}{
		{"ok", logout, AppendResponse(nil, ResultOK), nil, nil},
		{"failure", logout, AppendResponse(nil, ResultFailure), nil, ErrFailure},
		{"malformed packet", logout, AppendResponse(nil, ResultMalformed), nil, ErrMalformedPacket},
		{"LIST", list, AppendNames(nil, []string{"a", "b"}), []string{"a", "b"}, nil},
		{"empty LIST", list, AppendNames(nil, nil), []string{}, nil},
		{"list refused", list, AppendResponse(nil, ResultFailure), nil, ErrFailure},
		{"list malformed", list, AppendResponse(nil, ResultMalformed), nil, ErrMalformedPacket},
		{"ok to a list", list, AppendResponse(nil, ResultOK), nil, ErrProtocol},
	} {
		done := call(tt.call)
		srv.next()
		srv.send(tt.reply)
		r := <-done
		if tt.wantErr == nil && r.err != nil || !errors.Is(r.err, tt.wantErr) {
			t.Errorf("%s: error %v, want %v", tt.what, r.err, tt.wantErr)
		}
		if !slices.Equal(r.names, tt.wantNames) || (tt.wantNames != nil) != (r.names != nil) {
			t.Errorf("%s: names %#v, want %#v", tt.what, r.names, tt.wantNames)
		}
	}

	// Pipelined requests get their own replies, in order.
	a := call(func() ([]string, error) { return nil, c.Login(ctx, "alice") })
	srv.next()
	b := call(list)
	srv.next()
	srv.send(append(AppendResponse(nil, ResultFailure), AppendNames(nil, []string{"z"})...))
	if r := <-a; !errors.Is(r.err, ErrFailure) {
		t.Errorf("first: %v", r.err)
	}
	if r := <-b; r.err != nil || !slices.Equal(r.names, []string{"z"}) {
		t.Errorf("second: %q, %v", r.names, r.err)
	}
	if c.Err() != nil {
		t.Fatalf("Err: %v", c.Err())
	}
}

// TestClientProtocolErrors: a frame from the server that breaks the
// protocol ends the connection; the call waiting and every later one fail
// with ErrClosed and the reason.
func TestClientProtocolErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		pending bool // a logout waits for its reply
		frame   []byte
		want    error
	}{
		{"reply without request", false, AppendResponse(nil, ResultOK), ErrProtocol},
		{"LIST without request", false, AppendNames(nil, []string{"x"}), ErrProtocol},
		{"LIST in reply to logout", true, AppendNames(nil, nil), ErrProtocol},
		{"client frame from the server", true, AppendLogin(nil, "x"), ErrProtocol},
		{"unknown result code", true, withBody(0x81, 9), ErrMalformedFrame},
		{"unknown type", true, withBody(0x7f), ErrMalformedFrame},
		{"truncated SENDTO", true, withBody(0x83, 5, 'a'), ErrMalformedFrame},
		{"oversize frame", true, []byte{0x7f, 0, 0, 0}, ErrFrameTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, srv := fakeServer(t)
			done := make(chan error, 1)
			if tt.pending {
				done = startLogout(t, c, srv, testCtx(t))
			}
			srv.send(tt.frame)
			select {
			case <-c.Done():
			case <-time.After(testTimeout):
				t.Fatal("the connection did not end")
			}
			err := c.Err()
			if !errors.Is(err, ErrClosed) || !errors.Is(err, tt.want) {
				t.Errorf("Err = %v, want ErrClosed and %v", err, tt.want)
			}
			if errors.Is(err, io.EOF) {
				t.Errorf("Err = %v: not the server closing", err)
			}
			if tt.pending {
				if err := <-done; !errors.Is(err, ErrClosed) || !errors.Is(err, tt.want) {
					t.Errorf("the waiting call: %v, want ErrClosed and %v", err, tt.want)
				}
			}
			if err := c.Logout(testCtx(t)); !errors.Is(err, ErrClosed) || !errors.Is(err, tt.want) {
				t.Errorf("a call after: %v, want ErrClosed and %v", err, tt.want)
			}
			srv.expectEOF() // the client closed its end
		})
	}
}

// TestClientProtocolErrorFailsPending: of many calls waiting, those
// answered before a bad frame succeed, and the others fail.
func TestClientProtocolErrorFailsPending(t *testing.T) {
	t.Parallel()
	c, srv := fakeServer(t)
	const n = 20
	results := make(chan error, n)
	for range n {
		go func() { results <- c.Logout(testCtx(t)) }()
	}
	for range n {
		if f := srv.next(); f.Type != TypeLogout {
			t.Fatalf("the server got %s", describe(f))
		}
	}
	var out []byte
	for range n / 2 {
		out = AppendResponse(out, ResultOK)
	}
	srv.send(AppendMessage(out, "x", []byte("a message is fine")))
	srv.send(AppendNames(nil, []string{"unexpected"}))
	ok := 0
	for range n {
		switch err := <-results; {
		case err == nil:
			ok++
		case !errors.Is(err, ErrClosed) || !errors.Is(err, ErrProtocol):
			t.Errorf("call: %v, want ErrClosed and ErrProtocol", err)
		}
	}
	if ok != n/2 {
		t.Errorf("%d calls succeeded, want %d", ok, n/2)
	}
}

// TestClientMessages: messages from the server reach the handler in order,
// before, between and after replies, and answer no call.
func TestClientMessages(t *testing.T) {
	t.Parallel()
	in := newInbox()
	c, srv := fakeServer(t, OnMessage(in.handler))
	msgs := []Message{
		{"bob", "first"},
		{"bob", ""},
		{"Zoë", "名前 😀"},
		{"carol", "\x1b[2J\r\n raw"},
		{"bob", strings.Repeat("€", MaxTextLen)},
	}
	var out []byte
	for _, m := range msgs[:2] {
		out = AppendMessage(out, m.From, []byte(m.Text))
	}
	srv.send(out)
	in.expect(t, msgs[0].From, msgs[0].Text)
	in.expect(t, msgs[1].From, msgs[1].Text)

	done := startLogout(t, c, srv, testCtx(t))
	out = AppendMessage(nil, msgs[2].From, []byte(msgs[2].Text))
	out = AppendResponse(out, ResultFailure)
	out = AppendMessage(out, msgs[3].From, []byte(msgs[3].Text))
	srv.send(out)
	if err := <-done; !errors.Is(err, ErrFailure) {
		t.Errorf("Logout: %v, want the reply after the message (ErrFailure)", err)
	}
	srv.send(AppendMessage(nil, msgs[4].From, []byte(msgs[4].Text)))
	for _, m := range msgs[2:] {
		in.expect(t, m.From, m.Text)
	}
	if c.Err() != nil {
		t.Fatalf("Err: %v", c.Err())
	}

	// Without a handler, messages are read and dropped.
	quiet, srv2 := fakeServer(t)
	srv2.send(AppendMessage(nil, "bob", []byte("dropped")))
	done = startLogout(t, quiet, srv2, testCtx(t))
	srv2.send(AppendResponse(nil, ResultOK))
	if err := <-done; err != nil {
		t.Errorf("Logout without a handler: %v", err)
	}
}

// TestClientServerCloses: when the server closes the connection, Done is
// closed, Err wraps ErrClosed and io.EOF, and so do waiting calls.
func TestClientServerCloses(t *testing.T) {
	t.Parallel()
	t.Run("fake", func(t *testing.T) {
		t.Parallel()
		c, srv := fakeServer(t)
		done := startLogout(t, c, srv, testCtx(t))
		srv.c.Close()
		if err := <-done; !errors.Is(err, ErrClosed) || !errors.Is(err, io.EOF) {
			t.Errorf("pending call: %v, want ErrClosed and io.EOF", err)
		}
		select {
		case <-c.Done():
		case <-time.After(testTimeout):
			t.Fatal("Done not closed")
		}
		if err := c.Err(); !errors.Is(err, ErrClosed) || !errors.Is(err, io.EOF) {
			t.Errorf("Err = %v, want ErrClosed and io.EOF", err)
		}
		if _, err := c.List(testCtx(t)); !errors.Is(err, ErrClosed) {
			t.Errorf("a call after: %v, want ErrClosed", err)
		}
	})
	forEachTransport(t, func(t *testing.T, tr transport) {
		ts := tr.start(t, &Server{})
		c := NewClient(ts.dial())
		defer c.Close()
		if err := c.Login(testCtx(t), "alice"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-c.Done():
			t.Fatal("Done closed while connected")
		default:
		}
		ts.srv.Close()
		select {
		case <-c.Done():
		case <-time.After(testTimeout):
			t.Fatal("Done not closed")
		}
		if err := c.Err(); !errors.Is(err, ErrClosed) || !errors.Is(err, io.EOF) {
			t.Errorf("Err = %v, want ErrClosed and io.EOF", err)
		}
	})
}

// expiringCtx is a context whose deadline passes when the test closes done.
type expiringCtx struct {
	context.Context // context.Background: no values
	done            chan struct{}
}

func (c *expiringCtx) Done() <-chan struct{} { return c.done }

func (c *expiringCtx) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func TestClientContext(t *testing.T) {
	t.Parallel()
	c, srv := fakeServer(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Logout(cancelled); err != context.Canceled {
		t.Errorf("with a cancelled context: %v", err)
	}
	expired, cancel := context.WithDeadline(context.Background(), time.Unix(1, 0))
	defer cancel()
	if _, err := c.List(expired); err != context.DeadlineExceeded {
		t.Errorf("with an expired context: %v", err)
	}

	// A call whose context ends while it waits for its reply; the late
	// reply is dropped and the next call gets its own.
	for _, tt := range []struct {
		name string
		ctx  func() (context.Context, func())
		want error
	}{
		{"cancelled", func() (context.Context, func()) { return context.WithCancel(context.Background()) }, context.Canceled},
		{"deadline", func() (context.Context, func()) {
			ctx := &expiringCtx{Context: context.Background(), done: make(chan struct{})}
			return ctx, func() { close(ctx.done) }
		}, context.DeadlineExceeded},
	} {
		ctx, end := tt.ctx()
		done := make(chan error, 1)
		go func() { done <- c.Logout(ctx) }()
		srv.next() // the request is out; its reply is not
		end()
		if err := <-done; err != tt.want {
			t.Errorf("%s while waiting: %v, want %v", tt.name, err, tt.want)
		}
		next := make(chan error, 1)
		go func() { next <- c.Login(testCtx(t), "bob") }()
		if f := srv.next(); f.Type != TypeLogin {
			t.Fatalf("got %v", f.Type)
		}
		srv.send(append(AppendResponse(nil, ResultMalformed), AppendResponse(nil, ResultFailure)...))
		if err := <-next; !errors.Is(err, ErrFailure) {
			t.Errorf("the call after: %v, want the second reply (ErrFailure)", err)
		}
	}

	// A write the server does not read is interrupted by the context, and
	// the connection stays usable.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.Logout(ctx); err != context.DeadlineExceeded {
		t.Errorf("unread write: %v", err)
	}
	if c.Err() != nil {
		t.Fatalf("the connection ended: %v", c.Err())
	}
	done := startLogout(t, c, srv, testCtx(t))
	srv.send(AppendResponse(nil, ResultOK))
	if err := <-done; err != nil {
		t.Errorf("Logout after an interrupted write: %v", err)
	}
}

// TestClientClose: Close ends waiting calls with ErrClosed, is idempotent,
// and may be called from several goroutines at once.
func TestClientClose(t *testing.T) {
	t.Parallel()
	c, srv := fakeServer(t)
	done := startLogout(t, c, srv, testCtx(t))
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("the waiting call: %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
	select {
	case <-c.Done():
	default:
		t.Error("Done not closed after Close")
	}
	if err := c.Err(); err != ErrClosed {
		t.Errorf("Err after Close: %v, want ErrClosed", err)
	}
	if err := c.Login(testCtx(t), "bob"); !errors.Is(err, ErrClosed) {
		t.Errorf("Login after Close: %v", err)
	}
	srv.expectEOF()
}

func TestDial(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if c, err := Dial(testCtx(t), addr); err == nil {
		c.Close()
		t.Fatal("Dial to a closed port succeeded")
	}

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if c, err := Dial(cancelled, "127.0.0.1:1"); !errors.Is(err, context.Canceled) {
		if c != nil {
			c.Close()
		}
		t.Errorf("Dial with a cancelled context: %v, want context.Canceled", err)
	}

	ts := startTCP(t, &Server{})
	c, err := Dial(testCtx(t), ts.dial().RemoteAddr().String(), WithKeepAlive(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(testCtx(t), "alice"); err != nil {
		t.Fatal(err)
	}
}

func TestDialTLS(t *testing.T) {
	t.Parallel()
	ca := identityNewCA(t, "test CA")
	cert := ca.issue(t, x509.ExtKeyUsageServerAuth, func(c *x509.Certificate) { c.DNSNames = []string{"localhost"} })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveListener(t, &Server{}, tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{*cert}}))
	ctx := testCtx(t)
	config := &tls.Config{RootCAs: ca.pool, ServerName: "localhost"}
	in := newInbox()
	a, err := Dial(ctx, l.Addr().String(), WithTLS(config))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Dial(ctx, l.Addr().String(), WithTLS(config), OnMessage(in.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.Login(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := b.Login(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if names, err := a.List(ctx); err != nil || !slices.Equal(names, []string{"alice", "bob"}) {
		t.Fatalf("List over TLS: %q, %v", names, err)
	}
	if err := a.SendTo(ctx, "bob", "over TLS"); err != nil {
		t.Fatal(err)
	}
	in.expect(t, "alice", "over TLS")

	// Without trusting the certificate, the handshake fails.
	bad, err := Dial(ctx, l.Addr().String(), WithTLS(&tls.Config{ServerName: "localhost"}))
	if err == nil {
		err = bad.Login(ctx, "carol")
		bad.Close()
	}
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("over TLS with an untrusted certificate: %v, want x509.UnknownAuthorityError", err)
	}
}

// TestClientLostErrorText: the error that ends a connection reads as one
// sentence, and wraps ErrClosed and its cause.
func TestClientLostErrorText(t *testing.T) {
	t.Parallel()
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	for _, tt := range []struct {
		name string
		err  *lostError
		want string
	}{
		{"the server closed", &lostError{cause: io.EOF}, "chat: the server closed the connection"},
		{"closed before answering", &lostError{cause: io.EOF, unanswered: true},
			"chat: the server closed the connection without answering; it may expect TLS"},
		{"reset before answering", &lostError{cause: reset, unanswered: true},
			"chat: the server closed the connection without answering; it may expect TLS"},
		{"reset", &lostError{cause: reset}, "chat: connection lost: read tcp: read: connection reset by peer"},
		{"a protocol error", &lostError{cause: ErrFrameTooLarge, unanswered: true}, "chat: connection lost: " + ErrFrameTooLarge.Error()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			if !errors.Is(tt.err, ErrClosed) || !errors.Is(tt.err, tt.err.cause) {
				t.Errorf("%v does not wrap ErrClosed and %v", tt.err, tt.err.cause)
			}
		})
	}
}

// TestClientPlainToTLSServer: a client without TLS talking to a TLS
// server learns that the server may expect TLS.
func TestClientPlainToTLSServer(t *testing.T) {
	cfg := newCloseTLS(t)
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg.server)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		srv.Close()
		<-served
	}()
	c, err := Dial(testCtx(t), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Login(testCtx(t), "alice")
	if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "may expect TLS") {
		t.Errorf("Login: %v, want ErrClosed and a hint that the server may expect TLS", err)
	}
}
