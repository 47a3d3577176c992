// Command chatclient is the command-line chat client.
//
//	chatclient [flags] [HOST [PORT]]
//
// It connects to HOST:PORT (127.0.0.1 and 9000 by default) at once, then
// reads commands: login NAME, list, sendto NAME TEXT, logout, exit. At a
// terminal it offers a readline prompt with editing, history and Tab
// completion; from a pipe or file it reads plain lines and prints only the
// replies, errors and messages, so it can be scripted.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chzyer/readline"
	"golang.org/x/term"

	"github.com/seedchat/chat"
	"github.com/seedchat/chat/cli"
	"github.com/seedchat/chat/internal/cmdline"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

type config struct {
	addr          string
	history       string
	tls           bool
	tlsCA         string
	tlsServerName string
	tlsCert       string
	tlsKey        string
	timeout       time.Duration
}

func parseFlags(args []string) (*config, error) {
	var c config
	fs := flag.NewFlagSet("chatclient", flag.ContinueOnError)
	fs.StringVar(&c.history, "history", defaultHistory(), "keep the prompt's history in `FILE` (\"\" for none)")
	fs.BoolVar(&c.tls, "tls", false, "connect over TLS")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "trust the certificate authority in `FILE` (PEM) instead of the system's (implies -tls)")
	fs.StringVar(&c.tlsServerName, "tls-server-name", "", "the `NAME` the server's certificate must carry (default HOST; implies -tls)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "present the client certificate in `FILE` (PEM; needs -tls-key; implies -tls)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "the private key of -tls-cert, in `FILE` (PEM)")
	fs.DurationVar(&c.timeout, "connect-timeout", 10*time.Second, "give up connecting after this long")
	if err := cmdline.Parse(fs, usageHead, args); err != nil {
		return nil, err
	}
	host, port := "127.0.0.1", "9000"
	switch fs.NArg() {
	case 2:
		port = fs.Arg(1)
		fallthrough
	case 1:
		host = fs.Arg(0)
	case 0:
	default:
		return nil, fmt.Errorf("too many arguments: usage: chatclient [flags] [HOST [PORT]]")
	}
	c.addr = net.JoinHostPort(host, port)
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, errors.New("-tls-cert and -tls-key go together")
	}
	c.tls = c.tls || c.tlsCA != "" || c.tlsServerName != "" || c.tlsCert != ""
	return &c, nil
}

// usageHead is the start of the -h output, before the flags.
const usageHead = `usage: chatclient [flags] [HOST [PORT]]
chatclient is the command-line chat client.

It connects to the chat server at HOST (default 127.0.0.1) and PORT
(default 9000), then carries out the commands it reads, one a line, and
prints the replies and the messages that arrive.

Commands (a line with an error prints it and sends nothing):
  login NAME        log in as NAME: 1 to 20 characters, no white space,
                    nothing after it (else: Bad username); names are case
                    sensitive
  list              print the names logged in, on one line
  sendto NAME TEXT  send TEXT (the rest of the line after one space or tab,
                    at most 65535 characters) to NAME (a bad or missing
                    NAME or TEXT: Bad username; a TEXT too long: Bad message)
  logout            log out; the connection stays open
  exit              close the connection and end (so does the end of input)
  list, logout and exit take no parameters (else: Invalid command), and an
  unknown command prints Invalid command.
Replies: Success, Failure (the server refused: a name taken, a recipient not
logged in, ...) or Malformed packet. Incoming messages print as "NAME: TEXT".

At a terminal it offers a prompt with editing, history and Tab completion;
from a pipe or a file it prints only the replies, errors and messages.

Flags:
`

// defaultHistory is the history file under the user's cache directory, or
// their home directory.
func defaultHistory() string {
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "chatclient", "history")
	}
	if dir, err := os.UserHomeDir(); err == nil {
		return filepath.Join(dir, ".chatclient_history")
	}
	return ""
}

func (c *config) tlsConfig() (*tls.Config, error) {
	if !c.tls {
		return nil, nil
	}
	cfg := &tls.Config{ServerName: c.tlsServerName, MinVersion: tls.VersionTLS12}
	if c.tlsCA != "" {
		pool, err := cmdline.LoadCertPool(c.tlsCA)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if c.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("loading the client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func run(args []string) int {
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatclient:", err)
		return 2
	}
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatclient:", err)
		return 1
	}
	var p *prompt // at a terminal
	fatal := func(msg string) int {
		if p != nil {
			// The prompt may be on the screen: end it, and print over it.
			p.Close()
			io.WriteString(os.Stdout, "\r\x1b[K")
		}
		fmt.Fprintln(os.Stderr, "chatclient:", msg)
		return 1
	}

	// At a terminal, a readline prompt; otherwise plain lines.
	var in cli.LineReader
	var out io.Writer = os.Stdout
	var con *cli.Console
	interactive := term.IsTerminal(int(os.Stdin.Fd())) && term.IsTerminal(int(os.Stdout.Fd()))
	if interactive {
		if cfg.history != "" {
			os.MkdirAll(filepath.Dir(cfg.history), 0o700)
		}
		stdin := readline.NewCancelableStdin(os.Stdin)
		var ops atomic.Pointer[readline.Operation] // for onKey, once made
		rl, err := readline.NewEx(&readline.Config{
			Stdin:               stdin,
			Prompt:              "> ",
			HistoryFile:         cfg.history,
			HistorySearchFold:   true,
			AutoComplete:        completer(func(line []rune, pos int) ([][]rune, int) { return con.Complete(line, pos) }),
			InterruptPrompt:     "^C",
			EOFPrompt:           "exit",
			FuncFilterInputRune: func(r rune) (rune, bool) { return onKey(ops.Load(), r) },
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "chatclient:", err)
			return 1
		}
		ops.Store(rl.Operation)
		p = &prompt{rl: rl, stdin: stdin}
		defer p.Close()
		in, out = p, rl.Stdout()
	} else {
		in = cli.NewLineReader(os.Stdin)
	}
	con = cli.NewConsole(out)

	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	opts := []chat.Option{chat.OnMessage(con.PrintMessage)}
	if tlsCfg != nil {
		opts = append(opts, chat.WithTLS(tlsCfg))
	}
	client, err := chat.Dial(ctx, cfg.addr, opts...)
	cancel()
	if err != nil {
		return fatal(fmt.Sprintf("cannot connect to %s: %s", cfg.addr, describe(err, cfg)))
	}
	defer client.Close()

	if err := con.Run(context.Background(), client, in); err != nil {
		return fatal(describe(err, cfg))
	}
	return 0
}

// describe says why the connection could not be made or has ended, for
// the user: one sentence, without the library's "chat: " prefix.
func describe(err error, cfg *config) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" && strings.Contains(op.Err.Error(), "certificate") {
		// A TLS alert from the server about the client's certificate. The
		// client sends none when the server asks for one from an authority
		// the certificate is not from: the server then says "certificate
		// required" although the user gave one.
		if cfg.tlsCert == "" {
			return fmt.Sprintf("the server requires a client certificate (-tls-cert and -tls-key) (%v)", op)
		}
		return fmt.Sprintf("the server did not accept the certificate in %s (%v)", cfg.tlsCert, op)
	}
	return strings.TrimPrefix(err.Error(), "chat: ")
}

// onKey sees each key before readline does. After Tab has listed the
// completions, readline is in its completion mode, where Ctrl-C only
// leaves that mode and keeps the line; leaving it here first lets Ctrl-C
// clear the line, as it does otherwise. It runs on readline's goroutine,
// which owns that mode.
func onKey(ops *readline.Operation, r rune) (rune, bool) {
	if r == readline.CharInterrupt && ops != nil && ops.IsInCompleteMode() {
		ops.ExitCompleteMode(false)
	}
	return r, true
}

// prompt reads lines at a readline prompt; Ctrl-C clears the line.
type prompt struct {
	rl    *readline.Instance
	stdin io.Closer // the readline's standard input

	mu      sync.Mutex
	closed  bool
	reading sync.WaitGroup // a Readline under way
}

func (p *prompt) ReadLine() (string, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return "", io.EOF
	}
	p.reading.Add(1)
	p.mu.Unlock()
	defer p.reading.Done()
	for {
		line, err := p.rl.Readline()
		if err == readline.ErrInterrupt {
			continue
		}
		return line, err
	}
}

// Close ends a read under way, waits for it to end (and so for readline
// to stop drawing), and restores the terminal; it is idempotent. readline's
// own Close does not reach the reader it wraps around a Stdin given in its
// Config, and would wait for it forever; closing that first ends the read.
func (p *prompt) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.stdin.Close()
	err := p.rl.Close()
	p.reading.Wait()
	return err
}

// completer adapts a function to readline.AutoCompleter.
type completer func(line []rune, pos int) ([][]rune, int)

func (c completer) Do(line []rune, pos int) ([][]rune, int) { return c(line, pos) }
