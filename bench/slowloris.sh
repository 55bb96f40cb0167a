#!/usr/bin/env bash
# What each server mode withstands: slow clients (slowloris) and a flood of
# idle connections, measured as the latency a normal client sees meanwhile.
#
#   bash bench/slowloris.sh                 # every mode, 3 runs each
#   MODES="pool-futex epoll" RUNS=1 bash bench/slowloris.sh
#
# For each mode: the server alone on 127.0.0.1 (5 pool workers, one event
# loop, --read-timeout 5s, --no-defer-accept so the server, not the kernel,
# holds the slow clients), SLOW clients that send a request head one byte
# every 100 ms, and meanwhile 10 sequential GETs from a normal client: the
# slowest of those, median of RUNS. Every client is bounded in time; the
# server is stopped by pid. Prints a Markdown table for docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
PORT=${PORT:-18095}
SLOW=${SLOW:-5}
MODES=${MODES:-"sync fork thread pool-spin pool-futex pool-std epoll io-uring"}

cargo build --release --quiet
BIN=target/release/tracebench
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT

# slowest_get: opens SLOW trickling clients, then times 10 GETs (each given
# at most 8 s); prints the slowest in ms, or "timeout".
slowest_get() {
  python3 - "$PORT" "$SLOW" <<'PY'
import socket, sys, threading, time
port, slow = int(sys.argv[1]), int(sys.argv[2])
stop = time.time() + 12
def trickle():
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(b"GET ")
        while time.time() < stop:
            time.sleep(0.1)
            s.sendall(b"a")
    except OSError:
        pass
for _ in range(slow):
    threading.Thread(target=trickle, daemon=True).start()
time.sleep(0.3)
worst = 0.0
for _ in range(10):
    start = time.time()
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=8)
        c.settimeout(8)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
        if not data.startswith(b"HTTP/1.1 200"):
            print("error"); sys.exit()
    except OSError:
        print("timeout"); sys.exit()
    worst = max(worst, time.time() - start)
print(f"{worst * 1000:.0f}")
PY
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "## Slow clients, $(date -u +%Y-%m-%d), $(nproc) cores, kernel $(uname -r)"
echo
echo "$SLOW clients send a request head one byte every 100 ms; meanwhile 10 GETs one after another; --read-timeout 5s, --no-defer-accept; the slowest GET, median of $RUNS runs."
echo
echo "| mode | workers | slowest GET (ms) | runs |"
echo "|---|---:|---:|---|"
for mode in $MODES; do
  case $mode in pool-*) workers=5 ;; *) workers=1 ;; esac
  runs=()
  for _ in $(seq "$RUNS"); do
    "$BIN" serve --mode "$mode" --workers "$workers" --read-timeout 5s --no-defer-accept \
      --addr "127.0.0.1:$PORT" >/dev/null 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.05; done
    runs+=("$(slowest_get)")
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  done
  med=$(printf '%s\n' "${runs[@]}" | median)
  echo "| $mode | $workers | $med | ${runs[*]} |"
done
