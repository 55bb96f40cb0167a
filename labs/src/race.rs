//! **race**: threads add one to a shared counter until it should reach a
//! target. Without synchronisation, a thread that reads the counter, gives
//! up the CPU (`sched_yield`, as the classic demo does) and then writes its
//! value + 1 overwrites the increments other threads made meanwhile: updates
//! are lost. Under our futex mutex or with an atomic add, none are.
//!
//! The unsynchronised counter is an `AtomicU64` read and written with two
//! separate relaxed operations: the race is in the program's logic (read,
//! then write), exactly as in the C demo, without being undefined behaviour
//! in Rust.

use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracebench_server::futex;
use tracebench_server::sync::FutexMutex;

use crate::{LabError, Result};

/// How the threads protect the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Not at all: load, (yield), store.
    #[default]
    None,
    /// Load, (yield), store, all under our futex mutex.
    FutexMutex,
    /// One atomic read-modify-write (`lock xadd`); the yield comes after it.
    Atomic,
}

impl SyncMode {
    /// Every choice, in the order of the lesson.
    pub const ALL: [SyncMode; 3] = [SyncMode::None, SyncMode::FutexMutex, SyncMode::Atomic];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::None => "none",
            SyncMode::FutexMutex => "futex-mutex",
            SyncMode::Atomic => "atomic",
        }
    }
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SyncMode {
    type Err = LabError;
    fn from_str(s: &str) -> Result<SyncMode> {
        SyncMode::ALL
            .into_iter()
            .find(|sync| sync.name() == s)
            .ok_or_else(|| {
                LabError::InvalidOption(format!(
                    "unknown sync {s:?} (expected none, futex-mutex or atomic)"
                ))
            })
    }
}

/// The most threads the lab starts.
pub const MAX_THREADS: usize = 64;

/// The largest target: with a yield per increment, a billion would run for
/// minutes.
pub const MAX_TARGET: u64 = 100_000_000;

/// How the race runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Threads incrementing the counter (1..=[`MAX_THREADS`]).
    pub threads: usize,
    /// What the counter should read at the end: the increments of all
    /// threads together (1..=[`MAX_TARGET`]).
    pub target: u64,
    /// How the counter is protected.
    pub sync: SyncMode,
    /// Call `sched_yield` between reading and writing the counter.
    pub yield_between: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threads: 2,
            target: 100_000,
            sync: SyncMode::None,
            yield_between: true,
        }
    }
}

/// What a race run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The target: what the counter would read if no update were lost.
    pub expected: u64,
    /// What the counter read once every thread was done.
    pub actual: u64,
    /// `expected - actual`.
    pub lost: u64,
    /// Futex system calls our mutex made (0 without it).
    pub futex_calls: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// Runs the race and prints expected vs final count and the updates lost.
pub fn run(options: &Options, out: &mut impl Write) -> Result<Report> {
    if !(1..=MAX_THREADS).contains(&options.threads) {
        return Err(LabError::InvalidOption(format!(
            "--threads must be 1 to {MAX_THREADS}"
        )));
    }
    if !(1..=MAX_TARGET).contains(&options.target) {
        return Err(LabError::InvalidOption(format!(
            "--target must be 1 to {MAX_TARGET}"
        )));
    }
    writeln!(
        out,
        "race: {} threads add 1 to a shared counter, {} times in all (sync {}, {})",
        options.threads,
        options.target,
        options.sync,
        if options.yield_between {
            "sched_yield between read and write"
        } else {
            "no yield"
        }
    )?;

    let plain = AtomicU64::new(0);
    let locked = FutexMutex::new(0u64);
    let start = Instant::now();
    let futex_calls = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..options.threads)
            .map(|index| {
                let share = share_of(options.target, options.threads, index);
                let (plain, locked) = (&plain, &locked);
                std::thread::Builder::new()
                    .name(format!("racer-{index}"))
                    .spawn_scoped(scope, move || {
                        increment(options, share, plain, locked);
                        futex::calls_on_this_thread()
                    })
                    .map_err(LabError::os("starting a thread"))
            })
            .collect();
        let mut calls = 0;
        for worker in workers {
            calls += worker?
                .join()
                .map_err(|_| LabError::Failed("a racing thread panicked".into()))?;
        }
        Ok::<u64, LabError>(calls)
    })?;
    let elapsed = start.elapsed();

    let actual = match options.sync {
        SyncMode::FutexMutex => locked.into_inner(),
        SyncMode::None | SyncMode::Atomic => plain.into_inner(),
    };
    let lost = options.target.saturating_sub(actual);
    writeln!(out, "expected  {}", options.target)?;
    writeln!(out, "final     {actual}")?;
    writeln!(
        out,
        "lost      {lost} updates ({:.1}%)",
        lost as f64 * 100.0 / options.target as f64
    )?;
    if options.sync == SyncMode::FutexMutex {
        writeln!(out, "futex calls by the mutex: {futex_calls}")?;
    }
    writeln!(out, "time      {:.3} s", elapsed.as_secs_f64())?;
    Ok(Report {
        expected: options.target,
        actual,
        lost,
        futex_calls,
        elapsed,
    })
}

/// Thread `index`'s part of `target`: an even split, the remainder going
/// to the first threads, so the parts add up to exactly `target`.
fn share_of(target: u64, threads: usize, index: usize) -> u64 {
    let threads = threads as u64;
    let index = index as u64;
    target / threads + u64::from(index < target % threads)
}

fn increment(options: &Options, times: u64, plain: &AtomicU64, locked: &FutexMutex<u64>) {
    for _ in 0..times {
        match options.sync {
            SyncMode::None => {
                let seen = plain.load(Ordering::Relaxed);
                if options.yield_between {
                    std::thread::yield_now();
                }
                plain.store(seen + 1, Ordering::Relaxed);
            }
            SyncMode::FutexMutex => {
                let mut counter = locked.lock();
                let seen = *counter;
                if options.yield_between {
                    std::thread::yield_now();
                }
                *counter = seen + 1;
            }
            SyncMode::Atomic => {
                plain.fetch_add(1, Ordering::Relaxed);
                if options.yield_between {
                    std::thread::yield_now();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_target() {
        for (target, threads) in [(10, 3), (1, 4), (100_000, 7), (5, 5)] {
            let sum: u64 = (0..threads).map(|i| share_of(target, threads, i)).sum();
            assert_eq!(sum, target, "{target} over {threads}");
        }
    }

    #[test]
    fn the_lock_and_the_atomic_lose_nothing() {
        for sync in [SyncMode::FutexMutex, SyncMode::Atomic] {
            let options = Options {
                threads: 4,
                target: 20_003,
                sync,
                yield_between: true,
            };
            let report = run(&options, &mut Vec::new()).unwrap();
            assert_eq!(report.actual, 20_003, "{sync}");
            assert_eq!(report.lost, 0, "{sync}");
        }
    }

    #[test]
    fn without_sync_updates_are_lost() {
        // Two threads that read, yield, and write: one lost update is enough,
        // and it takes only one overlap. A few attempts make a machine that
        // happens to run the threads one after the other impossible to
        // mistake for a correct counter.
        let options = Options {
            threads: 4,
            target: 200_000,
            ..Options::default()
        };
        let lost_in_some_run = (0..5).any(|_| run(&options, &mut Vec::new()).unwrap().lost > 0);
        assert!(lost_in_some_run, "5 runs without a lost update");
    }

    #[test]
    fn bad_options_are_errors() {
        let zero_threads = Options {
            threads: 0,
            ..Options::default()
        };
        assert!(matches!(
            run(&zero_threads, &mut Vec::new()),
            Err(LabError::InvalidOption(_))
        ));
        let zero_target = Options {
            target: 0,
            ..Options::default()
        };
        assert!(run(&zero_target, &mut Vec::new()).is_err());
        assert!("spin".parse::<SyncMode>().is_err());
        assert_eq!(
            "futex-mutex".parse::<SyncMode>().unwrap(),
            SyncMode::FutexMutex
        );
    }

    #[test]
    fn prints_expected_final_and_lost() {
        let mut out = Vec::new();
        let options = Options {
            sync: SyncMode::Atomic,
            target: 1000,
            ..Options::default()
        };
        run(&options, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("expected  1000"), "{text}");
        assert!(text.contains("final     1000"), "{text}");
        assert!(text.contains("lost      0 updates"), "{text}");
    }
}
