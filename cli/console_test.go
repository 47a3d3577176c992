package cli

import (
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seedchat/chat"
)

// syncBuffer is a bytes.Buffer safe for the Console's concurrent writes and
// the test's reads, which can wait for what they expect.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed at the next write
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
	return b.buf.Write(p)
}

// waitFor waits until the buffer contains want.
func (b *syncBuffer) waitFor(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(testTimeout)
	for {
		b.mu.Lock()
		if strings.Contains(b.buf.String(), want) {
			b.mu.Unlock()
			return
		}
		if b.changed == nil {
			b.changed = make(chan struct{})
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("output %q never contained %q", b.String(), want)
		}
	}
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// consoleRig is a server with consoles attached over net.Pipe.
type consoleRig struct {
	t   *testing.T
	srv *chat.Server
}

func newConsoleRig(t *testing.T) *consoleRig {
	t.Helper()
	srv := &chat.Server{}
	t.Cleanup(func() { srv.Close() })
	return &consoleRig{t: t, srv: srv}
}

// attach connects a new client whose messages the returned console prints.
func (r *consoleRig) attach() (*Console, *chat.Client, *syncBuffer) {
	out := &syncBuffer{}
	con := NewConsole(out)
	a, b := net.Pipe()
	go r.srv.ServeConn(a)
	c := chat.NewClient(b, chat.OnMessage(con.PrintMessage))
	r.t.Cleanup(func() { c.Close() })
	return con, c, out
}

func TestConsoleScript(t *testing.T) {
	ctx := testCtx(t)
	rig := newConsoleRig(t)

	// bob is logged in through the library, so that alice has someone to
	// talk to; his messages are collected on a channel.
	got := make(chan chat.Message, 10)
	a, b := net.Pipe()
	go rig.srv.ServeConn(a)
	bob := chat.NewClient(b, chat.OnMessage(func(m chat.Message) { got <- m }))
	defer bob.Close()
	if err := bob.Login(ctx, "bob"); err != nil {
		t.Fatal(err)
	}

	con, c, out := rig.attach()
	script := strings.Join([]string{
		"list",
		"sendto bob early",
		"login alice extra",
		"login alice",
		"login alice",
		"",
		"   \t ",
		"list bob",
		"LIST",
		"list  \t",
		"sendto bob   hi  ",
		"sendto carol hello",
		"sendto bob",
		"sendto bob ",
		"sendto bob " + strings.Repeat("é", chat.MaxTextLen+1),
		"sendto this-name-is-far-too-long " + strings.Repeat("x", chat.MaxTextLen+1),
		"logout",
		"logout",
		"list\r",
		"logout Joe",
		"exit client",
		"exit",
		"list", // never read
	}, "\n")
	err := con.Run(ctx, c, NewLineReader(strings.NewReader(script)))
	if err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	want := strings.Join([]string{
		"bob",
		"Failure",
		"Bad username",
		"Success",
		"Failure",
		"Invalid command",
		"Invalid command",
		"alice bob",
		"Success",
		"Failure",
		"Bad username",
		"Bad username",
		"Bad message",
		"Bad username",
		"Success",
		"Failure",
		"bob",
		"Invalid command",
		"Invalid command",
	}, "\n") + "\n"
	if got := out.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
	select {
	case m := <-got:
		if m != (chat.Message{From: "alice", Text: "  hi  "}) {
			t.Errorf("bob got %+v", m)
		}
	case <-ctx.Done():
		t.Fatal("bob got nothing")
	}
}

// TestConsolePrintsMessagesEscaped: what comes from the network, names
// included, reaches the terminal escaped. This server refuses such names,
// so a scripted server sends them, as a server of another make could.
func TestConsolePrintsMessagesEscaped(t *testing.T) {
	ctx := testCtx(t)
	out := &syncBuffer{}
	con := NewConsole(out)
	c, srv := fakeServer(t, chat.OnMessage(con.PrintMessage))
	in, feed := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- con.Run(ctx, c, NewLineReader(in)) }()

	srv.send(chat.AppendMessage(nil, "alice\u202e", []byte("\x1b[2Jgotcha\tback\\slash\u200b\u00ad")))
	out.waitFor(t, `alice\u202e: \x1b[2Jgotcha\tback\slash\u200b\u00ad`+"\n")
	srv.send(chat.AppendMessage(nil, "x\u200by", []byte("I am alice")))
	out.waitFor(t, `x\u200by: I am alice`+"\n")
	io.WriteString(feed, "list\n")
	if f := srv.next(); f.Type != chat.TypeList {
		t.Fatalf("the server got %v, want list", f.Type)
	}
	srv.send(chat.AppendNames(nil, []string{"alice\u202e", "alice\ufeff", "bob"}))
	out.waitFor(t, `alice\u202e alice\ufeff bob`+"\n")
	feed.Close() // end of input acts as exit
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil at the end of the input", err)
	}
}

func TestConsoleEndsWhenServerCloses(t *testing.T) {
	ctx := testCtx(t)
	srv := &chat.Server{}
	out := &syncBuffer{}
	con := NewConsole(out)
	a, b := net.Pipe()
	served := make(chan error, 1)
	go func() { served <- srv.ServeConn(a) }()
	c := chat.NewClient(b, chat.OnMessage(con.PrintMessage))
	defer c.Close()

	in, feed := io.Pipe() // never written: the console waits for input
	defer feed.Close()
	done := make(chan error, 1)
	go func() { done <- con.Run(ctx, c, NewLineReader(in)) }()
	if err := c.Login(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	<-served
	select {
	case err := <-done:
		if !errors.Is(err, chat.ErrClosed) || !errors.Is(err, io.EOF) {
			t.Errorf("Run = %v, want chat.ErrClosed and io.EOF", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not return when the server closed the connection")
	}
	// Run closed the input to end its blocked read.
	if _, err := feed.Write([]byte("x\n")); err == nil {
		t.Error("the input was left open")
	}
}

func TestConsoleOverlongLines(t *testing.T) {
	ctx := testCtx(t)
	rig := newConsoleRig(t)
	con, c, out := rig.attach()
	script := "login x\n" +
		"sendto x " + strings.Repeat("y", MaxLineSize) + "\n" +
		"list" + strings.Repeat(" ", MaxLineSize) + "z\n" +
		"list\n"
	if err := con.Run(ctx, c, NewLineReader(strings.NewReader(script))); err != nil {
		t.Fatal(err)
	}
	if want := "Success\nBad message\nInvalid command\nx\n"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
}

func TestLineReader(t *testing.T) {
	lr := NewLineReader(strings.NewReader("one\r\ntwo\n\nthree\r\r\nfour"))
	var got []string
	for {
		line, err := lr.ReadLine()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, line)
	}
	want := []string{"one", "two", "", "three\r", "four"}
	if !slices.Equal(got, want) {
		t.Errorf("lines %q, want %q", got, want)
	}
}

func TestConsoleComplete(t *testing.T) {
	ctx := testCtx(t)
	rig := newConsoleRig(t)
	con, c, _ := rig.attach()
	_, other, _ := rig.attach()
	for _, name := range []string{"bob", "bobby", "carol"} {
		_, cl, _ := rig.attach()
		if err := cl.Login(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := other.Login(ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	if err := con.Execute(ctx, c, Command{Kind: CommandList}); err != nil {
		t.Fatal(err)
	}
	// zed is not in the list, but a message from him makes him known.
	con.PrintMessage(chat.Message{From: "zed", Text: "hi"})

	tests := []struct {
		line    string
		want    []string
		wordLen int
	}{
		{"", []string{"exit", "list", "login ", "logout", "sendto "}, 0},
		{"lo", []string{"gin ", "gout"}, 2},
		{"  se", []string{"ndto "}, 2},
		{"sendto b", []string{"ob ", "obby "}, 1},
		{"sendto ", []string{"bob ", "bobby ", "carol ", "dave ", "zed "}, 0},
		{"login z", []string{"ed"}, 1},
		{"sendto bob hel", nil, 0},
		{"list x", nil, 0},
		{"exit", nil, 4},
	}
	for _, tt := range tests {
		endings, n := con.Complete([]rune(tt.line), len([]rune(tt.line)))
		var got []string
		for _, e := range endings {
			got = append(got, string(e))
		}
		if !slices.Equal(got, tt.want) || n != tt.wordLen {
			t.Errorf("Complete(%q) = %q, %d; want %q, %d", tt.line, got, n, tt.want, tt.wordLen)
		}
	}
}
