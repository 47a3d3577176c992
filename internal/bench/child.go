package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// The conversation between Run and a child process, over the child's
// standard input and output:
//
//	parent → child: the childSpec as one line of JSON
//	child → parent: {"event":"ready"} once its clients are logged in
//	parent → child: "go" and a newline: start the traffic
//	child → parent: {"event":"progress",...} each second
//	child → parent: {"event":"stopped"} when the traffic has ended
//	child → parent: {"event":"result",...}, then it exits
//
// The end of the child's standard input means stop: before "go", log out
// and exit; after, end the traffic early and report. A child that fails
// sends {"event":"error"} and exits with a non-zero status.

// childSpec is the share of the load one child runs.
type childSpec struct {
	Config Config `json:"config"`
	Offset int    `json:"offset"` // the global index of its first client
	Total  int    `json:"total"`  // the clients of all processes
}

type childEvent struct {
	Event  string  `json:"event"` // ready, progress, stopped, result, error
	Counts *counts `json:"counts,omitempty"`
	Result *part   `json:"result,omitempty"`
	Error  string  `json:"error,omitempty"`
}

// ServeChild runs one child process of a Run with Config.Procs: it reads
// its share of the load from stdin and reports on stdout. A program calls
// it when its first argument is ChildArg, and exits non-zero if it returns
// an error. Cancelling ctx ends the traffic early. Once the traffic has
// started, a goroutine reads stdin to its end, which may come after
// ServeChild returns: a child process exits then, and a caller in a
// process that goes on closes stdin.
func ServeChild(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	in := bufio.NewReader(stdin)
	var mu sync.Mutex
	enc := json.NewEncoder(stdout)
	emit := func(ev childEvent) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(ev)
	}
	fail := func(err error) error {
		emit(childEvent{Event: "error", Error: err.Error()})
		return err
	}

	line, err := in.ReadBytes('\n')
	if err != nil {
		return fail(fmt.Errorf("reading the load: %w", err))
	}
	var spec childSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		return fail(fmt.Errorf("reading the load: %w", err))
	}
	cfg, err := spec.Config.withDefaults()
	if err != nil {
		return fail(err)
	}
	if err := checkFileLimit(cfg.Clients); err != nil {
		return fail(err)
	}
	l := newLoad(cfg, spec.Offset, spec.Total)
	if err := l.connect(ctx); err != nil {
		return fail(err)
	}
	emit(childEvent{Event: "ready"})
	if cmd, err := in.ReadString('\n'); err != nil || cmd != "go\n" {
		l.abort()
		return nil // the parent gave up
	}

	user0, sys0 := cpuTime()
	l.start()
	go func() {
		io.Copy(io.Discard, in)
		l.stop()
	}()
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		done := ctx.Done()
		for {
			select {
			case <-tick.C:
				c := l.progress()
				emit(childEvent{Event: "progress", Counts: &c})
			case <-done:
				l.stop()
				done = nil // once: a closed channel would spin this loop while the load drains
			case <-l.stopped():
				return
			}
		}
	}()
	<-l.stopped()
	<-progressDone
	emit(childEvent{Event: "stopped"})
	p, err := l.wait()
	if err != nil {
		return fail(err)
	}
	user1, sys1 := cpuTime()
	p.CPUUserS, p.CPUSysS = user1-user0, sys1-sys0
	if err := p.encode(); err != nil {
		return fail(err)
	}
	emit(childEvent{Event: "result", Result: p})
	return nil
}

// childProc is a worker in a child process.
type childProc struct {
	exe  string
	n    int // its number, for messages
	spec childSpec

	cmd       *exec.Cmd
	stdin     io.WriteCloser
	closeIn   sync.Once
	readyCh   chan struct{} // closed on "ready" or at the end
	ready     bool          // set before readyCh is closed
	stoppedCh chan struct{} // closed on "stopped" or at the end
	doneCh    chan struct{} // closed when the child has exited

	mu   sync.Mutex
	last counts

	res *part // set before doneCh is closed
	err error
}

func newChildProc(exe string, n int, spec childSpec) *childProc {
	return &childProc{
		exe:       exe,
		n:         n,
		spec:      spec,
		readyCh:   make(chan struct{}),
		stoppedCh: make(chan struct{}),
		doneCh:    make(chan struct{}),
	}
}

func executable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding the program to start for -procs: %w", err)
	}
	return exe, nil
}

func (c *childProc) connect(ctx context.Context) error {
	c.cmd = exec.Command(c.exe, ChildArg)
	c.cmd.Stderr = os.Stderr
	stdin, err := c.cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := c.cmd.Start(); err != nil {
		return fmt.Errorf("starting child process: %w", err)
	}
	c.stdin = stdin
	go c.readEvents(stdout)
	spec, err := json.Marshal(c.spec)
	if err == nil {
		_, err = stdin.Write(append(spec, '\n'))
	}
	if err != nil {
		c.abort()
		return fmt.Errorf("child process %d: %w", c.n, err)
	}
	select {
	case <-c.readyCh:
		if !c.ready {
			<-c.doneCh
			return c.err
		}
		return nil
	case <-ctx.Done():
		c.abort()
		return ctx.Err()
	}
}

// readEvents reads the child's reports until it exits.
func (c *childProc) readEvents(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	var readyOnce, stoppedOnce sync.Once
	for sc.Scan() {
		var ev childEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			c.err = fmt.Errorf("child process %d: bad report %q: %w", c.n, sc.Text(), err)
			break
		}
		switch ev.Event {
		case "ready":
			readyOnce.Do(func() { c.ready = true; close(c.readyCh) })
		case "progress":
			if ev.Counts != nil {
				c.mu.Lock()
				c.last = *ev.Counts
				c.mu.Unlock()
			}
		case "stopped":
			stoppedOnce.Do(func() { close(c.stoppedCh) })
		case "result":
			if ev.Result == nil {
				break
			}
			if err := ev.Result.decode(); err != nil {
				c.err = fmt.Errorf("child process %d: %w", c.n, err)
				break
			}
			c.res = ev.Result
		case "error":
			c.err = fmt.Errorf("child process %d: %s", c.n, ev.Error)
		}
	}
	io.Copy(io.Discard, stdout)
	werr := c.cmd.Wait()
	if c.err == nil && c.res == nil {
		c.err = fmt.Errorf("child process %d ended without a result: %v", c.n, werr)
	}
	readyOnce.Do(func() { close(c.readyCh) })
	stoppedOnce.Do(func() { close(c.stoppedCh) })
	close(c.doneCh)
}

func (c *childProc) start() {
	if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
		c.stop()
	}
}

func (c *childProc) stop() {
	c.closeIn.Do(func() { c.stdin.Close() })
}

// abort closes the child's input, which makes it log out and exit, and
// waits for it (killing it if it takes too long).
func (c *childProc) abort() {
	c.stop()
	t := time.NewTimer(c.spec.Config.DrainTimeout + 5*time.Second)
	defer t.Stop()
	select {
	case <-c.doneCh:
	case <-t.C:
		c.cmd.Process.Kill()
		<-c.doneCh
	}
}

func (c *childProc) stopped() <-chan struct{} { return c.stoppedCh }

func (c *childProc) progress() counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func (c *childProc) wait() (*part, error) {
	<-c.doneCh
	if c.err != nil {
		return nil, c.err
	}
	return c.res, nil
}
