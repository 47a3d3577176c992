package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/seedchat/chat"
)

// Messages for users of other nodes travel in batches, one NATS message per
// destination node for everything this node has gathered for it since its
// last send; the destination answers each batch with one NATS message
// holding every delivery's outcome.
//
// # Flow
//
// A sendto to a user of another node hands the message to that user's
// remotePeer, whose Deliver appends it to the gathering batch of the
// destination node's link and answers chat.ErrPending: the sending
// connection goes on with its next requests, its reply waiting in order
// (chat.Receipt). When the connection has handled what it read, the server
// calls Flush, which publishes the batch gathered by then (NATS's client
// writes it on its own goroutine), so the messages of every connection that
// wrote to that node meanwhile travel together. A batch that would outgrow
// maxBatch is sent at once. Publishing holds the link's lock, so batches
// leave in the order of their sequence numbers.
//
// The destination node's handler (NATS calls it for one batch at a time,
// in the order they arrive) queues each message for its user, has the
// users' connections write them, and answers. The answer settles the
// receipts, in the order of the batch.
//
// # Guarantees
//
//   - Success: the recipient's server queued the message for the very login
//     it was addressed to. Each item carries the recipient's token, the
//     revision of its key in the bucket; a user who has logged out, or in
//     again, since has another, and the item is refused. A node refuses
//     every item while it is fenced (lease.go). A batch still unanswered
//     when its node is taken for dead counts as queued and lost with that
//     node, whose users' sessions have ended (status.go).
//   - Failure: not queued, and never will be. An answer that does not come
//     within Timeout is asked for (status.go), and the question fences. A
//     batch nobody subscribes for (a dead node) is answered by NATS at once
//     ("no responders"), and fails then. A batch also carries a deadline,
//     its sending time plus Timeout, after which it is refused whole; this
//     assumes the nodes' wall clocks agree within Timeout (NTP keeps them
//     within milliseconds), the one rule of the cluster that does.
//   - Order: batches from one node to another carry increasing sequence
//     numbers, and a node refuses a batch whose number is not above the last
//     it accepted from that sender. One sender's messages to one recipient
//     travel on one link, in order, so a batch lost, or overtaken after a
//     reconnection to another NATS server, never lets a later message in
//     before an earlier one: the earlier fails instead.
//
// # Layout
//
// All integers are big-endian. A batch, on subject PREFIX.deliver.NODE with
// reply subject PREFIX.ack.SENDER.INSTANCE.SEQ:
//
//	version     1 byte, batchVersion
//	sender      1 byte length, then the sending node's name
//	instance    8 bytes, the sending process's random id (0 is none)
//	seq         8 bytes, the batch's sequence number, from 1
//	settled     8 bytes: every earlier batch from this process to this node
//	            below this sequence number is settled (status.go)
//	deadline    8 bytes, Unix nanoseconds: queue nothing after this
//	items       until the end, each:
//	  token     8 bytes, the revision of the recipient's key
//	  to, from  1 byte length each (names are at most 80 bytes), then
//	            the recipient's and the sender's names
//	  text      4 bytes length, then the text
//
// The answer is one byte per item, in order: answerQueued, answerFull,
// answerGone or answerLate. An answer of another length, or a batch that
// does not parse, fails the whole batch; a batch that does not parse gets
// no answer.

const batchVersion = 1

// maxBatch is the size at which a batch is sent without waiting for Flush,
// well within NATS's default payload limit of 1 MiB.
const maxBatch = 256 << 10

// Answers to one delivery.
const (
	answerQueued byte = iota
	answerFull
	answerGone
	answerLate
)

// batchHeader is the fixed part of a batch, before the sender's name.
type batchHeader struct {
	sender   string
	instance uint64
	seq      uint64
	settled  uint64
	deadline time.Time
}

// appendSender encodes the start of a batch or a question: the version,
// and who sends it.
func appendSender(b []byte, sender string, instance uint64) []byte {
	b = append(b, batchVersion, byte(len(sender)))
	b = append(b, sender...)
	return binary.BigEndian.AppendUint64(b, instance)
}

// parseSender decodes what appendSender encodes, and returns the rest.
func parseSender(b []byte) (sender string, instance uint64, rest []byte, err error) {
	if len(b) < 2 || b[0] != batchVersion || len(b) < 2+int(b[1])+8 {
		return "", 0, nil, errBadBatch
	}
	n := int(b[1])
	return string(b[2 : 2+n]), binary.BigEndian.Uint64(b[2+n:]), b[2+n+8:], nil
}

// appendHeader encodes a batch's header.
func appendHeader(b []byte, h batchHeader) []byte {
	b = appendSender(b, h.sender, h.instance)
	b = binary.BigEndian.AppendUint64(b, h.seq)
	b = binary.BigEndian.AppendUint64(b, h.settled)
	return binary.BigEndian.AppendUint64(b, uint64(h.deadline.UnixNano()))
}

// appendItem encodes one delivery of a batch.
func appendItem(b []byte, token uint64, to, from string, text []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, token)
	b = append(b, byte(len(to)), byte(len(from)))
	b = append(b, to...)
	b = append(b, from...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(text)))
	return append(b, text...)
}

// itemSize is the size of an encoded item.
func itemSize(to, from string, text []byte) int { return 8 + 2 + len(to) + len(from) + 4 + len(text) }

var errBadBatch = errors.New("cluster: malformed batch")

// parseHeader decodes a batch's header, and returns the items after it.
func parseHeader(b []byte) (batchHeader, []byte, error) {
	sender, instance, b, err := parseSender(b)
	if err != nil || len(b) < 24 {
		return batchHeader{}, nil, errBadBatch
	}
	h := batchHeader{sender: sender, instance: instance, seq: binary.BigEndian.Uint64(b), settled: binary.BigEndian.Uint64(b[8:])}
	h.deadline = time.Unix(0, int64(binary.BigEndian.Uint64(b[16:])))
	return h, b[24:], nil
}

// nextItem decodes the first item of b, and returns the rest.
func nextItem(b []byte) (token uint64, to, from, text, rest []byte, err error) {
	if len(b) < 10 {
		return 0, nil, nil, nil, nil, errBadBatch
	}
	token = binary.BigEndian.Uint64(b)
	nt, nf := int(b[8]), int(b[9])
	b = b[10:]
	if len(b) < nt+nf+4 {
		return 0, nil, nil, nil, nil, errBadBatch
	}
	to, from = b[:nt], b[nt:nt+nf]
	b = b[nt+nf:]
	nx := binary.BigEndian.Uint32(b)
	b = b[4:]
	if uint64(len(b)) < uint64(nx) {
		return 0, nil, nil, nil, nil, errBadBatch
	}
	return token, to, from, b[:nx], b[nx:], nil
}

// countItems returns the number of items in b, or an error if b does not
// parse whole.
func countItems(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		_, _, _, _, rest, err := nextItem(b)
		if err != nil {
			return 0, err
		}
		b = rest
		n++
	}
	return n, nil
}

// link gathers the messages for one other node.
type link struct {
	d       *Directory
	node    string
	subject string

	mu sync.Mutex // held while a batch is published, which keeps them in order
	b  *batch     // the batch gathering, or nil

	// Guarded by Directory.sentMu.
	asking bool     // an asker is at work for the link's late batches
	open   []*batch // sent and not all settled, in order
}

// batch is a batch of messages for one node, and the receipts of its
// messages.
type batch struct {
	link     *link
	items    []byte // the header's room, then the encoded items
	receipts []chat.Receipt
	seq      uint64
	sentAt   time.Time
	to       string // the destination's process, from its lease when sent; "" if unknown
	done     bool   // settled; guarded by Directory.sentMu
}

// itemBufs and receiptBufs hold the buffers of batches sent and settled,
// for new batches.
var (
	itemBufs    = sync.Pool{New: func() any { return make([]byte, 0, 4<<10) }}
	receiptBufs = sync.Pool{New: func() any { return make([]chat.Receipt, 0, 64) }}
)

// newBatch starts a batch for l, with room for the header.
func newBatch(l *link) *batch {
	buf := itemBufs.Get().([]byte)
	rs := receiptBufs.Get().([]chat.Receipt)
	return &batch{link: l, items: append(buf, make([]byte, l.d.headerSize)...), receipts: rs}
}

// deliver appends a message for the user to, whose login has token, to
// the gathering batch; a batch grown to maxBatch is sent at once.
func (l *link) deliver(token uint64, to, from string, text []byte, r chat.Receipt) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b != nil && len(l.b.items)+itemSize(to, from, text) > maxBatch {
		l.sendLocked()
	}
	if l.b == nil {
		l.b = newBatch(l)
	}
	l.b.items = appendItem(l.b.items, token, to, from, text)
	l.b.receipts = append(l.b.receipts, r)
}

// flush sends the gathering batch, if any.
func (l *link) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sendLocked()
}

// sendLocked publishes the gathering batch, to be settled by its answer, or
// by asking for it if the answer is late (status.go). l.mu is held.
func (l *link) sendLocked() {
	b := l.b
	if b == nil {
		return
	}
	l.b = nil
	d := l.d
	now := time.Now()
	d.mu.RLock()
	b.to = d.leases[l.node].instance
	d.mu.RUnlock()
	d.sentMu.Lock()
	d.seq++
	b.seq, b.sentAt = d.seq, now
	d.sent[b.seq] = b
	settled := b.seq // below which every batch of the link is settled
	if len(l.open) > 0 {
		settled = l.open[0].seq
	}
	l.open = append(l.open, b)
	d.sentMu.Unlock()

	h := batchHeader{sender: d.cfg.Node, instance: d.instanceID, seq: b.seq, settled: settled, deadline: now.Add(d.cfg.Timeout)}
	appendHeader(b.items[:0], h) // into the room left for it
	err := d.nc.PublishMsg(&nats.Msg{Subject: l.subject, Reply: d.ackPrefix + strconv.FormatUint(b.seq, 10), Data: b.items})
	if err != nil {
		d.settle(b.seq, nil, fmt.Errorf("%w: node %s: %v", chat.ErrUnavailable, l.node, err))
	}
}

// handleAnswer settles a batch with the answer of its destination node, or
// with NATS's word that nobody subscribes for it.
func (d *Directory) handleAnswer(m *nats.Msg) {
	seq, err := strconv.ParseUint(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:], 10, 64)
	if err != nil {
		return
	}
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		d.settle(seq, nil, fmt.Errorf("%w: the node is not running: %w", chat.ErrUnavailable, nats.ErrNoResponders))
		return
	}
	d.settle(seq, m.Data, nil)
}

// settle settles the receipts of the batch seq: with the answers, or all
// with err. A batch settled already (after a question, or as lost with a
// dead node) is left alone.
func (d *Directory) settle(seq uint64, answers []byte, err error) {
	d.sentMu.Lock()
	b := d.sent[seq]
	delete(d.sent, seq)
	if b != nil {
		b.done = true
		l := b.link
		k := 0
		for k < len(l.open) && l.open[k].done {
			l.open[k] = nil
			k++
		}
		l.open = l.open[k:]
	}
	d.sentMu.Unlock()
	if b == nil {
		return
	}
	if err == nil && len(answers) != len(b.receipts) {
		err = fmt.Errorf("%w: node %s: bad answer", chat.ErrUnavailable, b.link.node)
	}
	if err != nil {
		d.log.Debug("batch failed", zap.String("to", b.link.node), zap.Int("messages", len(b.receipts)), zap.Error(err))
	}
	if err == nil && bytes.IndexByte(answers, answerGone) >= 0 {
		// A recipient had left that node: it may be logged in anew, on
		// another node or this one. Rare; the others are settled now, those
		// off this goroutine.
		var rs []chat.Receipt
		var idx []int
		for i, a := range answers {
			if a != answerGone {
				rs, idx = append(rs, b.receipts[i]), append(idx, i)
			}
		}
		chat.Settle(rs, func(j int) error { return answerError(answers[idx[j]], b.link.node) })
		d.askers.Add(1)
		go d.redeliver(b, answers)
		return
	}
	chat.Settle(b.receipts, func(i int) error {
		if err != nil {
			return err
		}
		return answerError(answers[i], b.link.node)
	})
	d.recycle(b)
}

// recycle returns a settled batch's buffers.
func (d *Directory) recycle(b *batch) {
	if cap(b.items) <= maxBatch+maxBatch/4 {
		itemBufs.Put(b.items[:0])
	}
	if cap(b.receipts) <= 4096 {
		clear(b.receipts)
		receiptBufs.Put(b.receipts[:0])
	}
	b.items, b.receipts = nil, nil
}

// redeliver settles the messages of b that its node answered gone: each is
// delivered again to its recipient's current login, if that login is not
// the one the message was addressed to, and otherwise settled as gone.
func (d *Directory) redeliver(b *batch, answers []byte) {
	defer d.askers.Done()
	defer d.recycle(b)
	items := b.items[d.headerSize:]
	for i := 0; len(items) > 0; i++ {
		token, to, from, text, rest, _ := nextItem(items)
		items = rest
		if answers[i] != answerGone {
			continue
		}
		r := b.receipts[i]
		p, newToken, ok := d.current(string(to))
		if !ok || newToken == token {
			r.Done(chat.ErrPeerGone)
			continue
		}
		switch err := p.Deliver(string(from), text, r); err {
		case chat.ErrPending:
			p.Flush()
		case nil:
			r.Done(nil)
			p.Flush()
		default:
			r.Done(err)
		}
	}
}

// current returns the peer of name's current login, and its token, reading
// the bucket itself rather than the copy.
func (d *Directory) current(name string) (chat.Peer, uint64, bool) {
	d.mu.RLock()
	u := d.local[name]
	if u != nil && u.leaving {
		u = nil // its key is being deleted: the bucket says what follows
	}
	var p chat.Peer
	var rev uint64
	if u != nil {
		p, rev = u.peer, u.rev
	}
	d.mu.RUnlock()
	if u != nil {
		return p, rev, rev != 0
	}
	q, ok := d.lookupBucket(name)
	if rp, remote := q.(*remotePeer); ok && remote {
		return rp, rp.token, true
	}
	return nil, 0, false
}

// answerError is the outcome of one delivery the destination node answered.
func answerError(a byte, node string) error {
	switch a {
	case answerQueued:
		return nil
	case answerFull:
		return chat.ErrQueueFull
	case answerGone:
		return chat.ErrPeerGone
	case answerLate:
		return errRefused(node)
	}
	return fmt.Errorf("%w: node %s: bad answer", chat.ErrUnavailable, node)
}

// waiting returns the number of messages sent to other nodes and not
// answered yet.
func (d *Directory) waiting() int {
	d.sentMu.Lock()
	defer d.sentMu.Unlock()
	n := 0
	for _, b := range d.sent {
		n += len(b.receipts)
	}
	return n
}

// failAll settles every batch, sent or gathered, as failed: the Directory
// is closing.
func (d *Directory) failAll() {
	err := fmt.Errorf("%w: the node left the cluster", chat.ErrUnavailable)
	d.linksMu.Lock()
	links := slices.Collect(maps.Values(d.links))
	d.linksMu.Unlock()
	for _, l := range links {
		l.mu.Lock()
		b := l.b
		l.b = nil
		l.mu.Unlock()
		if b != nil {
			for _, r := range b.receipts {
				r.Done(err) // never sent
			}
		}
	}
	d.sentMu.Lock()
	seqs := make([]uint64, 0, len(d.sent))
	for seq := range d.sent {
		seqs = append(seqs, seq)
	}
	d.sentMu.Unlock()
	for _, seq := range seqs {
		d.settle(seq, nil, err)
	}
}

// remotePeer is a user logged in on another node, under the login whose
// key has revision token.
type remotePeer struct {
	link  *link
	name  string
	token uint64
}

// Deliver implements chat.Peer: it gathers the message into the batch for
// the user's node.
func (p *remotePeer) Deliver(from string, text []byte, r chat.Receipt) error {
	if !p.link.d.reachable() {
		return errOffline
	}
	p.link.deliver(p.token, p.name, from, text, r)
	return chat.ErrPending
}

// Flush implements chat.Peer: it sends the batch.
func (p *remotePeer) Flush() { p.link.flush() }

// offlinePeer is the peer of users on other nodes while this node is
// offline.
type offlinePeer struct{ err error }

func (p offlinePeer) Deliver(string, []byte, chat.Receipt) error {
	if p.err != nil {
		return p.err
	}
	return errOffline
}

func (offlinePeer) Flush() {}

// handleBatch queues the messages of a batch from another node for the
// users of this one, and answers with their outcomes. NATS calls it for one
// batch at a time, in the order they arrive.
func (d *Directory) handleBatch(m *nats.Msg) {
	h, items, err := parseHeader(m.Data)
	if err != nil {
		d.log.Warn("malformed batch", zap.String("subject", m.Subject))
		return
	}
	count, err := countItems(items)
	if err != nil {
		d.log.Warn("malformed batch", zap.String("from", h.sender))
		return
	}
	answers := make([]byte, 0, count)
	// A fenced node refuses the whole batch (lease.go), as one past its
	// deadline.
	var oc *outcome
	if d.leaseValid() && !time.Now().After(h.deadline) {
		oc = d.accept(h.instance, h.seq, h.settled) // nil if overtaken, or fenced by a question
	}
	touched := d.touched
	var sender string
	for len(items) > 0 {
		token, to, from, text, rest, _ := nextItem(items) // checked by countItems
		items = rest
		if oc == nil {
			answers = append(answers, answerLate)
			continue
		}
		var peer chat.Peer
		d.mu.RLock()
		if u := d.local[string(to)]; u.serving() && u.rev == token {
			peer = u.peer
		}
		d.mu.RUnlock()
		if peer == nil {
			answers = append(answers, answerGone)
			continue
		}
		if string(from) != sender { // consecutive items often share a sender
			sender = string(from)
		}
		switch err := peer.Deliver(sender, text, chat.Receipt{}); {
		case err == nil:
			answers = append(answers, answerQueued)
			if len(touched) == 0 || touched[len(touched)-1] != peer {
				touched = append(touched, peer)
			}
		case errors.Is(err, chat.ErrQueueFull):
			answers = append(answers, answerFull)
		default:
			answers = append(answers, answerGone)
		}
	}
	d.touched = touched
	if oc != nil {
		d.answered(oc, answers)
	}
	if m.Reply != "" {
		d.nc.Publish(m.Reply, answers)
	}
	// The messages are queued, not written yet: the batches waiting behind
	// this one are handled first, and their messages written together.
	// (NATS counts the batch being handled among the pending ones until the
	// handler returns.)
	d.unwritten++
	if n, _, _ := d.batchSub.Pending(); n > 1 && d.unwritten < maxUnwritten {
		return
	}
	d.writeQueued()
}

// maxUnwritten is the most batches handled before their messages are
// written.
const maxUnwritten = 16

// writeQueued has the messages of the batches handled so far written to
// their recipients. Their answers may still be on their way: if they are
// lost, this node remembers them and their senders ask (status.go); if this
// node dies first, its senders count them as queued.
func (d *Directory) writeQueued() {
	d.unwritten = 0
	for i, p := range d.touched {
		p.Flush()
		d.touched[i] = nil
	}
	d.touched = d.touched[:0]
}
