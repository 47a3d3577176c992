package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/seedchat/chat"
)

// TestMain lets the test binary serve as a child process of Config.Procs.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == ChildArg {
		if err := ServeChild(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serve starts a chat server on loopback for one test.
func serve(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &chat.Server{}
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

// checkDelivered checks a -messages run: everything sent was answered
// Success and delivered, and the latencies make sense.
func checkDelivered(t *testing.T, res *Result, messages uint64) {
	t.Helper()
	if res.Sent != messages || res.OK != messages || res.Failures != 0 || res.Malformed != 0 {
		t.Errorf("sent %d, ok %d, failures %d, malformed %d; want %d sent and ok", res.Sent, res.OK, res.Failures, res.Malformed, messages)
	}
	if res.Delivered != messages || res.DeliveredTotal != messages || res.Lost != 0 {
		t.Errorf("delivered %d (total %d, lost %d), want %d", res.Delivered, res.DeliveredTotal, res.Lost, messages)
	}
	l := res.Latency
	if !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("latency quantiles out of order: %+v", l)
	}
	if res.LatencyCount <= 0 || res.MsgsPerSec <= 0 || res.MBPerSec <= 0 || res.DurationS <= 0 {
		t.Errorf("count %d, msgs/s %v, MB/s %v, duration %v", res.LatencyCount, res.MsgsPerSec, res.MBPerSec, res.DurationS)
	}
}

func TestRunPairs(t *testing.T) {
	res := run(t, Config{Addr: serve(t), Clients: 4, Mode: Pairs, Window: 16, Messages: 4000})
	checkDelivered(t, res, 4000)
	if res.LatencyCount != 4000 {
		t.Errorf("%d latencies recorded, want 4000", res.LatencyCount)
	}
}

func TestRunRandom(t *testing.T) {
	res := run(t, Config{Addr: serve(t), Clients: 5, Mode: Random, Window: 8, Size: 100, Messages: 3000})
	checkDelivered(t, res, 3000)
	// MB/s counts the text delivered: 100 bytes a message.
	if want := res.MsgsPerSec * 100 / 1e6; res.MBPerSec < want*0.99 || res.MBPerSec > want*1.01 {
		t.Errorf("MB/s %v at %v msg/s of 100 bytes", res.MBPerSec, res.MsgsPerSec)
	}
}

func TestRunPingPong(t *testing.T) {
	res := run(t, Config{Addr: serve(t), Clients: 2, Mode: PingPong, Messages: 500})
	if res.RoundTrips != 500 || res.Failures != 0 {
		t.Errorf("round trips %d, failures %d; want 500, 0", res.RoundTrips, res.Failures)
	}
	if res.LatencyKind == "" || res.Latency.P50 <= 0 || res.Latency.P50 > res.Latency.Max {
		t.Errorf("latency %q %+v", res.LatencyKind, res.Latency)
	}
}

func TestRunRate(t *testing.T) {
	res := run(t, Config{Addr: serve(t), Clients: 2, Mode: Pairs, Rate: 200, Duration: 500 * time.Millisecond})
	// 2 clients at 200/s each for about half a second: about 200 messages,
	// certainly not thousands.
	if res.Delivered == 0 || res.Delivered > 400 || res.Failures != 0 {
		t.Errorf("at 200/s per client for 0.5 s: delivered %d, failures %d", res.Delivered, res.Failures)
	}
}

func TestRunIdle(t *testing.T) {
	res := run(t, Config{Addr: serve(t), Clients: 7, Mode: Idle, Duration: 50 * time.Millisecond, List: true})
	if res.List == nil || res.List.Names != 7 || res.List.Error != "" {
		t.Errorf("list: %+v", res.List)
	}
	if res.Sent != 0 || res.Delivered != 0 {
		t.Errorf("idle clients sent %d, delivered %d", res.Sent, res.Delivered)
	}
}

// TestRunProcs spreads the clients over child processes (this test binary,
// through TestMain) and sums their results.
func TestRunProcs(t *testing.T) {
	res := run(t, Config{Addr: serve(t), Clients: 8, Mode: Pairs, Window: 8, Messages: 2000, Procs: 2})
	checkDelivered(t, res, 2000)
	if res.Procs != 2 || res.Clients != 8 {
		t.Errorf("procs %d, clients %d; want 2, 8", res.Procs, res.Clients)
	}
}

func TestResultOutput(t *testing.T) {
	var progress bytes.Buffer
	res := run(t, Config{Addr: serve(t), Clients: 2, Mode: Pairs, Messages: 1000, Progress: &progress})
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"clients", "mode", "size", "window", "duration_s", "delivered", "msgs_per_sec", "mb_per_sec", "failures", "latency_us"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, b)
		}
	}
	lat, _ := m["latency_us"].(map[string]any)
	for _, k := range []string{"p50", "p90", "p99", "p999", "max"} {
		if _, ok := lat[k]; !ok {
			t.Errorf("latency_us lacks %q: %s", k, b)
		}
	}
	var table strings.Builder
	if err := res.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"throughput", "p99"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Mode: "sideways"},
		{Size: 3},
		{Clients: 3, Mode: Pairs},
		{Clients: -1},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) succeeded", cfg)
		}
	}
}

func TestStamp(t *testing.T) {
	b := make([]byte, 20)
	putStamp(b, 123456789)
	if got, ok := parseStamp(b); !ok || got != 123456789 {
		t.Errorf("parseStamp = %d, %v", got, ok)
	}
	if _, ok := parseStamp([]byte("short")); ok {
		t.Error("parsed a stamp from 5 bytes")
	}
}
