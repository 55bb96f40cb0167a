//! What the multi-process labs share: a forked child that is always reaped
//! (and killed first if the lab fails), and a `MAP_SHARED` page both
//! processes see.

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::{LabError, Result};

/// A child process from fork(2). Dropping it before [`ForkedChild::wait`]
/// kills and reaps it, so no error path leaves a child running or a zombie
/// behind.
#[derive(Debug)]
pub(crate) struct ForkedChild {
    pid: libc::pid_t,
    reaped: bool,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildExit {
    /// `_exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ForkedChild {
    /// Forks; the child runs `body` and `_exit`s with what it returns. The
    /// child gets SIGKILL if the parent dies first (PR_SET_PDEATHSIG), so
    /// even a killed lab leaves nothing behind.
    ///
    /// `body` runs in a copy of a process that may have had other threads
    /// (the test harness): it must only make system calls and touch memory
    /// it owns — no locks another thread might have held at the fork.
    pub(crate) fn spawn(body: impl FnOnce() -> i32) -> Result<ForkedChild> {
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: fork has no memory-safety preconditions; the child below
        // only runs `body` (whose contract is stated above) and `_exit`s
        // without returning into the caller's frames.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(LabError::last_os("fork"));
        }
        if pid == 0 {
            // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number; then
            // getppid, which has no preconditions. If the parent died before
            // the prctl, our parent is already someone else: leave at once.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            // A panic must not unwind into the parent's copy of the stack.
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
            // SAFETY: _exit ends the child without running the parent's
            // destructors or flushing its copied stdio buffers.
            unsafe { libc::_exit(code) };
        }
        Ok(ForkedChild { pid, reaped: false })
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Waits for the child to exit, for at most `limit`; kills it if it
    /// has not by then.
    pub(crate) fn wait(mut self, limit: Duration) -> Result<ChildExit> {
        let deadline = Instant::now() + limit;
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            let ret = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if ret < 0 {
                let error = std::io::Error::last_os_error();
                if error.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(LabError::Os {
                    what: "waitpid",
                    source: error,
                });
            }
            if ret == self.pid {
                self.reaped = true;
                return Ok(if libc::WIFSIGNALED(status) {
                    ChildExit::Signal(libc::WTERMSIG(status))
                } else {
                    ChildExit::Code(libc::WEXITSTATUS(status))
                });
            }
            if Instant::now() >= deadline {
                // Drop kills and reaps it.
                return Err(LabError::TimedOut("the child process did not exit"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for ForkedChild {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // SAFETY: kill and waitpid on our own child, which has not been
        // reaped, so the pid cannot have been reused.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            let mut status = 0;
            while libc::waitpid(self.pid, &mut status, 0) < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
        }
    }
}

/// A `T` in an anonymous `MAP_SHARED` mapping: after a fork, parent and
/// child see the same `T`, not copies. `T` should be made of atomics.
pub(crate) struct SharedMap<T: Sync> {
    ptr: NonNull<T>,
    len: usize,
}

impl<T: Sync> SharedMap<T> {
    /// Maps a shared page (or more) and moves `value` into it.
    pub(crate) fn new(value: T) -> Result<SharedMap<T>> {
        let len = std::mem::size_of::<T>().max(1);
        // SAFETY: an anonymous mapping at an address of the kernel's choice
        // touches no existing memory.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(LabError::last_os("mmap MAP_SHARED"));
        }
        let ptr =
            NonNull::new(addr.cast::<T>()).ok_or(LabError::Failed("mmap returned null".into()))?;
        // SAFETY: the mapping is page-aligned (enough for any T here), at
        // least size_of::<T>() long, writable, and not yet shared with
        // anyone.
        unsafe { ptr.as_ptr().write(value) };
        Ok(SharedMap { ptr, len })
    }
}

impl<T: Sync> std::ops::Deref for SharedMap<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: initialised in `new`, mapped until drop; only shared
        // references are handed out and T is Sync.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: Sync> Drop for SharedMap<T> {
    fn drop(&mut self) {
        // SAFETY: the value was written in `new` and is dropped once; the
        // mapping is ours and unmapped once. A forked child leaves through
        // _exit and never runs this.
        unsafe {
            std::ptr::drop_in_place(self.ptr.as_ptr());
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_child_writes_what_the_parent_reads_through_the_shared_page() {
        let shared = SharedMap::new(AtomicU32::new(0)).unwrap();
        let child = ForkedChild::spawn(|| {
            shared.store(42, Ordering::Release);
            7
        })
        .unwrap();
        assert_eq!(
            child.wait(Duration::from_secs(10)).unwrap(),
            ChildExit::Code(7)
        );
        assert_eq!(shared.load(Ordering::Acquire), 42);
    }

    #[test]
    fn a_dropped_child_is_killed_and_reaped() {
        let child = ForkedChild::spawn(|| {
            // SAFETY: pause has no preconditions; it sleeps until a signal.
            unsafe { libc::pause() };
            0
        })
        .unwrap();
        let pid = child.pid();
        drop(child);
        // Reaped: the pid is no longer our child.
        // SAFETY: waitpid with a null status pointer is allowed.
        let ret = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(ret, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ECHILD)
        );
    }

    #[test]
    fn wait_kills_a_child_that_overstays() {
        let child = ForkedChild::spawn(|| {
            // SAFETY: as above.
            unsafe { libc::pause() };
            0
        })
        .unwrap();
        let error = child.wait(Duration::from_millis(50)).unwrap_err();
        assert!(matches!(error, LabError::TimedOut(_)), "{error}");
    }
}
