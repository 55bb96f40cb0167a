//! A mutex on one futex word, after Drepper's "Futexes Are Tricky" (mutex 2).
//!
//! The word has three states:
//!
//! * `UNLOCKED` (0),
//! * `LOCKED` (1): held, and nobody sleeps on it,
//! * `CONTENDED` (2): held, and somebody may sleep on it.
//!
//! Locking an unlocked mutex is one compare-and-swap; unlocking a mutex
//! nobody waits for is one atomic decrement. Only a thread that finds the
//! mutex held goes to the kernel, and only an unlock that sees `CONTENDED`
//! calls `FUTEX_WAKE`: the uncontended path makes no system call at all.

use std::cell::UnsafeCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::futex;

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// How many times a locker re-reads a held lock before sleeping. A lock in
/// this server is held for a few dozen instructions, so a short spin often
/// saves a pair of futex calls; a long one would burn CPU the holder needs.
const SPIN_LIMIT: u32 = 100;

/// A mutual-exclusion lock built on one futex word.
pub struct FutexMutex<T: ?Sized> {
    state: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one thread at a time, so
// sharing the mutex is safe whenever moving the value between threads is.
unsafe impl<T: ?Sized + Send> Sync for FutexMutex<T> {}
// SAFETY: owning the mutex is owning the value.
unsafe impl<T: ?Sized + Send> Send for FutexMutex<T> {}

impl<T> FutexMutex<T> {
    /// A new, unlocked mutex holding `value`.
    pub const fn new(value: T) -> Self {
        Self {
            state: AtomicU32::new(UNLOCKED),
            value: UnsafeCell::new(value),
        }
    }

    /// Consumes the mutex and returns the value.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: ?Sized> FutexMutex<T> {
    /// Locks the mutex, sleeping on the futex while another thread holds it.
    pub fn lock(&self) -> FutexMutexGuard<'_, T> {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        FutexMutexGuard { mutex: self }
    }

    /// Takes the lock if it is free, without waiting and without a system
    /// call.
    pub fn try_lock(&self) -> Option<FutexMutexGuard<'_, T>> {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| FutexMutexGuard { mutex: self })
    }

    /// The slow path: spin briefly, then store `CONTENDED` until the
    /// previous value is `UNLOCKED`, sleeping in between. A thread that slept
    /// cannot know whether others still sleep, so it must leave `CONTENDED`
    /// behind: the next unlock then wakes one of them.
    fn lock_contended(&self) {
        let mut spins = 0;
        while self.state.load(Ordering::Relaxed) == LOCKED && spins < SPIN_LIMIT {
            std::hint::spin_loop();
            spins += 1;
        }
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            futex::wait(&self.state, CONTENDED, None);
        }
    }

    fn unlock(&self) {
        if self.state.fetch_sub(1, Ordering::Release) != LOCKED {
            // The state was CONTENDED: somebody may sleep. Release the lock
            // fully before waking, so the woken thread can take it.
            self.state.store(UNLOCKED, Ordering::Release);
            futex::wake(&self.state, 1);
        }
    }

    /// A mutable reference to the value; no locking needed since `&mut self`
    /// proves no other reference exists.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

impl<T: Default> Default for FutexMutex<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: ?Sized> fmt::Debug for FutexMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state.load(Ordering::Relaxed) {
            UNLOCKED => "unlocked",
            LOCKED => "locked",
            _ => "contended",
        };
        f.debug_struct("FutexMutex").field("state", &state).finish()
    }
}

/// Proof that the lock is held; unlocks when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct FutexMutexGuard<'a, T: ?Sized> {
    mutex: &'a FutexMutex<T>,
}

impl<'a, T: ?Sized> FutexMutexGuard<'a, T> {
    /// The mutex this guard holds, for condition variables.
    pub(crate) fn mutex(&self) -> &'a FutexMutex<T> {
        self.mutex
    }
}

impl<T: ?Sized> Deref for FutexMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this thread holds the lock.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T: ?Sized> DerefMut for FutexMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while this thread holds the lock,
        // and `&mut self` makes this the only reference through the guard.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T: ?Sized> Drop for FutexMutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn uncontended_lock_and_unlock_make_no_futex_call() {
        let mutex = FutexMutex::new(0u64);
        let before = futex::calls_on_this_thread();
        for _ in 0..10_000 {
            *mutex.lock() += 1;
        }
        assert_eq!(futex::calls_on_this_thread(), before);
        assert_eq!(*mutex.lock(), 10_000);
    }

    #[test]
    fn eight_threads_times_100_000_increments_sum_exactly() {
        const THREADS: u64 = 8;
        const INCREMENTS: u64 = 100_000;
        // A plain integer, not an atomic: only the lock keeps it right.
        let counter = Arc::new(FutexMutex::new(0u64));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..INCREMENTS {
                        let mut guard = counter.lock();
                        // Read, yield the core now and then, write: lost
                        // updates would show if the lock did not exclude.
                        let seen = *guard;
                        if seen.is_multiple_of(1024) {
                            std::thread::yield_now();
                        }
                        *guard = seen + 1;
                    }
                    futex::calls_on_this_thread()
                })
            })
            .collect();
        let calls: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(*counter.lock(), THREADS * INCREMENTS);
        // Not an assertion of speed, only that contention went through the
        // kernel at all (and so the slow path was exercised).
        assert!(calls > 0, "8 threads never contended");
    }

    #[test]
    fn try_lock_fails_while_held() {
        let mutex = FutexMutex::new(());
        let guard = mutex.lock();
        assert!(mutex.try_lock().is_none());
        drop(guard);
        assert!(mutex.try_lock().is_some());
    }

    #[test]
    fn a_waiter_sleeps_until_unlock() {
        let mutex = Arc::new(FutexMutex::new(Vec::new()));
        let guard = mutex.lock();
        let waiter = {
            let mutex = Arc::clone(&mutex);
            std::thread::spawn(move || mutex.lock().push("waiter"))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(mutex.state.load(Ordering::Relaxed), CONTENDED);
        drop(guard);
        waiter.join().unwrap();
        assert_eq!(*mutex.lock(), vec!["waiter"]);
        assert_eq!(mutex.state.load(Ordering::Relaxed), UNLOCKED);
    }
}
