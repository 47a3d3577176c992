package chat

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
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

// positive returns v, or def if v is not positive: a field's zero value
// means its default.
func positive[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

func (s *Server) maxFrameSize() int           { return positive(s.MaxFrameSize, DefaultMaxFrameSize) }
func (s *Server) queueSize() int              { return positive(s.QueueSize, DefaultQueueSize) }
func (s *Server) writeTimeout() time.Duration { return positive(s.WriteTimeout, DefaultWriteTimeout) }
func (s *Server) maxPending() int             { return positive(s.MaxPending, DefaultMaxPending) }
func (s *Server) floodLimit() int             { return positive(s.FloodLimit, DefaultFloodLimit) }

// frameTimeout is FrameTimeout, whose zero value means the default and a
// negative one none.
func (s *Server) frameTimeout() time.Duration {
	if s.FrameTimeout == 0 {
		return DefaultFrameTimeout
	}
	return max(s.FrameTimeout, 0)
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
	c := newConn(s, nc)
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
