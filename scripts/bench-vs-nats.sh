#!/bin/bash
# Throughput and latency, ours and NATS, interleaved, 3 runs each (BENCHMARKS.md, targets 1 and 2).
# Build first: go build -o bin/ ./examples/chatserver ./examples/chatbench
set -u
B=${BIN:-bin}; N=${NATS_BIN:-$HOME/go/bin}; export NATS_URL=nats://127.0.0.1:4222
pkill -f "chatserver -addr 127.0.0.1:9000"; pkill nats-server; sleep 0.5
($B/chatserver -log-level warn >/dev/null 2>&1 &)
($N/nats-server -a 127.0.0.1 -p 4222 >/dev/null 2>&1 &)
sleep 1
SP=$(pgrep -f "chatserver -log-level warn")
jq_ours() { python3 -c 'import json,sys; d=json.load(sys.stdin); l=d["latency_us"]; print("msgs/s %.0f  p50 %.1f p90 %.1f p99 %.1f p999 %.1f max %.1f failures %d srvcpu %.0f%%" % (d["msgs_per_sec"], l["p50"], l["p90"], l["p99"], l["p999"], l["max"], d["failures"], (d.get("server") or {}).get("cpu_percent",0)))'; }
nats_pairs() { # $1 = pairs
  local n=$1 msgs=$2; rm -f ${TMPDIR:-/tmp}/nsub.*
  for i in $(seq 1 $n); do ($N/nats bench sub P$i --msgs $msgs --size 64 --no-progress > ${TMPDIR:-/tmp}/nsub.$i 2>&1 &); done
  sleep 1
  for i in $(seq 1 $n); do ($N/nats bench pub P$i --msgs $msgs --size 64 --no-progress > ${TMPDIR:-/tmp}/npub.$i 2>&1 &); done
  while pgrep -f "nats bench" >/dev/null; do sleep 0.2; done
  cat ${TMPDIR:-/tmp}/nsub.* | grep -o "subscriber stats: [0-9,]* msgs/sec" | awk '{gsub(",","",$3); s+=$3} END {printf "nats %d pairs: %.0f msgs/s (sum of subscribers)\n", '$n', s}'
}
for run in 1 2 3; do
  echo "== run $run"
  echo -n "ours 1 pair w1000: "; $B/chatbench -clients 2 -mode pairs -window 1000 -duration 5s -warmup 1s -server-pid $SP -json -q 2>/dev/null | jq_ours
  nats_pairs 1 5000000
  echo -n "ours 10 pairs w100: "; $B/chatbench -clients 20 -mode pairs -window 100 -duration 5s -warmup 1s -server-pid $SP -json -q 2>/dev/null | jq_ours
  nats_pairs 10 1000000
  echo -n "ours pingpong: "; $B/chatbench -clients 2 -mode pingpong -duration 5s -warmup 1s -server-pid $SP -json -q 2>/dev/null | jq_ours
  ($N/nats bench service serve S1 --msgs 100000000 --size 64 --no-progress > /dev/null 2>&1 &); sleep 0.5
  echo -n "nats request-reply: "; $N/nats bench service request S1 --msgs 30000 --size 64 --no-progress 2>&1 | grep -o "P50.*P99.9: [0-9.,]*us"
  pkill -f "bench service serve"; sleep 0.3
done
pkill -f "chatserver -log-level warn"; pkill nats-server
