//! The signals that end a capture (SIGINT, SIGTERM, SIGHUP), caught with
//! signal-hook and turned into calls on a [`StopHandle`], or only noted
//! for a caller that has its own things to stop first (a dashboard's load).
//! Without a handler, those signals would kill tracebench and, through
//! PTRACE_O_EXITKILL, a traced program with it, with nothing put away.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use crate::capture::StopHandle;

/// The signals that end a capture.
pub const ENDING_SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// Catches the [`ENDING_SIGNALS`] for as long as it lives, handing each to
/// a callback on its own thread.
pub struct SignalWatch {
    handle: Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalWatch {
    fn start(mut on_signal: impl FnMut(i32) + Send + 'static) -> io::Result<SignalWatch> {
        let mut signals = Signals::new(ENDING_SIGNALS)?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    on_signal(signal);
                }
            })?;
        Ok(SignalWatch {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Passes every ending signal to `stop` as [`StopHandle::interrupt`]: a
/// spawned program gets it to handle, as under strace, and a second one
/// kills it; an attached program is let go.
pub fn forward_to(stop: &StopHandle) -> io::Result<SignalWatch> {
    let stop = stop.clone();
    SignalWatch::start(move |signal| stop.interrupt(signal))
}

/// Notes the first ending signal, for the caller to act on.
#[derive(Clone, Default)]
pub struct Noticed(Arc<AtomicI32>);

impl Noticed {
    /// The first ending signal that arrived, if any.
    pub fn first(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }
}

/// Catches the ending signals and only notes them (see [`Noticed`]).
pub fn notice() -> io::Result<(SignalWatch, Noticed)> {
    let noticed = Noticed::default();
    let first = Arc::clone(&noticed.0);
    let watch = SignalWatch::start(move |signal| {
        let _ = first.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    })?;
    Ok((watch, noticed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_reaches_the_stop_handle() {
        let stop = StopHandle::new();
        let watch = forward_to(&stop).unwrap();
        // SAFETY: raise(3) sends SIGHUP to ourselves, caught by the watch.
        unsafe { libc::raise(SIGHUP) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while stop.signal().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(stop.signal(), Some(SIGHUP));
        drop(watch);
    }
}
