//go:build unix

package e2e

import (
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/seedchat/chat/internal/natstest"
)

// The programs under test, built once by TestMain.
var serverBin, clientBin, benchBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chat-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	code := 1
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the programs:", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// build builds chatserver, chatclient and chatbench into dir, without -race: the
// programs are what is tested, the race detector only slows them down.
func build(dir string) error {
	cmd := exec.Command(goTool(), "build", "-o", dir+string(filepath.Separator),
		"github.com/seedchat/chat/examples/chatserver",
		"github.com/seedchat/chat/examples/chatclient",
		"github.com/seedchat/chat/examples/chatbench")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	serverBin = filepath.Join(dir, "chatserver")
	clientBin = filepath.Join(dir, "chatclient")
	benchBin = filepath.Join(dir, "chatbench")
	return nil
}

// TestValidationErrors checks every error the client prints for a line it
// will not send, that it sends nothing for such a line, and that its
// output from a pipe is exactly the expected lines.
func TestValidationErrors(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	a := startClient(t, "a", srv)

	long := strings.Repeat("é", 65536) // one code point too many
	name21 := strings.Repeat("n", 21)  // one character too many
	name20 := strings.Repeat("ü", 20)  // 20 characters, 40 bytes
	a.do("list", "")                   // nobody logged in: an empty line
	a.do("login John Doe", "Bad username")
	a.do("login", "Bad username")
	a.do("login "+name21, "Bad username")
	a.do("login a\x01b", "Bad username")      // control character
	a.do("login alice\u200b", "Bad username") // an invisible character
	a.do("login \u202ealice", "Bad username") // a bidi control
	a.do("login ａｌｉｃｅ", "Bad username")       // fullwidth
	a.do("login Zoe\u0308", "Bad username")   // a decomposed accent
	a.do("login 😀", "Bad username")           // an emoji
	a.do("sendto x\u200b hi", "Bad username") // sendto alike
	a.do("list bob", "Invalid command")
	a.do("logout Joe", "Invalid command")
	a.do("exit client", "Invalid command")
	a.do("hello", "Invalid command")
	a.do("LOGIN John", "Invalid command") // the command word is lower case
	a.do("loginJohn", "Invalid command")
	a.do("sendto JohnHello", "Bad username")
	a.do("sendto John", "Bad username")
	a.do("sendto John ", "Bad username") // empty text
	a.do("sendto "+name21+" hi", "Bad username")
	a.do("sendto John "+long, "Bad message")
	a.do("sendto "+name21+" "+long, "Bad username") // the name is checked first
	a.do("")                                        // blank lines print nothing
	a.do(" \t ")
	// None of the lines above reached the server: nobody is logged in, and
	// the names are free.
	a.do("list \t", "") // trailing blanks are no parameter
	a.do("login John", "Success")
	a.do("list", "John")
	a.do("logout", "Success")
	a.do("  login\t"+name20+"  ", "Success") // leading and separating blanks, trailing blanks
	a.do("list", name20)
	a.do("exit \t")
	a.expectEnd(0)
}

// TestServerRules checks Success and Failure for each of the server's
// rules, with several clients at once, and message delivery.
func TestServerRules(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	b := loggedIn(t, srv, "bob")
	a := loggedIn(t, srv, "alice")
	z := loggedIn(t, srv, "Zed")
	d := startClient(t, "d", srv) // never logged in until later

	a.do("list", "Zed alice bob")    // sorted by byte order, not by login
	d.do("list", "Zed alice bob")    // list needs no login
	d.do("login alice", "Failure")   // taken by another client
	d.do("sendto bob hi", "Failure") // not logged in
	d.do("logout", "Failure")        // not logged in
	a.do("login alice", "Failure")   // already logged in
	a.do("login alice2", "Failure")  // already logged in
	a.do("sendto nobody hi", "Failure")
	a.do("sendto Bob hi", "Failure") // names are case sensitive
	d.do("login а1ice", "Failure")   // looks like alice (a Cyrillic а, a digit 1)
	d.do("login Alice", "Success")   // case counts: not a lookalike
	d.do("logout", "Success")

	a.do("sendto bob Hello, how are you?", "Success")
	b.expectLine("alice: Hello, how are you?")
	a.do("sendto bob   two  spaces  ", "Success") // the text after the one separator, exactly
	b.expectLine("alice:   two  spaces  ")
	max := strings.Repeat("é", 65535) // the longest text, in code points
	a.do("sendto bob "+max, "Success")
	b.expectLine("alice: " + max)
	b.do("sendto alice Fine, thanks!", "Success")
	a.expectLine("bob: Fine, thanks!")
	z.do("sendto bob from Zed", "Success")
	b.expectLine("Zed: from Zed")

	// Messages from one sender to one recipient keep their order.
	for i := range 20 {
		a.send(fmt.Sprintf("sendto bob n%d\n", i))
	}
	for i := range 20 {
		a.expectLine("Success")
		b.expectLine(fmt.Sprintf("alice: n%d", i))
	}

	// Logout keeps the connection: list and login work after it.
	a.do("logout", "Success")
	a.do("logout", "Failure")
	a.do("list", "Zed bob")
	b.do("sendto alice still there?", "Failure") // alice is gone
	d.do("login alice", "Success")               // and her name is free
	a.do("login alice", "Failure")               // now taken by d
	a.do("login amy", "Success")
	a.do("list", "Zed alice amy bob")
	b.do("sendto alice hi d", "Success")
	d.expectLine("bob: hi d")
	b.do("sendto amy hi amy", "Success")
	a.expectLine("bob: hi amy")

	// exit ends with status 0, and so does the end of the input, after the
	// replies to what was sent before it.
	z.do("exit")
	z.expectEnd(0)
	b.send("sendto amy bye\n")
	b.closeInput()
	b.expectLine("Success")
	a.expectLine("bob: bye")
	b.expectEnd(0)
	a.do("exit")
	a.expectEnd(0)
	d.closeInput()
	d.expectEnd(0)
}

// TestEscapedAndCRLF checks that terminal escape sequences, bidirectional
// overrides and other control characters sent by one client arrive
// escaped at the other, and that CRLF line ends are accepted.
func TestEscapedAndCRLF(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	a := loggedIn(t, srv, "alice")
	b := loggedIn(t, srv, "bob")

	for _, c := range []struct{ text, printed string }{
		{"\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`},
		{"\x1b[2J\x1b]0;title\x07", `\x1b[2J\x1b]0;title\x07`},
		{"abc\u202efdp.exe", `abc\u202efdp.exe`},
		{"a\tb", `a\tb`},
		{"del\x7f c1\u0085 iso\u2066x\u2069 ls\u2028", `del\x7f c1\u0085 iso\u2066x\u2069 ls\u2028`},
		{`back\slash \x1b é 😀 日本`, `back\slash \x1b é 😀 日本`}, // printed as it is
	} {
		a.do("sendto bob "+c.text, "Success")
		b.expectLine("alice: " + c.printed)
	}

	// CRLF line ends: the carriage return is not part of the line.
	a.send("list\r\n")
	a.expectLine("alice bob")
	a.send("sendto bob crlf\r\n")
	a.expectLine("Success")
	b.expectLine("alice: crlf")
	a.send("logout\r\nlogin amy\r\nlist bob\r\nlist\r\nlogout\r\nexit\r\n")
	a.expectLine("Success")
	a.expectLine("Success")
	a.expectLine("Invalid command")
	a.expectLine("amy bob")
	a.expectLine("Success")
	a.expectEnd(0)
	b.do("list", "bob") // amy logged out before exit: no race with the close
	b.closeInput()
	b.expectEnd(0)
}

// TestScript runs a whole script from a pipe, ended without a final line
// end: the output is complete and in the order of the commands.
func TestScript(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	c := startClient(t, "script", srv)
	c.send("login sam\nlist\nbogus\nsendto nobody x\nlogout\nlogout\n\nlist bob\nlist")
	c.closeInput()
	for _, want := range []string{"Success", "sam", "Invalid command", "Failure", "Success", "Failure", "Invalid command", ""} {
		c.expectLine(want)
	}
	c.expectEnd(0)
}

// TestServerGoesAway checks that an idle client whose server dies ends
// with status 1 and says so on stderr.
func TestServerGoesAway(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	c := loggedIn(t, srv, "alice")
	if err := srv.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.expectEnd(1)
	c.expectStderr()
}

// TestCannotConnect checks a client with nothing to connect to.
func TestCannotConnect(t *testing.T) {
	t.Parallel()
	c := startProc(t, "client", clientBin, true, "127.0.0.1", fmt.Sprint(natstest.FreePorts(t, 1)[0]))
	c.expectEnd(1)
	c.expectStderr()
}

// TestGracefulShutdown sends SIGTERM to a server with clients connected.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	a := loggedIn(t, srv, "alice")
	b := loggedIn(t, srv, "bob")
	a.do("sendto bob hi", "Success")
	b.expectLine("alice: hi")

	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if status := srv.wait(); status != 0 {
		t.Errorf("chatserver: exit status %d after SIGTERM, want 0", status)
	}
	var msgs []string
	for _, e := range srv.logEntries() {
		msgs = append(msgs, e.Msg)
		if strings.Contains(e.Msg, "timed out") {
			t.Errorf("chatserver: shutdown with nothing owed timed out: %+v", e)
		}
	}
	for _, want := range []string{"shutting down", "stopped"} {
		if !slices.Contains(msgs, want) {
			t.Errorf("chatserver log lacks %q; messages: %q", want, msgs)
		}
	}
	for _, c := range []*proc{a, b} {
		c.expectEnd(1)
		c.expectStderr()
	}
}

// TestServerStartupErrors checks that the server's startup errors print
// one line and exit non-zero.
func TestServerStartupErrors(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	for _, c := range []struct {
		name string
		args []string
	}{
		{"port in use", []string{"-addr", busy.Addr().String()}},
		{"unknown flag", []string{"-no-such-flag"}},
		{"bad flag value", []string{"-max-conns", "many"}},
		{"bad log level", []string{"-log-level", "loud"}},
		{"argument", []string{"extra"}},
		{"missing certificate", []string{"-addr", "127.0.0.1:0", "-tls-cert", missing, "-tls-key", missing}},
		{"garbage certificate", []string{"-addr", "127.0.0.1:0", "-tls-cert", garbage, "-tls-key", garbage}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := startProc(t, "chatserver", serverBin, false, c.args...)
			if status := p.wait(); status == 0 || status == -1 {
				t.Errorf("exit status %d, want a non-zero exit", status)
			}
			lines, partial := p.stderr.snapshot()
			if len(lines) != 1 || strings.TrimSpace(lines[0]) == "" || partial != "" {
				t.Errorf("stderr = %q, want one line", p.stderr.String())
			}
		})
	}
}

// TestTLS connects a client over TLS to a server with a certificate from
// a test authority.
func TestTLS(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, t.TempDir(), "ca")
	certFile, keyFile := ca.leaf("chat.test", x509.ExtKeyUsageServerAuth, "chat.test")
	caFile := ca.file
	srv := startServer(t, "-tls-cert", certFile, "-tls-key", keyFile)
	var logged bool
	for _, e := range srv.logEntries() {
		if e.Msg == "listening" {
			logged = e.TLS
		}
	}
	if !logged {
		t.Errorf(`chatserver did not log "tls":true`)
	}

	c := startClient(t, "tls", srv, "-tls-ca", caFile, "-tls-server-name", "chat.test")
	c.do("login x", "Success")
	c.do("list", "x")
	c.do("exit")
	c.expectEnd(0)

	// A certificate that does not carry the name asked for: no connection.
	bad := startClient(t, "wrong name", srv, "-tls-ca", caFile, "-tls-server-name", "other.test")
	bad.closeInput()
	bad.expectEnd(1)
	bad.expectStderr()
}
