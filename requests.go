package chat

import (
	"errors"
	"time"

	"go.uber.org/zap"
)

// The server's rules for each request, as PROTOCOL.md's table gives them:
// handle answers every well-formed request with exactly one reply, Success
// or Failure, and counts each Failure under its FailureReason.

// FailureReason says why a request was answered Failure.
type FailureReason uint8

// The reasons for Failure.
const (
	FailNotLoggedIn     FailureReason = iota // sendto or logout before login
	FailAlreadyLoggedIn                      // login on a connection already logged in
	FailNameTaken                            // login with a name logged in elsewhere
	FailBadName                              // login with a name that breaks the rules
	FailBadText                              // sendto with a text that breaks the rules
	FailNoRecipient                          // sendto to a name not logged in
	FailQueueFull                            // the recipient's queue is full or closing
	FailVetoed                               // refused by AllowLogin or AllowMessage
	FailListTooLarge                         // the list would not fit in one frame
	FailRateLimited                          // the connection sent too many requests
	FailUnavailable                          // the Directory could not carry it out (ErrUnavailable)
	FailLookalike                            // login with a name that looks like a logged-in one (ErrNameLookalike)
	numFailureReasons
)

var failureNames = [numFailureReasons]string{
	"not_logged_in", "already_logged_in", "name_taken", "bad_name", "bad_text",
	"no_recipient", "queue_full", "vetoed", "list_too_large", "rate_limited",
	"unavailable", "lookalike",
}

// String returns the reason's name, in snake case as metrics label it.
func (r FailureReason) String() string {
	if r < numFailureReasons {
		return failureNames[r]
	}
	return "unknown"
}

// handle answers one well-formed request. Each case queues exactly one
// reply, or holds its place (see Receipt).
func (c *conn) handle(f Frame) {
	switch f.Type {
	case TypeLogin:
		c.stats.framesIn[inLogin].Add(1)
		c.answer(c.login(f.Name))
	case TypeList:
		c.stats.framesIn[inList].Add(1)
		c.flush() // the Directory may wait on the network
		names := c.srv.dir.Names()
		if namesSize(names) > c.srv.maxFrameSize() {
			c.answer(FailListTooLarge)
			return
		}
		c.out.replyNames(names)
	case TypeSendTo:
		c.stats.framesIn[inSendTo].Add(1)
		c.sendTo(f.Name, f.Text)
	case TypeLogout:
		c.stats.framesIn[inLogout].Add(1)
		if c.name == "" {
			c.answer(FailNotLoggedIn)
			return
		}
		c.logout(nil)
		c.answer(succeeded)
	default:
		// A server-to-client frame sent to the server.
		c.stats.framesIn[inMalformed].Add(1)
		c.logAt(zap.WarnLevel, "malformed frame", zap.Stringer("type", f.Type))
		c.out.reply(ResultMalformed)
	}
}

// succeeded stands for the FailureReason of a request that succeeded, for
// answer.
const succeeded = numFailureReasons

// answer replies Success if why is succeeded, and otherwise Failure,
// counted under why.
func (c *conn) answer(why FailureReason) {
	if why == succeeded {
		c.out.reply(ResultOK)
		return
	}
	c.stats.failures[why].Add(1)
	c.out.reply(ResultFailure)
}

func (c *conn) login(b []byte) FailureReason {
	s := c.srv
	switch {
	case c.name != "":
		return FailAlreadyLoggedIn
	case !validNameBytes(b):
		return FailBadName
	}
	name := string(b)
	if s.AllowLogin != nil {
		if err := s.AllowLogin(c.nc, name); err != nil {
			c.logAt(zap.InfoLevel, "login refused", zap.String("name", name), zap.Error(err))
			return FailVetoed
		}
	}
	c.flush() // the Directory may wait on the network
	if err := s.dir.Login(name, c.out); err != nil {
		if errors.Is(err, ErrNameTaken) {
			return FailNameTaken
		}
		if errors.Is(err, ErrNameLookalike) {
			return FailLookalike
		}
		c.logAt(zap.WarnLevel, "login not recorded", zap.String("name", name), zap.Error(err))
		return FailUnavailable
	}
	c.name = name
	c.loginBy = time.Time{}
	s.events.users.Add(1)
	c.logAt(zap.InfoLevel, "login")
	if s.OnLogin != nil {
		s.OnLogin(c.nc, name)
	}
	return succeeded
}

func (c *conn) logout(reason error) {
	s := c.srv
	name := c.name
	c.flush() // the Directory may wait on the network
	s.dir.Logout(name, c.out)
	s.events.users.Add(-1)
	c.logAt(zap.InfoLevel, "logout", zap.NamedError("reason", reason))
	c.name = ""
	if s.LoginTimeout > 0 {
		c.loginBy = time.Now().Add(s.LoginTimeout)
	}
	if s.OnLogout != nil {
		s.OnLogout(c.nc, name, reason)
	}
}

// undelivered returns the reason for the Failure of a message that was not
// queued because of err.
func undelivered(err error) FailureReason {
	if errors.Is(err, ErrQueueFull) || errors.Is(err, ErrPeerGone) {
		return FailQueueFull
	}
	return FailUnavailable
}

// notDelivered logs why a message was not queued, and returns the reason
// for the Failure.
//
//go:noinline
func (c *conn) notDelivered(to []byte, err error) FailureReason {
	why := undelivered(err)
	lvl := zap.WarnLevel
	if why == FailQueueFull {
		lvl = zap.DebugLevel
	}
	c.logAt(lvl, "message not queued", zap.ByteString("to", to), zap.Error(err))
	return why
}

// sendTo relays a message. The reply is queued at once, unless the
// recipient's Peer must ask another server: then the reply's place is held
// until the Peer settles it through the Receipt (settle).
func (c *conn) sendTo(to, text []byte) {
	s := c.srv
	if c.name == "" {
		c.answer(FailNotLoggedIn)
		return
	}
	if !validTextBytes(text) {
		c.answer(FailBadText)
		return
	}
	p, found := s.dir.Lookup(to)
	if !found {
		c.answer(FailNoRecipient)
		return
	}
	if s.AllowMessage != nil {
		if err := s.AllowMessage(c.name, string(to), string(text)); err != nil {
			c.logAt(zap.InfoLevel, "message refused", zap.ByteString("to", to), zap.Error(err))
			c.answer(FailVetoed)
			return
		}
	}
	r := Receipt{c: c, n: c.out.next} // the ordinal of this request's reply
	err := p.Deliver(c.name, text, r)
	if err != nil && err != ErrPending {
		c.answer(c.notDelivered(to, err))
		return
	}
	// Written, or sent on, by c.flush, with everything else this batch of
	// requests queues.
	if len(c.touched) == 0 || c.touched[len(c.touched)-1] != p {
		c.touched = append(c.touched, p)
	}
	if err == ErrPending {
		if s.OnMessage != nil {
			c.keepForHook(r.n, string(to), string(text))
		}
		// Held, the reply counts as the message it waits for (and the
		// recipient's name) against the sender's queue.
		res, settled, why := c.out.hold(r.n, messageSize(c.name, text)+len(to))
		if settled {
			c.settledEarly(r.n, to, res, why)
		}
		return
	}
	c.stats.relayed.Add(1)
	if s.OnMessage != nil {
		s.OnMessage(c.name, string(to), string(text))
	}
	c.answer(succeeded)
}

// settledEarly finishes a message settled before its reply was held:
// settle could not call the hook, unless it found the message kept, and
// left its log line, if any, to the reading goroutine.
//
//go:noinline
func (c *conn) settledEarly(n uint64, to []byte, res Result, err error) {
	if s := c.srv; s.OnMessage != nil {
		if m, kept := c.takeForHook(n); kept && res == ResultOK {
			s.OnMessage(m.from, m.to, m.text)
		}
	}
	if err != nil {
		c.notDelivered(to, err)
	}
}

// pendingMessage is a message waiting for its outcome, kept for OnMessage.
type pendingMessage struct {
	from, to, text string
}

// keepForHook keeps a pending message for the OnMessage hook.
//
//go:noinline
func (c *conn) keepForHook(n uint64, to, text string) {
	c.hookMu.Lock()
	if c.hooked == nil {
		c.hooked = make(map[uint64]pendingMessage)
	}
	c.hooked[n] = pendingMessage{c.name, to, text}
	c.hookMu.Unlock()
}

// takeForHook returns, and forgets, the message keepForHook kept for n.
func (c *conn) takeForHook(n uint64) (pendingMessage, bool) {
	c.hookMu.Lock()
	defer c.hookMu.Unlock()
	m, ok := c.hooked[n]
	delete(c.hooked, n)
	return m, ok
}

// settle is Receipt.Done: it counts the outcome of the pending message
// whose reply has ordinal n, and has the reply written. It is called from
// any goroutine.
func (c *conn) settle(n uint64, err error, write bool) {
	s := c.srv
	var m pendingMessage
	var kept bool
	if s.OnMessage != nil {
		m, kept = c.takeForHook(n)
	}
	if err != nil {
		ok, early := c.out.settle(n, ResultFailure, err, write)
		if !ok {
			return
		}
		why := undelivered(err)
		c.stats.failures[why].Add(1)
		// Early, maybe on the reading goroutine in Deliver: sendTo logs
		// it, deferred, rather than grow that stack (TestIdleStack).
		if why != FailQueueFull && !early {
			s.log.Warn("message not delivered", zap.Stringer("remote", c.nc.RemoteAddr()), zap.Error(err))
		}
		return
	}
	if ok, _ := c.out.settle(n, ResultOK, nil, write); ok {
		c.stats.relayed.Add(1)
		if kept {
			s.OnMessage(m.from, m.to, m.text)
		}
	}
}
