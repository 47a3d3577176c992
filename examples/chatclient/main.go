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
	"time"

	"github.com/chzyer/readline"
	"github.com/seedchat/chat"
	"golang.org/x/term"
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
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: chatclient [flags] [HOST [PORT]]")
		fs.PrintDefaults()
	}
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fs.Usage()
		}
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
		pool, err := chat.LoadCertPool(c.tlsCA)
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

	// At a terminal, a readline prompt; otherwise plain lines.
	var in chat.LineReader
	var out io.Writer = os.Stdout
	var con *chat.Console
	interactive := term.IsTerminal(int(os.Stdin.Fd())) && term.IsTerminal(int(os.Stdout.Fd()))
	if interactive {
		if cfg.history != "" {
			os.MkdirAll(filepath.Dir(cfg.history), 0o700)
		}
		stdin := readline.NewCancelableStdin(os.Stdin)
		rl, err := readline.NewEx(&readline.Config{
			Stdin:             stdin,
			Prompt:            "> ",
			HistoryFile:       cfg.history,
			HistorySearchFold: true,
			AutoComplete:      completer(func(line []rune, pos int) ([][]rune, int) { return con.Complete(line, pos) }),
			InterruptPrompt:   "^C",
			EOFPrompt:         "exit",
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "chatclient:", err)
			return 1
		}
		p := prompt{rl, stdin}
		defer p.Close()
		in, out = p, rl.Stdout()
	} else {
		in = chat.NewLineReader(os.Stdin)
	}
	con = chat.NewConsole(out)

	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	opts := []chat.Option{chat.OnMessage(con.PrintMessage)}
	if tlsCfg != nil {
		opts = append(opts, chat.WithTLS(tlsCfg))
	}
	client, err := chat.Dial(ctx, cfg.addr, opts...)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "chatclient: cannot connect to %s: %v\n", cfg.addr, err)
		return 1
	}
	defer client.Close()

	err = con.Run(context.Background(), client, in)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, chat.ErrClosed):
		fmt.Fprintln(os.Stderr, "chatclient: the server closed the connection:", err)
	default:
		fmt.Fprintln(os.Stderr, "chatclient:", err)
	}
	return 1
}

// prompt reads lines at a readline prompt; Ctrl-C clears the line.
type prompt struct {
	rl    *readline.Instance
	stdin io.Closer // the readline's standard input
}

func (p prompt) ReadLine() (string, error) {
	for {
		line, err := p.rl.Readline()
		if err == readline.ErrInterrupt {
			continue
		}
		return line, err
	}
}

// Close ends a read under way and restores the terminal. readline's own
// Close does not reach the reader it wraps around a Stdin given in its
// Config, and would wait for it forever; closing that first ends the read.
func (p prompt) Close() error {
	p.stdin.Close()
	return p.rl.Close()
}

// completer adapts a function to readline.AutoCompleter.
type completer func(line []rune, pos int) ([][]rune, int)

func (c completer) Do(line []rune, pos int) ([][]rune, int) { return c(line, pos) }
