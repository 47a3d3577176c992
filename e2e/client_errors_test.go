//go:build unix

package e2e

import (
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
)

// mutualTLSServer starts a server that requires client certificates from
// its own CA, and returns it with the CA.
func mutualTLSServer(t *testing.T) (*server, *testCA) {
	t.Helper()
	ca := newTestCA(t, t.TempDir(), "ca")
	cert, key := ca.leaf("chat.test", x509.ExtKeyUsageServerAuth, "chat.test")
	return startServer(t, "-tls-cert", cert, "-tls-key", key, "-tls-client-ca", ca.file), ca
}

// TestClientConnectionErrors checks what the client says, in one line on
// standard error, when its connection cannot be had or ends: a client
// certificate missing, one the server does not accept, a client without
// TLS at a TLS server, a server going away.
func TestClientConnectionErrors(t *testing.T) {
	t.Parallel()
	srv, ca := mutualTLSServer(t)
	aliceCert, aliceKey := ca.leaf("alice", x509.ExtKeyUsageClientAuth)
	other := newTestCA(t, t.TempDir(), "other")
	eveCert, eveKey := other.leaf("eve", x509.ExtKeyUsageClientAuth)
	tlsFlags := []string{"-tls-ca", ca.file, "-tls-server-name", "chat.test"}

	// The right certificate works.
	ok := startClient(t, "alice", srv, append(tlsFlags, "-tls-cert", aliceCert, "-tls-key", aliceKey)...)
	ok.do("login alice", "Success")
	ok.do("exit")
	ok.expectEnd(0)

	for _, tt := range []struct {
		name  string
		flags []string
		want  string // the start of the line on stderr
	}{
		{"no certificate", tlsFlags, "chatclient: the server requires a client certificate"},
		{"a certificate from another CA", append(tlsFlags, "-tls-cert", eveCert, "-tls-key", eveKey),
			"chatclient: the server did not accept the certificate in " + eveCert},
		{"no TLS", nil, "chatclient: the server closed the connection without answering; it may expect TLS"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := startClient(t, tt.name, srv, tt.flags...)
			c.send("login alice\n")
			c.expectEnd(1)
			lines, partial := c.stderr.snapshot()
			if len(lines) != 1 || partial != "" || !strings.HasPrefix(lines[0], tt.want) {
				t.Errorf("stderr %q, want one line starting %q", c.stderr.String(), tt.want)
			}
			if strings.Count(c.stderr.String(), "closed") > 1 {
				t.Errorf("stderr %q says closed more than once", c.stderr.String())
			}
		})
	}
}

// TestClientServerClosedMessage checks the one sentence a client prints
// when its server goes away.
func TestClientServerClosedMessage(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	c := loggedIn(t, srv, "alice")
	if err := srv.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.expectEnd(1)
	if got, want := c.stderr.String(), "chatclient: the server closed the connection\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}

// TestTerminalFatalErrorOwnLine checks, at a terminal with standard error
// on it too, that a fatal error is printed on a line of its own, not
// after the prompt: when the server goes away while the client waits at
// its prompt, and when a mutual-TLS server refuses a client without a
// certificate.
func TestTerminalFatalErrorOwnLine(t *testing.T) {
	t.Parallel()
	t.Run("server goes away", func(t *testing.T) {
		t.Parallel()
		srv := startServer(t)
		c := startTerminalWith(t, "alice", srv, true, "-history", "")
		_, end := c.waitFor("> ", 0)
		c.typeKeys("login alice\r")
		end = c.reply("Success", end)
		if err := srv.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		start, _ := c.waitFor("chatclient: the server closed the connection\r\n", end)
		c.onOwnLine(start, "the error")
		c.expectEnd(1)
	})
	t.Run("no client certificate", func(t *testing.T) {
		t.Parallel()
		srv, ca := mutualTLSServer(t)
		// The refusal races with the drawing of the prompt: several trials.
		for i := range 6 {
			c := startTerminalWith(t, fmt.Sprint("alice ", i), srv, true, "-history", "", "-tls-ca", ca.file, "-tls-server-name", "chat.test")
			start, _ := c.waitFor("chatclient: the server requires a client certificate", 0)
			c.onOwnLine(start, "the error")
			c.expectEnd(1)
		}
	})
}

// TestTerminalCompletionInterrupt: after Tab has listed the completions,
// Ctrl-C clears the line, as it does otherwise.
func TestTerminalCompletionInterrupt(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	c := startTerminal(t, "alice", srv, "-history", "")
	_, end := c.waitFor("> ", 0)
	c.typeKeys("l")
	_, end = c.waitFor("> l", end)
	c.typeKeys("\t")
	_, end = c.waitFor("logout", end) // the completions listed
	c.typeKeys("\x03")
	end = c.interrupted(end)
	c.typeKeys("exit\r") // "lexit" if the line had been kept
	c.expectEnd(0)
	if out := c.output()[end:]; strings.Contains(out, "Invalid command") {
		t.Errorf("after Ctrl-C: %q", out)
	}
}
