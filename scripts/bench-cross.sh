#!/bin/bash
# Cross-node delivery against one server, in one run, alternating rounds
# (BENCHMARKS.md, "Across nodes"). Prints each round and the medians, and the
# cross-node/one-server ratios. Build first:
#   go build -o bin/ ./examples/chatserver ./examples/chatbench
#   go install github.com/nats-io/nats-server/v2@v2.15.2
# BIN2 names a second build to compare (before/after), run in the same rounds.
set -u
B=${BIN:-bin}; B2=${BIN2:-}; N=${NATS_BIN:-$HOME/go/bin}; RUNS=${RUNS:-3}; DUR=${DUR:-10s}
OUT=${OUT:-/tmp/bench-cross}; mkdir -p $OUT
stop_all() {
  pkill -f "chatserver -addr 127.0.0.1:92"; pkill -f "nats-server -js -sd $OUT"
  while pgrep -f "chatserver -addr 127.0.0.1:92|nats-server -js -sd $OUT" >/dev/null; do sleep 0.1; done
}
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; }
start() { # $1 = bin dir, $2 = 1 (one server) or 2 (two nodes through NATS)
  stop_all; rm -rf $OUT/js; ADDRS=""; PIDS=""; local nats="" NODE=""
  if [ "$2" = 2 ]; then
    ($N/nats-server -js -sd $OUT/js -a 127.0.0.1 -p 4322 >$OUT/nats.log 2>&1 &); wait_port 4322
    nats="-nats nats://127.0.0.1:4322"; NODE=1
  fi
  for i in $(seq 1 $2); do
    ($1/chatserver -addr 127.0.0.1:920$i -log-level warn $nats ${NODE:+-node-name n$i} >$OUT/server$i.log 2>&1 &)
    wait_port 920$i; ADDRS="$ADDRS,127.0.0.1:920$i"; PIDS="$PIDS,$(pgrep -f "chatserver -addr 127.0.0.1:920$i")"
  done
  ADDRS=${ADDRS#,}; PIDS=${PIDS#,}
}
ticks() { # CPU time of process $1 so far, in clock ticks (user + system)
  awk '{print $14 + $15}' /proc/$1/stat 2>/dev/null || echo 0
}
# $1 label, $2 bin, $3 servers, $4.. chatbench flags; appends "label value" lines to
# $OUT/results, and for throughput runs "label.cpu µs" (servers' and NATS's CPU time
# per message delivered, warm-up included)
measure() {
  local label=$1 bin=$2 n=$3; shift 3
  start $bin $n
  local np; np=$(pgrep -f "nats-server -js -sd $OUT" || true)
  local t0=0; [ -n "$np" ] && t0=$(ticks $np)
  local out; out=$($B/chatbench -addr $ADDRS -server-pid $PIDS -json -q "$@" 2>>$OUT/bench.err)
  local t1=0; [ -n "$np" ] && t1=$(ticks $np)
  echo "$out" | python3 -c '
import json, os, sys
r = json.load(sys.stdin); label, m, nats = sys.argv[1], sys.argv[2], (int(sys.argv[4]) - int(sys.argv[3])) / os.sysconf("SC_CLK_TCK")
print(label, r["latency_us"]["p50"] if m == "p50" else r["msgs_per_sec"])
if m != "p50":
    cpu = sum(s["cpu_s"] for s in r.get("servers") or []) + nats
    print(label + ".cpu", 1e6 * cpu / max(r["delivered_total"], 1))
' "$label" "$MEASURE" $t0 $t1 | tee -a $OUT/results
}
: >$OUT/results
for r in $(seq 1 $RUNS); do
  echo "== round $r"
  for b in $B $B2; do
    tag=$([ "$b" = "$B" ] && echo new || echo old)
    MEASURE=rate measure "$tag.pairs20.one" $b 1 -mode pairs -clients 20 -window 100 -size 64 -duration $DUR -warmup 2s
    MEASURE=rate measure "$tag.pairs20.two" $b 2 -mode pairs -clients 20 -window 100 -size 64 -duration $DUR -warmup 2s
    MEASURE=rate measure "$tag.pair1k.one" $b 1 -mode pairs -clients 2 -window 1000 -size 64 -duration $DUR -warmup 2s
    MEASURE=rate measure "$tag.pair1k.two" $b 2 -mode pairs -clients 2 -window 1000 -size 64 -duration $DUR -warmup 2s
    MEASURE=p50 measure "$tag.pingpong.one" $b 1 -mode pingpong -clients 2 -size 64 -duration $DUR -warmup 2s
    MEASURE=p50 measure "$tag.pingpong.two" $b 2 -mode pingpong -clients 2 -size 64 -duration $DUR -warmup 2s
  done
done
stop_all
python3 - $OUT/results <<'PY'
import sys, statistics, collections
v = collections.defaultdict(list)
for line in open(sys.argv[1]):
    k, x = line.split(); v[k].append(float(x))
med = {k: statistics.median(x) for k, x in v.items()}
print("\nmedians of %d rounds:" % max(len(x) for x in v.values()))
for k in sorted(med): print("  %-26s %12.2f   %s" % (k, med[k], " ".join("%.2f" % x for x in v[k])))
for tag in ("new", "old"):
    for t in ("pairs20", "pair1k", "pingpong"):
        a, b = med.get(tag + "." + t + ".two"), med.get(tag + "." + t + ".one")
        if a and b: print("%s %-9s cross-node/one-server ratio: %.3f" % (tag, t, a / b))
PY
