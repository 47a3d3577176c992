package chat

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// Errors returned by the Client's requests.
var (
	// ErrFailure is the server's answer Failure: the request was refused
	// (a name taken, a recipient not logged in, a full queue, ...).
	ErrFailure = errors.New("chat: failure")

	// ErrMalformedPacket is the server's answer that it could not parse the
	// request: a bug in the client or the server.
	ErrMalformedPacket = errors.New("chat: malformed packet")

	// ErrClosed reports a request on a client whose connection has ended.
	// Client.Err wraps it with the reason.
	ErrClosed = errors.New("chat: connection closed")

	// ErrProtocol reports a frame from the server that breaks the protocol.
	ErrProtocol = errors.New("chat: protocol error")
)

// Message is a message relayed by the server.
type Message struct {
	From string // the sender's user name
	Text string
}

// MessageHandler receives each incoming message. It runs on the client's
// reading goroutine, one message at a time in the order they arrive, so it
// should return quickly, and it must not wait for the reply to a request
// of the same Client (that reply is read by the same goroutine).
type MessageHandler func(Message)

// An Option configures a Client.
type Option func(*clientOptions)

type clientOptions struct {
	tls          *tls.Config
	onMessage    MessageHandler
	maxFrameSize int
	dialer       net.Dialer
}

// WithTLS makes Dial connect over TLS with the given configuration. A nil
// ServerName is taken from the address.
func WithTLS(cfg *tls.Config) Option {
	return func(o *clientOptions) { o.tls = cfg }
}

// OnMessage sets the handler of incoming messages. Without one, incoming
// messages are read and dropped.
func OnMessage(h MessageHandler) Option {
	return func(o *clientOptions) { o.onMessage = h }
}

// WithMaxFrameSize sets the largest frame body the client accepts from the
// server (DefaultMaxFrameSize otherwise). Set it to the server's
// MaxFrameSize when that is larger.
func WithMaxFrameSize(n int) Option {
	return func(o *clientOptions) { o.maxFrameSize = n }
}

// WithKeepAlive sets the TCP keep-alive period of Dial's connection (see
// net.Dialer.KeepAlive).
func WithKeepAlive(d time.Duration) Option {
	return func(o *clientOptions) { o.dialer.KeepAlive = d }
}

// Client is a connection to a chat server. Its methods may be called from
// many goroutines at once; requests are sent in the order the calls take
// the connection and each gets the reply the server sends for it.
type Client struct {
	conn      net.Conn
	onMessage MessageHandler
	fr        *FrameReader

	wmu  sync.Mutex // serializes writes and the order of pending
	wbuf []byte

	pmu     sync.Mutex
	pending []*call // requests sent and not yet answered, oldest first

	closeOnce sync.Once
	done      chan struct{}
	err       error // why the connection ended; set before done is closed
	wg        sync.WaitGroup
}

// call is one request waiting for its reply.
type call struct {
	kind  FrameType
	reply chan reply // buffered: the reader never blocks on it
}

type reply struct {
	names []string
	err   error
}

// Dial connects to the chat server at addr ("host:port"), over TLS if the
// WithTLS option is given. ctx bounds the connection set-up only.
func Dial(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	o := clientOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	var nc net.Conn
	var err error
	if o.tls != nil {
		d := tls.Dialer{NetDialer: &o.dialer, Config: o.tls}
		nc, err = d.DialContext(ctx, "tcp", addr)
	} else {
		nc, err = o.dialer.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	return newClient(nc, o), nil
}

// NewClient returns a Client speaking over conn, which it owns from then
// on. The WithTLS and WithKeepAlive options do not apply.
func NewClient(conn net.Conn, opts ...Option) *Client {
	o := clientOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	return newClient(conn, o)
}

func newClient(conn net.Conn, o clientOptions) *Client {
	c := &Client{
		conn:      conn,
		onMessage: o.onMessage,
		fr:        NewFrameReader(conn, o.maxFrameSize),
		done:      make(chan struct{}),
	}
	c.wg.Add(1)
	go c.readLoop()
	return c
}

// Login logs in as name. It returns ErrBadUsername without asking the
// server if name breaks the rules, and ErrFailure if the server refuses
// (the name is taken, or this client is already logged in).
func (c *Client) Login(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	_, err := c.do(ctx, TypeLogin, func(b []byte) []byte { return AppendLogin(b, name) })
	return err
}

// List returns the names of the logged-in users, sorted by the server.
func (c *Client) List(ctx context.Context) ([]string, error) {
	return c.do(ctx, TypeList, AppendList)
}

// SendTo sends text to the user to. It returns ErrBadUsername or
// ErrBadMessage without asking the server if either breaks the rules, and
// ErrFailure if the server refuses (this client is not logged in, to is
// not logged in, or its queue is full). A nil error means the message was
// queued for the recipient.
func (c *Client) SendTo(ctx context.Context, to, text string) error {
	if err := ValidateName(to); err != nil {
		return err
	}
	if err := ValidateText(text); err != nil {
		return err
	}
	_, err := c.do(ctx, TypeSendTo, func(b []byte) []byte { return AppendSendTo(b, to, text) })
	return err
}

// Logout logs out; the connection stays open.
func (c *Client) Logout(ctx context.Context) error {
	_, err := c.do(ctx, TypeLogout, AppendLogout)
	return err
}

// Done returns a channel closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is up, and then why it ended:
// ErrClosed after Close, or an error wrapping ErrClosed and the cause (io.EOF
// when the server closed the connection). Its text is one sentence for a
// user: "chat: the server closed the connection", or "chat: connection
// lost: " and the cause.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close closes the connection and waits for the client's goroutine to end.
// Requests waiting for a reply return ErrClosed. Close is idempotent.
func (c *Client) Close() error {
	c.fail(ErrClosed)
	c.wg.Wait()
	return nil
}

// fail ends the connection with err, once.
func (c *Client) fail(err error) {
	c.closeOnce.Do(func() {
		c.err = err
		c.conn.Close()
		close(c.done)
	})
}

// do sends one request, encoded by enc, and waits for its reply.
func (c *Client) do(ctx context.Context, kind FrameType, enc func([]byte) []byte) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cl := &call{kind: kind, reply: make(chan reply, 1)}
	if err := c.send(ctx, cl, enc); err != nil {
		return nil, err
	}
	select {
	case r := <-cl.reply:
		return r.names, r.err
	case <-c.done:
		// The reader may have answered just before the end.
		select {
		case r := <-cl.reply:
			return r.names, r.err
		default:
			return nil, c.err
		}
	case <-ctx.Done():
		// The reply, when it comes, is read and dropped.
		return nil, ctx.Err()
	}
}

// send records cl as pending and writes its frame.
func (c *Client) send(ctx context.Context, cl *call, enc func([]byte) []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	select {
	case <-c.done:
		return c.err
	default:
	}
	c.wbuf = enc(c.wbuf[:0])
	c.pmu.Lock()
	c.pending = append(c.pending, cl)
	c.pmu.Unlock()

	// A cancelled context interrupts a write that blocks. If it fired, wait
	// for it to have set its deadline before clearing it, or the deadline
	// could land afterwards and fail the next write.
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.conn.SetWriteDeadline(time.Unix(1, 0))
		close(interrupted)
	})
	n, err := c.conn.Write(c.wbuf)
	if !stop() {
		<-interrupted
		c.conn.SetWriteDeadline(time.Time{})
	}
	if cap(c.wbuf) > 64<<10 {
		c.wbuf = nil
	}
	if err == nil {
		return nil
	}
	if n == 0 && ctx.Err() != nil {
		// Nothing went out: forget the request, the stream is intact.
		c.pmu.Lock()
		c.pending = c.pending[:len(c.pending)-1]
		c.pmu.Unlock()
		return ctx.Err()
	}
	c.fail(&lostError{cause: err})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return c.err
}

// readLoop reads frames until the connection ends, answering pending calls
// and handing messages to the handler.
func (c *Client) readLoop() {
	defer c.wg.Done()
	var err error
	heard := false // a frame came from the server
	for err == nil {
		var f Frame
		f, err = c.fr.Next()
		if err != nil {
			break
		}
		heard = true
		err = c.dispatch(f)
	}
	_, secure := c.conn.(interface{ ConnectionState() tls.ConnectionState })
	c.pmu.Lock()
	asked := len(c.pending) > 0
	c.pmu.Unlock()
	c.fail(&lostError{cause: err, unanswered: !heard && asked && !secure})
	// Whoever is still waiting learns the reason.
	c.pmu.Lock()
	pending := c.pending
	c.pending = nil
	c.pmu.Unlock()
	for _, cl := range pending {
		cl.reply <- reply{err: c.err}
	}
}

// lostError is why a connection ended, other than Close: it wraps
// ErrClosed and the cause, and says what happened in one sentence.
type lostError struct {
	cause error
	// The server closed a connection without TLS before answering
	// anything: a sign that it expects TLS.
	unanswered bool
}

func (e *lostError) Error() string {
	closed := errors.Is(e.cause, io.EOF) || errors.Is(e.cause, syscall.ECONNRESET)
	switch {
	case closed && e.unanswered:
		return "chat: the server closed the connection without answering; it may expect TLS"
	case errors.Is(e.cause, io.EOF):
		return "chat: the server closed the connection"
	}
	return "chat: connection lost: " + e.cause.Error()
}

func (e *lostError) Unwrap() []error { return []error{ErrClosed, e.cause} }

// dispatch handles one frame from the server.
func (c *Client) dispatch(f Frame) error {
	if f.Type == TypeMessage {
		if c.onMessage != nil {
			c.onMessage(Message{From: string(f.Name), Text: string(f.Text)})
		}
		return nil
	}
	c.pmu.Lock()
	if len(c.pending) == 0 {
		c.pmu.Unlock()
		return fmt.Errorf("%w: %v without a request", ErrProtocol, f.Type)
	}
	cl := c.pending[0]
	c.pending[0] = nil
	c.pending = c.pending[1:]
	c.pmu.Unlock()

	var r reply
	switch f.Type {
	case TypeResponse:
		switch f.Result {
		case ResultFailure:
			r.err = ErrFailure
		case ResultMalformed:
			r.err = ErrMalformedPacket
		case ResultOK:
			if cl.kind == TypeList {
				r.err = fmt.Errorf("%w: RESPONSE ok to list", ErrProtocol)
			}
		}
	case TypeNames:
		if cl.kind != TypeList {
			return fmt.Errorf("%w: LIST in reply to %v", ErrProtocol, cl.kind)
		}
		r.names = []string{}
		for name := range Names(f.Names) {
			r.names = append(r.names, string(name))
		}
	default:
		return fmt.Errorf("%w: unexpected %v", ErrProtocol, f.Type)
	}
	cl.reply <- r
	return nil
}
