//go:build unix

package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// TestMetrics scrapes chatserver's /metrics: besides the chat_ series it
// has the Go runtime's, the process's and the build information, and
// promlint finds nothing wrong with any of it.
func TestMetrics(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "-metrics-addr", "127.0.0.1:0")
	var addr string
	for _, e := range srv.logEntries() {
		if e.Msg == "metrics listening" {
			addr = e.Addr
		}
	}
	if addr == "" {
		t.Fatal(`chatserver did not log "metrics listening" with its address`)
	}
	c := loggedIn(t, srv, "alice")
	c.do("list", "alice")

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %v %v", resp.Status, err)
	}
	text := string(body)
	for _, want := range []string{
		"\ngo_goroutines ",
		"\ngo_memstats_heap_alloc_bytes ",
		"\nprocess_cpu_seconds_total ",
		"\nprocess_start_time_seconds ",
		`chat_build_info{goversion="go`,
		`chat_frames_received_total{kind="list"} 1`,
		`chat_frames_queued_total{kind="list"} 1`,
		"\nchat_users_logged_in 1",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", clip(text))
	}
	c.do("exit")
	c.expectEnd(0)
}
