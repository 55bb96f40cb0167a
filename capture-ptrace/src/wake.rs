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
