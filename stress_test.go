package chat

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The size of TestStressNothingLost. The defaults keep it to a few seconds
// under -race; run it larger by hand, for example:
//
//	go test -run TestStressNothingLost -stress.clients 64 -stress.messages 20000 -v .
var (
	stressClients  = flag.Int("stress.clients", 16, "clients in TestStressNothingLost")
	stressMessages = flag.Int("stress.messages", 2500, "messages each client sends in TestStressNothingLost")
)

// stressLanes is the number of goroutines sending at once on each client.
// Each owns the recipients whose number is its own modulo stressLanes, so
// the messages from one sender to one recipient are sent one after the
// other, in the order of their sequence numbers.
const stressLanes = 4

// stressPadding pads messages to random sizes up to 4 KiB, so that socket
// buffers and queues fill.
var stressPadding = strings.Repeat("0123456789abcdef", 256)

// stressRecipient is what one client receives: handled on its reading
// goroutine only, and read by the test once a list has gone through after
// every message (the reply to the list is dispatched after them).
type stressRecipient struct {
	seqs map[int][]int // by sender: sequence numbers in arrival order
	bad  []string      // messages that were not sent as received
	n    int           // messages received
}

// TestStressNothingLost has many clients send numbered messages to one
// another as fast as they can, several at once on each client, over
// loopback TCP, with queues small enough that some are refused. A third of
// the clients read at full speed; the others block in their message
// handler for a token before each message (or every other message), and
// the tokens come from the fast clients' progress, not from a clock.
//
// Afterwards, every message answered Success has been received exactly
// once, none answered Failure has been received, nothing has been received
// that was not sent, and the messages from one sender to one recipient
// arrived in the order sent.
func TestStressNothingLost(t *testing.T) {
	n, m := *stressClients, *stressMessages
	srv := &Server{QueueSize: 16 << 10}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := serveListener(t, srv, stressListener{l.(*net.TCPListener)})
	ctx := t.Context() // bounded by go test's -timeout, whatever the size

	// A slow client's handler takes a token per message (or per two); a
	// fast client's lane offers one, without waiting, after every other
	// reply. Once the fast clients are done, released lets the slow ones
	// go: nobody waits for a token that will never come.
	tokens := make(chan struct{})
	released := make(chan struct{})
	release := sync.OnceFunc(func() { close(released) })
	defer release()
	speed := func(i int) int { return i % 3 } // 0 fast, 1 slow, 2 half speed

	clients := make([]*Client, n)
	rcpts := make([]*stressRecipient, n)
	for i := range clients {
		rc := &stressRecipient{seqs: make(map[int][]int)}
		rcpts[i] = rc
		handler := func(msg Message) {
			if s := speed(i); s != 0 && rc.n%s == 0 {
				select {
				case <-tokens:
				case <-released:
				}
			}
			rc.n++
			from, seq, ok := stressParse(msg, i)
			if !ok {
				rc.bad = append(rc.bad, fmt.Sprintf("%q from %q", hostileShort(msg.Text), msg.From))
				return
			}
			rc.seqs[from] = append(rc.seqs[from], seq)
		}
		nc, err := net.DialTimeout("tcp", hs.addr, testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if speed(i) != 0 {
			// A small receive buffer: the server's queue fills sooner.
			nc.(*net.TCPConn).SetReadBuffer(32 << 10)
		}
		c := NewClient(nc, OnMessage(handler))
		defer c.Close()
		if err := c.Login(ctx, fmt.Sprint("u", i)); err != nil {
			t.Fatal(err)
		}
		clients[i] = c
	}

	// results[i][to] says, by sequence number, which messages from i to
	// to were answered Success; each entry is written by the one lane that
	// owns the pair.
	results := make([][][]bool, n)
	var fast, all sync.WaitGroup
	start := time.Now()
	for i, c := range clients {
		results[i] = make([][]bool, n)
		wg := &all
		if speed(i) == 0 {
			wg = &fast
		}
		for lane := range stressLanes {
			var mine []int
			for to := lane; to < n; to += stressLanes {
				mine = append(mine, to)
			}
			if len(mine) == 0 {
				continue
			}
			rng := rand.New(rand.NewPCG(uint64(i), uint64(lane)))
			count := m / stressLanes
			if lane < m%stressLanes {
				count++
			}
			wg.Go(func() {
				for range count {
					to := mine[rng.IntN(len(mine))]
					seq := len(results[i][to])
					text := fmt.Sprintf("%d>%d #%d ", i, to, seq) + stressPadding[:rng.IntN(len(stressPadding))]
					err := c.SendTo(ctx, fmt.Sprint("u", to), text)
					if err != nil && !errors.Is(err, ErrFailure) {
						t.Errorf("u%d: sendto u%d: %v", i, to, err)
						return
					}
					results[i][to] = append(results[i][to], err == nil)
					if speed(i) == 0 && seq%2 == 0 {
						select {
						case tokens <- struct{}{}:
						default:
						}
					}
				}
			})
		}
	}
	fast.Wait()
	release()
	all.Wait()
	elapsed := time.Since(start)
	if t.Failed() {
		return
	}

	// Every message answered Success was queued for its recipient before
	// the reply to this list, and so handled before List returns.
	for i, c := range clients {
		if _, err := c.List(ctx); err != nil {
			t.Fatalf("u%d: list: %v (%v)", i, err, c.Err())
		}
	}

	var sent, succeeded, received, wrong int
	for to, rc := range rcpts {
		received += rc.n
		for _, b := range rc.bad {
			t.Errorf("u%d received %s, which was not sent to it", to, b)
		}
		for from, seqs := range rc.seqs {
			if from < 0 || from >= n || len(results[from][to]) == 0 {
				t.Errorf("u%d received %d messages from u%d, which sent it none", to, len(seqs), from)
			}
		}
	}
	for from := range n {
		for to, res := range results[from] {
			sent += len(res)
			var want []int // the sequence numbers answered Success
			for seq, ok := range res {
				if ok {
					want = append(want, seq)
				}
			}
			succeeded += len(want)
			if got := rcpts[to].seqs[from]; !slices.Equal(got, want) {
				if wrong++; wrong <= 10 {
					t.Errorf("from u%d to u%d (%d sent): %s", from, to, len(res), stressDiff(got, want))
				}
			}
		}
	}
	if wrong > 10 {
		t.Errorf("... and %d more pairs", wrong-10)
	}
	failed := sent - succeeded
	st := srv.Stats()
	if st.Relayed != uint64(succeeded) || st.Failures[FailQueueFull] != uint64(failed) {
		t.Errorf("Stats: %d relayed and %d refused for a full queue; the clients saw %d Success and %d Failure",
			st.Relayed, st.Failures[FailQueueFull], succeeded, failed)
	}
	if st.SlowConsumers != 0 {
		t.Errorf("Stats: %d slow consumers dropped", st.SlowConsumers)
	}
	if received != succeeded {
		t.Errorf("%d messages received, %d answered Success", received, succeeded)
	}
	t.Logf("%d clients × %d messages in %v: %d sent, %d Success, %d Failure (queue full), %d received; %.0f messages/s",
		n, m, elapsed.Round(time.Millisecond), sent, succeeded, failed, received, float64(sent)/elapsed.Seconds())
	if failed == 0 {
		t.Log("no message was refused: the queues never filled")
	}
}

// stressListener gives the server's sockets small send buffers, so that
// what a slow reader does not read backs up into the server's queue soon.
type stressListener struct{ *net.TCPListener }

func (l stressListener) Accept() (net.Conn, error) {
	c, err := l.AcceptTCP()
	if err == nil {
		c.SetWriteBuffer(64 << 10)
	}
	return c, err
}

// stressParse reads "FROM>TO #SEQ padding" from a message received by
// client to, and checks it against the sender's name.
func stressParse(msg Message, to int) (from, seq int, ok bool) {
	head, _, _ := strings.Cut(msg.Text, " #")
	fromText, toText, _ := strings.Cut(head, ">")
	rest := strings.TrimPrefix(msg.Text, head+" #")
	seqText, _, _ := strings.Cut(rest, " ")
	var errs [3]error
	from, errs[0] = strconv.Atoi(fromText)
	var dest int
	dest, errs[1] = strconv.Atoi(toText)
	seq, errs[2] = strconv.Atoi(seqText)
	ok = errors.Join(errs[:]...) == nil && dest == to && msg.From == "u"+fromText
	return from, seq, ok
}

// stressDiff describes where the sequence numbers received, got, first
// differ from those answered Success, want.
func stressDiff(got, want []int) string {
	k := 0
	for k < len(got) && k < len(want) && got[k] == want[k] {
		k++
	}
	around := func(s []int) []int { return s[max(k-3, 0):min(k+3, len(s))] }
	return fmt.Sprintf("%d received, %d answered Success; first difference at index %d: received %v, answered Success %v",
		len(got), len(want), k, around(got), around(want))
}
