package chat

import (
	"errors"
	"io"
	"os"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// How a connection ends
//
// A connection ends for one reason. ServeConn returns it, OnLogout
// receives it (io.EOF when the client closed the connection), and the
// reason alone decides the rest, in the table endings: whether the replies
// still owed are written before the connection closes (drain) or what is
// queued is dropped, which of the server's counters counts it (Stats), and
// how loud the line logged for it is. conn.end carries it out, and is the
// only way a served connection ends. PROTOCOL.md, "How a connection ends",
// tells what the client sees in each case.

// Reasons a connection ends that the server decides.
var (
	// ErrSlowConsumer: a write to the client made no progress for
	// WriteTimeout; what was queued for it is dropped (outbox.go).
	ErrSlowConsumer = errors.New("chat: slow consumer: writes made no progress")

	// ErrFlooding: FloodLimit requests in a row were refused by the rate
	// limit.
	ErrFlooding = errors.New("chat: too many requests past the rate limit")

	// ErrLoginTimeout: the connection was not logged in within
	// LoginTimeout.
	ErrLoginTimeout = errors.New("chat: not logged in in time")

	// ErrFrameTimeout: a frame begun was not completed within
	// FrameTimeout.
	ErrFrameTimeout = errors.New("chat: frame not completed in time")

	// ErrEvicted: the Directory evicted the user (see Evicter). The reason
	// it gave is wrapped too, for errors.Is.
	ErrEvicted = errors.New("chat: evicted by the directory")
)

// The server's counters of ended connections, in serverCounters.ended.
const (
	notCounted = iota
	endedSlow
	endedFlooding
	endedTimedOut
	endedTooLarge
	numEndedCounts
)

// ending is how a connection ends for one reason.
type ending struct {
	reason error
	drain  bool // write the replies still owed, then close; else drop what is queued
	count  int  // the server's counter of it, or notCounted
	level  zapcore.Level
}

// endings is how a connection ends, by reason. The first row whose reason
// matches (by errors.Is; nil for a client that closed the connection)
// applies; a reason not listed, an error of the network, ends as
// endedOtherwise.
var endings = [...]ending{
	{nil, true, notCounted, zapcore.InfoLevel},
	{ErrServerClosed, true, notCounted, zapcore.InfoLevel}, // Shutdown; Close drops, by closeNow
	{ErrFlooding, true, endedFlooding, zapcore.WarnLevel},
	{ErrFrameTooLarge, true, endedTooLarge, zapcore.WarnLevel}, // its 81 02 is owed
	{ErrSlowConsumer, false, endedSlow, zapcore.WarnLevel},     // nothing more can be written
	{ErrEvicted, false, notCounted, zapcore.WarnLevel},         // the Directory counts its own
	{ErrLoginTimeout, false, endedTimedOut, zapcore.InfoLevel},
	{ErrFrameTimeout, false, endedTimedOut, zapcore.InfoLevel},
}

var endedOtherwise = ending{drain: false, count: notCounted, level: zapcore.InfoLevel}

// reason returns why the connection ended, from err, which stopped the read
// loop, and from what the writer and the Directory recorded meanwhile.
func (c *conn) reason(err error) error {
	switch {
	case c.slow.Load():
		return ErrSlowConsumer
	case c.evicted.Load() != nil:
		return *c.evicted.Load()
	case c.srv.inShutdown.Load():
		return ErrServerClosed
	case errors.Is(err, io.EOF):
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		if !c.frameBy.IsZero() && !time.Now().Before(c.frameBy) {
			return ErrFrameTimeout
		}
		return ErrLoginTimeout
	}
	return err
}

// end ends the connection for reason, as endings says: it counts it, logs
// the user out, drains or drops the queue, closes the connection and logs
// the reason. It returns reason, for ServeConn.
func (c *conn) end(reason error) error {
	e := endedOtherwise
	for _, row := range endings {
		if row.reason == nil && reason == nil || row.reason != nil && errors.Is(reason, row.reason) {
			e = row
			break
		}
	}
	if e.count != notCounted {
		c.srv.events.ended[e.count].Add(1)
	}
	if c.name != "" {
		why := reason
		if why == nil {
			why = io.EOF // the client closed the connection
		}
		c.logout(why)
	}
	if e.drain {
		c.out.closeWhenDrained() // the replies still owed, then a lingering close
	} else {
		c.out.closeNow()
	}
	c.out.wait()
	c.out.linger() // closes what closeWhenDrained left open
	if reason == nil {
		c.logAt(e.level, "connection closed by client")
	} else {
		c.logAt(e.level, "connection closed", zap.NamedError("reason", reason))
	}
	c.flushLogs()
	return reason
}

// writeFailed is the outbox's onFail: it records why the outbox closed the
// connection (closing it ends the reader too), for end to report.
func (c *conn) writeFailed(err error) {
	switch {
	case errors.Is(err, ErrEvicted):
		c.evicted.Store(&err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.slow.Store(true)
	}
}
