package chat

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// stackConns is how many connections TestIdleStack holds: enough that a
// connection's stack stands out of the runtime's own by a wide margin.
const stackConns = 1000

// stackBound is the most stack an idle logged-in connection may hold: the
// growth of MemStats.StackInuse, divided by the number of connections.
//
// An idle connection is one goroutine, its reader, blocked reading (the
// outbox's writer runs only while a write waits), and its stack is 4 KiB:
// measured 3.6 to 4.2 KiB a connection over TCP, the runtime's noise
// included. It stays there thanks to the precautions of server.go: lines
// logged by logAt written by flushLogs from serve, where the stack is
// shallow, and the slow paths of readLoop, FrameReader.Next and the outbox
// kept out of line. One deep call on the reading path undoes it: a log
// line encoded in handle, say, takes the stack to 8 KiB (measured 8.0 to
// 8.3 KiB), and there it stays, as the runtime shrinks a stack only while
// less than a quarter of it is in use. The bound sits halfway: it passes
// with room for the noise and fails if the stack doubles.
//
// Under the race detector frames are bigger and an idle connection's stack
// is 8 KiB already, with or without the precautions; the bound is not
// checked there, only the traffic run.
const stackBound = 6 << 10

// stackDownPeer is a user on another server out of reach: Deliver refuses
// every message at once.
type stackDownPeer struct{}

func (stackDownPeer) Deliver(string, []byte, Receipt) error { return errStackDown }
func (stackDownPeer) Flush()                                {}

// The errors of the test's fakes and filters, made once: made by
// fmt.Errorf on the connection's goroutine, they would cost it the stack
// of fmt, which is the test's doing and not the server's.
var (
	errStackDown    = fmt.Errorf("%w: the node is down", ErrUnavailable)
	errStackLogin   = fmt.Errorf("%w: the table is out of reach", ErrUnavailable)
	errStackRefused = fmt.Errorf("%w: refused by the other server", ErrUnavailable)
	errStackVetoed  = errors.New("vetoed")
)

// TestIdleStack: after real traffic (login, a message to another user, a
// list, requests refused and logged, messages to users on other servers,
// malformed frames, logout and login again), each idle logged-in
// connection keeps a goroutine stack of 4 KiB, not 8. It guards the
// precautions of server.go that keep it there, which nothing else would
// notice undone. The server logs every line, at the debug level, through
// a real encoder, so that writing them costs the stack it costs in
// production.
func TestIdleStack(t *testing.T) {
	d := &dirFake{loginErr: func(name string) error {
		if name == "unrecorded" {
			return errStackLogin
		}
		return nil
	}}
	faraway := &dirRemote{d: d}
	refusing := &dirRemote{d: d, outcome: map[string]error{"later": errStackRefused, "now": errStackRefused}}
	d.remote = map[string]Peer{"faraway": faraway, "refusing": refusing, "down": stackDownPeer{}}
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zapcore.DebugLevel)
	srv := &Server{
		Logger:    zap.New(core),
		Directory: d,
		AllowLogin: func(_ net.Conn, name string) error {
			if name == "vetoed" {
				return errStackVetoed
			}
			return nil
		},
		AllowMessage: func(_, _, text string) error {
			if text == "veto" {
				return errStackVetoed
			}
			return nil
		},
	}
	ts := startTCP(t, srv)
	release := stackBallast(stackConns)
	defer release()
	goroutines0, stack0 := stackInuse()
	if start := stackStartingSize(); start > 4<<10 {
		t.Fatalf("new goroutines start with %d bytes of stack: the test cannot tell 4 KiB from 8", start)
	}

	names := make([]string, stackConns)
	raws := make([]*raw, stackConns)
	for i := range raws {
		names[i] = fmt.Sprintf("u%04d", i)
		raws[i] = newRaw(t, ts.dial())
		raws[i].do(AppendLogin(nil, names[i]), ResultOK)
	}

	// Each connection sends its requests in one go and reads the replies;
	// the message from the connection before it comes before them (after
	// them for the first connection, which reads it last).
	var (
		ok        = describe(Frame{Type: TypeResponse, Result: ResultOK})
		failure   = describe(Frame{Type: TypeResponse, Result: ResultFailure})
		malformed = describe(Frame{Type: TypeResponse, Result: ResultMalformed})
	)
	got := make([]bool, stackConns) // the message from the connection before
	for i, r := range raws {
		next := names[(i+1)%stackConns]
		steps := []struct {
			frame []byte
			want  string // "LIST" for a list of every name
		}{
			{AppendSendTo(nil, next, "hello"), ok},
			{AppendList(nil), "LIST"},
			{AppendSendTo(nil, "nobody", "hello"), failure},   // no such user
			{AppendSendTo(nil, next, "veto"), failure},        // AllowMessage: logged
			{AppendSendTo(nil, "down", "hello"), failure},     // refused by Deliver: logged
			{AppendSendTo(nil, "faraway", "later"), ok},       // settled on another goroutine
			{AppendSendTo(nil, "faraway", "now"), ok},         // settled within Deliver
			{AppendSendTo(nil, "refusing", "later"), failure}, // refused on another goroutine: logged
			{AppendSendTo(nil, "refusing", "now"), failure},   // refused within Deliver: logged
			{AppendLogin(nil, names[i]), failure},             // logged in already
			{AppendResponse(nil, ResultOK), malformed},        // a server's frame: logged
			{withBody(0x7f), malformed},                       // no such frame: logged
			{AppendLogout(nil), ok},                           // logged
			{AppendLogin(nil, "vetoed"), failure},             // AllowLogin: logged
			{AppendLogin(nil, "unrecorded"), failure},         // refused by Login: logged
			{AppendLogin(nil, names[i]), ok},                  // logged
		}
		var all []byte
		for _, s := range steps {
			all = append(all, s.frame...)
		}
		r.send(all)
		for j := 0; j < len(steps); {
			f := r.next()
			switch desc := describe(f); {
			case f.Type == TypeMessage:
				if from := names[(i+stackConns-1)%stackConns]; got[i] || desc != "SENDTO "+from+": hello" {
					t.Fatalf("%s: got %s, want one message from %s", names[i], desc, from)
				}
				got[i] = true
			case steps[j].want == "LIST":
				if f.Type != TypeNames || len(frameNames(f.Names)) != stackConns {
					t.Fatalf("%s: reply %d: %.60s, want a LIST of %d names", names[i], j+1, desc, stackConns)
				}
				j++
			default:
				if desc != steps[j].want {
					t.Fatalf("%s: reply %d: %s, want %s", names[i], j+1, desc, steps[j].want)
				}
				j++
			}
		}
	}
	for i, r := range raws {
		if !got[i] {
			r.expectMessage(names[(i+stackConns-1)%stackConns], "hello")
		}
	}
	faraway.wg.Wait() // the goroutines that settled deliveries
	refusing.wg.Wait()

	// Every connection has had all its replies. Its reader is on its way
	// to wait for the next request, or waiting already: wait until every
	// reader is, and no writer is left.
	eventually(t, "every connection to wait for a request", func() bool {
		return stackIdleReaders() == stackConns && runtime.NumGoroutine() <= goroutines0+stackConns
	})
	goroutines, stack := stackInuse()
	perConn := (int64(stack) - int64(stack0)) / stackConns
	t.Logf("%d idle connections: %.2f goroutines and %d bytes of stack each (%d KiB in all)",
		stackConns, float64(goroutines-goroutines0)/stackConns, perConn, (int64(stack)-int64(stack0))>>10)
	switch {
	case raceEnabled:
		t.Log("the stack is not checked under the race detector, whose frames are bigger")
	case perConn > stackBound:
		t.Errorf("each idle connection holds %d bytes of stack, want at most %d: a deep call on the reading path grew it", perConn, stackBound)
	}

	for _, r := range raws {
		r.c.Close()
	}
	eventually(t, "the connections to close", func() bool { return srv.Stats().Conns == 0 })
}

// stackInuse returns the number of goroutines and the bytes of stack in
// use, after collections have freed the stacks of dead goroutines and
// shrunk those of live ones where they could.
func stackInuse() (goroutines int, stack uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.StackInuse
}

// stackIdleReaders counts the connections' readers blocked in conn.Read on
// the network, waiting for a request.
func stackIdleReaders() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	idle := 0
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		header, _, _ := bytes.Cut(g, []byte("\n"))
		if bytes.Contains(header, []byte("[IO wait")) && bytes.Contains(g, []byte("chat.(*conn).Read(")) {
			idle++
		}
	}
	return idle
}

// stackStartingSize returns the size of new goroutines' stacks.
func stackStartingSize() uint64 {
	s := []metrics.Sample{{Name: "/gc/stack/starting-size:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// stackBallast starts n goroutines that wait, on the smallest stacks, until
// release is called. The runtime starts new goroutines with the average
// stack in use at the last collection, plus a guard, rounded up to a power
// of 2: with the test's few goroutines alone, deep in the testing package,
// that is 8 KiB, and the connections would start with the very stack the
// test looks for. Counted in with the test's, the ballast keeps the
// average small, and a connection's stack as big as its reader made it.
func stackBallast(n int) (release func()) {
	var started, done sync.WaitGroup
	stop := make(chan struct{})
	started.Add(n)
	done.Add(n)
	for range n {
		go func() {
			defer done.Done()
			started.Done()
			<-stop
		}()
	}
	started.Wait()
	return func() {
		close(stop)
		done.Wait()
	}
}
