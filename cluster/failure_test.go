package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/seedchat/chat"
	"github.com/seedchat/chat/internal/natstest"
)

// TestNodeKilled kills a node without cleaning up: its users leave the
// list, and their names are freed, within DeadAfter and a few heartbeats;
// meanwhile messages to them are answered Failure.
func TestNodeKilled(t *testing.T) {
	_, n := cluster3(t)
	alice := login(t, n[0], "alice")
	login(t, n[1], "bob")
	dave := login(t, n[2], "dave")
	login(t, n[2], "erin")

	killed := time.Now()
	n[2].kill()
	<-dave.Done() // its clients' connections drop with it

	// Nobody answers for the dead node: NATS says so at once, rather than
	// the sender waiting out its timeout.
	if err := alice.SendTo(ctx(t), "erin", "are you there?"); !isFailure(err) {
		t.Errorf("sendto a user of the dead node: %v, want Failure", err)
	}
	p, ok := n[0].dir.Lookup([]byte("erin"))
	if !ok {
		t.Fatal("erin unknown before the dead node is noticed")
	}
	settled := make(chan error, 1)
	if err := p.Deliver("alice", []byte("hello?"), chat.ReceiptFunc(func(err error) { settled <- err })); err != chat.ErrPending {
		t.Fatalf("Deliver to a user of another node: %v, want ErrPending", err)
	}
	p.Flush()
	select {
	case err := <-settled:
		if !errors.Is(err, nats.ErrNoResponders) || !errors.Is(err, chat.ErrUnavailable) {
			t.Errorf("delivery to the dead node settled with %v, want no responders", err)
		}
	case <-time.After(testWait):
		t.Error("the delivery to the dead node was not settled")
	}

	eventually(t, "the dead node's users to leave the list", func() bool {
		return slices.Equal(list(t, alice), []string{"alice", "bob"})
	})
	took := time.Since(killed)
	t.Logf("dead node's users gone from the list after %v (DeadAfter %v, heartbeat %v)", took, testDeadAfter, testHeartbeat)
	// A generous bound: it tells "bounded" from "never" (the names of a node
	// nobody reaps stay for ever), not how fast.
	if bound := 5 * testDeadAfter; took > bound {
		t.Errorf("took %v, more than %v", took, bound)
	}
	// Their names are free on every remaining node.
	erin := login(t, n[1], "erin")
	login(t, n[0], "dave")
	if err := alice.SendTo(ctx(t), "erin", "welcome"); err != nil {
		t.Fatal(err)
	}
	if m := erin.receive(); m.Text != "welcome" {
		t.Errorf("erin got %+v", m)
	}
}

// TestNodeRestartedSameName restarts a killed node under its own name: the
// names its previous run left are freed at once.
func TestNodeRestartedSameName(t *testing.T) {
	ns, n := cluster3(t)
	login(t, n[2], "dave")
	n[2].kill()
	n3 := startNode(t, ns.url(), "n3")
	login(t, n3, "dave")
	// And a second node cannot take a running node's name.
	if _, err := Open(ctx(t), ns.url(), Config{Node: "n3"}); err == nil {
		t.Error("a second node n3 joined")
	}
}

// TestNATSRestart stops NATS under a running cluster: the nodes refuse
// logins and messages to other nodes with Failure, keep local chat going,
// and when NATS is back, everything works again with the same users.
func TestNATSRestart(t *testing.T) {
	ns, n := cluster3(t)
	alice := login(t, n[0], "alice")
	amy := login(t, n[0], "amy")
	bob := login(t, n[1], "bob")

	ns.stop()
	eventually(t, "the nodes to go offline", func() bool {
		return !n[0].dir.Online() && !n[1].dir.Online() && !n[2].dir.Online()
	})
	u := dial(t, n[0])
	if err := u.Login(ctx(t), "carol"); !isFailure(err) {
		t.Errorf("login while NATS is down: %v, want Failure", err)
	}
	if err := alice.SendTo(ctx(t), "bob", "across"); !isFailure(err) {
		t.Errorf("cross-node sendto while NATS is down: %v, want Failure", err)
	}
	if err := alice.SendTo(ctx(t), "amy", "next door"); err != nil {
		t.Errorf("local sendto while NATS is down: %v", err)
	}
	if m := amy.receive(); m.Text != "next door" {
		t.Errorf("amy got %+v", m)
	}
	if got := list(t, alice); !slices.Equal(got, []string{"alice", "amy"}) {
		t.Errorf("list while NATS is down: %q, want this node's users", got)
	}
	st := n[0].srv.Stats()
	if st.Failures[chat.FailUnavailable] != 2 {
		t.Errorf("unavailable failures: %d, want 2", st.Failures[chat.FailUnavailable])
	}
	// amy leaves while NATS is down: her name is freed when it is back.
	if err := amy.Logout(ctx(t)); err != nil {
		t.Fatal(err)
	}

	ns.start()
	eventually(t, "the nodes to come back online", func() bool {
		return n[0].dir.Online() && n[1].dir.Online() && n[2].dir.Online()
	})
	if err := alice.SendTo(ctx(t), "bob", "across again"); err != nil {
		t.Fatalf("cross-node sendto after NATS came back: %v", err)
	}
	if m := bob.receive(); m.Text != "across again" {
		t.Errorf("bob got %+v", m)
	}
	if got := list(t, bob); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("list after NATS came back: %q", got)
	}
	if err := dial(t, n[2]).Login(ctx(t), "alice"); !isFailure(err) {
		t.Errorf("alice logged in twice after the restart: %v", err)
	}
	login(t, n[2], "carol")
	login(t, n[1], "amy")
}

// TestPartition cuts one node from NATS for longer than DeadAfter. The node
// fences itself before the others free its users' names: its users are
// disconnected (reason ErrFenced) and it refuses logins. One name is taken
// on another node meanwhile; when the node is back it serves again, and its
// former users log in anew, except the one whose name was taken.
func TestPartition(t *testing.T) {
	ns := startNATS(t)
	p := startProxy(t, ns.url()[len("nats://"):])
	n1 := startNode(t, p.url(), "n1")
	n2 := startNode(t, ns.url(), "n2")
	alice := login(t, n1, "alice")
	dave := login(t, n1, "dave")
	bob := login(t, n2, "bob")
	aliceOut := n1.loggedOut("alice")

	p.cut()
	for _, u := range []*user{alice, dave} {
		u.ended(u.name + " not disconnected by n1's fence")
	}
	// The client may see its connection end before the server has logged
	// it out.
	select {
	case <-aliceOut:
	case <-time.After(testWait):
		t.Fatal("alice not logged out of n1")
	}
	if err := n1.reason("alice"); !errors.Is(err, ErrFenced) {
		t.Errorf("alice's logout reason: %v, want ErrFenced", err)
	}
	if got := n1.dir.Fenced(); got != 1 {
		t.Errorf("n1 fenced %d times, want 1", got)
	}
	if err := dial(t, n1).Login(ctx(t), "erin"); !isFailure(err) {
		t.Errorf("login on the fenced n1: %v, want Failure", err)
	}
	eventually(t, "n2 to free n1's names", func() bool {
		return slices.Equal(list(t, bob), []string{"bob"})
	})
	alice2 := login(t, n2, "alice")

	p.restore()
	eventually(t, "n1 back online and serving", func() bool { return n1.dir.Online() && !n1.dir.fenced.Load() })
	dave = login(t, n1, "dave")
	if err := dial(t, n1).Login(ctx(t), "alice"); !isFailure(err) {
		t.Errorf("a second alice logged in on n1: %v", err)
	}
	if got := list(t, bob); !slices.Equal(got, []string{"alice", "bob", "dave"}) {
		t.Errorf("list after the partition: %q", got)
	}
	if err := bob.SendTo(ctx(t), "dave", "welcome back"); err != nil {
		t.Fatalf("to dave on n1: %v", err)
	}
	if m := dave.receive(); m.Text != "welcome back" {
		t.Errorf("dave got %+v", m)
	}
	if err := dave.SendTo(ctx(t), "alice", "which alice?"); err != nil {
		t.Fatal(err)
	}
	if m := alice2.receive(); m.Text != "which alice?" {
		t.Errorf("alice on n2 got %+v", m)
	}
}

// TestPause freezes a node as SIGSTOP would (its NATS traffic and its
// progress) for longer than DeadAfter: the others free its users' names,
// alice logs in on another node, and when the node resumes none of the
// messages its own user carol sends to alice reaches the old alice, and
// list shows one alice.
func TestPause(t *testing.T) {
	ns := startNATS(t)
	p := startProxy(t, ns.url()[len("nats://"):])
	n1 := startNode(t, p.url(), "n1")
	n2 := startNode(t, ns.url(), "n2")
	alice := login(t, n1, "alice")
	carol := login(t, n1, "carol")
	bob := login(t, n2, "bob")

	p.freeze()
	n1.dir.pause()
	eventually(t, "n2 to free n1's names", func() bool {
		return slices.Equal(list(t, bob), []string{"bob"})
	})
	alice2 := login(t, n2, "alice")
	// carol's messages, sent before the node resumes, are read by it after.
	sent := make(chan error, 1)
	c := ctx(t)
	go func() {
		for i := range 20 {
			err := carol.SendTo(c, "alice", fmt.Sprint("after the pause ", i))
			if err == nil {
				sent <- fmt.Errorf("message %d answered Success", i)
				return
			}
			if !isFailure(err) {
				break // carol disconnected by the fence
			}
		}
		sent <- nil
	}()
	n1.dir.resume()
	p.thaw()
	if err := <-sent; err != nil {
		t.Error(err)
	}
	alice.ended("the old alice not disconnected")
	alice.noMessage("the old alice got a message")
	if got := list(t, bob); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("list after the pause: %q, want one alice", got)
	}
	if err := bob.SendTo(ctx(t), "alice", "to the new one"); err != nil {
		t.Fatal(err)
	}
	if m := alice2.receive(); m.Text != "to the new one" {
		t.Errorf("the new alice got %+v", m)
	}
	if n1.dir.Fenced() == 0 {
		t.Error("n1 did not count a fence")
	}
}

// TestLeaving: while a logout deletes the user's key (held up here by
// freezing the node's NATS traffic), a message to the user from the same
// node is refused, not queued for it: once the key is gone, the name may be
// another user's anywhere in the cluster.
func TestLeaving(t *testing.T) {
	ns := startNATS(t)
	p := startProxy(t, ns.url()[len("nats://"):])
	n1 := startNode(t, p.url(), "n1")
	alice := login(t, n1, "alice")
	carol := login(t, n1, "carol")

	p.freeze()
	loggedOut := make(chan error, 1)
	go func() { loggedOut <- alice.Logout(ctx(t)) }()
	eventually(t, "the logout to start", func() bool {
		n1.dir.mu.RLock()
		defer n1.dir.mu.RUnlock()
		u := n1.dir.local["alice"]
		return u == nil || u.leaving
	})
	if err := carol.SendTo(ctx(t), "alice", "while leaving"); !isFailure(err) {
		t.Errorf("sendto during the logout: %v, want Failure", err)
	}
	p.thaw()
	if err := <-loggedOut; err != nil {
		t.Errorf("logout: %v", err)
	}
	alice.noMessage("alice got a message while logging out")
}

// TestMarkersExpire: the markers logouts leave in the bucket expire, so
// that names used once do not pile up in it.
func TestMarkersExpire(t *testing.T) {
	// Restored after the nodes have stopped (cleanups run last first).
	t.Cleanup(func(d time.Duration) func() { return func() { markerTTL = d } }(markerTTL))
	markerTTL = time.Second
	_, n := cluster3(t)
	for i := range 20 {
		u := login(t, n[i%3], fmt.Sprint("once", i))
		if err := u.Logout(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	stay := login(t, n[0], "stay")
	msgs := func() uint64 {
		st, err := n[0].dir.bucket().Status(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		return st.Values()
	}
	if m := msgs(); m < 21+3 {
		t.Fatalf("%d messages in the bucket, want the 20 markers, stay's key and 3 leases", m)
	}
	eventually(t, "the markers to expire", func() bool { return msgs() == 1+3 })
	if got := list(t, stay); !slices.Equal(got, []string{"stay"}) {
		t.Errorf("list: %q", got)
	}
	login(t, n[1], "once3")
}

// TestOpenErrors: bad configurations and an unreachable NATS fail Open.
func TestOpenErrors(t *testing.T) {
	c := ctx(t)
	for _, cfg := range []Config{
		{Node: "a.b"}, {Node: "a b"}, {Node: "x", Prefix: "a..b"},
		{Node: "x", DeadAfter: time.Second, Lease: time.Second},                       // DeadAfter < Lease + Margin
		{Node: "x", Lease: time.Second, Margin: time.Second},                          // no lease left
		{Node: "x", DeadAfter: time.Second, Heartbeat: 500 * time.Millisecond},        // renewed too seldom
		{Node: "x", DeadAfter: 10 * time.Second, Lease: 9 * time.Second, Margin: 2e9}, // 9 + 2 > 10
	} {
		// Refused before connecting: there is no NATS server there.
		if _, err := Open(c, "nats://127.0.0.1:1", cfg); err == nil || errors.Is(err, chat.ErrUnavailable) || strings.Contains(err.Error(), "connecting") {
			t.Errorf("Open with %+v: %v", cfg, err)
		}
	}
	short, cancel := context.WithTimeout(c, time.Second)
	defer cancel()
	if _, err := Open(short, "nats://127.0.0.1:1", Config{Node: "x"}); !errors.Is(err, nats.ErrNoServers) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Open with no NATS server until its deadline: %v, want no servers and the deadline", err)
	}
}

// TestOpenWaitsForNATS: a node started before its NATS server waits for
// it, within Open's context, rather than giving up at once.
func TestOpenWaitsForNATS(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	port := natstest.FreePorts(t, 1)[0]
	opened := make(chan error, 1)
	go func() {
		d, err := Open(ctx(t), "nats://127.0.0.1:"+strconv.Itoa(port), Config{Node: "early", Logger: zap.New(core)})
		if err == nil {
			d.Close()
		}
		opened <- err
	}()
	eventually(t, "Open to wait for NATS", func() bool { return logs.FilterMessage("waiting for a NATS server").Len() > 0 })
	ns := &natsServer{t: t, store: t.TempDir(), port: port}
	ns.start()
	t.Cleanup(ns.stop)
	if err := <-opened; err != nil {
		t.Fatalf("Open once NATS is up: %v", err)
	}
}

// TestBatchChecks: a node refuses, item by item, a batch that comes after
// its deadline, one overtaken by a later batch of the same sender, and
// items addressed to a login that is not the recipient's current one; it
// does not answer a batch that does not parse.
func TestBatchChecks(t *testing.T) {
	_, n := cluster3(t)
	login(t, n[0], "alice")
	bob := login(t, n[1], "bob")
	n[1].dir.mu.RLock()
	token := n[1].dir.local["bob"].rev
	n[1].dir.mu.RUnlock()
	nc := n[0].dir.nc
	batch := func(seq uint64, deadline time.Time, items ...[]byte) []byte {
		b := appendHeader(nil, batchHeader{sender: "tester", instance: 7, seq: seq, deadline: deadline})
		return slices.Concat(append([][]byte{b}, items...)...)
	}
	item := func(token uint64, text string) []byte { return appendItem(nil, token, "bob", "alice", []byte(text)) }
	ask := func(what string, b []byte, want ...byte) {
		t.Helper()
		m, err := nc.Request(n[1].dir.deliver, b, testWait)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !slices.Equal(m.Data, want) {
			t.Errorf("%s: answers %v, want %v", what, m.Data, want)
		}
	}
	soon := time.Now().Add(testWait)
	ask("late", batch(1, time.Now().Add(-time.Millisecond), item(token, "too late")), answerLate)
	ask("on time", batch(5, soon, item(token, "on time"), item(token+1, "old login"), appendItem(nil, token, "nobody", "alice", []byte("x"))),
		answerQueued, answerGone, answerGone)
	ask("overtaken", batch(4, soon, item(token, "overtaken")), answerLate)
	ask("the same again", batch(5, soon, item(token, "again")), answerLate)
	ask("next", batch(6, soon, item(token, "next")), answerQueued)
	for _, want := range []string{"on time", "next"} {
		if got := bob.receive(); got.Text != want {
			t.Errorf("bob got %+v, want %q", got, want)
		}
	}
	// Malformed batches get no answer and change nothing.
	good := batch(7, soon, item(token, "cut"))
	for _, b := range [][]byte{nil, {batchVersion}, {9, 0}, good[:20], good[:len(good)-1]} {
		if _, err := nc.Request(n[1].dir.deliver, b, 100*time.Millisecond); err == nil {
			t.Errorf("malformed %q answered", b)
		}
	}
	ask("after the malformed ones", batch(8, soon, item(token, "last")), answerQueued)
	if got := bob.receive(); got.Text != "last" {
		t.Errorf("bob got %+v, want last", got)
	}
}

// TestJoinAfterMarkersExpired: a node that joins after the bucket's last
// message (a logout's marker) has expired lists at once; it does not wait
// for a revision that will never come.
func TestJoinAfterMarkersExpired(t *testing.T) {
	t.Cleanup(func(d time.Duration) func() { return func() { markerTTL = d } }(markerTTL))
	markerTTL = time.Second
	ns := startNATS(t)
	n1 := startNode(t, ns.url(), "n1")
	login(t, n1, "stay")
	u := login(t, n1, "gone")
	if err := u.Logout(ctx(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the marker to expire", func() bool {
		st, err := n1.dir.bucket().Status(ctx(t))
		return err == nil && st.Values() == 1+1 // stay's key and n1's lease
	})
	n2 := startNode(t, ns.url(), "n2")
	last, _, err := bucketState(ctx(t), n2.dir.bucket())
	if err != nil {
		t.Fatal(err)
	}
	n2.dir.mu.RLock()
	applied := n2.dir.applied
	n2.dir.mu.RUnlock()
	if applied < last {
		t.Errorf("n2's copy starts at revision %d, short of the bucket's %d: list would wait for it", applied, last)
	}
	if got := list(t, dial(t, n2)); !slices.Equal(got, []string{"stay"}) {
		t.Errorf("list: %q", got)
	}
}

// TestWatchLags: a node whose watch of the bucket stops bringing changes
// (its consumer lost with a NATS server, not yet noticed) still lists
// every login answered Success before the list: it reads the bucket anew.
func TestWatchLags(t *testing.T) {
	ns := startNATS(t)
	n1, n2 := startNode(t, ns.url(), "n1"), startNode(t, ns.url(), "n2")
	login(t, n1, "alice")
	carol := login(t, n2, "carol")
	if got := list(t, carol); !slices.Equal(got, []string{"alice", "carol"}) {
		t.Fatalf("list = %q before the watch lags", got)
	}
	n2.dir.testLoseUpdates.Store(true)
	login(t, n1, "bob")
	if got, want := list(t, carol), []string{"alice", "bob", "carol"}; !slices.Equal(got, want) {
		t.Errorf("list = %q with the watch lagging, want %q", got, want)
	}
	n2.dir.testLoseUpdates.Store(false)
	eventually(t, "n2 back online", n2.dir.Online)
	login(t, n1, "dave")
	if got, want := list(t, carol), []string{"alice", "bob", "carol", "dave"}; !slices.Equal(got, want) {
		t.Errorf("list = %q after the watch was read anew, want %q", got, want)
	}
}
