package cluster

import (
	"encoding/binary"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// A batch whose answer does not come within 3*Timeout (lost with a NATS
// connection that dropped, or a NATS server that stopped) is not failed at
// once: it may have been queued. Its sender asks the destination again, on
// the batches' own subject so that the question comes after the batch: the
// destination answers from the answers it remembers, or, if it never
// received the batch, marks it refused (a later arrival is answered late)
// and answers so. The sender asks every Timeout, maxQueries times at most,
// and fails the batch only then (NATS's "no responders" to a question
// does not fail it: the destination may be between two connections), or
// when the destination is taken for dead. Answers to questions come on
// the ack subject with "q" before the batch's number.
//
// A batch still unanswered when its destination is taken for dead (its
// lease deleted: it has fenced itself, and its users are disconnected) is
// settled as queued, Success. Each of its messages was queued and then lost
// with its recipient's connection, or never queued for a recipient whose
// login had ended: the recipient cannot tell the two apart, and Failure
// would be wrong for the messages queued (some may have been delivered). A
// message answered Failure is never delivered.
//
// A question is laid out as a batch's header with version queryVersion and
// no deadline, then the batch's number of items in 4 bytes.

const queryVersion = 2

// maxQueries bounds the questions about one batch: asked every Timeout
// for twice DeadAfter, by when an unreachable destination has been taken
// for dead.
func (d *Directory) maxQueries() int { return int(2*d.cfg.DeadAfter/d.cfg.Timeout) + 1 }

// answerKey names one batch received.
type answerKey struct {
	sender   string
	instance uint64
	seq      uint64
}

// answered is a batch's answer, remembered.
type answered struct {
	key     answerKey
	answers []byte
	at      time.Time
}

// remember keeps a batch's answer for the questions that may come, for
// 4*DeadAfter. Called by handleBatch only.
func (d *Directory) remember(h batchHeader, answers []byte) {
	now := time.Now()
	keep := 4 * d.cfg.DeadAfter
	for len(d.answered) > 0 && now.Sub(d.answered[0].at) > keep {
		delete(d.answerIndex, d.answered[0].key)
		d.answered = d.answered[1:]
	}
	if d.answerIndex == nil {
		d.answerIndex = make(map[answerKey][]byte)
	}
	k := answerKey{h.sender, h.instance, h.seq}
	d.answerIndex[k] = answers
	d.answered = append(d.answered, answered{k, answers, now})
}

// handleQuery answers a question about a batch. Called by handleBatch, on
// its goroutine.
func (d *Directory) handleQuery(m *nats.Msg) {
	b := append([]byte(nil), m.Data...)
	b[0] = batchVersion
	h, rest, err := parseHeader(b)
	if err != nil || len(rest) != 4 || m.Reply == "" {
		d.log.Warn("malformed question", zap.String("subject", m.Subject))
		return
	}
	answers, ok := d.answerIndex[answerKey{h.sender, h.instance, h.seq}]
	if !ok {
		// Never received: refused from now on, as overtaken.
		if last, seen := d.lastBatch[h.sender]; !seen || last.instance != h.instance || last.seq < h.seq {
			d.lastBatch[h.sender] = received{h.instance, h.seq}
		}
		answers = make([]byte, binary.BigEndian.Uint32(rest))
		for i := range answers {
			answers[i] = answerLate
		}
		d.remember(h, answers)
	}
	d.nc.Publish(m.Reply, answers)
}

// noAnswer is called when batch b has waited for its answer too long: it
// asks the destination again, or fails the batch after maxQueries.
func (d *Directory) noAnswer(b *batch) {
	d.sentMu.Lock()
	waiting := d.sent[b.seq] == b
	d.sentMu.Unlock()
	if !waiting {
		return
	}
	b.queries++
	if b.queries > d.maxQueries() {
		d.settle(b.seq, nil, errNoAnswer)
		return
	}
	q := appendHeader(nil, batchHeader{sender: d.cfg.Node, instance: d.instanceID, seq: b.seq, deadline: time.Unix(0, 0)})
	q[0] = queryVersion
	q = binary.BigEndian.AppendUint32(q, uint32(len(b.receipts)))
	b.timer.Reset(d.cfg.Timeout)
	if err := d.nc.PublishMsg(&nats.Msg{Subject: b.link.subject, Reply: d.ackPrefix + "q" + strconv.FormatUint(b.seq, 10), Data: q}); err != nil {
		d.log.Debug("question not sent", zap.Error(err))
	}
}

// settleLost settles as queued the batches sent to node more than twice
// Timeout ago and still unanswered: node has just been taken for dead.
// Those sent since are past no deadline yet, and get their answer (a
// refusal: the node is fenced) or go on waiting.
func (d *Directory) settleLost(node string) {
	cutoff := time.Now().Add(-2 * d.cfg.Timeout)
	lost := make(map[uint64]int)
	d.sentMu.Lock()
	for seq, b := range d.sent {
		if b.link.node == node && b.sentAt.Before(cutoff) {
			lost[seq] = len(b.receipts)
		}
	}
	d.sentMu.Unlock()
	for seq, n := range lost {
		d.settle(seq, make([]byte, n), nil) // answerQueued is 0
	}
	if len(lost) > 0 {
		d.log.Warn("batches unanswered by a node taken for dead, settled as queued", zap.String("dead", node), zap.Int("batches", len(lost)))
	}
}
