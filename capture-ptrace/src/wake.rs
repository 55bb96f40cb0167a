//! Interrupting the tracer's blocking waitpid from another thread.
//!
//! No file descriptor becomes ready on a ptrace stop, so the loop cannot
//! wait in poll(2) beside an eventfd: it waits in waitpid, and only a
//! signal interrupts that. A [`StopHandle`](tracebench_trace::StopHandle)
//! waker sends [`WAKE_SIGNAL`] to the loop's thread; its handler does
//! nothing, and being installed without SA_RESTART, makes waitpid return
//! EINTR so the loop looks at the stop request. SIGURG is ignored by
//! default, so a stray one harms nothing, and no part of tracebench uses
//! it otherwise. This stays hand-written: signal-hook installs its
//! handlers with SA_RESTART, which would resume the wait instead.

use std::sync::Once;

/// The signal that interrupts the loop's waitpid.
pub(crate) const WAKE_SIGNAL: libc::c_int = libc::SIGURG;

extern "C" fn do_nothing(_: libc::c_int) {}

/// Installs the do-nothing handler of [`WAKE_SIGNAL`], once per process.
fn install_handler() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler that touches nothing,
        // an empty mask and no flags (so no SA_RESTART).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = do_nothing as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(WAKE_SIGNAL, &action, std::ptr::null_mut());
        }
    });
}

/// The calling thread, as [`interrupt`] takes it; installs the handler.
pub(crate) fn this_thread() -> libc::pthread_t {
    install_handler();
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() }
}

/// Interrupts whatever blocking call `thread` is in. The caller keeps the
/// thread alive meanwhile (the waker is cleared before the loop returns).
pub(crate) fn interrupt(thread: libc::pthread_t) {
    // SAFETY: `thread` is a live thread of ours (see above), and
    // WAKE_SIGNAL's handler is installed.
    unsafe { libc::pthread_kill(thread, WAKE_SIGNAL) };
}

/// Interrupts a thread's blocking calls every `interval` while it lives:
/// the loop's waitpid returns now and then even when nothing stops, so it
/// can look at quiet threads. Dropping it stops the ticks (and waits for
/// the ticking thread, so none comes after).
pub(crate) struct Ticker {
    stop: Option<std::sync::mpsc::Sender<()>>,
    ticking: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    /// Starts ticking `thread` (from [`this_thread`]).
    pub(crate) fn start(thread: libc::pthread_t, interval: std::time::Duration) -> Ticker {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let ticking = std::thread::Builder::new()
            .name("tracer ticks".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(interval)
                {
                    interrupt(thread);
                }
            })
            .ok();
        Ticker {
            stop: Some(stop),
            ticking,
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(ticking) = self.ticking.take() {
            let _ = ticking.join();
        }
    }
}
