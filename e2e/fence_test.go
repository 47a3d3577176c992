//go:build unix

package e2e

import (
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seedchat/chat/internal/natstest"
)

// TestClusterPausedNode is the scenario of a node paused with SIGSTOP for
// longer than -node-dead-after: the other node frees its users' names and
// a new alice logs in there; when the paused node resumes, none of the 20
// messages its own user carol sends to alice reaches the old alice (the
// node has fenced itself: it disconnects its users), and list shows one
// alice.
func TestClusterPausedNode(t *testing.T) {
	t.Parallel()
	url := natstest.Start(t).ClientURL()
	n1 := startNode(t, url, "n1")
	n2 := startNode(t, url, "n2")
	alice := loggedIn(t, n1, "alice")
	carol := loggedIn(t, n1, "carol")
	bob := loggedIn(t, n2, "bob")
	bob.do("list", "alice bob carol")

	if err := n1.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			n1.cmd.Process.Signal(syscall.SIGCONT)
		}
	})
	// Nothing announces that node 1 was taken for dead: poll.
	listUntil(t, bob, "bob")
	alice2 := loggedIn(t, n2, "alice")

	if err := n1.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	for i := range 20 {
		// carol's node may have disconnected her, and her client ended,
		// already.
		if carol.trySend("sendto alice from the paused node "+strconv.Itoa(i)+"\n") != nil {
			break
		}
	}
	// carol's node disconnects her, with the old alice; what carol was told
	// before is Failure, never Success.
	if status := carol.wait(); status != 1 {
		t.Errorf("carol: exit status %d, want 1 (disconnected by her node)", status)
	}
	lines, _ := carol.stdout.snapshot()
	for _, l := range lines[carol.next:] {
		if l != "Failure" {
			t.Errorf("carol printed %q after the pause, want only Failure", l)
		}
	}
	if status := alice.wait(); status != 1 {
		t.Errorf("the old alice: exit status %d, want 1 (disconnected by her node)", status)
	}
	lines, _ = alice.stdout.snapshot()
	if got := slices.DeleteFunc(lines[alice.next:], func(l string) bool { return !strings.HasPrefix(l, "carol:") }); len(got) > 0 {
		t.Errorf("the old alice received %d messages after the pause: %q", len(got), got)
	}
	if stderr := alice.expectStderr(); !strings.Contains(stderr, "") {
		t.Logf("the old alice's client said: %s", stderr)
	}
	bob.do("list", "alice bob") // one alice, on node 2
	bob.do("sendto alice you are the only one", "Success")
	alice2.expectLine("bob: you are the only one")

	// Node 1 serves again: carol logs in anew.
	c2 := startClient(t, "carol again", n1)
	sendUntilSuccess(t, c2, "login carol")
	bob.do("list", "alice bob carol")
	for _, u := range []*proc{bob, alice2, c2} {
		u.do("exit")
		u.expectEnd(0)
	}
}

// TestReadmeClusterNATSKilled kills one NATS server of the README's three
// with SIGKILL: no name is lost, messages between the nodes go on (each
// Success'd one arrives), and once JetStream has elected new leaders,
// logins work again.
func TestReadmeClusterNATSKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server")
	}
	t.Parallel()
	nats, nodes := startReadmeCluster(t)
	alice := loggedIn(t, nodes[0], "alice")
	bob := loggedIn(t, nodes[1], "bob")
	carol := loggedIn(t, nodes[2], "carol")

	killed := time.Now()
	if err := nats[0].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if status := nats[0].wait(); status != -1 {
		t.Errorf("nats-server 1: exit status %d after SIGKILL, want -1", status)
	}
	sendUntilSuccess(t, alice, "sendto bob after the kill")
	bob.expectLine("alice: after the kill")
	sendUntilSuccess(t, bob, "sendto carol still here")
	carol.expectLine("bob: still here")
	sendUntilSuccess(t, carol, "sendto alice me too")
	alice.expectLine("carol: me too")
	dave := startClient(t, "dave", nodes[0])
	sendUntilSuccess(t, dave, "login dave") // once the bucket has a leader again
	// An election longer than the lease would have fenced the nodes: see
	// how close it came.
	t.Logf("logins work again %v after the kill", time.Since(killed).Round(time.Millisecond))
	// No name was lost: each is still taken, and every node lists them.
	x := startClient(t, "x", nodes[1])
	for _, name := range []string{"alice", "bob", "carol"} {
		x.do("login "+name, "Failure")
	}
	for _, u := range []*proc{alice, bob, carol} {
		listUntil(t, u, "alice bob carol dave")
	}
	for _, u := range []*proc{alice, bob, carol, dave, x} {
		u.do("exit")
		u.expectEnd(0)
	}
}

// listUntil sends list until the client prints want, for a while, where
// nothing announces the change: a node that has just moved to another NATS
// server lists from its copy of the bucket, which catches up; a paused node
// is taken for dead after -node-dead-after.
func listUntil(t *testing.T, p *proc, want string) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	giveUp := time.After(timeout)
	for got := p.list(); got != want; got = p.list() {
		select {
		case <-tick.C:
		case <-giveUp:
			t.Fatalf("%s: list = %q after %v, want %q", p.name, got, timeout, want)
		}
	}
}
