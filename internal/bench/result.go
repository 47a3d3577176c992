package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what a load measured. Counts cover all processes.
type Result struct {
	Clients int     `json:"clients"`
	Mode    Mode    `json:"mode"`
	Size    int     `json:"size"`
	Window  int     `json:"window"`
	Rate    float64 `json:"rate"`  // per client; 0 is as fast as possible
	Procs   int     `json:"procs"` // processes holding the clients

	ConnectS  float64 `json:"connect_s"`  // connecting and logging in every client
	DurationS float64 `json:"duration_s"` // the measured time, after any warm-up

	Sent      uint64 `json:"sent"`      // sendto requests, warm-up included
	OK        uint64 `json:"ok"`        // of them, answered Success
	Failures  uint64 `json:"failures"`  // answered Failure
	Malformed uint64 `json:"malformed"` // answered Malformed packet

	// Delivered counts the messages the recipients received that were
	// sent in the measured time; DeliveredTotal counts them all.
	Delivered      uint64 `json:"delivered"`
	DeliveredTotal uint64 `json:"delivered_total"`

	// Tally says, message by message, whether what the senders were told
	// agrees with what the recipients received: failed_delivered,
	// ok_undelivered, duplicates.
	Tally

	// RoundTrips counts the measured round trips of PingPong.
	RoundTrips uint64 `json:"round_trips,omitempty"`

	MsgsPerSec       float64 `json:"msgs_per_sec"`                  // Delivered per second
	MBPerSec         float64 `json:"mb_per_sec"`                    // text delivered, 10^6 bytes per second
	RoundTripsPerSec float64 `json:"round_trips_per_sec,omitempty"` // PingPong

	// LatencyKind says what Latency measures: "delivery" (from the
	// sender's write to the recipient's read) or "round_trip" (PingPong).
	LatencyKind  string  `json:"latency_kind"`
	Latency      Latency `json:"latency_us"`
	LatencyCount int64   `json:"latency_count"` // values in the histogram

	// The generator's own CPU time while the load ran, children included.
	CPUUserS float64 `json:"cpu_user_s"`
	CPUSysS  float64 `json:"cpu_sys_s"`

	// Servers is what /proc says of each server of Config.ServerPIDs, in
	// their order; empty without them.
	Servers []*ServerUsage `json:"servers,omitempty"`

	// List is Idle mode's list request at the end; nil without one.
	List *ListResult `json:"list,omitempty"`
}

// ServerUsage is the server process's CPU time over the run and its
// resident memory, from /proc.
type ServerUsage struct {
	PID int `json:"pid"`
	// Addr and Clients are the server's address and the clients that
	// connected to it; Addr is empty when one PID stands for several
	// addresses, and Clients is then all the clients.
	Addr     string  `json:"addr,omitempty"`
	Clients  int     `json:"clients,omitempty"`
	CPUUserS float64 `json:"cpu_user_s"` // over the run (from start of traffic to its end)
	CPUSysS  float64 `json:"cpu_sys_s"`
	CPUS     float64 `json:"cpu_s"` // user + sys
	// CPUPercent is CPUS over the run's wall time, 100 per busy core.
	CPUPercent float64 `json:"cpu_percent"`

	RSSBeforeKiB int64 `json:"rss_before_kib"` // VmRSS before the clients connected
	RSSAfterKiB  int64 `json:"rss_after_kib"`  // VmRSS at the end, clients still logged in
	RSSPeakKiB   int64 `json:"rss_peak_kib"`   // VmHWM at the end

	// RSSPerClientKiB is the growth of VmRSS divided by the clients (of
	// this server, when there are several).
	RSSPerClientKiB float64 `json:"rss_per_client_kib"`
}

// ListResult is the outcome of Idle mode's list request.
type ListResult struct {
	Names int     `json:"names"` // names in the LIST reply
	MS    float64 `json:"ms"`    // from sending the request to reading the whole reply
	Error string  `json:"error,omitempty"`
}

// part is the result of one process, with its histogram.
type part struct {
	Result
	Hist string                  `json:"hist,omitempty"` // hist, encoded, from a child
	hist *hdrhistogram.Histogram // nanoseconds
	Acct []byte                  `json:"acct,omitempty"` // acct, encoded, from a child
	acct *accounts
}

// encode puts p's histogram into Hist and its accounts into Acct, for a
// child's report.
func (p *part) encode() error {
	if p.acct != nil {
		b, err := p.acct.encode()
		if err != nil {
			return fmt.Errorf("encoding the accounts: %w", err)
		}
		p.Acct = b
	}
	if p.hist == nil {
		return nil
	}
	h, err := p.hist.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return fmt.Errorf("encoding the histogram: %w", err)
	}
	p.Hist = string(h)
	return nil
}

// decode takes p's histogram and accounts back out of Hist and Acct,
// from a child's report.
func (p *part) decode() error {
	if p.Acct != nil {
		a, err := decodeAccounts(p.Acct)
		if err != nil {
			return err
		}
		p.acct, p.Acct = a, nil
	}
	if p.Hist == "" {
		return nil
	}
	h, err := hdrhistogram.Decode([]byte(p.Hist))
	if err != nil {
		return fmt.Errorf("decoding the histogram: %w", err)
	}
	p.hist, p.Hist = h, ""
	return nil
}

// merge sums the parts of a load into one Result.
func merge(cfg *Config, parts []*part) *Result {
	r := &Result{
		Mode:        cfg.Mode,
		Size:        cfg.Size,
		Window:      cfg.Window,
		Rate:        cfg.Rate,
		Procs:       len(parts),
		LatencyKind: "delivery",
	}
	if cfg.Mode == PingPong {
		r.LatencyKind = "round_trip"
	}
	h := newHistogram()
	for _, p := range parts {
		r.Clients += p.Clients
		r.DurationS = max(r.DurationS, p.DurationS)
		r.Sent += p.Sent
		r.OK += p.OK
		r.Failures += p.Failures
		r.Malformed += p.Malformed
		r.Delivered += p.Delivered
		r.DeliveredTotal += p.DeliveredTotal
		r.RoundTrips += p.RoundTrips
		r.CPUUserS += p.CPUUserS
		r.CPUSysS += p.CPUSysS
		if p.hist != nil {
			h.Merge(p.hist)
		}
	}
	r.Tally = tally(r.Clients, parts)
	if r.DurationS > 0 {
		r.MsgsPerSec = round(float64(r.Delivered)/r.DurationS, 1)
		r.MBPerSec = round(float64(r.Delivered)*float64(r.Size)/1e6/r.DurationS, 2)
		if cfg.Mode == PingPong {
			r.RoundTripsPerSec = round(float64(r.RoundTrips)/r.DurationS, 1)
		}
	}
	r.DurationS = round(r.DurationS, 6)
	r.Latency = summarize(h)
	r.LatencyCount = h.TotalCount()
	return r
}

func round(x float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Round(x*p) / p
}

// WriteJSON writes r as one indented JSON object, the output of chatbench
// -json: clients, mode, size, window, duration_s, delivered, msgs_per_sec,
// mb_per_sec, failures and latency_us (p50, p90, p99, p999, max) among
// the fields of Result.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes r as a two-column table for people.
func (r *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	procs := "process"
	if r.Procs != 1 {
		procs = "processes"
	}
	row("mode", "%s", r.Mode)
	row("clients", "%d in %d %s (connected in %.2f s)", r.Clients, r.Procs, procs, r.ConnectS)
	if r.Mode != Idle {
		rate := "as fast as possible"
		if r.Rate > 0 {
			rate = fmt.Sprintf("%g msg/s per client", r.Rate)
		}
		row("load", "%d-byte texts, window %d, %s", r.Size, r.Window, rate)
		row("duration", "%.3f s", r.DurationS)
		row("sent", "%s (ok %s, failures %s, malformed %s)", group(r.Sent), group(r.OK), group(r.Failures), group(r.Malformed))
		row("delivered", "%s measured, %s in all", group(r.Delivered), group(r.DeliveredTotal))
		t := r.Tally
		acct := fmt.Sprintf("failed_delivered %s, ok_undelivered %s, duplicates %s", group(t.FailedDelivered), group(t.OKUndelivered), group(t.Duplicates))
		if t.UnansweredDelivered != 0 {
			acct += fmt.Sprintf(", delivered unanswered %s", group(t.UnansweredDelivered))
		}
		if t.Strays != 0 {
			acct += fmt.Sprintf(", strays %s", group(t.Strays))
		}
		row("accounting", "%s", acct)
		row("throughput", "%s msg/s, %.2f MB/s", group(uint64(r.MsgsPerSec)), r.MBPerSec)
		if r.Mode == PingPong {
			row("round trips", "%s (%s/s)", group(r.RoundTrips), group(uint64(r.RoundTripsPerSec)))
		}
		l := r.Latency
		row(strings.ReplaceAll(r.LatencyKind, "_", " ")+" µs", "p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (%s values)", l.P50, l.P90, l.P99, l.P999, l.Max, group(uint64(r.LatencyCount)))
	}
	row("chatbench cpu", "user %.2f s, sys %.2f s", r.CPUUserS, r.CPUSysS)
	serverRows := func(name string, s *ServerUsage) {
		row(name+" cpu", "user %.2f s, sys %.2f s (%.0f%% of one core)", s.CPUUserS, s.CPUSysS, s.CPUPercent)
		row(name+" rss", "%s KiB before, %s KiB after (%.2f KiB per client), peak %s KiB", group(uint64(s.RSSBeforeKiB)), group(uint64(s.RSSAfterKiB)), s.RSSPerClientKiB, group(uint64(s.RSSPeakKiB)))
	}
	if len(r.Servers) == 1 {
		serverRows("server", r.Servers[0])
	}
	if len(r.Servers) > 1 {
		var user, sys, pct float64
		pids := make(map[int]bool)
		for i, s := range r.Servers {
			name := fmt.Sprintf("server %d", i+1)
			row(name, "%s, pid %d, %s clients", s.Addr, s.PID, group(uint64(s.Clients)))
			serverRows(name, s)
			user, sys, pct = user+s.CPUUserS, sys+s.CPUSysS, pct+s.CPUPercent
			pids[s.PID] = true
		}
		if len(pids) == len(r.Servers) { // not one process counted twice
			row("servers cpu", "in all: user %.2f s, sys %.2f s (%.0f%% of one core)", user, sys, pct)
		}
	}
	if l := r.List; l != nil {
		if l.Error != "" {
			row("list", "failed after %.2f ms: %s", l.MS, l.Error)
		} else {
			row("list", "%d names in %.2f ms", l.Names, l.MS)
		}
	}
	return tw.Flush()
}

// group formats n with thousands separators.
func group(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
