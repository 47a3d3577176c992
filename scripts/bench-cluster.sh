#!/bin/bash
# Three chat nodes through NATS, 45,000 clients, against one server
# (BENCHMARKS.md, "Scale out"). Build first:
#   go build -o bin/ ./examples/chatserver ./examples/chatbench
#   go install github.com/nats-io/nats-server/v2@v2.15.2
#
#   scripts/bench-cluster.sh search   # each of RATES (msg/s in all) once, 3 nodes
#   scripts/bench-cluster.sh          # RATE and 2 x RATE on 3 nodes, RATE on one server, RUNS rounds
#   scripts/bench-cluster.sh idle     # memory per idle connection, one server and 3 nodes
#
# Every run starts fresh servers: `chatbench -mode pairs -window 8 -rate R
# -duration $DUR -warmup 5s`, 45,000 clients in 6 load processes on three
# nodes (15,000 each; the two clients of a pair on different nodes, so every
# message crosses NATS), 15,000 clients in 2 processes on one server. Each
# run prints one line: offered and delivered msg/s, Failure, the exact
# accounting (failed_delivered must be 0; ok_undelivered), latency, and the
# CPU per delivered message of the chat servers and of nats-server, sampled
# from /proc at chatbench's progress lines over the measured time (after
# the warm-up), divided by the delivered rate.
set -u
B=${BIN:-bin}; N=${NATS_BIN:-$HOME/go/bin}; RUNS=${RUNS:-3}; DUR=${DUR:-30s}
CLIENTS=${CLIENTS:-45000}; PROCS=${PROCS:-6}; CLIENTS1=${CLIENTS1:-15000}; PROCS1=${PROCS1:-2}
RATE=${RATE:-45000}; RATES=${RATES:-15000 30000 45000 60000}
PORT=${PORT:-9100}; NATS_PORT=${NATS_PORT:-4222}
OUT=${OUT:-/tmp/bench-cluster}; mkdir -p $OUT
STARTED=()
stop_all() { # SIGKILL, by PID: a graceful stop of 45,000 users takes a while
  local p
  for p in "${STARTED[@]}"; do kill -9 $p 2>/dev/null; done
  for p in "${STARTED[@]}"; do wait $p 2>/dev/null; done
  STARTED=()
}
trap stop_all EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; }
servers() { # $1 = number of servers; $2 = with NATS (1) or not (0)
  stop_all; rm -rf $OUT/js
  local nats="" node="" i
  NATS_PID=""
  if [ "$2" = 1 ]; then
    $N/nats-server -js -sd $OUT/js -a 127.0.0.1 -p $NATS_PORT >$OUT/nats.log 2>&1 &
    NATS_PID=$!; STARTED+=($!); wait_port $NATS_PORT
    nats="-nats nats://127.0.0.1:$NATS_PORT"
  fi
  ADDRS=""; PIDS=""
  for i in $(seq 1 $1); do
    [ "$2" = 1 ] && node="-node-name n$i"
    $B/chatserver -addr 127.0.0.1:$((PORT + i)) -log-level warn $nats $node >$OUT/server$i.log 2>&1 &
    STARTED+=($!); PIDS="$PIDS,$!"; ADDRS="$ADDRS,127.0.0.1:$((PORT + i))"
    wait_port $((PORT + i))
  done
  ADDRS=${ADDRS#,}; PIDS=${PIDS#,}
}
# sample PIDS...: reads chatbench's progress lines on stdin and, at each,
# the CPU time of the processes; prints the cores each used from the first
# line after the warm-up to the last line.
SAMPLE='
import sys, time
pids = sys.argv[1:]
def cpu(pid):
    f = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0
first = last = None
for line in sys.stdin:
    if not line.startswith("chatbench:") or "msg/s" not in line:
        sys.stderr.write(line); continue
    if "warm-up" in line: continue
    s = (time.monotonic(), [cpu(p) for p in pids])
    first = first or s; last = s
if first and last[0] > first[0]:
    dt = last[0] - first[0]
    print(" ".join("%.4f" % ((b - a) / dt) for a, b in zip(first[1], last[1])), "%.1f" % dt)
'
# run LABEL SERVERS NATS CLIENTS PROCS RATE: one run, one line in $OUT/results
run() {
  local label=$1 n=$2 nats=$3 clients=$4 procs=$5 rate=$6
  servers $n $nats
  local per; per=$(python3 -c "print($rate / $clients)")
  local tag=$OUT/$label.$(date +%H%M%S)
  $B/chatbench -addr $ADDRS -server-pid $PIDS -clients $clients -procs $procs \
    -mode pairs -window 8 -rate $per -duration $DUR -warmup 5s -json \
    2>&1 >$tag.json | python3 -c "$SAMPLE" ${PIDS//,/ } $NATS_PID >$tag.cores
  python3 - $label $rate $tag.json $tag.cores "$(uptime | sed 's/.*load average: //')" <<'PY' | tee -a $OUT/results
import json, sys
label, rate, res, cores, load = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
r = json.load(open(res))
c = open(cores).read().split()
nats = len(c) - 1 - len(r["servers"])  # the last is the window
srv = sum(float(x) for x in c[:len(r["servers"])])
nc = float(c[len(r["servers"])]) if nats else 0.0
d = r["msgs_per_sec"]
us = lambda cores: cores / d * 1e6 if d else 0
fail = r["failures"] / r["sent"] * 100 if r["sent"] else 0
print(f'{label} offered {rate:.0f} delivered {d:.0f} failure% {fail:.3f} '
      f'sent {r["sent"]} ok {r["ok"]} failures {r["failures"]} '
      f'failed_delivered {r.get("failed_delivered", "-")} ok_undelivered {r.get("ok_undelivered", "-")} duplicates {r.get("duplicates", "-")} '
      f'p50_ms {r["latency_us"]["p50"]/1000:.2f} p99_ms {r["latency_us"]["p99"]/1000:.1f} '
      f'servers_cores {srv:.3f} nats_cores {nc:.3f} servers_us_per_msg {us(srv):.1f} nats_us_per_msg {us(nc):.1f} '
      f'total_us_per_msg {us(srv + nc):.1f} rss_kib_per_client {max(s["rss_per_client_kib"] for s in r["servers"]):.1f} '
      f'connect_s {r["connect_s"]} window_s {c[-1]} load {load.replace(" ", "")}')
PY
}
summary() {
  python3 - $OUT/results <<'PY'
import sys, statistics, collections
v = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    f = line.split(); label = f[0]
    for k, x in zip(f[1::2], f[2::2]):
        try: v[label][k].append(float(x))
        except ValueError: pass
keys = ["delivered", "failure%", "failed_delivered", "ok_undelivered", "p50_ms", "p99_ms",
        "servers_us_per_msg", "nats_us_per_msg", "total_us_per_msg"]
print("\nmedian [min-max] of each label's runs:")
for label, m in v.items():
    print(label, "(%d runs)" % len(m["delivered"]))
    for k in keys:
        x = m[k]
        print("  %-20s %10.3f  [%.3f-%.3f]" % (k, statistics.median(x), min(x), max(x)))
PY
}
case ${1:-} in
search)
  for r in $RATES; do run cluster-$r 3 1 $CLIENTS $PROCS $r; done ;;
idle)
  for r in $(seq 1 $RUNS); do
    servers 1 0; $B/chatbench -addr $ADDRS -server-pid $PIDS -clients $CLIENTS1 -procs $PROCS1 -mode idle -list -duration 5s -q | tee $OUT/idle-single.$r.txt
    servers 3 1; $B/chatbench -addr $ADDRS -server-pid $PIDS -clients $CLIENTS -procs $PROCS -mode idle -list -duration 5s -q | tee $OUT/idle-cluster.$r.txt
  done ;;
*)
  for r in $(seq 1 $RUNS); do
    echo "== round $r"
    run cluster-$RATE 3 1 $CLIENTS $PROCS $RATE
    run cluster-$((2 * RATE)) 3 1 $CLIENTS $PROCS $((2 * RATE))
    run single-$RATE 1 0 $CLIENTS1 $PROCS1 $RATE
  done
  summary ;;
esac
stop_all
