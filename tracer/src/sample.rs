//! No-stop sampling: the thread-state model from /proc alone, for loads
//! where stopping at syscalls would change too much.
//!
//! Every 1/HZ seconds each thread's `/proc/PID/task/TID/syscall` is read:
//! the kernel reports the syscall a blocked thread is in (number and
//! argument registers) or `running`. Nothing is stopped, so the cost is
//! independent of the syscall rate. The limits, also in the README:
//!
//! * a state is known only at sample instants: a call shorter than the
//!   sampling interval is usually missed, so counts and durations are
//!   statistical, not exact;
//! * no return values, no memory (paths, buffers), no signals;
//! * a thread that lives less than one interval may never be seen;
//! * reading `syscall` needs the same permission as ptrace (the same user,
//!   and yama's ptrace_scope), though it never stops anything.

use std::fs;
use std::time::{Duration, Instant};

use crate::TraceError;
use crate::engine::monotonic_ns;
use crate::states::{ThreadState, Timelines};

/// What one read of /proc says about a thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The thread.
    pub tid: i32,
    /// Its name (`comm`).
    pub name: String,
    /// What it was doing.
    pub state: ThreadState,
}

/// Parses the contents of `/proc/PID/task/TID/syscall`.
pub fn parse_syscall_file(text: &str) -> Option<ThreadState> {
    let text = text.trim();
    if text == "running" {
        return Some(ThreadState::Running);
    }
    let mut fields = text.split_whitespace();
    let nr: i64 = fields.next()?.parse().ok()?;
    if nr < 0 {
        // Blocked, but not in a syscall (a page fault, say).
        return Some(ThreadState::Running);
    }
    let mut args = [0u64; 6];
    for arg in &mut args {
        let field = fields.next()?;
        *arg = u64::from_str_radix(field.trim_start_matches("0x"), 16).ok()?;
    }
    Some(ThreadState::of_syscall(nr as u32, &args))
}

/// Reads every thread of `pid` once. `Ok(None)` when the process is gone.
pub fn sample(pid: i32) -> Result<Option<Vec<Sample>>, TraceError> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Ok(None);
    };
    let mut samples = Vec::new();
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        else {
            continue;
        };
        let path = task.path();
        let text = match fs::read_to_string(path.join("syscall")) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(TraceError::NotPermitted(pid));
            }
            // The thread exited between listing and reading.
            Err(_) => continue,
        };
        let Some(state) = parse_syscall_file(&text) else {
            continue;
        };
        let name = fs::read_to_string(path.join("comm"))
            .map(|c| c.trim().to_owned())
            .unwrap_or_default();
        samples.push(Sample { tid, name, state });
    }
    Ok(Some(samples))
}

/// Samples `pid` at `hz` until it exits or `keep_going` returns false,
/// feeding `timelines`. Returns how many samples were taken.
pub fn run(
    pid: i32,
    hz: u32,
    timelines: &mut Timelines,
    mut keep_going: impl FnMut() -> bool,
) -> Result<u64, TraceError> {
    if hz == 0 {
        return Err(TraceError::BadArgument(
            "--sample needs a rate above 0 Hz".into(),
        ));
    }
    let interval = Duration::from_secs_f64(1.0 / f64::from(hz));
    let mut next = Instant::now();
    let mut rounds = 0;
    let mut alive: Vec<i32> = Vec::new();
    while keep_going() {
        let Some(samples) = sample(pid)? else { break };
        let now = monotonic_ns();
        for s in &samples {
            timelines.observe(s.tid, pid, s.state, now);
        }
        // Threads that vanished since the last round have exited.
        for tid in alive
            .iter()
            .filter(|tid| !samples.iter().any(|s| s.tid == **tid))
        {
            timelines.observe(*tid, pid, ThreadState::Exited, now);
        }
        alive = samples.iter().map(|s| s.tid).collect();
        rounds += 1;
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    Ok(rounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_three_answers() {
        assert_eq!(parse_syscall_file("running\n"), Some(ThreadState::Running));
        assert_eq!(
            parse_syscall_file("-1 0x7ffd 0x7f00\n"),
            Some(ThreadState::Running)
        );
        let wait = "202 0x55d0c0 0x80 0x0 0x0 0x0 0x0 0x7ffd 0x7f00\n";
        assert_eq!(
            parse_syscall_file(wait),
            Some(ThreadState::FutexWait(0x55d0c0))
        );
        let accept = "288 0x3 0x0 0x0 0x80000 0x0 0x0 0x7ffd 0x7f00";
        assert_eq!(parse_syscall_file(accept), Some(ThreadState::Accept));
        assert_eq!(parse_syscall_file("garbage"), None);
    }

    #[test]
    fn samples_a_sleeping_thread_of_our_own() {
        let sleeper = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(400)));
        std::thread::sleep(Duration::from_millis(100));
        let samples = sample(std::process::id() as i32).unwrap().unwrap();
        sleeper.join().unwrap();
        assert!(
            samples.iter().any(|s| s.state == ThreadState::Sleep),
            "{samples:?}"
        );
    }
}
