package cluster

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/seedchat/chat"
)

// When a batch's answer does not come within Timeout (it was lost with a
// NATS connection, say, or the destination is slow), the sender asks the
// destination what became of it, and goes on asking, every Timeout, until it
// knows. The question fences: a batch the destination has not accepted by
// the time it answers is refused if it arrives later. So the sender settles
// every receipt with the truth, whatever NATS lost, and never by guessing.
// Only the process that received a batch knows its outcome, so the question
// is put only while the lease of the destination node is still held by the
// process that held it when the batch was sent.
//
// The destination remembers the answers of the batches it accepted until
// the sender says (in a later batch's header) that it has settled them, or
// the sender has been silent for 2*DeadAfter. The sender stops asking when
// the destination process is taken for dead (its lease expired, or was
// taken over by a new process of that node after DeadAfter, lease.go): then
// the batches it has not answered count as queued and lost with it, as on
// a single server that dies. Its users' sessions have ended (a node that
// cannot renew its lease disconnects them), and a batch that reaches it
// later is refused (it is fenced): so neither Failure for a message that
// arrived, nor a message arriving after all, can happen.
//
// # Layout
//
// A question, a NATS request on PREFIX.status.NODE:
//
//	version     1 byte, batchVersion
//	sender      1 byte length, then the sending node's name
//	instance    8 bytes, the sending process's id
//	seqs        until the end, 8 bytes each: the batches asked about
//
// The answer holds, for each batch asked about and in the same order, one
// byte: statusAnswered, followed by 4 bytes of length and the batch's answer
// (batch.go); statusRefused, for a batch never accepted, and now never to
// be; or statusPending, for a batch being handled at that moment.
const (
	statusAnswered byte = iota
	statusRefused
	statusPending
)

// received is what a node keeps of the batches from one sending process.
type received struct {
	seq      uint64     // the highest sequence number accepted, or fenced by a question
	outcomes []*outcome // the batches accepted and not known to be settled, by sequence number
	used     time.Time
}

// outcome is the answer to a batch accepted, once it is known.
type outcome struct {
	seq     uint64
	answers []byte
	done    bool
}

// find returns the outcome of batch seq, or nil.
func (st *received) find(seq uint64) *outcome {
	i, ok := slices.BinarySearchFunc(st.outcomes, seq, func(oc *outcome, seq uint64) int { return cmp.Compare(oc.seq, seq) })
	if !ok {
		return nil
	}
	return st.outcomes[i]
}

// from returns what the node keeps of the sending process instance. d.recvMu
// is held.
func (d *Directory) from(instance uint64, now time.Time) *received {
	st := d.received[instance]
	if st == nil {
		st = &received{}
		d.received[instance] = st
	}
	st.used = now
	return st
}

// accept records the start of batch seq from instance, which has settled
// every batch below settled, and returns its outcome to fill in, or nil if
// the batch is refused: a later one has been accepted, or a question fenced
// it.
func (d *Directory) accept(instance, seq, settled uint64) *outcome {
	d.recvMu.Lock()
	defer d.recvMu.Unlock()
	st := d.from(instance, time.Now())
	k := 0
	for k < len(st.outcomes) && st.outcomes[k].seq < settled && st.outcomes[k].done {
		st.outcomes[k] = nil
		k++
	}
	st.outcomes = st.outcomes[k:]
	if seq <= st.seq {
		return nil
	}
	st.seq = seq
	oc := &outcome{seq: seq}
	st.outcomes = append(st.outcomes, oc)
	return oc
}

// answered records the answers of an accepted batch.
func (d *Directory) answered(oc *outcome, answers []byte) {
	d.recvMu.Lock()
	oc.answers, oc.done = answers, true
	d.recvMu.Unlock()
}

// forgetOutcomes forgets the sending processes not heard from for
// 2*DeadAfter. Called by the maintaining goroutine.
func (d *Directory) forgetOutcomes() {
	cutoff := time.Now().Add(-2 * d.cfg.DeadAfter)
	d.recvMu.Lock()
	defer d.recvMu.Unlock()
	for instance, st := range d.received {
		if st.used.Before(cutoff) {
			delete(d.received, instance)
		}
	}
}

// handleStatus answers a question about batches this node was sent.
func (d *Directory) handleStatus(m *nats.Msg) {
	sender, instance, rest, err := parseSender(m.Data)
	if err != nil || len(rest)%8 != 0 {
		d.log.Warn("malformed status question", zap.String("subject", m.Subject))
		return
	}
	var out []byte
	d.recvMu.Lock()
	st := d.from(instance, time.Now())
	for ; len(rest) > 0; rest = rest[8:] {
		seq := binary.BigEndian.Uint64(rest)
		oc := st.find(seq)
		switch {
		case oc != nil && oc.done:
			out = append(out, statusAnswered)
			out = binary.BigEndian.AppendUint32(out, uint32(len(oc.answers)))
			out = append(out, oc.answers...)
		case oc != nil:
			out = append(out, statusPending)
		default:
			// Never accepted; from now on never will be.
			st.seq = max(st.seq, seq)
			out = append(out, statusRefused)
		}
	}
	d.recvMu.Unlock()
	d.log.Debug("status asked", zap.String("from", sender), zap.Int("bytes", len(out)))
	m.Respond(out)
}

// checkLate starts an asker for each link whose oldest open batch has
// waited Timeout for its answer. The maintaining goroutine calls it.
func (d *Directory) checkLate() {
	cutoff := time.Now().Add(-d.cfg.Timeout)
	d.linksMu.Lock()
	links := slices.Collect(maps.Values(d.links))
	d.linksMu.Unlock()
	d.sentMu.Lock()
	defer d.sentMu.Unlock()
	for _, l := range links {
		if l.asking || len(l.open) == 0 || l.open[0].sentAt.After(cutoff) {
			continue
		}
		l.asking = true
		d.askers.Add(1)
		go d.ask(l)
	}
}

// ask is the goroutine that asks l's node about the batches whose answers
// are late, until none is.
func (d *Directory) ask(l *link) {
	defer d.askers.Done()
	for {
		late := d.lateBatches(l)
		if len(late) == 0 {
			return
		}
		if d.settleDead(l.node, late) {
			// Taken for dead (by this node or another) since some were
			// sent: no answer will come for those.
			continue
		}
		// Nobody answering (NATS's "no responders") is no proof that the
		// node is gone: after NATS restarts, its subscriptions may come
		// back after this node's. Only its lease says (settleDead).
		answers, err := d.askStatus(l, late)
		switch {
		case err == nil:
			pending := false
			for i, a := range answers {
				switch a.kind {
				case statusAnswered:
					d.settle(late[i], a.answers, nil)
				case statusRefused:
					d.settle(late[i], nil, errRefused(l.node))
				default:
					pending = true
				}
			}
			if !pending {
				continue
			}
		default:
			d.log.Debug("asking about late batches", zap.String("to", l.node), zap.Error(err))
		}
		select {
		case <-d.done:
			return // failAll settles the rest
		case <-time.After(d.cfg.Timeout / 4):
		}
	}
}

func errRefused(node string) error {
	return fmt.Errorf("%w: node %s: the message came too late to be queued", chat.ErrUnavailable, node)
}

// lateBatches returns the sequence numbers of l's batches unanswered for
// Timeout, in order; if there are none, it marks l's asker as ended.
func (d *Directory) lateBatches(l *link) []uint64 {
	cutoff := time.Now().Add(-d.cfg.Timeout)
	d.sentMu.Lock()
	defer d.sentMu.Unlock()
	var late []uint64
	for seq, b := range d.sent {
		if b.link == l && !b.sentAt.After(cutoff) {
			late = append(late, seq)
		}
	}
	if len(late) == 0 {
		l.asking = false
	}
	slices.Sort(late)
	return late
}

// settleDead settles the batches sent to node that the process they were
// sent to has not answered, if that process is taken for dead (it holds no
// lease, as this node's copy of the bucket has it): as queued, and lost
// with it (see the package doc above). With seqs, it looks at those batches
// only, and otherwise at every batch sent to node, taken for dead. It
// reports whether it settled any.
func (d *Directory) settleDead(node string, seqs []uint64) bool {
	d.mu.RLock()
	lease, held := d.leases[node]
	d.mu.RUnlock()
	var dead []uint64
	d.sentMu.Lock()
	if seqs == nil {
		held = false
		for seq, b := range d.sent {
			if b.link.node == node {
				seqs = append(seqs, seq)
			}
		}
	}
	for _, seq := range seqs {
		// A batch sent before this node knew of the lease (to == "") may
		// have gone to the process holding it now: that one is asked.
		if b := d.sent[seq]; b != nil && (!held || b.to != "" && b.to != lease.instance) {
			dead = append(dead, seq)
		}
	}
	d.sentMu.Unlock()
	slices.Sort(dead)
	for _, seq := range dead {
		d.sentMu.Lock()
		n := 0
		if b := d.sent[seq]; b != nil {
			n = len(b.receipts)
		}
		d.sentMu.Unlock()
		d.settle(seq, bytes.Repeat([]byte{answerQueued}, n), nil)
	}
	return len(dead) > 0
}

// statusAnswer is the answer about one batch.
type statusAnswer struct {
	kind    byte
	answers []byte
}

// askStatus asks l's node about the batches seqs.
func (d *Directory) askStatus(l *link, seqs []uint64) ([]statusAnswer, error) {
	q := appendSender(make([]byte, 0, d.headerSize+8*len(seqs)), d.cfg.Node, d.instanceID)
	for _, seq := range seqs {
		q = binary.BigEndian.AppendUint64(q, seq)
	}
	m, err := d.nc.Request(d.cfg.Prefix+".status."+l.node, q, d.cfg.Timeout)
	if err != nil {
		return nil, err
	}
	out := make([]statusAnswer, 0, len(seqs))
	for b := m.Data; len(out) < len(seqs); {
		if len(b) == 0 {
			return nil, errBadBatch
		}
		a := statusAnswer{kind: b[0]}
		b = b[1:]
		if a.kind == statusAnswered {
			if len(b) < 4 || uint64(len(b)-4) < uint64(binary.BigEndian.Uint32(b)) {
				return nil, errBadBatch
			}
			n := binary.BigEndian.Uint32(b)
			a.answers, b = b[4:4+n], b[4+n:]
		}
		out = append(out, a)
	}
	return out, nil
}
