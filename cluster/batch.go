package cluster

import (
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
//     every item while it is fenced (lease.go). A batch whose answer was
//     lost, and whose node is then taken for dead, counts as queued and
//     lost with that node (answers.go).
//   - Failure: not queued, and never will be. A batch carries a deadline, its
//     sending time plus Config.Timeout; one that arrives later is refused
//     whole. A batch unanswered after 3*Timeout is asked about again
//     (answers.go) until its destination answers, or is taken for dead:
//     Failure is given only for what the destination refused, or never
//     received. This assumes the nodes' wall clocks agree within Timeout
//     (NTP keeps them within milliseconds): the one place where wall clocks
//     must agree. A batch nobody subscribes for (a dead node) is answered
//     by NATS at once ("no responders"), and fails then.
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
//	instance    8 bytes, the sending process's random id
//	seq         8 bytes, the batch's sequence number, from 1
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
	deadline time.Time
}

// appendHeader encodes a batch's header.
func appendHeader(b []byte, h batchHeader) []byte {
	b = append(b, batchVersion, byte(len(h.sender)))
	b = append(b, h.sender...)
	b = binary.BigEndian.AppendUint64(b, h.instance)
	b = binary.BigEndian.AppendUint64(b, h.seq)
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
	if len(b) < 2 || b[0] != batchVersion {
		return batchHeader{}, nil, errBadBatch
	}
	n := int(b[1])
	if len(b) < 2+n+24 {
		return batchHeader{}, nil, errBadBatch
	}
	h := batchHeader{sender: string(b[2 : 2+n])}
	b = b[2+n:]
	h.instance = binary.BigEndian.Uint64(b)
	h.seq = binary.BigEndian.Uint64(b[8:])
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
}

// batch is a batch of messages for one node, and the receipts of its
// messages.
type batch struct {
	link     *link
	items    []byte // the header's room, then the encoded items
	receipts []chat.Receipt
	seq      uint64
	sentAt   time.Time
	timer    *time.Timer
	queries  int // asked again for its answer (answers.go), on timer's goroutine
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
		l.b = &batch{link: l, items: make([]byte, l.d.headerSize, 4<<10)}
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

// sendLocked publishes the gathering batch, and has it settled by its
// answer or, after 3*Timeout without one, as failed. l.mu is held.
func (l *link) sendLocked() {
	b := l.b
	if b == nil {
		return
	}
	l.b = nil
	d := l.d
	now := time.Now()
	d.sentMu.Lock()
	d.seq++
	b.seq, b.sentAt = d.seq, now
	d.sent[b.seq] = b
	// The answer may come any time after the publish; so may the timer.
	b.timer = time.AfterFunc(3*d.cfg.Timeout, func() { d.noAnswer(b) }) // answers.go
	d.sentMu.Unlock()

	h := batchHeader{sender: d.cfg.Node, instance: d.instanceID, seq: b.seq, deadline: now.Add(d.cfg.Timeout)}
	appendHeader(b.items[:0], h) // into the room left for it
	msg := b.items
	b.items = nil
	err := d.nc.PublishMsg(&nats.Msg{Subject: l.subject, Reply: d.ackPrefix + strconv.FormatUint(b.seq, 10), Data: msg})
	if err != nil {
		d.settle(b.seq, nil, fmt.Errorf("%w: node %s: %v", chat.ErrUnavailable, l.node, err))
	}
}

var errNoAnswer = fmt.Errorf("%w: no answer in time (the message may have been delivered)", chat.ErrUnavailable)

// handleAnswer settles a batch with the answer of its destination node, or
// with NATS's word that nobody subscribes for it.
func (d *Directory) handleAnswer(m *nats.Msg) {
	tail := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	tail, query := strings.CutPrefix(tail, "q") // answers.go
	seq, err := strconv.ParseUint(tail, 10, 64)
	if err != nil {
		return
	}
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		if query {
			return // asked again later, and failed after maxQueries
		}
		d.settle(seq, nil, fmt.Errorf("%w: the node is not running: %w", chat.ErrUnavailable, nats.ErrNoResponders))
		return
	}
	d.settle(seq, m.Data, nil)
}

// settle settles the receipts of the batch seq: with the answers, or all
// with err. A batch settled already (by its timer, say) is left alone.
func (d *Directory) settle(seq uint64, answers []byte, err error) {
	d.sentMu.Lock()
	b := d.sent[seq]
	delete(d.sent, seq)
	d.sentMu.Unlock()
	if b == nil {
		return
	}
	b.timer.Stop()
	if err == nil && len(answers) != len(b.receipts) {
		err = fmt.Errorf("%w: node %s: bad answer", chat.ErrUnavailable, b.link.node)
	}
	if err != nil {
		d.log.Debug("batch failed", zap.String("to", b.link.node), zap.Int("messages", len(b.receipts)), zap.Error(err))
		for _, r := range b.receipts {
			r.Done(err)
		}
		return
	}
	for i, r := range b.receipts {
		r.Done(answerError(answers[i], b.link.node))
	}
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
		return fmt.Errorf("%w: node %s: the message came too late to be queued", chat.ErrUnavailable, node)
	}
	return fmt.Errorf("%w: node %s: bad answer", chat.ErrUnavailable, node)
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

// received is the last batch accepted from one sending node.
type received struct {
	instance uint64
	seq      uint64
}

// handleBatch queues the messages of a batch from another node for the
// users of this one, and answers with their outcomes. NATS calls it for one
// batch at a time, in the order they arrive.
func (d *Directory) handleBatch(m *nats.Msg) {
	if len(m.Data) > 0 && m.Data[0] == queryVersion {
		d.handleQuery(m) // answers.go
		return
	}
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
	// A fenced node refuses the whole batch (lease.go).
	late := !d.leaseValid() || time.Now().After(h.deadline)
	if last, ok := d.lastBatch[h.sender]; ok && last.instance == h.instance && h.seq <= last.seq {
		late = true // overtaken by a later batch: refused, to keep the order
	} else if !late {
		d.lastBatch[h.sender] = received{h.instance, h.seq}
	}
	touched := d.touched[:0]
	var sender string
	for len(items) > 0 {
		token, to, from, text, rest, _ := nextItem(items) // checked by countItems
		items = rest
		if late {
			answers = append(answers, answerLate)
			continue
		}
		var peer chat.Peer
		d.mu.RLock()
		if u := d.local[string(to)]; u != nil && u.rev == token && !u.leaving {
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
	for i, p := range touched {
		p.Flush()
		touched[i] = nil
	}
	d.touched = touched[:0]
	d.remember(h, answers) // answers.go
	if m.Reply != "" {
		d.nc.Publish(m.Reply, answers)
	}
}
