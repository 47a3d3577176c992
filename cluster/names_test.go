package cluster

import (
	"encoding/base64"
	"fmt"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seedchat/chat"
)

// clusterLookalikes are pairs of valid names with one skeleton.
var clusterLookalikes = [][2]string{
	{"paypal", "pаypal"}, // a Cyrillic а
	{"paypal", "paypa1"},
	{"alice", "a1ice"},
	{"modern", "rnodern"},
	{"scope", "ѕсоре"}, // all Cyrillic
}

// TestLookalikesAcrossNodes: while a name is logged in on one node, its
// lookalikes are refused on every node, counted as lookalike; the very
// name is still refused as taken. Once it logs out, a lookalike may log in
// anywhere, and the first name is refused in turn. Case counts.
func TestLookalikesAcrossNodes(t *testing.T) {
	_, n := cluster3(t)
	witness := login(t, n[0], "witness")
	before := failures(n)
	refused := 0
	for i, pair := range clusterLookalikes {
		first := login(t, n[i%3], pair[0])
		for _, nd := range n {
			if err := dial(t, nd).Login(ctx(t), pair[1]); !isFailure(err) {
				t.Errorf("%+q on %s while %+q is on %s: %v, want Failure", pair[1], nd.name, pair[0], n[i%3].name, err)
			}
			refused++
		}
		// A lookalike is not the user: nothing reaches it.
		if err := witness.SendTo(ctx(t), pair[1], "for the lookalike"); !isFailure(err) {
			t.Errorf("sendto %+q while %+q is logged in: %v, want Failure", pair[1], pair[0], err)
		}
		if got := list(t, witness); !slices.Equal(got, slices.Sorted(slices.Values([]string{"witness", pair[0]}))) {
			t.Errorf("list = %+q, want witness and %+q", got, pair[0])
		}
		if err := first.Logout(ctx(t)); err != nil {
			t.Fatal(err)
		}
		second := login(t, n[(i+1)%3], pair[1])
		if err := dial(t, n[(i+2)%3]).Login(ctx(t), pair[0]); !isFailure(err) {
			t.Errorf("%+q while %+q is logged in: %v, want Failure", pair[0], pair[1], err)
		}
		refused++
		if err := witness.SendTo(ctx(t), pair[1], "hi"); err != nil {
			t.Errorf("sendto %+q: %v", pair[1], err)
		}
		if m := second.receive(); m != (chat.Message{From: "witness", Text: "hi"}) {
			t.Errorf("%+q received %+v", pair[1], m)
		}
		if err := second.Logout(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	after := failures(n)
	if got := after[chat.FailLookalike] - before[chat.FailLookalike]; got != uint64(refused) {
		t.Errorf("lookalike failures: %d, want %d", got, refused)
	}
	if got := after[chat.FailNameTaken] - before[chat.FailNameTaken]; got != 0 {
		t.Errorf("name_taken failures: %d, want 0", got)
	}

	// Names that differ in case only are two users, on any nodes.
	login(t, n[1], "Bob")
	login(t, n[2], "bob")
	if got := list(t, witness); !slices.Equal(got, []string{"Bob", "bob", "witness"}) {
		t.Errorf("list = %+q, want Bob, bob and witness", got)
	}
}

// TestLookalikeRace logs in the two names of a lookalike pair at the same
// moment, one from clients on one node, the other from clients on
// another: exactly one client wins, every round.
func TestLookalikeRace(t *testing.T) {
	_, n := cluster3(t)
	const perNode, rounds = 6, 10
	type racer struct {
		u    *user
		node int
	}
	var racers []racer
	for i := range 2 * perNode {
		racers = append(racers, racer{dial(t, n[i%2]), i % 2})
	}
	for r := range rounds {
		names := [2]string{fmt.Sprintf("paypal%d", r), fmt.Sprintf("pаypal%d", r)} // a Cyrillic а
		before := failures(n)
		users := make([]*user, len(racers))
		for i, rc := range racers {
			users[i] = rc.u
		}
		won := raceLogins(t, r, users, func(i int) string { return names[racers[i].node] })
		w := racers[won]
		after := failures(n)
		lookalike, taken := after[chat.FailLookalike]-before[chat.FailLookalike], after[chat.FailNameTaken]-before[chat.FailNameTaken]
		// A client whose node had the same name in flight is told taken;
		// at least one on the other node meets the winner's key.
		if lookalike < 1 || lookalike+taken != 2*perNode-1 {
			t.Errorf("round %d: %d lookalike and %d name_taken failures, want %d, at least 1 lookalike", r, lookalike, taken, 2*perNode-1)
		}
		for _, nd := range n {
			if got := list(t, dial(t, nd)); !slices.Equal(got, []string{names[w.node]}) {
				t.Errorf("round %d: list on %s = %+q, want the winner %+q", r, nd.name, got, names[w.node])
			}
		}
		if err := w.u.Logout(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBucketKeys checks the bucket as other tools see it: the default
// bucket chat_names, one key per skeleton (base64url), each holding the
// node and the exact name.
func TestBucketKeys(t *testing.T) {
	_, n := cluster3(t)
	login(t, n[0], "zoë")
	login(t, n[1], "Paypal")
	kv, err := n[2].dir.js.KeyValue(ctx(t), "chat_names")
	if err != nil {
		t.Fatalf("the default bucket: %v", err)
	}
	for _, want := range []struct{ skeleton, value string }{
		{"zoe\u0308", "n1 zoë"}, // decomposed, as skeletons are
		{"Paypal", "n2 Paypal"},
	} {
		k := base64.RawURLEncoding.EncodeToString([]byte(want.skeleton))
		e, err := kv.Get(ctx(t), k)
		if err != nil {
			t.Errorf("key %s (%+q): %v", k, want.skeleton, err)
			continue
		}
		if string(e.Value()) != want.value {
			t.Errorf("key %s holds %+q, want %+q", k, e.Value(), want.value)
		}
	}
	keys, err := kv.ListKeys(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for k := range keys.Keys() {
		if _, lease := leaseNode(k); !lease {
			count++
		}
	}
	if count != 2 {
		t.Errorf("%d keys of names, want 2", count)
	}
	if _, err := n[2].dir.js.KeyValue(ctx(t), "chat_users"); err != jetstream.ErrBucketNotFound {
		t.Errorf("the bucket of the previous version: %v, want ErrBucketNotFound", err)
	}
}

func TestValueEncoding(t *testing.T) {
	for _, c := range []struct {
		value      string
		node, name string
		ok         bool
	}{
		{"n1 alice", "n1", "alice", true},
		{"node-2 zoë", "node-2", "zoë", true},
		{"n1 a b", "n1", "a b", true}, // the name is all after the first space
		{"n1", "", "", false},         // a value of the previous version
		{"n1 ", "", "", false},
		{" alice", "", "", false},
		{"n.1 alice", "", "", false},
	} {
		node, name, ok := parseValue([]byte(c.value))
		if ok != c.ok || ok && (node != c.node || name != c.name) {
			t.Errorf("parseValue(%q) = %q, %q, %v; want %q, %q, %v", c.value, node, name, ok, c.node, c.name, c.ok)
		}
		if c.ok {
			if v := string(value(c.node, c.name)); v != c.value {
				t.Errorf("value(%q, %q) = %q, want %q", c.node, c.name, v, c.value)
			}
		}
	}
	if key("paypal") != key("pаypal") || key("Bob") == key("bob") {
		t.Error("key does not follow the skeleton")
	}
}
