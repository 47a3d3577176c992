package cluster

import (
	"testing"
	"time"

	"github.com/seedchat/chat"
)

// benchPeer is a local user that takes every message.
type benchPeer struct{}

func (benchPeer) Deliver(string, []byte, chat.Receipt) error { return nil }
func (benchPeer) Flush()                                     {}

// benchDirectory is a Directory holding its lease with one local user,
// alice, and no NATS connection: enough for Lookup of a local user.
func benchDirectory() *Directory {
	d := &Directory{
		local: map[string]*localUser{"alice": {peer: benchPeer{}, rev: 1}},
		all:   map[string]*entry{"alice": {node: "n1", rev: 1}},
		valid: time.Hour,
	}
	d.online.Store(true)
	d.stamp.Store(newStamp(time.Now()))
	return d
}

// BenchmarkLookupLocal measures Lookup of a user of this node, on the path
// of every local sendto: the lease check is one reading of the clock and
// two atomic loads.
func BenchmarkLookupLocal(b *testing.B) {
	d := benchDirectory()
	name := []byte("alice")
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := d.Lookup(name); !ok {
				b.Fatal("alice not found")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, ok := d.Lookup(name); !ok {
					b.Fatal("alice not found")
				}
			}
		})
	})
}

// BenchmarkLeaseValid measures the lease check alone.
func BenchmarkLeaseValid(b *testing.B) {
	d := benchDirectory()
	for b.Loop() {
		if !d.leaseValid() {
			b.Fatal("lease not valid")
		}
	}
}
