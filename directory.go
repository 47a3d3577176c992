package chat

import (
	"errors"
	"maps"
	"slices"
	"sync"
)

// Errors a Directory returns.
var (
	// ErrNameTaken reports a login with a name logged in already.
	ErrNameTaken = errors.New("chat: name already logged in")

	// ErrNameLookalike reports a login with a name that looks the same as
	// one logged in already: another name with the same Skeleton.
	ErrNameLookalike = errors.New("chat: a logged-in name looks the same")

	// ErrUnavailable reports a request a Directory cannot carry out for
	// now: one spanning several servers that has lost touch with the
	// others, say. Errors that wrap it are answered Failure, counted under
	// FailUnavailable.
	ErrUnavailable = errors.New("chat: directory unavailable")
)

// Peer is the delivery end of one logged-in connection, as the server hands
// it to the Directory.
type Peer interface {
	// Deliver queues a message with text from the user from. It returns
	// nil once the message is queued, ErrQueueFull if the recipient's queue
	// has no room, ErrPeerGone if the connection is closing, or another
	// error (wrapping ErrUnavailable, say) if it cannot tell. Deliver must
	// not retain text after it returns.
	//
	// The server's own peers never block on the network. A Directory's
	// peers for users on other servers may wait for the other server's
	// answer; the sending connection waits with them, which is what keeps
	// its messages in order.
	Deliver(from string, text []byte) error
}

// Evicter is implemented by the Peers the Server hands to a Directory. A
// Directory that finds a name it had recorded for p recorded elsewhere
// instead (in a cluster, after a network partition) calls p.Evict: the
// Server then closes p's connection, and reports reason as the cause. Evict
// does not wait for the connection to close and may be called more than
// once.
type Evicter interface {
	Evict(reason error)
}

// Directory is the table of logged-in users and the way to reach them. The
// Server uses MemoryDirectory unless its Directory field names another
// implementation (one spanning several servers, say). Its methods are called
// from many connections at once and must be safe for concurrent use.
type Directory interface {
	// Login records that name is logged in at p. It returns ErrNameTaken,
	// and changes nothing, if name is already logged in anywhere, and
	// another error if it cannot tell.
	Login(name string, p Peer) error

	// Logout forgets name, if it is logged in at p.
	Logout(name string, p Peer)

	// Lookup returns the peer at which name is logged in.
	Lookup(name []byte) (Peer, bool)

	// Names returns the logged-in names sorted in byte order. The caller
	// must not modify the slice.
	Names() []string
}

// MemoryDirectory is the in-memory Directory of a single server. The zero
// value is ready to use.
type MemoryDirectory struct {
	mu        sync.RWMutex
	peers     map[string]Peer
	skeletons map[string]string // Skeleton of each logged-in name → the name
	sorted    []string          // cache of Names, nil when stale
}

// Login implements Directory. It returns ErrNameTaken if name is logged in,
// and ErrNameLookalike if another logged-in name has the same Skeleton.
func (d *MemoryDirectory) Login(name string, p Peer) error {
	skel := Skeleton(name)
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, taken := d.peers[name]; taken {
		return ErrNameTaken
	}
	if _, taken := d.skeletons[skel]; taken {
		return ErrNameLookalike
	}
	if d.peers == nil {
		d.peers = make(map[string]Peer)
		d.skeletons = make(map[string]string)
	}
	d.peers[name] = p
	d.skeletons[skel] = name
	d.sorted = nil
	return nil
}

// Logout implements Directory.
func (d *MemoryDirectory) Logout(name string, p Peer) {
	skel := Skeleton(name)
	d.mu.Lock()
	defer d.mu.Unlock()
	if q, ok := d.peers[name]; ok && q == p {
		delete(d.peers, name)
		if d.skeletons[skel] == name {
			delete(d.skeletons, skel)
		}
		d.sorted = nil
	}
}

// Lookup implements Directory.
func (d *MemoryDirectory) Lookup(name []byte) (Peer, bool) {
	d.mu.RLock()
	p, ok := d.peers[string(name)]
	d.mu.RUnlock()
	return p, ok
}

// Names implements Directory. The sorted list is computed once per change
// of the table, not once per call.
func (d *MemoryDirectory) Names() []string {
	d.mu.RLock()
	names := d.sorted
	d.mu.RUnlock()
	if names != nil {
		return names
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sorted == nil {
		d.sorted = slices.AppendSeq(make([]string, 0, len(d.peers)), maps.Keys(d.peers))
		slices.Sort(d.sorted)
	}
	return d.sorted
}
