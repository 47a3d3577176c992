package chatws

// The helpers shared by the package's tests: a chat.Server behind a Handler
// on a loopback HTTP server, and a raw WebSocket client of the protocol.

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/seedchat/chat"
)

// testTimeout bounds every wait; a passing run never gets near it.
const testTimeout = 10 * time.Second

// testCtx returns a context for a test's requests, bounded by testTimeout
// and cancelled when the test ends.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// testServer is a chat.Server behind a Handler on a loopback HTTP server.
type testServer struct {
	srv *chat.Server
	h   *Handler
	hs  *httptest.Server
	url string // ws://…/ws
}

// start serves srv over WebSocket (and TCP if tcp is set) until the test
// ends, then closes everything and waits for every handler to return.
func start(t *testing.T, srv *chat.Server, h *Handler) *testServer {
	t.Helper()
	if h == nil {
		h = &Handler{}
	}
	h.Server = srv
	mux := http.NewServeMux()
	mux.Handle("/ws", h)
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		h.Wait()
		hs.Close()
	})
	return &testServer{srv: srv, h: h, hs: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"}
}

// serveTCP serves ts's Server on a loopback TCP listener too, and returns
// its address.
func (ts *testServer) serveTCP(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ts.srv.Serve(l)
	}()
	t.Cleanup(func() {
		ts.srv.Close()
		<-done
	})
	return l.Addr().String()
}

// wsClient is a raw WebSocket client of the chat protocol.
type wsClient struct {
	t      *testing.T
	ws     *websocket.Conn
	ctx    context.Context
	fr     *chat.FrameReader
	reader io.Reader // of the message being read
}

func dial(t *testing.T, url string, opts *websocket.DialOptions) *wsClient {
	t.Helper()
	ctx := testCtx(t)
	ws, _, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	ws.SetReadLimit(-1)
	t.Cleanup(func() { ws.CloseNow() })
	c := &wsClient{t: t, ws: ws, ctx: ctx}
	c.fr = chat.NewFrameReader(c, 0)
	return c
}

// Read reads the binary messages received as one stream.
func (c *wsClient) Read(p []byte) (int, error) {
	for {
		if c.reader == nil {
			typ, r, err := c.ws.Reader(c.ctx)
			if err != nil {
				return 0, err
			}
			if typ != websocket.MessageBinary {
				return 0, errors.New("text message from the server")
			}
			c.reader = r
		}
		n, err := c.reader.Read(p)
		if err == io.EOF {
			c.reader = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// send sends b as one binary message.
func (c *wsClient) send(b []byte) {
	c.t.Helper()
	if err := c.ws.Write(c.ctx, websocket.MessageBinary, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *wsClient) next() chat.Frame {
	c.t.Helper()
	f, err := c.fr.Next()
	if err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	return f
}

// expect reads a RESPONSE and checks its result.
func (c *wsClient) expect(want chat.Result) {
	c.t.Helper()
	f := c.next()
	if f.Type != chat.TypeResponse || f.Result != want {
		c.t.Fatalf("got %v %v, want RESPONSE %v", f.Type, f.Result, want)
	}
}

func (c *wsClient) do(frame []byte, want chat.Result) {
	c.t.Helper()
	c.send(frame)
	c.expect(want)
}

// expectClose reads until the connection ends and checks the close code.
func (c *wsClient) expectClose(want websocket.StatusCode) {
	c.t.Helper()
	for {
		_, err := c.fr.Next()
		if err == nil {
			continue
		}
		if got := websocket.CloseStatus(err); got != want {
			c.t.Fatalf("connection ended with %v (status %v), want status %v", err, got, want)
		}
		return
	}
}

// names reads a LIST.
func (c *wsClient) names() []string {
	c.t.Helper()
	f := c.next()
	if f.Type != chat.TypeNames {
		c.t.Fatalf("got %v, want LIST", f.Type)
	}
	var names []string // DecodeFrame has checked the payload
	for name := range chat.Names(f.Names) {
		names = append(names, string(name))
	}
	return names
}
