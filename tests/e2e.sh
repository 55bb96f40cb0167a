#!/usr/bin/env bash
# The dashboard end to end, as a user meets it, in a real terminal (tmux at
# 120x40, a shell inside): the live view, then the replay of the recording
# it made, then that recording's latency exported to CSV. `.ci/test` runs
# it after the Rust tests, which build target/debug/tracebench.
#
# Checks, as issue 5 states them: after 5 s the screen shows at least 6
# threads with states, a non-empty histogram and its percentiles; q ends
# the program with status 0 within 2 s and the shell prompt returns; the
# same for the replay; the CSV's total count is the recording's request
# count. Then a panic (made by a test hook) must give the terminal back and
# leave no traced server behind.
set -euo pipefail
cd "$(dirname "$0")/.."

# Always the binary of this tree (a no-op after `cargo test` built it).
cargo build --locked --quiet --bin tracebench
bin=${CARGO_TARGET_DIR:-$PWD/target}/debug/tracebench
work=$(mktemp -d)
session=tracebench-e2e-$$
trap 'tmux kill-session -t "$session" 2>/dev/null || true; rm -rf "$work"' EXIT

fail() {
  echo "e2e: $1" >&2
  echo "---- the screen:" >&2
  tmux capture-pane -t "$session" -p >&2 || true
  exit 1
}

screen() { tmux capture-pane -t "$session" -p; }

# Waits up to $2 seconds for the screen to contain $1.
wait_for() {
  local deadline=$((SECONDS + $2))
  while ! screen | grep -qF -- "$1"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# A plain shell whose prompt we know, so its return is visible.
tmux new-session -d -s "$session" -x 120 -y 40 "env PS1='e2e\$ ' bash --norc --noprofile"
wait_for 'e2e$' 10 || fail "no shell prompt"

# Sends q and checks the program ends with 0 within 2 s and the prompt
# comes back; $1 names the program for messages.
quit_and_check() {
  tmux send-keys -t "$session" q
  local started=${EPOCHREALTIME/./}
  wait_for "EXIT=" 10 || fail "$1: q did not end it"
  local took_ms=$(((${EPOCHREALTIME/./} - started) / 1000))
  screen | grep -qF "EXIT=0" || fail "$1: exit status not 0"
  ((took_ms < 2000)) || fail "$1: q took ${took_ms} ms to end it (2 s allowed)"
  wait_for 'e2e$' 2 || fail "$1: no prompt after it"
  [ "$(screen | grep -v '^[[:space:]]*$' | tail -n 1)" = 'e2e$' ] ||
    fail "$1: the prompt is not the last line"
  [ "$(tmux display -p -t "$session" '#{alternate_on}#{mouse_any_flag}')" = 00 ] ||
    fail "$1: the terminal was not given back (alternate screen or mouse reports still on)"
  echo "e2e: $1 quit with status 0 in ${took_ms} ms"
}

threads_with_states() {
  screen | grep -cE '^│[0-9]+ .* (running|futex-wait|accept|sleep|io|event-wait|syscall|exited) ' || true
}

# 1. The live dashboard on its defaults, recorded into $work/run.
tmux send-keys -t "$session" "clear; $bin dash --record-dir $work/run; echo EXIT=\$?" Enter
sleep 5
wait_for "p99.9" 10 || fail "live: no latency percentiles"
n=$(threads_with_states)
((n >= 6)) || fail "live: $n threads with states (at least 6 wanted)"
screen | grep -qE '█[0-9]+█|▁|▂|▃|▄|▅|▆|▇' || fail "live: an empty histogram"
echo "e2e: live view shows $n threads with states, a histogram and percentiles"
# Issue 16: a marked range, then pause and resume, must neither freeze the
# screen nor lose live data: the run's clock and answered count move on
# right after resuming, and nothing is dropped.
header() { screen | grep -oE '[0-9]+ s +c=[0-9]+ .* dropped' | head -n 1; }
tmux send-keys -t "$session" r
sleep 0.5
tmux send-keys -t "$session" ' '
sleep 3
tmux send-keys -t "$session" ' '
before=$(header)
sleep 1.5
after=$(header)
[ -n "$after" ] && [ "$before" != "$after" ] || fail "range+pause: the header froze at: $after"
grep -qE ' 0 dropped$' <<<"$after" || fail "range+pause: live data was dropped: $after"
echo "e2e: after a range and a pause the view moves on ($after)"
# Issue 15: / filters the table by name as typed, s sorts it, and the
# title says both.
tmux send-keys -t "$session" / w o r k e r Enter
wait_for "named *worker*" 5 || fail "search: the title does not say the filter"
rows=$(screen | grep -cE '^│[0-9]+ {2,}' || true)
workers=$(screen | grep -cE '^│[0-9]+ +worker-' || true)
((workers == 5 && rows == 5)) || fail "search: $rows rows, $workers of them workers (5 and 5 wanted)"
tmux send-keys -t "$session" s
wait_for "threads by state" 5 || fail "sort: the title does not say the order"
tmux send-keys -t "$session" / Escape s s s s s
wait_for "┌ threads   " 5 || fail "search: Esc then s (Alt+s to the terminal) did not drop the filter and sort back to tid"
rows=$(screen | grep -cE '^│[0-9]+ {2,}' || true)
((rows >= 6)) || fail "search: $rows rows after Esc (6 wanted)"
echo "e2e: / kept the 5 workers, s sorted by state, Esc showed all again"
quit_and_check "live dashboard"
answered=$(screen | grep -oE '^[0-9]+ answered' | tail -n 1 | cut -d' ' -f1)
[ -n "$answered" ] || fail "live: no summary after quitting"

# 2. The replay of that recording.
tmux send-keys -t "$session" "clear; $bin replay $work/run; echo EXIT=\$?" Enter
wait_for "replay of" 10 || fail "replay: no screen"
tmux send-keys -t "$session" End
wait_for "p99.9" 10 || fail "replay: no latency percentiles at the end"
n=$(threads_with_states)
((n >= 6)) || fail "replay: $n threads with states (at least 6 wanted)"
echo "e2e: replay shows $n threads with states and percentiles"
# Colour parameters (30-38, 40-48, 90-97, 100-107) in what tmux received;
# 39 and 49, the default colours, do not count.
colours() {
  tmux capture-pane -t "$session" -p -e | grep -oE $'\e\\[[0-9;]*m' |
    tr -d $'\e[m' | tr ';' '\n' | grep -cxE '3[0-8]|4[0-8]|9[0-7]|10[0-7]' || true
}
coloured=$(colours)
((coloured > 0)) || fail "replay: no colour at all on a colour terminal"
quit_and_check "replay"

# 2b. Issue 15: with NO_COLOR the same replay has no colour at all, and
# its states are still told apart, each by its own mark.
tmux send-keys -t "$session" "clear; NO_COLOR=1 $bin replay $work/run; echo EXIT=\$?" Enter
wait_for "replay of" 10 || fail "NO_COLOR: no screen"
tmux send-keys -t "$session" End
wait_for "p99.9" 10 || fail "NO_COLOR: no latency percentiles at the end"
uncoloured=$(colours)
((uncoloured == 0)) || fail "NO_COLOR: $uncoloured colour parameters on the screen"
marks=$(screen | grep -oE '█|▒|▚|▓|▄|▲|░' | sort -u | wc -l)
((marks >= 2)) || fail "NO_COLOR: $marks kinds of state marks (2 or more wanted)"
echo "e2e: NO_COLOR leaves no colour ($coloured parameters without it) and $marks kinds of state marks"
quit_and_check "replay with NO_COLOR"

# 3. The recording's latencies as HdrHistogram CSV.
"$bin" export "$work/run" --csv "$work/latency.csv"
total=$(tail -n 1 "$work/latency.csv" | cut -d, -f3)
[ "$total" = "$answered" ] ||
  fail "export: the CSV counts $total requests, the recording $answered"
echo "e2e: the CSV counts the recording's $total requests"

# 4. A panic in the dashboard (a test hook makes one after 20 frames): the
# terminal comes back (no alternate screen, no mouse reports), the exit
# status says so, and the traced server does not outlive us.
tmux send-keys -t "$session" "clear; RUST_BACKTRACE=0 TRACEBENCH_TEST_PANIC_AFTER_FRAMES=30 $bin dash --no-record; echo EXIT=\$?" Enter
# The traced server: the child of the dashboard, the shell's child.
shell=$(tmux display -p -t "$session" '#{pane_pid}')
server=
for _ in $(seq 50); do
  dash=$(pgrep -P "$shell" | head -n 1)
  [ -n "$dash" ] && server=$(pgrep -P "$dash" | head -n 1)
  [ -n "$server" ] && break
  sleep 0.05
done
[ -n "$server" ] || fail "panic: the dashboard's traced server never showed up"
# (Not "EXIT=": the command line typed above holds that until clear runs.)
wait_for "EXIT=101" 20 || fail "panic: the dashboard did not end with a panic's status 101"
screen | grep -qF "panics on purpose" || fail "panic: the message is not on the screen"
[ "$(tmux display -p -t "$session" '#{alternate_on}#{mouse_any_flag}')" = 00 ] ||
  fail "panic: the terminal was not given back"
wait_for 'e2e$' 2 || fail "panic: no prompt after it"
# Running, or stopped: anything but gone or a zombie waiting for its reaper.
alive() { [ -e "/proc/$1/stat" ] && ! grep -q ') Z ' "/proc/$1/stat" 2>/dev/null; }
for _ in $(seq 50); do
  alive "$server" || break
  sleep 0.1
done
! alive "$server" || fail "panic: the traced server (pid $server) outlived the dashboard"
echo "e2e: a panic gives the terminal back and leaves no server behind"
