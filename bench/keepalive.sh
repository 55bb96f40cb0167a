#!/usr/bin/env bash
# Why a blocking pool is slower than an event loop with keep-alive: context
# switches and system calls per request, for each server mode.
#
#   bash bench/keepalive.sh             # 50 000 requests per mode, 3 runs
#   REQUESTS=10000 RUNS=1 bash bench/keepalive.sh
#
# For each mode: the server alone on 127.0.0.1, `tracebench load -n
# REQUESTS -c 5 --keep-alive` against it (bounded in count), context
# switches of every server thread from /proc before and after (medians of
# RUNS), then the same load under `tracebench trace -c` for the system calls
# per request. Prints a Markdown table for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-50000}
RUNS=${RUNS:-3}
PORT=${PORT:-18090}
MODES=${MODES:-"pool-futex pool-std epoll io-uring"}

cargo build --release --quiet
BIN=target/release/tracebench
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT

wait_port() {
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && return 0
    sleep 0.05
  done
  echo "server on port $PORT did not come up" >&2
  return 1
}

# Voluntary and involuntary context switches of every thread of a process.
switches() {
  cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '/^(non)?voluntary_ctxt_switches/ { n += $2 } END { print n + 0 }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

workers_of() { case $1 in pool-*) echo 5 ;; *) echo 1 ;; esac; }

load() {
  "$BIN" load "http://127.0.0.1:$PORT/" -n "$REQUESTS" -c 5 --keep-alive --json >/dev/null
}

echo "## Keep-alive: context switches and system calls per request, $(date -u +%Y-%m-%d), $(nproc) cores"
echo
echo "Kernel $(uname -r); \`tracebench load -n $REQUESTS -c 5 --keep-alive\`; medians of $RUNS runs."
echo
echo "| mode | workers | context switches / request | syscalls / request (trace -c) | futex calls / request | the calls |"
echo "|---|---:|---:|---:|---:|---|"
for mode in $MODES; do
  workers=$(workers_of "$mode")
  per=()
  for _ in $(seq "$RUNS"); do
    "$BIN" serve --mode "$mode" --workers "$workers" --keep-alive --addr "127.0.0.1:$PORT" >/dev/null 2>&1 &
    server_pid=$!
    wait_port
    before=$(switches "$server_pid")
    load
    after=$(switches "$server_pid")
    kill -TERM "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    per+=("$(awk -v d=$((after - before)) -v n="$REQUESTS" 'BEGIN { printf "%.2f", d / n }')")
  done
  ctx=$(printf '%s\n' "${per[@]}" | median)
  summary=$(mktemp)
  "$BIN" trace -c -- "$BIN" serve --mode "$mode" --workers "$workers" --keep-alive \
    --addr "127.0.0.1:$PORT" >/dev/null 2>"$summary" &
  server_pid=$!
  wait_port
  load
  pkill -TERM -f -- "serve --mode $mode --workers $workers --keep-alive --addr 127.0.0.1:$PORT" || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
  # The -c table: calls in column 5, the name last; the top calls by count.
  awk -v n="$REQUESTS" -v mode="$mode" -v workers="$workers" -v ctx="$ctx" '
    /^% time/ { table = 1; next }
    table && /^------/ { if (seen++) table = 0; next }
    table { calls[$NF] = $5; total += $5 }
    END {
      top = ""
      for (k = 0; k < 4; k++) {
        best = ""; max = 0
        for (name in calls) if (calls[name] > max) { max = calls[name]; best = name }
        if (best == "" || max < n / 100) break
        top = top (top == "" ? "" : ", ") sprintf("%s %.2f", best, max / n)
        delete calls[best]
      }
      printf "| %s | %d | %s | %.2f | %.2f | %s |\n", mode, workers, ctx, total / n, futex / n, top
    }
    table && $NF == "futex" { futex = $5 }
  ' "$summary"
  rm -f "$summary"
done
