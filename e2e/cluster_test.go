//go:build unix

package e2e

import (
	"strconv"
	"testing"
	"time"

	"github.com/seedchat/chat/internal/natstest"
)

// cluster is three chatserver processes joined through an embedded NATS
// server, with alice logged in on the first, bob on the second and carol
// on the third.
type cluster struct {
	nodes             [3]*server
	alice, bob, carol *proc
}

// startCluster starts an embedded NATS server with JetStream on loopback
// and three chatserver processes joined to it, and logs in alice, bob and
// carol, one on each. Everything is stopped when the test ends.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	url := natstest.Start(t).ClientURL()
	var c cluster
	for i := range c.nodes {
		c.nodes[i] = startNode(t, url, "n"+strconv.Itoa(i+1))
	}
	c.alice = loggedIn(t, c.nodes[0], "alice")
	c.bob = loggedIn(t, c.nodes[1], "bob")
	c.carol = loggedIn(t, c.nodes[2], "carol")
	return &c
}

// TestClusterEndToEnd checks that users of three chatserver processes
// joined through NATS chat as on one server: one list, names unique across
// the nodes, messages between the nodes.
func TestClusterEndToEnd(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	n1, n3 := c.nodes[0], c.nodes[2]

	for _, u := range []*proc{c.alice, c.bob, c.carol} {
		u.do("list", "alice bob carol")
	}
	// A name logged in on another node is taken here too.
	x := startClient(t, "x@n1", n1)
	x.do("login bob", "Failure")
	x.do("list", "alice bob carol") // list needs no login

	c.alice.do("sendto bob Hi, how are you?", "Success")
	c.bob.expectLine("alice: Hi, how are you?")
	c.bob.do("sendto carol Fine, thanks!", "Success")
	c.carol.expectLine("bob: Fine, thanks!")
	c.carol.do("sendto alice  two  spaces ", "Success") // the text kept exactly
	c.alice.expectLine("carol:  two  spaces ")
	c.alice.do("sendto nobody hi", "Failure")
	c.alice.do("sendto Bob hi", "Failure") // names are case sensitive

	// Messages from one sender to a user of another node keep their order.
	for i := range 20 {
		c.alice.send("sendto carol m" + strconv.Itoa(i) + "\n")
	}
	for i := range 20 {
		c.alice.expectLine("Success")
		c.carol.expectLine("alice: m" + strconv.Itoa(i))
	}

	// A logout frees the name on every node.
	c.bob.do("logout", "Success")
	c.alice.do("sendto bob still there?", "Failure")
	c.carol.do("list", "alice carol")
	b3 := startClient(t, "bob@n3", n3)
	b3.do("login bob", "Success")
	c.bob.do("login bob", "Failure") // now taken on node 3
	c.alice.do("list", "alice bob carol")
	c.alice.do("sendto bob on node 3?", "Success")
	b3.expectLine("alice: on node 3?")
	b3.do("sendto alice yes", "Success")
	c.alice.expectLine("bob: yes")

	// exit and the end of the input end the clients with status 0.
	for _, u := range []*proc{c.alice, c.bob, c.carol, x, b3} {
		u.closeInput()
		u.expectEnd(0)
	}
}

// TestClusterNodeKilled kills a node's chatserver process: its clients
// end with status 1, and the other nodes free its users' names once it has
// been silent for -node-dead-after.
func TestClusterNodeKilled(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	n2, n3 := c.nodes[1], c.nodes[2]
	dave := loggedIn(t, n3, "dave")
	c.alice.do("list", "alice bob carol dave")

	if err := n3.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if status := n3.wait(); status != -1 {
		t.Errorf("chatserver n3: exit status %d after SIGKILL, want -1 (killed by a signal)", status)
	}
	for _, u := range []*proc{dave, c.carol} {
		u.expectEnd(1)
		u.expectStderr()
	}
	// Whether or not the other nodes have noticed yet, a message to a user
	// of the dead node fails.
	c.alice.do("sendto dave are you there?", "Failure")

	// Nothing announces that node 3 was taken for dead: poll.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	giveUp := time.After(20 * time.Second)
	for {
		got := c.alice.list()
		if got == "alice bob" {
			break
		}
		switch got {
		case "alice bob carol dave", "alice bob carol", "alice bob dave": // one name at a time
		default:
			t.Fatalf("alice: list = %q while node 3's users are being reaped", got)
		}
		select {
		case <-tick.C:
		case <-giveUp:
			t.Fatalf("node 3's users still listed 20s after it was killed (-node-dead-after %v)", deadAfter)
		}
	}
	took := time.Since(killed)
	t.Logf("killed node's users gone from the list after %v (-node-dead-after %v)", took, deadAfter)
	if took > 10*time.Second {
		t.Errorf("reaping the killed node's users took %v, want under 10s", took)
	}
	c.bob.do("list", "alice bob")

	// dave's name is free again, on a node that lives.
	d2 := loggedIn(t, n2, "dave")
	c.alice.do("list", "alice bob dave")
	c.alice.do("sendto dave welcome back", "Success")
	d2.expectLine("alice: welcome back")

	for _, u := range []*proc{c.alice, c.bob, d2} {
		u.do("exit")
		u.expectEnd(0)
	}
}
