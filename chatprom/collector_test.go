package chatprom

import (
	"context"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/seedchat/chat"
)

func TestCollector(t *testing.T) {
	srv := &chat.Server{}
	defer srv.Close()
	c, s := net.Pipe()
	go srv.ServeConn(s)
	client := chat.NewClient(c)
	defer client.Close()
	ctx := context.Background()
	if err := client.Login(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := client.SendTo(ctx, "alice", "hi"); err != nil {
		t.Fatal(err)
	}
	if err := client.SendTo(ctx, "bob", "hi"); err == nil {
		t.Fatal("sendto nobody succeeded")
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(srv))
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	want := `
# HELP chat_users_logged_in Users logged in through this server now.
# TYPE chat_users_logged_in gauge
chat_users_logged_in 1
# HELP chat_messages_relayed_total Messages queued for their recipient.
# TYPE chat_messages_relayed_total counter
chat_messages_relayed_total 1
# HELP chat_connections Connections open now.
# TYPE chat_connections gauge
chat_connections 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"chat_users_logged_in", "chat_messages_relayed_total", "chat_connections"); err != nil {
		t.Error(err)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "chat_") {
			t.Errorf("metric %s does not start with chat_", mf.GetName())
		}
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			if m.Counter != nil {
				values[key] = m.GetCounter().GetValue()
			} else {
				values[key] = m.GetGauge().GetValue()
			}
		}
	}
	for key, want := range map[string]float64{
		"chat_frames_received_total{kind=login}":   1,
		"chat_frames_received_total{kind=sendto}":  2,
		"chat_frames_sent_total{kind=SENDTO}":      1,
		"chat_frames_sent_total{kind=RESPONSE}":    3,
		"chat_failures_total{reason=no_recipient}": 1,
		"chat_failures_total{reason=queue_full}":   0,
		"chat_connections_accepted_total":          1,
	} {
		if got, ok := values[key]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", key, got, ok, want)
		}
	}

	// Served over HTTP in the text format.
	h := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer h.Close()
	resp, err := h.Client().Get(h.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `chat_failures_total{reason="no_recipient"} 1`) {
		t.Errorf("/metrics lacks the failure count:\n%s", body)
	}
}
