package chat

import (
	"errors"
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

// outbox is the bounded outgoing queue of one connection. Frames are encoded
// straight into its buffer; a single writer goroutine, started when the
// buffer becomes non-empty and ending when it is drained, swaps the buffer
// out and writes everything queued in one call, so a burst of frames costs
// one system call.
type outbox struct {
	conn    net.Conn
	limit   int           // bytes queued before relayed messages are refused
	timeout time.Duration // how long a write may make no progress

	mu      sync.Mutex
	buf     []byte // encoded frames waiting to be written
	spare   []byte // the buffer being written, or one to reuse
	writing bool   // a writer goroutine is running
	closing bool   // close the connection once the buffer is drained
	closed  bool   // the connection is closed; nothing more is queued
	room    chan struct{}
	done    chan struct{} // closed when the connection has been closed
	wg      sync.WaitGroup
	onFail  func(error) // called once, from the writer, when a write fails
	stats   *counters   // of the connection: frames and bytes out
}

// Buffers larger than this are not kept for reuse once written, so that an
// idle connection holds little memory.
const outboxKeep = 64 << 10

func newOutbox(conn net.Conn, limit int, timeout time.Duration, stats *counters, onFail func(error)) *outbox {
	return &outbox{
		stats:   stats,
		conn:    conn,
		limit:   limit,
		timeout: timeout,
		room:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		onFail:  onFail,
	}
}

// Deliver queues a SENDTO frame relaying text from the user from, unless
// the queue is full or closing. It never blocks on the network.
func (o *outbox) Deliver(from string, text []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing || o.closed {
		return ErrPeerGone
	}
	size := HeaderSize + 2 + len(from) + len(text)
	if len(o.buf) > 0 && len(o.buf)+size > o.limit {
		return ErrQueueFull
	}
	o.buf = AppendMessage(o.buf, from, text)
	o.stats.framesOut[outMessage].Add(1)
	o.startWriter()
	return nil
}

// reply queues a reply. Replies are owed, so they are queued even beyond the
// limit; the reading side calls waitRoom before reading the next request,
// which bounds how far.
func (o *outbox) reply(r Result) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	o.buf = AppendResponse(o.buf, r)
	o.stats.framesOut[outResponse].Add(1)
	o.startWriter()
}

// replyNames queues a LIST reply.
func (o *outbox) replyNames(names []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	o.buf = AppendNames(o.buf, names)
	o.stats.framesOut[outNames].Add(1)
	o.startWriter()
}

// waitRoom blocks while the queue is over its limit. It returns false if the
// connection closed meanwhile.
func (o *outbox) waitRoom() bool {
	for {
		o.mu.Lock()
		full, closed := len(o.buf) > o.limit, o.closed
		o.mu.Unlock()
		if closed {
			return false
		}
		if !full {
			return true
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
			if o.closing {
				o.closeLocked()
			}
			o.mu.Unlock()
			return
		}
		out := o.buf
		o.buf, o.spare = o.spare[:0], nil
		o.mu.Unlock()
		select {
		case o.room <- struct{}{}:
		default:
		}

		err := o.writeAll(out)

		o.mu.Lock()
		if cap(out) <= outboxKeep && o.spare == nil {
			o.spare = out[:0]
		}
		if err != nil {
			// A write fails on its own, or because the connection was
			// closed under it; only the former is news.
			failed := !o.closed
			o.writing = false
			o.closeLocked()
			o.mu.Unlock()
			if failed && o.onFail != nil {
				o.onFail(err)
			}
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

// closeWhenDrained closes the connection once everything queued has been
// written (at once if nothing is), and refuses new relayed messages.
func (o *outbox) closeWhenDrained() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closing = true
	if !o.writing {
		o.closeLocked()
	}
}

// closeNow closes the connection, dropping whatever is queued.
func (o *outbox) closeNow() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closeLocked()
}

func (o *outbox) closeLocked() {
	if o.closed {
		return
	}
	o.closed = true
	o.buf = nil
	o.conn.Close()
	close(o.done)
}

// wait waits for the writer goroutine to end.
func (o *outbox) wait() { o.wg.Wait() }
