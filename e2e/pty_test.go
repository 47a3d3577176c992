//go:build unix

package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// terminal is chatclient running in a pseudo-terminal.
type terminal struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	pty    *os.File
	stderr *lineLog // kept apart from the terminal

	mu      sync.Mutex
	out     []byte        // everything the program wrote to the terminal
	ended   bool          // the terminal's output has ended
	changed chan struct{} // closed at the next change

	done chan struct{} // closed when the program has ended
}

// startTerminal starts chatclient connected to srv in a 24×80 terminal;
// its standard error is kept apart.
func startTerminal(t *testing.T, name string, srv *server, flags ...string) *terminal {
	t.Helper()
	return startTerminalWith(t, name, srv, false, flags...)
}

// startTerminalWith starts chatclient connected to srv in a 24×80
// terminal; with sharedStderr, its standard error goes to the terminal
// too, as it does for a user.
func startTerminalWith(t *testing.T, name string, srv *server, sharedStderr bool, flags ...string) *terminal {
	t.Helper()
	term := &terminal{
		t:       t,
		name:    name,
		cmd:     exec.Command(clientBin, append(flags, srv.host, srv.port)...),
		stderr:  newLineLog(),
		changed: make(chan struct{}),
		done:    make(chan struct{}),
	}
	term.cmd.Env = append(os.Environ(), "TERM=xterm")
	if !sharedStderr {
		term.cmd.Stderr = term.stderr
	} else {
		term.stderr.close() // nothing comes there
	}
	term.cmd.WaitDelay = timeout
	f, err := pty.StartWithSize(term.cmd, &pty.Winsize{Rows: 24, Cols: 80})
	if err != nil {
		t.Skipf("cannot start a program in a pseudo-terminal: %v", err)
	}
	term.pty = f
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			term.mu.Lock()
			term.out = append(term.out, buf[:n]...)
			if err != nil {
				term.ended = true
			}
			close(term.changed)
			term.changed = make(chan struct{})
			term.mu.Unlock()
			if err != nil {
				return // EIO once the program has ended, or the pty closed
			}
		}
	}()
	go func() {
		term.cmd.Wait()
		term.stderr.close()
		close(term.done)
	}()
	t.Cleanup(func() {
		select {
		case <-term.done:
		default:
			term.cmd.Process.Kill()
		}
		for _, c := range []chan struct{}{term.done, read} {
			select {
			case <-c:
			case <-time.After(timeout):
				t.Errorf("%s: still running after being killed", name)
			}
			if c == term.done {
				f.Close() // ends the read, if the program's end did not
			}
		}
		if t.Failed() {
			t.Logf("%s terminal output:\n%q", name, clip(term.output()))
			t.Logf("%s stderr:\n%s", name, clip(term.stderr.String()))
		}
	})
	return term
}

func (term *terminal) output() string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return string(term.out)
}

// mark is the length of the output so far: waitFor(s, mark) looks only at
// what comes after it.
func (term *terminal) mark() int {
	term.mu.Lock()
	defer term.mu.Unlock()
	return len(term.out)
}

// waitFor waits until the output from offset from on contains s, and
// returns the offsets of its start and of its end.
func (term *terminal) waitFor(s string, from int) (start, end int) {
	term.t.Helper()
	deadline := time.After(timeout)
	for {
		term.mu.Lock()
		if i := bytes.Index(term.out[from:], []byte(s)); i >= 0 {
			term.mu.Unlock()
			return from + i, from + i + len(s)
		}
		ended, changed := term.ended, term.changed
		term.mu.Unlock()
		if ended {
			term.t.Fatalf("%s: the terminal output ended without %q after offset %d", term.name, s, from)
		}
		select {
		case <-changed:
		case <-deadline:
			term.t.Fatalf("%s: no %q in the terminal output after offset %d within %v", term.name, s, from, timeout)
		}
	}
}

// typeKeys writes keys to the terminal, as if typed.
func (term *terminal) typeKeys(keys string) {
	term.t.Helper()
	if _, err := term.pty.WriteString(keys); err != nil {
		term.t.Fatalf("%s: typing %q: %v", term.name, keys, err)
	}
}

// expectEnd waits for the program to end with the given status.
func (term *terminal) expectEnd(status int) {
	term.t.Helper()
	select {
	case <-term.done:
	case <-time.After(timeout):
		term.t.Fatalf("%s did not end within %v", term.name, timeout)
	}
	if got := term.cmd.ProcessState.ExitCode(); got != status {
		term.t.Errorf("%s: exit status %d, want %d", term.name, got, status)
	}
}

// reply waits for a line the program prints after offset from, checks
// that it stands on a line of its own, and waits for the prompt that
// follows it: only then is the terminal in raw mode again, ready for keys
// (between two prompts the line discipline would take Ctrl-C and Ctrl-D
// itself). It returns the offset after the prompt.
func (term *terminal) reply(line string, from int) int {
	term.t.Helper()
	start, end := term.waitFor(line+"\r\n", from)
	term.onOwnLine(start, strconv.Quote(line))
	_, end = term.waitFor("> ", end)
	return end
}

// interrupted waits for the echo of Ctrl-C after offset from and for the
// fresh prompt after it, and returns the offset after the prompt.
func (term *terminal) interrupted(from int) int {
	term.t.Helper()
	_, end := term.waitFor("^C\r\n", from)
	_, end = term.waitFor("> ", end)
	return end
}

// csi matches the terminal control sequences a line editor writes.
var csi = regexp.MustCompile("\x1b\\[[0-9;?]*[ -/]*[@-~]")

// onOwnLine checks that the text at offset start of the output begins a
// line: apart from control sequences, a carriage return or a line feed
// comes right before it.
func (term *terminal) onOwnLine(start int, what string) {
	term.t.Helper()
	before := csi.ReplaceAllString(term.output()[:start], "")
	if before != "" && !strings.HasSuffix(before, "\r") && !strings.HasSuffix(before, "\n") {
		term.t.Errorf("%s: %s does not start a line: it follows %q", term.name, what, clip(before[max(0, len(before)-40):]))
	}
}

// TestTerminal runs chatclient in a pseudo-terminal: the prompt, a message
// arriving while a line is half typed, history, escaped output, Ctrl-C and
// Ctrl-D, and history kept across runs.
func TestTerminal(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	bob := loggedIn(t, srv, "bob")
	history := filepath.Join(t.TempDir(), "history")

	alice := startTerminal(t, "alice", srv, "-history", history)
	_, end := alice.waitFor("> ", 0)
	alice.typeKeys("login alice\r")
	end = alice.reply("Success", end)

	// A message arrives while a line is half typed: it is printed on a line
	// of its own, and the half-typed line is redrawn after it.
	alice.typeKeys("sendto bob hel")
	_, end = alice.waitFor("> sendto bob hel", end)
	bob.do("sendto alice Hi there", "Success")
	start, end := alice.waitFor("bob: Hi there\r\n", end)
	alice.onOwnLine(start, `"bob: Hi there"`)
	_, end = alice.waitFor("> sendto bob hel", end)
	alice.typeKeys("lo\r")
	bob.expectLine("alice: hello")
	end = alice.reply("Success", end)

	// The up arrow recalls the previous line; Enter runs it again.
	alice.typeKeys("\x1b[A")
	_, end = alice.waitFor("> sendto bob hello", end)
	alice.typeKeys("\r")
	bob.expectLine("alice: hello")
	end = alice.reply("Success", end)

	// Escape sequences from the network never reach the terminal raw.
	bob.do("sendto alice clear\x1b[2J title\x1b]0;pwned\x07 rlo\u202eabc", "Success")
	end = alice.reply(`bob: clear\x1b[2J title\x1b]0;pwned\x07 rlo\u202eabc`, end)
	out := alice.output()
	for _, raw := range []string{"\x1b[2J", "\x1b]0;", "\x07", "\u202e"} {
		if strings.Contains(out, raw) {
			t.Errorf("alice: the terminal got %q raw", raw)
		}
	}

	// Ctrl-C clears the line and sends nothing; Ctrl-D on an empty line
	// exits with status 0.
	alice.typeKeys("sendto bob never sent")
	_, end = alice.waitFor("> sendto bob never sent", end)
	alice.typeKeys("\x03")
	end = alice.interrupted(end)
	alice.typeKeys("sendto bob after\r")
	bob.expectLine("alice: after") // not "alice: never sent"
	alice.reply("Success", end)
	alice.typeKeys("\x04")
	alice.expectEnd(0)
	if s := alice.stderr.String(); s != "" {
		t.Errorf("alice: stderr %q, want nothing", s)
	}

	// The history is kept across runs.
	again := startTerminal(t, "alice again", srv, "-history", history)
	_, end = again.waitFor("> ", 0)
	again.typeKeys("\x1b[A")
	_, end = again.waitFor("> sendto bob after", end)
	again.typeKeys("\x1b[A")
	_, end = again.waitFor("> sendto bob hello", end)
	again.typeKeys("\x03")
	again.interrupted(end)
	again.typeKeys("exit\r")
	again.expectEnd(0)

	bob.closeInput()
	bob.expectEnd(0)
}

// TestTerminalServerGoesAway checks that a client idle at its prompt ends
// with status 1, saying why on stderr, when its server dies.
func TestTerminalServerGoesAway(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	c := startTerminal(t, "alice", srv, "-history", "")
	_, end := c.waitFor("> ", 0)
	c.typeKeys("login alice\r")
	c.reply("Success", end)
	if err := srv.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.expectEnd(1)
	if strings.TrimSpace(c.stderr.String()) == "" {
		t.Errorf("alice: nothing on stderr, want a reason")
	}
}
