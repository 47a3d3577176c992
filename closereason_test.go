package chat

import (
	"net"
	"testing"
	"time"
)

// TestServeConnTimeoutReasons checks that ServeConn tells the two read
// timeouts apart: a frame left incomplete, and no login in time.
func TestServeConnTimeoutReasons(t *testing.T) {
	tests := []struct {
		name string
		srv  *Server
		send []byte
		want error
	}{
		{"frame timeout", &Server{FrameTimeout: 20 * time.Millisecond}, []byte{0, 0, 0, 5, byte(TypeLogin)}, ErrFrameTimeout},
		{"login timeout", &Server{LoginTimeout: 20 * time.Millisecond}, AppendList(nil), ErrLoginTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			served := make(chan error, 1)
			go func() { served <- tt.srv.ServeConn(server) }()
			go func() { // read whatever the server sends
				buf := make([]byte, 64)
				for {
					if _, err := client.Read(buf); err != nil {
						return
					}
				}
			}()
			if _, err := client.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-served:
				if err != tt.want {
					t.Errorf("ServeConn: %v, want %v", err, tt.want)
				}
			case <-time.After(testTimeout):
				t.Fatal("ServeConn did not return")
			}
		})
	}
}
