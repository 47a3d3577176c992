package chat

// Answers PROTOCOL.md gives to a client author that the other tests do not
// pin down: what the rate limit counts, the order of the replies before a
// close for a length beyond the limit, that progress does not extend the
// frame timeout, and that the kernel's socket buffers hold messages beyond
// QueueSize. The helpers are helpers_test.go's and hostile_test.go's.

import (
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestProtocolRateLimitCounts sends, at once, more frames than the burst on
// a connection whose bucket never refills: the bucket starts full, every
// frame with an acceptable length takes a token (a zero-length frame and
// an unknown type included), and those beyond the burst get Failure.
func TestProtocolRateLimitCounts(t *testing.T) {
	hs := serveTCP(t, &Server{RateLimit: 1e-6, RateBurst: 3}) // one token in 11 days
	r := dialRaw(t, hs.addr)
	var b []byte
	b = append(b, header(0)...) // zero length: malformed, takes a token
	b = AppendList(b)
	b = append(b, withBody(0x7f)...) // unknown type: malformed, takes a token
	b = AppendList(b)                // the bucket is empty from here on
	b = append(b, header(0)...)
	b = AppendLogin(b, "late")
	r.send(b)
	want := []string{
		"RESPONSE malformed packet",
		"LIST",
		"RESPONSE malformed packet",
		"RESPONSE failure",
		"RESPONSE failure",
		"RESPONSE failure",
	}
	var got []string
	for range want {
		f, err := r.tryNext()
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		got = append(got, describe(f))
	}
	if !slices.Equal(got, want) {
		t.Errorf("replies\n%q\nwant\n%q", got, want)
	}
	if n := hs.srv.Stats().Failures[FailRateLimited]; n != 3 {
		t.Errorf("rate_limited failures: %d, want 3", n)
	}
}

// TestProtocolRateLimiter pins the token bucket a connection gets, at given
// instants: it starts full, a refused request takes no token, and tokens
// come back at RateLimit per second.
func TestProtocolRateLimiter(t *testing.T) {
	tests := []struct {
		name  string
		rate  float64
		burst int // RateBurst
		want  int // the burst allowed
	}{
		{"burst given", 10, 3, 3},
		{"burst of one second", 10, 0, 10},
		{"burst of at least one", 0.5, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim := (&Server{RateLimit: tt.rate, RateBurst: tt.burst}).newLimiter()
			t0 := time.Now()
			for i := range tt.want {
				if !lim.AllowN(t0, 1) {
					t.Fatalf("request %d of the first burst refused: the bucket does not start full", i+1)
				}
			}
			for i := range 100 {
				if lim.AllowN(t0, 1) {
					t.Fatalf("request %d past the burst allowed", i+1)
				}
			}
			// One token's time later exactly one request is allowed: the
			// refusals did not take tokens.
			t1 := t0.Add(time.Duration(1.01 * float64(time.Second) / tt.rate))
			if !lim.AllowN(t1, 1) {
				t.Fatal("refused one token's time after the refusals: refused requests took tokens")
			}
			if lim.AllowN(t1, 1) {
				t.Fatal("two requests allowed one token's time later")
			}
		})
	}
}

// TestProtocolOversizeAfterOwedReplies pipelines requests and then a length
// beyond the limit: the replies owed come first, in order, then malformed
// packet, then the end of the stream.
func TestProtocolOversizeAfterOwedReplies(t *testing.T) {
	hs := serveTCP(t, &Server{})
	r := dialRaw(t, hs.addr)
	var b []byte
	b = AppendLogin(b, "eve")
	b = AppendList(b)
	b = AppendSendTo(b, "eve", "to myself")
	b = append(b, withBody(0x7f)...)
	b = append(b, header(DefaultMaxFrameSize+1)...)
	r.send(b)
	got, err := r.readToEnd("pipelined, then a length beyond the limit")
	replies := slices.DeleteFunc(slices.Clone(got), func(d string) bool { return strings.HasPrefix(d, "SENDTO") })
	want := []string{"RESPONSE ok", "LIST eve", "RESPONSE ok", "RESPONSE malformed packet", "RESPONSE malformed packet"}
	if !slices.Equal(replies, want) || len(got) != len(want)+1 {
		t.Errorf("got %q, then %v; want the replies %q and one SENDTO", got, err, want)
	}
}

// deadlineRecorder is a net.Conn that records the read deadlines set on it.
type deadlineRecorder struct {
	net.Conn
	mu        sync.Mutex
	deadlines []time.Time
}

func (d *deadlineRecorder) SetReadDeadline(t time.Time) error {
	d.mu.Lock()
	d.deadlines = append(d.deadlines, t)
	d.mu.Unlock()
	return d.Conn.SetReadDeadline(t)
}

func (d *deadlineRecorder) recorded() []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.deadlines)
}

// TestProtocolFrameTimeoutNotExtended dribbles a frame one byte per read:
// the frame's deadline is set once, when its first bytes arrive, and not
// moved by the bytes that follow; it is cleared once the frame is
// complete, and the next frame gets a deadline of its own.
func TestProtocolFrameTimeoutNotExtended(t *testing.T) {
	srv := &Server{FrameTimeout: time.Hour}
	defer srv.Close()
	clientEnd, serverEnd := net.Pipe()
	defer clientEnd.Close()
	rec := &deadlineRecorder{Conn: serverEnd}
	go srv.ServeConn(rec)

	// A net.Pipe write returns once the server has read it all, so each
	// write below is one read or more by the server.
	write := func(b []byte) {
		t.Helper()
		clientEnd.SetWriteDeadline(time.Now().Add(testTimeout))
		if _, err := clientEnd.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	frameDeadlines := func(from int) []time.Time {
		var ds []time.Time
		for _, d := range rec.recorded()[from:] {
			if !d.IsZero() && !slices.Contains(ds, d) {
				ds = append(ds, d)
			}
		}
		return ds
	}

	login := AppendLogin(nil, "dribbler")
	for i := range login {
		write(login[i : i+1])
	}
	fr := NewFrameReader(clientEnd, 0)
	clientEnd.SetReadDeadline(time.Now().Add(testTimeout))
	if f, err := fr.Next(); err != nil || f.Type != TypeResponse || f.Result != ResultOK {
		t.Fatalf("login: %v %v %v", f.Type, f.Result, err)
	}
	first := frameDeadlines(0)
	if len(first) != 1 {
		t.Fatalf("%d frame deadlines set while one frame was read byte by byte, want 1: %v", len(first), first)
	}

	// The server, idle between frames, clears the deadline; the next
	// frame's deadline is new.
	before := len(rec.recorded())
	list := AppendList(nil)
	write(list[:2])
	write(list[2:])
	clientEnd.SetReadDeadline(time.Now().Add(testTimeout))
	if f, err := fr.Next(); err != nil || f.Type != TypeNames {
		t.Fatalf("list: %v %v", f.Type, err)
	}
	ds := rec.recorded()
	if !slices.ContainsFunc(ds[:before], time.Time.IsZero) && !slices.ContainsFunc(ds[before:], time.Time.IsZero) {
		t.Errorf("the frame deadline was never cleared: %v", ds)
	}
	second := frameDeadlines(before)
	if len(second) != 1 || !second[0].After(first[0]) {
		t.Errorf("the next frame's deadlines %v, want one later than %v", second, first[0])
	}
}

// TestProtocolKernelBuffers fills a recipient that reads nothing: the
// server accepts messages for it well beyond QueueSize (the queue, the
// chunk being written and the kernel's socket buffers between them hold
// them), and every message answered Success arrives once it reads.
func TestProtocolKernelBuffers(t *testing.T) {
	const queueSize = 4 << 10
	hs := serveTCP(t, &Server{QueueSize: queueSize, WriteTimeout: time.Minute})
	sink := dialRaw(t, hs.addr)
	sink.send(AppendLogin(nil, "sink"))
	sink.expect(ResultOK, "login sink")
	pusher := hostileLogin(t, hs.addr, "pusher")

	text := strings.Repeat("x", 1000)
	frameSize := len(AppendMessage(nil, "pusher", []byte(text)))
	ctx := testCtx(t)
	accepted := 0
	for {
		err := pusher.c.SendTo(ctx, "sink", text)
		if errors.Is(err, ErrFailure) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted++
		if accepted > 100_000 {
			t.Fatal("100,000 messages accepted for a recipient that reads nothing")
		}
	}
	t.Logf("QueueSize %d: %d messages (%d bytes) accepted before the first Failure", queueSize, accepted, accepted*frameSize)
	if accepted*frameSize <= 3*queueSize {
		t.Errorf("%d bytes accepted for a recipient that reads nothing; the queue and the chunk being written hold about %d", accepted*frameSize, 2*queueSize)
	}
	for i := range accepted {
		f, err := sink.tryNext()
		if err != nil || f.Type != TypeMessage || string(f.Text) != text {
			t.Fatalf("message %d of %d: %v %v", i+1, accepted, f.Type, err)
		}
	}
}
