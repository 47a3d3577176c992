package bench

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
	"sync/atomic"
)

// Exact accounting. Every message carries its sender's sequence number
// (see putStamp), counted from 0 over the sender's sendto requests. The
// server answers a connection's requests in order, so the k-th RESPONSE a
// sender reads answers its message k: the sender's reader sets bit k of
// its okBits when the answer is Success. The recipient's reader knows the
// sender from the MESSAGE frame's name (Prefix and the sender's global
// index) and sets bit k of the sender's seqSet in its process. At the end
// the bits of every process meet in merge, which counts, message by
// message, those answered Failure yet delivered and those answered
// Success yet never delivered. Memory is one bit per message at each end
// (and a small chunk per sender a process hears from). The hot path is a
// few loads and a bit set: in Pairs and PingPong, where a client hears
// only from its partner, in a bitmap of the recipient's own; otherwise in
// the process's seqSet of the sender, with one atomic OR.

// bitmap is a set of message numbers owned by one goroutine, bit k for
// message k: a sender's record of which of its requests were answered
// Success (only its reader writes it), and in Pairs and PingPong a
// recipient's record of what its partner sent it.
type bitmap []uint64

// add sets bit k and reports whether it was set before.
func (b *bitmap) add(k uint64) (dup bool) {
	w := int(k >> 6)
	for len(*b) <= w {
		*b = append(*b, 0)
	}
	mask := uint64(1) << (k & 63)
	dup = (*b)[w]&mask != 0
	(*b)[w] |= mask
	return dup
}

// seqChunkBits is the size of a seqSet chunk: 4096 messages in 512 bytes.
const (
	seqChunkShift = 12
	seqChunkBits  = 1 << seqChunkShift
	seqChunkWords = seqChunkBits / 64
)

type seqChunk [seqChunkWords]atomic.Uint64

// seqSet is the set of one sender's messages (their sequence numbers)
// received by the clients of one process (but in Pairs and PingPong, see
// client.got). Any reader may add to it at any
// time: the chunks are found through a slice that is replaced, never
// changed, when it grows (under mu), and the bits are set atomically.
type seqSet struct {
	mu     sync.Mutex
	chunks atomic.Pointer[[]*seqChunk]
}

// add records message k and reports whether it was recorded before.
func (s *seqSet) add(k uint64) (dup bool) {
	ci := k >> seqChunkShift
	var c *seqChunk
	if cs := s.chunks.Load(); cs != nil && ci < uint64(len(*cs)) {
		c = (*cs)[ci]
	}
	if c == nil {
		c = s.grow(ci)
	}
	mask := uint64(1) << (k & 63)
	return c[(k>>6)&(seqChunkWords-1)].Or(mask)&mask != 0
}

// grow returns chunk ci, making it (and room for it) if need be.
func (s *seqSet) grow(ci uint64) *seqChunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	var old []*seqChunk
	if cs := s.chunks.Load(); cs != nil {
		old = *cs
	}
	if ci < uint64(len(old)) && old[ci] != nil {
		return old[ci]
	}
	n := uint64(len(old))
	if ci >= n {
		n = max(ci+1, 2*n)
	}
	cs := make([]*seqChunk, n)
	copy(cs, old)
	cs[ci] = new(seqChunk)
	s.chunks.Store(&cs)
	return cs[ci]
}

// words returns the set as a bitmap, bit k for message k, without its
// trailing zero words. Call it once the readers have ended.
func (s *seqSet) words() []uint64 {
	cs := s.chunks.Load()
	if cs == nil {
		return nil
	}
	w := make([]uint64, len(*cs)*seqChunkWords)
	for i, c := range *cs {
		if c == nil {
			continue
		}
		for j := range c {
			w[i*seqChunkWords+j] = c[j].Load()
		}
	}
	for len(w) > 0 && w[len(w)-1] == 0 {
		w = w[:len(w)-1]
	}
	return w
}

// sentLog is what one sender's process knows of its messages.
type sentLog struct {
	sender int    // global index of the client
	acked  uint64 // its requests answered (messages 0 to acked-1)
	ok     []uint64
}

// recvLog is what one process received from one sender.
type recvLog struct {
	sender int
	got    []uint64
}

// accounts is one process's share of the accounting, carried in its part.
type accounts struct {
	sent []sentLog
	recv []recvLog
}

// Tally is the exact accounting of a load's messages, message by message
// over all processes.
type Tally struct {
	// FailedDelivered counts the messages answered Failure that were
	// delivered all the same: the server broke its word; it must be 0.
	FailedDelivered uint64 `json:"failed_delivered"`
	// OKUndelivered counts the messages answered Success that no
	// recipient received (by the end of the drain).
	OKUndelivered uint64 `json:"ok_undelivered"`
	// UnansweredDelivered counts the messages delivered whose request got
	// no answer by the end (the drain ran out).
	UnansweredDelivered uint64 `json:"unanswered_delivered,omitempty"`
	// Duplicates counts messages received more than once.
	Duplicates uint64 `json:"duplicates"`
	// Strays counts messages received from no client of the load, or
	// without a well-formed stamp.
	Strays uint64 `json:"strays,omitempty"`
}

// tally merges the accounts of every process of a load of clients
// clients and counts.
func tally(clients int, parts []*part) Tally {
	var t Tally
	ok := make([][]uint64, clients)
	acked := make([]uint64, clients)
	got := make([][]uint64, clients)
	for _, p := range parts {
		t.Duplicates += p.Duplicates
		t.Strays += p.Strays
		if p.acct == nil {
			continue
		}
		for _, s := range p.acct.sent {
			if s.sender >= 0 && s.sender < clients {
				ok[s.sender], acked[s.sender] = s.ok, s.acked
			}
		}
		for _, r := range p.acct.recv {
			if r.sender < 0 || r.sender >= clients {
				continue
			}
			g := got[r.sender]
			if g == nil {
				got[r.sender] = r.got
				continue
			}
			// Two processes heard from this sender: each message once
			// in all, or a duplicate.
			if len(g) < len(r.got) {
				g, r.got = r.got, g
			}
			g = append([]uint64(nil), g...)
			for i, w := range r.got {
				t.Duplicates += uint64(bits.OnesCount64(g[i] & w))
				g[i] |= w
			}
			got[r.sender] = g
		}
	}
	for s := range clients {
		o, g, n := ok[s], got[s], acked[s]
		for i := range max(len(o), len(g)) {
			var ow, gw uint64
			if i < len(o) {
				ow = o[i]
			}
			if i < len(g) {
				gw = g[i]
			}
			answered := wordsBelow(i, n) // messages answered, in word i
			t.FailedDelivered += uint64(bits.OnesCount64(gw &^ ow & answered))
			t.OKUndelivered += uint64(bits.OnesCount64(ow &^ gw & answered))
			t.UnansweredDelivered += uint64(bits.OnesCount64(gw &^ answered))
		}
	}
	return t
}

// wordsBelow returns the bits of word i that stand for messages below n.
func wordsBelow(i int, n uint64) uint64 {
	lo := uint64(i) * 64
	switch {
	case n <= lo:
		return 0
	case n >= lo+64:
		return ^uint64(0)
	default:
		return 1<<(n-lo) - 1
	}
}

// The accounts travel from a child as one flate-compressed stream of
// unsigned varints: the number of sentLogs, then each as sender, acked,
// the number of words and the words; the same for the recvLogs, without
// acked. Runs of all ones or all zeros, the common case, shrink to
// almost nothing.

var errBadAccounts = errors.New("bad accounts")

func (a *accounts) encode() ([]byte, error) {
	var buf bytes.Buffer
	zw, err := flate.NewWriter(&buf, flate.BestSpeed)
	if err != nil {
		return nil, err
	}
	var tmp [binary.MaxVarintLen64]byte
	put := func(v uint64) { zw.Write(tmp[:binary.PutUvarint(tmp[:], v)]) }
	words := func(w []uint64) {
		put(uint64(len(w)))
		var b [8]byte
		for _, x := range w {
			binary.LittleEndian.PutUint64(b[:], x)
			zw.Write(b[:])
		}
	}
	put(uint64(len(a.sent)))
	for _, s := range a.sent {
		put(uint64(s.sender))
		put(s.acked)
		words(s.ok)
	}
	put(uint64(len(a.recv)))
	for _, r := range a.recv {
		put(uint64(r.sender))
		words(r.got)
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func decodeAccounts(b []byte) (*accounts, error) {
	zr := flate.NewReader(bytes.NewReader(b))
	defer zr.Close()
	br := bufio.NewReader(zr)
	var err error
	get := func() uint64 {
		if err != nil {
			return 0
		}
		var v uint64
		v, err = binary.ReadUvarint(br)
		return v
	}
	words := func() []uint64 {
		n := get()
		if err != nil || n > 1<<40 {
			err = errors.Join(err, errBadAccounts)
			return nil
		}
		w := make([]uint64, 0, min(n, 1<<16))
		var b [8]byte
		for range n {
			if _, err = io.ReadFull(br, b[:]); err != nil {
				return nil
			}
			w = append(w, binary.LittleEndian.Uint64(b[:]))
		}
		return w
	}
	a := &accounts{}
	for range get() {
		s := sentLog{sender: int(get()), acked: get()}
		s.ok = words()
		if err != nil {
			break
		}
		a.sent = append(a.sent, s)
	}
	for n := get(); err == nil && n > 0; n-- {
		r := recvLog{sender: int(get())}
		r.got = words()
		a.recv = append(a.recv, r)
	}
	if err != nil {
		return nil, fmt.Errorf("decoding the accounts: %w", err)
	}
	return a, nil
}
