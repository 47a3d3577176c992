// Package bench is a load generator for a chat server: the logic behind
// examples/chatbench.
//
// It connects many clients over TCP, logs them in under generated names and
// has them send messages to one another as fast as the server relays them
// (or at a fixed rate), measuring what the recipients receive: delivered
// messages per second, megabytes of text per second, failures, and the
// end-to-end latency of each message, from the moment its sender wrote it
// to the moment its recipient read it, in an HDR histogram. Senders stamp
// the time into the front of each text; recipients are always clients of
// the same process, so stamp and reading share one clock.
//
// Every message also carries its sender's sequence number, and the result
// accounts for each message exactly (Tally): how many were answered
// Failure yet delivered (failed_delivered, which a correct server keeps
// at 0), how many were answered Success and never delivered
// (ok_undelivered), and how many arrived twice, whichever processes held
// the sender and the recipient.
//
// The clients speak the protocol directly with the frame functions of
// package chat rather than through chat.Client: each connection has one
// goroutine that reads and one that writes, the writer batches many frames
// into one write, and buffers are reused, so the generator allocates
// nothing per message once running.
//
//	res, err := bench.Run(ctx, bench.Config{Addr: "127.0.0.1:9000", Clients: 20, Mode: bench.Pairs, Duration: 5 * time.Second})
//	if err != nil {
//		log.Fatal(err)
//	}
//	res.WriteTable(os.Stdout)
//
// A process may hold only so many connections; Config.Procs spreads the
// clients over child processes of the running program, which must call
// ServeChild when started with ChildArg (see examples/chatbench).
//
// Config.Addr may name several servers that act as one chat (a cluster):
// the clients are spread over them, and in the modes that pair clients the
// two of a pair are on different servers, so that every message crosses
// from one server to another:
//
//	res, err := bench.Run(ctx, bench.Config{Addr: "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003", Clients: 60, Mode: bench.Pairs})
package bench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/seedchat/chat"
)

// Mode is the traffic the clients make.
type Mode string

// The modes.
const (
	// Pairs pairs client 2k with client 2k+1; each sends to the other.
	Pairs Mode = "pairs"

	// Random has each client send each message to a random other client
	// of the same process.
	Random Mode = "random"

	// PingPong pairs clients like Pairs, but each pair bounces one message
	// at a time: client 2k sends, 2k+1 sends it back as soon as it
	// arrives, and so on. The latency reported is the round trip.
	PingPong Mode = "pingpong"

	// Idle logs the clients in and holds them, sending nothing, for the
	// duration; then (with Config.List) one extra connection asks for the
	// list of names. It measures what idle connections cost the server.
	Idle Mode = "idle"
)

// Defaults for Config's zero fields.
const (
	DefaultAddr         = chat.DefaultAddr
	DefaultClients      = 2
	DefaultSize         = 64
	DefaultWindow       = 100
	DefaultDuration     = 10 * time.Second
	DefaultMaxTime      = 10 * time.Minute
	DefaultDrainTimeout = 10 * time.Second
	DefaultDialTimeout  = 10 * time.Second
)

// ChildArg is the argument with which Run starts the child processes of
// Config.Procs. A program that sees it as its first argument must call
// ServeChild and exit.
const ChildArg = "-chatbench-child"

// Config describes a load. Its zero fields take the defaults above.
type Config struct {
	// Addr is the server's TCP address (or its WebSocket URL,
	// "ws://127.0.0.1:8080/ws", to load it over WebSocket), or the addresses of several
	// servers that act as one chat, separated by commas
	// ("127.0.0.1:7001,127.0.0.1:7002"). With n addresses, client i
	// (counted over all processes) connects to server i mod n, except in
	// Pairs and PingPong, which put the two clients of a pair on different
	// servers: client 2k on server k mod n and its partner 2k+1 on server
	// (k+1) mod n, so that every message crosses between servers; each
	// server holds about as many clients as the others (within two). Random
	// clients send to clients on any server; Idle's list request goes to
	// the first address.
	Addr string

	Clients  int           // clients in all processes
	Mode     Mode          // the traffic; Pairs if empty
	Size     int           // text bytes per message, at least 16 (the time stamp)
	Window   int           // requests in flight per client (not yet answered)
	Duration time.Duration // how long to send, after Warmup; with Messages, a limit
	Messages int64         // stop after this many messages in all (round trips for PingPong)
	Warmup   time.Duration // send for this long before measuring (with Duration only)
	Procs    int           // spread the clients over this many child processes (0 or 1: none)

	// Rate is the messages per second each client sends; 0 is as fast as
	// the window allows. A message held back by a full window is timed
	// from when it was due rather than from when it was written, so that
	// a server that cannot keep up shows in the latencies instead of
	// quietly lowering the rate (what HdrHistogram calls coordinated
	// omission).
	Rate float64

	// ServerPIDs are the process ids of the servers on this machine: Run
	// reports each one's CPU time over the run and its resident memory
	// before and after, from /proc, in Result.Servers. With as many PIDs
	// as addresses in Addr, PID i is taken for the server at address i,
	// whose clients divide its memory growth; a single PID is charged with
	// all the clients. Any other number of PIDs is an error.
	ServerPIDs []int

	// List has Idle mode ask for the list of names at the end, from one
	// more connection, and report how many came back and how long it took.
	List bool

	// Prefix starts every generated user name; the clients are Prefix0,
	// Prefix1, ... It defaults to "b" and the process id and "-".
	Prefix string

	// Progress, if not nil, receives a line each second while the load runs.
	Progress io.Writer `json:"-"`

	// Exe is the program started for each of Procs children, with ChildArg
	// as its only argument; the running program (os.Executable) if empty.
	Exe string

	MaxTime      time.Duration // bound on a Messages run without Duration
	DrainTimeout time.Duration // how long to wait for replies and messages in flight at the end
	DialTimeout  time.Duration // bound on connecting and logging in one client
}

// withDefaults returns c with its zero fields set and checks it.
func (c Config) withDefaults() (Config, error) {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	addrs, err := splitAddrs(c.Addr)
	if err != nil {
		return c, err
	}
	if pids := c.ServerPIDs; len(pids) > 1 && len(pids) != len(addrs) {
		return c, fmt.Errorf("%d server PIDs for %d server addresses: give one PID, or one per address in the same order", len(pids), len(addrs))
	}
	for _, pid := range c.ServerPIDs {
		if pid <= 0 {
			return c, fmt.Errorf("bad server PID %d", pid)
		}
	}
	if c.Clients == 0 {
		c.Clients = DefaultClients
	}
	if c.Mode == "" {
		c.Mode = Pairs
	}
	if c.Size == 0 {
		c.Size = DefaultSize
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.Mode == PingPong {
		c.Window = 1
	}
	if c.Duration == 0 && c.Messages == 0 {
		c.Duration = DefaultDuration
	}
	if c.MaxTime == 0 {
		c.MaxTime = DefaultMaxTime
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.Prefix == "" {
		c.Prefix = "b" + strconv.Itoa(os.Getpid()) + "-"
	}
	if c.Procs < 1 {
		c.Procs = 1
	}
	switch c.Mode {
	case Pairs, Random, PingPong, Idle:
	default:
		return c, fmt.Errorf("unknown mode %q (pairs, random, pingpong or idle)", c.Mode)
	}
	switch {
	case c.Clients < 1:
		return c, errors.New("the number of clients must be positive")
	case (c.Mode == Pairs || c.Mode == PingPong) && c.Clients%2 != 0:
		return c, fmt.Errorf("%s needs an even number of clients, not %d", c.Mode, c.Clients)
	case c.Size < stampLen || c.Size > chat.MaxTextLen:
		return c, fmt.Errorf("the text size must be from %d (the time stamp) to %d bytes", stampLen, chat.MaxTextLen)
	case c.Window < 1:
		return c, errors.New("the window must be positive")
	case c.Duration < 0 || c.Messages < 0 || c.Rate < 0 || c.Warmup < 0:
		return c, errors.New("the duration, message count, rate and warm-up cannot be negative")
	case c.Warmup > 0 && c.Duration == 0:
		return c, errors.New("a warm-up needs a duration")
	case c.Mode == Idle && c.Duration == 0:
		return c, errors.New("idle mode needs a duration")
	}
	perProc := c.Clients / c.Procs
	switch {
	case c.Mode == Random && perProc < 2:
		return c, fmt.Errorf("random mode needs at least 2 clients per process (%d clients, %d processes)", c.Clients, c.Procs)
	case (c.Mode == Pairs || c.Mode == PingPong) && perProc < 2:
		return c, fmt.Errorf("%s needs at least one pair per process (%d clients, %d processes)", c.Mode, c.Clients, c.Procs)
	case perProc < 1:
		return c, fmt.Errorf("more processes (%d) than clients (%d)", c.Procs, c.Clients)
	}
	for _, name := range []string{c.Prefix + "0", c.Prefix + strconv.Itoa(c.Clients-1)} {
		if err := chat.ValidateName(name); err != nil {
			return c, fmt.Errorf("generated name %q is not a valid user name (at most %d characters, no white space): shorten the prefix", name, chat.MaxNameLen)
		}
	}
	return c, nil
}

// maxShare returns the most clients one process of the load holds, as
// newWorkers divides them.
func (c *Config) maxShare() int {
	if c.pairwise() {
		return 2 * int(split(int64(c.Clients/2), c.Procs, 0))
	}
	return int(split(int64(c.Clients), c.Procs, 0))
}

// pairwise reports whether the mode pairs its clients.
func (c *Config) pairwise() bool { return c.Mode == Pairs || c.Mode == PingPong }

// splitAddrs returns the server addresses of a Config.Addr.
func splitAddrs(addr string) ([]string, error) {
	addrs := strings.Split(addr, ",")
	for i, a := range addrs {
		addrs[i] = strings.TrimSpace(a)
		if addrs[i] == "" {
			return nil, fmt.Errorf("empty server address in %q", addr)
		}
	}
	return addrs, nil
}

// serverOf returns which of n servers client i (its global index) connects
// to: see Config.Addr.
func (c *Config) serverOf(i, n int) int {
	if n <= 1 {
		return 0
	}
	if c.pairwise() {
		k := i / 2
		return (k + i%2) % n
	}
	return i % n
}

// clientsPerServer returns how many of the clients connect to each of n
// servers.
func (c *Config) clientsPerServer(n int) []int {
	per := make([]int, n)
	for i := range c.Clients {
		per[c.serverOf(i, n)]++
	}
	return per
}

// split divides n things among k parts as evenly as possible and returns
// the size of part i.
func split(n int64, k, i int) int64 {
	q, r := n/int64(k), n%int64(k)
	if int64(i) < r {
		return q + 1
	}
	return q
}
