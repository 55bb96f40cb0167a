//! Opening the backend's events: for each thread we follow and each CPU,
//! one event per tracepoint, inherited by every thread and child the
//! thread creates later; all of a CPU's events write into one ring buffer.
//! Plus, per CPU, one machine-wide `sched_waking`: a per-thread one only
//! sees the wake-ups our threads do, not those done to them.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use tracebench_trace::{Backend, CaptureError, Selection};

use foldhash::{HashMap, HashMapExt};

use crate::decode::{Ids, SyscallPoint};
use crate::ring::Ring;
use crate::sys::{self, PerfEventAttr};
use crate::tracefs;

/// One tracepoint to open per thread and CPU, and its in-kernel filter.
struct Tracepoint {
    id: u64,
    filter: Option<std::ffi::CString>,
}

/// Every event of a capture and the rings they write to. Dropping it
/// closes and unmaps everything: nothing of ours stays in the kernel.
pub struct Events {
    per_thread: Vec<Tracepoint>,
    waking: u64,
    /// One ring per online CPU: (cpu, ring, the descriptor it maps).
    pub rings: Vec<(u32, Ring, OwnedFd)>,
    /// Every other descriptor, kept open for as long as we capture.
    fds: Vec<OwnedFd>,
    /// Data pages of each ring (a power of two).
    pages: usize,
    /// Our open-file limit before we raised it, for a spawned program to
    /// get back: it must not inherit what we needed.
    pub original_file_limit: libc::rlimit,
    /// Each per-thread event's id, and the set it belongs to: the 1-based
    /// place, in opening order, of the thread it was opened for (see
    /// [`crate::decode::Pairing`] on duplicates).
    pub sets: HashMap<u64, u32>,
    /// Threads opened so far.
    opened: u32,
    /// The CPUs online when the capture began, read once: an attach opens
    /// events for every thread on each of them.
    cpus: Vec<u32>,
}

/// The CPUs the kernel has online (`0-3,6`).
fn online_cpus() -> Result<Vec<u32>, CaptureError> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").map_err(|source| {
        CaptureError::Os {
            what: "reading /sys/devices/system/cpu/online",
            source,
        }
    })?;
    let mut cpus = Vec::new();
    for range in text.trim().split(',').filter(|r| !r.is_empty()) {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        let parse = |n: &str| {
            n.parse::<u32>()
                .map_err(|_| CaptureError::BadArgument(format!("odd online CPU list {text:?}")))
        };
        cpus.extend(parse(first)?..=parse(last)?);
    }
    Ok(cpus)
}

/// The in-kernel filter of raw_syscalls for `selection`: only its calls
/// reach the ring, so the others cost (almost) nothing.
fn syscall_filter(selection: &Selection) -> Option<std::ffi::CString> {
    if selection.syscalls().count() >= 300 {
        return None; // all of them
    }
    let terms: Vec<String> = selection
        .syscalls()
        .map(|s| format!("id == {}", s.id()))
        .collect();
    std::ffi::CString::new(terms.join(" || ")).ok()
}

/// Why perf_event_open failed, for the user.
pub fn open_error(error: io::Error, pid: i32) -> CaptureError {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map(|p| p.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let why = match error.raw_os_error() {
        Some(libc::ESRCH) => return CaptureError::NoSuchProcess(pid),
        Some(libc::EACCES | libc::EPERM) => format!(
            "perf_event_open: {error}: kernel tracepoints need root or CAP_PERFMON \
             (kernel.perf_event_paranoid is {paranoid}); or use --backend ptrace"
        ),
        Some(libc::EMFILE | libc::ENFILE) => {
            format!("perf_event_open: {error}: too many events for the open-file limit (ulimit -n)")
        }
        Some(libc::ENOSYS | libc::ENOENT | libc::ENODEV) => {
            format!("perf_event_open: {error}: this kernel has no perf events")
        }
        _ => format!("perf_event_open: {error}"),
    };
    CaptureError::Unavailable {
        backend: Backend::Perf,
        why,
    }
}

impl Events {
    /// Finds the tracepoints; opens nothing yet. `buffer_bytes` per CPU,
    /// rounded up to a power-of-two number of pages.
    pub fn new(selection: &Selection, buffer_bytes: usize) -> Result<(Events, Ids), CaptureError> {
        let root = tracefs::root()?;
        let (syscalls, mut per_thread) = syscall_tracepoints(&root, selection)?;
        let ids = Ids {
            syscalls,
            waking: tracefs::tracepoint(&root, "sched", "sched_waking", &[("pid", 24)])?,
            exec: tracefs::tracepoint(
                &root,
                "sched",
                "sched_process_exec",
                &[("pid", 12), ("old_pid", 16)],
            )?,
            signal: tracefs::tracepoint(&root, "signal", "signal_deliver", &[("sig", 8)])?,
        };
        for id in [ids.exec, ids.signal] {
            per_thread.push(Tracepoint { id, filter: None });
        }
        let pages = (buffer_bytes / 4096).max(2).next_power_of_two();
        let original_file_limit = raise_file_limit();
        Ok((
            Events {
                per_thread,
                waking: ids.waking,
                rings: Vec::new(),
                fds: Vec::new(),
                pages,
                original_file_limit,
                sets: HashMap::new(),
                opened: 0,
                cpus: online_cpus()?,
            },
            ids,
        ))
    }

    fn attr(&self, id: u64) -> PerfEventAttr {
        PerfEventAttr {
            kind: sys::PERF_TYPE_TRACEPOINT,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: id,
            sample_period: 1,
            sample_type: sys::SAMPLE_IDENTIFIER
                | sys::SAMPLE_TID
                | sys::SAMPLE_TIME
                | sys::SAMPLE_RAW,
            flags: sys::FLAG_SAMPLE_ID_ALL | sys::FLAG_USE_CLOCKID | sys::FLAG_WATERMARK,
            // Wake the reader when a quarter of the ring is full (it also
            // reads every 100 ms): few wake-ups, room to spare.
            wakeup_watermark: (self.pages * 4096 / 4) as u32,
            clockid: libc::CLOCK_MONOTONIC,
            ..PerfEventAttr::default()
        }
    }

    /// Opens every per-thread event of `tid` on every online CPU,
    /// disabled until [`Events::enable`].
    pub fn open_thread(&mut self, tid: i32) -> Result<(), CaptureError> {
        self.opened += 1;
        let set = self.opened;
        for cpu in self.cpus.clone() {
            for i in 0..self.per_thread.len() {
                let tracepoint = &self.per_thread[i];
                let mut attr = self.attr(tracepoint.id);
                attr.flags |= sys::FLAG_DISABLED | sys::FLAG_INHERIT;
                if i == 0 {
                    // One event per thread and CPU tells of its context
                    // switches and of the tasks it creates and ends.
                    attr.flags |= sys::FLAG_CONTEXT_SWITCH | sys::FLAG_TASK;
                }
                let fd =
                    sys::perf_event_open(&attr, tid, cpu as i32).map_err(|e| open_error(e, tid))?;
                let id = sys::event_id(&fd).map_err(|source| CaptureError::Os {
                    what: "reading an event's id (PERF_EVENT_IOC_ID)",
                    source,
                })?;
                self.sets.insert(id, set);
                if let Some(filter) = &self.per_thread[i].filter {
                    sys::ioctl(&fd, sys::IOC_SET_FILTER, filter.as_ptr() as libc::c_ulong)
                        .map_err(|source| CaptureError::Os {
                            what: "setting the syscall filter (PERF_EVENT_IOC_SET_FILTER)",
                            source,
                        })?;
                }
                self.attach_to_ring(cpu, fd)?;
            }
        }
        Ok(())
    }

    /// Whether `threads` more threads' events fit in the open-file limit
    /// with room to spare (for the wake-up events and the files we write).
    pub fn room_for_threads(&self, threads: usize) -> bool {
        let per_thread = self.per_thread.len() * self.cpus.len();
        let open = self.fds.len() + self.rings.len();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes our local struct.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return false;
        }
        let wanted = open + threads * per_thread + ROOM_TO_SPARE;
        (wanted as u64) < limit.rlim_cur
    }

    /// Opens, then closes, one event on ourselves: whether we may.
    pub fn probe(&mut self) -> Result<(), CaptureError> {
        let attr = self.attr(self.per_thread[0].id);
        sys::perf_event_open(&attr, 0, -1)
            .map(drop)
            .map_err(|e| open_error(e, 0))
    }

    /// Opens the machine-wide wake-up event of every CPU (after the
    /// threads', whose rings it writes to); enabled at once.
    pub fn open_wakeups(&mut self) -> Result<(), CaptureError> {
        for cpu in self.cpus.clone() {
            let attr = self.attr(self.waking);
            let fd = sys::perf_event_open(&attr, -1, cpu as i32).map_err(|e| open_error(e, -1))?;
            self.attach_to_ring(cpu, fd)?;
        }
        Ok(())
    }

    /// The first event of a CPU maps its ring; the others write into it.
    fn attach_to_ring(&mut self, cpu: u32, fd: OwnedFd) -> Result<(), CaptureError> {
        match self.rings.iter().find(|(c, ..)| *c == cpu) {
            Some((_, _, leader)) => {
                sys::ioctl(
                    &fd,
                    sys::IOC_SET_OUTPUT,
                    leader.as_raw_fd() as libc::c_ulong,
                )
                .map_err(|source| CaptureError::Os {
                    what: "sharing a CPU's ring buffer (PERF_EVENT_IOC_SET_OUTPUT)",
                    source,
                })?;
                self.fds.push(fd);
            }
            None => {
                let ring = Ring::map(&fd, self.pages).map_err(|source| CaptureError::Os {
                    what: "mapping a ring buffer (--buffer-size too large for the locked-memory limit?)",
                    source,
                })?;
                self.rings.push((cpu, ring, fd));
            }
        }
        Ok(())
    }

    /// Starts every event opened disabled.
    pub fn enable(&self) -> Result<(), CaptureError> {
        let all = self
            .fds
            .iter()
            .chain(self.rings.iter().map(|(_, _, fd)| fd));
        for fd in all {
            sys::ioctl(fd, sys::IOC_ENABLE, 0).map_err(|source| CaptureError::Os {
                what: "enabling an event",
                source,
            })?;
        }
        Ok(())
    }
}

/// The syscall tracepoints for `selection`: each selected syscall's own
/// pair (`syscalls:sys_enter_NAME`, `sys_exit_NAME`), which cost the
/// calls not selected almost nothing (measured: 0.08 µs a call, against
/// 0.2 µs for raw_syscalls with an in-kernel filter); raw_syscalls with
/// the filter when the selection is every syscall, or names one that has
/// no tracepoint of its own.
fn syscall_tracepoints(
    root: &Path,
    selection: &Selection,
) -> Result<(HashMap<u64, SyscallPoint>, Vec<Tracepoint>), CaptureError> {
    let mut points = HashMap::new();
    let mut tracepoints = Vec::new();
    let own = selection.syscalls().count() < 64
        && selection.syscalls().all(|s| {
            let name = s.name();
            let point = |kind| tracefs::syscall_tracepoint(root, &format!("sys_{kind}_{name}"));
            match (point("enter"), point("exit")) {
                (Ok((enter, args)), Ok((exit, _))) => {
                    points.insert(enter, SyscallPoint { exit: false, args });
                    points.insert(
                        exit,
                        SyscallPoint {
                            exit: true,
                            args: 0,
                        },
                    );
                    tracepoints.push(Tracepoint {
                        id: enter,
                        filter: None,
                    });
                    tracepoints.push(Tracepoint {
                        id: exit,
                        filter: None,
                    });
                    true
                }
                _ => false,
            }
        });
    if own {
        return Ok((points, tracepoints));
    }
    let filter = syscall_filter(selection);
    let enter = tracefs::tracepoint(
        root,
        "raw_syscalls",
        "sys_enter",
        &[("id", 8), ("args", 16)],
    )?;
    let exit = tracefs::tracepoint(root, "raw_syscalls", "sys_exit", &[("id", 8), ("ret", 16)])?;
    let points = HashMap::from_iter([
        (
            enter,
            SyscallPoint {
                exit: false,
                args: 6,
            },
        ),
        (
            exit,
            SyscallPoint {
                exit: true,
                args: 0,
            },
        ),
    ]);
    let tracepoints = vec![
        Tracepoint {
            id: enter,
            filter: filter.clone(),
        },
        Tracepoint { id: exit, filter },
    ];
    Ok((points, tracepoints))
}

/// Descriptors [`Events::room_for_threads`] leaves free.
const ROOM_TO_SPARE: usize = 256;

/// Events are descriptors (threads × CPUs × tracepoints): take every one
/// the hard limit allows. Returns the limit as it was.
fn raise_file_limit() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write our local structs.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
    }
    limit
}
