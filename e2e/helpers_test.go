//go:build unix

package e2e

// The helpers shared by the end-to-end tests: the programs run as processes
// with their outputs collected line by line, chatserver started alone or as
// a cluster node (joined through internal/natstest's embedded NATS server),
// a certificate authority writing PEM files. The README's
// cluster (walkthrough_test.go), terminals (pty_test.go) and browsers
// (browser_test.go) have their own.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// timeout bounds every wait for output or for a process to end. It is
// generous for a loaded CI machine; a passing run never waits that long.
const timeout = 15 * time.Second

// deadAfter is the -node-dead-after of the test clusters: short, so that a
// killed node's users are reaped in a few seconds (a node fences itself
// when it could not renew its lease for 1.6 s).
const deadAfter = 2 * time.Second

// goTool returns the go command: the one on PATH, where go test puts its
// own GOROOT/bin first, or else the running toolchain's.
func goTool() string {
	if goBin, err := exec.LookPath("go"); err == nil {
		return goBin
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// lineLog collects what a process writes to one of its outputs, split into
// lines, and lets a test wait for them.
type lineLog struct {
	mu      sync.Mutex
	lines   []string
	partial []byte        // the last line, not yet ended
	closed  bool          // the process ended: nothing more comes
	changed chan struct{} // closed at the next change
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	l.notify()
	return len(p), nil
}

func (l *lineLog) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *lineLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.notify()
}

// waitLine waits until line i (from 0) has been written, and returns it.
// It returns false if the output ends first or the deadline passes.
func (l *lineLog) waitLine(i int, deadline <-chan time.Time) (string, bool) {
	for {
		l.mu.Lock()
		if i < len(l.lines) {
			line := l.lines[i]
			l.mu.Unlock()
			return line, true
		}
		closed, changed := l.closed, l.changed
		l.mu.Unlock()
		if closed {
			return "", false
		}
		select {
		case <-changed:
		case <-deadline:
			return "", false
		}
	}
}

// snapshot returns the lines so far and the unfinished last line.
func (l *lineLog) snapshot() ([]string, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines), string(l.partial)
}

func (l *lineLog) String() string {
	lines, partial := l.snapshot()
	s := strings.Join(lines, "\n")
	if len(lines) > 0 {
		s += "\n"
	}
	return s + partial
}

// proc is a running program whose standard input is a pipe the test
// writes to and whose outputs are collected.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  *os.File // nil when the program gets no input
	stdout *lineLog
	stderr *lineLog
	next   int           // the next stdout line expectLine checks
	done   chan struct{} // closed when the program has ended and its output is in
}

// startProc starts bin with args. Its standard input is a pipe if withStdin
// is set, and empty otherwise. The program is killed when the test ends.
func startProc(t *testing.T, name, bin string, withStdin bool, args ...string) *proc {
	t.Helper()
	p := &proc{
		t:      t,
		name:   name,
		cmd:    exec.Command(bin, args...),
		stdout: newLineLog(),
		stderr: newLineLog(),
		done:   make(chan struct{}),
	}
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	p.cmd.WaitDelay = timeout
	var childIn *os.File
	if withStdin {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		childIn, p.stdin = r, w
		p.cmd.Stdin = r
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	if childIn != nil {
		childIn.Close()
	}
	go func() {
		p.cmd.Wait()
		p.stdout.close()
		p.stderr.close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.stdin != nil {
			p.stdin.Close()
		}
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(timeout):
				t.Errorf("%s: still running after being killed", name)
			}
		}
		if t.Failed() {
			t.Logf("%s stdout:\n%s", name, clip(p.stdout.String()))
			t.Logf("%s stderr:\n%s", name, clip(p.stderr.String()))
		}
	})
	return p
}

// clip shortens s for a failure message.
func clip(s string) string {
	const max = 2000
	if len(s) <= max {
		return s
	}
	return s[:max/2] + fmt.Sprintf("…(%d bytes)…", len(s)-max) + s[len(s)-max/2:]
}

// send writes text to the program's standard input.
func (p *proc) send(text string) {
	p.t.Helper()
	if err := p.trySend(text); err != nil {
		p.t.Fatalf("%s: writing %q: %v", p.name, clip(text), err)
	}
}

// trySend is send for a program that may have ended meanwhile.
func (p *proc) trySend(text string) error {
	p.stdin.SetWriteDeadline(time.Now().Add(timeout))
	_, err := p.stdin.WriteString(text)
	return err
}

// closeInput ends the program's standard input.
func (p *proc) closeInput() {
	p.t.Helper()
	if err := p.stdin.Close(); err != nil {
		p.t.Fatalf("%s: closing stdin: %v", p.name, err)
	}
}

// expectLine waits for the next line of standard output and checks it.
func (p *proc) expectLine(want string) {
	p.t.Helper()
	deadline := time.After(timeout)
	got, ok := p.stdout.waitLine(p.next, deadline)
	if !ok {
		p.t.Fatalf("%s: stdout line %d: want %q, got nothing within %v (or the output ended)",
			p.name, p.next+1, clip(want), timeout)
	}
	p.next++
	if got != want {
		p.t.Fatalf("%s: stdout line %d = %q, want %q", p.name, p.next, clip(got), clip(want))
	}
}

// do sends one command line and checks the lines it prints.
func (p *proc) do(line string, want ...string) {
	p.t.Helper()
	p.send(line + "\n")
	for _, w := range want {
		p.expectLine(w)
	}
}

// wait waits for the program to end and returns its exit status (-1 if a
// signal ended it).
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not end within %v", p.name, timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// expectEnd waits for the program to end with the given status, and checks
// that its standard output held exactly the lines expectLine checked.
func (p *proc) expectEnd(status int) {
	p.t.Helper()
	if got := p.wait(); got != status {
		p.t.Errorf("%s: exit status %d, want %d", p.name, got, status)
	}
	lines, partial := p.stdout.snapshot()
	if extra := lines[min(p.next, len(lines)):]; len(extra) > 0 {
		p.t.Errorf("%s: unexpected lines after the %d expected: %q", p.name, p.next, extra)
	}
	if partial != "" {
		p.t.Errorf("%s: output ends in %q without a line end", p.name, partial)
	}
}

// expectStderr checks that the program, having ended, said something on
// standard error, and returns it.
func (p *proc) expectStderr() string {
	p.t.Helper()
	s := strings.TrimSpace(p.stderr.String())
	if s == "" {
		p.t.Errorf("%s: nothing on stderr, want a reason", p.name)
	}
	return s
}

// list sends list and returns the line the client prints for it.
func (p *proc) list() string {
	p.t.Helper()
	p.send("list\n")
	line, ok := p.stdout.waitLine(p.next, time.After(timeout))
	if !ok {
		p.t.Fatalf("%s: stdout line %d: want the list, got nothing within %v (or the output ended)",
			p.name, p.next+1, timeout)
	}
	p.next++
	return line
}

// sendUntilSuccess sends line until the client prints Success rather than
// Failure, for a while.
func sendUntilSuccess(t *testing.T, p *proc, line string) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	giveUp := time.After(timeout)
	for {
		p.send(line + "\n")
		got, ok := p.stdout.waitLine(p.next, time.After(timeout))
		if !ok {
			t.Fatalf("%s: %q: no reply", p.name, line)
		}
		p.next++
		switch got {
		case "Success":
			return
		case "Failure":
		default:
			t.Fatalf("%s: %q printed %q", p.name, line, got)
		}
		select {
		case <-tick.C:
		case <-giveUp:
			t.Fatalf("%s: %q still Failure after %v", p.name, line, timeout)
		}
	}
}

// server is a running chatserver.
type server struct {
	*proc
	addr, host, port string
}

// logEntry is the part of a zap JSON log line the tests look at.
type logEntry struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
	Addr  string `json:"addr"`
	TLS   bool   `json:"tls"`
}

// startServer starts chatserver on a free loopback port and waits for it
// to log the address it listens on.
func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	p := startProc(t, "chatserver", serverBin, false, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	return waitListening(t, p, timeout)
}

// waitListening waits, for up to wait, until the chatserver p logs the
// address it listens on (a cluster node does once it has joined), and
// returns it as a server.
func waitListening(t *testing.T, p *proc, wait time.Duration) *server {
	t.Helper()
	deadline := time.After(wait)
	for i := 0; ; i++ {
		line, ok := p.stderr.waitLine(i, deadline)
		if !ok {
			t.Fatalf("%s never logged \"listening\"; stderr:\n%s", p.name, clip(p.stderr.String()))
		}
		var e logEntry
		if json.Unmarshal([]byte(line), &e) != nil || e.Msg != "listening" {
			continue
		}
		host, port, err := net.SplitHostPort(e.Addr)
		if err != nil {
			t.Fatalf("%s logged a bad address: %s", p.name, line)
		}
		return &server{proc: p, addr: e.Addr, host: host, port: port}
	}
}

// logEntries returns the server's log lines so far, decoded; lines that are
// not JSON are an error.
func (s *server) logEntries() []logEntry {
	s.t.Helper()
	lines, _ := s.stderr.snapshot()
	var entries []logEntry
	for _, line := range lines {
		var e logEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			s.t.Errorf("chatserver log line is not JSON: %q", line)
			continue
		}
		entries = append(entries, e)
	}
	return entries
}

// startClient starts chatclient connected to srv, with standard input from
// a pipe.
func startClient(t *testing.T, name string, srv *server, flags ...string) *proc {
	t.Helper()
	return startProc(t, name, clientBin, true, append(flags, srv.host, srv.port)...)
}

// loggedIn starts a client and logs it in as name.
func loggedIn(t *testing.T, srv *server, name string) *proc {
	t.Helper()
	c := startClient(t, name, srv)
	c.do("login "+name, "Success")
	return c
}

// startNode starts chatserver as cluster node name on a free loopback port
// and waits for it to log the address it listens on, which it does once it
// has joined the cluster.
func startNode(t *testing.T, natsURL, name string) *server {
	t.Helper()
	p := startProc(t, "chatserver "+name, serverBin, false,
		"-addr", "127.0.0.1:0", "-nats", natsURL, "-node-name", name,
		"-node-dead-after", deadAfter.String())
	return waitListening(t, p, timeout)
}

// testCA is a certificate authority for the tests, writing PEM files.
type testCA struct {
	t    *testing.T
	dir  string
	name string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA's certificate
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	ca := &testCA{t: t, dir: dir, name: name}
	ca.cert, ca.key, ca.file = ca.issue(name, nil, nil)
	return ca
}

// issue writes a certificate signed by ca (self-signed when ca.cert is
// nil), with its key, and returns it and the file of the certificate.
func (ca *testCA) issue(name string, usage []x509.ExtKeyUsage, dns []string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	t := ca.t
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     dns,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
	}
	parent, parentKey := ca.cert, ca.key
	if parent == nil {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.BasicConstraintsValid, tmpl.IsCA = true, true
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(ca.dir, ca.name+"-"+name)
	for file, block := range map[string]*pem.Block{
		base + ".pem":     {Type: "CERTIFICATE", Bytes: der},
		base + "-key.pem": {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, base + ".pem"
}

// leaf writes a certificate for name and returns its file and its key's.
func (ca *testCA) leaf(name string, usage x509.ExtKeyUsage, dns ...string) (certFile, keyFile string) {
	ca.t.Helper()
	_, _, certFile = ca.issue(name, []x509.ExtKeyUsage{usage}, dns)
	return certFile, strings.TrimSuffix(certFile, ".pem") + "-key.pem"
}
