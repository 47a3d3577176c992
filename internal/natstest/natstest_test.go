package natstest

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestStart checks that Start's server takes JetStream requests at its
// ClientURL, on loopback and the port it listens on.
func TestStart(t *testing.T) {
	ns := Start(t)
	url := ns.ClientURL()
	host, port, err := net.SplitHostPort(strings.TrimPrefix(url, "nats://"))
	if err != nil || host != "127.0.0.1" || port != strconv.Itoa(ns.Addr().(*net.TCPAddr).Port) {
		t.Fatalf("ClientURL %q, want nats://127.0.0.1 and the port listened on, %v", url, ns.Addr())
	}
	createStream(t, url, "s")
}

// TestFreePorts checks that FreePorts hands out distinct ports, each free
// to listen on once it returns. Picking each with a listener closed at once
// gave one port twice among six in CI.
func TestFreePorts(t *testing.T) {
	ports := FreePorts(t, 64)
	seen := make(map[int]bool)
	for _, port := range ports {
		if seen[port] {
			t.Fatalf("port %d handed out twice in %v", port, ports)
		}
		seen[port] = true
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatalf("port %d not free: %v", port, err)
		}
		l.Close()
	}
}

// TestRestart checks that a server stopped with Stop can be run again with
// Run on the same port and store, its streams kept.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	ns := Run(t, Options(-1, dir))
	url, port := ns.ClientURL(), ns.Addr().(*net.TCPAddr).Port
	createStream(t, url, "before")
	Stop(ns)
	again := Run(t, Options(port, dir))
	defer Stop(again)
	if again.ClientURL() != url {
		t.Fatalf("restarted at %s, want %s", again.ClientURL(), url)
	}
	js := jetStream(t, url)
	if _, err := js.Stream(t.Context(), "before"); err != nil {
		t.Errorf("the stream made before the restart: %v", err)
	}
}

// createStream creates a stream through the server at url.
func createStream(t *testing.T, url, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), ReadyTimeout)
	defer cancel()
	if _, err := jetStream(t, url).CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name}}); err != nil {
		t.Fatal(err)
	}
}

// jetStream connects to the server at url until the test ends.
func jetStream(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
