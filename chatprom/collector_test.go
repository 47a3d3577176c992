package chatprom

import (
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/seedchat/chat"
)

// collectorSession is a server driven over net.Pipe.
type collectorSession struct {
	srv    *chat.Server
	served chan error // ServeConn's results
	conns  []net.Conn // the clients' ends
}

func (cs *collectorSession) pipe(t *testing.T) net.Conn {
	t.Helper()
	c, s := net.Pipe()
	go func() { cs.served <- cs.srv.ServeConn(s) }()
	cs.conns = append(cs.conns, c)
	return c
}

// close closes every client's end and waits for ServeConn to return for
// each, after which the counts no longer move.
func (cs *collectorSession) close(t *testing.T) {
	t.Helper()
	for _, c := range cs.conns {
		c.Close()
	}
	for range cs.conns {
		select {
		case <-cs.served:
		case <-time.After(10 * time.Second):
			t.Fatal("ServeConn did not return")
		}
	}
	cs.conns = nil
}

// collectorExpected is the exposition of every metric but the byte
// counters after the session of TestCollector, with the connection and user
// gauges given.
func collectorExpected(conns, users int) string {
	return strings.NewReplacer("CONNS", strconv.Itoa(conns), "USERS", strconv.Itoa(users)).Replace(`
# HELP chat_connections Connections open now.
# TYPE chat_connections gauge
chat_connections CONNS
# HELP chat_users_logged_in Users logged in through this server now.
# TYPE chat_users_logged_in gauge
chat_users_logged_in USERS
# HELP chat_connections_accepted_total Connections served.
# TYPE chat_connections_accepted_total counter
chat_connections_accepted_total 4
# HELP chat_connections_refused_total Connections closed at once because the server held its most connections, in all or from one IP address.
# TYPE chat_connections_refused_total counter
chat_connections_refused_total 0
# HELP chat_slow_consumers_dropped_total Connections dropped because writes to them made no progress.
# TYPE chat_slow_consumers_dropped_total counter
chat_slow_consumers_dropped_total 0
# HELP chat_floods_dropped_total Connections closed for flooding past the rate limit.
# TYPE chat_floods_dropped_total counter
chat_floods_dropped_total 0
# HELP chat_timeouts_total Connections closed by the login or frame timeout.
# TYPE chat_timeouts_total counter
chat_timeouts_total 0
# HELP chat_frames_too_large_total Connections closed after a frame length beyond the limit.
# TYPE chat_frames_too_large_total counter
chat_frames_too_large_total 0
# HELP chat_frames_received_total Frames received, by kind.
# TYPE chat_frames_received_total counter
chat_frames_received_total{kind="list"} 10
chat_frames_received_total{kind="login"} 3
chat_frames_received_total{kind="logout"} 0
chat_frames_received_total{kind="malformed"} 1
chat_frames_received_total{kind="sendto"} 2
# HELP chat_frames_queued_total Frames queued for clients, by kind; what is queued for a connection dropped at once is not written.
# TYPE chat_frames_queued_total counter
chat_frames_queued_total{kind="list"} 10
chat_frames_queued_total{kind="response"} 8
chat_frames_queued_total{kind="sendto"} 1
# HELP chat_failures_total Requests answered Failure, by reason.
# TYPE chat_failures_total counter
chat_failures_total{reason="already_logged_in"} 0
chat_failures_total{reason="bad_name"} 0
chat_failures_total{reason="bad_text"} 0
chat_failures_total{reason="list_too_large"} 0
chat_failures_total{reason="lookalike"} 1
chat_failures_total{reason="name_taken"} 0
chat_failures_total{reason="no_recipient"} 1
chat_failures_total{reason="not_logged_in"} 0
chat_failures_total{reason="queue_full"} 0
chat_failures_total{reason="rate_limited"} 2
chat_failures_total{reason="unavailable"} 0
chat_failures_total{reason="vetoed"} 0
# HELP chat_messages_relayed_total Messages queued for their recipient.
# TYPE chat_messages_relayed_total counter
chat_messages_relayed_total 1
`)
}

// collectorNames are the metrics of collectorExpected.
var collectorNames = []string{
	"chat_connections", "chat_users_logged_in", "chat_connections_accepted_total",
	"chat_connections_refused_total", "chat_slow_consumers_dropped_total", "chat_floods_dropped_total",
	"chat_timeouts_total", "chat_frames_too_large_total", "chat_frames_received_total",
	"chat_frames_queued_total", "chat_failures_total", "chat_messages_relayed_total",
}

var (
	flagName  = regexp.MustCompile(`(^|\s)-[a-z]`)
	snakeCase = regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`)
)

// TestCollector drives a server through a session with a relayed message,
// a failure, lists, a malformed frame and requests past the rate limit, and
// checks what a registry gathers and what promhttp serves: every chat_
// metric, with its value, type, help and labels.
func TestCollector(t *testing.T) {
	cs := &collectorSession{
		// Each connection may make 10 requests.
		srv:    &chat.Server{RateLimit: 1e-6, RateBurst: 10},
		served: make(chan error, 4),
	}
	defer cs.srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	msgs := make(chan chat.Message, 1)
	alice := chat.NewClient(cs.pipe(t))
	bob := chat.NewClient(cs.pipe(t), chat.OnMessage(func(m chat.Message) { msgs <- m }))
	defer alice.Close()
	defer bob.Close()
	for name, c := range map[string]*chat.Client{"alice": alice, "bob": bob} {
		if err := c.Login(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := alice.SendTo(ctx, "bob", "hi"); err != nil {
		t.Fatal(err)
	}
	if m := <-msgs; m != (chat.Message{From: "alice", Text: "hi"}) {
		t.Fatalf("bob received %+v", m)
	}
	if err := alice.SendTo(ctx, "carol", "hi"); !errors.Is(err, chat.ErrFailure) {
		t.Fatalf("sendto nobody: %v, want Failure", err)
	}
	mallory := chat.NewClient(cs.pipe(t))
	defer mallory.Close()
	if err := mallory.Login(ctx, "a1ice"); !errors.Is(err, chat.ErrFailure) {
		t.Fatalf("login a1ice while alice is logged in: %v, want Failure", err)
	}
	if names, err := alice.List(ctx); err != nil || !slices.Equal(names, []string{"alice", "bob"}) {
		t.Fatalf("list = %q, %v", names, err)
	}

	// Raw frames: one the server cannot parse, then 11 lists; the rate
	// limit allows the first 10 requests.
	raw := cs.pipe(t)
	b := []byte{0, 0, 0, 1, 0x7f}
	for range 11 {
		b = chat.AppendList(b)
	}
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := raw.Write(b); err != nil {
		t.Fatal(err)
	}
	var replies []string
	fr := chat.NewFrameReader(raw, 0)
	for range 12 {
		f, err := fr.Next()
		if err != nil {
			t.Fatalf("reply %d: %v", len(replies)+1, err)
		}
		if f.Type == chat.TypeResponse {
			replies = append(replies, f.Result.String())
		} else {
			replies = append(replies, f.Type.String())
		}
	}
	want := "malformed packet" + strings.Repeat(" LIST", 9) + " failure failure"
	if got := strings.Join(replies, " "); got != want {
		t.Fatalf("replies to the raw frames: %s, want %s", got, want)
	}

	reg := prometheus.NewPedanticRegistry()
	collector := NewCollector(cs.srv)
	reg.MustRegister(collector)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	// 11 metrics without labels, 5 kinds received, 3 queued, and a series
	// for each failure reason.
	if n, want := testutil.CollectAndCount(collector), 11+5+3+len(cs.srv.Stats().Failures); n != want {
		t.Errorf("%d series collected, want %d", n, want)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "chat_") {
			t.Errorf("metric %s does not start with chat_", mf.GetName())
		}
		// Help texts speak of the server, not of one program's flags.
		if flagName.MatchString(mf.GetHelp()) {
			t.Errorf("metric %s: help %q names a command-line flag", mf.GetName(), mf.GetHelp())
		}
		// Label values are snake case, as in the failure reasons.
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if !snakeCase.MatchString(l.GetValue()) {
					t.Errorf("metric %s: label %s=%q is not lower snake case", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}

	// While connected.
	if err := testutil.GatherAndCompare(reg, strings.NewReader(collectorExpected(4, 2)), collectorNames...); err != nil {
		t.Error(err)
	}
	// Served over HTTP in the text format, the same.
	h := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer h.Close()
	if err := testutil.ScrapeAndCompare(h.URL, strings.NewReader(collectorExpected(4, 2)), collectorNames...); err != nil {
		t.Errorf("/metrics: %v", err)
	}

	// Once every connection is gone, the gauges are back to zero, the
	// counters stay, and the byte counters are final.
	cs.close(t)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(collectorExpected(0, 0)), collectorNames...); err != nil {
		t.Error(err)
	}
	st := cs.srv.Stats()
	if st.BytesIn == 0 || st.BytesOut == 0 {
		t.Errorf("Stats: %d bytes in, %d out", st.BytesIn, st.BytesOut)
	}
	bytes := `
# HELP chat_received_bytes_total Bytes read from clients.
# TYPE chat_received_bytes_total counter
chat_received_bytes_total ` + strconv.FormatUint(st.BytesIn, 10) + `
# HELP chat_sent_bytes_total Bytes written to clients.
# TYPE chat_sent_bytes_total counter
chat_sent_bytes_total ` + strconv.FormatUint(st.BytesOut, 10) + `
`
	if err := testutil.ScrapeAndCompare(h.URL, strings.NewReader(bytes), "chat_received_bytes_total", "chat_sent_bytes_total"); err != nil {
		t.Errorf("/metrics: %v", err)
	}
}
