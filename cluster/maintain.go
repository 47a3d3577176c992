package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/seedchat/chat"
)

// watch is the watch that keeps the copy of the bucket current.
type watch struct {
	w       jetstream.KeyWatcher
	cancel  context.CancelFunc
	stopped atomic.Bool
}

// maintain is the goroutine that keeps the node in the cluster: every
// Heartbeat, and when poked, it frees the names of dead nodes, checks this
// node's names against the bucket, and brings the node back online after
// NATS comes back. Another goroutine renews the lease (lease.go).
func (d *Directory) maintain() {
	d.every(d.poke, func() {
		d.checkLate()
		if !d.nc.IsConnected() {
			d.online.Store(false)
			return
		}
		if !d.online.Load() {
			ctx, cancel := d.ctx()
			err := d.sync(ctx)
			cancel()
			if err != nil {
				d.log.Warn("rejoining the cluster", zap.Error(err))
				return
			}
			d.log.Info("back online")
		}
		d.reapDead()
		d.reconcile()
		d.forgetOutcomes()
	})
}

// every calls f every Heartbeat, and whenever poke has a value, until
// Close; it is the body of a maintenance goroutine.
func (d *Directory) every(poke <-chan struct{}, f func()) {
	defer d.maint.Done()
	t := time.NewTicker(d.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-d.done:
			return
		case <-poke:
		case <-t.C:
		}
		f()
	}
}

// openBucket opens the bucket, creating it if it is missing.
func (d *Directory) openBucket(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := d.js.KeyValue(ctx, d.cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = d.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      d.cfg.Bucket,
			Description: "chat: logged-in names and their nodes, keyed by skeleton",
			History:     1,
			Replicas:    d.cfg.Replicas,
			Storage:     jetstream.FileStorage,
			// Logouts leave markers that expire (deleteKey).
			LimitMarkerTTL: markerTTL,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = d.js.KeyValue(ctx, d.cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: opening bucket %s: %w", d.cfg.Bucket, err)
	}
	return kv, nil
}

// sync (re)starts the copy of the bucket, creating the bucket if it is
// missing, checks this node's names against it, and puts the node online.
func (d *Directory) sync(ctx context.Context) error {
	epoch := d.epoch.Load()
	kv, err := d.openBucket(ctx)
	if err != nil {
		return err
	}

	// The bucket's last revision now: the watch's first values cover it,
	// even if the message itself has expired since (a logout's marker), and
	// Names must not wait for it.
	last, ttl, _ := bucketState(ctx, kv) // zero and false if it fails

	d.stopWatch()
	// The watch's context must outlive this call: the watch uses it again
	// when it re-creates its consumer. Only its creation is bounded.
	wctx, wcancel := context.WithCancel(context.Background())
	created := make(chan struct{})
	go func() {
		select {
		case <-created:
		case <-ctx.Done():
			wcancel()
		}
	}()
	w, err := kv.WatchAll(wctx)
	close(created)
	if err != nil {
		wcancel()
		return fmt.Errorf("cluster: watching bucket %s: %w", d.cfg.Bucket, err)
	}
	ws := &watch{w: w, cancel: wcancel}
	d.watcher = ws

	all := make(map[string]*entry)
	keys := make(map[string]string)
	leases := make(map[string]leaseSeen)
	var applied uint64
	unread := 0
	for initial := true; initial; {
		select {
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				d.stopWatch()
				return errors.New("cluster: watch ended")
			case e == nil:
				initial = false
			default:
				applied = max(applied, e.Revision())
				if node, ok := leaseNode(e.Key()); ok {
					d.applyLease(node, e, leases)
					break
				}
				if e.Operation() != jetstream.KeyValuePut {
					break
				}
				if node, name, ok := parseValue(e.Value()); ok {
					all[name] = d.newEntry(node, name, e, nil)
					keys[e.Key()] = name
				} else {
					unread++
				}
			}
		case <-ctx.Done():
			d.stopWatch()
			return fmt.Errorf("cluster: reading bucket %s: %w", d.cfg.Bucket, ctx.Err())
		}
	}

	applied = max(applied, last)
	if unread > 0 {
		d.log.Warn("the bucket holds values this version cannot read: is it a bucket of an earlier version?",
			zap.String("bucket", d.cfg.Bucket), zap.Int("values", unread))
	}
	if !ttl {
		d.log.Warn("the bucket keeps delete markers for ever; recreate it to have them expire", zap.String("bucket", d.cfg.Bucket))
	}
	d.mu.Lock()
	d.kv, d.ttl = kv, ttl
	d.all, d.keys = all, keys
	d.leases = leases
	d.sorted.Reset()
	d.applied = applied
	d.releaseWaiters()
	d.mu.Unlock()
	d.follows.Add(1)
	go d.follow(ws)

	d.reconcile()
	d.onlineSince = time.Now()
	if d.epoch.Load() != epoch {
		return errors.New("cluster: disconnected again")
	}
	d.online.Store(true)
	return nil
}

// follow applies the watch's updates to the copy of the bucket until the
// watch stops. A watch that stops by itself takes the node offline until
// the next sync.
func (d *Directory) follow(ws *watch) {
	defer d.follows.Done()
	for e := range ws.w.Updates() {
		if e != nil && !d.testLoseUpdates.Load() {
			d.apply(e)
		}
	}
	if !ws.stopped.Load() {
		d.log.Warn("watch of the bucket ended")
		d.readAnew()
	}
}

// readAnew takes the node offline, and has maintain read the bucket anew
// (sync) at once.
func (d *Directory) readAnew() {
	d.online.Store(false)
	d.kick()
}

func (d *Directory) stopWatch() {
	ws := d.watcher
	if ws == nil {
		return
	}
	d.watcher = nil
	ws.stopped.Store(true)
	ws.w.Stop()
	ws.cancel()
}

// newEntry is the entry of the copy for name, logged in at node as the
// bucket's entry e says. It keeps old's peer if it was the same node's.
func (d *Directory) newEntry(node, name string, e jetstream.KeyValueEntry, old *entry) *entry {
	n := &entry{node: node, rev: e.Revision()}
	switch {
	case n.node == d.cfg.Node:
	case old != nil && old.node == n.node && old.rev == n.rev:
		n.peer = old.peer
	default:
		n.peer = d.remote(n.node, name, n.rev)
	}
	return n
}

// apply copies one change of the bucket. A key's delete marker carries no
// value: the copy knows which name the key held.
func (d *Directory) apply(e jetstream.KeyValueEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.Revision() <= d.applied {
		return
	}
	d.applied = e.Revision()
	d.releaseWaiters()
	if node, ok := leaseNode(e.Key()); ok {
		d.applyLease(node, e, d.leases)
		return
	}
	node, name, ok := parseValue(e.Value())
	put := ok && e.Operation() == jetstream.KeyValuePut
	if was, held := d.keys[e.Key()]; held && (!put || was != name) {
		// Deleted, or taken over by a lookalike of the same node.
		delete(d.all, was)
		delete(d.keys, e.Key())
		d.sorted.Reset()
	}
	if !put {
		return
	}
	old := d.all[name]
	d.all[name] = d.newEntry(node, name, e, old)
	d.keys[e.Key()] = name
	if old == nil {
		d.sorted.Reset()
	}
}

// releaseWaiters wakes the Names calls waiting for a revision now applied.
// d.mu is held.
func (d *Directory) releaseWaiters() {
	kept := d.waiters[:0]
	for _, w := range d.waiters {
		if w.rev <= d.applied {
			close(w.done)
		} else {
			kept = append(kept, w)
		}
	}
	clear(d.waiters[len(kept):])
	d.waiters = kept
}

type nameRev struct {
	name string
	rev  uint64
}

// reconcile makes the bucket agree with this node's users: it deletes the
// names the bucket gives this node that no user here holds (logouts made
// while offline, logins that timed out), and checks each user whose name
// the copy of the bucket does not give to it.
func (d *Directory) reconcile() {
	var orphans []nameRev
	var check []string
	d.mu.RLock()
	for name, e := range d.all {
		if e.node == d.cfg.Node && d.local[name] == nil {
			orphans = append(orphans, nameRev{name, e.rev})
		}
	}
	for name, u := range d.local {
		if !u.serving() {
			continue
		}
		if e := d.all[name]; e == nil || e.node != d.cfg.Node || e.rev != u.rev {
			check = append(check, name)
		}
	}
	d.mu.RUnlock()
	for _, n := range orphans {
		d.deleteKey(n.name, n.rev)
	}
	for _, name := range check {
		d.recheck(name)
	}
}

// recheck reads the key of a user of this node from the bucket: a key
// deleted meanwhile (by nodes that took this one for dead) is created
// again; a key another user holds now (of the same name or a lookalike, on
// another node or, after a partition, this one) has this node's user
// evicted.
func (d *Directory) recheck(name string) {
	d.mu.RLock()
	u, kv := d.local[name], d.kv
	d.mu.RUnlock()
	if u == nil {
		return
	}
	ctx, cancel := d.ctx()
	defer cancel()
	k := key(name)
	e, err := kv.Get(ctx, k)
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
		return
	}
	var node, held string
	if err == nil {
		node, held, _ = parseValue(e.Value())
	}
	switch {
	case err != nil: // not found, or deleted
		rev, err := kv.Create(ctx, k, value(d.cfg.Node, name))
		if err != nil {
			return // taken meanwhile, or NATS is gone: the next round sees
		}
		if !d.setRev(name, u, rev) {
			d.deleteKey(name, rev) // the user left meanwhile
			return
		}
		d.log.Info("name taken again after a partition", zap.String("name", name))
	case node == d.cfg.Node && held == name:
		d.setRev(name, u, e.Revision())
	default:
		d.mu.Lock()
		gone := d.local[name] != u || u.leaving
		if !gone {
			delete(d.local, name)
		}
		d.mu.Unlock()
		if gone {
			return
		}
		reason := fmt.Errorf("name %q was taken, as %q, on node %s while this node was cut off", name, held, node)
		d.log.Warn("user evicted", zap.String("name", name), zap.String("holder", node), zap.String("held_as", held))
		if ev, ok := u.peer.(chat.Evicter); ok {
			ev.Evict(reason)
		}
	}
}

// setRev records rev as the revision of u's key, unless u has left.
func (d *Directory) setRev(name string, u *localUser, rev uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.local[name] != u || u.leaving {
		return false
	}
	u.rev = rev
	return true
}
