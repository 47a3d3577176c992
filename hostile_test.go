package chat

// Attacks on a live Server over loopback TCP. Each test starts a server
// with two well-behaved users, alice and bob, connected throughout; runs
// its attack with raw frames (the Append functions and a FrameReader,
// skipping the client's validation); and then checks with
// hostileEnv.check that the server is still serving, that alice and bob
// and a newcomer log in, list and chat normally, and that the server's
// goroutines and heap are back near where they started.
//
// The attacks' environment here (hostileEnv, hostileLogin, ...) is shared
// with limits_test.go and protocol_test.go; the raw client, serveTCP and the
// rest are in helpers_test.go.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Bounds on what an attack may leave behind once its connections are gone.
const (
	hostileGoroutineSlack = 20
	hostileHeapSlack      = 32 << 20
)

// hostileUser is a well-behaved client, logged in, that keeps the messages
// it receives.
type hostileUser struct {
	name string
	c    *Client
	msgs chan Message
}

// hostileLogin connects a client and logs it in as name. A connection
// closed before the login (by a short LoginTimeout on a loaded machine) is
// retried; a Failure is not.
func hostileLogin(t *testing.T, addr, name string, opts ...Option) *hostileUser {
	t.Helper()
	u := &hostileUser{name: name, msgs: make(chan Message, 64)}
	opts = append(opts, OnMessage(func(m Message) { u.msgs <- m }))
	ctx := testCtx(t)
	var err error
	for range 5 {
		var c *Client
		if c, err = Dial(ctx, addr, opts...); err != nil {
			continue
		}
		if err = c.Login(ctx, name); err == nil {
			u.c = c
			t.Cleanup(func() { c.Close() })
			return u
		}
		c.Close()
		if errors.Is(err, ErrFailure) {
			break
		}
	}
	t.Fatalf("logging in as %s: %v", name, err)
	return nil
}

// sendTo sends a message that must be answered Success.
func (u *hostileUser) sendTo(t *testing.T, to, text string) {
	t.Helper()
	if err := u.c.SendTo(testCtx(t), to, text); err != nil {
		t.Fatalf("%s: sendto %s: %v", u.name, to, err)
	}
}

// expectMessage waits for the next message, which must be text from from.
func (u *hostileUser) expectMessage(t *testing.T, from, text string) {
	t.Helper()
	select {
	case m := <-u.msgs:
		if m.From != from || m.Text != text {
			t.Fatalf("%s received %q from %s, want %q from %s", u.name, hostileShort(m.Text), m.From, hostileShort(text), from)
		}
	case <-time.After(testTimeout):
		t.Fatalf("%s never received %q from %s", u.name, hostileShort(text), from)
	}
}

// expectList lists, and the names must be want.
func (u *hostileUser) expectList(t *testing.T, want ...string) {
	t.Helper()
	names, err := u.c.List(testCtx(t))
	if err != nil {
		t.Fatalf("%s: list: %v", u.name, err)
	}
	if !slices.Equal(names, want) {
		t.Fatalf("%s: list = %q, want %q", u.name, names, want)
	}
}

func hostileShort(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%s... (%d bytes)", s[:40], len(s))
	}
	return s
}

// hostileEnv is a server under attack with its two well-behaved users and
// the resources it used before the attack.
type hostileEnv struct {
	*tcpServer
	alice, bob *hostileUser
	goroutines int
	heap       uint64
}

// hostileNewEnv serves srv, logs alice and bob in and takes the baseline.
func hostileNewEnv(t *testing.T, srv *Server) *hostileEnv {
	t.Helper()
	e := &hostileEnv{tcpServer: serveTCP(t, srv)}
	e.alice = hostileLogin(t, e.addr, "alice")
	e.bob = hostileLogin(t, e.addr, "bob")
	e.goroutines, e.heap = hostileResources()
	return e
}

func hostileResources() (goroutines int, heap uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapInuse
}

// check verifies, after an attack, that the server still serves everyone
// normally and holds no more than it did before.
func (e *hostileEnv) check(t *testing.T) {
	t.Helper()
	e.stillServing(t)
	e.waitConns(t, 2) // the attack's connections are gone

	// The users connected throughout still list and chat.
	e.alice.expectList(t, "alice", "bob")
	e.bob.expectList(t, "alice", "bob")
	e.alice.sendTo(t, "bob", "still here?")
	e.bob.expectMessage(t, "alice", "still here?")
	e.bob.sendTo(t, "alice", "still here.")
	e.alice.expectMessage(t, "bob", "still here.")

	// A newcomer connects, logs in, lists and chats.
	carol := hostileLogin(t, e.addr, "carol")
	carol.expectList(t, "alice", "bob", "carol")
	carol.sendTo(t, "alice", "hello")
	e.alice.expectMessage(t, "carol", "hello")
	carol.c.Close()
	e.waitConns(t, 2)
	select {
	case m := <-e.alice.msgs:
		t.Errorf("alice received an unexpected message %q from %s", hostileShort(m.Text), m.From)
	case m := <-e.bob.msgs:
		t.Errorf("bob received an unexpected message %q from %s", hostileShort(m.Text), m.From)
	default:
	}

	// Goroutines and heap are back near the baseline.
	goroutines, heap := hostileResources()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.After(testTimeout); goroutines > e.goroutines+hostileGoroutineSlack || heap > e.heap+hostileHeapSlack; {
		select {
		case <-tick.C:
			goroutines, heap = hostileResources()
			continue
		case <-deadline:
		}
		break
	}
	if goroutines > e.goroutines+hostileGoroutineSlack {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("goroutines: %d after the attack, %d before\n%s", goroutines, e.goroutines, buf)
	}
	if heap > e.heap+hostileHeapSlack {
		t.Errorf("heap in use: %d KiB after the attack, %d KiB before", heap>>10, e.heap>>10)
	}
	t.Logf("after the attack: %d goroutines (%d before), heap %d KiB (%d before)", goroutines, e.goroutines, heap>>10, e.heap>>10)
}

// TestHostileRandomBytes sprays random bytes at the server on many
// connections at once: some plain noise, some noise cut into frames with
// plausible lengths so that it reaches the decoder and the handlers.
func TestHostileRandomBytes(t *testing.T) {
	e := hostileNewEnv(t, &Server{})
	const seed, conns = 0x5eedc4a7, 40
	t.Logf("seed %#x", seed)

	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		if i%2 == 0 {
			wg.Go(func() { errs <- hostileNoise(e.addr, rng) })
		} else {
			wg.Go(func() { errs <- hostileFramedNoise(e.addr, rng) })
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	st := e.srv.Stats()
	t.Logf("frames in %v, too large %d, failures %v", st.FramesIn, st.FramesTooLarge, failureDelta(Stats{}, st))
	e.check(t)
}

// hostileNoise writes random bytes, half-closes, and reads what the server
// answers until it closes the connection. Every frame it sends must be well
// formed.
func hostileNoise(addr string, rng *rand.Rand) error {
	r, err := tryDialRaw(nil, addr, nil)
	if err != nil {
		return err
	}
	defer r.c.Close()
	junk := make([]byte, 1024+rng.IntN(16<<10))
	for i := range junk {
		junk[i] = byte(rng.Uint32())
	}
	if rng.IntN(4) == 0 {
		junk[0] = 0 // a length the server accepts, for once
	}
	// The server may close the connection before reading it all.
	if err := r.trySend(junk); err == nil {
		r.closeWrite()
	}
	for n := 0; ; n++ {
		f, err := r.tryNext()
		if err != nil {
			if isTimeout(err) || errors.Is(err, ErrMalformedFrame) || errors.Is(err, ErrFrameTooLarge) {
				return fmt.Errorf("noise: after %d frames from the server: %w", n, err)
			}
			return nil
		}
		if f.Type != TypeResponse && f.Type != TypeNames && f.Type != TypeMessage {
			return fmt.Errorf("noise: the server sent %v", f.Type)
		}
	}
}

// hostileFramedNoise sends frames of random bodies, with a valid length
// and often a valid type code, and checks that each gets exactly one reply.
func hostileFramedNoise(addr string, rng *rand.Rand) error {
	r, err := tryDialRaw(nil, addr, nil)
	if err != nil {
		return err
	}
	defer r.c.Close()
	codes := []byte{0x01, 0x01, 0x02, 0x03, 0x03, 0x04, 0x81, 0x82, 0x83}
	n := 100 + rng.IntN(200)
	var out []byte
	for range n {
		body := make([]byte, rng.IntN(40))
		for i := range body {
			body[i] = byte(rng.Uint32())
		}
		if len(body) > 0 && rng.IntN(8) != 0 {
			body[0] = codes[rng.IntN(len(codes))]
			if len(body) > 1 && rng.IntN(2) == 0 {
				body[1] = byte(rng.IntN(len(body))) // a name length that fits
			}
		}
		out = append(out, withBody(body...)...)
	}
	if err := r.trySend(out); err != nil {
		return fmt.Errorf("framed noise: %w", err)
	}
	for replies := 0; replies < n; {
		f, err := r.tryNext()
		if err != nil {
			return fmt.Errorf("framed noise: %d replies to %d frames, then %w", replies, n, err)
		}
		switch f.Type {
		case TypeResponse, TypeNames:
			replies++
		case TypeMessage: // a random login that a random sendto found
		default:
			return fmt.Errorf("framed noise: the server sent %v", f.Type)
		}
	}
	return nil
}

// TestHostileTruncatedFrames sends every proper prefix of some frames and
// closes; the server must close its side without replying or delivering.
func TestHostileTruncatedFrames(t *testing.T) {
	e := hostileNewEnv(t, &Server{})
	frames := []struct {
		name  string
		frame []byte
	}{
		{"login", AppendLogin(nil, "trunc")},
		{"list", AppendList(nil)},
		{"sendto", AppendSendTo(nil, "alice", "never delivered")},
		{"logout", AppendLogout(nil)},
	}
	for _, fr := range frames {
		for cut := 1; cut < len(fr.frame); cut++ {
			r := dialRaw(t, e.addr)
			r.send(fr.frame[:cut])
			r.closeWrite()
			r.expectEnd(fmt.Sprintf("%s cut after %d of %d bytes", fr.name, cut, len(fr.frame)))
			r.c.Close()
		}
	}

	// Complete requests, then a truncated one: whatever replies get out are
	// the right ones, nothing is delivered, and the login does not outlive
	// the connection.
	r := dialRaw(t, e.addr)
	var b []byte
	b = AppendLogin(b, "trunc")
	b = AppendList(b)
	partial := AppendSendTo(nil, "alice", "never delivered")
	b = append(b, partial[:len(partial)-3]...)
	r.send(b)
	r.closeWrite()
	got, err := r.readToEnd("complete frames then a truncated one")
	if want := []string{"RESPONSE ok", "LIST alice bob trunc"}; !slices.Equal(got, want[:min(len(got), 2)]) || len(got) > 2 {
		t.Errorf("replies %q, want a prefix of %q", got, want)
	}
	t.Logf("complete frames then a truncated one: replies %q, then %v", got, err)
	e.check(t)
}

// TestHostileFrameTooLarge sends length fields beyond the limit: the
// server answers malformed packet and closes that connection.
func TestHostileFrameTooLarge(t *testing.T) {
	e := hostileNewEnv(t, &Server{})
	for _, length := range []uint32{DefaultMaxFrameSize + 1, 16 << 20, 0x7fffffff, 0xffffffff} {
		r := dialRaw(t, e.addr)
		r.send(header(length))
		r.expectEnd(fmt.Sprintf("length %#x", length), "RESPONSE malformed packet")
	}

	// A logged-in user announcing a huge frame and sending part of it is
	// closed and logged out; the bytes it had sent after the length field
	// are never read, so the server's close may reach it as a reset.
	r := dialRaw(t, e.addr)
	r.send(AppendLogin(nil, "huge"))
	r.expect(ResultOK, "login huge")
	r.trySend(append(header(0x40000000), make([]byte, 256<<10)...))
	got, err := r.readToEnd("length 1 GiB with 256 KiB of body")
	if len(got) > 1 || len(got) == 1 && got[0] != "RESPONSE malformed packet" {
		t.Errorf("length 1 GiB with a body: got %q, want at most a malformed packet", got)
	}
	t.Logf("length 1 GiB with 256 KiB of body: %q, then %v", got, err)

	if n := e.srv.Stats().FramesTooLarge; n != 5 {
		t.Errorf("Stats().FramesTooLarge = %d, want 5", n)
	}

	// The largest frame accepted is accepted.
	big := dialRaw(t, e.addr)
	body := append([]byte{byte(TypeSendTo), 5}, "alice"...)
	body = append(body, bytes.Repeat([]byte{'x'}, DefaultMaxFrameSize-len(body))...)
	big.send(AppendLogin(nil, "big"))
	big.send(withBody(body...))
	big.expect(ResultOK, "login big")
	big.expect(ResultFailure, "sendto with a body of exactly the limit") // the text is too long
	big.c.Close()
	e.check(t)
}

// TestHostileUnknownTypes sends frames with unknown type codes, with the
// server's own type codes, and with bodies that do not parse: each gets
// malformed packet, in order, and the connection stays usable.
func TestHostileUnknownTypes(t *testing.T) {
	e := hostileNewEnv(t, &Server{})
	cases := []struct {
		name  string
		frame []byte
	}{
		{"empty body", withBody()},
		{"type 0x00", withBody(0x00)},
		{"type 0x05", withBody(0x05, 1, 'a')},
		{"type 0x7f", withBody(0x7f)},
		{"type 0x80", withBody(0x80)},
		{"type 0x84", withBody(0x84, 0)},
		{"type 0xff", withBody(0xff, 0xff, 0xff)},
		{"RESPONSE", AppendResponse(nil, ResultOK)},
		{"LIST", AppendNames(nil, []string{"alice", "eve"})},
		{"SENDTO", AppendMessage(nil, "alice", []byte("forged"))},
		{"list with a payload", withBody(byte(TypeList), 0)},
		{"logout with a payload", withBody(byte(TypeLogout), 'x')},
		{"login without a name length", withBody(byte(TypeLogin))},
		{"login with a name length beyond the body", withBody(byte(TypeLogin), 9, 'e', 'v', 'e')},
		{"login with bytes after the name", withBody(byte(TypeLogin), 3, 'e', 'v', 'e', '!')},
		{"sendto without a name length", withBody(byte(TypeSendTo))},
		{"sendto with a name length beyond the body", withBody(byte(TypeSendTo), 200, 'b', 'o', 'b')},
	}
	r := dialRaw(t, e.addr)
	var all []byte
	for _, c := range cases {
		all = append(all, c.frame...)
	}
	r.send(all) // pipelined: the replies must come in order
	for _, c := range cases {
		r.expect(ResultMalformed, c.name)
	}
	// Still in step and usable.
	r.send(AppendList(nil))
	if names := r.names("list after the malformed frames"); !slices.Equal(names, []string{"alice", "bob"}) {
		t.Errorf("list = %q", names)
	}
	r.send(AppendLogin(nil, "typo"))
	r.expect(ResultOK, "login after the malformed frames")
	r.send(AppendSendTo(nil, "alice", "sorry"))
	r.expect(ResultOK, "sendto after the malformed frames")
	e.alice.expectMessage(t, "typo", "sorry")
	if n := e.srv.Stats().Malformed; n != uint64(len(cases)) {
		t.Errorf(`Stats().Malformed = %d, want %d`, n, len(cases))
	}
	r.c.Close()
	e.check(t)
}

// TestHostileBadNamesAndTexts sends, without the client's validation,
// names and texts that break the rules: invalid UTF-8, white space,
// control characters, more than 20 or 65535 code points. Each is answered
// Failure and the connection stays usable; the longest valid ones pass.
func TestHostileBadNamesAndTexts(t *testing.T) {
	e := hostileNewEnv(t, &Server{})
	r := dialRaw(t, e.addr)
	before := e.srv.Stats()

	badNames := []struct{ why, name string }{
		{"empty", ""},
		{"invalid UTF-8", "\xff\xfe"},
		{"truncated UTF-8", "ab\xc3"},
		{"overlong encoding", "\xc0\xaf"},
		{"UTF-16 surrogate", "\xed\xa0\x80"},
		{"beyond U+10FFFF", "\xf4\x90\x80\x80"},
		{"U+FFFD", "\ufffd"},
		{"a space", "a b"},
		{"a tab", "a\tb"},
		{"a no-break space", "a\u00a0b"},
		{"NUL", "a\x00"},
		{"escape", "\x1b[31m"},
		{"DEL", "a\x7f"},
		{"C1 control", "a\u0085"},
		{"21 ASCII characters", "abcdefghijklmnopqrstu"},
		{"21 two-byte characters", strings.Repeat("é", 21)},
		{"21 four-byte characters", strings.Repeat("𠀀", 21)},
		{"a zero-width space", "alice\u200b"},
		{"an emoji", "😀"},
		{"a decomposed accent", "Zoe\u0308"},
		{"255 bytes", strings.Repeat("n", 255)},
	}
	for _, c := range badNames {
		r.send(AppendLogin(nil, c.name))
		r.expect(ResultFailure, "login with a name with "+c.why)
	}
	for _, name := range []string{strings.Repeat("é", 20), strings.Repeat("𠀀", 20), "ünïcødé"} {
		r.send(AppendLogin(nil, name))
		r.expect(ResultOK, fmt.Sprintf("login %q", name))
		r.send(AppendLogout(nil))
		r.expect(ResultOK, "logout")
	}

	r.send(AppendLogin(nil, "mallory"))
	r.expect(ResultOK, "login mallory")
	r.send(AppendSendTo(nil, "abcdefghijklmnopqrstu", "to a name too long"))
	r.expect(ResultFailure, "sendto a 21-character name")
	r.send(AppendSendTo(nil, "al ice", "to a name with a space"))
	r.expect(ResultFailure, "sendto a name with a space")

	badTexts := []struct{ why, text string }{
		{"invalid UTF-8", "\xff"},
		{"truncated UTF-8", "ok\xc3"},
		{"a UTF-16 surrogate", "\xed\xa0\x80"},
		{"beyond U+10FFFF", "\xf4\x90\x80\x80"},
		{"65536 ASCII characters", strings.Repeat("a", MaxTextLen+1)},
		{"65536 two-byte characters", strings.Repeat("é", MaxTextLen+1)},
		{"65535 characters and an invalid byte", strings.Repeat("a", MaxTextLen) + "\xff"},
	}
	for _, c := range badTexts {
		r.send(AppendSendTo(nil, "alice", c.text))
		r.expect(ResultFailure, "sendto a text of "+c.why)
	}

	// The longest texts are relayed whole, and so are control characters
	// (escaping them is for whoever prints them).
	for _, text := range []string{strings.Repeat("a", MaxTextLen), strings.Repeat("😀", MaxTextLen), "\x1b[2J\x00\u202e"} {
		r.send(AppendSendTo(nil, "alice", text))
		r.expect(ResultOK, "sendto alice "+hostileShort(text))
		e.alice.expectMessage(t, "mallory", text)
	}

	after := e.srv.Stats()
	want := map[string]uint64{"bad_name": uint64(len(badNames)), "bad_text": uint64(len(badTexts)), "no_recipient": 2}
	if got := failureDelta(before, after); !maps.Equal(got, want) {
		t.Errorf("failures by reason %v, want %v", got, want)
	}
	r.c.Close()
	e.check(t)
}

// TestHostileSameNameRace has hundreds of connections log in with the same
// name at the same moment: exactly one wins, every time.
func TestHostileSameNameRace(t *testing.T) {
	e := hostileNewEnv(t, &Server{})
	const conns, rounds = 256, 3
	login := AppendLogin(nil, "contested")
	for round := range rounds {
		raws := make([]*raw, conns)
		for i := range raws {
			raws[i] = dialRaw(t, e.addr)
		}
		start := make(chan struct{})
		var wins, losses atomic.Int32
		var wg sync.WaitGroup
		for _, r := range raws {
			wg.Go(func() {
				<-start
				if err := r.trySend(login); err != nil {
					t.Errorf("write: %v", err)
					return
				}
				f, err := r.tryNext()
				switch {
				case err != nil:
					t.Errorf("reading the reply to login: %v", err)
				case f.Type == TypeResponse && f.Result == ResultOK:
					wins.Add(1)
				case f.Type == TypeResponse && f.Result == ResultFailure:
					losses.Add(1)
				default:
					t.Errorf("reply to login: %s", describe(f))
				}
			})
		}
		close(start)
		wg.Wait()
		if wins.Load() != 1 || losses.Load() != conns-1 {
			t.Fatalf("round %d: %d logins won and %d lost, want 1 and %d", round, wins.Load(), losses.Load(), conns-1)
		}
		e.alice.expectList(t, "alice", "bob", "contested")
		for _, r := range raws {
			r.c.Close()
		}
		e.waitConns(t, 2)
		e.alice.expectList(t, "alice", "bob") // the winner was logged out
	}
	if n := e.srv.Stats().Failures[FailNameTaken]; n != rounds*(conns-1) {
		t.Errorf(`Stats().Failures[FailNameTaken] = %d, want %d`, n, rounds*(conns-1))
	}
	e.check(t)
}

// TestHostileLoginLogoutStorm has many goroutines connect, log in and out
// under a few shared names, send to each other, and disconnect in every
// way, all at once. Every reply must be Success or Failure, every list
// sorted and plausible, and at the end only alice and bob are left.
func TestHostileLoginLogoutStorm(t *testing.T) {
	var logins, logouts atomic.Int64
	srv := &Server{
		OnLogin:  func(net.Conn, string) { logins.Add(1) },
		OnLogout: func(net.Conn, string, error) { logouts.Add(1) },
	}
	e := hostileNewEnv(t, srv)
	const workers, rounds, seed = 24, 25, 0x570a3
	pool := []string{"storm0", "storm1", "storm2", "storm3", "storm4", "storm5"}
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for w := range workers {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		wg.Go(func() {
			for range rounds {
				if err := hostileStorm(ctx, e.addr, rng, pool); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	e.waitConns(t, 2)
	if st := e.srv.Stats(); st.Users != 2 {
		t.Errorf("Stats().Users = %d after the storm, want 2", st.Users)
	}
	if in, out := logins.Load(), logouts.Load(); in-out != 2 {
		t.Errorf("OnLogin called %d times and OnLogout %d: %d still logged in, want 2", in, out, in-out)
	}
	t.Logf("%d logins during the storm; failures %v", logins.Load(), failureDelta(Stats{}, e.srv.Stats()))
	e.check(t)
}

// hostileStorm is one connection of the storm.
func hostileStorm(ctx context.Context, addr string, rng *rand.Rand, pool []string) error {
	c, err := Dial(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	okOrFailure := func(what string, err error) error {
		if err != nil && !errors.Is(err, ErrFailure) {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	for range 1 + rng.IntN(6) {
		name := pool[rng.IntN(len(pool))]
		switch rng.IntN(5) {
		case 0, 1:
			err = okOrFailure("login", c.Login(ctx, name))
		case 2:
			err = okOrFailure("logout", c.Logout(ctx))
		case 3:
			err = okOrFailure("sendto", c.SendTo(ctx, name, "storm"))
		case 4:
			var names []string
			names, err = c.List(ctx)
			if err == nil {
				if !slices.IsSorted(names) || slices.ContainsFunc(names, func(n string) bool {
					return !slices.Contains(pool, n) && n != "alice" && n != "bob"
				}) || len(slices.Compact(slices.Clone(names))) != len(names) {
					err = fmt.Errorf("list = %q", names)
				}
			}
		}
		if err != nil {
			return err
		}
	}
	switch rng.IntN(4) {
	case 0: // log out, then leave
		return okOrFailure("logout", c.Logout(ctx))
	case 1: // leave while a login is in flight
		done := make(chan error, 1)
		go func() { done <- c.Login(ctx, pool[rng.IntN(len(pool))]) }()
		c.Close()
		if err := <-done; err != nil && !errors.Is(err, ErrFailure) && !errors.Is(err, ErrClosed) {
			return fmt.Errorf("login while closing: %w", err)
		}
	}
	return nil // and close, logged in or not
}

// TestHostileSendToLeaving sends messages to users who are logging out
// and in again, or disconnecting and coming back, at that very moment.
// Every reply is Success or Failure; a recipient that stayed connected
// receives every message answered Success, once and in order, and none
// answered Failure.
func TestHostileSendToLeaving(t *testing.T) {
	e := hostileNewEnv(t, &Server{})
	const recipients, senders, sends, seed = 6, 6, 150, 0x1ea7e
	ctx := testCtx(t)

	type recipient struct {
		name     string
		stays    bool // logs out and in; otherwise disconnects and redials
		mu       sync.Mutex
		got      []Message
		c        *Client
		received map[string]int
	}
	rcpts := make([]*recipient, recipients)
	for i := range rcpts {
		rc := &recipient{name: fmt.Sprintf("flip%d", i), stays: i%2 == 0}
		rcpts[i] = rc
	}
	dial := func(rc *recipient) (*Client, error) {
		c, err := Dial(ctx, e.addr, OnMessage(func(m Message) {
			rc.mu.Lock()
			rc.got = append(rc.got, m)
			rc.mu.Unlock()
		}))
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	type outcome struct {
		to  string
		err error
	}
	results := make([]map[string]outcome, senders) // by text, per sender
	stop := make(chan struct{})                    // the senders are done
	var flippers, wg sync.WaitGroup
	for _, rc := range rcpts {
		c, err := dial(rc)
		if err != nil {
			t.Fatal(err)
		}
		rc.c = c
		flippers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := rc.c.Login(ctx, rc.name)
				for !rc.stays && errors.Is(err, ErrFailure) {
					// The server has not yet seen the previous
					// connection close; the name is still taken.
					err = rc.c.Login(ctx, rc.name)
				}
				if err != nil {
					t.Errorf("%s: login: %v", rc.name, err)
					return
				}
				if rc.stays {
					if err := rc.c.Logout(ctx); err != nil {
						t.Errorf("%s: logout: %v", rc.name, err)
						return
					}
					continue
				}
				rc.c.Close()
				c, err := dial(rc)
				if err != nil {
					t.Errorf("%s: redial: %v", rc.name, err)
					return
				}
				rc.c = c
			}
		})
	}
	users := make([]*hostileUser, senders)
	for s := range senders {
		from := fmt.Sprintf("sender%d", s)
		u := hostileLogin(t, e.addr, from)
		users[s] = u
		results[s] = make(map[string]outcome, sends)
		rng := rand.New(rand.NewPCG(seed, uint64(s)))
		wg.Go(func() {
			for seq := range sends {
				to := rcpts[rng.IntN(recipients)].name
				text := fmt.Sprintf("%s:%d", from, seq)
				err := u.c.SendTo(ctx, to, text)
				if err != nil && !errors.Is(err, ErrFailure) {
					t.Errorf("%s: sendto %s: %v", from, to, err)
					return
				}
				results[s][text] = outcome{to, err}
			}
		})
	}
	wg.Wait()
	close(stop)
	flippers.Wait()
	for _, u := range users {
		u.c.Close()
	}
	if t.Failed() {
		return
	}

	// Everything answered Success has been queued before the reply to
	// this list.
	var okSent, failed, delivered int
	for _, rc := range rcpts {
		if _, err := rc.c.List(ctx); err != nil {
			t.Fatalf("%s: list: %v", rc.name, err)
		}
		rc.c.Close()
		rc.received = map[string]int{}
		last := map[string]int{}
		for _, m := range rc.got {
			rc.received[m.Text]++
			if rc.received[m.Text] > 1 {
				t.Errorf("%s received %q %d times", rc.name, m.Text, rc.received[m.Text])
			}
			sender, seqText, _ := strings.Cut(m.Text, ":")
			seq, _ := strconv.Atoi(seqText)
			if prev, ok := last[sender]; ok && seq <= prev {
				t.Errorf("%s received %s:%d after %s:%d", rc.name, sender, seq, sender, prev)
			}
			last[sender] = seq
			s, _ := strconv.Atoi(strings.TrimPrefix(sender, "sender"))
			if m.From != sender || s < 0 || s >= senders {
				t.Errorf("%s received %q from %s", rc.name, m.Text, m.From)
				continue
			}
			if o := results[s][m.Text]; o.to != rc.name || o.err != nil {
				t.Errorf("%s received %q, sent to %q with result %v", rc.name, m.Text, o.to, o.err)
			}
		}
		delivered += len(rc.got)
	}
	byName := map[string]*recipient{}
	for _, rc := range rcpts {
		byName[rc.name] = rc
	}
	for s := range senders {
		for text, o := range results[s] {
			if o.err != nil {
				failed++
				continue
			}
			okSent++
			if rc := byName[o.to]; rc.stays && rc.received[text] != 1 {
				t.Errorf("%q to %s was answered Success but received %d times", text, o.to, rc.received[text])
			}
		}
	}
	t.Logf("%d messages answered Success, %d Failure; %d received", okSent, failed, delivered)
	e.check(t)
}

// TestHostileDisconnectMidFrame has logged-in users vanish in the middle
// of a frame, with a FIN or a reset: they are logged out and nothing of
// the frame is delivered.
func TestHostileDisconnectMidFrame(t *testing.T) {
	gone := make(chan string, 2)
	srv := &Server{OnLogout: func(_ net.Conn, name string, err error) {
		if name != "halfway" && name != "reset" {
			return
		}
		if err == nil {
			t.Errorf("%s logged out with no reason", name)
		}
		gone <- name
	}}
	e := hostileNewEnv(t, srv)
	for _, reset := range []bool{false, true} {
		name := "halfway"
		if reset {
			name = "reset"
		}
		r := dialRaw(t, e.addr)
		r.send(AppendLogin(nil, name))
		r.expect(ResultOK, "login "+name)
		frame := AppendSendTo(nil, "alice", "you will never read this")
		r.send(frame[:len(frame)/2])
		if reset {
			r.c.(*net.TCPConn).SetLinger(0)
		}
		r.c.Close()
		select {
		case got := <-gone:
			if got != name {
				t.Errorf("%s logged out, want %s", got, name)
			}
		case <-time.After(testTimeout):
			t.Fatalf("%s was never logged out", name)
		}
	}
	e.check(t)
}

// TestHostileCloseAfterSend has a client send several requests in one
// write and close at once, without reading: its requests are carried out.
func TestHostileCloseAfterSend(t *testing.T) {
	gone := make(chan string, 1)
	srv := &Server{OnLogout: func(_ net.Conn, name string, _ error) {
		if name == "hitrun" {
			gone <- name
		}
	}}
	e := hostileNewEnv(t, srv)
	r := dialRaw(t, e.addr)
	var b []byte
	b = AppendLogin(b, "hitrun")
	b = AppendSendTo(b, "alice", "parting shot")
	b = AppendList(b)
	b = AppendSendTo(b, "bob", "bye")
	b = AppendLogout(b)
	r.send(b)
	r.c.Close()
	e.alice.expectMessage(t, "hitrun", "parting shot")
	e.bob.expectMessage(t, "hitrun", "bye")
	select {
	case name := <-gone:
		if name != "hitrun" {
			t.Errorf("%s logged out, want hitrun", name)
		}
	case <-time.After(testTimeout):
		t.Fatal("hitrun was never logged out")
	}
	e.check(t)
}
