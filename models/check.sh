#!/usr/bin/env bash
# Checks the futex primitives' model (models/futex.pml) with spin: every
# configuration must verify with no error, and every mutant (a known bug
# put in on purpose) must be caught, which shows the model can fail.
# .ci/test installs spin and runs this.
set -euo pipefail
cd "$(dirname "$0")"
command -v spin >/dev/null || { echo "models/check.sh: spin is needed (.ci/test installs it)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp futex.pml "$work/"
cd "$work"

# verify NAME DEFINES...: prints spin's error count for the model built
# with DEFINES (safety: assertions and invalid end states).
verify() {
  local generated
  generated=$(spin -a "${@:2}" futex.pml 2>&1)
  if grep -qi "error" <<<"$generated"; then
    echo "models/check.sh: spin rejects the model ($1): $generated" >&2
    echo "spin-error"
    return
  fi
  # COLLAPSE compresses stored states (the queue's 12 million fit in
  # ~600 MB); MEMLIM stops the search rather than the machine.
  cc -O2 -DSAFETY -DNOFAIR -DCOLLAPSE -DMEMLIM=4096 -o pan pan.c
  local out
  out=$(./pan -m200000 2>&1)
  if grep -qE "depth too small|out of memory|memory limit" <<<"$out"; then
    echo "models/check.sh: the search was cut short ($1)" >&2
    echo "cut-short"
    return
  fi
  local errors
  errors=$(awk '/errors:/ { print $NF }' <<<"$out")
  local states
  states=$(awk '/states, stored/ { print $1 }' <<<"$out" | head -n 1)
  echo "$1: $errors errors, $states states" >&2
  echo "$errors"
}

status=0
for config in "mutex:-DMUTEX" "mutex, spurious wake-ups:-DMUTEX -DSPURIOUS" \
              "condvar:-DCONDVAR" "condvar, spurious wake-ups:-DCONDVAR -DSPURIOUS" \
              "bounded queue:-DQUEUE -DN=4 -DITEMS=1"; do
  # shellcheck disable=SC2086
  errors=$(verify "${config%%:*}" ${config#*:})
  [ "$errors" = 0 ] || { echo "models/check.sh: ${config%%:*} FAILED" >&2; status=1; }
done
for mutant in "unlock forgets the wake:-DMUTEX -DFORGET_WAKE" \
              "condvar reads its sequence after unlocking:-DCONDVAR -DLATE_SEQUENCE" \
              "queue, condvar reads its sequence after unlocking:-DQUEUE -DN=4 -DITEMS=1 -DLATE_SEQUENCE"; do
  # shellcheck disable=SC2086
  errors=$(verify "mutant, ${mutant%%:*}" ${mutant#*:})
  [[ "$errors" =~ ^[1-9][0-9]*$ ]] ||
    { echo "models/check.sh: the mutant '${mutant%%:*}' was not caught" >&2; status=1; }
done
exit $status
