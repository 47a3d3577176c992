package bench

import (
	"math"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// epoch is the origin of the process's time stamps. Stamps are monotonic
// nanoseconds since epoch, so a latency is only meaningful when the stamp
// and the reading are taken in the same process.
var epoch = time.Now()

// now returns the monotonic nanoseconds since epoch.
func now() int64 { return int64(time.Since(epoch)) }

// stampLen is the size of the stamp at the front of every text: the
// sending time, in nanoseconds since epoch, and the sender's sequence
// number of the message, in stampTimeLen and stampSeqLen digits of base
// 64 (ASCII, so that the text stays valid UTF-8 as the server requires).
// The time has 54 bits (208 days), the sequence number 42.
const (
	stampLen     = stampTimeLen + stampSeqLen
	stampTimeLen = 9
	stampSeqLen  = 7
)

const stampDigits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"

// stampValues maps a digit back to its value; 0xff for any other byte.
var stampValues = func() (v [256]byte) {
	for i := range v {
		v[i] = 0xff
	}
	for i := range len(stampDigits) {
		v[stampDigits[i]] = byte(i)
	}
	return v
}()

// putStamp writes time t and sequence number seq as a stamp at the front
// of b.
func putStamp(b []byte, t int64, seq uint64) {
	putDigits(b[:stampTimeLen], uint64(t))
	putDigits(b[stampTimeLen:stampLen], seq)
}

// putSeq replaces the sequence number of the stamp at the front of b.
func putSeq(b []byte, seq uint64) { putDigits(b[stampTimeLen:stampLen], seq) }

func putDigits(b []byte, u uint64) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = stampDigits[u&63]
		u >>= 6
	}
}

// parseStamp reads the stamp at the front of a text; ok is false if there
// is none.
func parseStamp(b []byte) (t int64, seq uint64, ok bool) {
	if len(b) < stampLen {
		return 0, 0, false
	}
	var u, bad uint64
	for _, c := range b[:stampTimeLen] {
		v := stampValues[c]
		bad |= uint64(v)
		u = u<<6 | uint64(v&63)
	}
	for _, c := range b[stampTimeLen:stampLen] {
		v := stampValues[c]
		bad |= uint64(v)
		seq = seq<<6 | uint64(v&63)
	}
	if bad > 63 {
		return 0, 0, false
	}
	return int64(u), seq, true
}

// Histogram geometry: nanoseconds from 1 ns to 100 s, 3 significant digits.
const (
	histLowest  = 1
	histHighest = int64(100 * time.Second)
	histDigits  = 3
)

func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, histDigits)
}

// latencyShards is where the readers of one process record latencies. A
// dense histogram of this range takes about 230 KB, too much to give each
// of 10,000 connections its own; instead each reader collects latencies in
// a small local batch (latencyBatch) and adds the batch to one of a few
// shared histograms under its lock, so locks are taken once per
// batchValues messages and rarely contended. The shards are merged at the
// end.
type latencyShards struct {
	shards []latencyShard
}

type latencyShard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
	_  [48]byte // keep neighbouring locks off one cache line
}

func newLatencyShards(n int) *latencyShards {
	s := &latencyShards{shards: make([]latencyShard, max(n, 1))}
	for i := range s.shards {
		s.shards[i].h = newHistogram()
	}
	return s
}

// merged returns one histogram holding every value recorded. Call it once
// the readers have flushed their batches.
func (s *latencyShards) merged() *hdrhistogram.Histogram {
	h := newHistogram()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		h.Merge(sh.h)
		sh.mu.Unlock()
	}
	return h
}

// batchValues is the number of latencies a reader collects before taking a
// shard's lock.
const batchValues = 256

// latencyBatch is one reader's buffer of latencies not yet recorded.
type latencyBatch struct {
	shard *latencyShard
	n     int
	v     [batchValues]int64
}

func (b *latencyBatch) record(ns int64) {
	b.v[b.n] = ns
	if b.n++; b.n == len(b.v) {
		b.flush()
	}
}

func (b *latencyBatch) flush() {
	if b.n == 0 {
		return
	}
	b.shard.mu.Lock()
	for _, v := range b.v[:b.n] {
		b.shard.h.RecordValue(min(max(v, histLowest), histHighest))
	}
	b.shard.mu.Unlock()
	b.n = 0
}

// Latency is a summary of a latency histogram in microseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

func summarize(h *hdrhistogram.Histogram) Latency {
	if h == nil || h.TotalCount() == 0 {
		return Latency{}
	}
	us := func(ns int64) float64 { return math.Round(float64(ns)/100) / 10 }
	return Latency{
		P50:  us(h.ValueAtQuantile(50)),
		P90:  us(h.ValueAtQuantile(90)),
		P99:  us(h.ValueAtQuantile(99)),
		P999: us(h.ValueAtQuantile(99.9)),
		Max:  us(h.Max()),
	}
}
