package cluster

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/seedchat/chat"
)

func TestAcrossNodes(t *testing.T) {
	_, n := cluster3(t)
	alice := login(t, n[0], "alice")
	bob := login(t, n[1], "bob")
	carol := login(t, n[2], "carol")

	// list shows every node's users, on every node, at once.
	want := []string{"alice", "bob", "carol"}
	for _, u := range []*user{alice, bob, carol} {
		if got := list(t, u); !slices.Equal(got, want) {
			t.Errorf("%s's list: %q, want %q", u.name, got, want)
		}
	}

	// A name is logged in once in the whole cluster.
	for _, nd := range n {
		u := dial(t, nd)
		if err := u.Login(ctx(t), "bob"); !isFailure(err) {
			t.Errorf("second bob on %s: %v, want Failure", nd.name, err)
		}
	}

	// sendto reaches another node.
	if err := alice.SendTo(ctx(t), "bob", "Hi, how are you?"); err != nil {
		t.Fatalf("alice to bob: %v", err)
	}
	if m := bob.receive(); m != (chat.Message{From: "alice", Text: "Hi, how are you?"}) {
		t.Errorf("bob got %+v", m)
	}
	if err := carol.SendTo(ctx(t), "alice", "héllo\x01"); err != nil {
		t.Fatalf("carol to alice: %v", err)
	}
	if m := alice.receive(); m != (chat.Message{From: "carol", Text: "héllo\x01"}) {
		t.Errorf("alice got %+v", m)
	}
	if err := alice.SendTo(ctx(t), "nobody", "hello"); !isFailure(err) {
		t.Errorf("sendto nobody: %v, want Failure", err)
	}
	// The largest text crosses nodes whole.
	long := strings.Repeat("é", chat.MaxTextLen/2) + "x"
	if err := bob.SendTo(ctx(t), "carol", long); err != nil {
		t.Fatalf("long text: %v", err)
	}
	if m := carol.receive(); m.Text != long || m.From != "bob" {
		t.Errorf("carol got %d bytes from %s, want %d from bob", len(m.Text), m.From, len(long))
	}

	// Logout frees the name at once, everywhere.
	if err := bob.Logout(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := alice.SendTo(ctx(t), "bob", "still there?"); !isFailure(err) {
		t.Errorf("sendto bob after logout: %v, want Failure", err)
	}
	if got := list(t, carol); !slices.Equal(got, []string{"alice", "carol"}) {
		t.Errorf("list after bob's logout: %q", got)
	}
	bob2 := login(t, n[2], "bob")
	if err := alice.SendTo(ctx(t), "bob", "there you are"); err != nil {
		t.Fatalf("alice to bob on n3: %v", err)
	}
	if m := bob2.receive(); m.Text != "there you are" {
		t.Errorf("bob on n3 got %+v", m)
	}

	// So does a disconnect.
	gone := n[0].loggedOut("alice")
	alice.Close()
	<-gone
	login(t, n[1], "alice")
	if err := carol.SendTo(ctx(t), "alice", "welcome back"); err != nil {
		t.Errorf("carol to alice on n2: %v", err)
	}
}

// TestAnyName: names are any characters the rules allow, also those NATS
// subjects and keys do not.
func TestAnyName(t *testing.T) {
	_, n := cluster3(t)
	names := []string{"zoë", "a.b", "*", ">", "日本語", "_INBOX", "$KV", "x/y=z", "-", strings.Repeat("é", chat.MaxNameLen)}
	users := make([]*user, len(names))
	for i, name := range names {
		users[i] = login(t, n[i%3], name)
	}
	want := slices.Clone(names)
	slices.Sort(want)
	if got := list(t, users[0]); !slices.Equal(got, want) {
		t.Errorf("list: %q, want %q", got, want)
	}
	for i, u := range users {
		to := users[(i+1)%len(users)]
		if err := u.SendTo(ctx(t), to.name, "to "+to.name); err != nil {
			t.Fatalf("%s to %s: %v", u.name, to.name, err)
		}
		if m := to.receive(); m != (chat.Message{From: u.name, Text: "to " + to.name}) {
			t.Errorf("%s got %+v", to.name, m)
		}
	}
	if err := dial(t, n[1]).Login(ctx(t), "a.b"); !isFailure(err) {
		t.Errorf("a.b twice: %v", err)
	}
	if err := users[0].SendTo(ctx(t), "a", "prefix of a.b"); !isFailure(err) {
		t.Errorf("sendto a: %v, want Failure", err)
	}
}

// TestOrderAcrossNodes sends from several users on every node to one
// recipient, concurrently, and checks that each sender's messages arrive
// once and in order.
func TestOrderAcrossNodes(t *testing.T) {
	_, n := cluster3(t)
	const senders, each = 6, 300
	rcpt := login(t, n[0], "rcpt")
	var wg sync.WaitGroup
	for i := range senders {
		u := login(t, n[i%3], fmt.Sprintf("s%d", i))
		wg.Go(func() {
			for j := range each {
				if err := u.SendTo(ctx(t), "rcpt", fmt.Sprint(j)); err != nil {
					t.Errorf("%s message %d: %v", u.name, j, err)
					return
				}
			}
		})
	}
	next := make(map[string]int)
	for range senders * each {
		m := rcpt.receive()
		if m.Text != fmt.Sprint(next[m.From]) {
			t.Fatalf("from %s: %q, want %d", m.From, m.Text, next[m.From])
		}
		next[m.From]++
	}
	wg.Wait()
}

// TestSameNameRace logs in one name from clients on all nodes at the same
// moment: exactly one wins, every round.
func TestSameNameRace(t *testing.T) {
	_, n := cluster3(t)
	const perNode, rounds = 8, 10
	var clients []*user
	for i := range 3 * perNode {
		clients = append(clients, dial(t, n[i%3]))
	}
	for r := range rounds {
		name := fmt.Sprintf("race%d", r)
		won := raceLogins(t, r, clients, func(int) string { return name })
		// The winner can be reached from every node; then it leaves.
		w := clients[won]
		if err := clients[(won+1)%len(clients)].Logout(ctx(t)); !isFailure(err) {
			t.Fatalf("a loser was logged in: %v", err)
		}
		if err := w.Logout(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPipe serves a client over net.Pipe on one node and one over TCP on
// another.
func TestPipe(t *testing.T) {
	_, n := cluster3(t)
	cc, sc := net.Pipe()
	served := make(chan error, 1)
	go func() { served <- n[0].srv.ServeConn(sc) }()
	got := make(chan chat.Message, 1)
	pc := chat.NewClient(cc, chat.OnMessage(func(m chat.Message) { got <- m }))
	defer func() {
		pc.Close()
		<-served
	}()
	if err := pc.Login(ctx(t), "piped"); err != nil {
		t.Fatal(err)
	}
	tcp := login(t, n[1], "tcp")
	if err := pc.SendTo(ctx(t), "tcp", "over the pipe"); err != nil {
		t.Fatal(err)
	}
	if m := tcp.receive(); m.From != "piped" {
		t.Errorf("got %+v", m)
	}
	if err := tcp.SendTo(ctx(t), "piped", "back"); err != nil {
		t.Fatal(err)
	}
	if m := <-got; m != (chat.Message{From: "tcp", Text: "back"}) {
		t.Errorf("got %+v", m)
	}
}
