package cluster

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seedchat/chat"
)

// rawConn speaks frames to a node, so that a test can send many requests
// before reading any reply.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	fr *chat.FrameReader
}

func dialRaw(t *testing.T, n *node) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, fr: chat.NewFrameReader(c, 0)}
}

func (r *rawConn) send(frames ...[]byte) {
	r.t.Helper()
	r.c.SetWriteDeadline(time.Now().Add(testWait))
	if _, err := r.c.Write(slices.Concat(frames...)); err != nil {
		r.t.Fatalf("sending: %v", err)
	}
}

// reply reads the next frame, described as "ok", "failure",
// "LIST a b" or "SENDTO from: text".
func (r *rawConn) reply() string {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(testWait))
	f, err := r.fr.Next()
	if err != nil {
		r.t.Fatalf("reading: %v", err)
	}
	switch f.Type {
	case chat.TypeResponse:
		return f.Result.String()
	case chat.TypeNames:
		desc := "LIST"
		for name := range chat.Names(f.Names) {
			desc += " " + string(name)
		}
		return desc
	case chat.TypeMessage:
		return fmt.Sprintf("SENDTO %s: %s", f.Name, f.Text)
	}
	return f.Type.String()
}

// TestPipelinedAcrossNodes sends, in one write, requests to recipients on
// other nodes mixed with local messages, list, login and logout: every
// reply comes back in the order of the requests, each the right one.
func TestPipelinedAcrossNodes(t *testing.T) {
	_, n := cluster3(t)
	bob := login(t, n[1], "bob")
	amy := login(t, n[0], "amy")
	carol := login(t, n[2], "carol")
	r := dialRaw(t, n[0])
	steps := []struct {
		frame []byte
		want  string
	}{
		{chat.AppendLogin(nil, "alice"), "ok"},
		{chat.AppendSendTo(nil, "bob", "1"), "ok"},
		{chat.AppendSendTo(nil, "amy", "2"), "ok"},
		{chat.AppendList(nil), "LIST alice amy bob carol"},
		{chat.AppendSendTo(nil, "carol", "3"), "ok"},
		{chat.AppendSendTo(nil, "nobody", "4"), "failure"},
		{chat.AppendSendTo(nil, "bob", "5"), "ok"},
		{chat.AppendLogout(nil), "ok"},
		{chat.AppendSendTo(nil, "bob", "6"), "failure"}, // not logged in
		{chat.AppendLogin(nil, "alice2"), "ok"},
		{chat.AppendSendTo(nil, "carol", "7"), "ok"},
		{chat.AppendSendTo(nil, "bob", "8"), "ok"},
		{chat.AppendList(nil), "LIST alice2 amy bob carol"},
	}
	var frames [][]byte
	for _, s := range steps {
		frames = append(frames, s.frame)
	}
	r.send(frames...)
	for i, s := range steps {
		if got := r.reply(); got != s.want {
			t.Fatalf("reply %d: %s, want %s", i+1, got, s.want)
		}
	}
	for _, w := range []struct {
		u    *user
		want []chat.Message
	}{
		{bob, []chat.Message{{From: "alice", Text: "1"}, {From: "alice", Text: "5"}, {From: "alice2", Text: "8"}}},
		{amy, []chat.Message{{From: "alice", Text: "2"}}},
		{carol, []chat.Message{{From: "alice", Text: "3"}, {From: "alice2", Text: "7"}}},
	} {
		for _, m := range w.want {
			if got := w.u.receive(); got != m {
				t.Errorf("%s got %+v, want %+v", w.u.name, got, m)
			}
		}
	}
}

// TestManySendersAcrossNodes has senders on every node pipeline messages
// to recipients on every node: each message is answered Success, arrives
// exactly once, and each sender's messages to each recipient arrive in
// order.
func TestManySendersAcrossNodes(t *testing.T) {
	_, n := cluster3(t)
	const senders, recipients, each, burst = 9, 6, 150, 50
	var rcpts []*user
	for i := range recipients {
		rcpts = append(rcpts, login(t, n[i%3], fmt.Sprintf("r%d", i)))
	}
	var wg sync.WaitGroup
	for i := range senders {
		r := dialRaw(t, n[i%3])
		name := fmt.Sprintf("s%d", i)
		r.send(chat.AppendLogin(nil, name))
		if got := r.reply(); got != "ok" {
			t.Fatalf("login %s: %s", name, got)
		}
		wg.Go(func() {
			for j := 0; j < each; j += burst {
				var frames [][]byte
				for k := j; k < j+burst; k++ {
					for _, u := range rcpts {
						frames = append(frames, chat.AppendSendTo(nil, u.name, fmt.Sprint(k)))
					}
				}
				r.send(frames...)
				for range frames {
					if got := r.reply(); got != "ok" {
						t.Errorf("%s: %s", name, got)
						return
					}
				}
			}
		})
	}
	for _, u := range rcpts {
		next := make(map[string]int)
		for range senders * each {
			m := u.receive()
			if m.Text != fmt.Sprint(next[m.From]) {
				t.Fatalf("%s from %s: %q, want %d", u.name, m.From, m.Text, next[m.From])
			}
			next[m.From]++
		}
	}
	wg.Wait()
	for _, u := range rcpts {
		u.noMessage(u.name + " got one more")
	}
}

// TestFaultsMidBatch keeps senders on one node pipelining numbered messages
// to recipients on the two others while a fault strikes: a recipient node
// killed, or NATS restarted. Then a checker compares what each sender was
// told with what each recipient got: no Failure'd message arrives, every
// Success'd one arrives exactly once unless its recipient's connection died,
// and each sender's messages to each recipient arrive in order.
func TestFaultsMidBatch(t *testing.T) {
	for _, fault := range []string{"node killed", "NATS restarted"} {
		t.Run(strings.ReplaceAll(fault, " ", "_"), func(t *testing.T) {
			ns := startNATS(t)
			cfg := func(name string) Config { return Config{Node: name, Timeout: 500 * time.Millisecond} }
			n := []*node{startNodeWith(t, ns.url(), cfg("n1"), nil), startNodeWith(t, ns.url(), cfg("n2"), nil), startNodeWith(t, ns.url(), cfg("n3"), nil)}
			var rcpts []*user
			for i := range 4 {
				rcpts = append(rcpts, login(t, n[1+i%2], fmt.Sprintf("r%d", i)))
			}
			const senders, burst = 3, 40
			h := newFaultHistory()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var sent sync.WaitGroup // each sender's first burst answered
			sent.Add(senders)
			var conns []*rawConn
			for i := range senders {
				name := fmt.Sprintf("s%d", i)
				r := dialRaw(t, n[0])
				conns = append(conns, r)
				r.send(chat.AppendLogin(nil, name))
				if got := r.reply(); got != "ok" {
					t.Fatalf("login %s: %s", name, got)
				}
				wg.Go(func() {
					for seq, first := 0, true; ; first = false {
						select {
						case <-stop:
							return
						default:
						}
						var frames [][]byte
						var msgs []histMsg
						for range burst {
							m := histMsg{from: name, to: rcpts[seq%len(rcpts)].name, seq: seq}
							frames = append(frames, chat.AppendSendTo(nil, m.to, strconv.Itoa(m.seq)))
							msgs = append(msgs, m)
							seq++
						}
						r.send(frames...)
						for _, m := range msgs {
							h.told(m, r.reply())
						}
						if first {
							sent.Done()
						}
					}
				})
			}
			sent.Wait()
			var dead []*user // recipients whose connections the fault ends
			switch fault {
			case "node killed":
				n[2].kill()
				dead = []*user{rcpts[1], rcpts[3]}
			case "NATS restarted":
				ns.stop()
				eventually(t, "n1 to go offline", func() bool { return !n[0].dir.Online() })
				ns.start()
			}
			eventually(t, "n1 to be back online", func() bool { return n[0].dir.Online() })
			// Traffic goes on after the fault until messages are told
			// Success again, then stops.
			mark := h.count()
			eventually(t, "Successes after the fault", func() bool { return h.successesSince(mark) > 5*burst })
			close(stop)
			wg.Wait()

			// Each sender ends with a marker to every recipient still there:
			// what it sent before arrives before the marker.
			for i, r := range conns {
				for _, u := range rcpts {
					if slices.Contains(dead, u) {
						continue
					}
					eventually(t, fmt.Sprintf("s%d's marker to %s", i, u.name), func() bool {
						r.send(chat.AppendSendTo(nil, u.name, "end"))
						return r.reply() == "ok"
					})
				}
			}
			for _, u := range rcpts {
				h.collect(t, u, senders, slices.Contains(dead, u))
			}
			h.check(t)
		})
	}
}

// histMsg is one message of a test's history.
type histMsg struct {
	from, to string
	seq      int
}

// faultHistory records what senders were told, and what recipients got.
type faultHistory struct {
	mu      sync.Mutex
	order   []histMsg           // messages answered, in the order answered
	outcome map[histMsg]string  // Success or Failure
	got     map[histMsg]int     // times received
	seqs    map[[2]string][]int // per sender and recipient, the seqs received in order
	dead    map[string]bool     // recipients whose connections ended
}

func newFaultHistory() *faultHistory {
	return &faultHistory{outcome: make(map[histMsg]string), got: make(map[histMsg]int), seqs: make(map[[2]string][]int), dead: make(map[string]bool)}
}

func (h *faultHistory) told(m histMsg, reply string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.order = append(h.order, m)
	h.outcome[m] = reply
}

func (h *faultHistory) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.order)
}

// successesSince counts the messages told Success after the first mark.
func (h *faultHistory) successesSince(mark int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.order[mark:] {
		if h.outcome[m] == "ok" {
			n++
		}
	}
	return n
}

// collect reads what u received: up to every sender's end marker, or, if
// u's connection was ended by the fault, whatever came before.
func (h *faultHistory) collect(t *testing.T, u *user, senders int, dead bool) {
	t.Helper()
	record := func(m chat.Message) {
		seq, err := strconv.Atoi(m.Text)
		if err != nil {
			t.Errorf("%s got %+v", u.name, m)
			return
		}
		k := histMsg{from: m.From, to: u.name, seq: seq}
		h.mu.Lock()
		h.got[k]++
		h.seqs[[2]string{m.From, u.name}] = append(h.seqs[[2]string{m.From, u.name}], seq)
		h.mu.Unlock()
	}
	if dead {
		h.dead[u.name] = true
		<-u.Done()
		for {
			select {
			case m := <-u.msgs:
				record(m)
			default:
				return
			}
		}
	}
	for ends := 0; ends < senders; {
		m := u.receive()
		if m.Text == "end" {
			ends++
			continue
		}
		record(m)
	}
}

// check verifies the history, and logs its counts.
func (h *faultHistory) check(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	var ok, failed, lostWithConn, violations int
	for m, outcome := range h.outcome {
		got := h.got[m]
		switch {
		case got > 1:
			violations++
			t.Errorf("%+v received %d times", m, got)
		case outcome == "failure" && got > 0:
			violations++
			t.Errorf("%+v told Failure, yet received", m)
		case outcome == "ok" && got == 0 && !h.dead[m.to]:
			violations++
			t.Errorf("%+v told Success, never received", m)
		case outcome == "ok" && got == 0:
			lostWithConn++
		}
		switch outcome {
		case "ok":
			ok++
		case "failure":
			failed++
		default:
			violations++
			t.Errorf("%+v answered %s", m, outcome)
		}
	}
	for m, got := range h.got {
		if _, told := h.outcome[m]; !told && got > 0 {
			violations++
			t.Errorf("%+v received, never sent", m)
		}
	}
	for pair, seqs := range h.seqs {
		if !slices.IsSorted(seqs) {
			violations++
			t.Errorf("%s to %s: out of order: %v", pair[0], pair[1], seqs)
		}
	}
	t.Logf("history: %d messages, %d Success, %d Failure, %d Success lost with the recipient's connection, %d violations",
		len(h.outcome), ok, failed, lostWithConn, violations)
}

// TestStalledNode: a recipient node that stops answering (its NATS traffic
// frozen) holds a sender's connection at its MaxPending bound, no further:
// the sender's reader stops. Once the node is taken for dead, every waiting
// sendto is answered (as queued and lost with that node), and the node,
// fenced, delivers none of them when it wakes up: its user's session has
// ended.
func TestStalledNode(t *testing.T) {
	ns := startNATS(t)
	p := startProxy(t, ns.url()[len("nats://"):])
	const maxPending = 8
	cfg := func(name string) Config { return Config{Node: name, Timeout: 200 * time.Millisecond} }
	n1 := startNodeWith(t, ns.url(), cfg("n1"), &chat.Server{MaxPending: maxPending})
	n2 := startNodeWith(t, p.url(), cfg("n2"), nil)
	bob := login(t, n2, "bob")
	r := dialRaw(t, n1)
	r.send(chat.AppendLogin(nil, "alice"))
	if got := r.reply(); got != "ok" {
		t.Fatalf("login: %s", got)
	}

	p.freeze()
	const total = 3 * maxPending
	var frames [][]byte
	for i := range total {
		frames = append(frames, chat.AppendSendTo(nil, "bob", strconv.Itoa(i)))
	}
	r.send(frames...)
	eventually(t, "MaxPending messages to wait for n2", func() bool { return n1.dir.waiting() == maxPending })
	if got := n1.srv.Stats().FramesIn[chat.TypeSendTo]; got != maxPending {
		t.Errorf("sendto requests read: %d, want MaxPending = %d", got, maxPending)
	}
	for i := range total {
		if got := r.reply(); got != "ok" && got != "failure" {
			t.Fatalf("reply %d: %s", i, got)
		}
	}
	if got := n1.dir.waiting(); got != 0 {
		t.Errorf("%d messages still wait", got)
	}
	p.thaw()
	bob.ended("bob's session on the fenced node did not end")
	bob.noMessage("bob got a message from before the stall")
	// Once n2 holds its lease again, a new login there is reachable.
	bob2 := dial(t, n2)
	eventually(t, "bob to log in on n2 again", func() bool { return bob2.Login(ctx(t), "bob") == nil })
	eventually(t, "bob to be reachable again", func() bool {
		r.send(chat.AppendSendTo(nil, "bob", "after"))
		return r.reply() == "ok"
	})
	select {
	case m := <-bob2.msgs:
		if m.Text != "after" {
			t.Errorf("bob got %+v, want the message sent after the stall", m)
		}
	case <-time.After(testWait):
		t.Error("bob got nothing")
	}
}

// TestRecipientMoved: a message addressed, from a stale copy of the bucket,
// to a recipient who has since logged in again on another node reaches the
// new login.
func TestRecipientMoved(t *testing.T) {
	_, n := cluster3(t)
	alice := login(t, n[0], "alice")
	bob := login(t, n[1], "bob")
	if err := alice.SendTo(ctx(t), "bob", "first"); err != nil {
		t.Fatal(err)
	}
	if m := bob.receive(); m.Text != "first" {
		t.Fatalf("bob got %+v", m)
	}
	n[0].dir.stopWatch() // n1's copy stays as it is: bob on n2
	gone := n[1].loggedOut("bob")
	bob.Close()
	<-gone
	bob2 := login(t, n[2], "bob")
	if err := alice.SendTo(ctx(t), "bob", "moved"); err != nil {
		t.Fatalf("sendto bob, logged in again on n3: %v", err)
	}
	if m := bob2.receive(); m.Text != "moved" {
		t.Errorf("bob on n3 got %+v", m)
	}
	// A recipient who left for good: Failure.
	gone = n[2].loggedOut("bob")
	bob2.Close()
	<-gone
	if err := alice.SendTo(ctx(t), "bob", "nobody"); !isFailure(err) {
		t.Errorf("sendto bob, logged out everywhere: %v, want Failure", err)
	}
}
