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

// stampLen is the size of the time stamp at the front of every text: the
// nanoseconds since epoch as 16 lower-case hexadecimal digits, so that the
// text stays valid UTF-8 as the server requires.
const stampLen = 16

const hexDigits = "0123456789abcdef"

// putStamp writes t as stampLen hexadecimal digits at the front of b.
func putStamp(b []byte, t int64) {
	u := uint64(t)
	_ = b[stampLen-1]
	for i := stampLen - 1; i >= 0; i-- {
		b[i] = hexDigits[u&0xf]
		u >>= 4
	}
}

// parseStamp reads the time stamp at the front of a text; ok is false if
// there is none.
func parseStamp(b []byte) (t int64, ok bool) {
	if len(b) < stampLen {
		return 0, false
	}
	var u uint64
	for _, c := range b[:stampLen] {
		switch {
		case c >= '0' && c <= '9':
			u = u<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			u = u<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return int64(u), true
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
