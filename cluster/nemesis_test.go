package cluster

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seedchat/chat"
)

var (
	nemesisDuration = flag.Duration("nemesis.duration", 25*time.Second, "how long TestNemesis injects faults")
	nemesisSeed     = flag.Uint64("nemesis.seed", 0, "seed of TestNemesis's schedule (0: from the clock)")
	// On by default. Runs with NATS servers restarted used to find, now
	// and then, an earlier session of a name served after a later one was
	// told Success (property 2), until a user whose logout had started was
	// hidden from Lookup (TestLeaving). Since then: a run of 300 s (652,000
	// operations, 21 NATS restarts among 65 faults) and every short run
	// found none.
	nemesisRestarts = flag.Bool("nemesis.restarts", true, "TestNemesis also restarts NATS servers (-nemesis.restarts=false to leave them out)")
)

// TestNemesis runs three chat nodes on three routed NATS servers (bucket on
// R3) while clients log in and out with a small pool of names and send
// numbered messages, and a seeded random schedule of faults cuts a node
// from NATS, pauses one (its NATS traffic and its progress, as SIGSTOP),
// restarts a NATS server, or kills a node and starts it again. A checker
// then verifies the history: see checkHistory.
func TestNemesis(t *testing.T) {
	seed := *nemesisSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("nemesis seed %d (-nemesis.seed to replay), duration %v", seed, *nemesisDuration)
	rng := rand.New(rand.NewPCG(seed, seed>>32))

	servers := startNATSCluster(t)
	h := &history{t0: time.Now()}
	ns := &nemesisCluster{t: t, servers: servers, h: h}
	for i := range 3 {
		ns.addNode(i)
	}

	stop := make(chan struct{})
	var workers sync.WaitGroup
	for w := range 5 {
		wrng := rand.New(rand.NewPCG(seed+uint64(w)+1, 7))
		workers.Go(func() { ns.client(wrng, stop) })
	}

	end := time.After(*nemesisDuration)
	faults := map[string]int{}
schedule:
	for {
		quiet := time.Duration(500+rng.IntN(1500)) * time.Millisecond
		select {
		case <-end:
			break schedule
		case <-time.After(quiet):
		}
		i := rng.IntN(3)
		// Up to twice DeadAfter: long enough for the others to free the
		// node's names, and for its users' names to be taken meanwhile.
		hold := time.Duration(500+rng.IntN(5500)) * time.Millisecond
		var kind string
		var heal func()
		k := rng.IntN(4)
		if k == 2 && !*nemesisRestarts {
			k = rng.IntN(2) // cut or pause instead
		}
		switch k {
		case 0:
			kind = "cut"
			for _, p := range ns.proxies(i) {
				p.cut()
			}
			heal = func() {
				for _, p := range ns.proxies(i) {
					p.restore()
				}
			}
		case 1:
			kind = "pause"
			for _, p := range ns.proxies(i) {
				p.freeze()
			}
			d := ns.dir(i)
			d.pause()
			heal = func() {
				d.resume()
				for _, p := range ns.proxies(i) {
					p.thaw()
				}
			}
		case 2:
			kind = "nats-restart"
			servers[i].stop()
			heal = servers[i].start
		case 3:
			kind = "kill"
			ns.kill(i)
			heal = func() { ns.addNode(i) }
		}
		faults[kind]++
		t.Logf("%v fault %s on %d for %v", time.Since(h.t0).Round(time.Millisecond), kind, i, hold)
		<-time.After(hold)
		heal()
	}

	// Healed: the clients stop, their last sessions stay open until every
	// message for them has arrived.
	eventually(t, "every node back and serving", func() bool {
		for i := range 3 {
			d := ns.dir(i)
			if !d.Online() || d.fenced.Load() {
				return false
			}
		}
		return true
	})
	close(stop)
	workers.Wait()
	// Polled: nothing announces the last delivery. Past the deadline, the
	// checker reports what is missing.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(testWait); len(h.undelivered()) > 0 && time.Now().Before(deadline); {
		<-tick.C
	}
	v := h.check()
	h.closeAll()
	nfaults := 0
	for _, n := range faults {
		nfaults += n
	}
	ops := h.counts()
	t.Logf("nemesis: %d operations (%s), %d faults %v, %d violations", ops.total, ops, nfaults, faults, len(v))
	for _, s := range v {
		t.Error(s)
	}
}

// nemesisCluster is the cluster TestNemesis runs: node i reaches each NATS
// server through a proxy of its own, server i first.
type nemesisCluster struct {
	t       *testing.T
	servers []*natsServer
	h       *history

	mu    sync.Mutex
	nodes [3]*node
	px    [3][]*proxy
}

func (c *nemesisCluster) addNode(i int) {
	c.mu.Lock()
	if c.px[i] == nil {
		for j := range c.servers {
			s := c.servers[(i+j)%len(c.servers)]
			c.px[i] = append(c.px[i], startProxy(c.t, s.url()[len("nats://"):]))
		}
	}
	urls := make([]string, len(c.px[i]))
	for j, p := range c.px[i] {
		urls[j] = p.url()
	}
	c.mu.Unlock()
	n := startNodeWith(c.t, strings.Join(urls, ","), Config{
		Node:     fmt.Sprint("n", i+1),
		Replicas: 3,
		Timeout:  time.Second,
		// Through its proxies only: not to the servers' own addresses,
		// which they tell their clients about.
		Options: []nats.Option{nats.DontRandomize(), nats.IgnoreDiscoveredServers()},
	}, nil)
	c.mu.Lock()
	c.nodes[i] = n
	c.mu.Unlock()
}

func (c *nemesisCluster) kill(i int) {
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	n.kill()
}

func (c *nemesisCluster) proxies(i int) []*proxy {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.px[i]
}

func (c *nemesisCluster) dir(i int) *Directory {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes[i] == nil {
		return &Directory{} // killed: never online
	}
	return c.nodes[i].dir
}

func (c *nemesisCluster) addr(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes[i] == nil {
		return ""
	}
	return c.nodes[i].addr
}

var nemesisNames = []string{"ann", "ben", "cat", "dan"}

// client logs in on a random node under a random name, sends numbered
// messages to random names, and logs out or hangs up, until stop; its last
// session stays open.
func (c *nemesisCluster) client(rng *rand.Rand, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		i := rng.IntN(3)
		addr := c.addr(i)
		if addr == "" {
			<-time.After(10 * time.Millisecond) // pacing: the node is being restarted
			continue
		}
		s := c.h.newSession(nemesisNames[rng.IntN(len(nemesisNames))])
		s.node = fmt.Sprint("n", i+1, "@", addr)
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		cl, err := chat.Dial(ctx, addr, chat.OnMessage(s.received))
		if err != nil {
			cancel()
			continue
		}
		c.h.mu.Lock()
		s.client = cl
		c.h.mu.Unlock()
		err = cl.Login(ctx, s.name)
		if err != nil {
			c.h.count("login-failed")
			cl.Close()
			cancel()
			continue
		}
		c.h.loggedIn(s, time.Now())
		for k := rng.IntN(30); k >= 0; k-- {
			select {
			case <-stop:
				cancel()
				return // the session stays open
			default:
			}
			if rng.IntN(10) == 0 {
				sent := time.Now()
				if _, err := cl.List(ctx); err == nil {
					s.evidence(sent)
				}
				c.h.count("list")
				continue
			}
			to := nemesisNames[rng.IntN(len(nemesisNames))]
			m := c.h.newMessage(s, to)
			m.sent = time.Now()
			err := cl.SendTo(ctx, to, m.text())
			m.done(err)
			if err == nil {
				s.evidence(m.sent)
			} else if !isFailure(err) {
				break // the connection ended
			}
		}
		if rng.IntN(2) == 0 && cl.Logout(ctx) == nil {
			c.h.count("logout")
		}
		cl.Close()
		s.ended()
		cancel()
	}
}

// history records what the clients of TestNemesis did and saw, on one
// clock (the test process's).
type history struct {
	mu       sync.Mutex
	t0       time.Time
	sessions []*session
	msgs     []*message
	ops      map[string]int
	nextID   atomic.Uint64
}

func (h *history) count(op string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ops == nil {
		h.ops = make(map[string]int)
	}
	h.ops[op]++
}

// session is one connection's login under a name.
type session struct {
	h      *history
	id     uint64
	name   string
	node   string // and its address
	client *chat.Client

	// Guarded by h.mu.
	ok     time.Time   // when the login's Success arrived; zero if it failed
	served []time.Time // when requests answered Success were sent
	got    []receipt   // messages, in the order they arrived
	closed bool        // ended by the client
	sent   int         // messages sent so far
}

type receipt struct {
	id uint64 // of the message
	at time.Time
}

func (h *history) newSession(name string) *session {
	s := &session{h: h, id: h.nextID.Add(1), name: name}
	h.mu.Lock()
	h.sessions = append(h.sessions, s)
	h.mu.Unlock()
	return s
}

func (h *history) loggedIn(s *session, ok time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s.ok = ok
	if h.ops == nil {
		h.ops = make(map[string]int)
	}
	h.ops["login"]++
}

func (s *session) evidence(sent time.Time) {
	s.h.mu.Lock()
	s.served = append(s.served, sent)
	s.h.mu.Unlock()
}

func (s *session) received(m chat.Message) {
	at := time.Now()
	id, ok := parseMessage(m.Text)
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if !ok {
		s.got = append(s.got, receipt{0, at})
		return
	}
	s.got = append(s.got, receipt{id, at})
}

func (s *session) ended() {
	s.h.mu.Lock()
	s.closed = true
	s.h.mu.Unlock()
}

// message is one sendto.
type message struct {
	id     uint64
	from   *session
	to     string
	seq    int // in its sender session
	sent   time.Time
	answer string    // "success", "failure", or "unknown" (the connection ended)
	at     time.Time // when the answer came
}

func (h *history) newMessage(from *session, to string) *message {
	m := &message{id: h.nextID.Add(1), from: from, to: to}
	h.mu.Lock()
	m.seq = from.sent
	from.sent++
	h.msgs = append(h.msgs, m)
	h.mu.Unlock()
	return m
}

func (m *message) text() string { return "m" + strconv.FormatUint(m.id, 10) }

func parseMessage(text string) (uint64, bool) {
	id, err := strconv.ParseUint(strings.TrimPrefix(text, "m"), 10, 64)
	return id, err == nil && strings.HasPrefix(text, "m")
}

func (m *message) done(err error) {
	a := "unknown"
	switch {
	case err == nil:
		a = "success"
	case isFailure(err):
		a = "failure"
	}
	m.from.h.mu.Lock()
	m.answer, m.at = a, time.Now()
	m.from.h.mu.Unlock()
	m.from.h.count("send-" + a)
}

// live reports whether s's connection is up. h.mu is held.
func (s *session) live() bool {
	if s.closed || s.client == nil {
		return false
	}
	select {
	case <-s.client.Done():
		return false
	default:
		return true
	}
}

// undelivered returns the Success'd messages not received yet by anyone
// while some session of their recipient's name that logged in before the
// answer is still open.
func (h *history) undelivered() []*message {
	h.mu.Lock()
	defer h.mu.Unlock()
	got := h.receivedBy()
	var out []*message
	for _, m := range h.msgs {
		if m.answer != "success" || len(got[m.id]) > 0 {
			continue
		}
		excused := false
		for _, s := range h.sessions {
			if s.name == m.to && !s.ok.IsZero() && s.ok.Before(m.at) && !s.live() {
				excused = true // a session of that name ended
			}
		}
		if !excused {
			out = append(out, m)
		}
	}
	return out
}

// receivedBy maps each message to the sessions that received it, once per
// receipt. h.mu is held.
func (h *history) receivedBy() map[uint64][]*session {
	got := make(map[uint64][]*session)
	for _, s := range h.sessions {
		for _, r := range s.got {
			got[r.id] = append(got[r.id], s)
		}
	}
	return got
}

// check verifies the five properties and returns the violations:
//  1. No message sent after a session S2 of name N was told Success reached
//     an earlier session S1 of N (the name had left S1 by then).
//  2. No two sessions of one name held it over overlapping intervals as
//     the clients saw them: S1 was not served (a request sent, answered
//     Success) after a later session S2 of its name was told Success.
//  3. Each Success'd message was received exactly once, or a session of its
//     recipient's name ended.
//  4. No Failure'd message was received.
//  5. Each session received the messages of each sender session in the
//     order they were sent.
func (h *history) check() []string {
	undelivered := h.undelivered()
	h.mu.Lock()
	defer h.mu.Unlock()
	var v []string
	got := h.receivedBy()
	byID := make(map[uint64]*message, len(h.msgs))
	for _, m := range h.msgs {
		byID[m.id] = m
	}
	byName := make(map[string][]*session)
	for _, s := range h.sessions {
		if !s.ok.IsZero() {
			byName[s.name] = append(byName[s.name], s)
		}
	}
	for _, ss := range byName {
		// Against each session S1, the first later login S2 of its name is
		// the one to check: a message or request after any later login is
		// after that one. Sorted, that is the next session with a later
		// login, which keeps long runs' checks from being quadratic.
		slices.SortFunc(ss, func(a, b *session) int { return a.ok.Compare(b.ok) })
		for i, s1 := range ss {
			j := i + 1
			for j < len(ss) && !ss[j].ok.After(s1.ok) {
				j++
			}
			if j == len(ss) {
				continue
			}
			s2 := ss[j]
			for _, r := range s1.got {
				if m := byID[r.id]; m != nil && m.sent.After(s2.ok) {
					v = append(v, fmt.Sprintf("property 1: message %d to %s, sent at %v, %v after session %d (on %s) logged in, reached the earlier session %d (on %s, logged in at %v)",
						m.id, m.to, m.sent.Sub(h.t0), m.sent.Sub(s2.ok), s2.id, s2.node, s1.id, s1.node, s1.ok.Sub(h.t0)))
				}
			}
			for _, at := range s1.served {
				if at.After(s2.ok) {
					v = append(v, fmt.Sprintf("property 2: session %d of %s served a request sent %v after session %d logged in",
						s1.id, s1.name, at.Sub(s2.ok), s2.id))
				}
			}
		}
	}
	for _, m := range undelivered {
		v = append(v, fmt.Sprintf("property 3: message %d to %s answered Success, never received", m.id, m.to))
	}
	for id, ss := range got {
		m := byID[id]
		switch {
		case m == nil:
			v = append(v, fmt.Sprintf("a message nobody sent: %d", id))
		case len(ss) > 1:
			v = append(v, fmt.Sprintf("property 3: message %d received %d times", id, len(ss)))
		case m.answer == "failure":
			v = append(v, fmt.Sprintf("property 4: message %d to %s (from session %d on %s, sent at %v, answered after %v) answered Failure, received by session %d on %s",
				id, m.to, m.from.id, m.from.node, m.sent.Sub(h.t0), m.at.Sub(m.sent), ss[0].id, ss[0].node))
		case ss[0].name != m.to:
			v = append(v, fmt.Sprintf("message %d to %s received by %s", id, m.to, ss[0].name))
		}
	}
	for _, s := range h.sessions {
		last := make(map[*session]int)
		for _, r := range s.got {
			m := byID[r.id]
			if m == nil {
				continue
			}
			if prev, ok := last[m.from]; ok && m.seq <= prev {
				v = append(v, fmt.Sprintf("property 5: session %d got message %d of session %d after its %d", s.id, m.seq, m.from.id, prev))
			}
			last[m.from] = m.seq
		}
	}
	return v
}

// closeAll closes every client still open.
func (h *history) closeAll() {
	h.mu.Lock()
	ss := append([]*session(nil), h.sessions...)
	h.mu.Unlock()
	for _, s := range ss {
		if s.client != nil {
			s.client.Close()
		}
	}
}

type opCounts struct {
	total int
	ops   map[string]int
}

func (c opCounts) String() string {
	var b strings.Builder
	for _, k := range []string{"login", "login-failed", "send-success", "send-failure", "send-unknown", "list", "logout"} {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, c.ops[k])
	}
	return b.String()
}

func (h *history) counts() opCounts {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := opCounts{ops: h.ops}
	for _, n := range h.ops {
		c.total += n
	}
	return c
}

// TestCheckerFinds: the checker reports each kind of violation in a
// history made by hand, and nothing in the same history without them.
func TestCheckerFinds(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	build := func(violate bool) *history {
		h := &history{t0: t0}
		// alice logs in at 10 on n1 (s1), then, her name freed, at 100 on
		// n2 (s2); bob (s3) sends to her.
		s1 := &session{h: h, id: 1, name: "alice", node: "n1", ok: at(10), closed: true}
		s2 := &session{h: h, id: 2, name: "alice", node: "n2", ok: at(100), closed: true}
		s3 := &session{h: h, id: 3, name: "bob", node: "n3", ok: at(5), closed: true}
		early := &message{id: 10, from: s3, to: "alice", seq: 0, sent: at(20), answer: "success", at: at(21)}
		late := &message{id: 11, from: s3, to: "alice", seq: 1, sent: at(120), answer: "success", at: at(121)}
		refused := &message{id: 12, from: s3, to: "alice", seq: 2, sent: at(130), answer: "failure", at: at(131)}
		h.sessions = []*session{s2, s1, s3} // not in login order
		h.msgs = []*message{early, late, refused}
		s1.got = []receipt{{10, at(22)}}
		s2.got = []receipt{{11, at(122)}}
		s1.served = []time.Time{at(50)}
		if violate {
			s1.got = append(s1.got, receipt{11, at(123)}) // property 1, and 3: twice
			s1.served = append(s1.served, at(150))        // property 2
			s2.got = append(s2.got, receipt{12, at(132)}) // property 4
			s2.got = append([]receipt{{11, at(122)}}, s2.got...)
		}
		return h
	}
	if v := build(false).check(); len(v) != 0 {
		t.Fatalf("a clean history: %q", v)
	}
	v := build(true).check()
	for _, want := range []string{"property 1:", "property 2:", "property 3:", "property 4:"} {
		if !slices.ContainsFunc(v, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("no %s violation found in %q", want, v)
		}
	}
}
