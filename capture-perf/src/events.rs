//! Setting the backend up in the kernel: one eBPF program per tracepoint
//! (see [`crate::probe`]), attached through one counting perf event each
//! or to a raw tracepoint, the set of the threads we follow, the ring
//! buffer all CPUs write to, and each CPU's count of records the full ring
//! refused.
//!
//! Per-CPU programs filtering on a set of thread ids replace per-thread
//! perf events: the kernel no longer switches every followed thread's
//! events in and out at each context switch (measured with perf record:
//! 47.4 against 42.5 µs of server CPU a request), a thread created by a
//! followed one is followed from its birth with no event to inherit, and
//! the scheduler's tracepoints record only what concerns our threads.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use tracebench_trace::{Backend, CaptureError, Selection};

use foldhash::HashMap;

use crate::bpf::{self, Map, ProgramType};
use crate::decode::{Ids, SyscallPoint};
use crate::probe::{self, Effect, Filter, Probe, RawField, Shared, Source, Thread};
use crate::ring::Ring;
use crate::sys::{self, PerfEventAttr};
use crate::tidset::TidSet;
use crate::{btf, tracefs};

/// Loss counters: one per possible CPU number (the kernel's `NR_CPUS`
/// is at most 8192).
const MAX_CPUS: u32 = 8192;
/// The largest ring: all CPUs share one, of their buffers' sum up to this.
const MAX_RING_BYTES: usize = 1 << 30;

/// Everything of a capture in the kernel. Dropping it detaches the
/// programs and frees the maps: nothing of ours stays in the kernel.
pub struct Events {
    /// The threads followed.
    pub tids: TidSet,
    lost: Map,
    /// The ring all programs write to, and its map.
    pub ring: Ring,
    ring_map: Map,
    /// Each program's attachment (a perf event or a raw tracepoint's
    /// link) and the program: closing them detaches the program.
    attached: Vec<(OwnedFd, OwnedFd)>,
    /// Why the wake-up and signal programs run through perf events, when
    /// they do (see [`crate::probe`]): no BTF to read task ids with.
    pub no_raw_tracepoints: Option<String>,
    /// The CPUs the machine may ever have: one brought online during the
    /// capture runs our programs too, and may lose records.
    cpus: Vec<u32>,
    /// Each of those CPUs' losses already reported.
    lost_seen: Vec<u64>,
}

/// The CPUs the kernel has online (`0-3,6`).
fn online_cpus() -> Result<Vec<u32>, CaptureError> {
    cpu_list("/sys/devices/system/cpu/online")
}

/// The CPUs the kernel could ever bring online.
fn possible_cpus() -> Result<Vec<u32>, CaptureError> {
    cpu_list("/sys/devices/system/cpu/possible")
}

/// A kernel CPU list (`0-3,6`) read from `path`.
fn cpu_list(path: &'static str) -> Result<Vec<u32>, CaptureError> {
    let text = std::fs::read_to_string(path).map_err(|source| CaptureError::Os {
        what: "reading the CPU list in /sys/devices/system/cpu",
        source,
    })?;
    let mut cpus = Vec::new();
    for range in text.trim().split(',').filter(|r| !r.is_empty()) {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        let parse = |n: &str| {
            n.parse::<u32>()
                .map_err(|_| CaptureError::BadArgument(format!("odd CPU list {text:?} in {path}")))
        };
        cpus.extend(parse(first)?..=parse(last)?);
    }
    if cpus.is_empty() || cpus.iter().any(|&cpu| cpu >= MAX_CPUS) {
        return Err(CaptureError::BadArgument(format!(
            "odd CPU list {text:?} in {path} (CPUs 0 to {} only)",
            MAX_CPUS - 1
        )));
    }
    Ok(cpus)
}

/// This kernel's layout for the raw-tracepoint programs, or why they
/// cannot run: no BTF, or a kernel that will not let them read a task's
/// fields (lockdown).
fn raw_layout() -> Result<btf::Layout, String> {
    let layout = btf::layout()?;
    let check = probe::kernel_read_check();
    bpf::load_program(ProgramType::RawTracepoint, &check, "tracebench")
        .map_err(|error| format!("this kernel refuses eBPF reads of its tasks ({error})"))?;
    Ok(layout)
}

/// Why setting up failed, for the user.
fn unavailable(what: &str, error: io::Error) -> CaptureError {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map(|p| p.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let why = match error.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => format!(
            "{what}: {error}: the kernel's tracepoints and our eBPF programs need root \
             (or CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH; kernel.perf_event_paranoid \
             is {paranoid}); \
             or use --backend ptrace"
        ),
        Some(libc::EMFILE | libc::ENFILE) => {
            format!("{what}: {error}: no descriptors left (ulimit -n)")
        }
        Some(libc::ENOSYS | libc::ENOENT | libc::ENODEV) => {
            format!("{what}: {error}: this kernel has no perf events or eBPF")
        }
        Some(libc::ENOMEM) => format!(
            "{what}: {error}: --buffer-size too large for this machine's memory \
             or locked-memory limit?"
        ),
        _ => format!("{what}: {error}"),
    };
    CaptureError::Unavailable {
        backend: Backend::Perf,
        why,
    }
}

impl Events {
    /// Sets everything up, following no thread yet (see
    /// [`Events::follow`]). A ring of `buffer_bytes` for each online CPU,
    /// rounded up to a power-of-two number of pages.
    pub fn new(selection: &Selection, buffer_bytes: usize) -> Result<(Events, Ids), CaptureError> {
        let root = tracefs::root()?;
        let (syscalls, mut probes) = syscall_probes(&root, selection)?;
        let layout = raw_layout();
        let (ids, others) = scheduler_probes(&root, syscalls, layout.as_ref().ok())?;
        probes.extend(others);
        let online = online_cpus()?;
        let bytes = buffer_bytes
            .max(4096)
            .saturating_mul(online.len())
            .min(MAX_RING_BYTES)
            .next_power_of_two() as u32;
        let tids = TidSet::new().map_err(|e| unavailable("creating a bpf map", e))?;
        let lost = Map::counters(MAX_CPUS).map_err(|e| unavailable("creating a bpf map", e))?;
        let ring_map = Map::ring(bytes).map_err(|e| unavailable("creating the ring buffer", e))?;
        let ring = Ring::map(ring_map.fd(), bytes as usize)
            .map_err(|e| unavailable("mapping the ring buffer", e))?;
        let shared = Shared {
            tids: tids.map().fd().as_raw_fd(),
            ring: ring_map.fd().as_raw_fd(),
            lost: lost.fd().as_raw_fd(),
            wake_above: (bytes / 4).min(i32::MAX as u32) as i32,
            task_pid_at: layout
                .as_ref()
                .map_or(0, |layout| layout.task_pid_at as i32),
        };
        let mut attached = Vec::with_capacity(probes.len());
        for probe in &probes {
            attached.push(attach(probe, &shared, online[0])?);
        }
        let possible = possible_cpus()?;
        let lost_seen = vec![0; possible.len()];
        let events = Events {
            tids,
            lost,
            ring,
            ring_map,
            attached,
            no_raw_tracepoints: layout.err(),
            cpus: possible,
            lost_seen,
        };
        Ok((events, ids))
    }

    /// Follows thread `tid` from now on, and every thread it creates.
    pub fn follow(&self, tid: i32) -> Result<(), CaptureError> {
        if self.tids.insert(tid as u32) {
            Ok(())
        } else {
            Err(CaptureError::BadArgument(format!(
                "thread id {tid} is past any the kernel hands out"
            )))
        }
    }

    /// Whether we may set a capture up: a map created and a tracepoint
    /// event opened (and both closed), with no program attached (whose
    /// detaching takes the kernel tens of milliseconds).
    pub fn allowed() -> Result<(), CaptureError> {
        let root = tracefs::root()?;
        Map::bits(1).map_err(|e| unavailable("creating a bpf map", e))?;
        let id = tracefs::tracepoint(&root, "sched", "sched_switch", &[("prev_pid", 24)])?;
        counting_event(id, online_cpus()?[0]).map(drop)
    }

    /// The ring's descriptor, readable when a program asked to wake us.
    pub fn ring_fd(&self) -> &OwnedFd {
        self.ring_map.fd()
    }

    /// How many tracepoint hits the kernel ran none of our programs for
    /// (another eBPF program was running on the CPU), all programs.
    pub fn skipped(&self) -> u64 {
        self.attached
            .iter()
            .filter_map(|(_, program)| bpf::recursion_misses(program).ok())
            .sum()
    }

    /// Records lost since the last call, per CPU that lost any.
    pub fn new_losses(&mut self) -> Vec<(u32, u64)> {
        let mut losses = Vec::new();
        for (cpu, seen) in self.cpus.iter().zip(self.lost_seen.iter_mut()) {
            let Ok(count) = self.lost.counter(*cpu) else {
                continue;
            };
            if count > *seen {
                losses.push((*cpu, count - *seen));
                *seen = count;
            }
        }
        losses
    }
}

impl Drop for Events {
    /// Detaches the programs all at once: the kernel waits for a grace
    /// period at each (tens of milliseconds), which one after another
    /// made a capture's end take seconds.
    fn drop(&mut self) {
        let attached = std::mem::take(&mut self.attached);
        std::thread::scope(|scope| {
            for pair in attached {
                scope.spawn(move || drop(pair));
            }
        });
    }
}

/// A counting (never sampling) event on `tracepoint`, every task, on
/// `cpu`: what a program is attached through.
fn counting_event(tracepoint: u64, cpu: u32) -> Result<OwnedFd, CaptureError> {
    let attr = PerfEventAttr {
        kind: sys::PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: tracepoint,
        ..PerfEventAttr::default()
    };
    sys::perf_event_open(&attr, -1, cpu as i32).map_err(|e| unavailable("perf_event_open", e))
}

/// Loads `probe`'s program and attaches it to its tracepoint: to a raw
/// one by name, else through a counting perf event on `cpu` (a
/// tracepoint's programs run on every CPU, and a counting event records
/// nothing).
fn attach(probe: &Probe, shared: &Shared, cpu: u32) -> Result<(OwnedFd, OwnedFd), CaptureError> {
    let program = bpf::load_program(probe.program_type(), &probe.assemble(shared), "tracebench")
        .map_err(|e| unavailable("loading an eBPF program", e))?;
    if let Source::Raw { name, .. } = probe.source {
        let link = bpf::attach_raw_tracepoint(name, &program).map_err(|e| {
            unavailable(
                &format!("attaching an eBPF program to raw tracepoint {name:?}"),
                e,
            )
        })?;
        return Ok((link, program));
    }
    let event = counting_event(probe.tracepoint, cpu)?;
    sys::ioctl(
        &event,
        sys::IOC_SET_BPF,
        program.as_raw_fd() as libc::c_ulong,
    )
    .map_err(|e| unavailable("attaching an eBPF program (PERF_EVENT_IOC_SET_BPF)", e))?;
    Ok((event, program))
}

/// `sched_waking(struct task_struct *p)` raw: the woken thread's id where
/// the formatted record has it.
const WAKING_FIELDS: &[(i16, RawField)] = &[(24, RawField::Key)];
/// `signal_generate(int sig, struct kernel_siginfo *info, struct
/// task_struct *task, int group, int result)` raw: the signal and its
/// target where the formatted record has them.
const GENERATE_FIELDS: &[(i16, RawField)] = &[(8, RawField::Arg32(0)), (36, RawField::Key)];

/// The scheduler's and the processes' tracepoints, and the ids of all;
/// with this kernel's `layout`, those an interrupt can fire in the middle
/// of one of our programs (a wake-up, a signal sent) through raw
/// tracepoints (a context switch cannot be: the scheduler runs with
/// interrupts off; and through a raw tracepoint it measured no cheaper).
fn scheduler_probes(
    root: &Path,
    syscalls: HashMap<u64, SyscallPoint>,
    layout: Option<&btf::Layout>,
) -> Result<(Ids, Vec<Probe>), CaptureError> {
    let ids = Ids {
        syscalls,
        waking: tracefs::tracepoint(root, "sched", "sched_waking", &[("pid", 24)])?,
        exec: tracefs::tracepoint(
            root,
            "sched",
            "sched_process_exec",
            &[("pid", 12), ("old_pid", 16)],
        )?,
        signal: tracefs::tracepoint(
            root,
            "signal",
            "signal_deliver",
            &[("sig", 8), ("sa_handler", 24)],
        )?,
        generate: tracefs::tracepoint(
            root,
            "signal",
            "signal_generate",
            &[("sig", 8), ("pid", 36)],
        )?,
        switch: tracefs::tracepoint(
            root,
            "sched",
            "sched_switch",
            &[("prev_pid", 24), ("prev_state", 32), ("next_pid", 56)],
        )?,
        fork: tracefs::tracepoint(
            root,
            "task",
            "task_newtask",
            &[("pid", 8), ("clone_flags", 32)],
        )?,
        exit: tracefs::tracepoint(root, "sched", "sched_process_exit", &[("pid", 24)])?,
        group_dead: tracefs::has_field(root, "sched", "sched_process_exit", "group_dead", 32),
    };
    let probe = |tracepoint, filter, effect, end| Probe {
        tracepoint,
        source: Source::Perf { end },
        filter,
        effect,
    };
    let raw_probe = |tracepoint, name, filter, fields, end| Probe {
        tracepoint,
        source: Source::Raw { name, fields, end },
        filter,
        effect: Effect::None,
    };
    let one = Filter::One;
    let (waking, generate) = if layout.is_some() {
        (
            raw_probe(
                ids.waking,
                c"sched_waking",
                one(Thread::Task(0)),
                WAKING_FIELDS,
                28,
            ),
            raw_probe(
                ids.generate,
                c"signal_generate",
                one(Thread::Task(2)),
                GENERATE_FIELDS,
                40,
            ),
        )
    } else {
        (
            probe(ids.waking, one(Thread::Field(24)), Effect::None, 32),
            probe(ids.generate, one(Thread::Field(36)), Effect::None, 40),
        )
    };
    let prev_or_next = Filter::Either(Thread::Field(24), Thread::Field(56));
    let switch = probe(ids.switch, prev_or_next, Effect::None, 64);
    let probes = vec![
        waking,
        generate,
        switch,
        probe(ids.exec, one(Thread::Field(16)), Effect::Move, 20),
        probe(ids.signal, one(Thread::Current), Effect::None, 32),
        probe(ids.fork, one(Thread::Current), Effect::Follow(8), 40),
        // With group_dead (a byte at 32) where the kernel has it.
        probe(
            ids.exit,
            one(Thread::Current),
            Effect::Forget,
            if ids.group_dead { 33 } else { 32 },
        ),
    ];
    Ok((ids, probes))
}

/// The syscall tracepoints for `selection`: each selected syscall's own
/// pair (`syscalls:sys_enter_NAME`, `sys_exit_NAME`), which cost the
/// calls not selected almost nothing (measured: 0.08 µs a call, against
/// 0.2 µs for raw_syscalls with an in-kernel filter), and the entries of
/// exit and exit_group, whose codes are the threads' exit statuses (the
/// pairing drops them when not selected); raw_syscalls when the selection
/// is every syscall, or names one that has no tracepoint of its own.
fn syscall_probes(
    root: &Path,
    selection: &Selection,
) -> Result<(HashMap<u64, SyscallPoint>, Vec<Probe>), CaptureError> {
    let mut points = HashMap::default();
    let mut probes = Vec::new();
    let probe = |tracepoint, end| Probe {
        tracepoint,
        source: Source::Perf { end },
        filter: Filter::One(Thread::Current),
        effect: Effect::None,
    };
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
                    // The int number at 8, then each argument: no read past
                    // the last field.
                    let end = if args == 0 { 12 } else { 16 + 8 * args as i16 };
                    probes.push(probe(enter, end));
                    probes.push(probe(exit, 24));
                    true
                }
                _ => false,
            }
        });
    if own {
        for name in ["exit", "exit_group"] {
            let Ok((enter, args)) = tracefs::syscall_tracepoint(root, &format!("sys_enter_{name}"))
            else {
                continue;
            };
            if points.contains_key(&enter) {
                continue;
            }
            points.insert(enter, SyscallPoint { exit: false, args });
            probes.push(probe(enter, 16 + 8 * args as i16));
        }
        return Ok((points, probes));
    }
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
    Ok((points, vec![probe(enter, 64), probe(exit, 24)]))
}
