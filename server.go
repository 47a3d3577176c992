package chat

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"
)

// DefaultAddr is the address ListenAndServe uses when given "".
const DefaultAddr = "127.0.0.1:9000"

// Defaults for the Server's zero-valued fields.
const (
	DefaultQueueSize    = 1 << 20          // bytes queued per connection
	DefaultWriteTimeout = 10 * time.Second // longest write without progress
	DefaultFrameTimeout = 30 * time.Second // longest wait for the rest of a frame
	DefaultKeepAlive    = 30 * time.Second // TCP keep-alive period
	DefaultFloodLimit   = 100              // rate-limited requests in a row before closing
	DefaultMaxPending   = 1024             // messages per connection waiting for other servers
)

// ErrServerClosed is returned by Serve, ListenAndServe and ServeConn once
// Shutdown or Close has been called.
var ErrServerClosed = errors.New("chat: server closed")

// ErrTooManyConns is returned by ServeConn for a connection refused because
// the server already holds MaxConns connections.
var ErrTooManyConns = errors.New("chat: too many connections")

// LoginFilter decides whether the client on conn may log in as name; a
// non-nil error vetoes the login and the client gets Failure.
type LoginFilter func(conn net.Conn, name string) error

// MessageFilter decides whether the user from may send text to the user to;
// a non-nil error vetoes the message and the sender gets Failure.
type MessageFilter func(from, to, text string) error

// LoginHook observes a successful login of name on conn.
type LoginHook func(conn net.Conn, name string)

// LogoutHook observes name leaving: err is nil for a logout request and
// otherwise says why the connection ended.
type LogoutHook func(conn net.Conn, name string, err error)

// MessageHook observes a message from the user from, queued for the user to.
type MessageHook func(from, to, text string)

// Server relays messages between the clients connected to it. Its exported
// fields are its configuration; set them before serving and do not change
// them after. The zero value is a working server with the defaults below.
type Server struct {
	// Logger receives the server's logs: connections, logins, logouts,
	// disconnects with their reason, malformed frames and slow consumers.
	// Nil means no logging.
	Logger *zap.Logger

	// MaxFrameSize is the largest frame body accepted or sent, in bytes.
	// Zero means DefaultMaxFrameSize.
	MaxFrameSize int

	// MaxConns is the largest number of connections served at once; more
	// are closed as soon as they are accepted. Zero means no limit.
	MaxConns int

	// QueueSize bounds, in bytes, the frames waiting to be written to one
	// connection. A relayed message that does not fit is refused (its
	// sender gets Failure); a message is always accepted by an empty
	// queue. Zero means DefaultQueueSize.
	QueueSize int

	// WriteTimeout is how long a write to a client may make no progress
	// before the client is taken for a slow consumer: its connection is
	// closed and it is logged out. Zero means DefaultWriteTimeout.
	WriteTimeout time.Duration

	// MaxConnsPerIP is the largest number of TCP connections served at
	// once from one remote IP address; more are closed as soon as they are
	// accepted. Zero means no limit.
	MaxConnsPerIP int

	// LoginTimeout is how long a connection may stay open without being
	// logged in (from its start, or from its last logout) before it is
	// closed. Zero means no limit.
	LoginTimeout time.Duration

	// FrameTimeout is how long the rest of a frame may take to arrive once
	// its first bytes have, so that a client dribbling bytes cannot hold a
	// connection forever. Zero means DefaultFrameTimeout; negative, no limit.
	FrameTimeout time.Duration

	// RateLimit is the number of requests per second a connection may make
	// on average, with bursts of RateBurst; a request beyond them is
	// answered Failure. Zero means no limit.
	RateLimit float64

	// RateBurst is the largest burst of requests RateLimit allows. Zero
	// means as many as RateLimit allows in one second (at least 1).
	RateBurst int

	// FloodLimit is the number of requests in a row refused by the rate
	// limit after which the connection is closed. Zero means
	// DefaultFloodLimit.
	FloodLimit int

	// MaxPending bounds the messages of one connection whose outcome waits
	// for another server (see Peer): at the bound, the server reads no
	// more requests from that connection until an outcome comes. Their
	// replies wait too, and the replies after them, so that every reply
	// goes out in the order of the requests. Zero means DefaultMaxPending.
	MaxPending int

	// KeepAlive is the TCP keep-alive period of accepted connections.
	// Zero means DefaultKeepAlive; negative turns keep-alives off.
	KeepAlive time.Duration

	// Directory is the table of logged-in users. Nil means a
	// MemoryDirectory private to this server.
	Directory Directory

	// Optional callbacks. The filters run on the connection's reading
	// goroutine before the request takes effect; the hooks after it. All
	// may be called from many goroutines at once and should return quickly:
	// while one runs, that connection's requests wait, and so do the
	// replies and messages its earlier requests in the same read queued.
	AllowLogin   LoginFilter
	AllowMessage MessageFilter
	OnLogin      LoginHook
	OnLogout     LogoutHook
	OnMessage    MessageHook

	testHookBlocked func() // see outbox

	initOnce sync.Once
	log      *zap.Logger
	dir      Directory

	mu         sync.Mutex
	listeners  map[*net.Listener]struct{}
	conns      map[*conn]struct{}
	perIP      map[string]int // connections by remote IP, if MaxConnsPerIP is set
	closed     counters       // the totals of closed connections
	events     serverCounters
	inShutdown atomic.Bool
	serving    sync.WaitGroup // Serve loops and connections
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.dir = s.Directory
		if s.dir == nil {
			s.dir = &MemoryDirectory{}
		}
		s.log = s.Logger
		if s.log == nil {
			s.log = zap.NewNop()
		}
	})
}

func (s *Server) maxFrameSize() int {
	if s.MaxFrameSize > 0 {
		return s.MaxFrameSize
	}
	return DefaultMaxFrameSize
}

func (s *Server) queueSize() int {
	if s.QueueSize > 0 {
		return s.QueueSize
	}
	return DefaultQueueSize
}

func (s *Server) writeTimeout() time.Duration {
	if s.WriteTimeout > 0 {
		return s.WriteTimeout
	}
	return DefaultWriteTimeout
}

func (s *Server) frameTimeout() time.Duration {
	if s.FrameTimeout == 0 {
		return DefaultFrameTimeout
	}
	return max(s.FrameTimeout, 0)
}

func (s *Server) maxPending() int {
	if s.MaxPending > 0 {
		return s.MaxPending
	}
	return DefaultMaxPending
}

func (s *Server) floodLimit() int {
	if s.FloodLimit > 0 {
		return s.FloodLimit
	}
	return DefaultFloodLimit
}

// newLimiter returns the rate limiter of a new connection, or nil.
func (s *Server) newLimiter() *rate.Limiter {
	if s.RateLimit <= 0 {
		return nil
	}
	burst := s.RateBurst
	if burst <= 0 {
		burst = max(int(s.RateLimit), 1)
	}
	return rate.NewLimiter(rate.Limit(s.RateLimit), burst)
}

// setKeepAlive applies KeepAlive to a TCP connection, under TLS or not.
func (s *Server) setKeepAlive(nc net.Conn) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	tcp, ok := nc.(*net.TCPConn)
	if !ok {
		return
	}
	if s.KeepAlive < 0 {
		tcp.SetKeepAlive(false)
		return
	}
	period := s.KeepAlive
	if period == 0 {
		period = DefaultKeepAlive
	}
	tcp.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: period, Interval: period, Count: 3})
}

// ListenAndServe listens on the TCP address addr (DefaultAddr if empty) and
// serves it. It returns ErrServerClosed after Shutdown or Close.
func (s *Server) ListenAndServe(addr string) error {
	if s.inShutdown.Load() {
		return ErrServerClosed
	}
	if addr == "" {
		addr = DefaultAddr
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(l)
}

// Serve accepts connections on l and serves each in its own goroutine. It
// closes l when it returns, which is after Shutdown or Close (returning
// ErrServerClosed) or on an error from l that is not temporary.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	if !s.track(&l, true) {
		l.Close()
		return ErrServerClosed
	}
	defer s.track(&l, false)
	defer l.Close()

	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("in", backoff))
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.setKeepAlive(nc)
		if !s.addServing() {
			nc.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.serving.Done()
			s.ServeConn(nc)
		}()
	}
}

// isTemporary reports whether an accept error is worth retrying, such as
// running out of file descriptors.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// track adds or removes a listener; it reports false if the server is
// shutting down.
func (s *Server) track(l *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.inShutdown.Load() {
			return false
		}
		if s.listeners == nil {
			s.listeners = make(map[*net.Listener]struct{})
		}
		s.listeners[l] = struct{}{}
		s.serving.Add(1)
	} else {
		delete(s.listeners, l)
		s.serving.Done()
	}
	return true
}

// addServing counts one more goroutine that Shutdown and Close wait for,
// unless the server is shutting down.
func (s *Server) addServing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inShutdown.Load() {
		return false
	}
	s.serving.Add(1)
	return true
}

// ServeConn serves one connection (a net.Pipe end, for instance) on the
// calling goroutine and returns when it has ended and been closed. It
// returns nil when the client closed the connection, ErrServerClosed when
// the server did, ErrTooManyConns when it was refused, and otherwise the
// reason the connection ended.
func (s *Server) ServeConn(nc net.Conn) error {
	s.init()
	c := &conn{srv: s, nc: nc, ip: remoteIP(nc)}
	if err := s.addConn(c); err != nil {
		return s.refuse(nc, err)
	}
	defer s.removeConn(c)
	return c.serve()
}

// refuse closes a connection that addConn refused.
//
//go:noinline
func (s *Server) refuse(nc net.Conn, err error) error {
	if err == ErrTooManyConns {
		// Counted before the close, which the client may see at once.
		s.events.refused.Add(1)
		s.log.Warn("connection refused", zap.Stringer("remote", nc.RemoteAddr()), zap.Error(err))
	}
	nc.Close()
	return err
}

func (s *Server) addConn(c *conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inShutdown.Load() {
		return ErrServerClosed
	}
	if s.MaxConns > 0 && len(s.conns) >= s.MaxConns {
		return ErrTooManyConns
	}
	if s.MaxConnsPerIP > 0 && c.ip != "" {
		if s.perIP[c.ip] >= s.MaxConnsPerIP {
			return ErrTooManyConns
		}
		if s.perIP == nil {
			s.perIP = make(map[string]int)
		}
		s.perIP[c.ip]++
	} else {
		c.ip = "" // not counted
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	c.out = newOutbox(c.nc, s.queueSize(), s.maxPending(), s.writeTimeout(), &c.stats, c.writeFailed)
	c.out.testHookBlocked = s.testHookBlocked
	s.conns[c] = struct{}{}
	s.events.accepted.Add(1)
	s.serving.Add(1)
	return nil
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	if c.ip != "" {
		if s.perIP[c.ip]--; s.perIP[c.ip] == 0 {
			delete(s.perIP, c.ip)
		}
	}
	c.stats.addTo(&s.closed)
	s.mu.Unlock()
	s.serving.Done()
}

// remoteIP returns the IP address of a TCP peer, or "".
func remoteIP(nc net.Conn) string {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return ""
}

// Shutdown stops the server gracefully: it closes the listeners, stops
// reading new requests, lets every connection's queued replies and messages
// be written, and closes the connections. If ctx ends first, Shutdown
// closes what is left at once and returns ctx.Err(). Either way, no
// goroutine of the server's is left when it returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginShutdown(false)
	done := make(chan struct{})
	go func() {
		s.serving.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.beginShutdown(true)
		<-done
		return ctx.Err()
	}
}

// Close closes the listeners and every connection at once, dropping what is
// queued, and waits for the server's goroutines to end.
func (s *Server) Close() error {
	s.beginShutdown(true)
	s.serving.Wait()
	return nil
}

func (s *Server) beginShutdown(now bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inShutdown.Store(true)
	for l := range s.listeners {
		(*l).Close()
	}
	for c := range s.conns {
		if now {
			c.out.closeNow()
		} else {
			// Wake the reader; it sees inShutdown and stops reading.
			c.nc.SetReadDeadline(time.Now())
		}
	}
}

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

// Reasons a connection ends that the server decides, as ServeConn returns
// them and OnLogout receives them.
var (
	// ErrSlowConsumer: a write to the client made no progress for
	// WriteTimeout; what was queued for it is dropped.
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
)

// evictError is why a connection ends when the Directory evicts its user.
type evictError struct{ reason error }

func (e *evictError) Error() string { return "chat: evicted by the directory: " + e.reason.Error() }
func (e *evictError) Unwrap() error { return e.reason }

// writeFailed is the outbox's onFail: it records why the outbox closed the
// connection, for serve to report.
func (c *conn) writeFailed(err error) {
	if ev := (*evictError)(nil); errors.As(err, &ev) {
		c.evicted.Store(&err)
		c.srv.log.Warn("user evicted", zap.Stringer("remote", c.nc.RemoteAddr()), zap.Error(ev.reason))
		return
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.slow.Store(true)
		c.srv.events.slow.Add(1)
		c.srv.log.Warn("slow consumer dropped", zap.Stringer("remote", c.nc.RemoteAddr()))
	}
	// Closing the connection (done by the outbox) ends the reader too.
}

// Read reads from the connection for the FrameReader, first arming the read
// deadline that applies: the rest of a partial frame must arrive within
// FrameTimeout, a connection not logged in must log in by LoginTimeout.
func (c *conn) Read(p []byte) (int, error) {
	var want time.Time
	if c.fr.Buffered() > 0 {
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
	c.flush() // before waiting for more requests
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
	c.fr = NewFrameReader(c, s.maxFrameSize())
	c.limiter = s.newLimiter()
	if s.LoginTimeout > 0 {
		c.loginBy = time.Now().Add(s.LoginTimeout)
	}
	err := c.readLoop()
	for err == errLogsPending {
		c.flushLogs() // here, where the stack is shallowest
		err = c.readLoop()
	}
	c.flush()

	// The reason the connection ended, as ServeConn reports it.
	switch {
	case c.slow.Load():
		err = ErrSlowConsumer
	case c.evicted.Load() != nil:
		err = *c.evicted.Load()
	case s.inShutdown.Load():
		err = ErrServerClosed
	case errors.Is(err, io.EOF):
		err = nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = ErrLoginTimeout
		if !c.frameBy.IsZero() && !time.Now().Before(c.frameBy) {
			err = ErrFrameTimeout
		}
		s.events.timedOut.Add(1)
	case errors.Is(err, ErrFrameTooLarge):
		s.events.tooLarge.Add(1)
	case err == ErrFlooding:
		s.events.floods.Add(1)
	}
	if c.name != "" {
		reason := err
		if reason == nil {
			reason = io.EOF // the client closed the connection
		}
		c.logout(reason)
	}
	if err == nil || err == ErrServerClosed || err == ErrFlooding || errors.Is(err, ErrFrameTooLarge) {
		c.out.closeWhenDrained() // flush the replies still owed
	} else {
		c.out.closeNow()
	}
	c.out.wait()
	c.out.linger() // closes what closeWhenDrained left open
	if err != nil {
		c.logAt(zap.InfoLevel, "connection closed", zap.NamedError("reason", err))
	} else {
		c.logAt(zap.InfoLevel, "connection closed by client")
	}
	c.flushLogs()
	return err
}

func (c *conn) readLoop() error {
	for {
		if len(c.logs) > 0 {
			return errLogsPending
		}
		if !c.out.waitRoom(c.flush) {
			return net.ErrClosed
		}
		if c.srv.inShutdown.Load() && c.fr.Buffered() == 0 {
			return ErrServerClosed
		}
		f, err := c.fr.Next()
		if err != nil && !errors.Is(err, ErrMalformedFrame) {
			return c.unreadable(err) // frameBy kept: serve tells a frame timeout by it
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
		c.logAt(zap.WarnLevel, "frame too large; closing", zap.Error(err))
		c.out.reply(ResultMalformed)
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
		c.logAt(zap.WarnLevel, "flooding; closing", zap.Int("refused", c.flooding))
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

// handle answers one well-formed request. Each case queues exactly one
// reply, or holds its place (see Receipt).
func (c *conn) handle(f Frame) {
	switch f.Type {
	case TypeLogin:
		c.stats.framesIn[inLogin].Add(1)
		c.answer(c.login(f.Name))
	case TypeList:
		c.stats.framesIn[inList].Add(1)
		c.flush() // the Directory may wait on the network
		names := c.srv.dir.Names()
		if NamesSize(names) > c.srv.maxFrameSize() {
			c.answer(FailListTooLarge)
			return
		}
		c.out.replyNames(names)
	case TypeSendTo:
		c.stats.framesIn[inSendTo].Add(1)
		c.sendTo(f.Name, f.Text)
	case TypeLogout:
		c.stats.framesIn[inLogout].Add(1)
		if c.name == "" {
			c.answer(FailNotLoggedIn)
			return
		}
		c.logout(nil)
		c.answer(succeeded)
	default:
		// A server-to-client frame sent to the server.
		c.stats.framesIn[inMalformed].Add(1)
		c.logAt(zap.WarnLevel, "malformed frame", zap.Stringer("type", f.Type))
		c.out.reply(ResultMalformed)
	}
}

// succeeded stands for the FailureReason of a request that succeeded, for
// answer.
const succeeded = numFailureReasons

// answer replies Success if why is succeeded, and otherwise Failure,
// counted under why.
func (c *conn) answer(why FailureReason) {
	if why == succeeded {
		c.out.reply(ResultOK)
		return
	}
	c.stats.failures[why].Add(1)
	c.out.reply(ResultFailure)
}

func (c *conn) login(b []byte) FailureReason {
	s := c.srv
	switch {
	case c.name != "":
		return FailAlreadyLoggedIn
	case !validNameBytes(b):
		return FailBadName
	}
	name := string(b)
	if s.AllowLogin != nil {
		if err := s.AllowLogin(c.nc, name); err != nil {
			c.logAt(zap.InfoLevel, "login refused", zap.String("name", name), zap.Error(err))
			return FailVetoed
		}
	}
	c.flush() // the Directory may wait on the network
	if err := s.dir.Login(name, c.out); err != nil {
		if errors.Is(err, ErrNameTaken) {
			return FailNameTaken
		}
		if errors.Is(err, ErrNameLookalike) {
			return FailLookalike
		}
		c.logAt(zap.WarnLevel, "login not recorded", zap.String("name", name), zap.Error(err))
		return FailUnavailable
	}
	c.name = name
	c.loginBy = time.Time{}
	s.events.users.Add(1)
	c.logAt(zap.InfoLevel, "login")
	if s.OnLogin != nil {
		s.OnLogin(c.nc, name)
	}
	return succeeded
}

func (c *conn) logout(reason error) {
	s := c.srv
	name := c.name
	c.flush() // the Directory may wait on the network
	s.dir.Logout(name, c.out)
	s.events.users.Add(-1)
	c.logAt(zap.InfoLevel, "logout", zap.NamedError("reason", reason))
	c.name = ""
	if s.LoginTimeout > 0 {
		c.loginBy = time.Now().Add(s.LoginTimeout)
	}
	if s.OnLogout != nil {
		s.OnLogout(c.nc, name, reason)
	}
}

// undelivered returns the reason for the Failure of a message that was not
// queued because of err.
func undelivered(err error) FailureReason {
	if errors.Is(err, ErrQueueFull) || errors.Is(err, ErrPeerGone) {
		return FailQueueFull
	}
	return FailUnavailable
}

// notDelivered logs why a message was not queued, and returns the reason
// for the Failure.
//
//go:noinline
func (c *conn) notDelivered(to []byte, err error) FailureReason {
	why := undelivered(err)
	lvl := zap.WarnLevel
	if why == FailQueueFull {
		lvl = zap.DebugLevel
	}
	c.logAt(lvl, "message not queued", zap.ByteString("to", to), zap.Error(err))
	return why
}

// sendTo relays a message. The reply is queued at once, unless the
// recipient's Peer must ask another server: then the reply's place is held
// until the Peer settles it through the Receipt (settle).
func (c *conn) sendTo(to, text []byte) {
	s := c.srv
	if c.name == "" {
		c.answer(FailNotLoggedIn)
		return
	}
	if !validTextBytes(text) {
		c.answer(FailBadText)
		return
	}
	p, found := s.dir.Lookup(to)
	if !found {
		c.answer(FailNoRecipient)
		return
	}
	if s.AllowMessage != nil {
		if err := s.AllowMessage(c.name, string(to), string(text)); err != nil {
			c.logAt(zap.InfoLevel, "message refused", zap.ByteString("to", to), zap.Error(err))
			c.answer(FailVetoed)
			return
		}
	}
	r := Receipt{c: c, n: c.out.next} // the ordinal of this request's reply
	err := p.Deliver(c.name, text, r)
	if err != nil && err != ErrPending {
		c.answer(c.notDelivered(to, err))
		return
	}
	// Written, or sent on, by c.flush, with everything else this batch of
	// requests queues.
	if len(c.touched) == 0 || c.touched[len(c.touched)-1] != p {
		c.touched = append(c.touched, p)
	}
	if err == ErrPending {
		if s.OnMessage != nil {
			c.keepForHook(r.n, string(to), string(text))
		}
		if res, settled := c.out.hold(r.n, HeaderSize+len(c.name)+len(to)+len(text)); settled && s.OnMessage != nil {
			// Settled before its place was held: settle could not call
			// the hook, unless it found the message kept.
			if m, kept := c.takeForHook(r.n); kept && res == ResultOK {
				s.OnMessage(m.from, m.to, m.text)
			}
		}
		return
	}
	c.stats.relayed.Add(1)
	if s.OnMessage != nil {
		s.OnMessage(c.name, string(to), string(text))
	}
	c.answer(succeeded)
}

// pendingMessage is a message waiting for its outcome, kept for OnMessage.
type pendingMessage struct {
	from, to, text string
}

// keepForHook keeps a pending message for the OnMessage hook.
//
//go:noinline
func (c *conn) keepForHook(n uint64, to, text string) {
	c.hookMu.Lock()
	if c.hooked == nil {
		c.hooked = make(map[uint64]pendingMessage)
	}
	c.hooked[n] = pendingMessage{c.name, to, text}
	c.hookMu.Unlock()
}

// takeForHook returns, and forgets, the message keepForHook kept for n.
func (c *conn) takeForHook(n uint64) (pendingMessage, bool) {
	c.hookMu.Lock()
	defer c.hookMu.Unlock()
	m, ok := c.hooked[n]
	delete(c.hooked, n)
	return m, ok
}

// settle is Receipt.Done: it counts the outcome of the pending message
// whose reply has ordinal n, and has the reply written. It is called from
// any goroutine.
func (c *conn) settle(n uint64, err error, write bool) {
	s := c.srv
	var m pendingMessage
	var kept bool
	if s.OnMessage != nil {
		m, kept = c.takeForHook(n)
	}
	if err != nil {
		if c.out.settle(n, ResultFailure, write) {
			why := undelivered(err)
			c.stats.failures[why].Add(1)
			if why != FailQueueFull {
				s.log.Warn("message not delivered", zap.Stringer("remote", c.nc.RemoteAddr()), zap.Error(err))
			}
		}
		return
	}
	if c.out.settle(n, ResultOK, write) {
		c.stats.relayed.Add(1)
		if kept {
			s.OnMessage(m.from, m.to, m.text)
		}
	}
}
