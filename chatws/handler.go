// Package chatws serves the chat over WebSocket, to browsers and to any
// WebSocket client, and embeds a web page that is a complete client.
//
// A Handler upgrades an HTTP request to a WebSocket and hands the
// connection to a chat.Server's ServeConn: the same binary frames as over
// TCP, carried in binary WebSocket messages, and every rule of the server
// (one reply per request, order, limits, the rate limit, slow consumers,
// the Directory) holds unchanged. Page serves the web client.
//
//	srv := &chat.Server{}
//	http.Handle("/ws", &chatws.Handler{Server: srv})
//	http.Handle("/", chatws.Page())
//	http.ListenAndServe("127.0.0.1:8080", nil)
//
// PROTOCOL.md, section WebSocket, describes the mapping for other clients.
package chatws

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/seedchat/chat"
	"go.uber.org/zap"
)

// DefaultPingInterval is how often a Handler pings an idle client when
// PingInterval is zero.
const DefaultPingInterval = 30 * time.Second

// ErrMessageTooLarge ends a connection whose client sent a WebSocket
// message larger than the Handler's MaxMessageSize.
var ErrMessageTooLarge = errors.New("chatws: message too large")

// ErrNoPong ends a connection whose client did not answer a ping within
// the Handler's PingInterval.
var ErrNoPong = errors.New("chatws: ping not answered in time")

// Handler is an http.Handler that serves chat clients over WebSocket with
// Server. Its exported fields are its configuration; set them before
// serving and do not change them after. Server is required.
type Handler struct {
	// Server serves the connections.
	Server *chat.Server

	// OriginPatterns lists the origins, besides the page's own, from which
	// a browser may open the WebSocket: host patterns such as
	// "chat.example.com" or "*.example.com" (path.Match syntax, matched
	// against the Origin header's host, or against the whole origin when
	// the pattern has a scheme, "https://chat.example.com"). Empty means the
	// same origin only: a page of another site cannot use its visitors'
	// browsers to reach the chat (cross-site WebSocket hijacking). Requests
	// without an Origin header (programs, not browsers) are accepted.
	OriginPatterns []string

	// MaxMessageSize is the largest WebSocket message accepted from a
	// client, in bytes; a larger one closes the connection with status
	// 1009. Zero means the Server's maximum frame size plus 4, so that the
	// largest frame fits in one message.
	MaxMessageSize int64

	// PingInterval is how often the client is pinged; a ping not answered
	// within that time closes the connection. Zero means
	// DefaultPingInterval; negative, no pings.
	PingInterval time.Duration

	// Logger receives refused upgrades and connections ended by
	// keep-alive; the Server logs the rest. Nil means no logging.
	Logger *zap.Logger

	active sync.WaitGroup // ServeHTTP calls under way
}

// Wait waits until every ServeHTTP call under way has returned, that is,
// until every WebSocket has been closed with its close code. Call it after
// Server.Shutdown or Server.Close (which end the connections), and before
// the program exits, so that clients get their close frames: an
// http.Server does not wait for WebSocket connections, which leave it
// when they are upgraded.
func (h *Handler) Wait() { h.active.Wait() }

func (h *Handler) logger() *zap.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return zap.NewNop()
}

func (h *Handler) maxMessageSize() int64 {
	if h.MaxMessageSize > 0 {
		return h.MaxMessageSize
	}
	frame := h.Server.MaxFrameSize
	if frame <= 0 {
		frame = chat.DefaultMaxFrameSize
	}
	return int64(frame) + 4
}

func (h *Handler) pingInterval() time.Duration {
	if h.PingInterval == 0 {
		return DefaultPingInterval
	}
	return max(h.PingInterval, 0)
}

// ServeHTTP upgrades the request to a WebSocket and serves it with Server
// until it ends; then it closes the WebSocket with the close code for the
// reason (PROTOCOL.md has the table). It returns when the connection and
// every goroutine it started have ended. A request that cannot be upgraded
// (not a WebSocket handshake, or from a foreign origin) gets an HTTP error
// and is logged.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.active.Add(1)
	defer h.active.Done()
	ws, err := websocket.Accept(bigBuffers{w}, r, &websocket.AcceptOptions{
		OriginPatterns:  h.OriginPatterns,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		h.logger().Warn("websocket upgrade refused",
			zap.String("remote", r.RemoteAddr),
			zap.String("origin", r.Header.Get("Origin")),
			zap.String("host", r.Host),
			zap.String("path", r.URL.Path),
			zap.Error(err))
		return
	}
	ws.SetReadLimit(h.maxMessageSize())
	c := newConn(ws, localAddr(r), remoteAddr(r))
	var nc net.Conn = c
	if r.TLS != nil {
		nc = &tlsConn{conn: c, state: *r.TLS}
	}

	var wg sync.WaitGroup
	var noPong bool
	if every := h.pingInterval(); every > 0 {
		wg.Go(func() { noPong = h.keepAlive(c, every) })
	}
	err = h.Server.ServeConn(nc)
	c.Close() // done by the Server already, except on a refusal
	wg.Wait()
	if noPong {
		err = ErrNoPong
	}
	code, reason := closeStatus(err)
	ws.Close(code, reason)
	<-c.pumped
}

// keepAlive pings the client every interval until the connection is
// closed. If a ping is not answered within the interval, it closes the
// WebSocket and reports true.
func (h *Handler) keepAlive(c *conn, every time.Duration) bool {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.closed:
			return false
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(c.writeCtx, every)
		err := c.ws.Ping(ctx)
		timedOut := errors.Is(ctx.Err(), context.DeadlineExceeded)
		cancel()
		if err != nil {
			if timedOut {
				h.logger().Info("websocket ping not answered; closing", zap.Stringer("remote", c.remote), zap.Duration("within", every))
				c.ws.CloseNow()
				return true
			}
			return false // the connection is closing
		}
	}
}

// closeStatus returns the WebSocket close code and reason for the reason
// ServeConn gave for ending a connection. One table, also in PROTOCOL.md.
func closeStatus(err error) (websocket.StatusCode, string) {
	for _, s := range closeStatuses {
		if s.err == nil && err == nil || s.err != nil && errors.Is(err, s.err) {
			return s.code, s.reason
		}
	}
	return websocket.StatusInternalError, "server error" // the Directory evicted the user, for one
}

// Close codes 4000–4099 are this protocol's own (PROTOCOL.md).
const (
	StatusSlowConsumer websocket.StatusCode = 4000 // writes to the client made no progress
	StatusLoginTimeout websocket.StatusCode = 4001 // not logged in within the login timeout
	StatusFrameTimeout websocket.StatusCode = 4002 // a frame begun was not completed in time
)

var closeStatuses = []struct {
	err    error
	code   websocket.StatusCode
	reason string
}{
	{nil, websocket.StatusNormalClosure, ""},
	{chat.ErrServerClosed, websocket.StatusGoingAway, "server shutting down"},
	{chat.ErrTooManyConns, websocket.StatusTryAgainLater, "too many connections"},
	{chat.ErrFlooding, websocket.StatusPolicyViolation, "too many requests past the rate limit"},
	{chat.ErrFrameTooLarge, websocket.StatusPolicyViolation, "frame too large"},
	{ErrMessageTooLarge, websocket.StatusMessageTooBig, "message too large"},
	{ErrTextMessage, websocket.StatusUnsupportedData, "binary messages only"},
	{chat.ErrSlowConsumer, StatusSlowConsumer, "slow consumer"},
	{chat.ErrLoginTimeout, StatusLoginTimeout, "not logged in in time"},
	{chat.ErrFrameTimeout, StatusFrameTimeout, "frame not completed in time"},
	{ErrNoPong, websocket.StatusPolicyViolation, "ping not answered"},
}

// Buffer sizes of an upgraded connection. net/http's are 4 KiB, which
// takes two or three system calls per message of a busy client.
const (
	readBufferSize  = 16 << 10
	writeBufferSize = 16 << 10
)

// bigBuffers gives the connection that coder/websocket hijacks buffers of
// readBufferSize and writeBufferSize.
type bigBuffers struct{ http.ResponseWriter }

// Hijack hijacks the connection, with larger buffers.
func (w bigBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// Bytes the client sent after its request may be buffered already:
	// they go into the new buffer (where coder/websocket looks for them).
	early, _ := brw.Reader.Peek(brw.Reader.Buffered())
	r := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), nc), readBufferSize)
	if len(early) > 0 {
		if _, err := r.Peek(len(early)); err != nil {
			nc.Close()
			return nil, nil, err
		}
	}
	return nc, bufio.NewReadWriter(r, bufio.NewWriterSize(nc, writeBufferSize)), nil
}

// Unwrap returns the ResponseWriter, for http.ResponseController.
func (w bigBuffers) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// remoteAddr returns the client's address as a *net.TCPAddr, as
// chat.Server expects of TCP clients (for MaxConnsPerIP).
func remoteAddr(r *http.Request) net.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return stringAddr(r.RemoteAddr)
}

// localAddr returns the address the HTTP server accepted the request on.
func localAddr(r *http.Request) net.Addr {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a
	}
	return stringAddr("")
}

// stringAddr is an address known only by its text.
type stringAddr string

func (a stringAddr) Network() string { return "websocket" }
func (a stringAddr) String() string  { return string(a) }
