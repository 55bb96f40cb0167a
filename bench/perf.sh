#!/usr/bin/env bash
# The observer effect of the perf backend (issue 13): the pool server's
# throughput under wrk, untraced, under `tracebench trace --backend perf`
# spawned and attached (feeding the analyses of -c and a trace file, as the
# dashboard's consumer does), under `perf record` with the same tracepoints
# and in-kernel filter (it only writes a file), under `perf trace`, and
# under our ptrace backend, side by side in one run; medians of RUNS.
#
#   bash bench/perf.sh                   # ~6 minutes on 2 cores
#   DURATION=3s RUNS=1 bash bench/perf.sh
#
# Needs root (perf_event_open on tracepoints). Installs wrk and
# linux-perf with apt-get if missing. Load goes to 127.0.0.1 only, bounded
# by DURATION. Prints Markdown for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
PORT=${PORT:-18190}
MODE=${MODE:-pool-std}
SET=clone,clone3,futex,accept4
# The same four as syscall numbers, for perf record's filter (x86_64).
FILTER='id == 56 || id == 435 || id == 202 || id == 288'

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v perf >/dev/null 2>&1 || need+=(linux-perf)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ((${#need[@]})); then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --quiet
BIN=$PWD/target/release/tracebench
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
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

server_pid() { pgrep -f "^$BIN serve --mode $MODE --workers 5 --addr 127.0.0.1:$PORT" | head -1; }

# cpu_ticks PID: the user + system clock ticks PID has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# run_case NAME OUT: starts the server the way NAME says, loads it, stops
# it, and prints "req_per_s requests bytes lost tracer_ticks".
# tracer_ticks is the tracer's CPU over the load (0 untraced).
run_case() {
  local name=$1 out=$2 attached=
  rm -f "$out" "$out.err"
  case "$name" in
    untraced) "${SERVER[@]}" >/dev/null & ;;
    tracebench-perf) "$BIN" trace --backend perf -c -e "trace=$SET" --write "$out" -- "${SERVER[@]}" >/dev/null 2>"$out.err" & ;;
    tracebench-perf-attach)
      "${SERVER[@]}" >/dev/null &
      pids+=($!)
      wait_port
      "$BIN" trace --backend perf -c -e "trace=$SET" --write "$out" -p "$(server_pid)" >/dev/null 2>"$out.err" &
      attached=$!
      sleep 0.3 ;;
    tracebench-ptrace) "$BIN" trace -c -e "trace=$SET" --write "$out" -- "${SERVER[@]}" >/dev/null 2>"$out.err" & ;;
    perf-record) perf record -q -o "$out" \
      -e raw_syscalls:sys_enter --filter "$FILTER" -e raw_syscalls:sys_exit --filter "$FILTER" \
      -e sched:sched_switch -e sched:sched_waking -- "${SERVER[@]}" >/dev/null 2>"$out.err" & ;;
    perf-trace) perf trace -e "$SET" -o "$out" -- "${SERVER[@]}" >/dev/null 2>"$out.err" & ;;
  esac
  pids+=($!)
  local first=$!
  wait_port
  local wrk_out rps requests tracer=${attached:-$first} ticks_before ticks=0
  [ "$name" = untraced ] && tracer=
  [ -n "$tracer" ] && ticks_before=$(cpu_ticks "$tracer")
  wrk_out=$(wrk -t1 -c10 -d"$DURATION" -H "Connection: close" "http://127.0.0.1:$PORT/")
  [ -n "$tracer" ] && ticks=$(($(cpu_ticks "$tracer") - ticks_before))
  rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$wrk_out")
  requests=$(awk '/requests in/ { print $1 }' <<<"$wrk_out")
  if [ -n "$attached" ]; then
    kill -INT "$attached"
    wait "$attached" 2>/dev/null || true
  fi
  kill -TERM "$(server_pid)"
  wait "$first" 2>/dev/null || true
  if [ -n "$attached" ]; then wait "${pids[-2]}" 2>/dev/null || true; fi
  local bytes=0 lost=0
  [ -f "$out" ] && bytes=$(stat -c %s "$out")
  [ -f "$out.err" ] && lost=$( (grep -o '[0-9]* events LOST' "$out.err" || true) | awk '{ print $1 }' | head -1)
  echo "$rps $requests $bytes ${lost:-0} $ticks"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "## The perf backend's observer effect, $(date -u +%Y-%m-%d), $(nproc) cores, $MODE server, wrk -t1 -c10 -d$DURATION, Connection: close"
echo
echo "$(perf --version); kernel $(uname -r); syscall set $SET plus the scheduler's events."
cases=(untraced tracebench-perf tracebench-perf-attach perf-record perf-trace tracebench-ptrace)
declare -A rps=() per_request=() lost=() tracer_cpu=()
hz=$(getconf CLK_TCK)
# Each round starts one case later than the previous: on a machine whose
# speed drifts, no case is always the last of its round.
for run in $(seq "$RUNS"); do
  shift_by=$(((run - 1) % ${#cases[@]}))
  order=("${cases[@]:shift_by}" "${cases[@]:0:shift_by}")
  for name in "${order[@]}"; do
    read -r r n b l t < <(run_case "$name" "$work/$name.out")
    rps[$name]+="$r "
    per_request[$name]+="$(awk -v b="$b" -v n="$n" 'BEGIN { printf "%.0f", b / n }') "
    lost[$name]+="$l "
    tracer_cpu[$name]+="$(awk -v t="$t" -v n="$n" -v hz="$hz" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }') "
    echo "  run $run $name: $r req/s, $b bytes for $n requests, $l lost, tracer ${t} ticks" >&2
  done
done
untraced=$(tr ' ' '\n' <<<"${rps[untraced]}" | grep . | median)
record=$(tr ' ' '\n' <<<"${rps[perf-record]}" | grep . | median)
echo
# round_ratio A B: the median over rounds of A's req/s over B's in the
# same round (the machine's drift between rounds cancels out).
round_ratio() {
  awk -v a="${rps[$1]}" -v b="${rps[$2]}" 'BEGIN {
    n = split(a, x, " "); split(b, y, " ")
    for (i = 1; i <= n; i++) r[i] = x[i] / y[i]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
    printf "%.2f", r[int((n + 1) / 2)] }'
}
echo "Ratios: of the medians, and (in brackets) the median over rounds of each round's ratio."
echo
echo "| tracer | req/s (median of $RUNS) | runs | vs untraced | vs perf record | bytes/request | tracer CPU µs/request | events lost |"
echo "|---|---:|---|---:|---:|---:|---:|---|"
for name in "${cases[@]}"; do
  m=$(tr ' ' '\n' <<<"${rps[$name]}" | grep . | median)
  bpr=$(tr ' ' '\n' <<<"${per_request[$name]}" | grep . | median)
  cpu=$(tr ' ' '\n' <<<"${tracer_cpu[$name]}" | grep . | median)
  [ "$name" = untraced ] && bpr="-" && cpu="-"
  ru=$(round_ratio "$name" untraced)
  rs=$(round_ratio "$name" perf-record)
  awk -v n="$name" -v m="$m" -v all="${rps[$name]}" -v u="$untraced" -v s="$record" -v b="$bpr" -v c="$cpu" -v l="${lost[$name]}" -v ru="$ru" -v rs="$rs" \
    'BEGIN { printf "| %s | %d | %s | %.2f× (%s×) | %.2f× (%s×) | %s | %s | %s |\n", n, m, all, m / u, ru, m / s, rs, b, c, l }'
done
