//! The perf capture backend of tracebench: the kernel's tracepoints, each
//! with a small eBPF program that keeps what concerns the threads we
//! follow and writes it to one ring buffer, so the traced program is never
//! stopped. Besides the selected syscalls, it sees what ptrace cannot: the
//! scheduler's view, when each thread went off and on a CPU (and whether
//! it was preempted, asleep or blocked) and who woke it. It cannot read
//! the program's memory: pointer arguments are marked as not captured,
//! never invented.
//!
//! Needs root (or CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH, for
//! tracefs), and tracefs (mounted if missing, as root).
//! The design, and what was measured to choose it, is in
//! docs/design/perf-backend-research.md.
//!
//! ```no_run
//! use tracebench_capture_perf::{PerfCapture, PerfOptions};
//! use tracebench_trace::{Capture, Event, Tracee};
//! let tracee = Tracee::Spawn { program: "ls".into(), args: vec![] };
//! let capture = PerfCapture::start(&tracee, &PerfOptions::default())?;
//! let mut count = 0;
//! let end = Box::new(capture).run(&mut |_: &Event| count += 1)?;
//! println!("{count} events, {} lost", end.lost_events);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bpf;
mod btf;
mod decode;
mod events;
mod merge;
mod probe;
mod ring;
mod spawn;
mod sys;
mod tidset;
mod tracefs;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tracebench_trace::clock::monotonic_ns;
use tracebench_trace::{
    Backend, Capture, CaptureEnd, CaptureError, Event, EventKind, EventSink, ExitStatus,
    ProgramStdio, Selection, StopHandle, Tracee,
};

use decode::{Decoder, Pairing};
use events::Events;
use merge::Pending;

/// How to capture.
#[derive(Debug, Clone)]
pub struct PerfOptions {
    /// The syscalls to record (filtered in the kernel).
    pub selection: Selection,
    /// Where a spawned program's standard streams go.
    pub stdio: ProgramStdio,
    /// Bytes of ring buffer per online CPU (all CPUs share one ring of
    /// their sum, rounded up to a power of two, at most 1 GiB). A full
    /// buffer loses events, counted and shown.
    pub buffer_bytes: usize,
}

/// The default ring size per CPU: 4 MiB, tens of thousands of events.
pub const DEFAULT_BUFFER_BYTES: usize = 4 << 20;

impl Default for PerfOptions {
    fn default() -> Self {
        PerfOptions {
            selection: Selection::default(),
            stdio: ProgramStdio::Inherit,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
        }
    }
}

/// Whether this backend can run here: tracefs found (or mounted) and a
/// tracepoint event allowed; the error says what is missing and how to get
/// it. Creates a map and opens an event, and closes both at once.
pub fn available() -> Result<(), CaptureError> {
    Events::allowed()
}

/// How long the reader sleeps at most between two reads of the ring.
const READ_INTERVAL: Duration = Duration::from_millis(100);
/// How long a spawned program may take to show it got the signal that
/// interrupted us before we pass it on (as the ptrace backend does).
const SIGNAL_GRACE: Duration = Duration::from_millis(100);

/// A perf capture whose events are open (the program spawned and held
/// until they were, or every thread of a running one followed).
pub struct PerfCapture {
    events: Events,
    decoder: Decoder,
    pairing: Pairing,
    root: i32,
    spawned: bool,
    /// Readable once the root process has exited.
    pidfd: OwnedFd,
    /// Written by the stop handle's waker.
    wake: OwnedFd,
    stop: StopHandle,
}

fn pidfd_open(pid: i32) -> Result<OwnedFd, CaptureError> {
    // SAFETY: pidfd_open takes a pid and flags, and returns a descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let source = io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::ESRCH) {
            return Err(CaptureError::NoSuchProcess(pid));
        }
        return Err(CaptureError::Os {
            what: "pidfd_open",
            source,
        });
    }
    // SAFETY: a fresh descriptor, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn eventfd() -> Result<OwnedFd, CaptureError> {
    // SAFETY: eventfd takes two integers and returns a descriptor.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(CaptureError::Os {
            what: "eventfd",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: a fresh descriptor, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The threads of process `pid`, from /proc.
fn threads_of(pid: i32) -> Result<Vec<i32>, CaptureError> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|_| CaptureError::NoSuchProcess(pid))?;
    Ok(tasks
        .flatten()
        .filter_map(|task| task.file_name().to_str()?.parse().ok())
        .collect())
}

impl PerfCapture {
    /// Spawns or attaches, with every event open and enabled (a spawned
    /// program's before it is let go to exec: its events count from the
    /// execve on).
    pub fn start(tracee: &Tracee, options: &PerfOptions) -> Result<PerfCapture, CaptureError> {
        let (events, ids) = Events::new(&options.selection, options.buffer_bytes)?;
        let mut pairing = Pairing::new(options.selection.clone());
        match tracee {
            Tracee::Spawn { program, args } => {
                let mut held = spawn::fork_held(program, args, &options.stdio)?;
                // Followed before the exec, so that its execve is seen
                // whole; what the child does before it is left out when
                // paired.
                events.follow(held.pid)?;
                let pidfd = pidfd_open(held.pid)?;
                pairing.track(held.pid, held.pid);
                pairing.skip_until_exec(held.pid);
                held.release()?;
                let decoder = Decoder::new(ids, held.pid);
                PerfCapture::assemble(events, decoder, pairing, held.pid, true, pidfd)
            }
            Tracee::Attach { pids } => {
                let pid = tracebench_trace::capture::one_process(pids, "perf")?;
                let mut decoder = Decoder::new(ids, pid);
                attach(&events, &mut pairing, &mut decoder, pid)?;
                let pidfd = pidfd_open(pid)?;
                PerfCapture::assemble(events, decoder, pairing, pid, false, pidfd)
            }
        }
    }

    fn assemble(
        events: Events,
        decoder: Decoder,
        pairing: Pairing,
        root: i32,
        spawned: bool,
        pidfd: OwnedFd,
    ) -> Result<PerfCapture, CaptureError> {
        Ok(PerfCapture {
            events,
            decoder,
            pairing,
            root,
            spawned,
            pidfd,
            wake: eventfd()?,
            stop: StopHandle::new(),
        })
    }

    /// Waits until the ring has a quarter filled, a stop is asked for, the
    /// root process exits (while `root_alive`), or [`READ_INTERVAL`]
    /// passes; whether it exited.
    fn wait(&self, root_alive: bool) -> bool {
        let mut fds = [
            self.events.ring_fd().as_raw_fd(),
            self.wake.as_raw_fd(),
            self.pidfd.as_raw_fd(),
        ]
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        let watched = if root_alive { fds.len() } else { fds.len() - 1 };
        // SAFETY: poll reads and writes our array of pollfds.
        unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                watched as libc::nfds_t,
                READ_INTERVAL.as_millis() as i32,
            )
        };
        let mut counter = 0u64;
        // SAFETY: reads 8 bytes into our counter (resets the eventfd).
        unsafe { libc::read(self.wake.as_raw_fd(), (&mut counter as *mut u64).cast(), 8) };
        root_alive && fds[2].revents != 0
    }

    /// Reads the ring into `pending`, and the losses counted since the
    /// last read; whether a record was still being written (the records
    /// behind it wait for the next read).
    fn drain(&mut self, pending: &mut Pending) -> bool {
        let decoder = &mut self.decoder;
        let queue = pending.queue();
        let from = queue.len();
        let busy = self
            .events
            .ring
            .drain(|record| decoder.record(record, queue));
        let losses = self.events.new_losses();
        if !losses.is_empty() {
            self.pairing.adopt_unknown();
            let now = monotonic_ns();
            for (cpu, count) in losses {
                decoder.lost(cpu, count, now, queue);
            }
        }
        pending.settle(from);
        busy
    }

    /// The spawned program's exit status, once it has exited (reaped).
    fn reap(&self) -> Option<ExitStatus> {
        let mut status = 0;
        // SAFETY: waitpid on our own child, writing our local status.
        let reaped = unsafe { libc::waitpid(self.root, &mut status, libc::WNOHANG) };
        (reaped == self.root).then(|| {
            if libc::WIFSIGNALED(status) {
                ExitStatus::Signal(libc::WTERMSIG(status))
            } else {
                ExitStatus::Code(libc::WEXITSTATUS(status))
            }
        })
    }
}

/// Scans of /proc/PID/task an attach makes at most, waiting for one that
/// finds no thread it has not seen.
const ATTACH_SCANS: usize = 100;

/// Follows every thread of running process `pid`, scanning /proc/PID/task
/// until a scan finds no new thread, as the ptrace backend seizes them: a
/// thread created by a followed one is followed by the kernel itself from
/// its birth, one created by a thread not yet followed is found by the
/// next scan. A thread gone before it was followed is forgotten again: its
/// id may come back as someone else's.
fn attach(
    events: &Events,
    pairing: &mut Pairing,
    decoder: &mut Decoder,
    pid: i32,
) -> Result<(), CaptureError> {
    if pid <= 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(CaptureError::NoSuchProcess(pid));
    }
    let mut seen = foldhash::HashSet::default();
    for _ in 0..ATTACH_SCANS {
        let new: Vec<i32> = threads_of(pid)?
            .into_iter()
            .filter(|tid| seen.insert(*tid))
            .collect();
        if new.is_empty() {
            break;
        }
        for tid in new {
            events.follow(tid)?;
            // Its exit may have passed the exit program before we added
            // it: checked after, so that no exit falls between.
            if exiting(pid, tid) {
                events.tids.remove(tid as u32);
            } else {
                pairing.track(tid, pid);
                decoder.track(tid, pid);
            }
        }
    }
    if seen.is_empty() {
        return Err(CaptureError::NoSuchProcess(pid));
    }
    Ok(())
}

/// The kernel's flag of a task on its way out (`PF_EXITING`), set before
/// `sched_process_exit` fires.
const PF_EXITING: u64 = 0x4;

/// Whether thread `tid` of `pid` is gone or exiting.
fn exiting(pid: i32, tid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else {
        return true;
    };
    // Past the command's closing parenthesis: state, ppid, …, flags (9th).
    let flags = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6))
        .and_then(|flags| flags.parse::<u64>().ok());
    flags.is_none_or(|flags| flags & PF_EXITING != 0)
}

/// Where a stop request stands.
#[derive(Default)]
struct Stopping {
    /// The signal passed on (or seen delivered), and since when we wait.
    graceful: Option<(i32, Instant, bool)>,
    killed: bool,
}

impl PerfCapture {
    /// Acts on a stop request; whether to let go now (attach mode).
    fn follow_stop(&mut self, stopping: &mut Stopping) -> bool {
        if !self.stop.requested() {
            return false;
        }
        if !self.spawned {
            return true;
        }
        if self.stop.forced() || self.stop.signals() >= 2 {
            if !stopping.killed {
                // SAFETY: kill(2) on the program we started.
                unsafe { libc::kill(self.root, libc::SIGKILL) };
                stopping.killed = true;
            }
            return false;
        }
        let Some(signal) = self.stop.signal() else {
            return false;
        };
        let (_, since, delivered) =
            stopping
                .graceful
                .get_or_insert((signal, Instant::now(), false));
        // A terminal's Ctrl-C reaches the program itself: do not repeat it.
        if self
            .decoder
            .root_signal
            .is_some_and(|(seen, at)| seen == signal && at + SIGNAL_GRACE >= *since)
        {
            *delivered = true;
        }
        if !*delivered && since.elapsed() >= SIGNAL_GRACE {
            // SAFETY: kill(2) on the program we started.
            unsafe { libc::kill(self.root, signal) };
            *delivered = true;
        }
        false
    }

    /// Queues the root's end, if seen: its real status when we reaped it,
    /// unknown when it was only attached.
    fn push_root_exit(&self, pending: &mut Pending, exit: Option<ExitStatus>) {
        let Some(time_ns) = self.decoder.root_exit_ns else {
            return;
        };
        let queue = pending.queue();
        queue.push_back(Event {
            time_ns,
            pid: self.root,
            tid: self.root,
            kind: EventKind::Exited {
                // Attached: not ours to reap, but its exit calls and
                // signals were seen.
                status: exit
                    .or(self.decoder.root_status)
                    .unwrap_or(ExitStatus::Unknown),
            },
        });
        let from = queue.len() - 1;
        pending.settle(from);
    }
}

impl Capture for PerfCapture {
    fn backend(&self) -> Backend {
        Backend::Perf
    }

    fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    fn caveats(&self) -> Vec<String> {
        let raw = self.events.no_raw_tracepoints.as_ref();
        raw.map(|why| {
            format!(
                "{why}: wake-ups and signals sent were read through perf events, which the \
                 kernel skips while another eBPF program runs on the same CPU"
            )
        })
        .into_iter()
        .collect()
    }

    fn run(mut self: Box<Self>, sink: &mut dyn EventSink) -> Result<CaptureEnd, CaptureError> {
        let wake = self.wake.as_raw_fd();
        self.stop.set_waker(move || {
            // SAFETY: 8 bytes from a local to our eventfd, which outlives
            // the waker (cleared below before the capture is dropped).
            unsafe { libc::write(wake, (&1u64 as *const u64).cast(), 8) };
        });
        let mut pending = Pending::default();
        let mut stopping = Stopping::default();
        let mut before = 0;
        let mut end = CaptureEnd::default();
        let mut root_alive = true;
        loop {
            let exited = self.wait(root_alive);
            // Anything stamped before the previous read began is in some
            // ring by now: safe to order and hand on.
            let read_at = monotonic_ns();
            let busy = self.drain(&mut pending);
            pending.emit_before(before, &mut self.pairing, sink);
            // A record still being written may be stamped before this
            // read: the next hand-on waits for it.
            if !busy {
                before = read_at;
            }
            sink.idle(read_at);
            if !root_alive {
                // Its descendants live on, followed as under ptrace, until
                // the last is gone or we are asked to stop.
                let alive = self.pairing.any_alive(self.root);
                if self.stop.requested() || !alive {
                    end.detached = alive;
                    break;
                }
                continue;
            }
            if self.follow_stop(&mut stopping) {
                end.detached = true;
                break;
            }
            if exited {
                end.exit = if self.spawned { self.reap() } else { None };
                root_alive = false;
                // Its exit record came before the pidfd said so.
                self.drain(&mut pending);
                self.push_root_exit(&mut pending, end.exit);
            }
        }
        self.stop.clear_waker();
        self.drain(&mut pending);
        if root_alive {
            self.push_root_exit(&mut pending, end.exit);
        }
        pending.emit_before(u64::MAX, &mut self.pairing, sink);
        sink.idle(monotonic_ns());
        end.lost_events = self.decoder.lost;
        end.skipped_probes = self.events.skipped();
        end.caveats = self.caveats();
        Ok(end)
    }
}
