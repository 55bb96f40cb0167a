//! The one interface every capture backend implements, and what the
//! layers above need to drive one without knowing which it is: what to
//! trace ([`Tracee`]), how it ended ([`CaptureEnd`]), why it could not
//! ([`CaptureError`]), and how to end it from another thread
//! ([`StopHandle`]).

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::event::{EventSink, ExitStatus};
use crate::selection::Selection;

/// What to trace.
#[derive(Debug, Clone)]
pub enum Tracee {
    /// Start this program (searched in PATH) with these arguments.
    Spawn {
        /// The program.
        program: OsString,
        /// Its arguments, without the program name.
        args: Vec<OsString>,
    },
    /// Follow every thread of these running processes.
    Attach {
        /// Their process ids (at least one). The first is the program:
        /// its end is the capture's exit status.
        pids: Vec<i32>,
    },
}

/// The one process of an attach, for the backends that follow one: several
/// (strace's several -p) are the ptrace backend's.
pub fn one_process(pids: &[i32], backend: &str) -> Result<i32, CaptureError> {
    match pids {
        [pid] => Ok(*pid),
        [] => Err(CaptureError::BadArgument("no process to attach to".into())),
        _ => Err(CaptureError::BadArgument(format!(
            "the {backend} backend follows one process; several (-p) need the ptrace backend"
        ))),
    }
}

/// Where a spawned program's standard streams go.
#[derive(Debug, Clone, Default)]
pub enum ProgramStdio {
    /// Ours: the program shares the tracer's terminal or files.
    #[default]
    Inherit,
    /// /dev/null for all three (a dashboard owns the terminal).
    Null,
    /// /dev/null for input; output and error both to this file descriptor,
    /// typically a pipe's write end whose read end the caller drains.
    /// The tracer's copy closes when the capture ends, so the reader sees
    /// end-of-file once the program and every child holding it are gone.
    Capture(Arc<OwnedFd>),
}

/// The capture backends, by the name the command line and the trace
/// file's header give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// ptrace: stops the program at every selected syscall; reads the
    /// memory behind pointer arguments.
    Ptrace,
    /// Kernel tracepoints, kept to the traced threads by eBPF programs and
    /// read through a ring buffer: no stops, plus the scheduler's view; no
    /// memory behind pointers.
    Perf,
    /// /proc sampling: each thread's state at fixed intervals.
    Sample,
}

impl Backend {
    /// The name used on the command line and in trace files.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Ptrace => "ptrace",
            Backend::Perf => "perf",
            Backend::Sample => "sample",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(name: &str) -> Result<Backend, String> {
        [Backend::Ptrace, Backend::Perf, Backend::Sample]
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| format!("unknown capture backend {name:?}"))
    }
}

/// How a capture ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaptureEnd {
    /// The traced program's exit, when it ended while traced.
    pub exit: Option<ExitStatus>,
    /// Whether the capture let go of a still-running program (attach mode,
    /// stopped).
    pub detached: bool,
    /// Events the kernel could not hand over (a full ring buffer), all
    /// CPUs together; each loss is also an event in the stream.
    pub lost_events: u64,
    /// Tracepoint hits the kernel ran none of our probes for, because
    /// another eBPF program was running on that CPU: whose they were is
    /// unknown (most are other processes'), so they are not events.
    pub skipped_probes: u64,
    /// What this capture could not see as well as the backend can
    /// elsewhere, one sentence each, for the user.
    pub caveats: Vec<String>,
}

impl CaptureEnd {
    /// What the user should be told of this capture's gaps, one sentence
    /// each: events lost, probes skipped, caveats.
    pub fn gaps(&self) -> Vec<String> {
        let mut gaps = Vec::new();
        if self.lost_events > 0 {
            gaps.push(format!(
                "{} events LOST: the kernel's ring buffers were full \
                 (the trace has gaps; a larger --buffer-size helps)",
                self.lost_events
            ));
        }
        if self.skipped_probes > 0 {
            gaps.push(format!(
                "the kernel skipped our probes {} times because another eBPF program was \
                 running on the same CPU; those tracepoint hits are not in the trace",
                self.skipped_probes
            ));
        }
        gaps.extend(self.caveats.iter().cloned());
        gaps
    }
}

/// Why a capture could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A value the backend cannot use.
    #[error("{0}")]
    BadArgument(String),
    /// The program to spawn could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program as given.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// No running process has this id.
    #[error("no process with pid {0}")]
    NoSuchProcess(i32),
    /// The kernel refused to let us trace the process.
    #[error("not permitted to trace pid {pid} ({why})")]
    NotPermitted {
        /// The process.
        pid: i32,
        /// What stood in the way, and what would help.
        why: String,
    },
    /// The backend cannot run here: a missing privilege or kernel feature,
    /// said in one line with what would fix it.
    #[error("the {backend} backend is not available: {why}")]
    Unavailable {
        /// Which backend.
        backend: Backend,
        /// What is missing, and how to get it.
        why: String,
    },
    /// A system call the backend needs failed.
    #[error("{what}")]
    Os {
        /// What we were doing.
        what: &'static str,
        /// What the kernel said.
        source: io::Error,
    },
}

/// A capture that has started (the program spawned, or the process
/// attached to) and is ready to produce events. Backends construct one
/// their own way; everything above them only runs it.
pub trait Capture {
    /// Which backend this is (for the trace file's header).
    fn backend(&self) -> Backend;

    /// A handle that ends this capture from another thread.
    fn stop_handle(&self) -> StopHandle;

    /// What this capture will not see, known once it has started (the
    /// same lines end in [`CaptureEnd::caveats`]); none by default.
    fn caveats(&self) -> Vec<String> {
        Vec::new()
    }

    /// Produces events into `sink` until the program is gone or the
    /// capture is stopped. Runs on the thread that started it.
    fn run(self: Box<Self>, sink: &mut dyn EventSink) -> Result<CaptureEnd, CaptureError>;
}

/// Starts a capture of a tracee, with its standard streams and the
/// syscalls to record, on the calling thread. The binary picks the backend
/// and hands the dashboard or the experiment this; they never name one.
pub type StartCapture = dyn Fn(&Tracee, ProgramStdio, &Selection) -> Result<Box<dyn Capture>, CaptureError>
    + Send
    + Sync;

/// The capture backend the dashboard runs, and how to start it.
#[derive(Clone)]
pub struct CaptureStarter {
    /// Which backend it is (for the recording's header).
    pub backend: Backend,
    /// Starts one.
    pub start: Arc<StartCapture>,
}

impl std::fmt::Debug for CaptureStarter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaptureStarter({})", self.backend)
    }
}

/// Ends a running capture from another thread, or from a signal watcher.
///
/// There are two ways to end one, as with strace: [`StopHandle::stop`]
/// ends it at once (a spawned program is killed, an attached one let go),
/// and [`StopHandle::interrupt`] passes a signal from outside on to a
/// spawned program to handle, stopping only if a second one comes. A
/// backend that blocks registers a waker ([`StopHandle::set_waker`]); once
/// a stop is asked for, the waker is called every 50 ms until the backend
/// takes it away, so a request that lands just before the backend blocks
/// is not lost.
#[derive(Clone, Default)]
pub struct StopHandle(Arc<StopState>);

#[derive(Default)]
struct StopState {
    /// [`StopHandle::stop`] was called.
    forced: AtomicBool,
    /// The first signal from outside (0: none yet).
    signal: AtomicI32,
    /// How many signals from outside arrived.
    signals: AtomicU32,
    /// A kicker thread is calling the waker.
    kicking: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

type Waker = Arc<dyn Fn() + Send + Sync>;

/// How often a blocked backend is woken while a stop is pending.
const KICK_INTERVAL: Duration = Duration::from_millis(50);

impl fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopHandle")
            .field("forced", &self.forced())
            .field("signal", &self.signal())
            .finish()
    }
}

impl StopHandle {
    /// A handle nobody has asked to stop yet.
    pub fn new() -> StopHandle {
        StopHandle::default()
    }

    /// Ends the capture now: a spawned program is killed, an attached one
    /// is let go and runs on.
    pub fn stop(&self) {
        self.0.forced.store(true, Ordering::SeqCst);
        self.kick();
    }

    /// A signal (SIGINT, SIGTERM, SIGHUP) arrived from outside. A spawned
    /// program gets the chance to handle it, as under strace, and the
    /// capture ends when it exits; a second signal kills it. An attached
    /// program is let go.
    pub fn interrupt(&self, signal: i32) {
        let _ = self
            .0
            .signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.0.signals.fetch_add(1, Ordering::SeqCst);
        self.kick();
    }

    /// Whether [`StopHandle::stop`] or [`StopHandle::interrupt`] was called.
    pub fn requested(&self) -> bool {
        self.forced() || self.signals() > 0
    }

    /// Whether [`StopHandle::stop`] was called.
    pub fn forced(&self) -> bool {
        self.0.forced.load(Ordering::SeqCst)
    }

    /// The first signal passed to [`StopHandle::interrupt`], if any.
    pub fn signal(&self) -> Option<i32> {
        match self.0.signal.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }

    /// How many signals [`StopHandle::interrupt`] was given.
    pub fn signals(&self) -> u32 {
        self.0.signals.load(Ordering::SeqCst)
    }

    /// For backends: `waker` interrupts the backend's blocking wait. It is
    /// called from another thread, every 50 ms while a stop is pending,
    /// until [`StopHandle::clear_waker`].
    pub fn set_waker(&self, waker: impl Fn() + Send + Sync + 'static) {
        *self.0.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(waker));
        if self.requested() {
            self.kick();
        }
    }

    /// For backends: no more wake-ups (the backend is done waiting). Once
    /// this returns, the waker is not running and will not run again.
    pub fn clear_waker(&self) {
        *self.0.waker.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Calls the waker now, and starts a thread that calls it every
    /// [`KICK_INTERVAL`] until it is cleared.
    fn kick(&self) {
        if !self.call_waker() {
            return;
        }
        if self.0.kicking.swap(true, Ordering::SeqCst) {
            return;
        }
        let handle = self.clone();
        let spawned = std::thread::Builder::new()
            .name("stop-kicker".into())
            .spawn(move || {
                while handle.call_waker() {
                    std::thread::sleep(KICK_INTERVAL);
                }
                handle.0.kicking.store(false, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.0.kicking.store(false, Ordering::SeqCst);
        }
    }

    /// Calls the waker if one is set; whether one was.
    fn call_waker(&self) -> bool {
        let waker = self.0.waker.lock().unwrap_or_else(|e| e.into_inner());
        match waker.as_ref() {
            Some(wake) => {
                // Called under the lock, so clear_waker waits for it.
                wake();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_pending_stop_keeps_waking_the_backend_until_it_lets_go() {
        let handle = StopHandle::new();
        let wakes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&wakes);
        handle.set_waker(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!handle.requested());
        assert_eq!(wakes.load(Ordering::SeqCst), 0, "no stop, no wake-up");
        handle.interrupt(libc::SIGINT);
        std::thread::sleep(Duration::from_millis(180));
        let woken = wakes.load(Ordering::SeqCst);
        assert!(woken >= 3, "woken {woken} times in 180 ms");
        handle.clear_waker();
        let after = wakes.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            after,
            "no wake-up once cleared"
        );
        assert_eq!(handle.signal(), Some(libc::SIGINT));
        assert!(!handle.forced());
        handle.interrupt(libc::SIGTERM);
        assert_eq!(
            handle.signal(),
            Some(libc::SIGINT),
            "the first signal is kept"
        );
        assert_eq!(handle.signals(), 2);
    }

    #[test]
    fn backends_parse_from_their_names() {
        for backend in [Backend::Ptrace, Backend::Perf, Backend::Sample] {
            assert_eq!(backend.name().parse::<Backend>(), Ok(backend));
        }
        assert!("dtrace".parse::<Backend>().is_err());
    }
}
