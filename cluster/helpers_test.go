package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/seedchat/chat"
	"github.com/seedchat/chat/internal/natstest"
)

// TestMain fails the package's tests if any goroutine outlives them: the
// NATS servers, nodes and clients a test starts must all be gone.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Timings of the test clusters: short, so that a dead node is noticed in
// a few seconds (a node fences itself when it could not renew its lease for
// DeadAfter less two margins of DeadAfter/10, 2.4 s: long enough for a busy
// machine to renew it in time).
const (
	testDeadAfter = 3 * time.Second
	testHeartbeat = 100 * time.Millisecond
	testWait      = 30 * time.Second // bound on anything a test waits for
)

// natsServer is an embedded NATS server with JetStream, which a test can
// stop and start again on the same port and store.
type natsServer struct {
	t     *testing.T
	store string
	port  int
	ns    *natsserver.Server

	// Of a server in a NATS cluster (startNATSCluster), else zero.
	name    string
	cluster int        // port of its routes
	routes  []*url.URL // to the others
}

// startNATS starts a NATS server with JetStream on a free loopback port,
// stopped when the test ends.
func startNATS(t *testing.T) *natsServer {
	t.Helper()
	s := &natsServer{t: t, store: t.TempDir(), port: -1}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// start starts the server, again on the port and store it had if it ran
// before; natstest.Start, which picks them anew each time, cannot do that.
func (s *natsServer) start() {
	s.t.Helper()
	s.ns = natstest.Run(s.t, s.options())
	s.port = s.ns.Addr().(*net.TCPAddr).Port
}

func (s *natsServer) options() *natsserver.Options {
	opts := natstest.Options(s.port, s.store)
	if s.name != "" {
		opts.ServerName = s.name
		opts.Cluster = natsserver.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: s.cluster}
		opts.Routes = s.routes
	}
	return opts
}

func (s *natsServer) stop() {
	if s.ns != nil {
		natstest.Stop(s.ns)
		s.ns = nil
	}
}

func (s *natsServer) url() string { return "nats://127.0.0.1:" + strconv.Itoa(s.port) }

// startNATSCluster starts a cluster of three NATS servers with JetStream,
// routed to each other, and waits for its JetStream leader.
func startNATSCluster(t *testing.T) []*natsServer {
	t.Helper()
	ports := natstest.FreePorts(t, 6)
	servers := make([]*natsServer, 3)
	for i := range servers {
		s := &natsServer{t: t, store: t.TempDir(), port: ports[i], name: fmt.Sprint("nats-", i), cluster: ports[3+i]}
		for j := range 3 {
			if j != i {
				s.routes = append(s.routes, &url.URL{Scheme: "nats-route", Host: "127.0.0.1:" + strconv.Itoa(ports[3+j])})
			}
		}
		servers[i] = s
	}
	// Each waits for its routes to be ready: start them together, which
	// natstest.Run, waiting for one server at a time, cannot do.
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Go(func() {
			ns, err := natsserver.NewServer(s.options())
			if err != nil {
				t.Error(err)
				return
			}
			ns.Start()
			s.ns = ns
		})
	}
	wg.Wait()
	for _, s := range servers {
		t.Cleanup(s.stop)
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, s := range servers {
		if !s.ns.ReadyForConnections(natstest.ReadyTimeout) {
			t.Fatal("NATS server not ready")
		}
	}
	eventually(t, "a JetStream leader knowing its peers", func() bool {
		return slices.ContainsFunc(servers, func(s *natsServer) bool {
			return s.ns.JetStreamIsLeader() && len(s.ns.JetStreamClusterPeers()) == 3
		})
	})
	return servers
}

// clusterURL is the URL list of a NATS cluster, from server first on.
func clusterURL(servers []*natsServer, first int) string {
	urls := make([]string, len(servers))
	for i := range servers {
		urls[i] = servers[(first+i)%len(servers)].url()
	}
	return strings.Join(urls, ",")
}

// testLogger logs the nodes' warnings to the test's log with -v.
func testLogger(t *testing.T) *zap.Logger {
	if !testing.Verbose() {
		return nil
	}
	return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
}

// node is a chat server joined to a test cluster, listening on loopback.
type node struct {
	t      *testing.T
	name   string
	dir    *Directory
	srv    *chat.Server
	addr   string
	served chan error

	mu      sync.Mutex
	logouts map[string]chan struct{} // closed when the name logs out here
	reasons map[string]error         // of each name's last logout here
}

func startNode(t *testing.T, url, name string) *node {
	t.Helper()
	return startNodeWith(t, url, Config{Node: name}, nil)
}

// startNodeWith starts a node with cfg, its timings defaulting to the
// tests', and srv's settings (nil for none) for its chat server.
func startNodeWith(t *testing.T, url string, cfg Config, srv *chat.Server) *node {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testWait)
	defer cancel()
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = testDeadAfter
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = testHeartbeat
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	name := cfg.Node
	dir, err := Open(ctx, url, cfg)
	if err != nil {
		t.Fatalf("node %s: %v", name, err)
	}
	n := &node{t: t, name: name, dir: dir, served: make(chan error, 1), logouts: make(map[string]chan struct{}), reasons: make(map[string]error)}
	if srv == nil {
		srv = &chat.Server{}
	}
	n.srv = srv
	n.srv.Directory = dir
	n.srv.OnLogout = func(_ net.Conn, name string, err error) {
		n.mu.Lock()
		n.reasons[name] = err
		if ch := n.logouts[name]; ch != nil {
			close(ch)
			delete(n.logouts, name)
		}
		n.mu.Unlock()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = l.Addr().String()
	go func() { n.served <- n.srv.Serve(l) }()
	t.Cleanup(n.stop)
	return n
}

// stop shuts the node down cleanly: its users log out, then it leaves.
func (n *node) stop() {
	if n.srv == nil {
		return
	}
	n.srv.Close()
	<-n.served
	n.dir.Close()
	n.srv = nil
}

// kill stops the node as if its process were killed: it leaves NATS
// without deleting its users' names, and its clients' connections drop.
func (n *node) kill() {
	// NATS first, so that the users' logouts delete nothing, and the
	// connections next, so that no client is told anything more (a killed
	// process answers nothing): the Directory fails what it waits for after.
	n.dir.nc.Close()
	n.srv.Close()
	<-n.served
	n.dir.abandon()
	n.srv = nil
}

// loggedOut returns a channel closed when name logs out of the node.
func (n *node) loggedOut(name string) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch := make(chan struct{})
	n.logouts[name] = ch
	return ch
}

// reason returns why name last logged out of the node.
func (n *node) reason(name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.reasons[name]
}

// cluster3 starts NATS and three nodes joined through it.
func cluster3(t *testing.T) (*natsServer, []*node) {
	t.Helper()
	ns := startNATS(t)
	var nodes []*node
	for i := range 3 {
		nodes = append(nodes, startNode(t, ns.url(), fmt.Sprintf("n%d", i+1)))
	}
	return ns, nodes
}

// failures returns the Failures of every node by reason, summed.
func failures(n []*node) map[chat.FailureReason]uint64 {
	sum := make(map[chat.FailureReason]uint64)
	for _, nd := range n {
		for reason, v := range nd.srv.Stats().Failures {
			sum[reason] += v
		}
	}
	return sum
}

// user is a client of a test cluster with the messages it received.
type user struct {
	*chat.Client
	t    *testing.T
	name string
	msgs chan chat.Message
}

func dial(t *testing.T, n *node) *user {
	t.Helper()
	u := &user{t: t, msgs: make(chan chat.Message, 1<<14)}
	c, err := chat.Dial(t.Context(), n.addr, chat.OnMessage(func(m chat.Message) { u.msgs <- m }))
	if err != nil {
		t.Fatal(err)
	}
	u.Client = c
	t.Cleanup(func() { c.Close() })
	return u
}

// login connects a client to n and logs it in as name.
func login(t *testing.T, n *node, name string) *user {
	t.Helper()
	u := dial(t, n)
	if err := u.Login(ctx(t), name); err != nil {
		t.Fatalf("login %s on %s: %v", name, n.name, err)
	}
	u.name = name
	return u
}

// ctx returns a context for a test's requests, bounded by testWait.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), testWait)
	t.Cleanup(cancel)
	return c
}

// list lists through u, which must succeed.
func list(t *testing.T, u *user) []string {
	t.Helper()
	names, err := u.List(ctx(t))
	if err != nil {
		t.Fatalf("%s: list: %v", u.name, err)
	}
	return names
}

// receive waits for the user's next message.
func (u *user) receive() chat.Message {
	u.t.Helper()
	select {
	case m := <-u.msgs:
		return m
	case <-u.Done():
		u.t.Fatalf("%s: connection ended: %v", u.name, u.Err())
	case <-time.After(testWait):
		u.t.Fatalf("%s: no message", u.name)
	}
	return chat.Message{}
}

// ended waits until the user's connection has ended, the test failing
// with what otherwise.
func (u *user) ended(what string) {
	u.t.Helper()
	select {
	case <-u.Done():
	case <-time.After(testWait):
		u.t.Fatal(what)
	}
}

// noMessage fails the test if the user has a message it has not received:
// what is what is wrong with one.
func (u *user) noMessage(what string) {
	u.t.Helper()
	select {
	case m := <-u.msgs:
		u.t.Errorf("%s: %+v", what, m)
	default:
	}
}

// eventually polls cond until it holds, failing the test after testWait.
// It is for what no event announces: a node noticing that another died.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(testWait)
	for !cond() {
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func isFailure(err error) bool { return errors.Is(err, chat.ErrFailure) }

// raceLogins has every client log in at the same moment, client i as
// name(i), and returns the index of the one that succeeded; the test fails
// unless exactly one did and the others got Failure.
func raceLogins(t *testing.T, round int, clients []*user, name func(i int) string) int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var winners []int
	start := make(chan struct{})
	for i, c := range clients {
		wg.Go(func() {
			<-start
			err := c.Login(ctx(t), name(i))
			switch {
			case err == nil:
				mu.Lock()
				winners = append(winners, i)
				mu.Unlock()
			case !isFailure(err):
				t.Errorf("client %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("round %d: %d winners %v, want 1", round, len(winners), winners)
	}
	return winners[0]
}

// proxy forwards TCP connections to a NATS server, and can cut them: a
// node connected through it loses NATS while the others keep it.
type proxy struct {
	t      *testing.T
	target string
	addr   string

	mu     sync.Mutex
	l      net.Listener
	conns  map[net.Conn]struct{}
	frozen chan struct{} // while not nil, nothing is forwarded; closed by thaw
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	p := &proxy{t: t, target: target, conns: make(map[net.Conn]struct{})}
	p.listen("127.0.0.1:0")
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) url() string { return "nats://" + p.addr }

func (p *proxy) listen(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.l, p.addr = l, l.Addr().String()
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.l != l {
				// Cut while this connection was being set up: cut closed
				// the connections it knew of, not this one.
				p.mu.Unlock()
				c.Close()
				s.Close()
				return
			}
			p.conns[c], p.conns[s] = struct{}{}, struct{}{}
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(c, s)
			go p.pipe(s, c)
		}
	}()
}

// pipe forwards src to dst, holding what it reads while the proxy is
// paused.
func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		frozen := p.frozen
		p.mu.Unlock()
		if frozen != nil {
			<-frozen // what was read waits, as in a stopped process's socket
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// freeze stops forwarding, without closing anything, until thaw.
func (p *proxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen == nil {
		p.frozen = make(chan struct{})
	}
}

// thaw forwards again what was held, and what comes after.
func (p *proxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen != nil {
		close(p.frozen)
		p.frozen = nil
	}
}

// cut closes the proxy and every connection through it.
func (p *proxy) cut() {
	p.thaw()
	p.mu.Lock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
	p.mu.Unlock()
	p.wg.Wait()
}

// restore listens again on the same address.
func (p *proxy) restore() { p.listen(p.addr) }
