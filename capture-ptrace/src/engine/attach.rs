//! Attaching to a running process, and letting go of it.

use std::path::Path;

use tracebench_trace::{CaptureError, EventSink};

use super::{Engine, Thread, ptrace_options};
use crate::proc::{task_state, tgid_of, tracer_of};
use crate::ptrace::{self, Stop, Tid};

impl Engine {
    /// Seizes every thread of `pid`, re-reading /proc/PID/task until a
    /// pass finds no new thread (threads may be created while we attach),
    /// then interrupts each so the loop can start tracing it.
    pub(crate) fn attach(&mut self, pid: i32) -> Result<(), CaptureError> {
        if pid <= 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(CaptureError::NoSuchProcess(pid));
        }
        if tgid_of(pid) != pid {
            return Err(CaptureError::BadArgument(format!(
                "{pid} is a thread, not a process; use its process id"
            )));
        }
        if pid == std::process::id() as i32 {
            return Err(CaptureError::BadArgument(format!(
                "{pid} is this tracebench itself: a process cannot trace itself"
            )));
        }
        if self.root == 0 {
            self.root = pid;
        }
        // Threads of processes attached before this one (strace's several
        // -p); a pid named twice, or a child of one, is already ours.
        let before = self.threads.len();
        let options = ptrace_options(false, self.options.follow_forks, false);
        loop {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map_err(|_| CaptureError::NoSuchProcess(pid))?;
            let mut new = 0;
            for task in tasks.flatten() {
                let Some(tid) = task
                    .file_name()
                    .to_str()
                    .and_then(|t| t.parse::<Tid>().ok())
                else {
                    continue;
                };
                if self.threads.contains_key(&tid) {
                    continue;
                }
                if task_state(tid) == Some('Z') {
                    // A leader that exited before its threads: nothing to
                    // trace, and it cannot be seized.
                    continue;
                }
                match ptrace::seize(tid, options) {
                    Ok(()) => {
                        new += 1;
                        self.threads.insert(tid, Thread::new(pid));
                        let _ = ptrace::interrupt(tid);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    // A thread created by one we already seized is traced
                    // through PTRACE_O_TRACECLONE: ours already, and its
                    // first stop is on its way.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EPERM)
                            && tracer_of(tid) == Some(std::process::id() as Tid) =>
                    {
                        new += 1;
                        self.threads.insert(tid, Thread::new(pid));
                    }
                    Err(e)
                        if e.raw_os_error() == Some(libc::EPERM)
                            && self.threads.len() == before =>
                    {
                        return Err(CaptureError::NotPermitted {
                            pid,
                            why: not_permitted_why(tid),
                        });
                    }
                    // Exiting as we looked: gone.
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                    Err(source) => {
                        return Err(CaptureError::Os {
                            what: "PTRACE_SEIZE",
                            source,
                        });
                    }
                }
            }
            if new == 0 {
                break;
            }
        }
        if self.threads.len() == before && !self.threads.values().any(|t| t.pid == pid) {
            if task_state(pid) == Some('Z') {
                return Err(CaptureError::BadArgument(format!(
                    "{pid} is a zombie: it has exited and waits for its parent to reap it; nothing is left to trace"
                )));
            }
            return Err(CaptureError::NoSuchProcess(pid));
        }
        Ok(())
    }

    /// Lets go of every thread so the program runs on as if never traced.
    /// A thread must be in a ptrace-stop to be detached: interrupt each,
    /// wait for its stop, and pass on a signal it was about to receive.
    pub(super) fn detach_all(&mut self, sink: &mut dyn EventSink) {
        // Threads past PTRACE_EVENT_EXIT never stop again: do not wait for
        // them (a zombie leader would hold the loop forever).
        self.threads.retain(|_, t| !t.exiting);
        for &tid in self.threads.keys() {
            let _ = ptrace::interrupt(tid);
        }
        while !self.threads.is_empty() {
            let (tid, status) = match ptrace::wait_any(false) {
                Ok(Some(stop)) => stop,
                Ok(None) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(_) => break,
            };
            match Stop::from_status(status) {
                Some(Stop::Exited(_) | Stop::Killed(_)) | None => self.handle(tid, status, sink),
                Some(Stop::Signal(signal)) => {
                    let _ = ptrace::detach(tid, signal);
                    self.threads.remove(&tid);
                }
                Some(Stop::Event(
                    libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK,
                    _,
                )) => {
                    // A task born while we let go is ours too: wait for its
                    // first stop and detach it as well.
                    if let Ok(child) = ptrace::event_message(tid) {
                        self.threads
                            .entry(child as Tid)
                            .or_insert_with(|| Thread::new(child as Tid));
                    }
                    let _ = ptrace::detach(tid, 0);
                    self.threads.remove(&tid);
                }
                Some(_) => {
                    let _ = ptrace::detach(tid, 0);
                    self.threads.remove(&tid);
                }
            }
            self.threads.retain(|_, t| !t.exiting);
        }
        self.detached = true;
    }
}

/// Why PTRACE_SEIZE of `tid` was refused, as far as we can tell: root is
/// told the real reason, not to try as root.
fn not_permitted_why(tid: Tid) -> String {
    let tracer = tracer_of(tid).unwrap_or(0);
    if tracer != 0 {
        return format!("it is traced already (by pid {tracer}: a debugger, strace?)");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return "the kernel refused even root (a kernel thread, or a lockdown/LSM policy)".into();
    }
    "another user's, or kernel.yama.ptrace_scope forbids it; try as root".into()
}
