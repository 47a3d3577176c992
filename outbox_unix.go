//go:build unix

package chat

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// rawWriter writes to a socket without blocking.
type rawWriter struct{ rc syscall.RawConn }

// newRawWriter returns a rawWriter for conn, or nil if conn is not a
// socket of this system (a net.Pipe, a TLS connection).
func newRawWriter(conn net.Conn) *rawWriter {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &rawWriter{rc}
}

// tryWrite writes as much of b as the socket takes at once, and returns how
// much that was. A full socket buffer is not an error.
func (w *rawWriter) tryWrite(b []byte) (int, error) {
	n := 0
	var werr error
	err := w.rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := syscall.Write(int(fd), b[n:])
			if err == syscall.EINTR {
				continue
			}
			if m > 0 {
				n += m
			}
			if err != nil {
				if err != syscall.EAGAIN {
					werr = err
				}
				break
			}
			if m <= 0 {
				break
			}
		}
		return true // done: never wait here for the socket to drain
	})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// A write deadline that the writer goroutine set for an earlier
		// write has passed: RawConn refuses before writing anything. Not a
		// failure; the writer goroutine takes over with a fresh deadline.
		return n, nil
	}
	if err == nil {
		err = werr
	}
	return n, err
}
