package chat

import (
	"errors"
	"sync"

	"github.com/seedchat/chat/internal/sortedkeys"
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

// Peer is the delivery end of one logged-in user, as a Directory hands it to
// the Server: one of the server's own connections, or a user on another
// server.
type Peer interface {
	// Deliver hands over a message with text from the user from, and does
	// not retain text once it returns. It returns
	//   - nil if the message is queued for the user (the sender is told
	//     Success);
	//   - ErrQueueFull, ErrPeerGone or another error (wrapping
	//     ErrUnavailable, say) if it is not queued and never will be
	//     (Failure);
	//   - ErrPending if the outcome is not known yet: the user is on
	//     another server, which must be asked. The Peer then calls r.Done
	//     exactly once, from any goroutine and possibly before Deliver has
	//     returned, with one of the outcomes above.
	// Deliver never waits on the network: what it queues may wait for
	// Flush.
	Deliver(from string, text []byte, r Receipt) error

	// Flush sends on what Deliver has queued. The Server calls it when the
	// connection that called Deliver has handled every request it has read
	// and is about to wait for more, so that a burst of messages travels
	// together; a Peer may also send on sooner (at a size bound, say).
	// Flush does not wait on the network either.
	Flush()
}

// ErrPending is returned by Peer.Deliver for a message whose outcome the
// Peer reports later, through the Receipt it was given.
var ErrPending = errors.New("chat: delivery pending")

// A Receipt settles a delivery that a Peer answered ErrPending: the reply
// to the sender's request waits for it, and so do the replies to the
// requests after it. The zero Receipt settles nothing; it is what a
// Directory passes when it delivers on another server's behalf.
type Receipt struct {
	c *conn
	n uint64 // the ordinal of the reply it settles
	f func(error)
}

// ReceiptFunc returns a Receipt whose Done calls f: for a Directory that
// delivers on its own account, or tests its Peers.
func ReceiptFunc(f func(err error)) Receipt { return Receipt{f: f} }

// Done reports the outcome of the delivery: nil if the message was queued
// for its recipient, or why not. For the Server's receipts, only the first
// call counts.
func (r Receipt) Done(err error) {
	switch {
	case r.c != nil:
		r.c.settle(r.n, err, true)
	case r.f != nil:
		r.f(err)
	}
}

// Settle settles each receipt rs[i] with outcome(i), in order, as Done
// does, and then has the replies written: each connection's in one write,
// from the calling goroutine as far as the socket takes it without
// blocking. A Peer that learns many outcomes at once (the answer to a batch
// sent to another server) calls Settle rather than Done for each.
func Settle(rs []Receipt, outcome func(i int) error) {
	var buf [8]*outbox
	touched := buf[:0]
	for i, r := range rs {
		switch {
		case r.c != nil:
			r.c.settle(r.n, outcome(i), false)
			if o := r.c.out; len(touched) == 0 || touched[len(touched)-1] != o {
				touched = append(touched, o)
			}
		case r.f != nil:
			r.f(outcome(i))
		}
	}
	for _, o := range touched {
		o.flush()
	}
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
//
// Login, Logout and Names may wait on the network (a Directory spanning
// several servers asks the others); the Server writes what the connection
// owes before it calls them. Lookup must not wait long: it is on the path of
// every message.
type Directory interface {
	// Login records that name is logged in at p. It returns ErrNameTaken,
	// and changes nothing, if name is already logged in anywhere,
	// ErrNameLookalike if another logged-in name has the same Skeleton, and
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
	sorted    sortedkeys.Cache  // of peers, for Names
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
	d.sorted.Reset()
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
		d.sorted.Reset()
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
	return sortedkeys.Of(&d.sorted, &d.mu, &d.peers)
}
