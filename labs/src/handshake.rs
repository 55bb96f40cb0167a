//! **handshake**: a parent and a forked child ping-pong N times through
//! one 32-bit word in a `MAP_SHARED` page, sleeping with non-private
//! `FUTEX_WAIT` and waking each other with non-private `FUTEX_WAKE`.
//!
//! The word says whose turn it is. A side passes the turn by storing the
//! other's value and calling `FUTEX_WAKE`, then sleeps in `FUTEX_WAIT`
//! while the word still says "the other's turn". The kernel compares the
//! word and sleeps atomically, so an answer that comes before the sleep
//! makes `FUTEX_WAIT` return `EAGAIN` at once instead of being missed.
//!
//! Each side wakes once per round without first checking for a sleeper,
//! so a run of N rounds makes exactly 2N `FUTEX_WAKE` calls (the traced
//! count the tests check); the number of `FUTEX_WAIT` calls depends on how
//! often a side found the answer already there. The futexes cannot be
//! private (`FUTEX_PRIVATE_FLAG`): the two processes have different
//! address spaces, and only a shared futex is keyed on the page itself.

use std::io::Write;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tracebench_server::futex::{self, WaitOutcome};

use crate::process::{ChildExit, ForkedChild, SharedMap};
use crate::{LabError, Result};

/// The most round trips the lab makes.
pub const MAX_ROUNDS: u64 = 10_000_000;

/// How long a side waits for the other's answer before giving up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The turn word: the parent's turn.
const PARENT_TURN: u32 = 0;
/// The turn word: the child's turn.
const CHILD_TURN: u32 = 1;

/// How the handshake runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Round trips (1..=[`MAX_ROUNDS`]).
    pub rounds: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { rounds: 10_000 }
    }
}

/// Futex calls one side made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FutexCalls {
    /// `FUTEX_WAKE` calls.
    pub wakes: u64,
    /// `FUTEX_WAIT` calls, slept or not.
    pub waits: u64,
    /// `FUTEX_WAIT` calls that returned `EAGAIN`: the answer was already
    /// there, so the kernel refused to sleep.
    pub waits_not_slept: u64,
}

impl FutexCalls {
    /// Every futex call.
    pub fn total(&self) -> u64 {
        self.wakes + self.waits
    }
}

/// What a handshake run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Round trips completed (the parent's count).
    pub rounds: u64,
    /// Round trips the child answered.
    pub child_rounds: u64,
    /// The parent's futex calls.
    pub parent: FutexCalls,
    /// The child's futex calls.
    pub child: FutexCalls,
    /// Round-trip times in nanoseconds.
    pub round_trip_ns: Histogram<u64>,
}

impl Report {
    /// Futex calls of both sides per round trip.
    pub fn futex_calls_per_round_trip(&self) -> f64 {
        (self.parent.total() + self.child.total()) as f64 / self.rounds.max(1) as f64
    }
}

/// The page both processes share.
#[repr(C)]
struct Shared {
    turn: AtomicU32,
    child_rounds: AtomicU64,
    child_wakes: AtomicU64,
    child_waits: AtomicU64,
    child_waits_not_slept: AtomicU64,
}

/// Forks, ping-pongs `rounds` times, reaps the child, and prints the
/// round-trip distribution and the futex calls per round trip.
pub fn run(options: &Options, out: &mut impl Write) -> Result<Report> {
    if !(1..=MAX_ROUNDS).contains(&options.rounds) {
        return Err(LabError::InvalidOption(format!(
            "--rounds must be 1 to {MAX_ROUNDS}"
        )));
    }
    let rounds = options.rounds;
    writeln!(
        out,
        "handshake: parent and child ping-pong {rounds} times through a MAP_SHARED page (non-private FUTEX_WAIT/FUTEX_WAKE)"
    )?;
    out.flush()?;
    let shared = SharedMap::new(Shared {
        turn: AtomicU32::new(PARENT_TURN),
        child_rounds: AtomicU64::new(0),
        child_wakes: AtomicU64::new(0),
        child_waits: AtomicU64::new(0),
        child_waits_not_slept: AtomicU64::new(0),
    })?;
    let mut round_trip_ns = tracebench_histogram::latency_histogram();

    let child = ForkedChild::spawn(|| answer(&shared, rounds))?;
    // SAFETY: getpid has no preconditions.
    let parent_pid = unsafe { libc::getpid() };
    writeln!(out, "parent {parent_pid}, child {}", child.pid())?;
    let mut parent = FutexCalls::default();
    for _ in 0..rounds {
        let start = Instant::now();
        shared.turn.store(CHILD_TURN, Ordering::Release);
        futex::wake_shared(&shared.turn, 1);
        parent.wakes += 1;
        await_turn(&shared.turn, PARENT_TURN, &mut parent)?;
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        round_trip_ns.saturating_record(nanos.max(1));
    }
    let exit = child.wait(ANSWER_TIMEOUT)?;
    if exit != ChildExit::Code(0) {
        return Err(LabError::Failed(format!("the child ended with {exit:?}")));
    }
    let report = Report {
        rounds,
        child_rounds: shared.child_rounds.load(Ordering::Acquire),
        parent,
        child: FutexCalls {
            wakes: shared.child_wakes.load(Ordering::Acquire),
            waits: shared.child_waits.load(Ordering::Acquire),
            waits_not_slept: shared.child_waits_not_slept.load(Ordering::Acquire),
        },
        round_trip_ns,
    };
    print_report(&report, out)?;
    Ok(report)
}

/// The child's side: wait for the turn, pass it back, `rounds` times.
/// Only atomics and futex calls, as a forked child of a possibly
/// multi-threaded process must.
fn answer(shared: &Shared, rounds: u64) -> i32 {
    let mut calls = FutexCalls::default();
    for _ in 0..rounds {
        if await_turn(&shared.turn, CHILD_TURN, &mut calls).is_err() {
            return 2;
        }
        shared.turn.store(PARENT_TURN, Ordering::Release);
        futex::wake_shared(&shared.turn, 1);
        calls.wakes += 1;
        shared.child_rounds.fetch_add(1, Ordering::Relaxed);
    }
    shared.child_wakes.store(calls.wakes, Ordering::Relaxed);
    shared.child_waits.store(calls.waits, Ordering::Relaxed);
    shared
        .child_waits_not_slept
        .store(calls.waits_not_slept, Ordering::Release);
    0
}

/// Sleeps until `turn` holds `mine`, counting the waits; gives up after
/// [`ANSWER_TIMEOUT`] (the other side died or hung).
fn await_turn(turn: &AtomicU32, mine: u32, calls: &mut FutexCalls) -> Result<()> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        let seen = turn.load(Ordering::Acquire);
        if seen == mine {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LabError::TimedOut("the other side never answered"));
        }
        calls.waits += 1;
        if futex::wait_shared(turn, seen, Some(left)) == WaitOutcome::ValueChanged {
            calls.waits_not_slept += 1;
        }
    }
}

fn print_report(report: &Report, out: &mut impl Write) -> Result<()> {
    let hist = &report.round_trip_ns;
    let micros = |ns: u64| ns as f64 / 1000.0;
    writeln!(out, "round trips   {}", report.rounds)?;
    writeln!(
        out,
        "round trip    p50 {:.1} µs   p90 {:.1} µs   p99 {:.1} µs   max {:.1} µs   mean {:.1} µs",
        micros(hist.value_at_quantile(0.50)),
        micros(hist.value_at_quantile(0.90)),
        micros(hist.value_at_quantile(0.99)),
        micros(hist.max()),
        hist.mean() / 1000.0
    )?;
    for (side, calls) in [("parent", &report.parent), ("child", &report.child)] {
        writeln!(
            out,
            "{side:<6} futex  {} FUTEX_WAKE, {} FUTEX_WAIT ({} returned EAGAIN: the answer was already there)",
            calls.wakes, calls.waits, calls.waits_not_slept
        )?;
    }
    writeln!(
        out,
        "futex calls per round trip: {:.2} ({} FUTEX_WAKE = 2 per round, plus the waits)",
        report.futex_calls_per_round_trip(),
        report.parent.wakes + report.child.wakes
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_trip_completes_with_two_wakes_each() {
        let report = run(&Options { rounds: 2000 }, &mut Vec::new()).unwrap();
        assert_eq!(report.rounds, 2000);
        assert_eq!(report.child_rounds, 2000);
        assert_eq!(report.round_trip_ns.len(), 2000);
        assert_eq!(report.parent.wakes, 2000);
        assert_eq!(report.child.wakes, 2000);
        // Each side waits at least once per round unless the answer was
        // always there first, which is impossible for the child: the
        // parent's store comes only after the child's previous answer.
        assert!(report.futex_calls_per_round_trip() >= 2.0);
    }

    #[test]
    fn prints_the_distribution_and_the_calls() {
        let mut out = Vec::new();
        run(&Options { rounds: 50 }, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("round trips   50"), "{text}");
        assert!(text.contains("p50"), "{text}");
        assert!(text.contains("futex calls per round trip"), "{text}");
    }

    #[test]
    fn zero_rounds_is_an_error() {
        assert!(matches!(
            run(&Options { rounds: 0 }, &mut Vec::new()),
            Err(LabError::InvalidOption(_))
        ));
    }
}
