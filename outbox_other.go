//go:build !unix

package chat

import "net"

// rawWriter writes to a socket without blocking; on this system it is
// never available, and a writer goroutine writes everything.
type rawWriter struct{}

func newRawWriter(net.Conn) *rawWriter { return nil }

func (*rawWriter) tryWrite(b []byte) (int, error) { return 0, nil }
