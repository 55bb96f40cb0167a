//! What the engine reads about tasks from /proc (through the procfs
//! crate). /proc/TID works for any thread id, not only for process ids.

use procfs::process::Process;

use crate::ptrace::Tid;

fn status(tid: Tid) -> Option<procfs::process::Status> {
    Process::new(tid).ok()?.status().ok()
}

/// The state letter of a task (R, S, D, T, t, Z…).
pub(crate) fn task_state(tid: Tid) -> Option<char> {
    status(tid)?.state.chars().next()
}

/// Who traces `tid` (0: nobody).
pub(crate) fn tracer_of(tid: Tid) -> Option<Tid> {
    Some(status(tid)?.tracerpid)
}

/// The thread group id of `tid` (the tid itself if unknown).
pub(crate) fn tgid_of(tid: Tid) -> Tid {
    status(tid).map_or(tid, |s| s.tgid)
}

/// What `tid` is doing as far as syscalls go, from /proc/TID/syscall
/// (which needs ptrace's permission: we are its tracer).
pub(crate) fn syscall_of(tid: Tid) -> Option<tracebench_trace::Sampled> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/syscall")).ok()?;
    tracebench_trace::Sampled::from_proc_syscall(&text)
}

/// Whether `tid` is asleep (state S): the test hook of the interrupt race
/// waits for an idle program.
pub(crate) fn is_asleep(tid: Tid) -> bool {
    task_state(tid) == Some('S')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_task() {
        // SAFETY: getpid and gettid have no preconditions.
        let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
        assert_eq!(tgid_of(tid), pid);
        assert_eq!(task_state(tid), Some('R'));
        assert_eq!(tracer_of(pid), Some(0));
        assert_eq!(tgid_of(-5), -5, "unknown: the tid itself");
    }
}
