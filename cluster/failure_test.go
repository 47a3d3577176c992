package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seedchat/chat"
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
	if st.Failures["unavailable"] != 2 {
		t.Errorf("unavailable failures: %d, want 2", st.Failures["unavailable"])
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

// TestPartition cuts one node from NATS for longer than DeadAfter. The
// others free its users' names; one is taken meanwhile, and when the node
// is back its user of that name is evicted, while the others take their
// names again.
func TestPartition(t *testing.T) {
	ns := startNATS(t)
	p := startProxy(t, ns.url()[len("nats://"):])
	n1 := startNode(t, p.url(), "n1")
	n2 := startNode(t, ns.url(), "n2")
	alice := login(t, n1, "alice")
	dave := login(t, n1, "dave")
	bob := login(t, n2, "bob")

	p.cut()
	eventually(t, "n2 to free n1's names", func() bool {
		return slices.Equal(list(t, bob), []string{"bob"})
	})
	if n1.dir.Online() {
		t.Fatal("n1 online without NATS")
	}
	// alice is taken on n2 meanwhile; on n1, dave and alice still chat.
	alice2 := login(t, n2, "alice")
	if err := dave.SendTo(ctx(t), "alice", "still here"); err != nil {
		t.Errorf("local sendto during the partition: %v", err)
	}
	if m := alice.receive(); m.Text != "still here" {
		t.Errorf("alice got %+v", m)
	}

	p.restore()
	select {
	case <-alice.Done():
	case <-time.After(testWait):
		t.Fatal("n1's alice not evicted")
	}
	eventually(t, "n1 back online", n1.dir.Online)
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
	if m := msgs(); m < 21 {
		t.Fatalf("%d messages in the bucket, want the 20 markers and stay's key", m)
	}
	eventually(t, "the markers to expire", func() bool { return msgs() == 1 })
	if got := list(t, stay); !slices.Equal(got, []string{"stay"}) {
		t.Errorf("list: %q", got)
	}
	login(t, n[1], "once3")
}

// TestOpenErrors: bad configurations and an unreachable NATS fail Open.
func TestOpenErrors(t *testing.T) {
	c, cancel := context.WithTimeout(t.Context(), testWait)
	defer cancel()
	for _, cfg := range []Config{{Node: "a.b"}, {Node: "a b"}, {Node: "x", Prefix: "a..b"}} {
		if _, err := Open(c, "nats://127.0.0.1:1", cfg); err == nil || errors.Is(err, chat.ErrUnavailable) {
			t.Errorf("Open with %+v: %v", cfg, err)
		}
	}
	if _, err := Open(c, "nats://127.0.0.1:1", Config{Node: "x"}); err == nil {
		t.Error("Open with no NATS server succeeded")
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
		return err == nil && st.Values() == 1
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
