package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/seedchat/chat"
)

// worker is one process's share of a load: the load itself (in this
// process) or a child process running it.
type worker interface {
	connect(ctx context.Context) error // connect and log in; on error, clean up
	abort()                            // give up a connected worker before start
	start()                            // start the traffic
	stop()                             // stop the traffic (idempotent)
	stopped() <-chan struct{}          // closed when the traffic has ended and drained
	progress() counts                  // running totals
	wait() (*part, error)              // wait for the end and the result
}

// Run runs the load described by cfg against the server (or servers) at
// cfg.Addr: it connects and logs in every client, runs the traffic until
// the duration ends or the messages are sent (or ctx is cancelled, which
// ends the run early but still reports it), logs the clients out and
// returns what was measured. Progress lines go to cfg.Progress each second.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := checkFileLimit(cfg.maxShare()); err != nil {
		return nil, err
	}
	pids := cfg.ServerPIDs
	before, err := sampleProcs(pids)
	if err != nil {
		return nil, err
	}

	workers, err := newWorkers(cfg)
	if err != nil {
		return nil, err
	}
	connectStart := time.Now()
	if err := connectAll(ctx, workers); err != nil {
		return nil, err
	}
	connectS := time.Since(connectStart).Seconds()

	srvStart, err := sampleProcs(pids)
	if err != nil {
		for _, w := range workers {
			w.abort()
		}
		return nil, err
	}
	user0, sys0 := cpuTime()
	runStart := time.Now()
	for _, w := range workers {
		w.start()
	}
	stopAll := sync.OnceFunc(func() {
		for _, w := range workers {
			w.stop()
		}
	})
	defer stopAll()

	// A worker's traffic ends when its time is up, when it has sent its
	// share of Messages, or when it fails. Without Messages, the first to
	// end ends the others: they would stop within moments anyway, unless
	// the first failed, and then the run is lost.
	oneStopped := make(chan struct{}, len(workers))
	var watchers sync.WaitGroup
	for _, w := range workers {
		watchers.Go(func() {
			<-w.stopped()
			oneStopped <- struct{}{}
		})
	}
	running := len(workers)
	var hold <-chan time.Time
	if cfg.Mode == Idle {
		t := time.NewTimer(cfg.Duration)
		defer t.Stop()
		hold = t.C
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	pr := progressPrinter{cfg: &cfg, start: runStart, last: runStart}
	done := ctx.Done()
wait:
	for {
		select {
		case <-tick.C:
			if cfg.Progress != nil {
				var sum counts
				for _, w := range workers {
					c := w.progress()
					sum.Delivered += c.Delivered
					sum.Failures += c.Failures
					sum.Sent += c.Sent
				}
				pr.print(sum)
			}
		case <-done:
			if cfg.Mode == Idle {
				break wait
			}
			stopAll()
			done = nil
		case <-hold:
			break wait
		case <-oneStopped:
			if running--; running == 0 {
				break wait
			}
			if cfg.Messages == 0 {
				stopAll()
			}
		}
	}
	wall := time.Since(runStart)

	srvEnd, err := sampleProcs(pids)
	var list *ListResult
	if cfg.Mode == Idle && cfg.List && ctx.Err() == nil {
		list = listNames(ctx, &cfg)
	}
	stopAll()

	parts := make([]*part, len(workers))
	var errs []error
	for i, w := range workers {
		p, e := w.wait()
		if e != nil {
			errs = append(errs, e)
		}
		parts[i] = p
	}
	watchers.Wait() // every worker has stopped: its watcher is done
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err != nil {
		return nil, err // reading the server's /proc at the end
	}
	user1, sys1 := cpuTime()
	res := merge(&cfg, parts)
	res.ConnectS = round(connectS, 3)
	res.CPUUserS = round(res.CPUUserS+user1-user0, 2)
	res.CPUSysS = round(res.CPUSysS+sys1-sys0, 2)
	res.Servers = serverUsages(&cfg, pids, before, srvStart, srvEnd, wall)
	res.List = list
	return res, nil
}

// newWorkers divides the clients among cfg.Procs workers.
func newWorkers(cfg Config) ([]worker, error) {
	if cfg.Procs == 1 {
		return []worker{newLoad(cfg, 0, cfg.Clients)}, nil
	}
	exe := cfg.Exe
	var err error
	if exe == "" {
		if exe, err = executable(); err != nil {
			return nil, err
		}
	}
	workers := make([]worker, cfg.Procs)
	offset := 0
	for i := range workers {
		child := cfg
		child.Procs = 1
		child.Progress = nil
		child.ServerPIDs = nil
		child.List = false
		if cfg.pairwise() {
			pairs := split(int64(cfg.Clients/2), cfg.Procs, i)
			child.Clients = int(2 * pairs)
			if cfg.Messages > 0 {
				child.Messages = sharesOf(cfg.Messages, cfg.Clients/2, offset/2, int(pairs))
			}
		} else {
			child.Clients = int(split(int64(cfg.Clients), cfg.Procs, i))
			if cfg.Messages > 0 {
				child.Messages = sharesOf(cfg.Messages, cfg.Clients, offset, child.Clients)
			}
		}
		workers[i] = newChildProc(exe, i, childSpec{Config: child, Offset: offset, Total: cfg.Clients})
		offset += child.Clients
	}
	return workers, nil
}

// sharesOf returns the messages of senders from to from+n when total is
// split evenly among all senders.
func sharesOf(total int64, all, from, n int) int64 {
	var sum int64
	for i := from; i < from+n; i++ {
		sum += split(total, all, i)
	}
	return sum
}

// connectAll connects the workers at once; if one fails, the others are
// closed.
func connectAll(ctx context.Context, workers []worker) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(workers))
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = w.connect(ctx); errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	var first error
	for _, err := range errs {
		if err != nil && (first == nil || errors.Is(first, context.Canceled)) {
			first = err
		}
	}
	if first == nil {
		return nil
	}
	for i, w := range workers {
		if errs[i] == nil {
			w.abort()
		}
	}
	return first
}

// listNames asks for the list of names from a new connection to the first
// server, without logging in, and times the answer.
func listNames(ctx context.Context, cfg *Config) *ListResult {
	res := &ListResult{}
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	addrs, _ := splitAddrs(cfg.Addr) // checked by withDefaults
	nc, err := dial(ctx, addrs[0])
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer nc.Close()
	deadline, _ := ctx.Deadline()
	nc.SetDeadline(deadline)
	fr := chat.NewFrameReader(nc, 1<<30)
	t0 := time.Now()
	_, err = nc.Write(chat.AppendList(nil))
	var f chat.Frame
	if err == nil {
		f, err = fr.Next()
	}
	res.MS = round(float64(time.Since(t0))/1e6, 3)
	switch {
	case err != nil:
		res.Error = err.Error()
	case f.Type == chat.TypeResponse:
		res.Error = "the server answered " + f.Result.String()
	case f.Type != chat.TypeNames:
		res.Error = fmt.Sprintf("the server answered %v", f.Type)
	default:
		for range chat.Names(f.Names) {
			res.Names++
		}
	}
	return res
}

// progressPrinter writes the progress line each second.
type progressPrinter struct {
	cfg         *Config
	start, last time.Time
	prev        counts
}

func (p *progressPrinter) print(c counts) {
	t := time.Now()
	dt := t.Sub(p.last).Seconds()
	rate := float64(c.Delivered-p.prev.Delivered) / dt
	phase := ""
	if t.Sub(p.start) <= p.cfg.Warmup {
		phase = " (warm-up)"
	}
	if p.cfg.Mode == Idle {
		fmt.Fprintf(p.cfg.Progress, "chatbench: %3.0fs  %d clients idle\n", t.Sub(p.start).Seconds(), p.cfg.Clients)
	} else {
		fmt.Fprintf(p.cfg.Progress, "chatbench: %3.0fs  %10s msg/s  %8.2f MB/s  delivered %s  failures %s%s\n",
			t.Sub(p.start).Seconds(), group(uint64(rate)), rate*float64(p.cfg.Size)/1e6,
			group(c.Delivered), group(c.Failures), phase)
	}
	p.last, p.prev = t, c
}
