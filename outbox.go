package chat

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// Errors of the outgoing queue, returned by Peer.Deliver.
var (
	// ErrQueueFull reports a message that could not be queued because the
	// recipient's outgoing queue is full.
	ErrQueueFull = errors.New("chat: outgoing queue full")

	// ErrPeerGone reports a message for a connection that is closing.
	ErrPeerGone = errors.New("chat: recipient connection closed")
)

// # Slow consumers
//
// A client that reads too slowly meets three rules, all in this file. A
// message relayed to it that would take its queue past QueueSize bytes is
// refused (Deliver, ErrQueueFull): its sender gets Failure, counted as
// queue_full, and the client loses nothing it was told of. Its own
// replies are owed, so they are queued beyond the limit, but its reader
// stops reading requests while the queue is past the limit, or while
// MaxPending replies wait for other servers (waitRoom), so a client that
// does not read its replies stops being served rather than growing its
// queue. And a write that makes no progress for WriteTimeout (each write
// that takes some bytes gets a new deadline) fails the connection: the
// client is a slow consumer, ErrSlowConsumer ends the connection and what
// was queued is dropped (ending.go).

// outbox is the bounded outgoing queue of one connection. Frames are encoded
// straight into its buffer, and everything queued is written in one call, so
// a burst of frames costs one system call.
//
// Frames queued by a connection's reading goroutine (its replies, and the
// messages it relays) are written when that goroutine has handled all the
// requests it has read and is about to read again (flush): straight from
// that goroutine, as far as the socket takes them without blocking, which
// spares a hand-over to another goroutine. Whatever the socket does not
// take at once, and whatever Deliver queues, is written by a writer
// goroutine, started when needed and ending when the buffer is drained.
// One writer at most is at work, so frames go out in the order queued.
//
// Replies go out in the order of the requests. A reply that waits for
// another server (a message for a user there, see Receipt) holds back the
// replies queued after it, in held, until it is settled; messages relayed
// to the connection are not held back.
type outbox struct {
	conn  net.Conn
	raw   *rawWriter // writes without blocking; nil if conn cannot
	limit int        // bytes queued before relayed messages are refused
	// replies waiting for other servers before the reader stops reading
	maxWaiting int
	timeout    time.Duration // how long a write may make no progress

	mu      sync.Mutex
	buf     []byte      // encoded frames waiting to be written
	spare   []byte      // the buffer being written, or one to reuse
	writing bool        // a writer (goroutine or flush) is at work
	closing bool        // close the connection once the buffer is drained
	closed  bool        // the connection is closed; nothing more is queued
	next    uint64      // the ordinal of the next reply
	held    []heldReply // replies from ordinal heldAt on, the first unsettled
	heldBuf []heldReply // held's array, kept for the next burst while small
	heldAt  uint64
	heldLen int       // bytes counted against limit for the held replies
	waiting int       // held replies not settled yet
	early   *earlyEnd // an outcome that came before its reply was held
	room    chan struct{}
	done    chan struct{} // closed when the connection has been closed
	wg      sync.WaitGroup
	onFail  func(error) // called once, with mu held, when a write fails

	testHookBlocked func()    // called when waitRoom is about to block
	stats           *counters // of the connection: frames and bytes out

	// lingering: drained at closeWhenDrained's request, and left open for
	// linger to close; closed is set too.
	lingering bool
}

// heldReply is a reply waiting behind an unsettled one, or unsettled itself.
type heldReply struct {
	settled bool
	result  Result
	list    []byte // an encoded LIST frame, or nil for a RESPONSE
	size    int    // bytes counted against the limit while held
}

// earlyEnd is the outcome of a delivery settled before it was held.
type earlyEnd struct {
	n      uint64
	result Result
	err    error // why it failed, for the reading goroutine to log
}

// Buffers larger than this are not kept for reuse once written, so that an
// idle connection holds little memory.
const outboxKeep = 64 << 10

func newOutbox(conn net.Conn, limit, maxWaiting int, timeout time.Duration, stats *counters, onFail func(error)) *outbox {
	return &outbox{
		stats:      stats,
		conn:       conn,
		raw:        newRawWriter(conn),
		limit:      limit,
		maxWaiting: maxWaiting,
		timeout:    timeout,
		room:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		onFail:     onFail,
	}
}

// Deliver implements Peer: it queues a SENDTO frame relaying text from the
// user from, unless the queue is full or closing, to be written by Flush.
// It settles at once, so it never returns ErrPending.
func (o *outbox) Deliver(from string, text []byte, _ Receipt) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing || o.closed {
		return ErrPeerGone
	}
	size := messageSize(from, text)
	if len(o.buf) > 0 && len(o.buf)+size > o.limit {
		return ErrQueueFull
	}
	o.buf = AppendMessage(o.buf, from, text)
	o.stats.framesOut[outMessage].Add(1)
	return nil
}

// Flush implements Peer: it writes what is queued.
func (o *outbox) Flush() { o.flush() }

// reply queues a reply, to be written by the next flush, or held behind an
// unsettled one. Replies are owed, so they are queued even beyond the
// limit; the reading side calls waitRoom before reading the next request,
// which bounds how far.
func (o *outbox) reply(r Result) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	o.next++
	o.stats.framesOut[outResponse].Add(1)
	if len(o.held) > 0 {
		o.pushHeld(heldReply{settled: true, result: r})
		o.heldLen += responseSize
		return
	}
	o.buf = AppendResponse(o.buf, r)
}

// replyNames queues a LIST reply, like reply.
func (o *outbox) replyNames(names []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	o.next++
	o.stats.framesOut[outNames].Add(1)
	if len(o.held) > 0 {
		list := AppendNames(nil, names)
		o.pushHeld(heldReply{settled: true, list: list})
		o.heldLen += len(list)
		return
	}
	o.buf = AppendNames(o.buf, names)
}

// heldKeep is the most held replies whose room an outbox keeps once they
// are all out: about 40 KiB, less than the buffers it keeps (outboxKeep),
// and room for DefaultMaxPending, so that a connection pipelining in
// bursts, its replies all settled at once by each answer, does not
// allocate the array anew for each burst.
const heldKeep = 1024

// pushHeld appends h to the held replies, reusing their array: held
// advances through heldBuf as replies are settled, and moves back to its
// start when it reaches the end with half the array or more free, so that a
// connection always pipelining does not allocate.
func (o *outbox) pushHeld(h heldReply) {
	switch n := len(o.held); {
	case n == 0:
		o.held = o.heldBuf[:0]
	case n == cap(o.held) && 2*n <= cap(o.heldBuf):
		o.held = append(o.heldBuf[:0], o.held...)
		clear(o.heldBuf[n:cap(o.heldBuf)]) // the old places of the lists moved
	}
	c := cap(o.held)
	o.held = append(o.held, h)
	if cap(o.held) != c { // a new array, which o.held starts
		o.heldBuf = o.held[:0]
	}
}

// hold queues the reply with ordinal n, the next, unsettled: it and the
// replies after it wait until settle is called for n. size is counted
// against the limit until then. If settle has been called for n already,
// hold queues its result as an ordinary reply, and reports it with the
// error settle was given.
func (o *outbox) hold(n uint64, size int) (r Result, settled bool, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return ResultFailure, true, nil
	}
	o.next++
	o.stats.framesOut[outResponse].Add(1)
	if e := o.early; e != nil && e.n == n {
		o.early = nil
		if len(o.held) > 0 {
			o.pushHeld(heldReply{settled: true, result: e.result})
			o.heldLen += responseSize
		} else {
			o.buf = AppendResponse(o.buf, e.result)
		}
		return e.result, true, e.err
	}
	if len(o.held) == 0 {
		o.heldAt = n
	}
	o.pushHeld(heldReply{result: ResultFailure, size: size})
	o.heldLen += size
	o.waiting++
	return 0, false, nil
}

// settle gives the held reply with ordinal n its result, and queues the
// replies no longer held back. It is called from any goroutine, and has
// them written by a writer goroutine, unless write is false: then the caller
// calls flush. It reports false if the reply was settled already, or the
// connection is closed; and whether the reply was not held yet (early):
// the reading goroutine is then in Deliver, or about to hold it, and hold
// hands it err.
func (o *outbox) settle(n uint64, r Result, err error, write bool) (ok, early bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false, false
	}
	if n >= o.next { // not held yet: hold finds it
		if o.early != nil && o.early.n == n {
			return false, true // settled already, early too
		}
		o.early = &earlyEnd{n, r, err}
		return true, true
	}
	i := n - o.heldAt
	if n < o.heldAt || i >= uint64(len(o.held)) || o.held[i].settled {
		return false, false // settled already
	}
	h := &o.held[i]
	h.settled, h.result = true, r
	o.heldLen -= h.size - responseSize
	o.waiting--
	o.signalRoom() // below maxWaiting, the reader may go on
	k := 0
	for ; k < len(o.held) && o.held[k].settled; k++ {
		h := &o.held[k]
		if h.list != nil {
			o.buf = append(o.buf, h.list...)
			o.heldLen -= len(h.list)
		} else {
			o.buf = AppendResponse(o.buf, h.result)
			o.heldLen -= responseSize
		}
		*h = heldReply{}
	}
	if k == 0 {
		return true, false
	}
	o.held = o.held[k:]
	o.heldAt += uint64(k)
	if len(o.held) == 0 && cap(o.heldBuf) > heldKeep {
		o.heldBuf = nil // an idle connection keeps little
	}
	switch {
	case len(o.buf) > 0:
		if write {
			o.startWriter()
		}
	case o.closing && !o.writing && o.waiting == 0:
		o.drainedLocked()
	}
	return true, false
}

// flush writes what is queued, unless a writer is already at work: first
// from the calling goroutine, as much as the socket takes without
// blocking, then the rest from a writer goroutine.
func (o *outbox) flush() {
	o.mu.Lock()
	if o.writing || o.closed || len(o.buf) == 0 {
		o.mu.Unlock()
		return
	}
	if o.raw == nil {
		o.startWriter()
		o.mu.Unlock()
		return
	}
	o.writing = true
	out := o.buf
	o.buf, o.spare = o.spare[:0], nil
	o.mu.Unlock()
	o.signalRoom()

	n, err := o.raw.tryWrite(out)
	o.stats.bytesOut.Add(uint64(n))

	o.mu.Lock()
	if err != nil {
		o.failLocked(err) // unlocks
		return
	}
	if o.closed { // closed meanwhile: nothing more goes out
		o.writing = false
		o.mu.Unlock()
		return
	}
	if rest := out[n:]; len(rest) > 0 {
		o.buf = append(rest, o.buf...) // in front of what was queued meanwhile
	} else if cap(out) <= outboxKeep && o.spare == nil {
		o.spare = out[:0]
	}
	o.writing = false
	if len(o.buf) > 0 {
		o.startWriter()
	} else if o.closing && o.waiting == 0 {
		o.drainedLocked()
	}
	o.mu.Unlock()
}

// failLocked ends the connection after a failed write, and unlocks o.mu.
func (o *outbox) failLocked(err error) {
	// A write fails on its own, or because the connection was closed under
	// it; only the former is news.
	// onFail runs before the connection is closed: closing it wakes the
	// reading goroutine, which must then find the reason recorded.
	if !o.closed && o.onFail != nil {
		o.onFail(err)
	}
	o.writing = false
	o.closeLocked()
	o.mu.Unlock()
}

func (o *outbox) signalRoom() {
	select {
	case o.room <- struct{}{}:
	default:
	}
}

// waitRoom blocks while the queue is over its limit, or maxWaiting replies
// wait for other servers, calling flush (which writes what the caller has
// queued, and sends on what it has handed to other servers) first. It
// returns false if the connection closed meanwhile.
func (o *outbox) waitRoom(flush func()) bool {
	for flushed := false; ; flushed = true {
		o.mu.Lock()
		full := len(o.buf)+o.heldLen > o.limit || o.waiting >= o.maxWaiting
		closed := o.closed
		o.mu.Unlock()
		if closed {
			return false
		}
		if !full {
			return true
		}
		if !flushed {
			flush()
			continue
		}
		if o.testHookBlocked != nil {
			o.testHookBlocked()
		}
		select {
		case <-o.room:
		case <-o.done:
			return false
		}
	}
}

// startWriter starts the writer goroutine if none is running. o.mu is held.
func (o *outbox) startWriter() {
	if o.writing || o.closed {
		return
	}
	o.writing = true
	o.wg.Add(1)
	go o.write()
}

// write is the writer goroutine: it writes what is queued until the queue
// is empty, then ends (closing the connection if asked to).
func (o *outbox) write() {
	defer o.wg.Done()
	for {
		o.mu.Lock()
		if len(o.buf) == 0 || o.closed {
			o.writing = false
			if o.closing && o.waiting == 0 {
				o.drainedLocked()
			}
			o.mu.Unlock()
			return
		}
		out := o.buf
		o.buf, o.spare = o.spare[:0], nil
		o.mu.Unlock()
		o.signalRoom()

		err := o.writeAll(out)

		o.mu.Lock()
		if cap(out) <= outboxKeep && o.spare == nil {
			o.spare = out[:0]
		}
		if err != nil {
			o.failLocked(err)
			return
		}
		o.mu.Unlock()
	}
}

// writeAll writes b, giving up when a write makes no progress for o.timeout.
func (o *outbox) writeAll(b []byte) error {
	for len(b) > 0 {
		if o.timeout > 0 {
			o.conn.SetWriteDeadline(time.Now().Add(o.timeout))
		}
		n, err := o.conn.Write(b)
		o.stats.bytesOut.Add(uint64(n))
		b = b[n:]
		if err != nil {
			if n > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
				continue // slow but moving: give it another deadline
			}
			return err
		}
	}
	return nil
}

// closeWhenDrained refuses new relayed messages and ends the connection
// once every reply is settled and everything queued has been written (at
// once if nothing is). A connection that can shut down its write side
// alone (TCP, TLS: a closeWriter) is left open for linger to close; others
// are closed.
func (o *outbox) closeWhenDrained() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closing = true
	switch {
	case o.writing: // the writer closes when done
	case len(o.buf) > 0:
		o.startWriter() // which closes when done
	case o.waiting > 0: // the last settle closes
	default:
		o.drainedLocked()
	}
}

// closeWriter is a connection whose write side shuts down alone:
// *net.TCPConn, *tls.Conn, *net.UnixConn.
type closeWriter interface {
	CloseWrite() error
}

// The bounds of linger: how long it waits for the client to stop sending,
// and how much of what the client sends it reads. Variables for the tests
// only.
var (
	lingerTime  = 2 * time.Second
	lingerBytes = 256 << 10
)

// drainedLocked ends the connection once closeWhenDrained's queue has been
// written: nothing more is queued or written, and the connection is closed
// now, or by linger if it is a closeWriter. o.mu is held.
func (o *outbox) drainedLocked() {
	if _, ok := o.conn.(closeWriter); !ok || o.closed {
		o.closeLocked()
		return
	}
	o.closed, o.lingering = true, true
	o.buf, o.held, o.heldBuf = nil, nil, nil
	close(o.done)
}

// linger closes a connection that closeWhenDrained left open (and does
// nothing otherwise), as net/http's closeWriteAndWait and nginx's
// lingering_close do: closing a socket whose input has not all been read
// makes the system send a TCP reset, and a reset can destroy the replies
// written just before, still on their way or unread in the client's
// buffer. So linger shuts down the write side, after which the client
// reads everything written and then the end of file, reads and discards
// what the client still sends until it closes its side, for lingerTime or
// lingerBytes at most, and closes the connection. closeNow cuts it short.
// It runs on the connection's reading goroutine, after o.wait.
//
//go:noinline
func (o *outbox) linger() {
	o.mu.Lock()
	lingering := o.lingering
	o.mu.Unlock()
	if !lingering {
		return
	}
	defer o.closeNow()
	if o.timeout > 0 {
		o.conn.SetWriteDeadline(time.Now().Add(o.timeout)) // TLS writes an alert
	}
	if err := o.conn.(closeWriter).CloseWrite(); err != nil {
		return
	}
	end := time.Now().Add(lingerTime)
	buf := make([]byte, 4096)
	for n := 0; n < lingerBytes; {
		// Set again after each read: Shutdown's wake-up may reset it.
		o.conn.SetReadDeadline(end)
		m, err := o.conn.Read(buf)
		n += m
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(end) {
				continue
			}
			return
		}
	}
}

// Evict implements Evicter: it closes the connection, dropping whatever is
// queued, and has the connection report reason.
func (o *outbox) Evict(reason error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	if o.onFail != nil {
		o.onFail(fmt.Errorf("%w: %w", ErrEvicted, reason))
	}
	o.closeLocked()
}

// closeNow closes the connection, dropping whatever is queued.
func (o *outbox) closeNow() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closeLocked()
}

func (o *outbox) closeLocked() {
	if o.closed {
		if o.lingering { // closed for writing only, until now
			o.lingering = false
			o.conn.Close()
		}
		return
	}
	o.closed = true
	o.buf, o.held, o.heldBuf = nil, nil, nil
	o.conn.Close()
	close(o.done)
}

// wait waits for the connection to be closed, and the writer goroutine to
// end.
func (o *outbox) wait() {
	<-o.done
	o.wg.Wait()
}
