package chat

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"testing"
	"time"
)

// closeTrial is one server on a loopback listener and one raw client
// connected to it, for the tests of how the server closes a connection.
type closeTrial struct {
	*tcpServer
	nc interface {
		net.Conn
		closeWriter
	}
	fr *FrameReader
}

// closeTLS is a pair of TLS configurations, for a server and its client.
type closeTLS struct{ server, client *tls.Config }

func newCloseTLS(t *testing.T) *closeTLS {
	t.Helper()
	ca := identityNewCA(t, "close test CA")
	cert := ca.issue(t, x509.ExtKeyUsageServerAuth, func(c *x509.Certificate) { c.DNSNames = []string{"localhost"} })
	return &closeTLS{
		server: &tls.Config{Certificates: []tls.Certificate{*cert}},
		client: &tls.Config{RootCAs: ca.pool, ServerName: "localhost"},
	}
}

// startCloseTrial serves srv on a new loopback listener and connects to
// it, over TLS if tlsCfg is not nil.
func startCloseTrial(t *testing.T, srv *Server, tlsCfg *closeTLS) *closeTrial {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsCfg != nil {
		l = tls.NewListener(l, tlsCfg.server)
	}
	ct := &closeTrial{tcpServer: serveListener(t, srv, l)}
	nc, err := net.DialTimeout("tcp", ct.addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(testTimeout))
	ct.nc = nc.(*net.TCPConn)
	if tlsCfg != nil {
		ct.nc = tls.Client(nc, tlsCfg.client)
	}
	ct.fr = NewFrameReader(ct.nc, 0)
	return ct
}

// stop closes the client's end and the server, and waits for Serve, so
// that a trial's server is gone before the next one's starts.
func (ct *closeTrial) stop(t *testing.T) {
	t.Helper()
	ct.nc.Close()
	ct.tcpServer.stop(t)
}

// readToEnd reads frames until the connection ends, and returns them and
// the error that ended the reading (io.EOF for a clean end).
func (ct *closeTrial) readToEnd() ([]Frame, error) {
	var frames []Frame
	for {
		f, err := ct.fr.Next()
		if err != nil {
			return frames, err
		}
		f.Names, f.Name, f.Text = nil, nil, nil // the reader's buffer
		frames = append(frames, f)
	}
}

// sumCounts adds up the values of a Stats map.
func sumCounts[K comparable](m map[K]uint64) (n uint64) {
	for _, v := range m {
		n += v
	}
	return n
}

// TestShutdownWithUnreadRequests shuts the server down while its client
// has pipelined requests the server has not read yet. The server answers
// those it has read and closes without a TCP reset: every reply owed
// arrives, followed by a clean end of file, in every trial, over TCP and
// over TLS.
func TestShutdownWithUnreadRequests(t *testing.T) {
	tlsCfg := newCloseTLS(t)
	for _, tt := range []struct {
		name   string
		tls    *closeTLS
		trials int
	}{
		{"TCP", nil, 200},
		{"TLS", tlsCfg, 50},
	} {
		t.Run(tt.name, func(t *testing.T) { testShutdownWithUnreadRequests(t, tt.trials, tt.tls) })
	}
}

func testShutdownWithUnreadRequests(t *testing.T, trials int, tlsCfg *closeTLS) {
	const requests = 20000 // 100 KB of requests per trial
	var batch []byte
	for range requests {
		batch = AppendList(batch)
	}
	unread := 0 // trials in which the server left requests unread
	for i := range trials {
		ct := startCloseTrial(t, &Server{}, tlsCfg)
		wrote := make(chan error, 1)
		go func() {
			_, err := ct.nc.Write(batch)
			wrote <- err
		}()
		// Shut down once the server has answered the first request.
		first, err := ct.fr.Next()
		if err != nil || first.Type != TypeNames {
			t.Fatalf("trial %d: first reply %v, %v; want a LIST", i, first.Type, err)
		}
		shut := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			shut <- ct.srv.Shutdown(ctx)
		}()
		frames, err := ct.readToEnd()
		received := 1 + len(frames)
		if err != io.EOF {
			t.Errorf("trial %d: the connection ended with %v after %d replies, want EOF", i, err, received)
		}
		ct.nc.CloseWrite() // the server may be discarding what is left
		if err := <-shut; err != nil {
			t.Errorf("trial %d: Shutdown: %v", i, err)
		}
		if err := <-wrote; err != nil {
			t.Errorf("trial %d: writing the requests: %v", i, err)
		}
		st := ct.srv.Stats()
		handled, owed := sumCounts(st.FramesIn)+st.Malformed, sumCounts(st.FramesOut)
		if handled != owed || uint64(received) != owed {
			t.Errorf("trial %d: the server handled %d requests and queued %d replies; the client received %d", i, handled, owed, received)
		}
		if handled < requests {
			unread++
		}
		ct.stop(t)
		if t.Failed() {
			break
		}
	}
	t.Logf("%d of %d trials shut down with requests unread", unread, trials)
	if unread == 0 {
		t.Errorf("the server read every request in every trial: nothing was tested")
	}
}

// TestFrameTooLargeBodySent sends requests and then a frame longer than
// MaxFrameSize with its whole body: the replies to the requests arrive,
// then Malformed packet, then a clean end of file, although the server
// never read the body.
func TestFrameTooLargeBodySent(t *testing.T) {
	const trials = 50
	var batch []byte
	for range 3 {
		batch = AppendList(batch)
	}
	batch = append(batch, header(64<<10)...)
	batch = append(batch, make([]byte, 64<<10)...)
	for i := range trials {
		ct := startCloseTrial(t, &Server{MaxFrameSize: 1024}, nil)
		if _, err := ct.nc.Write(batch); err != nil {
			t.Fatalf("trial %d: %v", i, err)
		}
		frames, err := ct.readToEnd()
		var got []string
		for _, f := range frames {
			got = append(got, describe(f))
		}
		if err != io.EOF || len(got) != 4 || got[3] != "RESPONSE malformed packet" {
			t.Errorf("trial %d: received %q, then %v; want 3 lists, Malformed packet and EOF", i, got, err)
		}
		ct.stop(t)
		if t.Failed() {
			break
		}
	}
}

// TestLingerBounds checks what ends a linger other than the client
// closing its side: the time bound, the byte bound, and Shutdown's
// context. The client here never closes.
func TestLingerBounds(t *testing.T) {
	defer func(d time.Duration, n int) { lingerTime, lingerBytes = d, n }(lingerTime, lingerBytes)
	for _, tt := range []struct {
		name     string
		time     time.Duration
		flood    bool // the client keeps sending
		cancel   bool // Shutdown's context ends during the linger
		shutdown error
	}{
		{"the time bound", 10 * time.Millisecond, false, false, nil},
		{"the byte bound", time.Hour, true, false, nil},
		{"the context", time.Hour, false, true, context.Canceled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lingerTime = tt.time
			ct := startCloseTrial(t, &Server{}, nil)
			defer ct.stop(t)
			if _, err := ct.nc.Write(AppendList(nil)); err != nil {
				t.Fatal(err)
			}
			if f, err := ct.fr.Next(); err != nil || f.Type != TypeNames {
				t.Fatalf("reply %v, %v; want a LIST", f.Type, err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			shut := make(chan error, 1)
			go func() { shut <- ct.srv.Shutdown(ctx) }()
			// The write side shut down: the linger is under way.
			if _, err := ct.fr.Next(); err != io.EOF {
				t.Fatalf("after the reply: %v, want EOF", err)
			}
			wrote := make(chan error, 1)
			if tt.flood {
				go func() {
					junk := make([]byte, 64<<10)
					for {
						if _, err := ct.nc.Write(junk); err != nil {
							wrote <- err
							return
						}
					}
				}()
			}
			if tt.cancel {
				cancel()
			}
			select {
			case err := <-shut:
				if err != tt.shutdown {
					t.Errorf("Shutdown: %v, want %v", err, tt.shutdown)
				}
			case <-time.After(testTimeout):
				t.Fatal("Shutdown did not return: the linger went on")
			}
			if tt.flood {
				ct.nc.Close() // ends the flood, if the server's close did not
				<-wrote
			}
		})
	}
}
