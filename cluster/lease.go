package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/seedchat/chat"
)

// A node holds its users' names under a lease, a key of the bucket
// (leaseKey) that it renews every Heartbeat with a compare-and-set: each
// renewal is an update that JetStream accepts only if the key is still at
// the revision of the node's previous one. A renewal counts from when its
// request started, on the node's own clocks, once JetStream has confirmed
// it.
//
// # Self-fencing
//
// Before the node serves a request of one of its users (Login, Lookup, so
// every sendto, local ones included, and Names) and before it queues a
// message from another node for one (handleBatch), leaseValid checks that
// its last confirmed renewal started less than Lease − Margin ago, on the
// monotonic clock and, so that a suspended machine does not escape it, on
// the wall clock too. If not, the node is fenced: it evicts every user
// (the reason wraps ErrFenced), refuses every request needing a name with
// Failure, and takes names again only after a renewal confirmed after the
// fence, when its users log in anew. A renewal that finds its key changed
// (the other nodes took the node for dead) fences it at once.
//
// # Freeing a silent node's names
//
// Another node frees a node's names only when the lease key it saw last
// has stayed unchanged for DeadAfter on its own monotonic clock, counting
// from when it saw that revision (and from when it came online at the
// earliest): it then deletes the lease key under a compare-and-set on that
// very revision, and the names after it. The compare-and-set proves that no
// later renewal was confirmed, so the silent node's last lease started
// before the revision was seen, and has ended, on the silent node's clock,
// Lease − Margin after; DeadAfter ≥ Lease + Margin leaves 2*Margin for the
// clocks' rates to differ, and for a paused goroutine between a check and
// the queueing it guards.

// ErrFenced is the cause of requests refused, and of users disconnected,
// while the node could not confirm its lease in time.
var ErrFenced = errors.New("cluster: lease not confirmed in time, node fenced")

// errFenced is what a fenced node's refused requests return.
var errFenced = fmt.Errorf("%w: %w", chat.ErrUnavailable, ErrFenced)

// leasePrefix starts the keys of nodes' leases; user names' keys never hold
// a '.'.
const leasePrefix = "lease."

func leaseKey(node string) string { return leasePrefix + node }

// leaseNode returns the node of a lease key, or false for another key.
func leaseNode(key string) (string, bool) {
	node, ok := strings.CutPrefix(key, leasePrefix)
	return node, ok && node != ""
}

// stamp is when the last confirmed renewal started, by both clocks.
type stamp struct {
	at   time.Time // with its monotonic reading
	wall int64     // Unix nanoseconds
}

func newStamp(t time.Time) *stamp { return &stamp{at: t, wall: t.UnixNano()} }

// within reports whether t is less than d after s on both clocks.
func (s *stamp) within(t time.Time, d time.Duration) bool {
	return t.Sub(s.at) < d && t.UnixNano()-s.wall < int64(d)
}

// leaseSeen is another node's lease key as the copy of the bucket holds it.
type leaseSeen struct {
	rev      uint64
	instance string
	at       time.Time // when this node saw that revision
}

// leaseValid reports whether the node holds its lease now, and fences it if
// the lease has just expired. It is on the path of every message: an atomic
// load or two and one reading of the clock.
func (d *Directory) leaseValid() bool {
	if h := d.hold.Load(); h != nil {
		select { // paused by a test
		case <-*h:
		case <-d.done:
		}
	}
	if d.fenced.Load() {
		return false
	}
	if d.stamp.Load().within(time.Now(), d.valid) {
		return true
	}
	d.fence("lease expired")
	return false
}

// Fenced returns how many times the node has fenced itself: evicted its
// users because it could not confirm its lease in time.
func (d *Directory) Fenced() uint64 { return d.fences.Load() }

// fence stops the node serving names: it evicts every user.
func (d *Directory) fence(reason string) {
	if !d.fenced.CompareAndSwap(false, true) {
		return
	}
	d.fences.Add(1)
	d.mu.Lock()
	d.gen++ // logins in flight fail
	users := d.local
	d.local = make(map[string]*localUser)
	d.mu.Unlock()
	d.log.Warn("fenced: its lease was not confirmed in time; users disconnected",
		zap.String("reason", reason), zap.Int("users", len(users)), zap.Duration("lease_valid_for", d.valid))
	err := fmt.Errorf("%w: %s", ErrFenced, reason)
	for _, u := range users {
		if ev, ok := u.peer.(chat.Evicter); ok {
			ev.Evict(err)
		}
	}
}

// confirmed records a renewal confirmed by JetStream that started at start.
// A renewal after the lease had expired fences the node first (if nothing
// has yet), then lifts the fence.
func (d *Directory) confirmed(start time.Time) {
	if !d.stamp.Load().within(start, d.valid) {
		d.fence("lease expired before it was renewed")
	}
	d.stamp.Store(newStamp(start))
	if d.fenced.Swap(false) {
		d.log.Info("lease held: serving names")
	}
}

// renewLoop renews the lease every Heartbeat until Close.
func (d *Directory) renewLoop() {
	d.every(nil, func() {
		d.leaseValid() // fences an expired lease, even with no traffic
		d.renew()
	})
}

// renew renews the lease once, or takes it again after it was lost.
func (d *Directory) renew() {
	kv := d.bucket()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), min(d.cfg.Timeout, d.valid))
	defer cancel()
	if d.leaseLost {
		if d.tryAcquire(ctx, kv, start) {
			d.leaseLost = false
		}
		return
	}
	rev, err := kv.Update(ctx, leaseKey(d.cfg.Node), []byte(d.instance), d.leaseRev)
	if err == nil {
		d.leaseRev = rev
		d.confirmed(start)
		return
	}
	if !casConflict(err) {
		d.log.Debug("lease not renewed", zap.Error(err))
		return
	}
	e, err := kv.Get(ctx, leaseKey(d.cfg.Node))
	switch {
	case err == nil && string(e.Value()) == d.instance:
		d.leaseRev = e.Revision() // a renewal whose confirmation was lost
		return
	case err == nil:
		d.log.Error("another process holds this node's lease; give each node its own name", zap.ByteString("instance", e.Value()))
		d.fence("another process holds this node's lease")
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		d.fence("the other nodes took this one for dead")
	default:
		return
	}
	d.leaseLost = true
}

// acquire takes the node's lease when it joins, waiting, as the others
// would, for a previous process's lease to be left unrenewed for DeadAfter.
func (d *Directory) acquire(ctx context.Context, kv jetstream.KeyValue) error {
	t := time.NewTicker(d.cfg.Heartbeat)
	defer t.Stop()
	for {
		if d.tryAcquire(ctx, kv, time.Now()) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: taking the lease of node %s: %w", d.cfg.Node, ctx.Err())
		case <-t.C:
		}
	}
}

// tryAcquire creates the node's lease key, or takes it over from a previous
// process that has not renewed it for DeadAfter. It reports whether the node
// holds its lease.
func (d *Directory) tryAcquire(ctx context.Context, kv jetstream.KeyValue, start time.Time) bool {
	k := leaseKey(d.cfg.Node)
	rev, err := kv.Create(ctx, k, []byte(d.instance))
	if err == nil {
		d.leaseRev = rev
		d.confirmed(start)
		return true
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		d.log.Debug("lease not taken", zap.Error(err))
		return false
	}
	e, err := kv.Get(ctx, k)
	switch {
	case err != nil:
		return false
	case string(e.Value()) == d.instance:
		// Created by this process (a confirmation lost, or an earlier try
		// of Open): renewed like any lease.
		rev, err := kv.Update(ctx, k, []byte(d.instance), e.Revision())
		if err != nil {
			return false
		}
		d.leaseRev = rev
		d.confirmed(start)
		return true
	case e.Revision() != d.prevRev:
		if d.prevRev == 0 {
			d.log.Info("waiting for the lease of a previous process of this node to expire",
				zap.ByteString("instance", e.Value()), zap.Duration("dead_after", d.cfg.DeadAfter))
		}
		d.prevRev, d.prevSince = e.Revision(), time.Now()
		return false
	case time.Since(d.prevSince) <= d.cfg.DeadAfter:
		return false
	}
	rev, err = kv.Update(ctx, k, []byte(d.instance), d.prevRev)
	if err != nil {
		return false
	}
	d.leaseRev, d.prevRev = rev, 0
	d.confirmed(start)
	return true
}

// expireLease deletes node's lease key if it is still at revision rev.
func (d *Directory) expireLease(node string, rev uint64) bool {
	return d.deleteKeyRaw(leaseKey(node), rev) == nil
}

// deleteKeyRaw deletes a key if its revision is still rev, leaving a marker
// that expires if the bucket allows.
func (d *Directory) deleteKeyRaw(k string, rev uint64) error {
	d.mu.RLock()
	kv, ttl := d.kv, d.ttl
	d.mu.RUnlock()
	ctx, cancel := d.ctx()
	defer cancel()
	if ttl {
		return kv.Purge(ctx, k, jetstream.LastRevision(rev), jetstream.PurgeTTL(markerTTL))
	}
	return kv.Delete(ctx, k, jetstream.LastRevision(rev))
}

// applyLease copies a change of a lease key. d.mu is held.
func (d *Directory) applyLease(node string, e jetstream.KeyValueEntry, leases map[string]leaseSeen) {
	if e.Operation() != jetstream.KeyValuePut {
		delete(leases, node)
		return
	}
	leases[node] = leaseSeen{rev: e.Revision(), instance: string(e.Value()), at: time.Now()}
}

// reapDead frees the names of the nodes whose lease has expired: a lease
// key gone (deleted by a node that left, or by another that took it for
// dead), or left unrenewed for DeadAfter since this node saw it, counting
// from when this node came online at the earliest.
func (d *Directory) reapDead() {
	type victim struct {
		names  []nameRev
		lease  leaseSeen
		alive  bool // its lease key is still there
		silent time.Duration
	}
	now := time.Now()
	victims := make(map[string]*victim)
	d.mu.RLock()
	for node, l := range d.leases {
		last := l.at
		if last.Before(d.onlineSince) {
			last = d.onlineSince
		}
		if node != d.cfg.Node && now.Sub(last) > d.cfg.DeadAfter {
			victims[node] = &victim{lease: l, alive: true, silent: now.Sub(last)}
		}
	}
	for name, e := range d.all {
		if e.node == d.cfg.Node {
			continue
		}
		v := victims[e.node]
		if v == nil {
			if _, held := d.leases[e.node]; held {
				continue
			}
			v = &victim{}
			victims[e.node] = v
		}
		v.names = append(v.names, nameRev{name, e.rev})
	}
	d.mu.RUnlock()
	for node, v := range victims {
		if v.alive && !d.expireLease(node, v.lease.rev) {
			continue // renewed meanwhile, or expired by another node
		}
		d.settleDead(node, nil) // the batches it has not answered (status.go)
		freed := 0
		for _, n := range v.names {
			if d.deleteKey(n.name, n.rev) {
				freed++
			}
		}
		if v.alive || len(v.names) > 0 {
			d.log.Warn("node taken for dead; its names freed", zap.String("dead", node),
				zap.Int("names", len(v.names)), zap.Int("freed", freed), zap.Stringer("silent_for", v.silent.Round(time.Millisecond)))
		}
	}
}

// pause freezes the node's progress as SIGSTOP would, for tests: its
// maintenance, its renewals, and every request and delivery at its lease
// check, until resume.
func (d *Directory) pause() {
	ch := make(chan struct{})
	d.hold.Store(&ch)
}

// resume lets a paused node go on.
func (d *Directory) resume() {
	if h := d.hold.Swap(nil); h != nil {
		close(*h)
	}
}

// reachable reports whether messages can go to other nodes: the node is
// online, or connected again to NATS and catching up (its copy of the
// bucket may be stale meanwhile; a message to a login that has ended is
// refused by its token).
func (d *Directory) reachable() bool { return d.online.Load() || d.nc.IsConnected() }
