// Package chatprom exports a chat.Server's statistics to Prometheus.
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(chatprom.NewCollector(srv))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Every metric's name starts with chat_. A program serving /metrics
// usually registers, next to the Collector, the Go runtime's and the
// process's collectors and the binary's build information:
//
//	reg.MustRegister(
//		collectors.NewGoCollector(),
//		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
//		chatprom.NewBuildInfoCollector(),
//	)
package chatprom

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/seedchat/chat"
)

// Collector is a prometheus.Collector reading a Server's Stats at each
// scrape.
type Collector struct {
	srv *chat.Server
}

// NewCollector returns a Collector of srv's statistics.
func NewCollector(srv *chat.Server) *Collector {
	return &Collector{srv: srv}
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("chat_"+name, help, labels, nil)
}

var (
	connsDesc     = desc("connections", "Connections open now.")
	usersDesc     = desc("users_logged_in", "Users logged in through this server now.")
	acceptedDesc  = desc("connections_accepted_total", "Connections served.")
	refusedDesc   = desc("connections_refused_total", "Connections closed at once because the server held its most connections, in all or from one IP address.")
	slowDesc      = desc("slow_consumers_dropped_total", "Connections dropped because writes to them made no progress.")
	floodDesc     = desc("floods_dropped_total", "Connections closed for flooding past the rate limit.")
	timeoutDesc   = desc("timeouts_total", "Connections closed by the login or frame timeout.")
	tooLargeDesc  = desc("frames_too_large_total", "Connections closed after a frame length beyond the limit.")
	framesInDesc  = desc("frames_received_total", "Frames received, by kind.", "kind")
	framesOutDesc = desc("frames_queued_total", "Frames queued for clients, by kind; what is queued for a connection dropped at once is not written.", "kind")
	failuresDesc  = desc("failures_total", "Requests answered Failure, by reason.", "reason")
	relayedDesc   = desc("messages_relayed_total", "Messages queued for their recipient.")
	bytesInDesc   = desc("received_bytes_total", "Bytes read from clients.")
	bytesOutDesc  = desc("sent_bytes_total", "Bytes written to clients.")
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		connsDesc, usersDesc, acceptedDesc, refusedDesc, slowDesc, floodDesc, timeoutDesc, tooLargeDesc,
		framesInDesc, framesOutDesc, failuresDesc, relayedDesc, bytesInDesc, bytesOutDesc,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(connsDesc, float64(st.Conns))
	gauge(usersDesc, float64(st.Users))
	counter(acceptedDesc, st.ConnsAccepted)
	counter(refusedDesc, st.ConnsRefused)
	counter(slowDesc, st.SlowConsumers)
	counter(floodDesc, st.FloodsDropped)
	counter(timeoutDesc, st.TimedOut)
	counter(tooLargeDesc, st.FramesTooLarge)
	for t, v := range st.FramesIn {
		counter(framesInDesc, v, t.String()) // login, list, sendto, logout
	}
	counter(framesInDesc, st.Malformed, "malformed")
	for t, v := range st.FramesOut {
		counter(framesOutDesc, v, strings.ToLower(t.String())) // response, list, sendto
	}
	for reason, v := range st.Failures {
		counter(failuresDesc, v, reason.String())
	}
	counter(relayedDesc, st.Relayed)
	counter(bytesInDesc, st.BytesIn)
	counter(bytesOutDesc, st.BytesOut)
}
