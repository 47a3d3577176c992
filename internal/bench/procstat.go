package bench

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"strconv"
	"syscall"
	"time"
)

// procSample is a reading of another process's CPU time and memory from
// /proc (Linux).
type procSample struct {
	userS, sysS float64
	rssKiB      int64 // VmRSS
	hwmKiB      int64 // VmHWM, the peak of VmRSS
}

// clockTicks is USER_HZ, the unit of the times in /proc/PID/stat: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

func sampleProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("server process: %w", err)
	}
	// The command name, in parentheses, may hold spaces: the fields that
	// count start after the last ')': state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(stat, ')')
	f := bytes.Fields(stat[i+1:])
	if i < 0 || len(f) < 13 {
		return s, fmt.Errorf("server process: cannot parse /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("server process: cannot parse /proc/%d/stat", pid)
	}
	s.userS, s.sysS = float64(ut)/clockTicks, float64(st)/clockTicks

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("server process: %w", err)
	}
	for _, line := range bytes.Split(status, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(k) {
		case "VmRSS":
			dst = &s.rssKiB
		case "VmHWM":
			dst = &s.hwmKiB
		default:
			continue
		}
		fields := bytes.Fields(v) // "12345 kB"
		if len(fields) > 0 {
			*dst, _ = strconv.ParseInt(string(fields[0]), 10, 64)
		}
	}
	return s, nil
}

// sampleProcs samples each of the processes pids.
func sampleProcs(pids []int) ([]procSample, error) {
	if len(pids) == 0 {
		return nil, nil
	}
	s := make([]procSample, len(pids))
	for i, pid := range pids {
		var err error
		if s[i], err = sampleProc(pid); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// serverUsages sums up the readings of the server processes pids (see
// Config.ServerPIDs), one for each.
func serverUsages(cfg *Config, pids []int, before, start, end []procSample, wall time.Duration) []*ServerUsage {
	if len(pids) == 0 {
		return nil
	}
	addrs, _ := splitAddrs(cfg.Addr) // checked by withDefaults
	if len(pids) == 1 && len(addrs) > 1 {
		// One process for several addresses: charged with all clients.
		u := serverUsage(pids[0], cfg.Clients, before[0], start[0], end[0], wall)
		u.Clients = cfg.Clients
		return []*ServerUsage{u}
	}
	clients := cfg.clientsPerServer(len(addrs)) // one address per PID
	usages := make([]*ServerUsage, len(pids))
	for i, pid := range pids {
		u := serverUsage(pid, clients[i], before[i], start[i], end[i], wall)
		u.Addr, u.Clients = addrs[i], clients[i]
		usages[i] = u
	}
	return usages
}

// serverUsage sums up the server's readings before the clients connected
// (before), when the traffic started (start) and when it ended (end).
func serverUsage(pid, clients int, before, start, end procSample, wall time.Duration) *ServerUsage {
	u := &ServerUsage{
		PID:          pid,
		CPUUserS:     round(end.userS-start.userS, 2),
		CPUSysS:      round(end.sysS-start.sysS, 2),
		RSSBeforeKiB: before.rssKiB,
		RSSAfterKiB:  end.rssKiB,
		RSSPeakKiB:   end.hwmKiB,
	}
	u.CPUS = round(u.CPUUserS+u.CPUSysS, 2)
	if wall > 0 {
		u.CPUPercent = round(100*u.CPUS/wall.Seconds(), 1)
	}
	if clients > 0 {
		u.RSSPerClientKiB = round(float64(end.rssKiB-before.rssKiB)/float64(clients), 2)
	}
	return u
}

// cpuTime returns the CPU time this process has used so far.
func cpuTime() (user, sys float64) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime), tv(ru.Stime)
}

// fileSpare is the open files a process of the load needs beside its
// clients' connections: standard streams, the runtime's, a LIST connection.
const fileSpare = 32

// checkFileLimit reports an error if this process may not open conns
// connections: its open-file limit (RLIMIT_NOFILE, whose soft limit the Go
// runtime raises to the hard one at start) is too low. Without the check
// the load would fail part way through connecting, with EMFILE.
func checkFileLimit(conns int) error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == math.MaxUint64 {
		return nil // no limit known
	}
	if uint64(conns)+fileSpare <= rl.Cur {
		return nil
	}
	perProc := max(int64(rl.Cur)-fileSpare, 1)
	return fmt.Errorf("%d connections in one process exceed its open-file limit of %d: spread the clients over at least %d processes (Config.Procs, chatbench -procs)",
		conns, rl.Cur, (int64(conns)+perProc-1)/perProc)
}
