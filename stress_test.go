package chat

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The size of TestStressNothingLost. CI runs the defaults under -race; run
// it larger by hand, for example:
//
//	go test -run TestStressNothingLost -stress.clients 64 -stress.messages 20000 -v .
var (
	stressClients  = flag.Int("stress.clients", 12, "clients in TestStressNothingLost")
	stressMessages = flag.Int("stress.messages", 1500, "messages each client sends in TestStressNothingLost")
)

// TestStressNothingLost has many clients send numbered messages to one
// another as fast as they can, over loopback TCP, while some read slowly,
// with queues small enough that some messages are refused. Afterwards:
// every message answered Success reached its recipient exactly once, no
// message answered Failure arrived, and the messages from each sender to
// each recipient arrived in the order sent.
func TestStressNothingLost(t *testing.T) {
	n, m := *stressClients, *stressMessages
	srv := &Server{QueueSize: 8 << 10}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		srv.Close()
		<-served
	}()

	type key struct{ from, to int }
	var (
		mu       sync.Mutex
		received = make(map[key][]int) // sequence numbers, in arrival order
		got      atomic.Int64
		bad      = make(chan string, 10)
	)
	// Slow readers: every third client reads only as fast as a pacer lets
	// it, one message per tick, so its queue fills and senders get Failure.
	pace := make(chan struct{})
	stopPace := make(chan struct{})
	var paceWG sync.WaitGroup
	paceWG.Go(func() {
		tick := time.NewTicker(250 * time.Microsecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				select {
				case pace <- struct{}{}:
				case <-stopPace:
					return
				}
			case <-stopPace:
				return
			}
		}
	})
	defer func() {
		close(stopPace)
		paceWG.Wait()
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	clients := make([]*Client, n)
	for i := range clients {
		slow := i%3 == 2
		handler := func(msg Message) {
			if slow {
				select {
				case <-pace:
				case <-stopPace:
				}
			}
			var from, to, seq int
			if _, err := fmt.Sscanf(msg.Text, "%d>%d #%d", &from, &to, &seq); err != nil || fmt.Sprint("u", from) != msg.From || to != i {
				select {
				case bad <- fmt.Sprintf("client %d got %q from %q", i, msg.Text, msg.From):
				default:
				}
				return
			}
			mu.Lock()
			received[key{from, to}] = append(received[key{from, to}], seq)
			mu.Unlock()
			got.Add(1)
		}
		c, err := Dial(ctx, l.Addr().String(), OnMessage(handler))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Login(ctx, fmt.Sprint("u", i)); err != nil {
			t.Fatal(err)
		}
		clients[i] = c
	}

	// Each client sends from several goroutines at once; each (sender,
	// recipient) pair belongs to one goroutine, which numbers its messages
	// and records which were answered Success.
	const lanes = 4
	padding := strings.Repeat(".", 4000) // so that socket buffers and queues fill
	var sendWG sync.WaitGroup
	ok := make(map[key][]bool) // by sequence number: answered Success
	var okMu sync.Mutex
	var sent, refused atomic.Int64
	for i, c := range clients {
		for lane := range lanes {
			sendWG.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(i), uint64(lane)))
				var mine []int // the recipients of this lane
				for to := range n {
					if to%lanes == lane {
						mine = append(mine, to)
					}
				}
				if len(mine) == 0 {
					return
				}
				results := make(map[int][]bool)
				for range m / lanes {
					to := mine[rng.IntN(len(mine))]
					seq := len(results[to])
					err := c.SendTo(ctx, fmt.Sprint("u", to), fmt.Sprintf("%d>%d #%d %s", i, to, seq, padding))
					switch {
					case err == nil:
					case errors.Is(err, ErrFailure):
						refused.Add(1)
					default:
						select {
						case bad <- fmt.Sprintf("client %d: SendTo: %v", i, err):
						default:
						}
						return
					}
					sent.Add(1)
					results[to] = append(results[to], err == nil)
				}
				okMu.Lock()
				for to, r := range results {
					ok[key{i, to}] = r
				}
				okMu.Unlock()
			})
		}
	}
	sendWG.Wait()
	select {
	case s := <-bad:
		t.Fatal(s)
	default:
	}

	// Wait for every message answered Success to arrive.
	want := sent.Load() - refused.Load()
	deadline := time.Now().Add(2 * time.Minute)
	for got.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d messages answered Success", got.Load(), want)
		}
		select {
		case s := <-bad:
			t.Fatal(s)
		case <-time.After(10 * time.Millisecond): // polling a counter
		}
	}
	for _, c := range clients {
		if err := c.Err(); err != nil {
			t.Fatalf("a client's connection ended: %v", err)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	for k, results := range ok {
		seqs := received[k]
		j := 0
		for seq, success := range results {
			if !success {
				continue
			}
			if j >= len(seqs) || seqs[j] != seq {
				t.Fatalf("from %d to %d: message %d answered Success; received %v", k.from, k.to, seq, seqs)
			}
			j++
		}
		if j != len(seqs) {
			t.Fatalf("from %d to %d: received %v, more than the %d answered Success", k.from, k.to, seqs, j)
		}
	}
	for k := range received {
		if _, sentAny := ok[k]; !sentAny {
			t.Fatalf("received messages from %d to %d, none sent", k.from, k.to)
		}
	}
	if got.Load() != want {
		t.Fatalf("received %d messages, want %d", got.Load(), want)
	}
	st := srv.Stats()
	t.Logf("%d clients × %d messages: %d sent, %d refused (queue full: %d), %d received, in order, exactly once",
		n, m, sent.Load(), refused.Load(), st.Failures[FailQueueFull.String()], got.Load())
	if refused.Load() == 0 {
		t.Log("no message was refused: the queues never filled")
	}
}
