//go:build unix

package chat

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// rawWriter writes to a socket without blocking. Its state lives in the
// struct, and the write function is made once, so that a write allocates
// nothing; one goroutine at a time uses it (the outbox's writer).
type rawWriter struct {
	rc    syscall.RawConn
	write func(fd uintptr) bool
	b     []byte // being written
	n     int    // of b, written
	err   error  // from write(2), other than EAGAIN
}

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
	w := &rawWriter{rc: rc}
	w.write = func(fd uintptr) bool {
		for w.n < len(w.b) {
			m, err := syscall.Write(int(fd), w.b[w.n:])
			if err == syscall.EINTR {
				continue
			}
			if m > 0 {
				w.n += m
			}
			if err != nil {
				if err != syscall.EAGAIN {
					w.err = err
				}
				break
			}
			if m <= 0 {
				break
			}
		}
		return true // done: never wait here for the socket to drain
	}
	return w
}

// tryWrite writes as much of b as the socket takes at once, and returns how
// much that was. A full socket buffer is not an error.
func (w *rawWriter) tryWrite(b []byte) (int, error) {
	w.b, w.n, w.err = b, 0, nil
	err := w.rc.Write(w.write)
	n, werr := w.n, w.err
	w.b, w.err = nil, nil
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
