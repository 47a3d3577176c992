// Package natstest runs NATS servers with JetStream inside a test process,
// on loopback, for the tests of the cluster package and of the end-to-end
// tests. It is for tests only.
package natstest

import (
	"net"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// ReadyTimeout bounds the wait for a server to accept connections. It is
// generous for a loaded machine running the race detector; a passing run
// never comes near it.
const ReadyTimeout = 30 * time.Second

// Options returns the options of a NATS server with JetStream that listens
// on 127.0.0.1:port (-1 for a free port) and keeps its store in storeDir,
// with logging and signal handling off. Callers may add to them, for
// example a cluster's routes.
func Options(port int, storeDir string) *natsserver.Options {
	return &natsserver.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  storeDir,
		NoLog:     true,
		NoSigs:    true,
	}
}

// Run starts a server with opts and waits until it accepts connections;
// the test fails at once if it does not. The caller stops it with Stop:
// Run is for a server that a test stops and starts again on the same port
// and store, and Start for one that lives as long as the test.
func Run(t testing.TB, opts *natsserver.Options) *natsserver.Server {
	t.Helper()
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(ReadyTimeout) {
		Stop(ns)
		t.Fatalf("NATS server on %s:%d not ready after %v", opts.Host, opts.Port, ReadyTimeout)
	}
	return ns
}

// Start runs a NATS server with JetStream on a free loopback port, with its
// store in a temporary directory of the test, until the test ends. Its
// ClientURL is the URL to connect to.
func Start(t testing.TB) *natsserver.Server {
	t.Helper()
	ns := Run(t, Options(-1, t.TempDir()))
	t.Cleanup(func() { Stop(ns) })
	return ns
}

// Stop shuts ns down and waits until it has: its goroutines are gone and
// its port and store are free for a server started again on them.
func Stop(ns *natsserver.Server) {
	ns.Shutdown()
	ns.WaitForShutdown()
}

// FreePorts returns n distinct loopback ports that nothing listens on. It
// holds each one until it has picked them all, so that the kernel cannot
// hand out one port twice; another process may still take one before the
// caller listens on it.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}
