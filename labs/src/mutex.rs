//! **mutex**: lock contention, from one thread to N, for three locks:
//! our futex mutex (`tracebench_server::sync::FutexMutex`),
//! `std::sync::Mutex`, and a test-and-set spinlock (an atomic swap — `xchg`
//! — retried with `pause` in between, as in the assembly server).
//!
//! Every thread locks, adds one to a shared plain integer, and unlocks, as
//! fast as it can, for a fixed time per cell of the table; it counts its
//! own operations. At the end the shared integer must equal the sum of the
//! threads' counts exactly (a lock that let two threads in would lose
//! increments). The table gives operations per second, futex system calls
//! per operation (counted by our futex module, so only for our mutex; the
//! spinlock makes none by construction; std's are not visible from inside
//! the process — trace them with `tracebench trace -e trace=futex`), and
//! per operation the voluntary context switches (sleeps) and involuntary
//! ones (preemptions) from getrusage(RUSAGE_THREAD). With more threads than
//! CPUs the spinlock's cost shows plainly: a thread preempted while holding
//! it leaves the others spinning through whole time slices.

use std::cell::UnsafeCell;
use std::fmt;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracebench_server::futex;
use tracebench_server::sync::FutexMutex;

use crate::{LabError, Result};

/// The most threads per cell.
pub const MAX_THREADS: usize = 64;

/// The longest time per cell.
pub const MAX_DURATION: Duration = Duration::from_secs(10);

/// The shortest time per cell.
pub const MIN_DURATION: Duration = Duration::from_millis(10);

/// The locks compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Our futex mutex (Drepper's mutex 2).
    FutexMutex,
    /// `std::sync::Mutex` (also futex-based on Linux).
    StdMutex,
    /// Test-and-set on an atomic flag, `pause` between attempts; never
    /// sleeps.
    Spinlock,
}

impl LockKind {
    /// Every lock, in the order of the table.
    pub const ALL: [LockKind; 3] = [LockKind::FutexMutex, LockKind::StdMutex, LockKind::Spinlock];

    /// The name in the table.
    pub fn name(self) -> &'static str {
        match self {
            LockKind::FutexMutex => "futex-mutex",
            LockKind::StdMutex => "std-mutex",
            LockKind::Spinlock => "spinlock",
        }
    }
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the comparison runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Thread counts 1..=this (1..=[`MAX_THREADS`]).
    pub max_threads: usize,
    /// Time per cell ([`MIN_DURATION`]..=[`MAX_DURATION`]).
    pub duration: Duration,
    /// The locks to compare, in order.
    pub locks: Vec<LockKind>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_threads: 4,
            duration: Duration::from_millis(200),
            locks: LockKind::ALL.to_vec(),
        }
    }
}

/// One cell of the table: one lock at one thread count.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The lock.
    pub lock: LockKind,
    /// Contending threads.
    pub threads: usize,
    /// Operations counted by the threads, added up.
    pub ops: u64,
    /// Each thread's own count.
    pub ops_per_thread: Vec<u64>,
    /// What the shared integer read at the end: must equal `ops`.
    pub counter: u64,
    /// From the start signal to the last thread's end.
    pub elapsed: Duration,
    /// Futex calls the threads made through our futex module (`None` for
    /// std's Mutex, whose calls we cannot count).
    pub futex_calls: Option<u64>,
    /// Voluntary context switches (the thread slept).
    pub sleeps: u64,
    /// Involuntary context switches (the thread was preempted).
    pub preemptions: u64,
}

impl Cell {
    /// Operations per second.
    pub fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn per_op(&self, count: u64) -> f64 {
        count as f64 / self.ops.max(1) as f64
    }
}

/// Every cell, lock by lock, thread count by thread count.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The cells in table order.
    pub cells: Vec<Cell>,
    /// CPUs the process may run on.
    pub cpus: usize,
}

/// A test-and-set spinlock: `swap(true)` until it returns false, with the
/// CPU's spin-wait hint (`pause` on x86) between attempts. It never enters
/// the kernel, so a waiter cannot give its CPU to the holder.
pub struct Spinlock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the flag gives the value to one thread at a time.
unsafe impl<T: Send> Sync for Spinlock<T> {}

impl<T> Spinlock<T> {
    /// A new, unlocked spinlock.
    pub const fn new(value: T) -> Self {
        Spinlock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` with the lock held.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        while self.locked.swap(true, Ordering::Acquire) {
            std::hint::spin_loop();
        }
        // SAFETY: the swap returned false, so this thread holds the lock
        // until the store below; no other reference to the value exists.
        let result = f(unsafe { &mut *self.value.get() });
        self.locked.store(false, Ordering::Release);
        result
    }

    /// Consumes the lock and returns the value.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

/// The three locks around the shared integer.
enum Shared {
    Futex(FutexMutex<u64>),
    Std(Mutex<u64>),
    Spin(Spinlock<u64>),
}

impl Shared {
    fn new(lock: LockKind) -> Shared {
        match lock {
            LockKind::FutexMutex => Shared::Futex(FutexMutex::new(0)),
            LockKind::StdMutex => Shared::Std(Mutex::new(0)),
            LockKind::Spinlock => Shared::Spin(Spinlock::new(0)),
        }
    }

    fn increment(&self) {
        match self {
            Shared::Futex(mutex) => *mutex.lock() += 1,
            // A poisoned lock still holds a valid integer; nothing here
            // panics while holding it anyway.
            Shared::Std(mutex) => *mutex.lock().unwrap_or_else(|p| p.into_inner()) += 1,
            Shared::Spin(spin) => spin.with(|value| *value += 1),
        }
    }

    fn into_value(self) -> u64 {
        match self {
            Shared::Futex(mutex) => mutex.into_inner(),
            Shared::Std(mutex) => mutex.into_inner().unwrap_or_else(|p| p.into_inner()),
            Shared::Spin(spin) => spin.into_inner(),
        }
    }
}

/// What one thread did in a cell.
struct ThreadCount {
    ops: u64,
    futex_calls: u64,
    sleeps: u64,
    preemptions: u64,
}

/// Runs every cell and prints the table.
pub fn run(options: &Options, out: &mut impl Write) -> Result<Report> {
    if !(1..=MAX_THREADS).contains(&options.max_threads) {
        return Err(LabError::InvalidOption(format!(
            "--threads must be 1 to {MAX_THREADS}"
        )));
    }
    if !(MIN_DURATION..=MAX_DURATION).contains(&options.duration) {
        return Err(LabError::InvalidOption(
            "--duration must be 10ms to 10s".into(),
        ));
    }
    if options.locks.is_empty() {
        return Err(LabError::InvalidOption("no lock to compare".into()));
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    writeln!(
        out,
        "mutex: 1 to {} threads lock, add 1 to a shared integer, unlock, for {} ms per cell ({cpus} CPUs)",
        options.max_threads,
        options.duration.as_millis()
    )?;
    writeln!(
        out,
        "{:<12} {:>7} {:>11} {:>12} {:>9} {:>9} {:>12}",
        "lock", "threads", "ops", "ops/s", "futex/op", "sleeps/op", "preempted/op"
    )?;
    out.flush()?;
    let mut cells = Vec::new();
    for &lock in &options.locks {
        for threads in 1..=options.max_threads {
            let cell = run_cell(lock, threads, options.duration)?;
            writeln!(
                out,
                "{:<12} {:>7} {:>11} {:>12} {:>9} {:>9.4} {:>12.4}",
                lock.name(),
                threads,
                cell.ops,
                format!("{:.2} M", cell.ops_per_second() / 1e6),
                cell.futex_calls.map_or_else(
                    || "-".to_owned(),
                    |calls| format!("{:.4}", cell.per_op(calls))
                ),
                cell.per_op(cell.sleeps),
                cell.per_op(cell.preemptions),
            )?;
            out.flush()?;
            if cell.counter != cell.ops {
                return Err(LabError::Failed(format!(
                    "{lock} with {threads} threads: the integer reads {} but the threads counted {}",
                    cell.counter, cell.ops
                )));
            }
            cells.push(cell);
        }
    }
    writeln!(
        out,
        "every count adds up: the shared integer equals the operations the threads counted, in every cell"
    )?;
    writeln!(
        out,
        "futex/op \"-\": std's Mutex makes its futex calls itself; see them with tracebench trace -e trace=futex"
    )?;
    Ok(Report { cells, cpus })
}

fn run_cell(lock: LockKind, threads: usize, duration: Duration) -> Result<Cell> {
    let shared = Shared::new(lock);
    let stop = AtomicBool::new(false);
    // A start flag rather than a Barrier: if a spawn fails, the threads
    // already running must still be released.
    let start = AtomicBool::new(false);
    let (counts, elapsed) = std::thread::scope(|scope| {
        let workers = (0..threads)
            .map(|index| {
                let (shared, stop, start) = (&shared, &stop, &start);
                std::thread::Builder::new()
                    .name(format!("{}-{index}", lock.name()))
                    .spawn_scoped(scope, move || contend(shared, stop, start))
                    .map_err(LabError::os("starting a thread"))
            })
            .collect::<Result<Vec<_>>>();
        let workers = match workers {
            Ok(workers) => workers,
            Err(error) => {
                // Release the threads that did start, already stopped.
                stop.store(true, Ordering::Relaxed);
                start.store(true, Ordering::Release);
                return Err(error);
            }
        };
        start.store(true, Ordering::Release);
        let began = Instant::now();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        let mut counts = Vec::with_capacity(threads);
        for worker in workers {
            counts.push(
                worker
                    .join()
                    .map_err(|_| LabError::Failed("a contending thread panicked".into()))?,
            );
        }
        Ok((counts, began.elapsed()))
    })?;
    let ops_per_thread: Vec<u64> = counts.iter().map(|c| c.ops).collect();
    Ok(Cell {
        lock,
        threads,
        ops: ops_per_thread.iter().sum(),
        ops_per_thread,
        counter: shared.into_value(),
        elapsed,
        futex_calls: (lock != LockKind::StdMutex)
            .then(|| counts.iter().map(|c| c.futex_calls).sum()),
        sleeps: counts.iter().map(|c| c.sleeps).sum(),
        preemptions: counts.iter().map(|c| c.preemptions).sum(),
    })
}

fn contend(shared: &Shared, stop: &AtomicBool, start: &AtomicBool) -> ThreadCount {
    while !start.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    let futex_before = futex::calls_on_this_thread();
    let switches_before = context_switches();
    let mut ops = 0;
    while !stop.load(Ordering::Relaxed) {
        shared.increment();
        ops += 1;
    }
    let switches_after = context_switches();
    ThreadCount {
        ops,
        futex_calls: futex::calls_on_this_thread() - futex_before,
        sleeps: switches_after.0.saturating_sub(switches_before.0),
        preemptions: switches_after.1.saturating_sub(switches_before.1),
    }
}

/// (voluntary, involuntary) context switches of the calling thread.
fn context_switches() -> (u64, u64) {
    // SAFETY: rusage is plain integers; all zeros is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
        return (0, 0);
    }
    (usage.ru_nvcsw as u64, usage.ru_nivcsw as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_at_every_thread_count_for_every_lock() {
        let options = Options {
            max_threads: 4,
            duration: Duration::from_millis(30),
            locks: LockKind::ALL.to_vec(),
        };
        let report = run(&options, &mut Vec::new()).unwrap();
        assert_eq!(report.cells.len(), 12);
        for cell in &report.cells {
            assert_eq!(cell.counter, cell.ops, "{:?}", cell.lock);
            assert_eq!(cell.ops_per_thread.len(), cell.threads);
            assert_eq!(cell.ops_per_thread.iter().sum::<u64>(), cell.ops);
            assert!(cell.ops > 0, "{} × {} did nothing", cell.lock, cell.threads);
        }
    }

    #[test]
    fn the_spinlock_and_an_uncontended_futex_mutex_make_no_futex_call() {
        let options = Options {
            max_threads: 1,
            duration: Duration::from_millis(20),
            locks: vec![LockKind::FutexMutex, LockKind::Spinlock],
        };
        let report = run(&options, &mut Vec::new()).unwrap();
        for cell in &report.cells {
            assert_eq!(cell.futex_calls, Some(0), "{}", cell.lock);
        }
    }

    #[test]
    fn the_spinlock_excludes() {
        let lock = Spinlock::new(0u64);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..50_000 {
                        lock.with(|value| {
                            let seen = *value;
                            std::hint::spin_loop();
                            *value = seen + 1;
                        });
                    }
                });
            }
        });
        assert_eq!(lock.into_inner(), 200_000);
    }

    #[test]
    fn bad_options_are_errors() {
        for options in [
            Options {
                max_threads: 0,
                ..Options::default()
            },
            Options {
                duration: Duration::from_secs(60),
                ..Options::default()
            },
            Options {
                locks: Vec::new(),
                ..Options::default()
            },
        ] {
            assert!(matches!(
                run(&options, &mut Vec::new()),
                Err(LabError::InvalidOption(_))
            ));
        }
    }
}
