package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"

	"github.com/seedchat/chat"
)

// TestMain lets the test binary serve as a child process of Config.Procs,
// and otherwise fails the tests if any goroutine outlives them.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == ChildArg {
		if err := ServeChild(context.Background(), os.Stdin, os.Stdout); err != nil {
			os.Exit(1) // the error went to the parent, which reports it
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// fastChildExit spares the child processes of a test the second the race
// detector otherwise waits before exiting.
func fastChildExit(t *testing.T) {
	t.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

// serve starts srv (a new Server if nil) on loopback for one test and
// returns its address.
func serve(t testing.TB, srv *chat.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if srv == nil {
		srv = &chat.Server{}
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return l.Addr().String()
}

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run(%+v): %v", cfg, err)
	}
	return res
}

// checkConsistent checks what holds for every run that did not fail:
// every request answered Success, every message accepted delivered, one
// latency per measured message (per round trip in PingPong), quantiles in
// order, and rates that agree with the counts.
func checkConsistent(t *testing.T, res *Result) {
	t.Helper()
	if res.Failures != 0 || res.Malformed != 0 || res.OK != res.Sent {
		t.Errorf("sent %d, ok %d, failures %d, malformed %d; want all ok", res.Sent, res.OK, res.Failures, res.Malformed)
	}
	if res.DeliveredTotal != res.OK || res.Delivered > res.DeliveredTotal {
		t.Errorf("ok %d, delivered %d measured of %d", res.OK, res.Delivered, res.DeliveredTotal)
	}
	if res.Tally != (Tally{}) {
		t.Errorf("accounting %+v, want all zero", res.Tally)
	}
	wantLatencies := res.Delivered
	if res.Mode == PingPong {
		wantLatencies = res.RoundTrips
	}
	if res.LatencyCount != int64(wantLatencies) {
		t.Errorf("%d latencies recorded, want %d", res.LatencyCount, wantLatencies)
	}
	if wantLatencies == 0 {
		return
	}
	l := res.Latency
	if !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("latency quantiles not positive and in order: %+v", l)
	}
	if res.DurationS <= 0 || res.MsgsPerSec <= 0 {
		t.Fatalf("duration %v s, %v msg/s", res.DurationS, res.MsgsPerSec)
	}
	// MB/s is the text delivered: Size bytes a message.
	if want := res.MsgsPerSec * float64(res.Size) / 1e6; math.Abs(res.MBPerSec-want) > 0.01+want/100 {
		t.Errorf("%v MB/s at %v msg/s of %d bytes", res.MBPerSec, res.MsgsPerSec, res.Size)
	}
}

// TestRunMessages runs every mode to a message count, in one process and
// spread over child processes (this test binary, through TestMain), and
// checks that exactly that many messages arrived.
func TestRunMessages(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		// The messages the recipients must count: Messages, or twice as
		// many in PingPong, where each round trip is two messages.
		delivered uint64
	}{
		{"pairs", Config{Clients: 4, Mode: Pairs, Window: 16, Messages: 4000}, 4000},
		{"random", Config{Clients: 5, Mode: Random, Window: 8, Size: 100, Messages: 3001}, 3001},
		{"pingpong", Config{Clients: 4, Mode: PingPong, Messages: 301}, 602},
		{"pairs window 1", Config{Clients: 2, Mode: Pairs, Window: 1, Messages: 200}, 200},
		// 800 kB in all: the server never finds a queue full (1 MiB).
		{"pairs big texts", Config{Clients: 2, Mode: Pairs, Size: 20000, Messages: 40}, 40},
		{"pairs 2 procs", Config{Clients: 6, Mode: Pairs, Window: 8, Messages: 2001, Procs: 2}, 2001},
		{"random 2 procs", Config{Clients: 5, Mode: Random, Window: 8, Messages: 1001, Procs: 2}, 1001},
		{"pingpong 2 procs", Config{Clients: 4, Mode: PingPong, Messages: 101, Procs: 2}, 202},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fastChildExit(t)
			cfg := tc.cfg
			cfg.Addr = serve(t, nil)
			res := run(t, cfg)
			checkConsistent(t, res)
			if res.Delivered != tc.delivered || res.DeliveredTotal != tc.delivered {
				t.Errorf("delivered %d (%d in all), want %d", res.Delivered, res.DeliveredTotal, tc.delivered)
			}
			if res.Mode == PingPong && res.RoundTrips != uint64(cfg.Messages) {
				t.Errorf("%d round trips, want %d", res.RoundTrips, cfg.Messages)
			}
			wantProcs := max(cfg.Procs, 1)
			if res.Clients != cfg.Clients || res.Procs != wantProcs || res.Mode != cfg.Mode {
				t.Errorf("clients %d, procs %d, mode %s; want %d, %d, %s", res.Clients, res.Procs, res.Mode, cfg.Clients, wantProcs, cfg.Mode)
			}
		})
	}
}

// The tests below that run for a time rather than to a count set a Rate:
// as fast as possible, a recipient that falls behind its sender could find
// the server's queue for it full, and the sender would get Failure.

// TestRunDuration runs for a duration with a warm-up: the warm-up's
// messages are delivered but not measured.
func TestRunDuration(t *testing.T) {
	res := run(t, Config{Addr: serve(t, nil), Clients: 2, Mode: Pairs, Rate: 2000, Warmup: 20 * time.Millisecond, Duration: 50 * time.Millisecond})
	checkConsistent(t, res)
	if res.Delivered == 0 {
		t.Error("nothing delivered")
	}
	// The run is stopped by a timer, which never fires early.
	if res.DurationS < 0.05 {
		t.Errorf("measured %v s, want at least the 0.05 s asked for", res.DurationS)
	}
}

// TestRunRate checks that a rate holds the senders back: each message is
// due one interval after the one before it.
func TestRunRate(t *testing.T) {
	res := run(t, Config{Addr: serve(t, nil), Clients: 2, Mode: Pairs, Rate: 1000, Messages: 40})
	checkConsistent(t, res)
	if res.Delivered != 40 {
		t.Errorf("delivered %d, want 40", res.Delivered)
	}
	// Each client's 20th message is due 19 ms after the start.
	if res.DurationS < 0.019 {
		t.Errorf("40 messages at 1000/s per client took %v s, less than the 0.019 s the rate allows", res.DurationS)
	}
}

// TestRunCancel ends a run early through its context: it is still
// reported, with what was in flight drained.
func TestRunCancel(t *testing.T) {
	for _, mode := range []Mode{Pairs, PingPong} {
		t.Run(string(mode), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var once sync.Once
			srv := &chat.Server{OnMessage: func(from, to, text string) { once.Do(cancel) }}
			res, err := Run(ctx, Config{Addr: serve(t, srv), Clients: 2, Mode: mode, Rate: 2000, Duration: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			checkConsistent(t, res)
			if res.Sent == 0 {
				t.Error("nothing sent")
			}
		})
	}
}

// TestRunServerGone checks that a server closing in the middle of a run
// fails it, promptly and without leaving goroutines behind.
func TestRunServerGone(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run(fmt.Sprint("procs ", procs), func(t *testing.T) {
			fastChildExit(t)
			relayed := make(chan struct{})
			var once sync.Once
			srv := &chat.Server{OnMessage: func(from, to, text string) { once.Do(func() { close(relayed) }) }}
			addr := serve(t, srv)
			errc := make(chan error, 1)
			go func() {
				_, err := Run(context.Background(), Config{Addr: addr, Clients: 4, Mode: Pairs, Duration: time.Hour, Procs: procs})
				errc <- err
			}()
			<-relayed
			srv.Close()
			if err := <-errc; err == nil {
				t.Error("Run succeeded against a closed server")
			}
		})
	}
}

func TestRunIdle(t *testing.T) {
	res := run(t, Config{Addr: serve(t, nil), Clients: 7, Mode: Idle, Duration: 10 * time.Millisecond, List: true})
	if res.List == nil || res.List.Names != 7 || res.List.Error != "" {
		t.Errorf("list: %+v", res.List)
	}
	if res.Sent != 0 || res.Delivered != 0 {
		t.Errorf("idle clients sent %d, delivered %d", res.Sent, res.Delivered)
	}
}

// TestResultOutput checks the -json object (decoded, with every field the
// issue requires) and the table.
func TestResultOutput(t *testing.T) {
	var progress bytes.Buffer
	res := run(t, Config{Addr: serve(t, nil), Clients: 2, Mode: Pairs, Messages: 1000, Progress: &progress})
	var out bytes.Buffer
	if err := res.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Clients    *int     `json:"clients"`
		Mode       *string  `json:"mode"`
		Size       *int     `json:"size"`
		Window     *int     `json:"window"`
		DurationS  *float64 `json:"duration_s"`
		Delivered  *uint64  `json:"delivered"`
		MsgsPerSec *float64 `json:"msgs_per_sec"`
		MBPerSec   *float64 `json:"mb_per_sec"`
		Failures   *uint64  `json:"failures"`
		FailedDel  *uint64  `json:"failed_delivered"`
		OKUndel    *uint64  `json:"ok_undelivered"`
		Duplicates *uint64  `json:"duplicates"`
		CPUUserS   *float64 `json:"cpu_user_s"`
		Latency    *struct {
			P50, P90, P99, P999, Max *float64
		} `json:"latency_us"`
	}
	dec := json.NewDecoder(&out)
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if dec.More() {
		t.Error("more than one JSON value")
	}
	if got.Clients == nil || got.Mode == nil || got.Size == nil || got.Window == nil || got.DurationS == nil ||
		got.Delivered == nil || got.MsgsPerSec == nil || got.MBPerSec == nil || got.Failures == nil || got.CPUUserS == nil || got.Latency == nil ||
		got.FailedDel == nil || got.OKUndel == nil || got.Duplicates == nil {
		t.Fatalf("JSON lacks fields: %+v", got)
	}
	l := got.Latency
	if l.P50 == nil || l.P90 == nil || l.P99 == nil || l.P999 == nil || l.Max == nil {
		t.Fatalf("latency_us lacks fields: %+v", l)
	}
	if *got.Clients != 2 || *got.Mode != "pairs" || *got.Size != DefaultSize || *got.Window != DefaultWindow ||
		*got.Delivered != 1000 || *got.Failures != 0 || *got.MsgsPerSec != res.MsgsPerSec || *l.P99 != res.Latency.P99 {
		t.Errorf("JSON disagrees with the result %+v", res)
	}

	var table strings.Builder
	if err := res.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"throughput", "p99.9", "1,000 measured", "failed_delivered 0, ok_undelivered 0, duplicates 0"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

// TestMerge checks how the results of the processes add up, with their
// histograms carried through a child's JSON report.
func TestMerge(t *testing.T) {
	cfg := Config{Clients: 4, Mode: Pairs, Size: 100, Window: 10, Procs: 2}
	var parts []*part
	for i, lat := range [][2]int64{{1, 1000}, {1001, 2000}} { // µs
		p := &part{Result: Result{
			Clients: 2, Procs: 1, DurationS: float64(i + 1),
			Sent: 1000, OK: 999, Failures: 1, Delivered: 990, DeliveredTotal: 998,
			CPUUserS: 0.5, CPUSysS: 0.25,
		}}
		p.hist = newHistogram()
		for v := lat[0]; v <= lat[1]; v++ {
			p.hist.RecordValue(v * 1000)
		}
		// Through a child's report and back.
		if err := p.encode(); err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(childEvent{Event: "result", Result: p})
		if err != nil {
			t.Fatal(err)
		}
		var ev childEvent
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		if err := ev.Result.decode(); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, ev.Result)
	}
	r := merge(&cfg, parts)
	want := Result{
		Clients: 4, Mode: Pairs, Size: 100, Window: 10, Procs: 2, DurationS: 2,
		Sent: 2000, OK: 1998, Failures: 2, Delivered: 1980, DeliveredTotal: 1996,
		MsgsPerSec: 990, MBPerSec: 0.1, LatencyKind: "delivery", LatencyCount: 2000,
		CPUUserS: 1, CPUSysS: 0.5,
	}
	got := *r
	got.Latency = Latency{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("merged:\n got %+v\nwant %+v", got, want)
	}
	// 3 significant digits: within 0.1 %.
	near := func(got, want float64) bool { return math.Abs(got-want) <= want/1000 }
	if l := r.Latency; !near(l.P50, 1000) || !near(l.P90, 1800) || !near(l.P99, 1980) || !near(l.P999, 1998) || !near(l.Max, 2000) {
		t.Errorf("merged latency %+v, want about p50 1000, p90 1800, p99 1980, p99.9 1998, max 2000", l)
	}

	bad := &part{Result: Result{}, Hist: "not a histogram"}
	if err := bad.decode(); err == nil {
		t.Error("decoded a bad histogram")
	}
}

// TestShares checks that splitting clients and messages among processes
// loses and invents nothing.
func TestShares(t *testing.T) {
	for _, tc := range []struct {
		total   int64
		senders int
		procs   int
	}{{10, 3, 2}, {1, 4, 3}, {1000, 7, 7}, {5, 10, 4}} {
		var sum int64
		from := 0
		for i := range tc.procs {
			n := int(split(int64(tc.senders), tc.procs, i))
			sum += sharesOf(tc.total, tc.senders, from, n)
			from += n
		}
		if sum != tc.total || from != tc.senders {
			t.Errorf("%d messages of %d senders in %d parts: %d messages, %d senders", tc.total, tc.senders, tc.procs, sum, from)
		}
	}
	for _, tc := range []struct {
		cfg  Config
		want int
	}{
		{Config{Clients: 10, Mode: Pairs, Procs: 4}, 4}, // 5 pairs: 2, 1, 1, 1
		{Config{Clients: 10, Mode: Random, Procs: 4}, 3},
		{Config{Clients: 10, Mode: Idle, Procs: 1}, 10},
	} {
		if got := tc.cfg.maxShare(); got != tc.want {
			t.Errorf("%+v: largest share %d, want %d", tc.cfg, got, tc.want)
		}
	}
}

// TestServeChild speaks the child's side of the protocol in this process:
// a run to a message count, a run ended by closing standard input, and a
// child given up before it started.
func TestServeChild(t *testing.T) {
	addr := serve(t, nil)
	for _, tc := range []struct {
		name     string
		cfg      Config
		stopAt   string // close stdin on this event
		wantSent uint64
	}{
		{"messages", Config{Addr: addr, Clients: 2, Messages: 100, Prefix: "m"}, "", 100},
		{"stopped", Config{Addr: addr, Clients: 2, Rate: 2000, Duration: time.Hour, Prefix: "s"}, "go", 0},
		{"given up", Config{Addr: addr, Clients: 2, Duration: time.Hour, Prefix: "g"}, "ready", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inR, inW := io.Pipe()
			outR, outW := io.Pipe()
			done := make(chan error, 1)
			go func() {
				err := ServeChild(context.Background(), inR, outW)
				outW.CloseWithError(err)
				inR.Close()
				done <- err
			}()
			spec, _ := json.Marshal(childSpec{Config: tc.cfg, Offset: 2})
			if _, err := inW.Write(append(spec, '\n')); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(outR)
			sc.Buffer(nil, 1<<20)
			var events []string
			var res *part
			for sc.Scan() {
				var ev childEvent
				if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
					t.Fatalf("bad report %q: %v", sc.Text(), err)
				}
				events = append(events, ev.Event)
				switch {
				case ev.Event == "ready" && tc.stopAt == "ready":
					inW.Close()
				case ev.Event == "ready":
					io.WriteString(inW, "go\n")
					if tc.stopAt == "go" {
						inW.Close()
					}
				case ev.Event == "result":
					res = ev.Result
				case ev.Event == "error":
					t.Fatalf("child failed: %s", ev.Error)
				}
			}
			inW.Close()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if tc.stopAt == "ready" {
				if res != nil || len(events) != 1 {
					t.Errorf("a child given up before the start reported %v", events)
				}
				return
			}
			if res == nil || events[len(events)-2] != "stopped" {
				t.Fatalf("events %v, want ready, stopped, result", events)
			}
			if err := res.decode(); err != nil {
				t.Fatal(err)
			}
			if res.Clients != 2 || res.OK != res.Sent || res.DeliveredTotal != res.OK || res.hist.TotalCount() != int64(res.Delivered) {
				t.Errorf("result %+v, %d latencies", res.Result, res.hist.TotalCount())
			}
			if tc.wantSent != 0 && res.Sent != tc.wantSent {
				t.Errorf("sent %d, want %d", res.Sent, tc.wantSent)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Mode: "sideways"},
		{Size: 3},
		{Size: chat.MaxTextLen + 1},
		{Clients: 3, Mode: Pairs},
		{Clients: -1},
		{Window: -1},
		{Messages: -1},
		{Warmup: time.Second, Messages: 10},
		{Mode: Idle, Messages: 10},
		{Clients: 4, Mode: Random, Procs: 3},
		{Clients: 4, Mode: PingPong, Procs: 3},
		{Prefix: "a-prefix-far-too-long-for-a-name"},
		{Addr: "127.0.0.1:1,,127.0.0.1:2"},
		{Addr: "127.0.0.1:1,127.0.0.1:2", ServerPIDs: []int{1, 2, 3}},
		{ServerPIDs: []int{-1}},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) succeeded", cfg)
		}
	}
}

// TestFileLimit checks that a load needing more connections than one
// process may open is refused before it starts, with advice.
func TestFileLimit(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<24 {
		t.Skip("no open-file limit to exceed")
	}
	if err := checkFileLimit(10); err != nil {
		t.Errorf("10 connections: %v", err)
	}
	clients := 2 * int(rl.Cur)
	_, err := Run(context.Background(), Config{Addr: "127.0.0.1:1", Clients: clients, Prefix: "f"})
	if err == nil || !strings.Contains(err.Error(), "at least 3 processes") {
		t.Errorf("%d clients in one process: %v", clients, err)
	}
}

func TestStamp(t *testing.T) {
	for _, tc := range []struct {
		t   int64
		seq uint64
	}{{0, 0}, {1, 1}, {123456789, 987654}, {1<<54 - 1, 1<<42 - 1}, {int64(10 * 24 * time.Hour), 1 << 32}} {
		b := []byte("................-rest")
		putStamp(b, tc.t, tc.seq)
		if got, seq, ok := parseStamp(b); !ok || got != tc.t || seq != tc.seq {
			t.Errorf("parseStamp(putStamp(%d, %d)) = %d, %d, %v", tc.t, tc.seq, got, seq, ok)
		}
		putSeq(b, tc.seq+1)
		if got, seq, ok := parseStamp(b); !ok || got != tc.t || seq != (tc.seq+1)%(1<<42) {
			t.Errorf("after putSeq(%d): %d, %d, %v", tc.seq+1, got, seq, ok)
		}
		if !strings.HasSuffix(string(b), "-rest") || !utf8.Valid(b) {
			t.Errorf("putStamp wrote past the stamp, or not UTF-8: %q", b)
		}
	}
	for _, s := range []string{"short", "0123456789abcde!", "0123456789abcd\xff_", "0123456789abcd é"} {
		if _, _, ok := parseStamp([]byte(s)); ok {
			t.Errorf("parsed a stamp from %q", s)
		}
	}
}

// TestSendToFrame: the text that appendSendTo returns, where the stamp is
// written, is the text the server reads from the frame, and sendToSize is
// the size of that frame.
func TestSendToFrame(t *testing.T) {
	pad := strings.Repeat("x", stampLen+3)
	for _, to := range []string{"b", "b123-456789", strings.Repeat("é", chat.MaxNameLen)} {
		buf, text := appendSendTo([]byte("queued"), to, pad)
		putStamp(text, 12345, 678)
		frame := buf[len("queued"):]
		if string(buf[:len("queued")]) != "queued" {
			t.Errorf("appendSendTo changed what the buffer held: %q", buf[:len("queued")])
		}
		if got, want := sendToSize(len(to), pad), len(frame); got != want {
			t.Errorf("sendToSize(%d, %d bytes) = %d, the frame is %d bytes", len(to), len(pad), got, want)
		}
		f, err := chat.NewFrameReader(bytes.NewReader(frame), 0).Next()
		if err != nil || f.Type != chat.TypeSendTo || string(f.Name) != to {
			t.Fatalf("the frame to %q reads as %v %q, %v", to, f.Type, f.Name, err)
		}
		if ts, seq, ok := parseStamp(f.Text); !ok || ts != 12345 || seq != 678 || string(f.Text[stampLen:]) != pad[stampLen:] {
			t.Errorf("the frame to %q carries %q (stamp %d, %d, %v)", to, f.Text, ts, seq, ok)
		}
	}
}

// cluster is several in-process servers that act as one chat: they share
// one MemoryDirectory. It records on which server each user logged in and
// the messages each relayed.
type cluster struct {
	srvs  []*chat.Server
	addrs []string

	mu      sync.Mutex
	loginOn map[string]int // user name → server
	msgs    [][][2]string  // per server: from, to of each message relayed
}

func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	cl := &cluster{loginOn: make(map[string]int), msgs: make([][][2]string, n)}
	dir := &chat.MemoryDirectory{}
	for i := range n {
		srv := &chat.Server{
			Directory: dir,
			OnLogin: func(_ net.Conn, name string) {
				cl.mu.Lock()
				defer cl.mu.Unlock()
				cl.loginOn[name] = i
			},
			OnMessage: func(from, to, _ string) {
				cl.mu.Lock()
				defer cl.mu.Unlock()
				cl.msgs[i] = append(cl.msgs[i], [2]string{from, to})
			},
		}
		cl.srvs = append(cl.srvs, srv)
		cl.addrs = append(cl.addrs, serve(t, srv))
	}
	return cl
}

// TestRunCluster runs the load against several servers sharing one
// directory, through a comma-separated Addr, in one process and in child
// processes: every message must arrive, every server must hold its share
// of the clients, and the two clients of a pair must be on different
// servers, so that every message crossed between servers.
func TestRunCluster(t *testing.T) {
	for _, tc := range []struct {
		name      string
		servers   int
		cfg       Config
		delivered uint64
	}{
		{"pairs 3 servers", 3, Config{Clients: 12, Mode: Pairs, Window: 16, Messages: 3000}, 3000},
		{"pingpong 3 servers", 3, Config{Clients: 6, Mode: PingPong, Messages: 300}, 600},
		{"pairs 2 servers", 2, Config{Clients: 4, Mode: Pairs, Window: 8, Messages: 1000}, 1000},
		{"pingpong 2 servers", 2, Config{Clients: 2, Mode: PingPong, Messages: 100}, 200},
		{"random 3 servers", 3, Config{Clients: 7, Mode: Random, Window: 8, Messages: 1001}, 1001},
		{"pairs 3 servers 2 procs", 3, Config{Clients: 10, Mode: Pairs, Window: 8, Messages: 2001, Procs: 2}, 2001},
		{"pingpong 3 servers 2 procs", 3, Config{Clients: 8, Mode: PingPong, Messages: 101, Procs: 2}, 202},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fastChildExit(t)
			cl := newCluster(t, tc.servers)
			cfg := tc.cfg
			cfg.Addr = strings.Join(cl.addrs, ",")
			cfg.Prefix = "c-"
			res := run(t, cfg)
			checkConsistent(t, res)
			if res.Delivered != tc.delivered || res.DeliveredTotal != tc.delivered {
				t.Errorf("delivered %d (%d in all), want %d", res.Delivered, res.DeliveredTotal, tc.delivered)
			}
			if res.Mode == PingPong && res.RoundTrips != uint64(cfg.Messages) {
				t.Errorf("%d round trips, want %d", res.RoundTrips, cfg.Messages)
			}

			var relayed uint64
			for i, srv := range cl.srvs {
				st := srv.Stats()
				if st.ConnsAccepted == 0 || st.Relayed == 0 {
					t.Errorf("server %d accepted %d connections, relayed %d messages; want some of each", i, st.ConnsAccepted, st.Relayed)
				}
				relayed += st.Relayed
			}
			if relayed != res.DeliveredTotal {
				t.Errorf("the servers relayed %d messages, the clients received %d", relayed, res.DeliveredTotal)
			}

			cl.mu.Lock()
			defer cl.mu.Unlock()
			// Each client on its server: i mod n, or for a pair 2k, 2k+1
			// on k mod n and k+1 mod n.
			perServer := make([]int, tc.servers)
			for i := range cfg.Clients {
				name := fmt.Sprint(cfg.Prefix, i)
				want := i % tc.servers
				if cfg.pairwise() {
					want = (i/2 + i%2) % tc.servers
				}
				got, ok := cl.loginOn[name]
				if !ok || got != want {
					t.Errorf("%s logged in on server %d (%v), want %d", name, got, ok, want)
				}
				perServer[got]++
			}
			if slices.Max(perServer)-slices.Min(perServer) > 2 {
				t.Errorf("%d clients spread unevenly over the servers: %v", cfg.Clients, perServer)
			}
			if !cfg.pairwise() {
				return
			}
			for i, msgs := range cl.msgs {
				for _, m := range msgs {
					if cl.loginOn[m[0]] != i || cl.loginOn[m[1]] == i {
						t.Fatalf("server %d relayed %s (on %d) → %s (on %d): not across servers", i, m[0], cl.loginOn[m[0]], m[1], cl.loginOn[m[1]])
					}
				}
			}
		})
	}
}

// TestRunClusterIdle spreads idle clients over the servers round-robin;
// the list from the first server names them all.
func TestRunClusterIdle(t *testing.T) {
	cl := newCluster(t, 3)
	res := run(t, Config{Addr: strings.Join(cl.addrs, ", "), Clients: 7, Mode: Idle, Duration: 10 * time.Millisecond, List: true})
	if res.List == nil || res.List.Names != 7 || res.List.Error != "" {
		t.Errorf("list: %+v", res.List)
	}
	for i, want := range []uint64{3 + 1, 2, 2} { // and the list's connection
		if got := cl.srvs[i].Stats().ConnsAccepted; got != want {
			t.Errorf("server %d accepted %d connections, want %d", i, got, want)
		}
	}
}

// TestServerPIDs measures several "servers" (this process, under each
// address) and checks the per-server report, and that one PID gets the
// single-server report.
func TestServerPIDs(t *testing.T) {
	cl := newCluster(t, 3)
	pid := os.Getpid()
	cfg := Config{Addr: strings.Join(cl.addrs, ","), Clients: 6, Mode: Pairs, Messages: 600, ServerPIDs: []int{pid, pid, pid}, Prefix: "p1-"}
	res := run(t, cfg)
	checkConsistent(t, res)
	if len(res.Servers) != 3 {
		t.Fatalf("%d servers; want 3", len(res.Servers))
	}
	for i, s := range res.Servers {
		if s.PID != pid || s.Addr != cl.addrs[i] || s.Clients != 2 || s.RSSAfterKiB <= 0 {
			t.Errorf("server %d: %+v", i, s)
		}
	}
	var out bytes.Buffer
	if err := res.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Servers []struct {
			PID     int    `json:"pid"`
			Addr    string `json:"addr"`
			Clients int    `json:"clients"`
		} `json:"servers"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Servers) != 3 || got.Servers[2].Addr != cl.addrs[2] || got.Servers[2].Clients != 2 {
		t.Errorf("JSON: %s", out.Bytes())
	}
	var table strings.Builder
	res.WriteTable(&table)
	for _, want := range []string{"server 1 cpu", "server 3 rss", cl.addrs[1]} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}

	// Distinct processes: their CPU time is summed too.
	table.Reset()
	(&Result{Mode: Idle, Servers: []*ServerUsage{{PID: 1, CPUUserS: 1}, {PID: 2, CPUUserS: 2}}}).WriteTable(&table)
	if !strings.Contains(table.String(), "in all: user 3.00 s") {
		t.Errorf("two processes: table\n%s", table.String())
	}

	// One PID, several addresses: the one server, with all the clients.
	cfg.ServerPIDs, cfg.Prefix = []int{pid}, "p2-"
	res = run(t, cfg)
	if len(res.Servers) != 1 || res.Servers[0].PID != pid || res.Servers[0].Addr != "" || res.Servers[0].Clients != cfg.Clients {
		t.Errorf("one PID: servers %+v", res.Servers)
	}
	table.Reset()
	res.WriteTable(&table)
	if !strings.Contains(table.String(), "server cpu") || strings.Contains(table.String(), "server 1") {
		t.Errorf("one PID: table\n%s", table.String())
	}
}

// TestPlacement checks which server each client connects to.
func TestPlacement(t *testing.T) {
	for _, tc := range []struct {
		mode    Mode
		servers int
		want    []int
	}{
		{Pairs, 1, []int{0, 0, 0, 0}},
		{Pairs, 2, []int{0, 1, 1, 0, 0, 1, 1, 0}},
		{PingPong, 3, []int{0, 1, 1, 2, 2, 0, 0, 1}},
		{Random, 3, []int{0, 1, 2, 0, 1}},
		{Idle, 2, []int{0, 1, 0}},
	} {
		cfg := Config{Mode: tc.mode, Clients: len(tc.want)}
		per := make([]int, tc.servers)
		for i, want := range tc.want {
			if got := cfg.serverOf(i, tc.servers); got != want {
				t.Errorf("%s, %d servers: client %d on server %d, want %d", tc.mode, tc.servers, i, got, want)
			}
			per[want]++
		}
		if got := cfg.clientsPerServer(tc.servers); !reflect.DeepEqual(got, per) {
			t.Errorf("%s, %d servers: clients per server %v, want %v", tc.mode, tc.servers, got, per)
		}
	}
}
