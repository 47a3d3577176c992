package bench

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/seedchat/chat"
	"github.com/seedchat/chat/chatws"
)

// serveWebSocket serves a new Server over WebSocket until the test ends,
// and returns its ws:// URL.
func serveWebSocket(t *testing.T) string {
	t.Helper()
	srv := &chat.Server{}
	h := &chatws.Handler{Server: srv}
	hs := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		h.Wait()
		hs.Close()
	})
	return "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
}

// TestRunWebSocket runs loads over WebSocket: every message is delivered,
// as over TCP.
func TestRunWebSocket(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       Config
		delivered uint64
	}{
		{"pairs", Config{Clients: 4, Mode: Pairs, Window: 16, Messages: 4000}, 4000},
		{"pingpong", Config{Clients: 2, Mode: PingPong, Messages: 101}, 202},
		{"pairs big texts", Config{Clients: 2, Mode: Pairs, Size: 20000, Messages: 40}, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Addr = serveWebSocket(t)
			res := run(t, cfg)
			checkConsistent(t, res)
			if res.Delivered != tc.delivered || res.DeliveredTotal != tc.delivered {
				t.Errorf("delivered %d (%d in all), want %d", res.Delivered, res.DeliveredTotal, tc.delivered)
			}
		})
	}
}
