package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/seedchat/chat"
)

// load is the clients of one process and the traffic between them.
type load struct {
	cfg     Config   // Clients and Messages are this process's share
	offset  int      // the global index of the first client, for its name and server
	total   int      // the clients of all processes
	addrs   []string // the servers (Config.Addr)
	clients []*client
	pad     string // the text of every message, before its stamp
	hist    *latencyShards
	recv    []seqSet // by the sender's global index: what this process's clients received

	batchSize int // bytes a writer gathers before writing
	bufSize   int // a writer's buffer: a batch, and the largest frame that ends it

	goTime      int64 // when start was called (now())
	measureFrom int64 // messages stamped before this are not measured
	started     bool

	stopping  atomic.Bool
	stopCh    chan struct{}
	stopOnce  sync.Once
	stopAt    atomic.Int64
	byQuota   atomic.Bool // the senders ran out of messages
	closing   atomic.Bool
	active    atomic.Int64 // senders (writers, ping-pong pairs) still sending
	stoppedCh chan struct{}
	doneCh    chan struct{}

	errMu sync.Mutex
	err   error // the first failure

	readers sync.WaitGroup
	writers sync.WaitGroup

	res *part // set before doneCh is closed
}

// newLoad returns the load of one process: cfg.Clients clients named from
// cfg.Prefix and offset on, of total in all processes. cfg has its
// defaults.
func newLoad(cfg Config, offset, total int) *load {
	total = max(total, offset+cfg.Clients)
	l := &load{
		cfg:       cfg,
		offset:    offset,
		total:     total,
		recv:      make([]seqSet, total),
		pad:       string(make([]byte, cfg.Size)),
		hist:      newLatencyShards(16),
		stopCh:    make(chan struct{}),
		stoppedCh: make(chan struct{}),
		doneCh:    make(chan struct{}),
	}
	l.addrs, _ = splitAddrs(cfg.Addr) // checked by withDefaults
	pad := []byte(l.pad)
	for i := range pad {
		pad[i] = 'x'
	}
	l.pad = string(pad)
	frame := sendToSize(len(cfg.Prefix)+6, l.pad) // to Prefix and 6 digits
	l.batchSize = min(max(cfg.Window*frame, frame), 64<<10)
	l.bufSize = l.batchSize + sendToSize(chat.MaxNameLen*utf8.UTFMax, l.pad)
	return l
}

// sendToSize returns the size of the sendto frame, length field included,
// that carries pad to a name of n bytes.
func sendToSize(n int, pad string) int {
	return len(chat.AppendSendTo(nil, strings.Repeat("x", n), pad))
}

// appendSendTo appends the sendto frame that carries pad to the user to,
// and returns it with the frame's text, at its end, to be stamped.
func appendSendTo(buf []byte, to, pad string) (_, text []byte) {
	buf = chat.AppendSendTo(buf, to, pad)
	return buf, buf[len(buf)-len(pad):]
}

// client is one connection of the load.
type client struct {
	l         *load
	idx       int // in l.clients
	name      string
	addr      string // the server it connects to
	nc        net.Conn
	fr        *chat.FrameReader
	to        string       // the partner, in Pairs and PingPong
	initiator bool         // PingPong: this client sends the pings
	chain     *atomic.Bool // PingPong: the pair has stopped bouncing
	quota     int64        // messages (pings) to send; -1 for no limit

	// Written by the sending side: the writer, or in PingPong the reader.
	sent atomic.Uint64 // sendto requests written
	need atomic.Uint64 // wake the writer when acked reaches this (0: not waiting)
	wake chan struct{}
	_    [64]byte

	// Written by the reader.
	acked      atomic.Uint64 // RESPONSEs to sendto requests
	ok         atomic.Uint64
	failures   atomic.Uint64
	malformed  atomic.Uint64
	delivered  atomic.Uint64 // SENDTOs received
	measured   uint64        // SENDTOs received that were sent after the warm-up
	roundTrips uint64        // PingPong: pongs received, measured
	lastRecv   int64         // when the last SENDTO was received (now())
	pings      int64         // PingPong: pings sent
	pbuf       []byte        // PingPong: the frame being sent
	lat        latencyBatch
	okBits     bitmap        // which requests were answered Success
	from       int           // Pairs, PingPong: the partner's global index (-1: none)
	got        bitmap        // Pairs, PingPong: the partner's messages received
	dups       uint64        // SENDTOs received a second time
	strays     uint64        // SENDTOs from no client of the load, or without a stamp
	dead       chan struct{} // closed when the reader ends
}

// fail records the first failure of the load and stops it.
func (l *load) fail(err error) {
	if l.closing.Load() {
		return
	}
	l.errMu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.errMu.Unlock()
	l.stop()
}

func (l *load) failure() error {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.err
}

// connect connects and logs in every client. On error it closes those
// already connected.
func (l *load) connect(ctx context.Context) error {
	n := l.cfg.Clients
	l.clients = make([]*client, n)
	for i := range l.clients {
		l.clients[i] = &client{
			l:     l,
			idx:   i,
			name:  l.cfg.Prefix + strconv.Itoa(l.offset+i),
			addr:  l.addrs[l.cfg.serverOf(l.offset+i, len(l.addrs))],
			quota: -1,
			from:  -1,
			wake:  make(chan struct{}, 1),
			dead:  make(chan struct{}),
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		err     error
	)
	for range min(64, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if e := l.clients[i].connect(ctx); e != nil {
					errOnce.Do(func() { err = e; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if err != nil {
		for _, c := range l.clients {
			if c.nc != nil {
				c.nc.Close()
			}
		}
		return err
	}
	l.assign()
	return nil
}

// connect dials the server and logs c in.
func (c *client) connect(ctx context.Context) error {
	l := c.l
	ctx, cancel := context.WithTimeout(ctx, l.cfg.DialTimeout)
	defer cancel()
	nc, err := dial(ctx, c.addr)
	if err != nil {
		return fmt.Errorf("cannot connect to the server at %s: %w", c.addr, err)
	}
	c.nc = nc
	c.fr = chat.NewFrameReader(nc, 16<<20)
	deadline, _ := ctx.Deadline()
	nc.SetDeadline(deadline)
	defer nc.SetDeadline(time.Time{})
	if _, err := nc.Write(chat.AppendLogin(nil, c.name)); err != nil {
		return fmt.Errorf("login as %q: %w", c.name, err)
	}
	f, err := c.fr.Next()
	switch {
	case err != nil:
		return fmt.Errorf("login as %q: no reply from the server: %w", c.name, err)
	case f.Type != chat.TypeResponse:
		return fmt.Errorf("login as %q: the server answered %v instead of RESPONSE", c.name, f.Type)
	case f.Result == chat.ResultFailure:
		return fmt.Errorf("login as %q refused: Failure (is the name taken? another chatbench with the same -prefix?)", c.name)
	case f.Result != chat.ResultOK:
		return fmt.Errorf("login as %q: %v", c.name, f.Result)
	}
	return nil
}

// assign gives each client its partner and its share of the messages.
func (l *load) assign() {
	cfg := &l.cfg
	limited := cfg.Messages > 0
	switch cfg.Mode {
	case Pairs, Random:
		for i, c := range l.clients {
			if cfg.Mode == Pairs {
				c.to, c.from = l.clients[i^1].name, l.offset+(i^1)
			}
			if limited {
				c.quota = split(cfg.Messages, len(l.clients), i)
			}
		}
	case PingPong:
		for i := 0; i < len(l.clients); i += 2 {
			a, b := l.clients[i], l.clients[i+1]
			a.to, b.to = b.name, a.name
			a.from, b.from = l.offset+i+1, l.offset+i
			a.initiator = true
			a.chain = new(atomic.Bool)
			b.chain = a.chain
			if limited {
				a.quota = split(cfg.Messages, len(l.clients)/2, i/2)
			}
		}
	}
}

// start starts the traffic: the readers, and the writers or the first pings.
func (l *load) start() {
	l.started = true
	l.goTime = now()
	l.measureFrom = l.goTime + int64(l.cfg.Warmup)
	for i, c := range l.clients {
		c.lat.shard = &l.hist.shards[i%len(l.hist.shards)]
	}
	switch l.cfg.Mode {
	case Pairs, Random:
		l.active.Store(int64(len(l.clients)))
	case PingPong:
		l.active.Store(int64(len(l.clients) / 2))
	}
	l.readers.Add(len(l.clients))
	for _, c := range l.clients {
		go c.readLoop()
	}
	if l.cfg.Mode == Pairs || l.cfg.Mode == Random {
		l.writers.Add(len(l.clients))
		for _, c := range l.clients {
			go c.writeLoop()
		}
	}
	go l.control()
}

// stop asks the senders to stop; the load then drains, logs out and ends.
func (l *load) stop() {
	l.stopOnce.Do(func() {
		l.stopAt.Store(now())
		l.stopping.Store(true)
		close(l.stopCh)
	})
}

// abort closes the connections of a load that was connected but never
// started.
func (l *load) abort() {
	for _, c := range l.clients {
		if c.nc != nil {
			c.nc.Close()
		}
	}
}

func (l *load) stopped() <-chan struct{} { return l.stoppedCh }

// wait waits for the end of a started load and returns its result.
func (l *load) wait() (*part, error) {
	<-l.doneCh
	return l.res, l.failure()
}

// counts are the running totals of a load.
type counts struct {
	Sent      uint64 `json:"sent"`
	Acked     uint64 `json:"acked"`
	OK        uint64 `json:"ok"`
	Failures  uint64 `json:"failures"`
	Delivered uint64 `json:"delivered"`
}

func (l *load) progress() counts {
	var s counts
	if !l.started {
		return s
	}
	for _, c := range l.clients {
		s.Delivered += c.delivered.Load()
		s.OK += c.ok.Load()
		s.Failures += c.failures.Load() + c.malformed.Load()
		s.Acked += c.acked.Load()
		s.Sent += c.sent.Load()
	}
	return s
}

// control ends the load: at the end of the duration, when the senders have
// sent all their messages, or when asked to stop. It then drains what is in
// flight, logs the clients out and computes the result.
func (l *load) control() {
	cfg := &l.cfg
	var deadline <-chan time.Time
	if cfg.Mode != Idle {
		limit := cfg.MaxTime
		if cfg.Duration > 0 {
			limit = cfg.Warmup + cfg.Duration
		}
		t := time.NewTimer(limit - time.Duration(now()-l.goTime))
		defer t.Stop()
		deadline = t.C
	}
	var poll <-chan time.Time
	if cfg.Messages > 0 {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		poll = t.C
	}
	var prev counts
wait:
	for {
		select {
		case <-deadline:
			l.stop()
		case <-l.stopCh:
			break wait
		case <-poll:
			if l.quiescent(&prev) {
				l.byQuota.Store(true)
				l.stop()
			}
		}
	}

	// Drain: wait for the writers, then for every request to be answered
	// and every accepted message to be delivered. A writer blocked on a
	// server that stopped reading fails after DrainTimeout rather than
	// holding the load forever.
	drainBy := time.Now().Add(cfg.DrainTimeout)
	for _, c := range l.clients {
		c.nc.SetWriteDeadline(drainBy)
	}
	l.writers.Wait()
	if l.failure() == nil && cfg.Mode != Idle {
		tick := time.NewTicker(time.Millisecond)
		timeout := time.NewTimer(time.Until(drainBy))
		prev = counts{}
	drain:
		for !l.quiescent(&prev) {
			select {
			case <-tick.C:
			case <-timeout.C:
				break drain
			}
		}
		tick.Stop()
		timeout.Stop()
	}
	close(l.stoppedCh)

	// Log out and close: each client sends logout and shuts its side
	// down; the server answers, closes, and the reader sees the end.
	l.closing.Store(true)
	var wg sync.WaitGroup
	for _, c := range l.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.nc.SetDeadline(time.Now().Add(cfg.DrainTimeout))
			c.nc.Write(chat.AppendLogout(nil))
			if tc, ok := c.nc.(*net.TCPConn); ok {
				tc.CloseWrite()
			} else {
				c.nc.Close()
			}
		}()
	}
	wg.Wait()
	l.readers.Wait()
	for _, c := range l.clients {
		c.nc.Close()
	}
	l.res = l.result()
	close(l.doneCh)
}

// quiescent reports whether nothing is in flight: no sender is active,
// every request was answered, every accepted message was delivered, and
// nothing changed since the previous call (prev).
func (l *load) quiescent(prev *counts) bool {
	if l.active.Load() != 0 || l.failure() != nil {
		return l.failure() != nil
	}
	s := l.progress()
	same := s == *prev
	*prev = s
	return same && s.Sent == s.Acked && s.OK == s.Delivered
}

// writeLoop sends the messages of one client in Pairs and Random modes: as
// many as the window (and the rate) allow, in one write.
func (c *client) writeLoop() {
	l := c.l
	cfg := &l.cfg
	defer l.writers.Done()
	defer l.active.Add(-1)

	window := uint64(cfg.Window)
	lowMark := max(window/4, 1) // wake up when this much of the window is free
	buf := make([]byte, 0, l.bufSize)
	var rng *rand.Rand
	if cfg.Mode == Random {
		rng = rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(l.offset+c.idx)))
	}
	var timer *time.Timer
	var interval, phase float64
	var woke int64 // when the rate's timer last woke the writer
	if cfg.Rate > 0 {
		timer = time.NewTimer(time.Hour)
		defer timer.Stop()
		interval = 1e9 / cfg.Rate
		phase = interval * float64(c.idx) / float64(len(l.clients)) // spread the clients' sends
	}
	var sent uint64
	for {
		if l.stopping.Load() || (c.quota >= 0 && sent >= uint64(c.quota)) {
			return
		}
		n := window - (sent - c.acked.Load())
		if n == 0 {
			// The window is full: wait for lowMark replies.
			target := sent - window + lowMark
			c.need.Store(target)
			if c.acked.Load() >= target && c.need.CompareAndSwap(target, 0) {
				continue
			}
			select {
			case <-c.wake:
			case <-l.stopCh:
				return
			case <-c.dead:
				return
			}
			continue
		}
		if c.quota >= 0 {
			n = min(n, uint64(c.quota)-sent)
		}
		if cfg.Rate > 0 {
			// Message k is due at phase + k·interval after the start.
			due := int64(math.Floor((float64(now()-l.goTime)-phase)/interval)) + 1 // messages due by now
			if due <= int64(sent) {
				timer.Reset(time.Duration(c.dueAt(sent, phase, interval) - now()))
				select {
				case <-timer.C:
					woke = now()
				case <-l.stopCh:
					return
				case <-c.dead:
					return
				}
				continue
			}
			n = min(n, uint64(due)-sent)
		}
		buf = buf[:0]
		stamp := now()
		for ; n > 0 && len(buf) < l.batchSize; n-- {
			if cfg.Rate > 0 {
				// Timed from when the message was due, not from when the
				// window let it go: a server that falls behind the rate
				// shows in the latencies rather than silently slowing the
				// senders down (coordinated omission). But a timer waking
				// late (by up to a millisecond when the runtime sleeps in
				// epoll) is the generator's delay, not the server's:
				// never before the writer last woke from the timer.
				stamp = max(c.dueAt(sent, phase, interval), woke)
			}
			to := c.to
			if rng != nil {
				j := rng.IntN(len(l.clients) - 1)
				if j >= c.idx {
					j++
				}
				to = l.clients[j].name
			}
			var text []byte
			buf, text = appendSendTo(buf, to, l.pad)
			putStamp(text, stamp, sent)
			sent++
		}
		c.sent.Store(sent) // before the write: replies never outnumber it
		if _, err := c.nc.Write(buf); err != nil {
			l.fail(fmt.Errorf("%s: sending: %w", c.name, err))
			return
		}
	}
}

// dueAt returns when message k of a client sending at a fixed rate is due.
func (c *client) dueAt(k uint64, phase, interval float64) int64 {
	return c.l.goTime + int64(phase+float64(k)*interval)
}

// readLoop reads what the server sends one client: replies, which open the
// window, and messages, which are counted and timed (and in PingPong
// bounced).
func (c *client) readLoop() {
	l := c.l
	defer l.readers.Done()
	defer close(c.dead)
	defer c.lat.flush()
	pingpong := l.cfg.Mode == PingPong
	if pingpong && c.initiator {
		c.ping()
	}
	for {
		f, err := c.fr.Next()
		if err != nil {
			if l.closing.Load() {
				return // the end: EOF after logout, or the deadline
			}
			if errors.Is(err, io.EOF) {
				err = errors.New("the server closed the connection")
			}
			l.fail(fmt.Errorf("%s: %w", c.name, err))
			return
		}
		switch f.Type {
		case chat.TypeResponse:
			if l.closing.Load() {
				continue // the reply to logout
			}
			n := c.acked.Add(1) // answers request n-1: the server answers in order
			switch f.Result {
			case chat.ResultOK:
				c.okBits.add(n - 1)
				c.ok.Add(1)
			case chat.ResultFailure:
				c.failures.Add(1)
			default:
				c.malformed.Add(1)
			}
			if need := c.need.Load(); need != 0 && n >= need && c.need.CompareAndSwap(need, 0) {
				select {
				case c.wake <- struct{}{}:
				default:
				}
			}
			if pingpong && f.Result != chat.ResultOK {
				c.endChain() // the ball was dropped
			}
		case chat.TypeMessage:
			t := now()
			c.lastRecv = t
			stamp, seq, ok := parseStamp(f.Text)
			switch {
			case !ok:
				c.strays++
			case c.from >= 0 && string(f.Name) == c.to:
				if c.got.add(seq) {
					c.dups++
				}
			default:
				if s, known := l.senderOf(f.Name); !known {
					c.strays++
				} else if l.recv[s].add(seq) {
					c.dups++
				}
			}
			measured := ok && stamp >= l.measureFrom
			if measured {
				c.measured++
			}
			switch {
			case !pingpong:
				if measured {
					c.lat.record(t - stamp)
				}
			case c.initiator:
				if measured {
					c.roundTrips++
					c.lat.record(t - stamp)
				}
				c.ping()
			default:
				c.pong(f.Text)
			}
			c.delivered.Add(1) // after any bounce, so that quiescent sees it sent
		}
	}
}

// ping sends the next ping of a PingPong pair, unless the pair is done.
func (c *client) ping() {
	l := c.l
	if l.stopping.Load() || (c.quota >= 0 && c.pings >= c.quota) {
		c.endChain()
		return
	}
	c.pings++
	var text []byte
	c.pbuf, text = appendSendTo(c.pbuf[:0], c.to, l.pad)
	putStamp(text, now(), c.sent.Load())
	c.send(c.pbuf)
}

// pong sends a ping back with its time stamp, and its own sequence number.
func (c *client) pong(text []byte) {
	var text0 []byte
	c.pbuf, text0 = appendSendTo(c.pbuf[:0], c.to, c.l.pad)
	copy(text0, text)
	putSeq(text0, c.sent.Load())
	c.send(c.pbuf)
}

// senderOf returns the global index of the client of the load named name
// (Prefix and the index); known is false for any other name.
func (l *load) senderOf(name []byte) (i int, known bool) {
	p := l.cfg.Prefix
	if len(name) <= len(p) || string(name[:len(p)]) != p {
		return 0, false
	}
	for _, d := range name[len(p):] {
		if d < '0' || d > '9' {
			return 0, false
		}
		if i = i*10 + int(d-'0'); i >= l.total {
			return 0, false
		}
	}
	return i, true
}

func (c *client) send(frame []byte) {
	c.sent.Add(1)
	if _, err := c.nc.Write(frame); err != nil {
		c.l.fail(fmt.Errorf("%s: sending: %w", c.name, err))
	}
}

// endChain records that a PingPong pair has stopped.
func (c *client) endChain() {
	if c.chain.CompareAndSwap(false, true) {
		c.l.active.Add(-1)
	}
}

// result sums the clients' counters once the readers have ended.
func (l *load) result() *part {
	p := &part{Result: Result{
		Clients: len(l.clients),
		Mode:    l.cfg.Mode,
		Size:    l.cfg.Size,
		Window:  l.cfg.Window,
		Rate:    l.cfg.Rate,
		Procs:   1,
	}}
	r := &p.Result
	var last int64
	p.acct = &accounts{sent: make([]sentLog, len(l.clients))}
	for i, c := range l.clients {
		p.acct.sent[i] = sentLog{sender: l.offset + i, acked: c.acked.Load(), ok: c.okBits}
		if c.got != nil {
			p.acct.recv = append(p.acct.recv, recvLog{sender: c.from, got: c.got})
		}
		p.Duplicates += c.dups
		p.Strays += c.strays
		r.Sent += c.sent.Load()
		r.OK += c.ok.Load()
		r.Failures += c.failures.Load()
		r.Malformed += c.malformed.Load()
		r.DeliveredTotal += c.delivered.Load()
		r.Delivered += c.measured
		r.RoundTrips += c.roundTrips
		last = max(last, c.lastRecv)
	}
	end := l.stopAt.Load()
	if l.byQuota.Load() {
		end = last
	}
	if end > l.measureFrom {
		r.DurationS = time.Duration(end - l.measureFrom).Seconds()
	}
	for s := range l.recv {
		if got := l.recv[s].words(); got != nil {
			p.acct.recv = append(p.acct.recv, recvLog{sender: s, got: got})
		}
	}
	p.hist = l.hist.merged()
	return p
}
