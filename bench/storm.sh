#!/usr/bin/env bash
# A connection storm, then one ordinary client: `tracebench load -c N -z
# 3s` against each server mode, and the time curl then needs for one GET
# (issue 14: after `load -c 30000 -z 3s` the server once did not answer
# curl for ~30 s). Prints a Markdown table for docs/reliability.md.
#
#   bash bench/storm.sh                  # N = 30000, or what ulimit -Hn allows
#   CONNECTIONS=5000 MODES="sync epoll" bash bench/storm.sh
#
# Servers bind 127.0.0.1, each mode on a port of its own: a storm leaves
# its client ports in TIME_WAIT for a minute, toward that port only. Each
# server is stopped by pid (SIGTERM, then SIGKILL).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18310}
MODES=${MODES:-"sync fork thread pool-spin pool-futex pool-std epoll io-uring"}
hard=$(ulimit -Hn)
CONNECTIONS=${CONNECTIONS:-$((hard < 31000 ? hard - 1000 : 30000))}
cargo build --release --quiet
BIN=$PWD/target/release/tracebench

echo "## Storm of $CONNECTIONS connections for 3 s, then one curl, $(date -u +%Y-%m-%d), $(nproc) cores, kernel $(uname -r)"
echo
echo "| mode | answered during the storm | in flight at its end | curl afterwards (s) |"
echo "|---|---:|---:|---:|"
for mode in $MODES; do
  PORT=$((PORT + 1))
  URL="http://127.0.0.1:$PORT/"
  "$BIN" serve --mode "$mode" --addr "127.0.0.1:$PORT" >/dev/null 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -s -o /dev/null "$URL" && break; sleep 0.05; done
  summary=$("$BIN" load "$URL" -c "$CONNECTIONS" -z 3s --json 2>/dev/null || true)
  start=$(date +%s.%N)
  code=$(curl -s -m 120 -o /dev/null -w '%{http_code}' "$URL" || true)
  took=$(echo "$(date +%s.%N) - $start" | bc)
  answered=$(sed -n 's/.*"completed": *\([0-9]*\).*/\1/p' <<<"$summary")
  flight=$(sed -n 's/.*"in_flight_at_end": *\([0-9]*\).*/\1/p' <<<"$summary")
  printf '| %s | %s | %s | %.3f (%s) |\n' "$mode" "${answered:-?}" "${flight:-?}" "$took" "$code"
  kill -TERM "$server" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
done
