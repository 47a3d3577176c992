#!/bin/bash
# A cluster of three chat servers through NATS against one server
# (BENCHMARKS.md, "Scale out"). Build first:
#   go build -o bin/ ./examples/chatserver ./examples/chatbench
#   go install github.com/nats-io/nats-server/v2@v2.15.2
# Each configuration runs RUNS times (3 by default), each on fresh servers.
set -u
B=${BIN:-bin}; N=${NATS_BIN:-$HOME/go/bin}; RUNS=${RUNS:-3}; DUR=${DUR:-30s}
OUT=${OUT:-/tmp/bench-cluster}; mkdir -p $OUT
stop_all() { # SIGKILL: a graceful stop of 45,000 users takes a while
  pkill -9 -f "chatserver -addr 127.0.0.1:91"; pkill -f "nats-server -js -sd $OUT"
  while pgrep -f "chatserver -addr 127.0.0.1:91|nats-server -js -sd $OUT" >/dev/null; do sleep 0.2; done
}
servers() { # $1 = number of servers; $2 = with NATS (1) or not (0)
  stop_all; rm -rf $OUT/js
  local nats=""
  if [ "$2" = 1 ]; then
    ($N/nats-server -js -sd $OUT/js -a 127.0.0.1 -p 4222 >$OUT/nats.log 2>&1 &); sleep 1
    nats="-nats nats://127.0.0.1:4222"
  fi
  ADDRS=""; PIDS=""
  for i in $(seq 1 $1); do
    ($B/chatserver -addr 127.0.0.1:910$i -log-level warn $nats >$OUT/server$i.log 2>&1 &)
    ADDRS="$ADDRS,127.0.0.1:910$i"
  done
  sleep 1
  for i in $(seq 1 $1); do PIDS="$PIDS,$(pgrep -f "chatserver -addr 127.0.0.1:910$i")"; done
  ADDRS=${ADDRS#,}; PIDS=${PIDS#,}
}
run() { # $1 = label, $2 = servers, $3 = NATS, $4 = clients, $5 = procs, $6 = rate per client (idle: 0)
  local mode="-mode pairs -window 8 -rate $6 -duration $DUR -warmup 5s"
  [ "$6" = 0 ] && mode="-mode idle -list"
  for r in $(seq 1 $RUNS); do
    servers $2 $3
    echo "== $1 run $r: $4 clients on $2 server(s), $6 msg/s each"
    $B/chatbench -addr $ADDRS -server-pid $PIDS -clients $4 -procs $5 $mode -q 2>&1 | tee $OUT/$1.$r.txt
  done
}
run single-15k-1     1 0 15000 2 1       # one server, 15,000 clients, 15,000 msg/s
run cluster-45k-0.33 3 1 45000 6 0.3333  # three nodes, 45,000 clients, the same 15,000 msg/s in all
run cluster-45k-0.67 3 1 45000 6 0.6667  # three nodes, 45,000 clients, 30,000 msg/s in all
run cluster-45k-1    3 1 45000 6 1       # three nodes, 45,000 clients, 45,000 msg/s: past this machine
run single-idle-15k  1 0 15000 2 0       # memory per connection, idle, one server
run cluster-idle-45k 3 1 45000 6 0       # memory per connection, idle, three nodes
stop_all
