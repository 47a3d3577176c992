package bench

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/seedchat/chat"
)

// bitsOf returns the bitmap with bit k set for each k in ks.
func bitsOf(ks ...uint64) []uint64 {
	var b bitmap
	for _, k := range ks {
		b.add(k)
	}
	return b
}

// seqRange returns from, from+1, ..., to-1.
func seqRange(from, to uint64) []uint64 {
	var ks []uint64
	for k := from; k < to; k++ {
		ks = append(ks, k)
	}
	return ks
}

// TestTally merges hand-made accounts, with the sender of a message and its
// recipient in different processes, carried through a child's report.
func TestTally(t *testing.T) {
	for _, tc := range []struct {
		name  string
		parts []*accounts
		dups  uint64 // reported by the processes themselves
		want  Tally
	}{
		{
			name: "all agree",
			parts: []*accounts{
				{sent: []sentLog{{sender: 0, acked: 100, ok: bitsOf(seqRange(0, 100)...)}}},
				{recv: []recvLog{{sender: 0, got: bitsOf(seqRange(0, 100)...)}}},
			},
		},
		{
			// 0-99 sent; 10 and 70 answered Failure, 70 delivered anyway;
			// 20 and 99 answered Success, never delivered.
			name: "both kinds across processes",
			parts: []*accounts{
				{sent: []sentLog{{sender: 1, acked: 100, ok: bitsOf(append(seqRange(0, 10), append(seqRange(11, 70), seqRange(71, 100)...)...)...)}}},
				{recv: []recvLog{{sender: 1, got: bitsOf(append(append(seqRange(0, 10), seqRange(11, 20)...), seqRange(21, 99)...)...)}}},
			},
			want: Tally{FailedDelivered: 1, OKUndelivered: 2},
		},
		{
			// Sender 0 got 3 answers of 5; message 4, unanswered, arrived.
			name: "unanswered",
			parts: []*accounts{
				{sent: []sentLog{{sender: 0, acked: 3, ok: bitsOf(0, 1, 2)}, {sender: 1}}},
				{recv: []recvLog{{sender: 0, got: bitsOf(0, 1, 2, 4)}}},
			},
			want: Tally{UnansweredDelivered: 1},
		},
		{
			// Two processes both received message 65 of sender 2; one of
			// them counted a duplicate of its own.
			name: "duplicates",
			parts: []*accounts{
				{sent: []sentLog{{sender: 2, acked: 200, ok: bitsOf(seqRange(0, 200)...)}}, recv: []recvLog{{sender: 2, got: bitsOf(seqRange(0, 100)...)}}},
				{recv: []recvLog{{sender: 2, got: bitsOf(seqRange(65, 200)...)}}},
			},
			dups: 1,
			want: Tally{Duplicates: 1 + 35},
		},
		{
			// A Failure in the last word, past the bitmap of Success.
			name: "failures at the end",
			parts: []*accounts{
				{sent: []sentLog{{sender: 0, acked: 130, ok: bitsOf(seqRange(0, 64)...)}}},
				{recv: []recvLog{{sender: 0, got: bitsOf(append(seqRange(0, 64), 129)...)}}},
			},
			want: Tally{FailedDelivered: 1},
		},
		{
			name: "no accounts",
			want: Tally{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var parts []*part
			for i, a := range tc.parts {
				p := &part{acct: a}
				if i == 0 {
					p.Duplicates = tc.dups
				}
				if err := p.encode(); err != nil {
					t.Fatal(err)
				}
				p.acct = nil
				if err := p.decode(); err != nil {
					t.Fatal(err)
				}
				parts = append(parts, p)
			}
			if got := tally(3, parts); got != tc.want {
				t.Errorf("tally %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := decodeAccounts([]byte("not flate")); err == nil {
		t.Error("decoded bad accounts")
	}
}

// TestSeqSet adds from several goroutines across chunks and checks the
// bitmap and the duplicates.
func TestSeqSet(t *testing.T) {
	var s seqSet
	if s.words() != nil {
		t.Error("an empty set has words")
	}
	const n = 3*seqChunkBits + 17
	var dups atomic.Int64
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			// Goroutine g adds every k ≡ g (mod 4), and goroutine 0
			// adds each multiple of 1000 a second time.
			for k := uint64(g); k < n; k += 4 {
				if s.add(k) {
					dups.Add(1)
				}
				if g == 0 && k%1000 == 0 && !s.add(k) {
					t.Errorf("%d added twice, not seen as a duplicate", k)
				}
			}
		})
	}
	wg.Wait()
	if dups.Load() != 0 {
		t.Errorf("%d duplicates", dups.Load())
	}
	w := s.words()
	if want := bitsOf(seqRange(0, n)...); fmt.Sprint(w) != fmt.Sprint(want) {
		t.Errorf("words %x, want %x", w, want)
	}
	// The room for chunks grows with the messages, not faster.
	var seq seqSet
	for ci := range uint64(20) {
		seq.add(ci*seqChunkBits + 5)
		if n := len(*seq.chunks.Load()); n > 2*int(ci+1) {
			t.Fatalf("room for %d chunks after chunk %d", n, ci)
		}
	}
	// A far message leaves the chunks between unmade.
	var far seqSet
	far.add(10 * seqChunkBits)
	if w := far.words(); len(w) != 10*seqChunkWords+1 || w[len(w)-1] != 1 {
		t.Errorf("far: %d words, last %x", len(w), w[len(w)-1])
	}
}

// TestRunRefused has the server refuse every third message of each
// sender: the refused ones are counted as failures, and the accounting
// finds every Success delivered and no Failure delivered.
func TestRunRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"pairs", Config{Clients: 4, Mode: Pairs, Window: 8, Messages: 4 * 300}},
		{"random", Config{Clients: 4, Mode: Random, Window: 8, Messages: 4 * 300}},
		{"pairs 2 procs", Config{Clients: 4, Mode: Pairs, Window: 8, Messages: 4 * 300, Procs: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fastChildExit(t)
			var relayed atomic.Uint64
			srv := &chat.Server{
				AllowMessage: func(from, to, text string) error {
					if _, seq, ok := parseStamp([]byte(text)); ok && seq%3 == 1 {
						return errors.New("refused")
					}
					return nil
				},
				OnMessage: func(from, to, text string) { relayed.Add(1) },
			}
			cfg := tc.cfg
			cfg.Addr = serve(t, srv)
			res := run(t, cfg)
			// Each client sends 300: 100 of them refused.
			if res.Sent != 1200 || res.OK != 800 || res.Failures != 400 || res.DeliveredTotal != 800 || relayed.Load() != 800 {
				t.Errorf("sent %d, ok %d, failures %d, delivered %d, relayed %d; want 1200, 800, 400, 800, 800",
					res.Sent, res.OK, res.Failures, res.DeliveredTotal, relayed.Load())
			}
			if res.Tally != (Tally{}) {
				t.Errorf("accounting %+v, want all zero", res.Tally)
			}
		})
	}
}

// TestRunLiar runs against a server that breaks its word: of each
// connection's sendto requests it delivers some answered Failure and
// drops some answered Success, as many of one as of the other, so that
// the totals balance (ok = delivered) and only counting message by
// message finds them.
func TestRunLiar(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run(fmt.Sprint("procs ", procs), func(t *testing.T) {
			fastChildExit(t)
			addr := serveLiar(t)
			res := run(t, Config{Addr: addr, Clients: 4, Mode: Pairs, Window: 8, Messages: 4 * 100, Procs: procs})
			if res.Sent != 400 || res.OK != 200 || res.Failures != 200 || res.DeliveredTotal != 200 {
				t.Errorf("sent %d, ok %d, failures %d, delivered %d; want 400, 200, 200, 200", res.Sent, res.OK, res.Failures, res.DeliveredTotal)
			}
			if want := (Tally{FailedDelivered: 100, OKUndelivered: 100}); res.Tally != want {
				t.Errorf("accounting %+v, want %+v", res.Tally, want)
			}
		})
	}
}

// serveLiar starts, for one test, a chat server that breaks its word on
// purpose. Of each connection's sendto requests, counted from 0, request k
// is: k mod 4 = 0, answered Success and delivered; 1, answered Failure and
// delivered all the same; 2, answered Success and dropped; 3, answered
// Failure and dropped.
func serveLiar(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type conn struct {
		mu sync.Mutex // writes
		nc net.Conn
	}
	var (
		mu    sync.Mutex
		conns = make(map[string]*conn)
		all   []net.Conn
		wg    sync.WaitGroup
	)
	write := func(c *conn, b []byte) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.nc.Write(b)
	}
	handle := func(nc net.Conn) {
		defer nc.Close()
		c := &conn{nc: nc}
		fr := chat.NewFrameReader(nc, 1<<20)
		var name string
		var k int
		for {
			f, err := fr.Next()
			if err != nil {
				return
			}
			switch f.Type {
			case chat.TypeLogin:
				name = string(f.Name)
				mu.Lock()
				conns[name] = c
				mu.Unlock()
				write(c, chat.AppendResponse(nil, chat.ResultOK))
			case chat.TypeSendTo:
				mu.Lock()
				to := conns[string(f.Name)]
				mu.Unlock()
				if to != nil && k%4 < 2 {
					write(to, chat.AppendMessage(nil, name, f.Text))
				}
				r := chat.ResultOK
				if k%2 == 1 {
					r = chat.ResultFailure
				}
				write(c, chat.AppendResponse(nil, r))
				k++
			case chat.TypeLogout:
				write(c, chat.AppendResponse(nil, chat.ResultOK))
				return
			default:
				write(c, chat.AppendResponse(nil, chat.ResultMalformed))
			}
		}
	}
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			all = append(all, nc)
			mu.Unlock()
			wg.Go(func() { handle(nc) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, nc := range all {
			nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
