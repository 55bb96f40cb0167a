//! A condition variable on a futex sequence counter.
//!
//! The classic lost wake-up: a waiter checks its condition under the lock,
//! unlocks, and before it sleeps a notifier changes the condition and wakes
//! nobody. Here every notify first bumps `sequence`; the waiter reads the
//! sequence while it still holds the lock and sleeps with `FUTEX_WAIT` only
//! if the sequence is unchanged. A notify that slips between the unlock and
//! the sleep changes the word, the kernel sees it, and the waiter does not
//! sleep. (The counter wraps after 2^32 notifies; a waiter would have to
//! miss exactly that many between two instructions to be fooled.)
//!
//! `waiters` lets a notify skip `FUTEX_WAKE` when nobody waits: in a busy
//! thread pool most hand-offs find every worker busy, and a wake system call
//! per request would be pure overhead.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::mutex::FutexMutexGuard;
use crate::futex;

/// A condition variable for [`super::FutexMutex`].
#[derive(Debug, Default)]
pub struct FutexCondvar {
    sequence: AtomicU32,
    waiters: AtomicU32,
}

impl FutexCondvar {
    /// A new condition variable with no waiters.
    pub const fn new() -> Self {
        Self {
            sequence: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    /// Unlocks `guard`'s mutex, sleeps until notified, and locks it again.
    ///
    /// Wake-ups may be spurious: call it in a loop that re-checks the
    /// condition, as with every condition variable.
    pub fn wait<'a, T: ?Sized>(&self, guard: FutexMutexGuard<'a, T>) -> FutexMutexGuard<'a, T> {
        self.wait_until(guard, None).0
    }

    /// Like [`FutexCondvar::wait`], but gives up after `timeout`; the flag
    /// says whether it timed out.
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: FutexMutexGuard<'a, T>,
        timeout: Duration,
    ) -> (FutexMutexGuard<'a, T>, bool) {
        self.wait_until(guard, Some(Instant::now() + timeout))
    }

    fn wait_until<'a, T: ?Sized>(
        &self,
        guard: FutexMutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> (FutexMutexGuard<'a, T>, bool) {
        let mutex = guard.mutex();
        // Both under the lock: a notifier that runs after our unlock either
        // sees us counted or has bumped the sequence we compare against.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let sequence = self.sequence.load(Ordering::SeqCst);
        drop(guard);

        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let outcome = if timeout == Some(Duration::ZERO) {
            futex::WaitOutcome::TimedOut
        } else {
            futex::wait(&self.sequence, sequence, timeout)
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);

        // An ordinary lock, not one that marks the mutex contended: we slept
        // on the sequence word, not on the mutex, so we know no more about
        // the mutex's sleepers than any fresh locker. (A condvar that
        // requeued its waiters onto the mutex word would have to mark it.)
        (mutex.lock(), outcome == futex::WaitOutcome::TimedOut)
    }

    /// Wakes one waiting thread, if any.
    pub fn notify_one(&self) {
        self.sequence.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(&self.sequence, 1);
        }
    }

    /// Wakes every waiting thread.
    pub fn notify_all(&self) {
        self.sequence.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(&self.sequence, u32::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::FutexMutex;
    use std::sync::Arc;

    #[test]
    fn notify_without_waiters_makes_no_futex_call() {
        let condvar = FutexCondvar::new();
        let before = futex::calls_on_this_thread();
        condvar.notify_one();
        condvar.notify_all();
        assert_eq!(futex::calls_on_this_thread(), before);
    }

    #[test]
    fn wait_timeout_times_out_and_relocks() {
        let mutex = FutexMutex::new(5);
        let condvar = FutexCondvar::new();
        let start = Instant::now();
        let (guard, timed_out) = condvar.wait_timeout(mutex.lock(), Duration::from_millis(30));
        assert!(timed_out);
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(*guard, 5);
        assert!(mutex.try_lock().is_none(), "the guard must hold the lock");
    }

    #[test]
    fn ping_pong_never_loses_a_wake_up() {
        // Two threads hand a turn back and forth 20 000 times. A single lost
        // wake-up would leave both asleep; the timeout turns that into a
        // failure instead of a hang.
        const ROUNDS: u32 = 20_000;
        let shared = Arc::new((FutexMutex::new(0u32), FutexCondvar::new()));
        let spawn_player = |parity: u32| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let (turn, condvar) = &*shared;
                let mut guard = turn.lock();
                loop {
                    while *guard % 2 != parity && *guard < ROUNDS {
                        let (g, timed_out) = condvar.wait_timeout(guard, Duration::from_secs(20));
                        guard = g;
                        assert!(!timed_out, "lost wake-up at turn {}", *guard);
                    }
                    if *guard >= ROUNDS {
                        return;
                    }
                    *guard += 1;
                    condvar.notify_one();
                }
            })
        };
        let even = spawn_player(0);
        let odd = spawn_player(1);
        even.join().unwrap();
        odd.join().unwrap();
        assert_eq!(*shared.0.lock(), ROUNDS);
    }
}
