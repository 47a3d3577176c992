package chat

import (
	"slices"
	"sync"
)

// Peer is the delivery end of one logged-in connection, as the server hands
// it to the Directory.
type Peer interface {
	// Deliver queues a message with text from the user from, without
	// blocking on the network. It returns nil once the message is queued,
	// ErrQueueFull if the recipient's queue has no room, or ErrPeerGone if
	// the connection is closing. Deliver must not retain text after it
	// returns.
	Deliver(from string, text []byte) error
}

// Directory is the table of logged-in users and the way to reach them. The
// Server uses MemoryDirectory unless its Directory field names another
// implementation (one spanning several servers, say). Its methods are called
// from many connections at once and must be safe for concurrent use.
type Directory interface {
	// Login records that name is logged in at p. It reports false, and
	// changes nothing, if name is already logged in anywhere.
	Login(name string, p Peer) bool

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
	mu     sync.RWMutex
	peers  map[string]Peer
	sorted []string // cache of Names, nil when stale
}

// Login implements Directory.
func (d *MemoryDirectory) Login(name string, p Peer) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, taken := d.peers[name]; taken {
		return false
	}
	if d.peers == nil {
		d.peers = make(map[string]Peer)
	}
	d.peers[name] = p
	d.sorted = nil
	return true
}

// Logout implements Directory.
func (d *MemoryDirectory) Logout(name string, p Peer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if q, ok := d.peers[name]; ok && q == p {
		delete(d.peers, name)
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
		d.sorted = make([]string, 0, len(d.peers))
		for name := range d.peers {
			d.sorted = append(d.sorted, name)
		}
		slices.Sort(d.sorted)
	}
	return d.sorted
}
