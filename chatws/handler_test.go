package chatws

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/seedchat/chat"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestMain fails the package's tests if a goroutine outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestServerRules(t *testing.T) {
	ts := start(t, &chat.Server{}, nil)
	bob := dial(t, ts.url, nil)
	bob.do(chat.AppendLogin(nil, "bob"), chat.ResultOK)
	alice := dial(t, ts.url, nil)

	steps := []struct {
		name  string
		frame []byte
		want  chat.Result
	}{
		{"sendto before login", chat.AppendSendTo(nil, "bob", "Hi"), chat.ResultFailure},
		{"logout before login", chat.AppendLogout(nil), chat.ResultFailure},
		{"login", chat.AppendLogin(nil, "alice"), chat.ResultOK},
		{"login again", chat.AppendLogin(nil, "alice"), chat.ResultFailure},
		{"sendto nobody", chat.AppendSendTo(nil, "carol", "Hi"), chat.ResultFailure},
		{"sendto bad name", chat.AppendSendTo(nil, "no one", "Hi"), chat.ResultFailure},
		{"unknown type", []byte{0, 0, 0, 2, 0x7f, 0}, chat.ResultMalformed},
		{"login cut short", []byte{0, 0, 0, 3, 0x01, 5, 'a'}, chat.ResultMalformed},
		{"length 0", []byte{0, 0, 0, 0}, chat.ResultMalformed},
		{"a server frame", chat.AppendResponse(nil, chat.ResultOK), chat.ResultMalformed},
		{"sendto bob", chat.AppendSendTo(nil, "bob", "Hi"), chat.ResultOK},
	}
	for _, s := range steps {
		alice.send(s.frame)
		f := alice.next()
		if f.Type != chat.TypeResponse || f.Result != s.want {
			t.Errorf("%s: got %v %v, want RESPONSE %v", s.name, f.Type, f.Result, s.want)
		}
	}
	alice.send(chat.AppendList(nil))
	if got := alice.names(); strings.Join(got, " ") != "alice bob" {
		t.Errorf("list: %q, want alice bob", got)
	}
	f := bob.next()
	if f.Type != chat.TypeMessage || string(f.Name) != "alice" || string(f.Text) != "Hi" {
		t.Errorf("bob got %v %q %q, want SENDTO from alice: Hi", f.Type, f.Name, f.Text)
	}
	alice.do(chat.AppendLogout(nil), chat.ResultOK)
	alice.do(chat.AppendLogout(nil), chat.ResultFailure)
	alice.do(chat.AppendLogin(nil, "bob"), chat.ResultFailure) // taken
}

// TestWithTCPUsers has a WebSocket user and a TCP user chat through the
// same Server, both with chat.Client.
func TestWithTCPUsers(t *testing.T) {
	ts := start(t, &chat.Server{}, nil)
	addr := ts.serveTCP(t)
	ctx := testCtx(t)

	webGot := make(chan chat.Message, 10)
	ws, _, err := websocket.Dial(ctx, ts.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	web := chat.NewClient(websocket.NetConn(context.Background(), ws, websocket.MessageBinary),
		chat.OnMessage(func(m chat.Message) { webGot <- m }))
	defer web.Close()
	termGot := make(chan chat.Message, 10)
	term, err := chat.Dial(ctx, addr, chat.OnMessage(func(m chat.Message) { termGot <- m }))
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()

	if err := web.Login(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := term.Login(ctx, "term"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*chat.Client{web, term} {
		names, err := c.List(ctx)
		if err != nil || strings.Join(names, " ") != "term web" {
			t.Errorf("list: %q, %v; want term web", names, err)
		}
	}
	if err := web.SendTo(ctx, "term", "from the browser"); err != nil {
		t.Fatal(err)
	}
	if err := term.SendTo(ctx, "web", "from the terminal"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		got              chan chat.Message
		from, text, name string
	}{
		{termGot, "web", "from the browser", "term"},
		{webGot, "term", "from the terminal", "web"},
	} {
		select {
		case m := <-c.got:
			if m.From != c.from || m.Text != c.text {
				t.Errorf("%s got %q from %q, want %q from %q", c.name, m.Text, m.From, c.text, c.from)
			}
		case <-ctx.Done():
			t.Fatalf("%s got nothing", c.name)
		}
	}
}

// TestMessageBoundaries checks that frames are a stream: the same
// requests, sent one byte per message, all in one message, or one frame
// per message, get the same replies.
func TestMessageBoundaries(t *testing.T) {
	var stream []byte
	stream = chat.AppendLogin(stream, "x")
	stream = chat.AppendList(stream)
	stream = chat.AppendSendTo(stream, "x", "to myself, in pieces")
	stream = chat.AppendLogout(stream)
	stream = append(stream, 0, 0, 0, 2, 0x7f, 0) // malformed

	splits := []struct {
		name  string
		split func([]byte) [][]byte
	}{
		{"one byte per message", func(b []byte) [][]byte {
			var out [][]byte
			for i := range b {
				out = append(out, b[i:i+1])
			}
			return out
		}},
		{"all in one message", func(b []byte) [][]byte { return [][]byte{b} }},
		{"uneven pieces", func(b []byte) [][]byte { return [][]byte{b[:3], b[3:9], b[9:30], b[30:]} }},
	}
	for _, s := range splits {
		t.Run(s.name, func(t *testing.T) {
			ts := start(t, &chat.Server{}, nil)
			c := dial(t, ts.url, nil)
			for _, m := range s.split(stream) {
				c.send(m)
			}
			c.expect(chat.ResultOK)
			if got := c.names(); len(got) != 1 || got[0] != "x" {
				t.Errorf("list: %q", got)
			}
			// The SENDTO to oneself and the RESPONSE come in either order.
			var sawMessage, sawReply bool
			for !sawMessage || !sawReply {
				f := c.next()
				switch {
				case f.Type == chat.TypeMessage && string(f.Text) == "to myself, in pieces":
					sawMessage = true
				case f.Type == chat.TypeResponse && f.Result == chat.ResultOK:
					sawReply = true
				default:
					t.Fatalf("unexpected %v %v", f.Type, f.Result)
				}
			}
			c.expect(chat.ResultOK)
			c.expect(chat.ResultMalformed)
		})
	}
}

func TestOrigin(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		origin   string // "" for none; "self" for the server's own
		ok       bool
	}{
		{"no origin (not a browser)", nil, "", true},
		{"same origin", nil, "self", true},
		{"foreign origin", nil, "http://evil.example", false},
		{"foreign origin, other allowed", []string{"chat.example"}, "http://evil.example", false},
		{"allowed origin", []string{"chat.example"}, "http://chat.example", true},
		{"allowed by wildcard", []string{"*.example"}, "https://chat.example", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zap.WarnLevel)
			ts := start(t, &chat.Server{}, &Handler{OriginPatterns: tt.patterns, Logger: zap.New(core)})
			h := http.Header{}
			switch tt.origin {
			case "":
			case "self":
				h.Set("Origin", ts.hs.URL)
			default:
				h.Set("Origin", tt.origin)
			}
			ctx := testCtx(t)
			ws, resp, err := websocket.Dial(ctx, ts.url, &websocket.DialOptions{HTTPHeader: h})
			if tt.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				defer ws.CloseNow()
				c := &wsClient{t: t, ws: ws, ctx: ctx}
				c.fr = chat.NewFrameReader(c, 0)
				c.do(chat.AppendLogin(nil, "o"), chat.ResultOK)
				return
			}
			if err == nil {
				ws.CloseNow()
				t.Fatal("accepted")
			}
			if resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("got %v, want 403 Forbidden", resp)
			}
			if logs.FilterMessage("websocket upgrade refused").Len() != 1 {
				t.Errorf("refusal not logged: %v", logs.All())
			}
		})
	}
}

// TestCloseCodes checks that each reason the server ends a connection for
// maps to its close code.
func TestCloseCodes(t *testing.T) {
	big := chat.AppendSendTo(nil, "x", strings.Repeat("a", 2000))
	tests := []struct {
		name string
		srv  *chat.Server
		h    *Handler
		act  func(c *wsClient)
		want websocket.StatusCode
	}{
		{"message over MaxMessageSize", &chat.Server{}, &Handler{MaxMessageSize: 1000}, func(c *wsClient) {
			c.do(chat.AppendLogin(nil, "x"), chat.ResultOK)
			c.send(big)
		}, websocket.StatusMessageTooBig},
		{"frame over the maximum frame size", &chat.Server{MaxFrameSize: 1000}, &Handler{MaxMessageSize: 1 << 20}, func(c *wsClient) {
			c.do(chat.AppendLogin(nil, "x"), chat.ResultOK)
			c.send(big)
			c.expect(chat.ResultMalformed)
		}, websocket.StatusPolicyViolation},
		{"text message", &chat.Server{}, nil, func(c *wsClient) {
			c.ws.Write(c.ctx, websocket.MessageText, chat.AppendList(nil))
		}, websocket.StatusUnsupportedData},
		{"flooding", &chat.Server{RateLimit: 0.001, RateBurst: 1, FloodLimit: 3}, nil, func(c *wsClient) {
			for range 4 {
				c.send(chat.AppendList(nil))
			}
			c.names()
			for range 3 {
				c.expect(chat.ResultFailure)
			}
		}, websocket.StatusPolicyViolation},
		{"login timeout", &chat.Server{LoginTimeout: 50 * time.Millisecond}, nil, func(c *wsClient) {}, StatusLoginTimeout},
		{"frame timeout", &chat.Server{FrameTimeout: 50 * time.Millisecond}, nil, func(c *wsClient) {
			c.send([]byte{0, 0, 0, 5, 0x01})
		}, StatusFrameTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := start(t, tt.srv, tt.h)
			c := dial(t, ts.url, nil)
			tt.act(c)
			c.expectClose(tt.want)
		})
	}
}

// TestMaxConnsPerIP checks that WebSocket clients count against the
// Server's per-IP limit, by their TCP address.
func TestMaxConnsPerIP(t *testing.T) {
	ts := start(t, &chat.Server{MaxConnsPerIP: 1}, nil)
	first := dial(t, ts.url, nil)
	first.do(chat.AppendLogin(nil, "one"), chat.ResultOK)
	second := dial(t, ts.url, nil)
	second.expectClose(websocket.StatusTryAgainLater)
	first.do([]byte{0, 0, 0, 0}, chat.ResultMalformed) // still served
}

func TestShutdown(t *testing.T) {
	srv := &chat.Server{}
	ts := start(t, srv, nil)
	c := dial(t, ts.url, nil)
	c.do(chat.AppendLogin(nil, "x"), chat.ResultOK)
	// Requests sent before Shutdown get their replies, then the close.
	c.send(bytes.Repeat(chat.AppendList(nil), 100))
	for range 100 {
		c.names()
	}
	ctx := testCtx(t)
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(ctx) }()
	c.expectClose(websocket.StatusGoingAway)
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestShutdownOwed checks that Shutdown writes the replies owed: requests
// read before it get their replies over WebSocket as over TCP.
func TestShutdownOwed(t *testing.T) {
	srv := &chat.Server{}
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	srv.AllowLogin = func(net.Conn, string) error {
		entered <- struct{}{}
		<-release // hold the request while Shutdown begins
		return nil
	}
	ts := start(t, srv, nil)
	c := dial(t, ts.url, nil)
	c.send(chat.AppendLogin(nil, "x"))
	<-entered
	ctx := testCtx(t)
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(ctx) }()
	close(release)
	c.expect(chat.ResultOK)
	c.expectClose(websocket.StatusGoingAway)
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestSlowConsumer checks that a WebSocket client that stops reading is
// dropped as a slow consumer, as a TCP one is.
func TestSlowConsumer(t *testing.T) {
	reasons := make(chan error, 2)
	srv := &chat.Server{
		WriteTimeout: 100 * time.Millisecond,
		OnLogout:     func(_ net.Conn, name string, err error) { reasons <- err },
	}
	ts := start(t, srv, nil)
	slow := dial(t, ts.url, nil)
	slow.do(chat.AppendLogin(nil, "slow"), chat.ResultOK)
	fast := dial(t, ts.url, nil)
	fast.do(chat.AppendLogin(nil, "fast"), chat.ResultOK)

	// fast sends until slow's queue and socket buffers are full and the
	// server gives up on slow; slow never reads again.
	text := strings.Repeat("m", 60000)
	frame := chat.AppendSendTo(nil, "slow", text)
	deadline := time.Now().Add(testTimeout)
	for {
		fast.send(frame)
		f := fast.next()
		if f.Type == chat.TypeResponse && f.Result == chat.ResultFailure {
			select {
			case err := <-reasons:
				if !errors.Is(err, chat.ErrSlowConsumer) {
					t.Fatalf("slow left with %v, want ErrSlowConsumer", err)
				}
				return
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("slow consumer not dropped")
		}
	}
}

// TestNoPong checks that a client that does not answer pings is closed.
func TestNoPong(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	reasons := make(chan error, 1)
	srv := &chat.Server{OnLogout: func(_ net.Conn, _ string, err error) { reasons <- err }}
	ts := start(t, srv, &Handler{PingInterval: 20 * time.Millisecond, Logger: zap.New(core)})
	c := dial(t, ts.url, nil)
	c.do(chat.AppendLogin(nil, "x"), chat.ResultOK)
	// The client reads no more, so it answers no ping.
	select {
	case <-reasons:
	case <-time.After(testTimeout):
		t.Fatal("not closed")
	}
	if logs.FilterMessage("websocket ping not answered; closing").Len() != 1 {
		t.Errorf("not logged: %v", logs.All())
	}
}

// TestPingAnswered checks that a client that reads (and so answers pings)
// stays connected through many pings.
func TestPingAnswered(t *testing.T) {
	var pongs sync.WaitGroup
	pongs.Add(5)
	var once sync.Map
	h := &Handler{PingInterval: 10 * time.Millisecond}
	ts := start(t, &chat.Server{}, h)
	ctx := testCtx(t)
	ws, _, err := websocket.Dial(ctx, ts.url, &websocket.DialOptions{
		OnPingReceived: func(_ context.Context, p []byte) bool {
			if _, seen := once.LoadOrStore(string(p), true); !seen && len(p) > 0 && p[0] <= '5' && len(p) == 1 {
				pongs.Done()
			}
			return true
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	c := &wsClient{t: t, ws: ws, ctx: ctx}
	c.fr = chat.NewFrameReader(c, 0)
	c.do(chat.AppendLogin(nil, "x"), chat.ResultOK)
	go func() {
		pongs.Wait()
		ws.Write(context.Background(), websocket.MessageBinary, chat.AppendList(nil))
	}()
	if got := c.names(); len(got) != 1 { // read (answering pings) until five were answered
		t.Fatalf("list: %q", got)
	}
}

// TestClientCloses checks that a close frame from the client ends the
// connection as end of file does over TCP.
func TestClientCloses(t *testing.T) {
	reasons := make(chan error, 1)
	ts := start(t, &chat.Server{OnLogout: func(_ net.Conn, _ string, err error) { reasons <- err }}, nil)
	c := dial(t, ts.url, nil)
	c.do(chat.AppendLogin(nil, "x"), chat.ResultOK)
	if err := c.ws.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := <-reasons; err != io.EOF {
		t.Errorf("logged out for %v, want io.EOF (the client closed)", err)
	}
}
