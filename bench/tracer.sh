#!/usr/bin/env bash
# The cost of tracing: the pool server's throughput under wrk, untraced,
# under `tracebench trace` and under strace -f (with and without
# --seccomp-bpf), with the same syscall sets; trace sizes per request; and
# how fast a trace file reads back.
#
#   bash bench/tracer.sh                 # ~8 minutes on 2 cores
#   DURATION=3s RUNS=1 bash bench/tracer.sh
#
# Installs wrk and strace with apt-get if missing. Load goes to 127.0.0.1
# only, bounded by DURATION. Prints Markdown for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
PORT=${PORT:-18180}
MODE=${MODE:-pool-std}

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v strace >/dev/null 2>&1 || need+=(strace)
if ((${#need[@]})); then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --quiet
BIN=$PWD/target/release/tracebench
work=$(mktemp -d)
tracer_pid=
cleanup() {
  [ -n "$tracer_pid" ] && kill -9 "$tracer_pid" 2>/dev/null || true
  pkill -f "serve --addr 127.0.0.1:$PORT" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

SERVER=("$BIN" serve --mode "$MODE" --workers 5 --addr "127.0.0.1:$PORT")

wait_port() {
  for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && return 0
    sleep 0.05
  done
  echo "server did not come up" >&2
  return 1
}

# run_case NAME SET OUTFILE: starts the server the way NAME says, loads it,
# stops the server with SIGTERM, and prints "req_per_s requests bytes".
# With PINNED=1 the server and its tracer run on CPU 1 and wrk on CPU 0.
run_case() {
  local name=$1 set=$2 out=$3 on=() load=()
  if [ "${PINNED:-0}" = 1 ]; then
    on=(taskset -c 1)
    load=(taskset -c 0)
  fi
  rm -f "$out"
  case "$name" in
    untraced) "${on[@]}" "${SERVER[@]}" >/dev/null & ;;
    tracebench) "${on[@]}" "$BIN" trace -e "trace=$set" --write "$out" -- "${SERVER[@]}" >/dev/null 2>&1 & ;;
    tracebench-no-poll-idle) "${on[@]}" "$BIN" trace --no-poll-idle -e "trace=$set" --write "$out" -- "${SERVER[@]}" >/dev/null 2>&1 & ;;
    tracebench-futex-wait) "${on[@]}" "$BIN" trace -e "trace=${set/futex,/}" -e futex=wait --write "$out" -- "${SERVER[@]}" >/dev/null 2>&1 & ;;
    tracebench-text) "${on[@]}" "$BIN" trace -e "trace=$set" -o "$out" -- "${SERVER[@]}" >/dev/null 2>&1 & ;;
    strace) "${on[@]}" strace -f -e "trace=$set" -o "$out" "${SERVER[@]}" >/dev/null 2>&1 & ;;
    strace-seccomp) "${on[@]}" strace -f --seccomp-bpf -e "trace=$set" -o "$out" "${SERVER[@]}" >/dev/null 2>&1 & ;;
    # strace given what tracebench does by default: a CPU latency request
    # of 0 (idle CPUs poll), held by fd 3 for as long as strace runs.
    strace-poll-idle) "${on[@]}" bash -c 'exec 3>/dev/cpu_dma_latency && printf 0 >&3 && exec "$@"' _ \
      strace -f -e "trace=$set" -o "$out" "${SERVER[@]}" >/dev/null 2>&1 & ;;
  esac
  tracer_pid=$!
  wait_port
  local wrk_out rps requests
  wrk_out=$("${load[@]}" wrk -t1 -c10 -d"$DURATION" -H "Connection: close" "http://127.0.0.1:$PORT/")
  rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$wrk_out")
  requests=$(awk '/requests in/ { print $1 }' <<<"$wrk_out")
  # Stop the server itself (the tracer's child, or the process) so it
  # drains and the tracer finishes its file.
  local server
  server=$(pgrep -f "^$BIN serve --mode $MODE --workers 5 --addr 127.0.0.1:$PORT" | head -1)
  kill -TERM "$server"
  wait "$tracer_pid" 2>/dev/null || true
  tracer_pid=
  local bytes=0
  [ -f "$out" ] && bytes=$(stat -c %s "$out")
  echo "$rps $requests $bytes"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "## Tracing cost, $(date -u +%Y-%m-%d), $(nproc) cores, $MODE server, wrk -t1 -c10 -d$DURATION, Connection: close"
echo
echo "$(strace -V | head -1); kernel $(uname -r)."
# tracebench asks idle CPUs to poll while it traces when it may write the
# CPU latency QoS device (root); say which case this run measured.
if [ -w /dev/cpu_dma_latency ]; then
  poll_idle=true
  echo "/dev/cpu_dma_latency is writable: tracebench holds idle CPUs polling while it traces (strace-poll-idle: strace given the same)."
else
  poll_idle=false
  echo "/dev/cpu_dma_latency is not writable: every tracer here runs with idle CPUs halting."
fi
for set in "clone,clone3,futex,accept4" "default" "pinned"; do
  PINNED=0
  if [ "$set" = pinned ]; then
    # The 4-syscall set again, with the server (and its tracer) on CPU 1
    # and wrk on CPU 0: ptrace stops no longer cross CPUs.
    PINNED=1
    trace_set="clone,clone3,futex,accept4"
  elif [ "$set" = default ]; then
    trace_set="clone,clone3,fork,vfork,execve,exit,exit_group,futex,accept,accept4,read,write,recvfrom,sendto,close,nanosleep,clock_nanosleep,poll,epoll_wait"
  else
    trace_set=$set
  fi
  declare -A rps=() per_request=()
  cases=(untraced tracebench tracebench-no-poll-idle tracebench-futex-wait tracebench-text strace strace-seccomp)
  $poll_idle && cases+=(strace-poll-idle)
  for run in $(seq "$RUNS"); do
    for name in "${cases[@]}"; do
      read -r r n b < <(run_case "$name" "$trace_set" "$work/$name.out")
      rps[$name]+="$r "
      per_request[$name]+="$(awk -v b="$b" -v n="$n" 'BEGIN { printf "%.0f", b / n }') "
      echo "  set $set run $run $name: $r req/s, $b bytes for $n requests" >&2
    done
  done
  untraced=$(tr ' ' '\n' <<<"${rps[untraced]}" | grep . | median)
  strace_rps=$(tr ' ' '\n' <<<"${rps[strace]}" | grep . | median)
  echo
  if [ "$set" = pinned ]; then
    echo "### Syscall set: clone,clone3,futex,accept4; server and tracer pinned to CPU 1, wrk to CPU 0"
  else
    echo "### Syscall set: $set"
  fi
  echo
  echo "| tracer | req/s (median of $RUNS) | runs | vs untraced | vs strace -f | trace bytes/request |"
  echo "|---|---:|---|---:|---:|---:|"
  for name in "${cases[@]}"; do
    m=$(tr ' ' '\n' <<<"${rps[$name]}" | grep . | median)
    bpr=$(tr ' ' '\n' <<<"${per_request[$name]}" | grep . | median)
    [ "$name" = untraced ] && bpr="-"
    awk -v n="$name" -v m="$m" -v all="${rps[$name]}" -v u="$untraced" -v s="$strace_rps" -v b="$bpr" \
      'BEGIN { printf "| %s | %d | %s | %.2f× | %.2f× | %s |\n", n, m, all, m / u, m / s, b }'
  done
  unset rps per_request
done

# Reading speed: the last binary trace, read and summarised.
trace_file=$work/tracebench.out
events=$("$BIN" export "$trace_file" --jsonl - | wc -l)
start=$(date +%s.%N)
"$BIN" export "$trace_file" -c >/dev/null
end=$(date +%s.%N)
echo
echo "### Reading a trace file"
echo
awk -v e="$events" -v s="$start" -v t="$end" \
  'BEGIN { printf "%d events read and summarised (`export -c`) in %.3f s: %.2f million events/s.\n", e, t - s, e / (t - s) / 1e6 }'
