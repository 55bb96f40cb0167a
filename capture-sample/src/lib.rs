//! The sampling capture backend: each thread's state from /proc alone,
//! for loads where stopping at syscalls would change too much.
//!
//! Every 1/HZ seconds each thread's `/proc/PID/task/TID/syscall` is read:
//! the kernel reports the syscall a blocked thread is in (number and
//! argument registers) or `running`. Nothing is stopped, so the cost is
//! independent of the syscall rate. Each change of what a thread is seen
//! doing becomes an [`EventKind::Sampled`] event, so a sampled trace is
//! written, replayed and shown like any other. The limits:
//!
//! * a state is known only at sample instants: a call shorter than the
//!   sampling interval is usually missed, so counts and durations are
//!   statistical, not exact;
//! * no return values, no memory (paths, buffers), no signals;
//! * a thread that lives less than one interval may never be seen;
//! * reading `syscall` needs the same permission as ptrace (the same user,
//!   and yama's ptrace_scope), though it never stops anything.

use std::collections::HashMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracebench_trace::clock::monotonic_ns;
use tracebench_trace::{
    Backend, Capture, CaptureEnd, CaptureError, Event, EventKind, EventSink, ExitStatus,
    ProgramStdio, Sampled, StopHandle, Tracee,
};

/// Parses the contents of `/proc/PID/task/TID/syscall` (see
/// [`Sampled::from_proc_syscall`]).
pub fn parse_syscall_file(text: &str) -> Option<Sampled> {
    Sampled::from_proc_syscall(text)
}

/// Reads every thread of `pid` once: (tid, what it is doing). `Ok(None)`
/// when the process is gone.
pub fn sample(pid: i32) -> Result<Option<Vec<(i32, Sampled)>>, CaptureError> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Ok(None);
    };
    let mut samples = Vec::new();
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let text = match fs::read_to_string(task.path().join("syscall")) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(CaptureError::NotPermitted {
                    pid,
                    why: "reading /proc/PID/task/TID/syscall needs ptrace's permission: the same user and kernel.yama.ptrace_scope, or root".into(),
                });
            }
            // The thread exited between listing and reading.
            Err(_) => continue,
        };
        if let Some(seen) = parse_syscall_file(&text) {
            samples.push((tid, seen));
        }
    }
    Ok(Some(samples))
}

/// A sampling capture of a spawned or running process.
pub struct SampleCapture {
    pid: i32,
    interval: Duration,
    /// The program we started, if we did.
    child: Option<Child>,
    stop: StopHandle,
}

impl SampleCapture {
    /// Starts the program, or checks that `pid` exists, for sampling at
    /// `hz` samples a second.
    pub fn start(
        tracee: &Tracee,
        hz: u32,
        stdio: &ProgramStdio,
    ) -> Result<SampleCapture, CaptureError> {
        if hz == 0 {
            return Err(CaptureError::BadArgument(
                "--sample needs a rate above 0 Hz".into(),
            ));
        }
        let (pid, child) = match tracee {
            Tracee::Attach { pids } => {
                let pid = tracebench_trace::capture::one_process(pids, "sample")?;
                if pid <= 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    return Err(CaptureError::NoSuchProcess(pid));
                }
                (pid, None)
            }
            Tracee::Spawn { program, args } => {
                let child = spawn(program, args, stdio)?;
                (child.id() as i32, Some(child))
            }
        };
        Ok(SampleCapture {
            pid,
            interval: Duration::from_secs_f64(1.0 / f64::from(hz)),
            child,
            stop: StopHandle::new(),
        })
    }

    /// The process sampled.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// One round: emits what changed since `seen`. `Ok(false)` once the
    /// process is gone.
    fn round(
        &self,
        seen: &mut HashMap<i32, Sampled>,
        sink: &mut dyn EventSink,
    ) -> Result<bool, CaptureError> {
        let Some(samples) = sample(self.pid)? else {
            return Ok(false);
        };
        let now = monotonic_ns();
        let mut emit = |tid, seen| {
            sink.event(&Event {
                time_ns: now,
                pid: self.pid,
                tid,
                kind: EventKind::Sampled { seen },
            })
        };
        for &(tid, state) in &samples {
            if seen.insert(tid, state) != Some(state) {
                emit(tid, state);
            }
        }
        // Threads that vanished since the last round have exited.
        let gone: Vec<i32> = seen
            .keys()
            .copied()
            .filter(|tid| !samples.iter().any(|(t, _)| t == tid))
            .collect();
        for tid in gone {
            seen.remove(&tid);
            emit(tid, Sampled::Gone);
        }
        Ok(true)
    }

    /// Whether the program we started has exited (reaping it), with how.
    fn child_exit(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        Some(match status.signal() {
            Some(signal) => ExitStatus::Signal(signal),
            None => ExitStatus::Code(status.code().unwrap_or(0)),
        })
    }

    /// Passes a stop on: the program we started gets the signal that
    /// stopped us (SIGKILL when forced), as under the ptrace backend.
    fn pass_stop_on(&mut self) {
        let Some(child) = self.child.as_ref() else {
            return;
        };
        let signal = match self.stop.signal() {
            Some(signal) if !self.stop.forced() && self.stop.signals() < 2 => signal,
            _ => libc::SIGKILL,
        };
        // SAFETY: kill(2) on the child we started and have not reaped.
        unsafe { libc::kill(child.id() as i32, signal) };
    }
}

/// Starts `program` with its standard streams where `stdio` says.
fn spawn(
    program: &std::ffi::OsStr,
    args: &[std::ffi::OsString],
    stdio: &ProgramStdio,
) -> Result<Child, CaptureError> {
    let mut command = Command::new(program);
    command.args(args);
    match stdio {
        ProgramStdio::Inherit => {}
        ProgramStdio::Null => {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        ProgramStdio::Capture(fd) => {
            let out = fd.try_clone().map_err(|source| CaptureError::Os {
                what: "duplicating the output pipe",
                source,
            })?;
            let err = fd.try_clone().map_err(|source| CaptureError::Os {
                what: "duplicating the output pipe",
                source,
            })?;
            command.stdin(Stdio::null()).stdout(out).stderr(err);
        }
    }
    command.spawn().map_err(|source| CaptureError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })
}

impl Capture for SampleCapture {
    fn backend(&self) -> Backend {
        Backend::Sample
    }

    fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    fn run(mut self: Box<Self>, sink: &mut dyn EventSink) -> Result<CaptureEnd, CaptureError> {
        let mut seen = HashMap::new();
        let mut next = Instant::now();
        let mut stop_passed = 0;
        let mut end = CaptureEnd::default();
        // One round a period, the first at once, until the program is gone
        // or the stop is for us.
        loop {
            let pending = u32::from(self.stop.forced()) + self.stop.signals();
            if pending > stop_passed {
                if self.child.is_none() {
                    end.detached = true;
                    break;
                }
                stop_passed = pending;
                self.pass_stop_on();
            }
            if let Some(status) = self.child_exit() {
                sink.event(&Event {
                    time_ns: monotonic_ns(),
                    pid: self.pid,
                    tid: self.pid,
                    kind: EventKind::Exited { status },
                });
                end.exit = Some(status);
                break;
            }
            if !self.round(&mut seen, sink)? && self.child.is_none() {
                break;
            }
            sink.idle(monotonic_ns());
            next += self.interval;
            // Short naps, so a stop is seen within 10 ms at any rate.
            loop {
                let now = Instant::now();
                let pending = u32::from(self.stop.forced()) + self.stop.signals();
                if now >= next || pending > stop_passed {
                    next = now.checked_sub(self.interval).map_or(next, |t| next.max(t));
                    break;
                }
                std::thread::sleep((next - now).min(Duration::from_millis(10)));
            }
        }
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_three_answers() {
        assert_eq!(parse_syscall_file("running\n"), Some(Sampled::Running));
        assert_eq!(
            parse_syscall_file("-1 0x7ffd 0x7f00\n"),
            Some(Sampled::Running)
        );
        let wait = "202 0x55d0c0 0x80 0x0 0x0 0x0 0x0 0x7ffd 0x7f00\n";
        assert_eq!(
            parse_syscall_file(wait),
            Some(Sampled::Blocked {
                nr: 202,
                args: [0x55d0c0, 0x80, 0, 0, 0, 0]
            })
        );
        assert_eq!(parse_syscall_file("garbage"), None);
    }

    #[test]
    fn samples_a_sleeping_thread_of_our_own() {
        let sleeper = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(400)));
        std::thread::sleep(Duration::from_millis(100));
        let samples = sample(std::process::id() as i32).unwrap().unwrap();
        sleeper.join().unwrap();
        let nanosleep = [libc::SYS_nanosleep as u32, libc::SYS_clock_nanosleep as u32];
        assert!(
            samples
                .iter()
                .any(|(_, s)| matches!(s, Sampled::Blocked { nr, .. } if nanosleep.contains(nr))),
            "{samples:?}"
        );
    }

    #[test]
    fn a_spawned_program_is_sampled_until_it_exits() {
        let tracee = Tracee::Spawn {
            program: "sleep".into(),
            args: vec!["0.3".into()],
        };
        let capture = SampleCapture::start(&tracee, 100, &ProgramStdio::Null).unwrap();
        let mut events = Vec::new();
        let end = Box::new(capture)
            .run(&mut |e: &Event| events.push(e.clone()))
            .unwrap();
        assert_eq!(end.exit, Some(ExitStatus::Code(0)));
        assert!(
            events.iter().any(|e| matches!(
                e.kind,
                EventKind::Sampled {
                    seen: Sampled::Blocked { .. }
                }
            )),
            "{events:?}"
        );
        assert!(matches!(
            events.last().map(|e| &e.kind),
            Some(EventKind::Exited { .. })
        ));
    }
}
