package cli

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/seedchat/chat"
)

// testTimeout bounds each wait of a test.
const testTimeout = 10 * time.Second

// testCtx returns a context for a test's requests, bounded by testTimeout
// and cancelled once the test and its cleanups are done.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// scripted is the server side of a connection that a test writes by hand,
// as a server of another make could.
type scripted struct {
	t  *testing.T
	c  net.Conn
	fr *chat.FrameReader
}

// fakeServer returns a Client connected to a scripted server.
func fakeServer(t *testing.T, opts ...chat.Option) (*chat.Client, *scripted) {
	c, s := net.Pipe()
	t.Cleanup(func() { s.Close() })
	client := chat.NewClient(c, opts...)
	t.Cleanup(func() { client.Close() })
	return client, &scripted{t: t, c: s, fr: chat.NewFrameReader(s, 0)}
}

// send writes frames to the client.
func (s *scripted) send(b []byte) {
	s.t.Helper()
	s.c.SetWriteDeadline(time.Now().Add(testTimeout))
	if _, err := s.c.Write(b); err != nil {
		s.t.Fatalf("writing to the client: %v", err)
	}
}

// next reads the client's next frame.
func (s *scripted) next() chat.Frame {
	s.t.Helper()
	s.c.SetReadDeadline(time.Now().Add(testTimeout))
	f, err := s.fr.Next()
	if err != nil {
		s.t.Fatalf("reading from the client: %v", err)
	}
	return f
}
