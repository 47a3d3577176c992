package chat

// The server's limits under attack, over loopback TCP: slowloris frames
// and idle connections (FrameTimeout, LoginTimeout), a recipient that
// stops reading (QueueSize, WriteTimeout), too many connections
// (MaxConns, MaxConnsPerIP) and floods (RateLimit, RateBurst,
// FloodLimit). Each test ends with hostileEnv.check.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLimitsSlowlorisDribble sends frames one byte at a time, each byte
// read by the server before the next is written: with no frame timeout
// they are answered once complete, and other clients are served meanwhile.
func TestLimitsSlowlorisDribble(t *testing.T) {
	e := hostileNewEnv(t, &Server{FrameTimeout: -1})
	r := dialRaw(t, e.addr)
	var b []byte
	b = AppendLogin(b, "slowpoke")
	b = AppendList(b)
	b = AppendSendTo(b, "alice", "dribbled")

	// Alice and bob are idle, so every byte the server reads is ours.
	want := e.srv.Stats().BytesIn
	for i := range b {
		r.send(b[i : i+1])
		want++
		eventually(t, fmt.Sprintf("the server to read byte %d", i), func() bool {
			return e.srv.Stats().BytesIn >= want
		})
		if i == len(b)/2 {
			// Half-way through the sendto; the login and list before it
			// are complete and answered.
			e.alice.expectList(t, "alice", "bob", "slowpoke")
			want += uint64(len(AppendList(nil)))
		}
	}
	r.expect(ResultOK, "dribbled login")
	if names := r.names("dribbled list"); !slices.Equal(names, []string{"alice", "bob", "slowpoke"}) {
		t.Errorf("list = %q", names)
	}
	r.expect(ResultOK, "dribbled sendto")
	e.alice.expectMessage(t, "slowpoke", "dribbled")
	r.c.Close()
	e.check(t)
}

// TestLimitsFrameTimeout leaves frames incomplete: with a short
// FrameTimeout the server closes those connections, and only those.
func TestLimitsFrameTimeout(t *testing.T) {
	e := hostileNewEnv(t, &Server{FrameTimeout: 300 * time.Millisecond})
	login := AppendLogin(nil, "stuck")
	cases := []struct {
		name    string
		partial []byte
	}{
		{"one byte of the length", login[:1]},
		{"the length only", login[:HeaderSize]},
		{"part of the body", login[:len(login)-2]},
		{"a complete list, then half a login", append(AppendList(nil), login[:5]...)},
	}
	var wg sync.WaitGroup
	for _, c := range cases {
		r := dialRaw(t, e.addr)
		r.send(c.partial)
		wg.Go(func() {
			got, err := r.readToEnd(c.name)
			want := []string{}
			if strings.HasPrefix(c.name, "a complete list") {
				want = []string{"LIST alice bob"}
			}
			if !errors.Is(err, io.EOF) || !slices.Equal(got, want) {
				t.Errorf("%s: got %q then %v, want %q then EOF", c.name, got, err, want)
			}
		})
	}
	wg.Wait()
	if n := e.srv.Stats().TimedOut; n != uint64(len(cases)) {
		t.Errorf("Stats().TimedOut = %d, want %d", n, len(cases))
	}
	e.check(t) // alice and bob, idle all along, are still connected
}

// TestLimitsLoginTimeout opens connections that never log in: a short
// LoginTimeout closes them, whether they send nothing, half a frame or
// lists, and closes a connection that logged out; logged-in users, idle
// all the while, are unaffected.
func TestLimitsLoginTimeout(t *testing.T) {
	e := hostileNewEnv(t, &Server{LoginTimeout: 300 * time.Millisecond})
	ctx := testCtx(t)
	var wg sync.WaitGroup
	const idle = 10
	for i := range idle {
		r := dialRaw(t, e.addr)
		if i == 0 {
			r.send(AppendLogin(nil, "late")[:3])
		}
		wg.Go(func() {
			got, err := r.readToEnd("idle connection")
			if len(got) > 0 || !errors.Is(err, io.EOF) {
				t.Errorf("idle connection: got %q then %v, want EOF", got, err)
			}
		})
	}
	// A connection that keeps listing but never logs in.
	lister := dialRaw(t, e.addr)
	wg.Go(func() {
		lists := 0
		for {
			if err := lister.trySend(AppendList(nil)); err != nil {
				break // closed under us
			}
			f, err := lister.tryNext()
			if err != nil {
				if isTimeout(err) {
					t.Errorf("lister: %v", err)
				}
				break
			}
			if f.Type != TypeNames {
				t.Errorf("lister: got %s", describe(f))
			}
			lists++
		}
		if lists == 0 {
			t.Errorf("lister: closed before its first list")
		}
	})
	// A user that logs out is given LoginTimeout again, then closed.
	leaver := hostileLogin(t, e.addr, "leaver")
	if err := leaver.c.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-leaver.c.Done():
		if err := leaver.c.Err(); !errors.Is(err, ErrClosed) {
			t.Errorf("leaver: connection ended with %v", err)
		}
	case <-time.After(testTimeout):
		t.Error("the connection that logged out was never closed")
	}
	wg.Wait()
	if n := e.srv.Stats().TimedOut; n != idle+2 {
		t.Errorf("Stats().TimedOut = %d, want %d", n, idle+2)
	}
	e.check(t)
}

// TestLimitsSlowConsumer has a recipient log in and stop reading while
// others send it 60 KB messages for as long as it takes: once its queue is
// full the senders get Failure, and once writes to it make no progress for
// WriteTimeout it is dropped as a slow consumer. Memory stays bounded
// throughout and the other users are served meanwhile.
func TestLimitsSlowConsumer(t *testing.T) {
	sinkGone := make(chan error, 1)
	srv := &Server{
		QueueSize:    256 << 10,
		WriteTimeout: 300 * time.Millisecond,
		OnLogout: func(_ net.Conn, name string, err error) {
			if name == "sink" {
				sinkGone <- err
			}
		},
	}
	e := hostileNewEnv(t, srv)
	sink := dialRaw(t, e.addr)
	sink.send(AppendLogin(nil, "sink"))
	sink.expect(ResultOK, "login sink")
	// From here on the sink reads nothing.

	text := strings.Repeat("x", 60_000)
	ctx := testCtx(t)
	stop := make(chan struct{})
	stopPushers := sync.OnceFunc(func() { close(stop) })
	firstFailure := make(chan struct{})
	var once sync.Once
	var sent, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 3 {
		u := hostileLogin(t, e.addr, fmt.Sprintf("pusher%d", i))
		wg.Go(func() {
			defer u.c.Close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				switch err := u.c.SendTo(ctx, "sink", text); {
				case err == nil:
					sent.Add(1)
				case errors.Is(err, ErrFailure):
					refused.Add(1)
					once.Do(func() { close(firstFailure) })
				default:
					t.Errorf("%s: sendto sink: %v", u.name, err)
					return
				}
			}
		})
	}
	defer wg.Wait()
	defer stopPushers()

	select {
	case <-firstFailure:
	case <-time.After(testTimeout):
		t.Fatalf("no sendto to the stalled sink failed (%d succeeded)", sent.Load())
	}
	// The sink's queue is full: the server holds a bounded amount for it,
	// and serves the others.
	if _, heap := hostileResources(); heap > e.heap+hostileHeapSlack {
		t.Errorf("heap in use while the sink stalls: %d KiB, %d KiB before", heap>>10, e.heap>>10)
	}
	e.alice.sendTo(t, "bob", "meanwhile")
	e.bob.expectMessage(t, "alice", "meanwhile")

	select {
	case err := <-sinkGone:
		if !errors.Is(err, ErrSlowConsumer) {
			t.Errorf("the sink was logged out with %v, want %v", err, ErrSlowConsumer)
		}
	case <-time.After(testTimeout):
		t.Fatal("the stalled sink was never dropped")
	}
	stopPushers()
	wg.Wait()

	if err := e.alice.c.SendTo(ctx, "sink", "anyone there?"); !errors.Is(err, ErrFailure) {
		t.Errorf("sendto the dropped sink: %v, want Failure", err)
	}
	st := e.srv.Stats()
	if st.SlowConsumers != 1 || st.Failures[FailQueueFull] == 0 {
		t.Errorf("Stats(): SlowConsumers %d, queue_full failures %d; want 1 and some", st.SlowConsumers, st.Failures[FailQueueFull])
	}
	t.Logf("%d messages of 60 KB queued for the sink, %d refused; failures %v", sent.Load(), refused.Load(), failureDelta(Stats{}, st))
	sink.c.Close()
	e.check(t)
}

// TestLimitsMaxConns opens more connections than MaxConns: the excess are
// closed at once without a byte, the others keep working, and a freed
// slot can be taken again.
func TestLimitsMaxConns(t *testing.T) {
	const maxConns, extra = 6, 5
	e := hostileNewEnv(t, &Server{MaxConns: maxConns})
	held := limitsHold(t, e, maxConns-2) // alice and bob hold two
	limitsExpectRefused(t, e, extra, nil)
	for i, r := range held {
		r.send(AppendLogin(nil, fmt.Sprintf("held%d", i)))
		r.expect(ResultOK, "login on an accepted connection")
	}
	e.alice.expectList(t, "alice", "bob", "held0", "held1", "held2", "held3")

	held[0].c.Close()
	e.waitConns(t, maxConns-1)
	again := dialRaw(t, e.addr)
	again.send(AppendList(nil))
	if names := again.names("list on a freed slot"); !slices.Equal(names, []string{"alice", "bob", "held1", "held2", "held3"}) {
		t.Errorf("list = %q", names)
	}
	if st := e.srv.Stats(); st.ConnsRefused != extra {
		t.Errorf("Stats().ConnsRefused = %d, want %d", st.ConnsRefused, extra)
	}
	for _, r := range append(held, again) {
		r.c.Close()
	}
	e.check(t)
}

// limitsHold opens n connections, each of which must be accepted: it
// answers a list.
func limitsHold(t *testing.T, e *hostileEnv, n int) []*raw {
	t.Helper()
	held := make([]*raw, n)
	for i := range held {
		held[i] = dialRaw(t, e.addr)
		held[i].send(AppendList(nil))
		held[i].names("list on an accepted connection")
	}
	return held
}

// limitsExpectRefused opens n connections, with dialer d if not nil, and
// checks that each is closed at once without a byte.
func limitsExpectRefused(t *testing.T, e *hostileEnv, n int, d *net.Dialer) {
	t.Helper()
	conns := e.srv.Stats().Conns
	for i := range n {
		r, err := tryDialRaw(t, e.addr, d)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.readToEnd("a connection beyond the limit")
		if len(got) > 0 || !errors.Is(err, io.EOF) {
			t.Errorf("connection %d beyond the limit: got %q then %v, want EOF", i, got, err)
		}
		r.c.Close()
	}
	if c := e.srv.Stats().Conns; c != conns {
		t.Errorf("Stats().Conns = %d after the refusals, was %d", c, conns)
	}
}

// TestLimitsMaxConnsPerIP opens more connections from 127.0.0.1 than
// MaxConnsPerIP: the excess are closed at once, the others and other
// addresses are unaffected.
func TestLimitsMaxConnsPerIP(t *testing.T) {
	const perIP, extra = 4, 3
	e := hostileNewEnv(t, &Server{MaxConnsPerIP: perIP})
	held := limitsHold(t, e, perIP-2) // alice and bob hold two
	limitsExpectRefused(t, e, extra, nil)
	for _, r := range held {
		r.send(AppendList(nil))
		r.names("list after the refusals")
	}
	refused := uint64(extra)

	// Another loopback address has its own allowance. (127.0.0.2 is
	// loopback on Linux; elsewhere it may not be configured.)
	other := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	if r, err := tryDialRaw(t, e.addr, other); err != nil {
		t.Logf("no connection from 127.0.0.2 (%v); skipping that part", err)
	} else {
		others := []*raw{r}
		for range perIP - 1 {
			r, err := tryDialRaw(t, e.addr, other)
			if err != nil {
				t.Fatal(err)
			}
			others = append(others, r)
		}
		for _, r := range others {
			r.send(AppendList(nil))
			r.names("list from 127.0.0.2")
		}
		limitsExpectRefused(t, e, 1, other)
		refused++
		for _, r := range others {
			r.c.Close()
		}
	}
	if st := e.srv.Stats(); st.ConnsRefused != refused {
		t.Errorf("Stats().ConnsRefused = %d, want %d", st.ConnsRefused, refused)
	}
	for _, r := range held {
		r.c.Close()
	}
	e.check(t)
}

// TestLimitsRateBurst sends a burst of 50 pipelined requests with a rate
// limit of 10 a second and bursts of 5: some are answered Failure, every
// one is answered, and the connection stays open.
func TestLimitsRateBurst(t *testing.T) {
	e := hostileNewEnv(t, &Server{RateLimit: 10, RateBurst: 5})
	before := e.srv.Stats()
	const burst = 50
	r := dialRaw(t, e.addr)
	var b []byte
	for range burst {
		b = AppendList(b)
	}
	r.send(b)
	var lists, failures int
	for i := range burst {
		f, err := r.tryNext()
		switch {
		case err != nil:
			t.Fatalf("reply %d of %d: %v", i+1, burst, err)
		case f.Type == TypeNames:
			lists++
		case f.Type == TypeResponse && f.Result == ResultFailure:
			failures++
		default:
			t.Fatalf("reply %d: %s", i+1, describe(f))
		}
	}
	if lists < 5 || failures == 0 {
		t.Errorf("%d lists answered and %d refused; want at least the burst of 5 answered and some refused", lists, failures)
	}
	after := e.srv.Stats()
	if got := failureDelta(before, after); got["rate_limited"] != uint64(failures) || len(got) != 1 {
		t.Errorf("failures by reason %v, want rate_limited: %d", got, failures)
	}
	// Still open: the next request is answered, one way or the other.
	r.send(AppendList(nil))
	if f, err := r.tryNext(); err != nil {
		t.Errorf("after the burst: %v", err)
	} else if d := describe(f); d != "RESPONSE failure" && !strings.HasPrefix(d, "LIST") {
		t.Errorf("after the burst: %s", d)
	}
	t.Logf("a burst of %d: %d answered, %d refused", burst, lists, failures)
	r.c.Close()
	e.check(t)
}

// TestLimitsFlood keeps sending past the rate limit: after FloodLimit
// refusals in a row the server closes the connection.
func TestLimitsFlood(t *testing.T) {
	e := hostileNewEnv(t, &Server{RateLimit: 10, RateBurst: 5, FloodLimit: 20})
	r := dialRaw(t, e.addr)
	var chunk []byte
	for range 50 {
		chunk = AppendList(chunk)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := r.trySend(chunk); err != nil {
				return // closed
			}
		}
	})
	got, err := r.readToEnd("flood")
	close(done)
	r.c.Close()
	wg.Wait()
	failures := 0
	for _, d := range got {
		if d == "RESPONSE failure" {
			failures++
		}
	}
	st := e.srv.Stats()
	if st.FloodsDropped != 1 || st.Failures[FailRateLimited] < 20 {
		t.Errorf("Stats(): FloodsDropped %d, rate_limited failures %d; want 1 and at least 20", st.FloodsDropped, st.Failures[FailRateLimited])
	}
	t.Logf("flood: %d replies read (%d Failure), then %v; %d requests refused in all", len(got), failures, err, st.Failures[FailRateLimited])
	e.check(t)
}

// TestLimitsManyIdleConnections holds a thousand idle connections: each
// costs the server little memory.
func TestLimitsManyIdleConnections(t *testing.T) {
	e := hostileNewEnv(t, &Server{})
	const n = 1000
	raws := make([]*raw, n)
	for i := range raws {
		raws[i] = dialRaw(t, e.addr)
	}
	e.waitConns(t, n+2)
	goroutines, heap := hostileResources()
	perConn := (int64(heap) - int64(e.heap)) / n
	t.Logf("%d idle connections: %d goroutines, %d bytes of heap each (both ends)", n, goroutines-e.goroutines, perConn)
	if perConn > 16<<10 {
		t.Errorf("each idle connection holds %d bytes of heap", perConn)
	}
	for _, r := range raws {
		r.c.Close()
	}
	runtime.GC()
	e.check(t)
}
