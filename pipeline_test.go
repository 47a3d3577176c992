package chat

import (
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// heldPeer is a user on another server whose deliveries stay pending until
// the test settles them, in any order it likes.
type heldPeer struct {
	got chan string // the texts handed to Deliver, in order

	mu       sync.Mutex
	receipts map[string]Receipt
	now      map[string]error // texts settled within Deliver, and how
}

func newHeldPeer() *heldPeer {
	return &heldPeer{got: make(chan string, 100), receipts: make(map[string]Receipt)}
}

func (p *heldPeer) Deliver(from string, text []byte, r Receipt) error {
	t := string(text)
	p.mu.Lock()
	err, now := p.now[t]
	if !now {
		p.receipts[t] = r
	}
	p.mu.Unlock()
	if now {
		r.Done(err) // before Deliver returns, as a Peer may
	}
	p.got <- t
	return ErrPending
}

func (p *heldPeer) Flush() {}

// delivered waits for the next text handed to Deliver.
func (p *heldPeer) delivered(t *testing.T) string {
	t.Helper()
	select {
	case text := <-p.got:
		return text
	case <-time.After(testTimeout):
		t.Fatal("no delivery to the remote peer")
		return ""
	}
}

// settle settles the delivery of text with err.
func (p *heldPeer) settle(t *testing.T, text string, err error) {
	t.Helper()
	p.mu.Lock()
	r, ok := p.receipts[text]
	delete(p.receipts, text)
	p.mu.Unlock()
	if !ok {
		t.Fatalf("no pending delivery of %q", text)
	}
	r.Done(err)
	r.Done(errors.New("settled twice")) // only the first call counts
}

// TestPipelinedOrder: requests sent in one go, to a remote recipient whose
// deliveries are settled out of order, mixed with local messages, list,
// login and logout, get their replies in the order of the requests, each
// the right one; the connection goes on reading and handling requests
// while the remote deliveries wait.
func TestPipelinedOrder(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		far := newHeldPeer()
		far.now = map[string]error{"now": nil}
		d := &dirFake{remote: map[string]Peer{"faraway": far}}
		var mu sync.Mutex
		var hooked []string
		srv := &Server{Directory: d, OnMessage: func(from, to, text string) {
			mu.Lock()
			hooked = append(hooked, from+">"+to+":"+text)
			mu.Unlock()
		}}
		ts := tr.start(t, srv)
		bob := newRaw(t, ts.dial())
		bob.do(AppendLogin(nil, "bob"), ResultOK)
		a := newRaw(t, ts.dial())

		steps := []struct {
			frame []byte
			want  string
		}{
			{AppendLogin(nil, "alice"), "RESPONSE ok"},
			{AppendSendTo(nil, "faraway", "r1"), "RESPONSE failure"}, // settled last, full
			{AppendSendTo(nil, "bob", "l1"), "RESPONSE ok"},
			{AppendList(nil), "LIST alice bob"},
			{AppendSendTo(nil, "faraway", "r2"), "RESPONSE ok"},
			{AppendSendTo(nil, "nobody", "x"), "RESPONSE failure"},
			{AppendLogout(nil), "RESPONSE ok"},
			{AppendSendTo(nil, "faraway", "r3"), "RESPONSE failure"}, // not logged in
			{AppendLogin(nil, "carol"), "RESPONSE ok"},
			{AppendSendTo(nil, "faraway", "now"), "RESPONSE ok"},
			{AppendSendTo(nil, "faraway", "r4"), "RESPONSE failure"}, // unavailable
			{AppendList(nil), "LIST bob carol"},
		}
		var all []byte
		for _, s := range steps {
			all = append(all, s.frame...)
		}
		before := srv.Stats()
		a.send(all)

		// The requests after r1 are handled while it waits: bob has l1,
		// and the remote peer gets r2, now and r4, before r1 is settled.
		if got := far.delivered(t); got != "r1" {
			t.Fatalf("first remote delivery %q, want r1", got)
		}
		bob.expectMessage("alice", "l1")
		for _, want := range []string{"r2", "now", "r4"} {
			if got := far.delivered(t); got != want {
				t.Fatalf("remote delivery %q, want %q", got, want)
			}
		}
		if f := a.next(); describe(f) != steps[0].want {
			t.Fatalf("reply 1: %s, want %s", describe(f), steps[0].want)
		}
		far.settle(t, "r4", ErrUnavailable)
		far.settle(t, "r2", nil)
		far.settle(t, "r1", ErrQueueFull)
		for i, s := range steps[1:] {
			if got := describe(a.next()); got != s.want {
				t.Fatalf("reply %d: %s, want %s", i+2, got, s.want)
			}
		}
		after := srv.Stats()
		dirExpectFailures(t, "the pipelined requests", srv, before, map[string]uint64{
			"queue_full": 1, "no_recipient": 1, "not_logged_in": 1, "unavailable": 1,
		})
		if n := after.Relayed - before.Relayed; n != 3 {
			t.Errorf("Relayed grew by %d, want 3 (l1, r2, now)", n)
		}
		mu.Lock()
		defer mu.Unlock()
		slices.Sort(hooked)
		if want := []string{"alice>bob:l1", "alice>faraway:r2", "carol>faraway:now"}; !slices.Equal(hooked, want) {
			t.Errorf("OnMessage saw %q, want %q", hooked, want)
		}
	})
}

// TestPipelinedBound: a connection with MaxPending deliveries waiting for
// another server reads no more requests until one is settled, and a
// connection closed meanwhile still has its deliveries settled without
// harm.
func TestPipelinedBound(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		far := newHeldPeer()
		d := &dirFake{remote: map[string]Peer{"faraway": far}}
		blocked := make(chan struct{}, 10)
		srv := &Server{Directory: d, MaxPending: 2, testHookBlocked: func() {
			select {
			case blocked <- struct{}{}:
			default:
			}
		}}
		ts := tr.start(t, srv)
		a := newRaw(t, ts.dial())
		a.do(AppendLogin(nil, "alice"), ResultOK)
		a.send(slices.Concat(
			AppendSendTo(nil, "faraway", "m1"),
			AppendSendTo(nil, "faraway", "m2"),
			AppendSendTo(nil, "faraway", "m3"),
			AppendList(nil),
		))
		for _, want := range []string{"m1", "m2"} {
			if got := far.delivered(t); got != want {
				t.Fatalf("remote delivery %q, want %q", got, want)
			}
		}
		select {
		case <-blocked:
		case <-time.After(testTimeout):
			t.Fatal("the reader did not stop at MaxPending")
		}
		select {
		case got := <-far.got:
			t.Fatalf("%q delivered while MaxPending deliveries wait", got)
		default:
		}
		far.settle(t, "m2", nil) // not the first: its reply still waits for m1
		if got := far.delivered(t); got != "m3" {
			t.Fatalf("remote delivery %q, want m3", got)
		}
		far.settle(t, "m1", nil)
		far.settle(t, "m3", ErrQueueFull)
		for _, want := range []string{"RESPONSE ok", "RESPONSE ok", "RESPONSE failure", "LIST alice"} {
			if got := describe(a.next()); got != want {
				t.Fatalf("reply %s, want %s", got, want)
			}
		}

		// Closed with a delivery pending: the server ends the connection
		// once it is settled.
		a.send(AppendSendTo(nil, "faraway", "last"))
		if got := far.delivered(t); got != "last" {
			t.Fatalf("remote delivery %q, want last", got)
		}
		a.c.Close()
		far.settle(t, "last", nil)
	})
}

// TestHeldSteady: a connection that always has replies pending (each
// reply settled a window after it was held, a local reply behind each) gets
// every reply in order, and once warm its outbox allocates nothing, however
// long it goes on: the held replies' array is reused, not outgrown. Nor
// does it allocate for bursts of held replies settled all at once.
func TestHeldSteady(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	o := newOutbox(c1, 1<<20, 1<<10, time.Second, &counters{}, func(error) {})
	const window = 100 // held replies pending at once
	var wantBuf []byte
	step := func() {
		if _, settled, _ := o.hold(o.next, 16); settled {
			t.Fatal("settled before it was held")
		}
		o.reply(ResultOK) // waits behind the held reply
		oldest := int64(o.next) - 2*window
		if oldest < 0 {
			return
		}
		r := Result(oldest / 2 % 2) // Success and Failure in turn
		o.settle(uint64(oldest), r, nil, false)
		// The oldest, then the local reply that waited behind it.
		wantBuf = AppendResponse(AppendResponse(wantBuf[:0], r), ResultOK)
		if !slices.Equal(o.buf, wantBuf) {
			t.Fatalf("after settling ordinal %d: queued % x, want % x", oldest, o.buf, wantBuf)
		}
		o.buf = o.buf[:0] // as if written
	}
	steps := func() {
		for range 10 * window {
			step()
		}
	}
	steps() // warm: the window filled, the arrays grown
	if allocs := testing.AllocsPerRun(5, steps); !raceEnabled && allocs != 0 {
		t.Errorf("%v allocations in %d held replies, want 0", allocs, 10*window)
	}

	// Bursts, as when one answer settles every reply pending: the held
	// replies all go out, and the array is kept for the next burst.
	for n := range o.next {
		o.settle(n, ResultOK, nil, false) // what the window left pending
	}
	if o.waiting != 0 {
		t.Fatalf("%d replies still pending", o.waiting)
	}
	o.buf = o.buf[:0]
	burst := func() {
		first := o.next
		for range 300 {
			o.hold(o.next, 16)
		}
		for n := first; n < o.next; n++ {
			o.settle(n, ResultOK, nil, false)
		}
		if len(o.buf) != 300*len(AppendResponse(nil, ResultOK)) {
			t.Fatalf("a burst of 300 held replies released %d bytes", len(o.buf))
		}
		o.buf = o.buf[:0]
	}
	burst()
	if allocs := testing.AllocsPerRun(5, burst); !raceEnabled && allocs != 0 {
		t.Errorf("%v allocations in a burst of 300 held replies, want 0", allocs)
	}
}

// TestSettledEarlyTwice: a delivery settled twice before its reply is held
// (a Peer calling Done again) counts once, with the first outcome.
func TestSettledEarlyTwice(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	o := newOutbox(c1, 1<<20, 1<<10, time.Second, &counters{}, func(error) {})
	n := o.next
	if ok, early := o.settle(n, ResultFailure, ErrUnavailable, false); !ok || !early {
		t.Fatalf("the first early settle: counted %v, early %v; want both", ok, early)
	}
	if ok, _ := o.settle(n, ResultOK, nil, false); ok {
		t.Error("the second early settle counted too")
	}
	if r, settled, err := o.hold(n, 16); !settled || r != ResultFailure || err != ErrUnavailable {
		t.Errorf("hold after the early settles: %v, %v, %v; want Failure, settled, the first settle's error", r, settled, err)
	}
}
