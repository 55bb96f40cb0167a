//! The reader gives way to the program it watches. It runs under
//! `SCHED_IDLE`: any thread that wakes takes its CPU at once, so the
//! reading, ordering and analysing are done in the CPUs' idle time rather
//! than in the time slices of the server being measured (measured on the
//! pool server under wrk: 4–7 % more throughput than with the reader at
//! normal priority). A machine with no idle time would starve it into
//! losing records, so a sentinel thread at normal priority raises it back
//! to `SCHED_OTHER` once it falls behind: the ring a quarter full, or no
//! pass over the ring for [`STALLED`]. It lowers itself again at the
//! start of a pass that finds the ring nearly empty.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracebench_trace::clock::monotonic_ns;

use crate::ring::Fill;

/// How often the sentinel looks at the ring: at 100 MB/s of records (a
/// syscall storm under trace=all), 1 MB, against the quarter of at least
/// 2 MB that raises the reader.
const LOOK_EVERY: Duration = Duration::from_millis(10);
/// No pass for this long means starved: the reader passes at least every
/// 100 ms (its poll's timeout) when it gets a CPU.
const STALLED: Duration = Duration::from_millis(250);
/// `CAP_SYS_NICE`, needed (without a high `RLIMIT_NICE`) to leave
/// `SCHED_IDLE` again.
const CAP_SYS_NICE: u32 = 23;

/// The reader's scheduling while it yields; restores `SCHED_OTHER` when
/// dropped (on the reader's thread).
pub struct Yielding {
    shared: Arc<Shared>,
    sentinel: Option<JoinHandle<()>>,
}

struct Shared {
    reader: libc::pid_t,
    /// Whether the reader runs at normal priority now. Both threads change
    /// its policy under this lock, so flag and policy agree.
    raised: Mutex<bool>,
    /// When the reader last ended a pass (CLOCK_MONOTONIC ns).
    passed_ns: AtomicU64,
    stop: AtomicBool,
    /// The sentinel's thread id, once it runs.
    sentinel: AtomicI32,
    fill: Fill,
    /// Unread bytes past which the reader is behind.
    behind: u64,
}

impl Yielding {
    /// Lowers the calling thread (the reader) to `SCHED_IDLE` and starts
    /// its sentinel, for a ring of `ring_bytes` behind `ring_fd`. `None`,
    /// leaving the thread as it was, when it is not under `SCHED_OTHER`
    /// (someone chose its policy), when it could not be raised back
    /// (neither `CAP_SYS_NICE` nor `RLIMIT_NICE` allow it), or on any
    /// failure to set this up.
    pub fn start(ring_fd: &std::os::fd::OwnedFd, ring_bytes: u64) -> Option<Yielding> {
        // SAFETY: sched_getscheduler reads the calling thread's policy.
        if unsafe { libc::sched_getscheduler(0) } != libc::SCHED_OTHER || !may_raise() {
            return None;
        }
        let shared = Arc::new(Shared {
            // SAFETY: gettid has no preconditions.
            reader: unsafe { libc::gettid() },
            raised: Mutex::new(false),
            passed_ns: AtomicU64::new(monotonic_ns()),
            stop: AtomicBool::new(false),
            sentinel: AtomicI32::new(0),
            fill: Fill::map(ring_fd).ok()?,
            behind: ring_bytes / 4,
        });
        let watched = Arc::clone(&shared);
        // Started first: a thread inherits its creator's policy.
        let sentinel = std::thread::Builder::new()
            .name("tb-sentinel".into())
            .spawn(move || watch(&watched))
            .ok()?;
        let yielding = Yielding {
            shared,
            sentinel: Some(sentinel),
        };
        // On failure, dropping it stops the sentinel.
        set_policy(0, libc::SCHED_IDLE).ok()?;
        Some(yielding)
    }

    /// Called by the reader as a pass begins: gives way again if it was
    /// raised and the ring is nearly empty.
    pub fn pass_begins(&self) {
        let mut raised = self.shared.lock();
        if *raised
            && self.shared.fill.unread() < self.shared.behind / 4
            && set_policy(0, libc::SCHED_IDLE).is_ok()
        {
            *raised = false;
        }
    }

    /// Called by the reader as a pass ends.
    pub fn pass_ends(&self) {
        self.shared
            .passed_ns
            .store(monotonic_ns(), Ordering::Relaxed);
    }
}

impl Drop for Yielding {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(sentinel) = self.sentinel.take() {
            sentinel.thread().unpark();
            let _ = sentinel.join();
        }
        let _ = set_policy(0, libc::SCHED_OTHER);
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.raised.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sentinel: raises the reader whenever it is behind.
fn watch(shared: &Shared) {
    // SAFETY: gettid has no preconditions.
    shared
        .sentinel
        .store(unsafe { libc::gettid() }, Ordering::Relaxed);
    let stalled = STALLED.as_nanos() as u64;
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(LOOK_EVERY);
        let since = monotonic_ns().saturating_sub(shared.passed_ns.load(Ordering::Relaxed));
        if shared.fill.unread() < shared.behind && since < stalled {
            continue;
        }
        let mut raised = shared.lock();
        if !*raised && set_policy(shared.reader, libc::SCHED_OTHER).is_ok() {
            *raised = true;
        }
    }
}

/// Sets thread `tid`'s (0: the caller's) policy, at priority 0.
fn set_policy(tid: libc::pid_t, policy: libc::c_int) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: reads our local param; changes only a thread's policy.
    if unsafe { libc::sched_setscheduler(tid, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether a thread of ours may leave `SCHED_IDLE` for `SCHED_OTHER` at
/// its nice value: with `CAP_SYS_NICE`, or an `RLIMIT_NICE` that allows
/// that nice value.
fn may_raise() -> bool {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    if effective & (1 << CAP_SYS_NICE) != 0 {
        return true;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getpriority reads; getrlimit writes our local struct.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    // SAFETY: as above.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut limit) } == 0;
    // RLIMIT_NICE's scale: a nice value n needs a limit of at least 20 - n.
    got && limit.rlim_cur >= (20 - i64::from(nice)).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_of(tid: libc::pid_t) -> libc::c_int {
        // SAFETY: reads a thread's policy.
        unsafe { libc::sched_getscheduler(tid) }
    }

    #[test]
    fn the_reader_idles_is_raised_when_stalled_and_is_restored_at_the_end() {
        if !may_raise() {
            // Without CAP_SYS_NICE nothing is lowered: checked as such.
            let map = crate::bpf::Map::ring(1 << 16).expect("a ring map (needs root)");
            assert!(Yielding::start(map.fd(), 1 << 16).is_none());
            return;
        }
        let map = crate::bpf::Map::ring(1 << 16).expect("a ring map (needs root)");
        let yielding = Yielding::start(map.fd(), 1 << 16).expect("yields");
        assert_eq!(policy_of(0), libc::SCHED_IDLE);
        let sentinel = loop {
            match yielding.shared.sentinel.load(Ordering::Relaxed) {
                0 => std::thread::yield_now(),
                tid => break tid,
            }
        };
        assert_eq!(
            policy_of(sentinel),
            libc::SCHED_OTHER,
            "the sentinel must not inherit the reader's idle policy"
        );
        // No pass for longer than STALLED: the sentinel raises us.
        std::thread::sleep(STALLED + LOOK_EVERY * 10);
        assert_eq!(policy_of(0), libc::SCHED_OTHER);
        // A pass over an empty ring gives way again.
        yielding.pass_begins();
        yielding.pass_ends();
        assert_eq!(policy_of(0), libc::SCHED_IDLE);
        drop(yielding);
        assert_eq!(policy_of(0), libc::SCHED_OTHER);
    }
}
