package bench

import (
	"context"
	"net"
	"strings"

	"github.com/coder/websocket"
)

// dial connects to one server address of Config.Addr: "host:port" over
// TCP, or a ws:// or wss:// URL over WebSocket (the chat's frames in
// binary messages, as chatserver -http-addr serves them at /ws). ctx
// bounds the connection set-up only.
func dial(ctx context.Context, addr string) (net.Conn, error) {
	if !isWebSocket(addr) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	ws, _, err := websocket.Dial(ctx, addr, &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return nil, err
	}
	// Each Write is one message. Deadlines work as the load needs them
	// (set before a call, cleared after); one that passes during a call
	// closes the connection, which is then done with anyway.
	return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
}

// isWebSocket reports whether a server address is a WebSocket URL.
func isWebSocket(addr string) bool {
	return strings.HasPrefix(addr, "ws://") || strings.HasPrefix(addr, "wss://")
}
