#!/bin/bash
# A recipient that stops reading while others chat (BENCHMARKS.md, target 4).
# Build first: go build -o bin/ ./examples/chatserver ./examples/chatbench ./examples/chatclient
# SIZE=4000 for larger texts to the victim.
B=${BIN:-bin}
pkill -f "chatserver -log-level"; sleep 0.5
($B/chatserver -log-level warn 2>${TMPDIR:-/tmp}/iso_srv.log &); sleep 0.5
SP=$(pgrep -f "chatserver -log-level warn")
pairs() { $B/chatbench -clients 20 -mode pairs -window 100 -duration 5s -warmup 1s -server-pid $SP -json -q 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f" % d["msgs_per_sec"])'; }
TEXT=$(printf 'x%.0s' $(seq 1 ${SIZE:-64}))
for run in 1 2 3; do
  rm -f ${TMPDIR:-/tmp}/v.fifo; mkfifo ${TMPDIR:-/tmp}/v.fifo
  ($B/chatclient < ${TMPDIR:-/tmp}/v.fifo > /dev/null 2>&1 &)
  exec 5>${TMPDIR:-/tmp}/v.fifo; echo "login victim$run" >&5
  sleep 0.5
  VP=$(pgrep -n -f "chatclient$")
  ((echo "login flooder$run"; yes "sendto victim$run $TEXT") | $B/chatclient > ${TMPDIR:-/tmp}/flood.out 2>&1 &)
  sleep 1
  base=$(pairs)
  kill -STOP $VP
  sleep 1
  r0=$(awk '/VmRSS/{print $2}' /proc/$SP/status)
  attacked=$(pairs)
  r1=$(awk '/VmRSS/{print $2}' /proc/$SP/status)
  pkill -f "^yes sendto"; sleep 0.3
  kill -CONT $VP; exec 5>&-; sleep 0.3
  echo "run $run: others with a reading victim $base msg/s, with the victim stopped $attacked msg/s ($(python3 -c "print(round(100*($attacked-$base)/$base,1))")%); server RSS during attack $r0 -> $r1 KiB; flooder replies: $(sort ${TMPDIR:-/tmp}/flood.out | uniq -c | tr '\n' ' ')"
done
echo "slow consumers dropped: $(grep -c 'slow consumer' ${TMPDIR:-/tmp}/iso_srv.log)"
pkill -f "chatserver -log-level"
