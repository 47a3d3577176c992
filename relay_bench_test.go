package chat

import (
	"context"
	"net"
	"strings"
	"testing"
)

// benchTransports serve a Server over net.Pipe and over loopback TCP.
func benchTransport(b *testing.B, tcp bool) (srv *Server, dial func() net.Conn) {
	srv = &Server{}
	if !tcp {
		b.Cleanup(func() { srv.Close() })
		return srv, func() net.Conn {
			c, s := net.Pipe()
			go srv.ServeConn(s)
			b.Cleanup(func() { c.Close() })
			return c
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return srv, func() net.Conn {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}
}

func BenchmarkRelayPipe(b *testing.B) { benchRelay(b, false) }
func BenchmarkRelayTCP(b *testing.B)  { benchRelay(b, true) }

// benchRelay relays b.N messages of 64 bytes from one connection to
// another through the server, pipelined (up to 1024 in flight), counting
// them at the recipient.
func benchRelay(b *testing.B, tcp bool) {
	_, dial := benchTransport(b, tcp)
	sender, recipient := dial(), dial()
	login := func(c net.Conn, fr *FrameReader, name string) {
		c.Write(AppendLogin(nil, name))
		if f, err := fr.Next(); err != nil || f.Result != ResultOK {
			b.Fatalf("login %s: %v", name, err)
		}
	}
	sfr, rfr := NewFrameReader(sender, 0), NewFrameReader(recipient, 0)
	login(sender, sfr, "sender")
	login(recipient, rfr, "recipient")

	const batch = 64
	var frames []byte
	for range batch {
		frames = AppendSendTo(frames, "recipient", strings.Repeat("x", 64))
	}
	tokens := make(chan struct{}, 1024)
	for range cap(tokens) / batch {
		tokens <- struct{}{}
	}
	replies, delivered := make(chan error, 1), make(chan error, 1)
	n := (b.N + batch - 1) / batch * batch
	go func() { // the sender's replies
		for i := range n {
			f, err := sfr.Next()
			if err == nil && f.Result != ResultOK {
				err = ErrFailure
			}
			if err != nil {
				replies <- err
				return
			}
			if i%batch == batch-1 {
				tokens <- struct{}{}
			}
		}
		replies <- nil
	}()
	go func() { // the recipient's messages
		for range n {
			if _, err := rfr.Next(); err != nil {
				delivered <- err
				return
			}
		}
		delivered <- nil
	}()
	b.SetBytes(64)
	b.ReportAllocs()
	b.ResetTimer()
	for sent := 0; sent < n; sent += batch {
		<-tokens
		if _, err := sender.Write(frames); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-delivered; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if err := <-replies; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkSendToPipe(b *testing.B) { benchSendTo(b, false) }
func BenchmarkSendToTCP(b *testing.B)  { benchSendTo(b, true) }

// benchSendTo measures Client.SendTo one call at a time: a request, the
// relay, and the reply.
func benchSendTo(b *testing.B, tcp bool) {
	_, dial := benchTransport(b, tcp)
	ctx := context.Background()
	got := make(chan struct{}, 1024)
	a := NewClient(dial())
	defer a.Close()
	r := NewClient(dial(), OnMessage(func(Message) { got <- struct{}{} }))
	defer r.Close()
	if err := a.Login(ctx, "a"); err != nil {
		b.Fatal(err)
	}
	if err := r.Login(ctx, "r"); err != nil {
		b.Fatal(err)
	}
	text := strings.Repeat("x", 64)
	b.ReportAllocs()
	for b.Loop() {
		if err := a.SendTo(ctx, "r", text); err != nil {
			b.Fatal(err)
		}
		<-got
	}
}
