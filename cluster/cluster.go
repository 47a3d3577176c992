// Package cluster joins several chat servers into one chat through NATS.
//
// A Directory implements chat.Directory over a NATS server with JetStream.
// Give the same Directory to a chat.Server on each node:
//
//	dir, err := cluster.Open(ctx, "nats://127.0.0.1:4222", cluster.Config{Node: "node-1"})
//	if err != nil { ... }
//	defer dir.Close()
//	srv := &chat.Server{Directory: dir}
//
// # How it works
//
// Logged-in names live in a JetStream key-value bucket. A name's key is
// its confusable skeleton (chat.Skeleton), so that a name and its
// lookalikes ("paypal", "pаypal" with a Cyrillic а, "paypa1") share one
// key; the key holds the name of the node the user is connected to and the
// user's exact name. A login is an atomic create of the key, so of two
// logins with one name, or with two names that look alike, on any nodes and
// at the same moment, exactly one wins: the other is told chat.ErrNameTaken
// (the same name) or chat.ErrNameLookalike (a name that looks the same). A
// logout deletes the key, provided it is still the one the login created.
// Each node keeps a copy of the bucket, kept current by a watch, from which
// it answers list and finds the node of a recipient. All the nodes of a
// cluster must run the same version: the skeletons of another version's
// confusables table could differ.
//
// # Buckets of earlier versions
//
// Earlier versions keyed the bucket by the name itself, and their default
// bucket was chat_users. This version's default bucket is chat_names, so a
// node of this version never misreads a bucket of the previous one, and
// the two versions do not share a chat: upgrade every node together. The
// old bucket is left alone; delete it once no node of the previous
// version runs (nats kv del chat_users). A Config.Bucket that names a
// bucket of the previous version is not usable: its values are not read,
// and a warning says so.
//
// # Messages between nodes
//
// A message for a user on another node does not hold up its sender: the
// node gathers everything its connections have for each other node into
// one batch, one NATS message, sent when the connections have handled what
// they read; the other node queues each message for its user and answers
// the whole batch with one message. Meanwhile the sending connection goes
// on reading and handling requests; its replies still go out in the order
// of its requests (chat.Receipt), and at chat.Server.MaxPending messages
// waiting for other nodes it reads no more until answers come. Success
// means the recipient's server queued the message for the very login it was
// addressed to; Failure, that it was not queued and never will be: an
// answer NATS loses is asked for again, and the question fences. One
// sender's messages to one recipient arrive in order. batch.go and
// status.go give the details and the layout of the messages.
//
// # A name is held once, at every moment
//
// A node holds its users' names under a lease: a key of the bucket that it
// renews every Config.Heartbeat with a compare-and-set, each renewal
// counting from when its request started. Before it serves a request of one
// of its users (Login, Lookup, so every sendto, local ones included, and
// Names) and before it queues a message from another node, the node checks
// on its own clocks that its last renewal confirmed by JetStream started
// less than Lease − Margin ago. If not, it fences itself: it disconnects its
// users (the reason wraps ErrFenced; Fenced counts it), refuses every
// request needing a name with Failure, and takes names again only once it
// has renewed its lease, when its users log in anew. The other nodes free a
// node's names only when its lease key has stayed unchanged for DeadAfter ≥
// Lease + Margin on their own clocks, from when they saw it (and from when
// they came online at the earliest), and then only through a
// compare-and-set delete of that very revision, which proves that no later
// renewal was confirmed. So a node cut off from NATS, paused (SIGSTOP, a
// long GC or VM pause) or descheduled has stopped serving its names before
// any other node may give them away, and when it resumes it delivers to
// none of them, local messages between its own users included.
//
// The assumption: the nodes' clocks run at rates that differ by less than
// 10% (with the default Margin; in general (1+ρ)² < DeadAfter/(Lease −
// Margin)), and a node is not stopped for longer than Margin between a
// check of its lease and the step it guards. No agreement of wall clocks is
// needed for names (a node checks its lease on its monotonic clock, and on
// its wall clock too, which a suspended machine's keeps). The one rule that
// still reads wall clocks is the deadline of batches (batch.go): a batch
// that arrives more than Timeout after it was sent is refused, which
// assumes the nodes' wall clocks agree within Timeout.
//
// With the defaults (DeadAfter 30 s, Margin 3 s, Lease 27 s, renewals
// every 1.5 s) a node fences itself after 24 s without a confirmed renewal.
// That outlasts, with room for a loaded machine, JetStream's election of a
// new leader for the bucket when the NATS server leading it dies: its
// followers wait 4 to 9 s without a heartbeat (sent every second) before
// they stand, about 10 s at most in all; a window of 12 s (DeadAfter 15 s)
// proved too short on a busy CI machine. A shorter DeadAfter frees a dead
// node's names sooner, and disconnects every user of the cluster when an
// election outlasts it.
//
// # Failures
//
// A node killed without cleaning up stops renewing its lease: the others
// delete its users' names DeadAfter later (plus one Heartbeat at most). A
// message for a user of a node that has died is answered Failure (NATS
// tells at once that nobody listens). A message the dead node had queued,
// and answered Success for, is lost with the recipient's connection, as on
// a single server that dies; so is one whose answer was lost before the
// node died (it is counted as queued: see status.go).
//
// A node that has lost its connection to NATS refuses logins, and messages
// to users on other nodes, with Failure (chat.ErrUnavailable): it cannot
// tell whether a name is free nor deliver elsewhere. Its own users keep
// chatting among themselves, and list shows them only, until its lease
// expires and it fences itself. When the connection comes back the node
// reads the bucket again; messages to other nodes flow again at once.
//
// # NATS in HA
//
// NATS may be a cluster of three servers with the bucket on R3 file storage
// (Config.Replicas 3): a login is acknowledged once a majority of the
// servers hold it, so losing one server loses no name, and messages, which
// travel through NATS but are never stored there, keep flowing. JetStream
// writes to disk every two minutes by default (the server's sync_interval):
// a power loss of a majority of the servers at once may forget the latest
// logins and logouts, unless the servers run with sync_interval: always.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/seedchat/chat"
	"github.com/seedchat/chat/internal/sortedkeys"
)

// Defaults of Config.
const (
	DefaultBucket    = "chat_names" // chat_users before names were keyed by skeleton
	DefaultPrefix    = "chat"
	DefaultDeadAfter = 30 * time.Second
	DefaultTimeout   = 2 * time.Second
)

// maxNode is the longest node name: a batch gives its length in a byte.
const maxNode = 255

// maxHeartbeat caps the default Config.Heartbeat.
const maxHeartbeat = 1500 * time.Millisecond

// Config configures a Directory. The zero value is usable, except that
// nodes started from one program on one host need distinct Node names.
type Config struct {
	// Node names this node, uniquely in the cluster: letters, digits, '-'
	// and '_'. A node restarted under the same name takes over its
	// previous run's lease, at once if that run closed, else once the lease
	// has stayed unrenewed for DeadAfter (Open waits), and then deletes the
	// names that run left behind; under a new name, they are freed after
	// DeadAfter. The default is the host name and the process id.
	Node string

	// Bucket is the JetStream key-value bucket of logged-in names, created
	// if missing. DefaultBucket if empty. It must not be a bucket of a
	// version that keyed names otherwise (see the package documentation).
	Bucket string

	// Prefix starts the NATS subjects of the cluster. DefaultPrefix if
	// empty. Clusters sharing a NATS server need distinct Buckets and
	// Prefixes.
	Prefix string

	// DeadAfter is how long a node's lease may go unrenewed, as another
	// node sees it, before that node takes it for dead and frees its users'
	// names. It must be at least Lease + Margin. DefaultDeadAfter if zero.
	DeadAfter time.Duration

	// Lease is how long a renewal of a node's lease holds its users' names;
	// the node stops serving them (it fences itself) when its last
	// confirmed renewal started Lease − Margin ago. DeadAfter − Margin if
	// zero.
	Lease time.Duration

	// Margin is what the node keeps of its lease, and what the others wait
	// beyond it, for the nodes' clocks to run at different rates and for a
	// pause between a check of the lease and what it guards. DeadAfter/10
	// if zero.
	Margin time.Duration

	// Heartbeat is how often the node renews its lease, and checks the
	// others. DeadAfter/10 if zero, 1.5 s at most; it must be at most
	// (Lease − Margin)/2.
	Heartbeat time.Duration

	// Timeout bounds each request to NATS. A batch of messages for another
	// node is queued there only within Timeout of being sent (by the
	// nodes' wall clocks, which must agree within Timeout), and asked
	// about if its answer has not come within Timeout. DefaultTimeout if
	// zero.
	Timeout time.Duration

	// Replicas is the number of copies JetStream keeps of the bucket, when
	// it creates it: 1 if zero.
	Replicas int

	// Logger receives the cluster's events. Nil means no logging.
	Logger *zap.Logger

	// Options are added to the Directory's own for its NATS connection
	// (which reconnect for ever, every half second).
	Options []nats.Option
}

// Directory is a chat.Directory shared by the nodes of a cluster through
// NATS. It is safe for concurrent use. See the package documentation.
type Directory struct {
	cfg      Config
	log      *zap.Logger
	nc       *nats.Conn
	js       jetstream.JetStream
	instance string // tells this process from another using the same Node
	deliver  string // subject of messages for this node's users

	// Batches of messages for other nodes (batch.go).
	instanceID uint64 // instance, as a batch carries it
	ackPrefix  string // of the subjects the answers to this node's batches come on
	headerSize int    // of this node's batches
	linksMu    sync.Mutex
	links      map[string]*link // to the other nodes, by name
	sentMu     sync.Mutex
	seq        uint64            // of the last batch sent
	sent       map[uint64]*batch // sent, waiting for their answers

	askers sync.WaitGroup // asking about late batches (status.go)

	recvMu   sync.Mutex
	received map[uint64]*received // batches received, by sending process

	// Used by handleBatch only, which NATS calls on one goroutine.
	batchSub  *nats.Subscription
	touched   []chat.Peer // peers given messages not written yet
	unwritten int         // batches handled since the last writeQueued

	online atomic.Bool   // connected, with the copy of the bucket current
	fenced atomic.Bool   // not holding the lease: serving no names (lease.go)
	fences atomic.Uint64 // times fenced
	stamp  atomic.Pointer[stamp]
	valid  time.Duration                 // Lease − Margin
	hold   atomic.Pointer[chan struct{}] // set while a test pauses the node
	// set while a test has the watch of the bucket lose its updates
	testLoseUpdates atomic.Bool
	epoch           atomic.Uint64 // disconnections so far
	poke            chan struct{} // the connection changed: maintain now
	done            chan struct{} // closed by Close
	maint           sync.WaitGroup
	follows         sync.WaitGroup

	// Used by the maintaining goroutine only.
	watcher     *watch
	onlineSince time.Time

	// Used by the renewing goroutine only (and by Open and Close, when it
	// does not run).
	leaseRev  uint64    // of the node's lease key
	leaseLost bool      // the other nodes took this one for dead
	prevRev   uint64    // of a previous process's lease key, waited on
	prevSince time.Time // when prevRev was first seen

	mu      sync.RWMutex
	kv      jetstream.KeyValue
	ttl     bool                  // the bucket expires delete markers (LimitMarkerTTL)
	local   map[string]*localUser // this node's users
	all     map[string]*entry     // the copy of the bucket, by exact name
	keys    map[string]string     // the exact name each key of the copy holds
	sorted  sortedkeys.Cache      // of all, for Names
	applied uint64                // the last revision copied
	waiters []waiter              // Names calls waiting for a revision
	leases  map[string]leaseSeen  // the other nodes' leases, from the copy
	gen     uint64                // fences so far: a login spanning one fails
	closed  bool
}

// localUser is a login on this node.
type localUser struct {
	peer    chat.Peer
	rev     uint64 // the revision of its key; 0 while the login is in flight
	leaving bool   // its key is being deleted
}

// serving reports whether u holds its name here: its key is in the bucket
// and its logout has not started, so messages for the name are its. d.mu
// is held.
func (u *localUser) serving() bool { return u != nil && u.rev != 0 && !u.leaving }

// entry is a name in the copy of the bucket.
type entry struct {
	node string
	rev  uint64
	peer *remotePeer // nil for this node's names
}

type waiter struct {
	rev  uint64
	done chan struct{}
}

// Open connects to the NATS server at url (a comma-separated list for
// several), creates the bucket if it does not exist, and joins the cluster.
// It fails if NATS cannot be reached, or if a running node already uses the
// name cfg.Node. The Directory stays connected, reconnecting as needed,
// until Close.
func Open(ctx context.Context, url string, cfg Config) (*Directory, error) {
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.DeadAfter <= 0 {
		cfg.DeadAfter = DefaultDeadAfter
	}
	if cfg.Margin <= 0 {
		cfg.Margin = cfg.DeadAfter / 10
	}
	if cfg.Lease <= 0 {
		cfg.Lease = cfg.DeadAfter - cfg.Margin
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = min(cfg.DeadAfter/10, maxHeartbeat)
	}
	switch {
	case cfg.Lease <= cfg.Margin:
		return nil, fmt.Errorf("cluster: lease %v must be longer than its margin %v", cfg.Lease, cfg.Margin)
	case cfg.DeadAfter < cfg.Lease+cfg.Margin:
		return nil, fmt.Errorf("cluster: DeadAfter %v must be at least the lease %v plus the margin %v", cfg.DeadAfter, cfg.Lease, cfg.Margin)
	case cfg.Heartbeat > (cfg.Lease-cfg.Margin)/2:
		return nil, fmt.Errorf("cluster: heartbeat %v must be at most half of the lease %v less the margin %v", cfg.Heartbeat, cfg.Lease, cfg.Margin)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Node == "" {
		cfg.Node = HostNode(os.Getpid())
	}
	if !validToken(cfg.Node) || len(cfg.Node) > maxNode {
		return nil, fmt.Errorf("cluster: node name %q: use up to %d letters, digits, '-' and '_'", cfg.Node, maxNode)
	}
	if !validSubject(cfg.Prefix) {
		return nil, fmt.Errorf("cluster: subject prefix %q is not a NATS subject", cfg.Prefix)
	}
	var nonce [8]byte
	rand.Read(nonce[:])
	instance := hex.EncodeToString(nonce[:])
	d := &Directory{
		cfg:        cfg,
		log:        cfg.Logger,
		instance:   instance,
		deliver:    cfg.Prefix + ".deliver." + cfg.Node,
		instanceID: binary.BigEndian.Uint64(nonce[:]),
		ackPrefix:  cfg.Prefix + ".ack." + cfg.Node + "." + instance + ".",
		headerSize: 2 + len(cfg.Node) + 32,
		sent:       make(map[uint64]*batch),
		received:   make(map[uint64]*received),
		links:      make(map[string]*link),
		poke:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		local:      make(map[string]*localUser),
		all:        make(map[string]*entry),
		keys:       make(map[string]string),
		leases:     make(map[string]leaseSeen),
		valid:      cfg.Lease - cfg.Margin,
	}
	d.fenced.Store(true) // until it holds its lease
	d.stamp.Store(&stamp{})
	if d.log == nil {
		d.log = zap.NewNop()
	}
	d.log = d.log.With(zap.String("node", cfg.Node))

	opts := []nats.Option{
		nats.Name("chat node " + cfg.Node),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			d.epoch.Add(1)
			d.log.Warn("disconnected from NATS", zap.Error(err))
			d.readAnew()
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			d.log.Info("reconnected to NATS", zap.String("url", nc.ConnectedUrlRedacted()))
			d.kick()
		}),
	}
	nc, err := connect(ctx, url, append(opts, cfg.Options...), d.log)
	if err != nil {
		return nil, fmt.Errorf("cluster: connecting to NATS: %w", err)
	}
	d.nc = nc
	if d.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if err := d.subscribe(); err != nil {
		nc.Close()
		return nil, err
	}
	// JetStream may be electing a leader for the bucket (a NATS server has
	// just started or died): try again until ctx ends.
	for {
		err = d.join(ctx)
		if err == nil || ctx.Err() != nil {
			break
		}
		d.log.Info("joining the cluster; trying again", zap.Error(err))
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	if err != nil {
		d.stopWatch()
		nc.Close()
		d.follows.Wait()
		return nil, err
	}
	d.maint.Add(2)
	go d.maintain()
	go d.renewLoop()
	d.log.Info("joined the cluster", zap.String("nats", nc.ConnectedUrlRedacted()))
	return d, nil
}

// connect connects to NATS at url, trying again until ctx ends while no
// server there answers: NATS may be starting alongside the node.
func connect(ctx context.Context, url string, opts []nats.Option, log *zap.Logger) (*nats.Conn, error) {
	for waited := false; ; waited = true {
		nc, err := nats.Connect(url, opts...)
		if err == nil || !errors.Is(err, nats.ErrNoServers) {
			return nc, err
		}
		if !waited {
			log.Warn("waiting for a NATS server", zap.String("nats", url), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (gave up waiting: %w)", err, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// join opens the bucket, takes the node's lease and reads the bucket.
func (d *Directory) join(ctx context.Context) error {
	kv, err := d.openBucket(ctx)
	if err == nil {
		err = d.acquire(ctx, kv)
	}
	if err == nil {
		err = d.sync(ctx)
	}
	return err
}

// subscribe makes sure no other running node has this node's name, and
// starts answering for it.
func (d *Directory) subscribe() error {
	hello := d.cfg.Prefix + ".hello." + d.cfg.Node
	m, err := d.nc.Request(hello, []byte(d.instance), d.cfg.Timeout/4)
	switch {
	case err == nil:
		return fmt.Errorf("cluster: node name %q is in use by a running node (%s)", d.cfg.Node, m.Data)
	case !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("cluster: %w", err)
	}
	subs := []struct {
		subj string
		fn   nats.MsgHandler
	}{
		{hello, func(m *nats.Msg) { m.Respond([]byte(d.instance)) }},
		{d.deliver, d.handleBatch},
		{d.ackPrefix + "*", d.handleAnswer},
		{d.cfg.Prefix + ".status." + d.cfg.Node, d.handleStatus},
	}
	for _, s := range subs {
		sub, err := d.nc.Subscribe(s.subj, s.fn)
		if err != nil {
			return fmt.Errorf("cluster: subscribing to %s: %w", s.subj, err)
		}
		// Batches may come in bursts from many nodes. Those that wait here
		// past their deadline are answered late, not queued.
		sub.SetPendingLimits(-1, 64<<20)
		if s.subj == d.deliver {
			d.batchSub = sub
		}
	}
	return d.nc.FlushTimeout(d.cfg.Timeout)
}

// Node returns the node's name.
func (d *Directory) Node() string { return d.cfg.Node }

// Online reports whether the node is connected to the cluster: when it is
// not, logins and messages to other nodes are refused.
func (d *Directory) Online() bool { return d.online.Load() }

// Close leaves the cluster: it deletes the names of the users still logged
// in here (a Server's Shutdown logs them out first), and closes the NATS
// connection.
func (d *Directory) Close() error {
	d.stop(true)
	return nil
}

// abandon leaves without cleaning up, as a node that is killed: tests use
// it.
func (d *Directory) abandon() { d.stop(false) }

// stop ends the node's work; clean, it also frees its users' names and its
// lease, as Close documents.
func (d *Directory) stop(clean bool) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true // no more logins
	left := make(map[string]uint64, len(d.local))
	for name, u := range d.local {
		if u.rev != 0 {
			left[name] = u.rev
		}
	}
	d.mu.Unlock()
	close(d.done)
	d.maint.Wait()
	d.askers.Wait()
	d.failAll()
	if d.online.Swap(false) && clean {
		for name, rev := range left {
			d.deleteKey(name, rev)
		}
		d.expireLease(d.cfg.Node, d.leaseRev) // a restart need not wait
	}
	d.stopWatch()
	d.nc.Close()
	d.follows.Wait()
}

func (d *Directory) kick() {
	select {
	case d.poke <- struct{}{}:
	default:
	}
}

func (d *Directory) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.cfg.Timeout)
}

func (d *Directory) bucket() jetstream.KeyValue {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.kv
}

// errOffline is the error of requests refused while the node is offline.
var errOffline = fmt.Errorf("%w: not connected to the cluster", chat.ErrUnavailable)

// Login implements chat.Directory: it creates the key of name's skeleton
// in the bucket. It returns chat.ErrNameTaken if name is logged in
// anywhere in the cluster, chat.ErrNameLookalike if another name with the
// same skeleton is, and an error wrapping chat.ErrBadUsername for a name
// that breaks the name rules (a chat.Server never asks for one).
func (d *Directory) Login(name string, p chat.Peer) error {
	if err := chat.ValidateName(name); err != nil {
		return fmt.Errorf("cluster: %w: %+q", err, name)
	}
	if !d.leaseValid() {
		return errFenced
	}
	if !d.online.Load() {
		return errOffline
	}
	u := &localUser{peer: p}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return errOffline
	}
	if _, taken := d.local[name]; taken {
		d.mu.Unlock()
		return chat.ErrNameTaken
	}
	d.local[name] = u
	kv, gen := d.kv, d.gen
	d.mu.Unlock()

	var rev uint64
	var err error
	offload(func() { rev, err = d.claim(kv, name) })
	d.leaseValid() // fences the node if its lease expired meanwhile
	d.mu.Lock()
	if err == nil && d.gen != gen { // fenced meanwhile: u was evicted
		d.mu.Unlock()
		offload(func() { d.deleteKey(name, rev) })
		return errFenced
	}
	defer d.mu.Unlock()
	if err != nil {
		if d.local[name] == u {
			delete(d.local, name)
		}
		return err
	}
	u.rev = rev
	return nil
}

// claim creates the key of name's skeleton for this node. A key this node
// holds already with no user here (a logout it could not record while
// offline, of name or of a lookalike) is taken over.
func (d *Directory) claim(kv jetstream.KeyValue, name string) (uint64, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	k, v := key(name), value(d.cfg.Node, name)
	rev, err := kv.Create(ctx, k, v)
	if err == nil {
		return rev, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%w: %v", chat.ErrUnavailable, err)
	}
	e, err := kv.Get(ctx, k)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		return 0, chat.ErrNameTaken // freed just now; the client may try again
	case err != nil:
		return 0, fmt.Errorf("%w: %v", chat.ErrUnavailable, err)
	}
	node, held, ok := parseValue(e.Value())
	switch {
	case !ok:
		return 0, fmt.Errorf("%w: key %s holds %q, not a node and a name", chat.ErrUnavailable, k, e.Value())
	case node != d.cfg.Node:
		return 0, refusal(held, name)
	case held != name:
		d.mu.RLock()
		_, here := d.local[held]
		d.mu.RUnlock()
		if here {
			return 0, chat.ErrNameLookalike // a user of this node
		}
	}
	rev, err = kv.Update(ctx, k, v, e.Revision())
	switch {
	case casConflict(err):
		return 0, refusal(held, name) // changed since it was read
	case err != nil:
		return 0, fmt.Errorf("%w: %v", chat.ErrUnavailable, err)
	}
	return rev, nil
}

// casConflict reports whether err is a compare-and-set's refusal: the key
// is not at the revision expected. Update marks it ErrKeyRevisionMismatch
// (on a replicated bucket JetStream may answer with a code ErrKeyExists
// does not match), Create ErrKeyExists.
func casConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

// refusal is the error of a login of name while the key of its skeleton
// holds the name held.
func refusal(held, name string) error {
	if held == name {
		return chat.ErrNameTaken
	}
	return chat.ErrNameLookalike
}

// Logout implements chat.Directory: it deletes name's key, if it is still
// the one the login created.
func (d *Directory) Logout(name string, p chat.Peer) {
	d.mu.Lock()
	u := d.local[name]
	if u == nil || u.peer != p {
		d.mu.Unlock()
		return // evicted, or not logged in here
	}
	u.leaving = true
	rev := u.rev
	d.mu.Unlock()

	if rev != 0 && d.online.Load() {
		offload(func() { d.deleteKey(name, rev) })
	}
	// Offline, the key stays until the node is back: the maintenance finds
	// it without a user and deletes it then.

	d.mu.Lock()
	if d.local[name] == u {
		delete(d.local, name)
	}
	d.mu.Unlock()
}

// markerTTL is how long the bucket keeps the marker a logout leaves, if
// the bucket allows: long enough for every node's watch to see it, short
// enough that names used once do not pile up.
var markerTTL = time.Minute

// deleteKey deletes the key of name's skeleton if its revision is still
// rev.
func (d *Directory) deleteKey(name string, rev uint64) bool {
	if err := d.deleteKeyRaw(key(name), rev); err != nil {
		d.log.Debug("name not deleted", zap.String("name", name), zap.Uint64("revision", rev), zap.Error(err))
		return false
	}
	return true
}

// Lookup implements chat.Directory. A user of this node is its own peer; a
// user of another node is a peer that sends the message there. A user
// whose logout has started is not found here: once its key is deleted, the
// name may be another user's.
func (d *Directory) Lookup(name []byte) (chat.Peer, bool) {
	if !d.leaseValid() {
		return offlinePeer{errFenced}, true
	}
	d.mu.RLock()
	if u := d.local[string(name)]; u.serving() {
		d.mu.RUnlock()
		return u.peer, true
	}
	if !d.reachable() {
		d.mu.RUnlock()
		return offlinePeer{}, true
	}
	e := d.all[string(name)]
	d.mu.RUnlock()
	if e != nil {
		if e.peer == nil {
			return nil, false // this node's, and not logged in here
		}
		return e.peer, true
	}
	// Not in the copy: it may be a login the watch has not brought yet.
	var p chat.Peer
	var ok bool
	offload(func() { p, ok = d.lookupBucket(string(name)) })
	return p, ok
}

// lookupBucket reads the key of name's skeleton from the bucket itself:
// name is logged in if the key holds that very name. A name that breaks
// the rules is never logged in, and costs no request.
func (d *Directory) lookupBucket(name string) (chat.Peer, bool) {
	if chat.ValidateName(name) != nil {
		return nil, false
	}
	ctx, cancel := d.ctx()
	defer cancel()
	e, err := d.bucket().Get(ctx, key(name))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return nil, false
		}
		return offlinePeer{err: fmt.Errorf("%w: %v", chat.ErrUnavailable, err)}, true
	}
	node, held, ok := parseValue(e.Value())
	if !ok || held != name || node == d.cfg.Node {
		return nil, false // a lookalike's, or this node's and not logged in here
	}
	return d.remote(node, name, e.Revision()), true
}

// remote returns the peer of the user name logged in on node under the
// key revision rev.
func (d *Directory) remote(node, name string, rev uint64) *remotePeer {
	d.linksMu.Lock()
	l := d.links[node]
	if l == nil {
		l = &link{d: d, node: node, subject: d.cfg.Prefix + ".deliver." + node}
		d.links[node] = l
	}
	d.linksMu.Unlock()
	return &remotePeer{link: l, name: name, token: rev}
}

// Names implements chat.Directory: the names of the whole cluster, or of
// this node only while it is offline. It first brings the copy of the
// bucket up to date with the bucket itself, so that a login answered
// Success anywhere before the list was asked for is in it.
func (d *Directory) Names() []string {
	if !d.leaseValid() {
		return nil
	}
	if !d.reachable() {
		return d.localNames()
	}
	offload(d.catchUp)
	return sortedkeys.Of(&d.sorted, &d.mu, &d.all)
}

func (d *Directory) localNames() []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	names := make([]string, 0, len(d.local))
	for name, u := range d.local {
		if u.rev != 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// catchUp waits until the copy of the bucket has applied the bucket's last
// revision. A watch that has not brought it there within Timeout has
// likely lost its consumer with a NATS server, which it can take tens of
// seconds to notice: catchUp then has the node read the bucket anew (it
// is offline meanwhile, so logins get Failure) and waits for that,
// Timeout again at most.
func (d *Directory) catchUp() {
	ctx, cancel := d.ctx()
	defer cancel()
	last, _, err := bucketState(ctx, d.bucket())
	if err != nil {
		d.log.Debug("bucket status", zap.Error(err))
		return
	}
	d.mu.Lock()
	if d.applied >= last {
		d.mu.Unlock()
		return
	}
	w := waiter{last, make(chan struct{})}
	d.waiters = append(d.waiters, w)
	applied := d.applied
	d.mu.Unlock()
	select {
	case <-w.done:
		return
	case <-ctx.Done():
	}
	d.log.Warn("the watch of the bucket lags; reading the bucket anew",
		zap.Uint64("applied", applied), zap.Uint64("last", last), zap.Duration("after", d.cfg.Timeout))
	d.readAnew()
	again := time.NewTimer(d.cfg.Timeout)
	defer again.Stop()
	select {
	case <-w.done:
	case <-again.C:
	case <-d.done:
	}
}

// bucketState returns the bucket's last revision, and whether it expires
// delete markers.
func bucketState(ctx context.Context, kv jetstream.KeyValue) (last uint64, ttl bool, err error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return 0, false, err
	}
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		last = bs.StreamInfo().State.LastSeq
	}
	return last, st.LimitMarkerTTL() > 0, nil
}

// offload runs f, which waits on NATS, on a goroutine of its own, and
// waits for it. The calling goroutine is a connection's, whose stack every
// idle connection keeps: grown by the depth of a NATS call, it would stay
// grown (8 KiB a connection, measured) long after the call.
func offload(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

// key returns the bucket's key for a user name: the name's skeleton
// (chat.Skeleton), which lookalike names share, in unpadded URL-safe
// base64, since keys allow only a few ASCII characters.
func key(name string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(chat.Skeleton(name)))
}

// value returns what a key holds for a user of a node: the node's name, one
// space, and the user's exact name. Neither a node's name nor a user name
// holds a space.
func value(node, name string) []byte {
	return []byte(node + " " + name)
}

// parseValue returns the node and the user name a key holds, or false for
// a value that is not one (of another version's bucket, say).
func parseValue(v []byte) (node, name string, ok bool) {
	node, name, ok = strings.Cut(string(v), " ")
	return node, name, ok && validToken(node) && name != ""
}

// HostNode returns a node name made of the host's name and id (a process
// id, a port), with '-' for what a NATS subject token cannot hold.
func HostNode(id int) string {
	host, _ := os.Hostname()
	return strings.Map(func(r rune) rune {
		if tokenRune(r) {
			return r
		}
		return '-'
	}, fmt.Sprintf("%s-%d", host, id))
}

func tokenRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}

func validToken(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool { return !tokenRune(r) })
}

func validSubject(s string) bool {
	for tok := range strings.SplitSeq(s, ".") {
		if !validToken(tok) {
			return false
		}
	}
	return true
}
