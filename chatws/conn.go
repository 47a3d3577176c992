package chatws

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// ErrTextMessage ends a connection whose client sent a text message: the
// chat's frames travel in binary messages only.
var ErrTextMessage = errors.New("chatws: text message received; frames travel in binary messages only")

// chunkSize is the most bytes of a WebSocket message handed to the server
// at once: memory per connection stays small whatever the message size.
// The pump reads one chunk ahead of the server: two are in use.
const chunkSize = 8 << 10

// conn is a WebSocket seen as the byte stream that chat.Server serves.
//
// websocket.NetConn does almost this, but a deadline that passes while a
// Read or Write waits closes its WebSocket. chat.Server relies on the usual
// net.Conn behaviour: Shutdown wakes a waiting Read with a deadline and
// then writes the replies still owed, and the frame and login timeouts are
// read deadlines. So here one goroutine (pump) reads the WebSocket's
// messages and hands their bytes to Read, which waits for them, for its
// deadline or for Close, leaving the WebSocket as it is.
//
// Close stops reads and writes but does not close the WebSocket: the
// Handler does that after ServeConn returns, with the close code that fits
// the reason ServeConn gave.
type conn struct {
	ws            *websocket.Conn
	local, remote net.Addr
	chunks        chan []byte   // pump → Read: bytes of binary messages
	free          chan []byte   // Read → pump: buffers read whole, to fill again
	pumpErr       error         // why pump stopped; set before chunks is closed
	pumped        chan struct{} // closed when pump has returned
	rest          []byte        // what Read has not yet returned of the last chunk
	chunk         []byte        // the last chunk, whose buffer goes back to pump once read
	readMu        sync.Mutex    // one Read at a time
	readDeadline  deadline
	writeDeadline atomic.Int64 // Unix nanoseconds; 0 for none
	writeMu       sync.Mutex   // held by Write
	writeFailed   atomic.Bool  // a Write failed
	writeCtx      context.Context
	cancelWrites  context.CancelFunc
	closeOnce     sync.Once
	closed        chan struct{}
}

// tlsConn is a conn that came over TLS: like a *tls.Conn it tells its
// ConnectionState, so chat.CertifiedLogin finds the client's certificate.
type tlsConn struct {
	*conn
	state tls.ConnectionState
}

// ConnectionState returns the state of the TLS connection the WebSocket
// came over.
func (c *tlsConn) ConnectionState() tls.ConnectionState { return c.state }

func newConn(ws *websocket.Conn, local, remote net.Addr) *conn {
	c := &conn{
		ws:           ws,
		local:        local,
		remote:       remote,
		chunks:       make(chan []byte, 1),
		free:         make(chan []byte, 2),
		pumped:       make(chan struct{}),
		readDeadline: makeDeadline(),
		closed:       make(chan struct{}),
	}
	c.writeCtx, c.cancelWrites = context.WithCancel(context.Background())
	go c.pump()
	return c
}

// pump reads the WebSocket's messages and hands their bytes to Read, a
// chunk at a time. It reads at most one chunk ahead of Read, so that the
// next chunk is often there when the server wants it, and a server that
// stops reading still stops the client.
func (c *conn) pump() {
	defer close(c.pumped)
	defer close(c.chunks)
	c.free <- make([]byte, chunkSize)
	c.free <- make([]byte, chunkSize)
	for {
		typ, r, err := c.ws.Reader(context.Background())
		if err != nil {
			c.pumpErr = c.readFailed(err)
			return
		}
		if typ != websocket.MessageBinary {
			c.pumpErr = ErrTextMessage
			return
		}
		for {
			var buf []byte
			select {
			case buf = <-c.free:
			case <-c.closed:
				return
			}
			n, err := r.Read(buf[:cap(buf)])
			if n > 0 {
				select {
				case c.chunks <- buf[:n]:
				case <-c.closed:
					return
				}
			} else {
				c.free <- buf
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				c.pumpErr = c.readFailed(err)
				return
			}
		}
	}
}

// readFailed returns what Read returns after the WebSocket failed with
// err. If a Write failed (and so closed the WebSocket), it first waits
// for Close: the server learns why the connection ended (a slow consumer,
// say) from the failed Write, and must not take the read error for it.
func (c *conn) readFailed(err error) error {
	c.writeMu.Lock() // a Write under way has ended
	failed := c.writeFailed.Load()
	c.writeMu.Unlock()
	if failed {
		<-c.closed
		return net.ErrClosed
	}
	return readError(err)
}

// readError turns an error from the WebSocket into what Read returns: end
// of file for a normal close by the client.
func readError(err error) error {
	switch websocket.CloseStatus(err) {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway, websocket.StatusNoStatusRcvd:
		return io.EOF
	case websocket.StatusMessageTooBig:
		return fmt.Errorf("%w: %w", ErrMessageTooLarge, err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return io.EOF // the TCP connection ended without a close frame
	}
	return fmt.Errorf("chatws: %w", err)
}

// Read reads the bytes of the binary messages received, in order, as one
// stream: message boundaries mean nothing.
func (c *conn) Read(p []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if len(c.rest) == 0 {
		expired := c.readDeadline.wait()
		select {
		case <-c.closed:
			return 0, net.ErrClosed
		case <-expired:
			return 0, os.ErrDeadlineExceeded
		default:
		}
		select {
		case b, ok := <-c.chunks:
			if !ok {
				return 0, c.pumpErr
			}
			c.chunk, c.rest = b, b
		case <-expired:
			return 0, os.ErrDeadlineExceeded
		case <-c.closed:
			return 0, net.ErrClosed
		}
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	if len(c.rest) == 0 {
		c.free <- c.chunk // never blocks: there is room for both buffers
		c.chunk = nil
	}
	return n, nil
}

// Write sends p as one binary message. A write that does not end by the
// write deadline fails with os.ErrDeadlineExceeded, and the WebSocket is
// then unusable (the library closes it).
func (c *conn) Write(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	ctx := c.writeCtx
	if d := c.writeDeadline.Load(); d != 0 {
		t := time.Unix(0, d)
		if !time.Now().Before(t) {
			return 0, os.ErrDeadlineExceeded
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, t)
		defer cancel()
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.ws.Write(ctx, websocket.MessageBinary, p); err != nil {
		c.writeFailed.Store(true)
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			return 0, fmt.Errorf("chatws: write: %w", os.ErrDeadlineExceeded)
		case c.writeCtx.Err() != nil:
			return 0, net.ErrClosed
		}
		return 0, fmt.Errorf("chatws: write: %w", err)
	}
	return len(p), nil
}

// Close stops the connection's reads and writes (a Write under way is
// cut short, which closes the WebSocket). It leaves an idle WebSocket
// open for the Handler to close with a close code.
func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.cancelWrites()
	})
	return nil
}

// LocalAddr returns the address the HTTP server accepted the connection on.
func (c *conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the client's TCP address (that of the last proxy, if
// any), so that chat.Server's MaxConnsPerIP counts WebSocket clients.
func (c *conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both deadlines.
func (c *conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets when a waiting Read gives up with
// os.ErrDeadlineExceeded; the connection stays usable.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.readDeadline.set(t)
	return nil
}

// SetWriteDeadline sets when a Write gives up.
func (c *conn) SetWriteDeadline(t time.Time) error {
	var d int64
	if !t.IsZero() {
		d = t.UnixNano()
	}
	c.writeDeadline.Store(d)
	return nil
}

// deadline is a channel closed when a settable time passes, as net.Pipe
// keeps its deadlines.
type deadline struct {
	mu      sync.Mutex
	timer   *time.Timer
	expired chan struct{} // closed when the deadline passes
}

func makeDeadline() deadline { return deadline{expired: make(chan struct{})} }

// set sets the deadline to t; zero means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.expired // the timer fired: wait until it has closed the channel
	}
	d.timer = nil
	passed := isClosed(d.expired)
	if t.IsZero() {
		if passed {
			d.expired = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if passed {
			d.expired = make(chan struct{})
		}
		ch := d.expired
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !passed {
		close(d.expired)
	}
}

// wait returns a channel closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expired
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
