#!/usr/bin/env bash
# Side-by-side throughput of `tracebench serve` against nginx, under wrk.
#
#   bash bench/server.sh            # full run (~6 minutes on 2 cores)
#   DURATION=3s RUNS=1 bash bench/server.sh   # a quick look
#   CASES="Two workers" bash bench/server.sh   # only the cases whose title has this
#   SERVERS="nginx+deferred io-uring" bash bench/server.sh   # only these servers, by
#                                   # their exact names (io-uring:2 is another); a case
#                                   # left with one is skipped; ratios to the first
#                                   # when the case's peer is left out
#   BIN_B=/tmp/old/tracebench CASES=capped SERVERS="io-uring io-uring@b" bash bench/server.sh
#                                   # A/B: every tracebench server also as NAME@b, run from BIN_B
#
# Installs wrk and nginx with apt-get if they are missing. Every server
# listens on 127.0.0.1 only; every wrk run is bounded by DURATION. Prints a
# Markdown report (medians of RUNS runs in rotated order, ratios to nginx
# of the medians and round by round, server CPU per
# request, idle CPU per mode) on stdout; paste it into docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
IDLE_SECONDS=${IDLE_SECONDS:-2}
CASES=${CASES:-all}
SERVERS=${SERVERS:-all}
PORT=${PORT:-18080}
TICKS=$(getconf CLK_TCK)

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if ((${#need[@]})); then
  echo "installing ${need[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/tracebench
work=$(mktemp -d)
server_pid=
capped=
enabled_cpu=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  [ -n "$server_pid" ] && wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
  remove_capped
}
trap cleanup EXIT

# wrk's pipelining, as TechEmpower's plaintext test does it: each write
# carries DEPTH requests (the argument after --).
cat >"$work/pipeline.lua" <<'LUA'
init = function(args)
  local depth = tonumber(args[1]) or 16
  local batch = {}
  for i = 1, depth do batch[i] = wrk.format(nil, "/") end
  req = table.concat(batch)
end
request = function() return req end
LUA

# CPU ticks (user + system) used so far by processes and all their threads.
cpu_ticks() {
  local pid total=0
  for pid in "$@"; do
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
  done
  echo "$total"
}

wait_port() {
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && return 0
    sleep 0.05
  done
  echo "server on port $PORT did not come up" >&2
  return 1
}

# make_capped PERCENT: a cgroup whose processes get at most PERCENT of one
# CPU (a CFS quota: cgroup v2's cpu.max, or v1's cpu controller); sets
# `capped` to its directory. Servers started while `cap` is set join it
# before they exec.
CAP_PERCENT=${CAP_PERCENT:-50}
CAP2_PERCENT=${CAP2_PERCENT:-60}
make_capped() {
  local name=tracebench-bench-$$ percent=$1
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    if ! grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control; then
      # Refused (EBUSY) where /sys/fs/cgroup is a container's own root.
      echo +cpu >/sys/fs/cgroup/cgroup.subtree_control || return 1
      enabled_cpu=1
    fi
    capped=/sys/fs/cgroup/$name
    mkdir "$capped" || return 1
    echo "$((percent * 1000)) 100000" >"$capped/cpu.max" || return 1
  elif [ -d /sys/fs/cgroup/cpu ]; then
    capped=/sys/fs/cgroup/cpu/$name
    mkdir "$capped" || return 1
    echo 100000 >"$capped/cpu.cfs_period_us" || return 1
    echo "$((percent * 1000))" >"$capped/cpu.cfs_quota_us" || return 1
  else
    echo "no cgroup cpu controller to cap the servers with" >&2
    return 1
  fi
}

# Removes the capped cgroup (its servers have exited) and gives the cpu
# controller back if we were the ones to enable it.
remove_capped() {
  [ -n "$capped" ] && [ -d "$capped" ] && { rmdir "$capped" 2>/dev/null || echo "could not remove $capped" >&2; }
  [ -n "$enabled_cpu" ] && { echo -cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true; }
  capped=
  enabled_cpu=
}
cap=
# in_cap COMMAND... &: becomes COMMAND (so that $! is its pid), inside the
# capped cgroup when `cap` is set. Only ever run in the background.
in_cap() {
  if [ -n "$cap" ]; then
    exec sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$capped" "$@"
  fi
  exec "$@"
}

# start_server NAME KEEPALIVE: sets server_pid and cpu_pids (the processes
# whose CPU is the server's: for nginx, its workers). NAME is a tracebench
# mode or `nginx`, with an optional variant and worker count:
# `nginx+deferred` (listen ... deferred, i.e. TCP_DEFER_ACCEPT, which
# tracebench uses by default), `MODE+no-defer` (tracebench
# --no-defer-accept), `epoll+reuseport` (a listener per loop), `NAME:2` (2 nginx workers, or 2 event loops; pools
# always have 5 workers, nginx and event loops 1 unless told); `NAME@b`
# runs tracebench from BIN_B instead (an A/B of two builds).
start_server() {
  local spec=${1%@b} keepalive=$2 workers=1 bin=$BIN
  [[ $1 == *@b ]] && bin=$BIN_B
  local name=${spec%%:*}
  [[ $spec == *:* ]] && workers=${spec##*:}
  if [ "${name%%+*}" = nginx ]; then
    local timeout=0 deferred=
    [ "$keepalive" != off ] && timeout=75s
    [ "$name" = nginx+deferred ] && deferred=deferred
    mkdir -p "$work/logs"
    cat >"$work/nginx.conf" <<CONF
worker_processes $workers;
daemon off;
pid $work/nginx.pid;
error_log $work/logs/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_timeout $timeout;
  keepalive_requests 1000000;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  server {
    listen 127.0.0.1:$PORT backlog=1024 $deferred;
    location / { default_type text/html; return 200 '<h1>Hello, World!</h1>'; }
  }
}
CONF
    in_cap "$NGINX" -p "$work" -c "$work/nginx.conf" &
    server_pid=$!
    wait_port
    mapfile -t cpu_pids < <(pgrep -P "$server_pid")
  else
    local flags=() mode=${name%%+*}
    [ "$keepalive" != off ] && flags+=(--keep-alive)
    [ "${name#*+}" = no-defer ] && flags+=(--no-defer-accept)
    [ "${name#*+}" = reuseport ] && flags+=(--reuseport)
    case $mode in pool-*) workers=5 ;; esac
    in_cap "$bin" serve --mode "$mode" --workers "$workers" --addr "127.0.0.1:$PORT" "${flags[@]}" >/dev/null &
    server_pid=$!
    wait_port
    cpu_pids=("$server_pid")
  fi
}

stop_server() {
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

# run_wrk CONNECTIONS KEEPALIVE: prints "req_per_s cpu_us_per_req errors".
# KEEPALIVE is on, off, or pipelined (16 requests per write).
run_wrk() {
  local connections=$1 keepalive=$2 header=() script=()
  [ "$keepalive" = off ] && header=(-H "Connection: close")
  [ "$keepalive" = pipelined ] && script=(-s "$work/pipeline.lua")
  local before after out
  before=$(cpu_ticks "${cpu_pids[@]}")
  out=$(wrk -t1 -c"$connections" -d"$DURATION" "${header[@]}" "${script[@]}" "http://127.0.0.1:$PORT/" -- 16)
  after=$(cpu_ticks "${cpu_pids[@]}")
  local rps requests errors
  rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
  requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ { n++ } END { print n + 0 }' <<<"$out")
  awk -v rps="$rps" -v req="$requests" -v t=$((after - before)) -v hz="$TICKS" -v e="$errors" \
    'BEGIN { printf "%.0f %.1f %d\n", rps, (t / hz) * 1e6 / req, e }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# round_ratio "A's runs" "B's runs": the median over rounds of A's req/s
# over B's in the same round (the machine's drift between rounds cancels).
round_ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    n = split(a, x, " "); split(b, y, " ")
    for (i = 1; i <= n; i++) r[i] = y[i] > 0 ? x[i] / y[i] : 0
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
    printf "%.2f", r[int((n + 1) / 2)] }'
}

report_case() {
  local title=$1 connections=$2 keepalive=$3 peer=$4
  shift 4
  [[ $CASES == all || $title == *"$CASES"* ]] || return 0
  local servers=("$@")
  if [ -n "${BIN_B:-}" ]; then
    local name
    for name in "$@"; do
      [ "${name%%[+:]*}" = nginx ] || servers+=("$name@b")
    done
  fi
  if [ "$SERVERS" != all ]; then
    local kept=() name
    for name in "${servers[@]}"; do
      [[ " $SERVERS " == *" $name "* ]] && kept+=("$name")
    done
    # One server alone has nothing to be compared with.
    if ((${#kept[@]} < 2)); then
      echo "skipping \"$title\": SERVERS leaves ${#kept[@]} of its servers" >&2
      return 0
    fi
    [[ " ${kept[*]} " == *" $peer "* ]] || peer=${kept[0]}
    servers=("${kept[@]}")
  fi
  declare -A rps cpu errs
  # Each round starts one server later than the previous: on a machine
  # whose speed drifts, no server is always the first or last of its round.
  for run in $(seq "$RUNS"); do
    local shift_by=$(((run - 1) % ${#servers[@]}))
    local order=("${servers[@]:shift_by}" "${servers[@]:0:shift_by}")
    for name in "${order[@]}"; do
      start_server "$name" "$keepalive"
      read -r r c e < <(run_wrk "$connections" "$keepalive")
      stop_server
      rps[$name]+="$r "
      cpu[$name]+="$c "
      errs[$name]=$(( ${errs[$name]:-0} + e ))
      echo "  run $run $name: $r req/s, $c us CPU/req" >&2
    done
  done
  local nginx_median
  nginx_median=$(tr ' ' '\n' <<<"${rps[$peer]}" | grep . | median)
  echo
  echo "### $title"
  echo
  echo "| server | req/s (median of $RUNS) | runs | vs $peer (by round) | server CPU µs/req | wrk errors |"
  echo "|---|---:|---|---:|---:|---:|"
  for name in "${servers[@]}"; do
    local m c
    m=$(tr ' ' '\n' <<<"${rps[$name]}" | grep . | median)
    c=$(tr ' ' '\n' <<<"${cpu[$name]}" | grep . | median)
    awk -v n="$name" -v m="$m" -v all="${rps[$name]}" -v g="$nginx_median" -v c="$c" -v e="${errs[$name]}" \
      -v rr="$(round_ratio "${rps[$name]}" "${rps[$peer]}")" \
      'BEGIN { printf "| %s | %d | %s | %.2f× (%s×) | %s | %d |\n", n, m, all, (g > 0 ? m / g : 0), rr, c, e }'
  done
}

echo "## Server throughput, $(date -u +%Y-%m-%d), $(nproc) cores, wrk -t1 -d$DURATION"
echo
echo "Kernel $(uname -r); $("$NGINX" -v 2>&1 | sed 's/.*: //'); $(wrk --version 2>&1 | head -1 | awk '{print $1, $2}')."
report_case "One connection per request (wrk -t1 -c10, Connection: close; nginx keepalive_timeout 0)" \
  10 off nginx nginx nginx+deferred epoll epoll+no-defer io-uring pool-futex pool-futex+no-defer pool-std
report_case "Keep-alive (wrk -t1 -c5; tracebench --keep-alive; pools of 5 workers, one nginx worker, one event loop)" \
  5 on nginx nginx epoll io-uring pool-futex pool-std
# On 2 cores wrk needs most of one to keep up with one event loop, so the
# case above measures the client as much as the server. Capped at half a
# CPU, each server is the limit and wrk has a core to spare: req/s then
# measures what one server does with the same CPU.
# capped_case PERCENT TITLE CONNECTIONS PEER SERVERS...: a keep-alive case
# with each server in a cgroup capped at PERCENT of a CPU.
capped_case() {
  local percent=$1 title=$2
  shift 2
  [[ $CASES == all || $title == *"$CASES"* ]] || return 0
  if make_capped "$percent"; then
    cap=1
    report_case "$title" "$1" on "${@:2}"
    cap=
  else
    echo "skipping \"$title\": could not make a capped cgroup" >&2
  fi
  remove_capped
}
capped_case "$CAP_PERCENT" "Keep-alive, each server capped at $CAP_PERCENT % of a CPU by a cgroup (wrk -t1 -c5; one nginx worker, one event loop)" \
  5 nginx nginx epoll io-uring
report_case "Keep-alive, pipelined 16 deep (wrk -t1 -c10 with a pipelining script, as TechEmpower's plaintext test; one nginx worker, one event loop)" \
  10 pipelined nginx nginx epoll io-uring pool-futex
report_case "Two workers, one connection per request (wrk -t1 -c10; nginx worker_processes 2, 2 event loops)" \
  10 off nginx:2 nginx:2 nginx+deferred:2 epoll:2 epoll+reuseport:2 io-uring:2
report_case "Two workers, keep-alive (wrk -t1 -c10; nginx worker_processes 2, 2 event loops)" \
  10 on nginx:2 nginx:2 epoll:2 epoll+reuseport:2 io-uring:2
# Uncapped, two server threads and wrk share the 2 cores and wrk is the
# limit; capped so that wrk keeps a core to spare (it needs ~10 µs a
# request), two workers share what one would get.
capped_case "$CAP2_PERCENT" "Two workers, keep-alive, each server capped at $CAP2_PERCENT % of a CPU by a cgroup (wrk -t1 -c10; nginx worker_processes 2, 2 event loops)" \
  10 nginx:2 nginx:2 epoll:2 epoll+reuseport:2 io-uring:2

[ "$CASES" = all ] || exit 0
echo
echo "### Idle CPU per mode (${IDLE_SECONDS} s with no load, 5 workers)"
echo
echo "| mode | CPU % of one core |"
echo "|---|---:|"
for mode in sync fork thread pool-spin pool-futex pool-std epoll io-uring; do
  start_server "$mode" off
  sleep 0.5
  before=$(cpu_ticks "${cpu_pids[@]}")
  sleep "$IDLE_SECONDS"
  after=$(cpu_ticks "${cpu_pids[@]}")
  stop_server
  awk -v m="$mode" -v t=$((after - before)) -v hz="$TICKS" -v s="$IDLE_SECONDS" \
    'BEGIN { printf "| %s | %.0f %% |\n", m, 100 * t / hz / s }'
done
