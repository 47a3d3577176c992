// Command chatbench is a load generator for the chat server.
//
//	go run ./examples/chatbench [flags]
//
// It connects -clients clients to the server at -addr over TCP, logs them
// in under generated names, and has them message one another (-mode pairs,
// random or pingpong) for -duration or until -messages are sent, printing a
// progress line each second on standard error and a summary on standard
// output (-json for one JSON object). -mode idle holds logged-in clients
// that send nothing, to measure what a connection costs the server.
// Examples:
//
//	chatbench -addr 127.0.0.1:9000 -clients 2 -mode pairs -window 1000 -duration 5s
//	chatbench -clients 2 -mode pingpong -duration 5s -json
//	chatbench -clients 15000 -mode idle -procs 2 -duration 5s -server-pid $(pgrep -d, chatserver)
//
// -addr may list several servers that act as one chat, separated by
// commas: client i connects to server i mod n, except that pairs and
// pingpong put the two clients of a pair on different servers, so that
// every message crosses between them. -server-pid then takes the servers'
// PIDs, in the same order, and the summary reports each:
//
//	chatbench -addr 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 -clients 600 -mode pairs -duration 10s -server-pid 4101,4102,4103
//
// An -addr of the form ws://HOST:PORT/ws (or wss://) connects WebSocket
// clients instead, to chatserver -http-addr:
//
//	chatbench -addr ws://127.0.0.1:8080/ws -clients 20 -mode pairs -window 100 -duration 5s
//
// -procs K spreads the clients over K child processes of chatbench (one
// process can hold at most as many connections as its open-file limit
// allows). SIGINT or SIGTERM end the run early; it is still reported (a
// second signal kills chatbench).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/seedchat/chat/internal/bench"
	"github.com/seedchat/chat/internal/cmdline"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // the first signal ends the run gracefully; a second one kills
	if len(os.Args) > 1 && os.Args[1] == bench.ChildArg {
		if err := bench.ServeChild(ctx, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "chatbench (child):", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "chatbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	var cfg bench.Config
	var mode string
	var asJSON, quiet bool
	fs := flag.NewFlagSet("chatbench", flag.ContinueOnError)
	fs.StringVar(&cfg.Addr, "addr", bench.DefaultAddr, "the server's `HOST:PORT` (or ws://HOST:PORT/ws for WebSocket clients), or several servers of one chat separated by commas (client i on server i mod n; the two of a pair on different servers)")
	fs.IntVar(&cfg.Clients, "clients", bench.DefaultClients, "clients in all")
	fs.StringVar(&mode, "mode", string(bench.Pairs), "traffic: pairs, random, pingpong or idle")
	fs.IntVar(&cfg.Size, "size", bench.DefaultSize, "text `BYTES` per message (at least 16)")
	fs.IntVar(&cfg.Window, "window", bench.DefaultWindow, "requests in flight per client (pingpong: always 1)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "how long to send after the warm-up (default 10s unless -messages)")
	fs.Int64Var(&cfg.Messages, "messages", 0, "stop after this many messages in all (pingpong: round trips)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "messages per second per client (0: as fast as possible)")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "send for this long before measuring (needs -duration)")
	fs.IntVar(&cfg.Procs, "procs", 1, "spread the clients over this many child processes")
	fs.Var((*pidList)(&cfg.ServerPIDs), "server-pid", "report this local process's CPU time and memory (from /proc); several `PID`s separated by commas, one per -addr in the same order")
	fs.BoolVar(&cfg.List, "list", true, "idle mode: at the end, ask for the list of names from one more connection and report how many came back and how long it took (-list=false: not)")
	fs.StringVar(&cfg.Prefix, "prefix", "", "the clients log in as `PREFIX`0, PREFIX1, ...; give each chatbench running against the same servers its own (default b<pid>-)")
	fs.DurationVar(&cfg.MaxTime, "max-time", bench.DefaultMaxTime, "stop a -messages run without -duration after this long, even if not all the messages were sent")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", bench.DefaultDrainTimeout, "at the end, how long to wait for the replies and messages still in flight; what has not arrived by then counts as ok_undelivered")
	fs.BoolVar(&asJSON, "json", false, "print the result as one JSON object")
	fs.BoolVar(&quiet, "q", false, "no progress lines")
	if err := cmdline.Parse(fs, usageHead, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg.Mode = bench.Mode(mode)
	if !quiet {
		cfg.Progress = os.Stderr
	}

	res, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if asJSON {
		return res.WriteJSON(os.Stdout)
	}
	return res.WriteTable(os.Stdout)
}

// usageHead is the start of the -h output, before the flags.
const usageHead = `usage: chatbench [flags]
chatbench puts a load on chat servers and measures it.

It connects -clients clients to -addr, logs them in under generated
names, has them message one another (-mode) for -duration or until
-messages are sent, and prints a progress line each second on standard
error and a summary on standard output.

Flags:
`

// pidList is the value of -server-pid: process ids separated by commas.
type pidList []int

func (p *pidList) String() string {
	if p == nil {
		return ""
	}
	s := make([]string, len(*p))
	for i, pid := range *p {
		s[i] = strconv.Itoa(pid)
	}
	return strings.Join(s, ",")
}

func (p *pidList) Set(v string) error {
	*p = nil
	if v = strings.TrimSpace(v); v == "" || v == "0" {
		return nil // none, as before -server-pid took a list
	}
	for f := range strings.SplitSeq(v, ",") {
		pid, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || pid <= 0 {
			return fmt.Errorf("bad PID %q", f)
		}
		*p = append(*p, pid)
	}
	return nil
}
