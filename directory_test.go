package chat

// The Directory contract: MemoryDirectory on its own, and the Server against
// a Directory of the test's making (dirFake), the way a Directory spanning
// several servers would behave: logins it cannot record, names it resolves
// to peers that are not the server's, calls that wait on the network, and
// users it evicts.

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	_ Directory = (*MemoryDirectory)(nil)
	_ Directory = (*dirFake)(nil)
	_ Peer      = (*dirPeer)(nil)
	_ Peer      = (*dirRemote)(nil)
	_ Evicter   = (*outbox)(nil)
)

// dirPeer is a Peer for MemoryDirectory's own tests; only its identity
// matters.
type dirPeer struct{ id int }

func (*dirPeer) Deliver(string, []byte, Receipt) error { return nil }
func (*dirPeer) Flush()                                {}

func TestMemoryDirectory(t *testing.T) {
	t.Parallel()
	var d MemoryDirectory // the zero value is ready to use
	p, q := &dirPeer{1}, &dirPeer{2}

	if names := d.Names(); len(names) != 0 {
		t.Fatalf("Names of an empty directory = %q", names)
	}
	if got, ok := d.Lookup([]byte("alice")); ok || got != nil {
		t.Fatalf("Lookup in an empty directory = %v, %v", got, ok)
	}
	d.Logout("alice", p) // nobody logged in: nothing to do

	if err := d.Login("alice", p); err != nil {
		t.Fatalf("Login: %v", err)
	}
	for _, other := range []Peer{q, p} { // taken, whoever asks
		if err := d.Login("alice", other); !errors.Is(err, ErrNameTaken) {
			t.Fatalf("second Login of alice: %v, want ErrNameTaken", err)
		}
	}
	if got, ok := d.Lookup([]byte("alice")); !ok || got != p {
		t.Fatalf("Lookup(alice) = %v, %v; want the first peer", got, ok)
	}
	if got, ok := d.Lookup([]byte("Alice")); ok { // names are case sensitive
		t.Fatalf("Lookup(Alice) = %v, true", got)
	}

	// Names is sorted in byte order, and computed once per change.
	for i, name := range []string{"bob", "Zoë", "_x", "9lives", "Émile"} {
		if err := d.Login(name, &dirPeer{10 + i}); err != nil {
			t.Fatalf("Login(%s): %v", name, err)
		}
	}
	want := []string{"9lives", "Zoë", "_x", "alice", "bob", "Émile"}
	names := d.Names()
	if !slices.Equal(names, want) {
		t.Fatalf("Names = %q, want %q", names, want)
	}
	same := func(a, b []string) bool { return len(a) > 0 && len(b) > 0 && &a[0] == &b[0] }
	if again := d.Names(); !same(names, again) {
		t.Fatal("Names computed anew without a change to the table")
	}
	// Neither a refused login nor a logout by the wrong peer is a change.
	if err := d.Login("bob", q); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("Login of bob again: %v, want ErrNameTaken", err)
	}
	d.Logout("alice", q) // alice is logged in at p, not q
	if got, ok := d.Lookup([]byte("alice")); !ok || got != p {
		t.Fatalf("after Logout by another peer, Lookup(alice) = %v, %v; want the first peer", got, ok)
	}
	if again := d.Names(); !same(names, again) || !slices.Equal(again, want) {
		t.Fatalf("Names after no change = %q (recomputed: %v), want the cached %q", again, !same(names, again), want)
	}

	// A logout by the right peer frees the name and changes the list; the
	// slice handed out before is left as it was.
	d.Logout("alice", p)
	if got, ok := d.Lookup([]byte("alice")); ok {
		t.Fatalf("Lookup(alice) after Logout = %v, true", got)
	}
	after := d.Names()
	if wantAfter := []string{"9lives", "Zoë", "_x", "bob", "Émile"}; !slices.Equal(after, wantAfter) {
		t.Fatalf("Names after Logout = %q, want %q", after, wantAfter)
	}
	if !slices.Equal(names, want) {
		t.Fatalf("a slice Names returned earlier changed to %q", names)
	}
	if again := d.Names(); !same(after, again) {
		t.Fatal("Names computed anew without a change to the table")
	}
	if err := d.Login("alice", q); err != nil {
		t.Fatalf("Login of alice after her Logout: %v", err)
	}
	if got, ok := d.Lookup([]byte("alice")); !ok || got != q {
		t.Fatalf("Lookup(alice) = %v, %v; want the new peer", got, ok)
	}
	if again := d.Names(); same(after, again) || !slices.Equal(again, want) {
		t.Fatalf("Names after Login = %q, want %q, newly computed", again, want)
	}
	d.Logout("alice", p) // the old peer cannot log the new one out
	if _, ok := d.Lookup([]byte("alice")); !ok {
		t.Fatal("Logout by a stale peer logged alice out")
	}
}

// TestMemoryDirectoryLookalikes: a name with the skeleton of a logged-in
// one is refused with ErrNameLookalike (the very name with ErrNameTaken)
// until that one logs out, at the peer it logged in at.
func TestMemoryDirectoryLookalikes(t *testing.T) {
	t.Parallel()
	var d MemoryDirectory
	p, q := &dirPeer{1}, &dirPeer{2}
	for _, pair := range lookalikes {
		if err := d.Login(pair[0], p); err != nil {
			t.Fatalf("Login(%+q): %v", pair[0], err)
		}
		if err := d.Login(pair[0], q); !errors.Is(err, ErrNameTaken) {
			t.Errorf("Login(%+q) again: %v, want ErrNameTaken", pair[0], err)
		}
		if err := d.Login(pair[1], q); !errors.Is(err, ErrNameLookalike) {
			t.Errorf("Login(%+q) while %+q is logged in: %v, want ErrNameLookalike", pair[1], pair[0], err)
		}
		if _, ok := d.Lookup([]byte(pair[1])); ok {
			t.Errorf("Lookup(%+q) found the refused lookalike", pair[1])
		}
		d.Logout(pair[1], q) // never logged in: changes nothing
		d.Logout(pair[0], q) // not its peer: changes nothing
		if err := d.Login(pair[1], q); !errors.Is(err, ErrNameLookalike) {
			t.Errorf("Login(%+q) after logouts that changed nothing: %v, want ErrNameLookalike", pair[1], err)
		}
		d.Logout(pair[0], p)
		if err := d.Login(pair[1], q); err != nil {
			t.Errorf("Login(%+q) after %+q logged out: %v", pair[1], pair[0], err)
		}
		if err := d.Login(pair[0], p); !errors.Is(err, ErrNameLookalike) {
			t.Errorf("Login(%+q) while %+q is logged in: %v, want ErrNameLookalike", pair[0], pair[1], err)
		}
		d.Logout(pair[1], q)
		if names := d.Names(); len(names) != 0 {
			t.Fatalf("Names after every logout = %+q", names)
		}
	}
	for _, pair := range distinctNames {
		for _, name := range pair {
			if err := d.Login(name, p); err != nil {
				t.Errorf("Login(%+q) with %+q logged in: %v", name, pair[0], err)
			}
		}
		for _, name := range pair {
			d.Logout(name, p)
		}
	}
}

// TestMemoryDirectoryConcurrent: logins of one name from many goroutines
// at once, exactly one of which wins, and of many names at once, while
// others read the table.
func TestMemoryDirectoryConcurrent(t *testing.T) {
	t.Parallel()
	const n = 50
	var d MemoryDirectory
	peers := make([]*dirPeer, n)
	for i := range peers {
		peers[i] = &dirPeer{i}
	}
	run := func(f func(i int)) {
		t.Helper()
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				f(i)
			})
		}
		// Readers, for the race detector.
		stop := make(chan struct{})
		var readers sync.WaitGroup
		for range 4 {
			readers.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if names := d.Names(); !slices.IsSorted(names) {
						t.Errorf("Names not sorted: %q", names)
						return
					}
					d.Lookup([]byte("same"))
				}
			})
		}
		close(start)
		done := make(chan struct{})
		go func() {
			wg.Wait()
			close(stop)
			readers.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(testTimeout):
			t.Fatal("concurrent calls did not return")
		}
	}

	errs := make([]error, n)
	run(func(i int) { errs[i] = d.Login("same", peers[i]) })
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("Login of one name succeeded twice: goroutines %d and %d", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, ErrNameTaken):
			t.Fatalf("Login %d: %v, want nil or ErrNameTaken", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no concurrent Login of a free name succeeded")
	}
	if got, ok := d.Lookup([]byte("same")); !ok || got != peers[winner] {
		t.Fatalf("Lookup = %v, %v; want the winner's peer %v", got, ok, peers[winner])
	}
	if names := d.Names(); !slices.Equal(names, []string{"same"}) {
		t.Fatalf("Names = %q", names)
	}

	// Lookalikes of one name at once: exactly one wins, the others are
	// told it looks like a logged-in name.
	looks := []string{"paypal", "pаypal", "paypa1", "paypaI", "pаypа1", "раураl"}
	run(func(i int) { errs[i] = d.Login(looks[i%len(looks)], peers[i]) })
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Fatalf("Login of lookalikes succeeded twice: %+q and %+q", looks[won%len(looks)], looks[i%len(looks)])
		case err == nil:
			won = i
		case !errors.Is(err, ErrNameLookalike) && !errors.Is(err, ErrNameTaken):
			t.Fatalf("Login %d: %v, want nil, ErrNameLookalike or ErrNameTaken", i, err)
		}
	}
	if names := d.Names(); won < 0 || !slices.Equal(names, slices.Sorted(slices.Values([]string{"same", looks[won%len(looks)]}))) {
		t.Fatalf("Names = %+q, want same and the one lookalike that won", names)
	}
	d.Logout(looks[won%len(looks)], peers[won])

	// Many names at once, and then every loser tries to log the winner out.
	run(func(i int) {
		if err := d.Login(fmt.Sprintf("user%02d", i), peers[i]); err != nil {
			t.Errorf("Login user%02d: %v", i, err)
		}
		if i != winner {
			d.Logout("same", peers[i])
		}
	})
	want := []string{"same"}
	for i := range n {
		want = append(want, fmt.Sprintf("user%02d", i))
	}
	if names := d.Names(); !slices.Equal(names, want) {
		t.Fatalf("Names = %q, want %q", names, want)
	}
	run(func(i int) { d.Logout(fmt.Sprintf("user%02d", i), peers[i]) })
	if names := d.Names(); !slices.Equal(names, []string{"same"}) {
		t.Fatalf("Names after the logouts = %q, want [same]", names)
	}
}

// dirFake is a Directory standing for one that spans several servers: it
// keeps its table in a MemoryDirectory, and on top of it can refuse logins,
// resolve names to peers that are not the server's, hold calls at gates
// until the test opens them (as a call waiting on the network would), and
// records the peers logged in and the logouts.
type dirFake struct {
	mem MemoryDirectory

	// Set before serving.
	loginErr func(name string) error // a non-nil error fails Login with it
	remote   map[string]Peer         // names that Lookup resolves to these

	mu      sync.Mutex
	gates   map[string]*dirGate // by call: "login NAME", "logout NAME", "names", "deliver TEXT"
	peers   map[string]Peer     // the last peer that Login recorded for each name
	logouts []dirLogout
}

type dirLogout struct {
	name string
	p    Peer
}

func (d *dirFake) Login(name string, p Peer) error {
	d.pass("login " + name)
	if d.loginErr != nil {
		if err := d.loginErr(name); err != nil {
			return err
		}
	}
	err := d.mem.Login(name, p)
	if err == nil {
		d.mu.Lock()
		if d.peers == nil {
			d.peers = make(map[string]Peer)
		}
		d.peers[name] = p
		d.mu.Unlock()
	}
	return err
}

func (d *dirFake) Logout(name string, p Peer) {
	d.pass("logout " + name)
	d.mu.Lock()
	d.logouts = append(d.logouts, dirLogout{name, p})
	d.mu.Unlock()
	d.mem.Logout(name, p)
}

func (d *dirFake) Lookup(name []byte) (Peer, bool) {
	if p, ok := d.remote[string(name)]; ok {
		return p, true
	}
	return d.mem.Lookup(name)
}

func (d *dirFake) Names() []string {
	d.pass("names")
	return d.mem.Names()
}

// peer returns the peer that Login last recorded for name.
func (d *dirFake) peer(t *testing.T, name string) Peer {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.peers[name]
	if !ok {
		t.Fatalf("the directory recorded no login of %s", name)
	}
	return p
}

// logoutsOf returns the Logout calls made for name so far.
func (d *dirFake) logoutsOf(name string) []Peer {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ps []Peer
	for _, l := range d.logouts {
		if l.name == name {
			ps = append(ps, l.p)
		}
	}
	return ps
}

// dirGate holds one call to a dirFake until the test opens it.
type dirGate struct {
	entered chan struct{} // closed when the call reaches the gate
	release chan struct{} // closed by open
	once    sync.Once
	expired atomic.Bool // the call went on without the gate being opened
}

var errDirGateTimeout = errors.New("dirFake: gate never opened")

// gate arms a one-shot gate for the call key (see dirFake.gates).
func (d *dirFake) gate(key string) *dirGate {
	g := &dirGate{entered: make(chan struct{}), release: make(chan struct{})}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gates == nil {
		d.gates = make(map[string]*dirGate)
	}
	d.gates[key] = g
	return g
}

func (g *dirGate) open() { g.once.Do(func() { close(g.release) }) }

// pass waits at the gate armed for key, if any, for at most twice
// testTimeout: a test waiting testTimeout for something that the held call
// wrongly holds back fails before the call goes on.
func (d *dirFake) pass(key string) error {
	d.mu.Lock()
	g := d.gates[key]
	delete(d.gates, key)
	d.mu.Unlock()
	if g == nil {
		return nil
	}
	close(g.entered)
	timer := time.NewTimer(2 * testTimeout)
	defer timer.Stop()
	select {
	case <-g.release:
		return nil
	case <-timer.C:
		g.expired.Store(true)
		return errDirGateTimeout
	}
}

// dirRemote is a peer on another server: Deliver answers ErrPending, and
// settles with what outcome says for the text, after the gate
// "deliver TEXT" if one is armed. A text "now" is settled before Deliver
// returns, as a Peer may.
type dirRemote struct {
	d       *dirFake
	outcome map[string]error

	mu      sync.Mutex
	got     []Message // what Deliver was given
	flushes int
	wg      sync.WaitGroup
}

func (r *dirRemote) Deliver(from string, text []byte, rc Receipt) error {
	r.mu.Lock()
	r.got = append(r.got, Message{From: from, Text: string(text)})
	r.mu.Unlock()
	t := string(text)
	if t == "now" {
		rc.Done(r.outcome[t])
		return ErrPending
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := r.d.pass("deliver " + t); err != nil {
			rc.Done(err)
			return
		}
		rc.Done(r.outcome[t])
	}()
	return ErrPending
}

func (r *dirRemote) Flush() {
	r.mu.Lock()
	r.flushes++
	r.mu.Unlock()
}

func (r *dirRemote) delivered() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// dirExpectFailures checks that the failures counted since before are
// exactly want.
func dirExpectFailures(t *testing.T, what string, srv *Server, before Stats, want map[string]uint64) {
	t.Helper()
	got := failureDelta(before, srv.Stats())
	if len(got) != len(want) {
		t.Fatalf("%s: failures counted %v, want %v", what, got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s: failures counted %v, want %v", what, got, want)
		}
	}
}

// TestDirectoryLoginUnavailable: a login the Directory cannot record is
// answered Failure and counted by its reason, and leaves the connection
// logged out and able to log in again.
func TestDirectoryLoginUnavailable(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ctx := testCtx(t)
		d := &dirFake{loginErr: func(name string) error {
			switch name {
			case "down":
				return fmt.Errorf("shard 3 unreachable: %w", ErrUnavailable)
			case "taken":
				return fmt.Errorf("logged in at server B: %w", ErrNameTaken)
			case "look":
				return fmt.Errorf("l00k logged in at server B: %w", ErrNameLookalike)
			case "odd":
				return errors.New("the directory said something odd")
			}
			return nil
		}}
		var mu sync.Mutex
		var onLogin []string
		srv := &Server{Directory: d, OnLogin: func(_ net.Conn, name string) {
			mu.Lock()
			onLogin = append(onLogin, name)
			mu.Unlock()
		}}
		ts := tr.start(t, srv)
		c := NewClient(ts.dial())
		defer c.Close()

		for _, tc := range []struct{ name, reason string }{
			{"down", "unavailable"},
			{"taken", "name_taken"},
			{"look", "lookalike"},
			{"odd", "unavailable"}, // "another error if it cannot tell"
		} {
			before := srv.Stats()
			if err := c.Login(ctx, tc.name); !errors.Is(err, ErrFailure) {
				t.Fatalf("Login(%s): %v, want ErrFailure", tc.name, err)
			}
			dirExpectFailures(t, "Login("+tc.name+")", srv, before, map[string]uint64{tc.reason: 1})
			if st := srv.Stats(); st.Users != 0 {
				t.Fatalf("after Login(%s) failed, Stats.Users = %d", tc.name, st.Users)
			}
			// Not logged in: a sendto is refused as such.
			before = srv.Stats()
			if err := c.SendTo(ctx, tc.name, "hi"); !errors.Is(err, ErrFailure) {
				t.Fatalf("SendTo after a failed login: %v, want ErrFailure", err)
			}
			dirExpectFailures(t, "SendTo after Login("+tc.name+")", srv, before, map[string]uint64{"not_logged_in": 1})
		}
		if names, err := c.List(ctx); err != nil || len(names) != 0 {
			t.Fatalf("List after the failed logins = %q, %v; want []", names, err)
		}

		// The connection logs in once the Directory agrees, and a name
		// taken in the Directory itself is counted as taken.
		if err := c.Login(ctx, "alice"); err != nil {
			t.Fatalf("Login(alice): %v", err)
		}
		if st := srv.Stats(); st.Users != 1 {
			t.Fatalf("Stats.Users = %d, want 1", st.Users)
		}
		c2 := NewClient(ts.dial())
		defer c2.Close()
		before := srv.Stats()
		if err := c2.Login(ctx, "alice"); !errors.Is(err, ErrFailure) {
			t.Fatalf("Login(alice) again: %v, want ErrFailure", err)
		}
		dirExpectFailures(t, "Login(alice) again", srv, before, map[string]uint64{"name_taken": 1})
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(onLogin, []string{"alice"}) {
			t.Fatalf("OnLogin called for %q, want [alice] only", onLogin)
		}
	})
}

// TestDirectoryRemoteDeliver: a name the Directory resolves to a peer of
// its own is delivered to through Peer.Deliver, whose answer decides the
// reply and the failure counted.
func TestDirectoryRemoteDeliver(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ctx := testCtx(t)
		d := &dirFake{}
		far := &dirRemote{d: d, outcome: map[string]error{
			"ok":   nil,
			"full": ErrQueueFull,
			"gone": fmt.Errorf("at server B: %w", ErrPeerGone),
			"down": fmt.Errorf("server B unreachable: %w", ErrUnavailable),
			"odd":  errors.New("server B said something odd"),
		}}
		d.remote = map[string]Peer{"faraway": far}
		var mu sync.Mutex
		var onMessage []string
		srv := &Server{Directory: d, OnMessage: func(from, to, text string) {
			mu.Lock()
			onMessage = append(onMessage, from+">"+to+": "+text)
			mu.Unlock()
		}}
		ts := tr.start(t, srv)
		c := NewClient(ts.dial())
		defer c.Close()
		if err := c.Login(ctx, "alice"); err != nil {
			t.Fatalf("Login: %v", err)
		}

		for _, tc := range []struct {
			text   string
			reason string // "" for Success
		}{
			{"ok", ""},
			{"full", "queue_full"},
			{"gone", "queue_full"}, // notDelivered: a closing recipient counts as a full queue
			{"down", "unavailable"},
			{"odd", "unavailable"},
		} {
			before := srv.Stats()
			n := len(far.delivered())
			err := c.SendTo(ctx, "faraway", tc.text)
			after := srv.Stats()
			if got := far.delivered(); len(got) != n+1 || got[n] != (Message{From: "alice", Text: tc.text}) {
				t.Fatalf("SendTo(%s): Deliver got %v, want one more call with alice: %s", tc.text, got, tc.text)
			}
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("SendTo(%s): %v, want nil", tc.text, err)
				}
				dirExpectFailures(t, "SendTo("+tc.text+")", srv, before, nil)
				if after.Relayed != before.Relayed+1 {
					t.Fatalf("SendTo(%s): Relayed went from %d to %d", tc.text, before.Relayed, after.Relayed)
				}
				continue
			}
			if !errors.Is(err, ErrFailure) {
				t.Fatalf("SendTo(%s): %v, want ErrFailure", tc.text, err)
			}
			dirExpectFailures(t, "SendTo("+tc.text+")", srv, before, map[string]uint64{tc.reason: 1})
			if after.Relayed != before.Relayed {
				t.Fatalf("SendTo(%s) failed, yet Relayed went from %d to %d", tc.text, before.Relayed, after.Relayed)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if want := []string{"alice>faraway: ok"}; !slices.Equal(onMessage, want) {
			t.Fatalf("OnMessage saw %q, want %q", onMessage, want)
		}
	})
}

// TestDirectoryFlushBeforeRemoteCall: the replies a connection owes are
// written before a call into a Directory (or one of its peers) that may
// wait on the network, not held back until it returns. Each case sends, in
// one write as a connection's first bytes, requests the server answers
// without the Directory (or without waiting in it) followed by one the
// Directory holds at a gate, and reads the earlier replies while that one
// is held.
//
// The earlier requests are chosen not to flush by themselves (a LIST would,
// through a remote Directory's Names): on a net.Pipe the flush hands the
// writing to a goroutine, which would carry later replies out too and hide
// a missing flush.
func TestDirectoryFlushBeforeRemoteCall(t *testing.T) {
	t.Parallel()
	batch := func(frames ...[]byte) []byte { return slices.Concat(frames...) }
	for _, tc := range []struct {
		name   string
		gate   string   // the call held
		frames []byte   // the requests, the last one held at the gate
		before []string // the replies owed before the held call
		after  string   // the reply to the held request
	}{
		{"login", "login slowpoke",
			batch(AppendLogout(nil), AppendLogin(nil, "slowpoke")),
			[]string{"RESPONSE failure"}, "RESPONSE ok"},
		{"list", "names",
			batch(AppendLogout(nil), AppendList(nil)),
			[]string{"RESPONSE failure"}, "LIST"},
		{"logout", "logout alice",
			batch(AppendLogin(nil, "alice"), AppendLogin(nil, "bob"), AppendLogout(nil)),
			[]string{"RESPONSE ok", "RESPONSE failure"}, "RESPONSE ok"},
		{"sendto", "deliver hold",
			batch(AppendLogin(nil, "alice"), AppendSendTo(nil, "faraway", "caf\xe9"), AppendSendTo(nil, "faraway", "hold")),
			[]string{"RESPONSE ok", "RESPONSE failure"}, "RESPONSE ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			forEachTransport(t, func(t *testing.T, tr transport) {
				d := &dirFake{}
				d.remote = map[string]Peer{"faraway": &dirRemote{d: d}}
				ts := tr.start(t, &Server{Directory: d})
				r := newRaw(t, ts.dial())
				g := d.gate(tc.gate)
				defer g.open() // before the cleanups close the server, which waits for the call

				r.send(tc.frames) // one write
				select {
				case <-g.entered:
				case <-time.After(testTimeout):
					t.Fatalf("the server never made the call %q", tc.gate)
				}
				// The call is held: the earlier replies must be out already.
				for i, want := range tc.before {
					r.c.SetReadDeadline(time.Now().Add(testTimeout))
					f, err := r.fr.Next()
					if err != nil {
						t.Fatalf("reply %d, while %q waits: %v (not written before the call)", i+1, tc.gate, err)
					}
					if got := describe(f); got != want {
						t.Fatalf("reply %d: %s, want %s", i+1, got, want)
					}
				}
				g.open()
				if got := describe(r.next()); got != tc.after {
					t.Fatalf("reply to the held request: %s, want %s", got, tc.after)
				}
				if g.expired.Load() {
					t.Fatalf("the call %q went on before the gate was opened", tc.gate)
				}
			})
		})
	}
}

// TestDirectoryEvict: a user the Directory evicts has its connection
// closed by the server and is logged out, with the Directory's reason as
// the connection's.
func TestDirectoryEvict(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ctx := testCtx(t)
		d := &dirFake{}
		logouts := make(chan error, 10) // OnLogout's reasons for alice
		srv := &Server{Directory: d, OnLogout: func(_ net.Conn, name string, err error) {
			if name == "alice" {
				logouts <- err
			}
		}}
		ts := tr.start(t, srv)
		alice := NewClient(ts.dial())
		defer alice.Close()
		if err := alice.Login(ctx, "alice"); err != nil {
			t.Fatalf("Login: %v", err)
		}
		p := d.peer(t, "alice")
		ev, ok := p.(Evicter)
		if !ok {
			t.Fatalf("the server's Peer %T does not implement Evicter", p)
		}
		reason := errors.New("alice logged in at server B during a partition")

		// Evict does not wait for the connection to close: a Directory may
		// call it holding its own lock, which its Logout takes. Twice is
		// harmless.
		d.mu.Lock()
		evicted := make(chan struct{})
		go func() {
			ev.Evict(reason)
			ev.Evict(reason)
			close(evicted)
		}()
		select {
		case <-evicted:
			d.mu.Unlock()
		case <-time.After(testTimeout):
			d.mu.Unlock()
			t.Fatal("Evict waited for the Directory's Logout")
		}

		select {
		case <-alice.Done():
		case <-time.After(testTimeout):
			t.Fatal("the evicted client's connection was not closed")
		}
		if err := alice.Err(); !errors.Is(err, ErrClosed) {
			t.Fatalf("client Err = %v, want ErrClosed", err)
		}
		select {
		case err := <-logouts:
			if !errors.Is(err, reason) {
				t.Fatalf("OnLogout reason = %v, want the eviction's reason", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("the evicted user was not logged out (no OnLogout)")
		}
		if got := d.logoutsOf("alice"); len(got) != 1 || got[0] != p {
			t.Fatalf("Directory.Logout(alice) called with %v, want once with the evicted peer %v", got, p)
		}
		if st := srv.Stats(); st.Users != 0 {
			t.Fatalf("Stats.Users after the eviction = %d, want 0", st.Users)
		}
		if tr.name == "pipe" { // ServeConn's own answer; Serve does not pass it on
			errs := ts.stopped()
			if len(errs) != 1 || !errors.Is(errs[0], reason) {
				t.Fatalf("ServeConn returned %v, want an error wrapping the eviction's reason", errs)
			}
		}

		// Once more, after the end: nothing happens.
		ev.Evict(errors.New("late"))
		select {
		case err := <-logouts:
			t.Fatalf("logged out again: %v", err)
		default:
		}
		if got := d.logoutsOf("alice"); len(got) != 1 {
			t.Fatalf("Directory.Logout(alice) called %d times, want once", len(got))
		}

		// The name is free again, for another connection.
		if _, ok := d.Lookup([]byte("alice")); ok {
			t.Fatal("alice still in the Directory after the eviction")
		}
		again := NewClient(ts.dial())
		defer again.Close()
		if err := again.Login(ctx, "alice"); err != nil {
			t.Fatalf("Login(alice) after the eviction: %v", err)
		}
		if d.peer(t, "alice") == p {
			t.Fatal("the new login recorded the evicted peer")
		}
		if names, err := again.List(ctx); err != nil || !slices.Equal(names, []string{"alice"}) {
			t.Fatalf("List = %q, %v; want [alice]", names, err)
		}
	})
}

// TestDirectoryEvictServeConn: ServeConn, called directly, returns
// ErrEvicted wrapping the reason the Directory evicted the connection's
// user for.
func TestDirectoryEvictServeConn(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	d := &dirFake{}
	srv := &Server{Directory: d}
	defer srv.Close()
	cc, sc := net.Pipe()
	served := make(chan error, 1)
	go func() { served <- srv.ServeConn(sc) }()
	c := NewClient(cc)
	defer c.Close()
	if err := c.Login(ctx, "bob"); err != nil {
		t.Fatalf("Login: %v", err)
	}
	reason := fmt.Errorf("bob moved: %w", ErrUnavailable)
	d.peer(t, "bob").(Evicter).Evict(reason)
	select {
	case err := <-served:
		if !errors.Is(err, reason) || !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrEvicted) {
			t.Fatalf("ServeConn returned %v, want ErrEvicted wrapping the eviction's reason", err)
		}
	case <-ctx.Done():
		t.Fatal("ServeConn did not return after the eviction")
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("the client's connection was not closed")
	}
	if got := d.logoutsOf("bob"); len(got) != 1 {
		t.Fatalf("Directory.Logout(bob) called %d times, want once", len(got))
	}
}
