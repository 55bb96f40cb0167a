#!/usr/bin/env bash
# The dashboard's budget: events ingested into the model per second, the
# cost of a full 120x40 frame with 100 threads, how fast a 1 000 000-event
# recording opens and seeks, and the peak memory of replaying a
# 10 000 000-event one. Synthetic events shaped like a pool server's
# (accept4, futex wake, recvfrom, nanosleep, sendto, close, futex wait).
#
#   bash bench/ui.sh          # about a minute on 2 cores, after the build
#   RUNS=1 bash bench/ui.sh
#
# Prints each run's lines; docs/benchmarks.md keeps the medians.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
cargo bench --locked -p tracebench-ui --bench ui --no-run >&2
for run in $(seq "$RUNS"); do
  echo "## run $run"
  cargo bench --locked -q -p tracebench-ui --bench ui -- ingest frame replay 2>/dev/null
  # A process of its own: the figure is the process's peak RSS.
  cargo bench --locked -q -p tracebench-ui --bench ui -- memory 2>/dev/null
done
