package chat

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// DefaultAddr is the address ListenAndServe uses when given "".
const DefaultAddr = "127.0.0.1:9000"

// Defaults for the Server's zero-valued fields.
const (
	DefaultQueueSize    = 1 << 20          // bytes queued per connection
	DefaultWriteTimeout = 10 * time.Second // longest write without progress
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

	// Directory is the table of logged-in users. Nil means a
	// MemoryDirectory private to this server.
	Directory Directory

	// Optional callbacks. The filters run on the connection's reading
	// goroutine before the request takes effect; the hooks after it. All
	// may be called from many goroutines at once and should return quickly.
	AllowLogin   LoginFilter
	AllowMessage MessageFilter
	OnLogin      LoginHook
	OnLogout     LogoutHook
	OnMessage    MessageHook

	initOnce sync.Once
	dir      Directory
	log      *zap.Logger

	mu         sync.Mutex
	listeners  map[*net.Listener]struct{}
	conns      map[*conn]struct{}
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
	c := &conn{srv: s, nc: nc}
	if err := s.addConn(c); err != nil {
		nc.Close()
		if err == ErrTooManyConns {
			s.log.Warn("connection refused", zap.Stringer("remote", nc.RemoteAddr()), zap.Error(err))
		}
		return err
	}
	defer s.removeConn(c)
	return c.serve()
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
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	c.out = newOutbox(c.nc, s.queueSize(), s.writeTimeout(), c.writeFailed)
	s.conns[c] = struct{}{}
	s.serving.Add(1)
	return nil
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.serving.Done()
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
	srv  *Server
	nc   net.Conn
	out  *outbox
	log  *zap.Logger
	name string // the logged-in name, "" if none; only the reader uses it

	// slow is set when the writer gave up on the client.
	slow atomic.Bool
}

// errSlowConsumer is the reason given for a client that stopped reading.
var errSlowConsumer = errors.New("chat: slow consumer: write made no progress")

func (c *conn) writeFailed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.slow.Store(true)
		c.srv.log.Warn("slow consumer dropped", zap.Stringer("remote", c.nc.RemoteAddr()))
	}
	// Closing the connection (done by the outbox) ends the reader too.
}

// serve reads and answers requests until the connection ends.
func (c *conn) serve() error {
	s := c.srv
	c.log = s.log.With(zap.Stringer("remote", c.nc.RemoteAddr()))
	c.log.Info("connection opened")
	fr := NewFrameReader(c.nc, s.maxFrameSize())
	err := c.readLoop(fr)

	// The reason the connection ended, as ServeConn reports it.
	switch {
	case c.slow.Load():
		err = errSlowConsumer
	case s.inShutdown.Load():
		err = ErrServerClosed
	case errors.Is(err, io.EOF):
		err = nil
	}
	if c.name != "" {
		reason := err
		if reason == nil {
			reason = io.EOF // the client closed the connection
		}
		c.logout(reason)
	}
	if err == nil || err == ErrServerClosed || errors.Is(err, ErrFrameTooLarge) {
		c.out.closeWhenDrained() // flush the replies still owed
	} else {
		c.out.closeNow()
	}
	c.out.wait()
	if err != nil {
		c.log.Info("connection closed", zap.NamedError("reason", err))
	} else {
		c.log.Info("connection closed by client")
	}
	return err
}

func (c *conn) readLoop(fr *FrameReader) error {
	for {
		if !c.out.waitRoom() {
			return net.ErrClosed
		}
		if c.srv.inShutdown.Load() && fr.Buffered() == 0 {
			return ErrServerClosed
		}
		f, err := fr.Next()
		switch {
		case err == nil:
			c.handle(f)
		case errors.Is(err, ErrMalformedFrame):
			c.log.Warn("malformed frame", zap.Error(err))
			c.out.reply(ResultMalformed)
		case errors.Is(err, ErrFrameTooLarge):
			c.log.Warn("malformed frame; closing", zap.Error(err))
			c.out.reply(ResultMalformed)
			return err
		default:
			return err
		}
	}
}

// handle answers one request.
func (c *conn) handle(f Frame) {
	r := ResultFailure
	switch f.Type {
	case TypeLogin:
		if c.login(f.Name) {
			r = ResultOK
		}
	case TypeList:
		names := c.srv.dir.Names()
		if NamesSize(names) <= c.srv.maxFrameSize() {
			c.out.replyNames(names)
			return
		}
	case TypeSendTo:
		if c.sendTo(f.Name, f.Text) {
			r = ResultOK
		}
	case TypeLogout:
		if c.name != "" {
			c.logout(nil)
			r = ResultOK
		}
	default:
		// A server-to-client frame sent to the server.
		c.log.Warn("malformed frame", zap.Stringer("type", f.Type))
		r = ResultMalformed
	}
	c.out.reply(r)
}

func (c *conn) login(b []byte) bool {
	s := c.srv
	if c.name != "" || !validNameBytes(b) {
		return false
	}
	name := string(b)
	if s.AllowLogin != nil {
		if err := s.AllowLogin(c.nc, name); err != nil {
			c.log.Info("login refused", zap.String("name", name), zap.Error(err))
			return false
		}
	}
	if !s.dir.Login(name, c.out) {
		return false
	}
	c.name = name
	c.log = c.log.With(zap.String("name", name))
	c.log.Info("login")
	if s.OnLogin != nil {
		s.OnLogin(c.nc, name)
	}
	return true
}

func (c *conn) logout(reason error) {
	s := c.srv
	name := c.name
	s.dir.Logout(name, c.out)
	c.name = ""
	c.log.Info("logout", zap.NamedError("reason", reason))
	c.log = s.log.With(zap.Stringer("remote", c.nc.RemoteAddr()))
	if s.OnLogout != nil {
		s.OnLogout(c.nc, name, reason)
	}
}

func (c *conn) sendTo(to, text []byte) bool {
	s := c.srv
	if c.name == "" || !validTextBytes(text) {
		return false
	}
	p, ok := s.dir.Lookup(to)
	if !ok {
		return false
	}
	if s.AllowMessage != nil {
		if err := s.AllowMessage(c.name, string(to), string(text)); err != nil {
			c.log.Info("message refused", zap.ByteString("to", to), zap.Error(err))
			return false
		}
	}
	if err := p.Deliver(c.name, text); err != nil {
		c.log.Debug("message not queued", zap.ByteString("to", to), zap.Error(err))
		return false
	}
	if s.OnMessage != nil {
		s.OnMessage(c.name, string(to), string(text))
	}
	return true
}
