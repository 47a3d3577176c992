package chat

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"
)

// A connection's reading goroutine runs serve: it reads a request, handles
// it (requests.go) and reads the next. Replies and relayed messages are
// queued in the connection's outbox, and written in one go when every
// request read has been handled (readLoop's flush), so a burst of requests
// costs one write. A connection ends in end (ending.go).

// conn is the server's side of one client connection.
type conn struct {
	srv   *Server
	nc    net.Conn
	ip    string // the remote IP counted against MaxConnsPerIP, or ""
	out   *outbox
	stats counters

	// Used by the reading goroutine only.
	fr       *FrameReader
	name     string        // the logged-in name, "" if none
	logs     []pendingLog  // lines logged and not yet written
	touched  []Peer        // peers handed messages since the last flush
	limiter  *rate.Limiter // nil without a rate limit
	flooding int           // requests refused by the rate limit in a row
	loginBy  time.Time     // when LoginTimeout expires; zero when logged in or unlimited
	frameBy  time.Time     // when the frame being read must be complete; zero if not armed
	deadline time.Time     // the read deadline set on nc

	hookMu sync.Mutex
	hooked map[uint64]pendingMessage // pending messages, kept for OnMessage

	slow    atomic.Bool           // the writer gave up on the client
	evicted atomic.Pointer[error] // why the Directory evicted the user, if it did
}

// newConn returns the server's side of nc, with its outgoing queue.
func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, ip: remoteIP(nc), limiter: s.newLimiter()}
	c.out = newOutbox(nc, s.queueSize(), s.maxPending(), s.writeTimeout(), &c.stats, c.writeFailed)
	c.out.testHookBlocked = s.testHookBlocked
	c.fr = NewFrameReader(c, s.maxFrameSize())
	return c
}

// logAt logs msg about the connection, with its remote address and, once
// logged in, its name. It is called by the reading goroutine only.
//
// The line is written a little later, by flushLogs, when readLoop has
// returned to serve for it. Encoding and writing a line takes several
// kilobytes of stack; done deep in request handling it would double the
// stack that every idle connection's goroutine then keeps (from 4 to
// 8 KiB). For the same reason the fields are added per line rather than
// kept in a child logger per connection, which would hold an encoder
// buffer of about a kilobyte for as long as the connection lives.
func (c *conn) logAt(lvl zapcore.Level, msg string, fields ...zap.Field) {
	log := c.srv.log
	if !log.Core().Enabled(lvl) {
		return
	}
	all := make([]zap.Field, 0, 2+len(fields))
	all = append(all, zap.String("remote", c.nc.RemoteAddr().String()))
	if c.name != "" {
		all = append(all, zap.String("name", c.name))
	}
	c.logs = append(c.logs, pendingLog{
		entry:  zapcore.Entry{Level: lvl, Time: time.Now(), LoggerName: log.Name(), Message: msg},
		fields: append(all, fields...),
	})
}

// pendingLog is a line logged by logAt and not yet written.
type pendingLog struct {
	entry  zapcore.Entry
	fields []zap.Field
}

// flushLogs writes the lines logged by logAt, through the Logger's core.
//
//go:noinline
func (c *conn) flushLogs() {
	core := c.srv.log.Core()
	for i, l := range c.logs {
		if ce := core.Check(l.entry, nil); ce != nil {
			ce.Write(l.fields...)
		}
		c.logs[i] = pendingLog{}
	}
	c.logs = c.logs[:0]
}

// errLogsPending returns from readLoop to serve to write what logAt logged.
var errLogsPending = errors.New("chat: log lines pending")

// Read reads from the connection for the FrameReader, first arming the read
// deadline that applies: the rest of a partial frame must arrive within
// FrameTimeout, a connection not logged in must log in by LoginTimeout.
func (c *conn) Read(p []byte) (int, error) {
	var want time.Time
	if c.fr.buffered() > 0 {
		if t := c.srv.frameTimeout(); t > 0 && c.frameBy.IsZero() {
			c.frameBy = time.Now().Add(t)
		}
		want = c.frameBy
	}
	if !c.loginBy.IsZero() && (want.IsZero() || c.loginBy.Before(want)) {
		want = c.loginBy
	}
	if !want.Equal(c.deadline) {
		c.deadline = want
		c.nc.SetReadDeadline(want)
		if c.srv.inShutdown.Load() {
			// Shutdown's deadline may have been overwritten just now.
			c.nc.SetReadDeadline(time.Now())
		}
	}
	n, err := c.nc.Read(p)
	c.stats.bytesIn.Add(uint64(n))
	return n, err
}

// flush writes the replies and messages queued by the requests handled
// since the last flush, and has the peers given messages send them on: the
// reading goroutine calls it when it has handled every request it has
// read, before it waits for more.
func (c *conn) flush() {
	for i, p := range c.touched {
		p.Flush()
		c.touched[i] = nil
	}
	c.touched = c.touched[:0]
	c.out.flush()
}

// serve reads and answers requests until the connection ends.
func (c *conn) serve() error {
	s := c.srv
	c.logAt(zap.InfoLevel, "connection opened")
	c.flushLogs()
	if s.LoginTimeout > 0 {
		c.loginBy = time.Now().Add(s.LoginTimeout)
	}
	err := c.readLoop()
	for err == errLogsPending {
		c.flushLogs() // here, where the stack is shallowest
		err = c.readLoop()
	}
	c.flush()
	return c.end(c.reason(err))
}

// readLoop reads and handles requests until the connection ends, or until
// lines have been logged (errLogsPending).
func (c *conn) readLoop() error {
	for {
		if len(c.logs) > 0 {
			return errLogsPending
		}
		if !c.out.waitRoom(c.flush) {
			return net.ErrClosed
		}
		if c.srv.inShutdown.Load() && c.fr.buffered() == 0 {
			return ErrServerClosed
		}
		if !c.fr.hasFrame() {
			// Every request read has been handled: write their replies and
			// messages, and send on what went to other servers, before
			// waiting for more.
			c.flush()
		}
		f, err := c.fr.Next()
		if err != nil && !errors.Is(err, ErrMalformedFrame) {
			return c.unreadable(err) // frameBy kept: reason tells a frame timeout by it
		}
		c.frameBy = time.Time{}
		if c.limiter != nil && !c.limiter.Allow() {
			if err := c.rateLimited(); err != nil {
				return err
			}
			continue
		}
		c.flooding = 0
		if err != nil {
			c.malformed(err)
			continue
		}
		c.handle(f)
	}
}

// The slow paths of readLoop live in functions of their own, kept out of
// line: readLoop's frame stays small, and so does the stack that every idle
// connection's goroutine holds while it waits for its next frame.

// unreadable ends the connection on err from the FrameReader.
//
//go:noinline
func (c *conn) unreadable(err error) error {
	if errors.Is(err, ErrFrameTooLarge) {
		c.stats.framesIn[inMalformed].Add(1)
		c.out.reply(ResultMalformed) // end logs the error
	}
	return err
}

// rateLimited refuses a request over the rate limit, and returns
// ErrFlooding when the connection has kept flooding.
//
//go:noinline
func (c *conn) rateLimited() error {
	c.stats.failures[FailRateLimited].Add(1)
	c.out.reply(ResultFailure)
	if c.flooding++; c.flooding >= c.srv.floodLimit() {
		return ErrFlooding
	}
	return nil
}

// malformed answers a frame that could not be parsed.
//
//go:noinline
func (c *conn) malformed(err error) {
	c.stats.framesIn[inMalformed].Add(1)
	c.logAt(zap.WarnLevel, "malformed frame", zap.Error(err))
	c.out.reply(ResultMalformed)
}
