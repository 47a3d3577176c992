package chat

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

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

func TestClientAgainstServer(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		ctx := testCtx(t)
		dial := tr.start(t, &Server{})
		inA, inB := newInbox(), newInbox()
		a := NewClient(dial(), OnMessage(inA.handler))
		defer a.Close()
		b := NewClient(dial(), OnMessage(inB.handler))
		defer b.Close()

		if names, err := a.List(ctx); err != nil || len(names) != 0 {
			t.Fatalf("List before logins: %q, %v", names, err)
		}
		if err := a.SendTo(ctx, "bob", "hi"); !errors.Is(err, ErrFailure) {
			t.Fatalf("SendTo before login: %v", err)
		}
		if err := a.Login(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if err := b.Login(ctx, "alice"); !errors.Is(err, ErrFailure) {
			t.Fatalf("second alice: %v", err)
		}
		// Checked before asking the server.
		if err := b.Login(ctx, "b b"); err != ErrBadUsername {
			t.Fatalf("Login(b b): %v", err)
		}
		if err := b.SendTo(ctx, "alice", "caf\xe9"); err != ErrBadMessage {
			t.Fatalf("SendTo with invalid UTF-8: %v", err)
		}
		if err := b.Login(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		if names, err := b.List(ctx); err != nil || !slices.Equal(names, []string{"alice", "bob"}) {
			t.Fatalf("List: %q, %v", names, err)
		}
		if err := a.SendTo(ctx, "bob", "Hi, how are you?"); err != nil {
			t.Fatal(err)
		}
		inB.expect(t, "alice", "Hi, how are you?")
		if err := b.SendTo(ctx, "alice", "\x1b[31m red"); err != nil {
			t.Fatal(err)
		}
		inA.expect(t, "bob", "\x1b[31m red") // raw here; Console escapes
		if err := a.SendTo(ctx, "carol", "hi"); !errors.Is(err, ErrFailure) {
			t.Fatalf("SendTo nobody: %v", err)
		}
		if err := b.Logout(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b.Logout(ctx); !errors.Is(err, ErrFailure) {
			t.Fatalf("second Logout: %v", err)
		}
		if a.Err() != nil {
			t.Fatalf("Err while connected: %v", a.Err())
		}
	})
}

// TestClientConcurrent: many goroutines share one Client; each gets the
// reply to its own request.
func TestClientConcurrent(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		ctx := testCtx(t)
		dial := tr.start(t, &Server{})
		in := newInbox()
		a := NewClient(dial(), OnMessage(in.handler))
		defer a.Close()
		b := NewClient(dial())
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
	})
}

// fakeServer is the server end of a net.Pipe, scripted by the test.
func fakeServer(t *testing.T, opts ...Option) (*Client, *raw) {
	c, s := net.Pipe()
	t.Cleanup(func() { s.Close() })
	client := NewClient(c, opts...)
	t.Cleanup(func() { client.Close() })
	return client, newRaw(t, s)
}

func TestClientReplies(t *testing.T) {
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
	for _, tt := range []struct {
		reply []byte
		want  error
	}{
		{AppendResponse(nil, ResultOK), nil},
		{AppendResponse(nil, ResultFailure), ErrFailure},
		{AppendResponse(nil, ResultMalformed), ErrMalformedPacket},
	} {
		done := call(func() ([]string, error) { return nil, c.Logout(ctx) })
		if f := srv.next(); f.Type != TypeLogout {
			t.Fatalf("the server got %v", f.Type)
		}
		srv.send(tt.reply)
		if r := <-done; !errors.Is(r.err, tt.want) || (tt.want == nil && r.err != nil) {
			t.Errorf("reply % x: %v, want %v", tt.reply, r.err, tt.want)
		}
	}

	// List: a LIST, or a RESPONSE failure.
	done := call(func() ([]string, error) { return c.List(ctx) })
	srv.next()
	srv.send(AppendNames(nil, []string{"a", "b"}))
	if r := <-done; r.err != nil || !slices.Equal(r.names, []string{"a", "b"}) {
		t.Errorf("List: %q, %v", r.names, r.err)
	}
	done = call(func() ([]string, error) { return c.List(ctx) })
	srv.next()
	srv.send(AppendResponse(nil, ResultFailure))
	if r := <-done; !errors.Is(r.err, ErrFailure) {
		t.Errorf("List refused: %v", r.err)
	}
	done = call(func() ([]string, error) { return c.List(ctx) })
	srv.next()
	srv.send(AppendNames(nil, nil))
	if r := <-done; r.err != nil || r.names == nil || len(r.names) != 0 {
		t.Errorf("List of nobody: %#v, %v", r.names, r.err)
	}

	// Pipelined requests get their own replies, in order.
	a := call(func() ([]string, error) { return nil, c.Login(ctx, "alice") })
	srv.next()
	b := call(func() ([]string, error) { return c.List(ctx) })
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

func TestClientProtocolErrors(t *testing.T) {
	for _, tt := range []struct {
		name  string
		frame []byte
	}{
		{"reply without request", AppendResponse(nil, ResultOK)},
		{"client frame from the server", AppendLogin(nil, "x")},
		{"malformed frame", withBody(0x81, 9)},
		{"oversize frame", []byte{0x7f, 0, 0, 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, srv := fakeServer(t)
			srv.send(tt.frame)
			<-c.Done()
			err := c.Err()
			if !errors.Is(err, ErrClosed) {
				t.Errorf("Err = %v, want ErrClosed", err)
			}
			if errors.Is(err, io.EOF) {
				t.Errorf("Err = %v: not the server closing", err)
			}
			if err := c.Logout(testCtx(t)); !errors.Is(err, ErrClosed) {
				t.Errorf("a call after: %v", err)
			}
		})
	}
	// The wrong reply to a request ends the connection too.
	c, srv := fakeServer(t)
	done := make(chan error, 1)
	go func() { done <- c.Logout(testCtx(t)) }()
	srv.next()
	srv.send(AppendNames(nil, nil))
	if err := <-done; !errors.Is(err, ErrClosed) || !errors.Is(err, ErrProtocol) {
		t.Errorf("LIST in reply to logout: %v", err)
	}
}

func TestClientServerCloses(t *testing.T) {
	c, srv := fakeServer(t)
	done := make(chan error, 1)
	go func() { done <- c.Logout(testCtx(t)) }()
	srv.next()
	srv.c.Close()
	if err := <-done; !errors.Is(err, ErrClosed) || !errors.Is(err, io.EOF) {
		t.Errorf("pending call: %v", err)
	}
	select {
	case <-c.Done():
	case <-time.After(testTimeout):
		t.Fatal("Done not closed")
	}
	if err := c.Err(); !errors.Is(err, ErrClosed) || !errors.Is(err, io.EOF) {
		t.Errorf("Err = %v, want ErrClosed and io.EOF", err)
	}
}

func TestClientContext(t *testing.T) {
	c, srv := fakeServer(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Logout(cancelled); err != context.Canceled {
		t.Errorf("with a cancelled context: %v", err)
	}

	// A call whose context ends while it waits; its late reply is dropped
	// and the next call gets its own.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Logout(ctx) }()
	srv.next()
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("cancelled while waiting: %v", err)
	}
	next := make(chan error, 1)
	go func() { next <- c.Login(testCtx(t), "bob") }()
	if f, err := srv.tryNext(); err != nil {
		t.Fatalf("reading the login: %v (client: %v)", err, c.Err())
	} else if f.Type != TypeLogin {
		t.Fatalf("got %v", f.Type)
	}
	srv.send(append(AppendResponse(nil, ResultMalformed), AppendResponse(nil, ResultFailure)...))
	if err := <-next; !errors.Is(err, ErrFailure) {
		t.Errorf("the call after: %v, want the second reply (ErrFailure)", err)
	}

	// A write the server does not read is interrupted by the context.
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Logout(ctx); err != context.DeadlineExceeded {
		t.Errorf("unread write: %v", err)
	}
	if c.Err() != nil {
		t.Errorf("the connection ended: %v", c.Err())
	}
}

func TestClientCloseIdempotent(t *testing.T) {
	c, _ := fakeServer(t)
	for range 3 {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if !errors.Is(c.Err(), ErrClosed) {
		t.Errorf("Err after Close: %v", c.Err())
	}
	if err := c.Login(testCtx(t), "bob"); !errors.Is(err, ErrClosed) {
		t.Errorf("Login after Close: %v", err)
	}
}

func TestDial(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if _, err := Dial(testCtx(t), addr); err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}
}

func TestDialTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
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
	ctx := testCtx(t)
	c, err := Dial(ctx, l.Addr().String(), WithTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	// Without trusting the certificate, the handshake fails.
	bad, err := Dial(ctx, l.Addr().String(), WithTLS(&tls.Config{ServerName: "localhost"}))
	if err == nil {
		err = bad.Login(ctx, "bob")
		bad.Close()
	}
	if err == nil {
		t.Fatal("logged in over TLS with an untrusted certificate")
	}
}

// selfSigned returns a certificate for localhost and 127.0.0.1 and a pool
// that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
