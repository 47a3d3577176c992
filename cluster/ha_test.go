package cluster

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// haDeadAfter is the default, whose lease outlasts JetStream's election of
// a new leader for the bucket (4 to 9 s after the leader dies, longer on a
// loaded machine).
const haDeadAfter = DefaultDeadAfter

// cluster3HA starts three chat nodes, node i connected to NATS server i
// first, with the bucket on R3 storage.
func cluster3HA(t *testing.T, deadAfter time.Duration) ([]*natsServer, []*node) {
	t.Helper()
	servers := startNATSCluster(t)
	nodes := make([]*node, 3)
	for i := range nodes {
		nodes[i] = startNodeWith(t, clusterURL(servers, i), Config{
			Node:      fmt.Sprint("n", i+1),
			DeadAfter: deadAfter,
			Replicas:  3,
			Options:   []nats.Option{nats.DontRandomize()},
		}, nil)
	}
	return servers, nodes
}

// bucketLeader returns the index of the NATS server leading the bucket's
// stream.
func bucketLeader(t *testing.T, servers []*natsServer) int {
	t.Helper()
	leader := -1
	eventually(t, "a leader for the bucket", func() bool {
		leader = slices.IndexFunc(servers, func(s *natsServer) bool {
			return s.ns != nil && s.ns.JetStreamIsStreamLeader("$G", "KV_"+DefaultBucket)
		})
		return leader >= 0
	})
	return leader
}

// TestNATSServerKilled stops the NATS server that leads the bucket, out of
// three, under a running chat: no name is lost, no user is disconnected,
// messages keep flowing (each Success'd one delivered), and once JetStream
// has a new leader, logins work again.
func TestNATSServerKilled(t *testing.T) {
	servers, n := cluster3HA(t, haDeadAfter)
	users := []*user{login(t, n[0], "alice"), login(t, n[1], "bob"), login(t, n[2], "carol")}
	leader := bucketLeader(t, servers)
	servers[leader].stop()

	// Messages across nodes need no bucket: they flow during the election,
	// except while a node reconnects. Each Success'd one arrives.
	sendAll := func(text string) (ok int) {
		for i, from := range users {
			to := users[(i+1)%3]
			if err := from.SendTo(ctx(t), to.name, text); err != nil {
				if !isFailure(err) {
					t.Fatalf("%s to %s: %v", from.name, to.name, err)
				}
				continue
			}
			if m := to.receive(); m.Text != text {
				t.Errorf("%s got %+v, want %q", to.name, m, text)
			}
			ok++
		}
		return ok
	}
	round := 0
	eventually(t, "messages across every node", func() bool {
		round++
		return sendAll(fmt.Sprint("during ", round)) == 3
	})
	eventually(t, "a new leader for the bucket", func() bool {
		c, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, err := n[(leader+1)%3].dir.bucket().Status(c)
		return err == nil
	})
	var dave *user
	eventually(t, "a login after the election", func() bool {
		u := dial(t, n[leader])
		if err := u.Login(ctx(t), "dave"); err != nil {
			u.Close()
			return false
		}
		u.name, dave = "dave", u
		return true
	})
	// A node whose watch of the bucket went with the server catches up
	// when the watch is back: until then its list may lack dave.
	for _, u := range users {
		eventually(t, "dave listed on "+u.name+"'s node", func() bool {
			return slices.Equal(list(t, u), []string{"alice", "bob", "carol", "dave"})
		})
	}
	if err := users[0].SendTo(ctx(t), "dave", "after"); err != nil {
		t.Fatal(err)
	}
	if m := dave.receive(); m.Text != "after" {
		t.Errorf("dave got %+v", m)
	}
	for _, nd := range n {
		if f := nd.dir.Fenced(); f != 0 {
			t.Errorf("node %s fenced %d times", nd.name, f)
		}
	}
	for _, u := range users {
		select {
		case <-u.Done():
			t.Errorf("%s disconnected: %v", u.name, u.Err())
		default:
		}
	}
	servers[leader].start()
}

// TestCASConflictR3: on a replicated bucket, an Update at a stale revision
// is refused with an error casConflict recognises (nats.go marks it
// ErrKeyRevisionMismatch: a replicated stream may answer with a code that
// ErrKeyExists does not match), and an Update that never reached JetStream
// is no conflict, so that a login is not refused as "name taken" because
// NATS did not answer.
func TestCASConflictR3(t *testing.T) {
	servers := startNATSCluster(t)
	nc, err := nats.Connect(clusterURL(servers, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c := ctx(t)
	var kv jetstream.KeyValue
	eventually(t, "an R3 bucket", func() bool {
		kv, err = js.CreateKeyValue(c, jetstream.KeyValueConfig{Bucket: "cas", Replicas: 3, Storage: jetstream.FileStorage})
		return err == nil
	})
	rev, err := kv.Create(c, "k", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(c, "k", []byte("2"), rev); err != nil {
		t.Fatal(err)
	}
	_, err = kv.Update(c, "k", []byte("3"), rev)
	if !casConflict(err) {
		t.Errorf("update at a stale revision: %v, not taken for a conflict", err)
	}
	if _, err = kv.Create(c, "k", []byte("4")); !casConflict(err) {
		t.Errorf("create of an existing key: %v, not taken for a conflict", err)
	}
	cancelled, cancel := context.WithCancel(c)
	cancel()
	if _, err = kv.Update(cancelled, "k", []byte("5"), rev+1); err == nil || casConflict(err) {
		t.Errorf("update never sent: %v, want an error that is no conflict", err)
	}
}
