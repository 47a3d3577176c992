package chat

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
)

// The relay benchmarks: one sender, the server, one recipient, in this
// process, over net.Pipe or loopback TCP.
//
//	go test -run '^$' -bench 'Relay|PingPong|SendTo' -benchmem
//
// Allocations are counted over the whole process: the server's and the
// clients'.

// benchText is the text of every message: 64 bytes, as in BENCHMARKS.md.
var benchText = strings.Repeat("x", 64)

// benchTransport serves a new Server over net.Pipe or over loopback TCP
// (startPipe, startTCP) and returns a function that connects to it.
// Everything it starts ends with the benchmark.
func benchTransport(b *testing.B, tcp bool) (dial func() net.Conn) {
	start := startPipe
	if tcp {
		start = startTCP
	}
	return start(b, &Server{}).dial
}

// benchLogin logs c in as name, speaking the protocol directly.
func benchLogin(b *testing.B, c net.Conn, fr *FrameReader, name string) {
	b.Helper()
	if _, err := c.Write(AppendLogin(nil, name)); err != nil {
		b.Fatalf("login %s: %v", name, err)
	}
	f, err := fr.Next()
	if err == nil && (f.Type != TypeResponse || f.Result != ResultOK) {
		err = ErrFailure
	}
	if err != nil {
		b.Fatalf("login %s: %v", name, err)
	}
}

func BenchmarkRelayPipe(b *testing.B) { benchRelay(b, false) }
func BenchmarkRelayTCP(b *testing.B)  { benchRelay(b, true) }

// benchRelay relays b.N messages of 64 bytes from one connection to
// another through the server, pipelined (up to relayWindow undelivered
// messages, written relayBatch to a write), and counts them at the
// recipient. It reports the messages delivered per second.
func benchRelay(b *testing.B, tcp bool) {
	const (
		relayBatch  = 64
		relayWindow = 1024
	)
	dial := benchTransport(b, tcp)
	sender, recipient := dial(), dial()
	sfr, rfr := NewFrameReader(sender, 0), NewFrameReader(recipient, 0)
	benchLogin(b, sender, sfr, "sender")
	benchLogin(b, recipient, rfr, "recipient")

	var frames []byte
	for range relayBatch {
		frames = AppendSendTo(frames, "recipient", benchText)
	}
	frameLen := len(frames) / relayBatch

	// A token is room in the window for one more batch; the sender's
	// replies give them back.
	tokens := make(chan struct{}, relayWindow/relayBatch)
	for range cap(tokens) {
		tokens <- struct{}{}
	}
	n := b.N
	errc := make(chan error, 2) // the first failure of either reader
	var readers sync.WaitGroup
	readers.Go(func() { // the sender's replies
		for range n {
			f, err := sfr.Next()
			if err == nil && (f.Type != TypeResponse || f.Result != ResultOK) {
				err = ErrFailure
			}
			if err != nil {
				errc <- err
				return
			}
		}
	})
	delivered := make(chan struct{})
	readers.Go(func() { // the recipient's messages
		for i := range n {
			if _, err := rfr.Next(); err != nil {
				errc <- err
				return
			}
			// The window counts messages not yet delivered, so that a
			// recipient slower than the sender never fills its queue
			// (which would answer Failure, as it should).
			if i%relayBatch == relayBatch-1 {
				tokens <- struct{}{}
			}
		}
		close(delivered)
	})
	defer func() {
		// On failure, closing the connections ends the readers.
		sender.Close()
		recipient.Close()
		readers.Wait()
	}()

	b.SetBytes(int64(len(benchText)))
	b.ReportAllocs()
	b.ResetTimer()
	for sent := 0; sent < n; sent += relayBatch {
		select {
		case <-tokens:
		case err := <-errc:
			b.Fatal(err)
		}
		batch := frames[:min(relayBatch, n-sent)*frameLen]
		if _, err := sender.Write(batch); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-delivered:
	case err := <-errc:
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkPingPongPipe(b *testing.B) { benchPingPong(b, false) }
func BenchmarkPingPongTCP(b *testing.B)  { benchPingPong(b, true) }

// benchPingPong bounces one message between two connections through the
// server: an op is a round trip, two relays, so ns/op is the round-trip
// latency with nothing else in flight.
func benchPingPong(b *testing.B, tcp bool) {
	dial := benchTransport(b, tcp)
	ping, pong := dial(), dial()
	pifr, pofr := NewFrameReader(ping, 0), NewFrameReader(pong, 0)
	benchLogin(b, ping, pifr, "ping")
	benchLogin(b, pong, pofr, "pong")
	toPong := AppendSendTo(nil, "pong", benchText)
	toPing := AppendSendTo(nil, "ping", benchText)

	// The other side: sends each message back as it arrives, and checks
	// the replies to its sendtos. It ends when the benchmark closes pong,
	// or on a failure, which it reports and then closes ping so that the
	// benchmark stops waiting for the message back.
	errc := make(chan error, 1)
	var echo sync.WaitGroup
	echo.Go(func() {
		defer ping.Close()
		for {
			f, err := pofr.Next()
			if err == nil && f.Type == TypeMessage {
				_, err = pong.Write(toPing)
			} else if err == nil && f.Result != ResultOK {
				err = ErrFailure
			}
			if err != nil {
				errc <- err
				return
			}
		}
	})
	failed := func(err error) {
		b.Helper()
		select {
		case cause := <-errc: // the echo's failure closed ping
			err = cause
		default:
		}
		b.Fatal(err)
	}
	defer func() {
		pong.Close()
		echo.Wait()
	}()

	b.ReportAllocs()
	for b.Loop() {
		if _, err := ping.Write(toPong); err != nil {
			failed(err)
		}
		for { // the reply to the sendto, and the message back, in either order
			f, err := pifr.Next()
			if err != nil {
				failed(err)
			}
			if f.Type == TypeMessage {
				break
			}
			if f.Result != ResultOK {
				failed(ErrFailure)
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "roundtrips/s")
}

func BenchmarkSendToPipe(b *testing.B) { benchSendTo(b, false) }
func BenchmarkSendToTCP(b *testing.B)  { benchSendTo(b, true) }

// benchSendTo measures Client.SendTo one call at a time: a request, the
// relay, the reply, and the message read by the recipient's Client.
func benchSendTo(b *testing.B, tcp bool) {
	dial := benchTransport(b, tcp)
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
	b.ReportAllocs()
	for b.Loop() {
		if err := a.SendTo(ctx, "r", benchText); err != nil {
			b.Fatal(err)
		}
		<-got
	}
}
