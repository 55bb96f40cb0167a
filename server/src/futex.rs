//! The futex(2) system call, and nothing more.
//!
//! A futex is a 32-bit word in user memory that the kernel can put threads to
//! sleep on. `FUTEX_WAIT` sleeps only if the word still holds the value the
//! caller expected (checked atomically in the kernel, which is what makes
//! lost wake-ups avoidable); `FUTEX_WAKE` wakes up to `n` sleepers. The
//! server's futexes are process-private ([`wait`], [`wake`]:
//! `FUTEX_PRIVATE_FLAG`), which lets the kernel skip the shared-mapping
//! lookup. [`wait_shared`] and [`wake_shared`] leave the flag off, for the
//! two cases where a private futex cannot work: a word in a `MAP_SHARED`
//! page that several processes wait on, and the `CLONE_CHILD_CLEARTID` word,
//! which the kernel wakes with a shared wake when the thread exits.
//!
//! Every call made through this module is counted per thread, so tests can
//! check claims such as "an uncontended lock makes no system call".

use std::cell::Cell;
use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

thread_local! {
    static FUTEX_CALLS: Cell<u64> = const { Cell::new(0) };
}

/// How many futex system calls the calling thread has made through this
/// module since it started.
pub fn calls_on_this_thread() -> u64 {
    FUTEX_CALLS.with(Cell::get)
}

/// Why [`wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken by [`wake`] (or spuriously: callers always re-check their
    /// condition).
    Woken,
    /// The word did not hold the expected value, so the thread never slept
    /// (`EAGAIN`).
    ValueChanged,
    /// The timeout elapsed (`ETIMEDOUT`).
    TimedOut,
    /// A signal handler ran while the thread slept (`EINTR`).
    Interrupted,
}

/// Sleeps while `word` holds `expected`, for at most `timeout` if given.
///
/// The comparison and the sleep happen atomically in the kernel: a
/// [`wake`] that follows a change of `word` can never be missed.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
    raw_wait(
        word,
        libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
        expected,
        timeout,
    )
}

/// Like [`wait`], without `FUTEX_PRIVATE_FLAG`: the kernel keys the sleep
/// on the page behind `word`, so a [`wake_shared`] from another process that
/// maps the same page (`MAP_SHARED`) reaches it. Also the only way to sleep
/// on a `CLONE_CHILD_CLEARTID` word: the kernel's wake at thread exit is a
/// shared one, and a private sleeper would never see it.
pub fn wait_shared(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
    raw_wait(word, libc::FUTEX_WAIT, expected, timeout)
}

fn raw_wait(word: &AtomicU32, op: i32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
    let timespec = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let timespec_ptr = timespec
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    FUTEX_CALLS.with(|c| c.set(c.get() + 1));
    // SAFETY: `word` is a valid, aligned u32 that outlives the call, and
    // `timespec_ptr` is null or points to a timespec on our stack. For
    // FUTEX_WAIT the timeout is relative, and the last two arguments are
    // ignored.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            expected,
            timespec_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if ret == 0 {
        return WaitOutcome::Woken;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => WaitOutcome::ValueChanged,
        Some(libc::ETIMEDOUT) => WaitOutcome::TimedOut,
        Some(libc::EINTR) => WaitOutcome::Interrupted,
        // EFAULT/EINVAL cannot happen with a reference to an AtomicU32 and a
        // well-formed timespec; treat anything else as a spurious wake-up,
        // which every caller already tolerates.
        _ => WaitOutcome::Woken,
    }
}

/// Wakes up to `count` threads sleeping in [`wait`] on `word`, and returns
/// how many were woken.
pub fn wake(word: &AtomicU32, count: u32) -> usize {
    raw_wake(word, libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, count)
}

/// Wakes up to `count` threads or processes sleeping in [`wait_shared`] on
/// `word` (a private wake does not reach shared sleepers, nor the reverse).
pub fn wake_shared(word: &AtomicU32, count: u32) -> usize {
    raw_wake(word, libc::FUTEX_WAKE, count)
}

fn raw_wake(word: &AtomicU32, op: i32, count: u32) -> usize {
    FUTEX_CALLS.with(|c| c.set(c.get() + 1));
    let count = count.min(i32::MAX as u32);
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE only uses its
    // address as a key and ignores the remaining arguments.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            count,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if ret < 0 { 0 } else { ret as usize }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    #[test]
    fn wait_returns_at_once_when_the_value_differs() {
        let word = AtomicU32::new(1);
        let outcome = wait(&word, 0, Some(Duration::from_secs(5)));
        assert_eq!(outcome, WaitOutcome::ValueChanged);
    }

    #[test]
    fn wait_times_out() {
        let word = AtomicU32::new(0);
        let start = Instant::now();
        let outcome = wait(&word, 0, Some(Duration::from_millis(30)));
        assert_eq!(outcome, WaitOutcome::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn wake_releases_a_sleeper() {
        let word = Arc::new(AtomicU32::new(0));
        let sleeper = {
            let word = Arc::clone(&word);
            std::thread::spawn(move || {
                while word.load(Ordering::Acquire) == 0 {
                    wait(&word, 0, Some(Duration::from_secs(10)));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        word.store(1, Ordering::Release);
        wake(&word, 1);
        sleeper.join().unwrap();
    }

    #[test]
    fn calls_are_counted_per_thread() {
        let word = AtomicU32::new(0);
        let before = calls_on_this_thread();
        wake(&word, 1);
        wait(&word, 7, None);
        assert_eq!(calls_on_this_thread() - before, 2);
        let other = std::thread::spawn(calls_on_this_thread).join().unwrap();
        assert_eq!(other, 0);
    }

    #[test]
    fn shared_wake_releases_a_shared_sleeper_and_is_counted() {
        let word = Arc::new(AtomicU32::new(0));
        let sleeper = {
            let word = Arc::clone(&word);
            std::thread::spawn(move || {
                while word.load(Ordering::Acquire) == 0 {
                    wait_shared(&word, 0, Some(Duration::from_secs(10)));
                }
                calls_on_this_thread()
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        let before = calls_on_this_thread();
        word.store(1, Ordering::Release);
        wake_shared(&word, 1);
        assert_eq!(calls_on_this_thread() - before, 1);
        assert!(sleeper.join().unwrap() >= 1);
    }

    #[test]
    fn a_private_wake_does_not_reach_a_shared_sleeper() {
        // Different keys in the kernel: the private wake finds nobody, and
        // the sleeper runs into its timeout.
        let word = Arc::new(AtomicU32::new(0));
        let sleeper = {
            let word = Arc::clone(&word);
            std::thread::spawn(move || wait_shared(&word, 0, Some(Duration::from_millis(300))))
        };
        std::thread::sleep(Duration::from_millis(50));
        // Without the store, only a wake that reaches the sleeper ends it
        // early; a private wake returns 0 woken.
        let mut woken = 0;
        for _ in 0..5 {
            woken += wake(&word, 1);
        }
        assert_eq!(woken, 0);
        assert_eq!(sleeper.join().unwrap(), WaitOutcome::TimedOut);
    }
}
