//! What the tracer reports: one [`Event`] per thing a tracee did, in the
//! order the tracer saw them.

/// One observation of one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// CLOCK_MONOTONIC, nanoseconds, when the tracer saw the stop.
    pub time_ns: u64,
    /// The process (thread group) id.
    pub pid: i32,
    /// The thread id.
    pub tid: i32,
    /// What happened.
    pub kind: EventKind,
}

/// How a new task shares with its creator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// A thread of the same process (CLONE_THREAD).
    Thread,
    /// A new process (fork, or clone without CLONE_THREAD).
    Process,
    /// A new process whose parent waits for its exec or exit (vfork).
    Vfork,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A selected syscall was entered.
    SyscallEntry {
        /// Its number.
        nr: u32,
        /// Its six argument registers.
        args: [u64; 6],
        /// Bytes the tracee passed in by pointer, read at entry (a path,
        /// the first bytes of a write, a timespec, a sockaddr).
        data: Vec<u8>,
        /// Whether `data` holds all the backend meant to read.
        data_capture: DataCapture,
    },
    /// A selected syscall returned.
    SyscallExit {
        /// Its number.
        nr: u32,
        /// Its return value; -4095..=-1 is a negated errno.
        ret: i64,
        /// Bytes the kernel filled in, read at exit (the first bytes of a
        /// read, a peer address).
        data: Vec<u8>,
        /// Whether `data` holds all the backend meant to read.
        data_capture: DataCapture,
    },
    /// This thread created another task.
    Spawned {
        /// The new task's id.
        child_tid: i32,
        /// The new task's process id (equal to `child_tid` unless a thread).
        child_pid: i32,
        /// Thread, process or vfork.
        creation: Creation,
    },
    /// This thread is gone.
    Exited {
        /// How it ended.
        status: ExitStatus,
    },
    /// A signal is about to be delivered to this thread.
    Signal {
        /// The signal number.
        signal: i32,
        /// Its siginfo_t as the kernel filled it (128 bytes), to show who
        /// sent it and why; empty when not captured (the perf backend,
        /// files before format version 4).
        info: Vec<u8>,
    },
    /// This thread completed an execve; it is now the process leader.
    Exec {
        /// The thread that called execve (differs from `tid` when a
        /// non-leader thread exec'ed).
        former_tid: i32,
    },
    /// The thread was stopped by a stop signal (group-stop).
    GroupStop {
        /// The stopping signal.
        signal: i32,
    },
    /// A sampler looked at this thread (the `sample` backend): what it was
    /// doing at this instant. Nothing is known of the time between samples.
    Sampled {
        /// What it was seen doing.
        seen: Sampled,
    },
    /// The scheduler took this thread off its CPU (the `perf` backend).
    OffCpu {
        /// Why: preempted while still runnable, or asleep.
        reason: OffCpuReason,
    },
    /// The scheduler put this thread on a CPU (the `perf` backend).
    OnCpu {
        /// The CPU.
        cpu: u32,
    },
    /// This thread was made runnable (the `perf` backend): from here until
    /// it is on a CPU, it waits for one.
    Woken {
        /// The thread that woke it (0: an interrupt, or the idle task).
        waker_tid: i32,
        /// That thread's process (0 when `waker_tid` is).
        waker_pid: i32,
    },
    /// The kernel dropped events because a ring buffer was full (the
    /// `perf` backend). Said, never hidden: the trace has a gap here. The
    /// event's `tid` and `pid` are 0.
    Lost {
        /// The CPU whose buffer overflowed.
        cpu: u32,
        /// How many events were dropped.
        count: u64,
    },
}

/// Why a thread left its CPU, from the scheduler's `prev_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffCpuReason {
    /// Still runnable: another task took the CPU (it waits for one).
    Preempted,
    /// Asleep, interruptibly (S): a futex wait, accept, a sleep, I/O.
    Sleep,
    /// Asleep, uninterruptibly (D): usually the disk or the kernel.
    DiskSleep,
    /// Stopped, traced, exiting or another state.
    Other,
}

/// Whether a syscall event carries the memory behind its pointer
/// arguments. What a backend could not read is said so, never invented:
/// exporters show the raw pointer instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataCapture {
    /// Everything meant to be read was read (perhaps nothing: a call with
    /// no pointer argument, or an empty buffer).
    #[default]
    Captured,
    /// Some of it: the tracee's memory ended early (an unmapped page).
    Partial,
    /// None: the backend cannot read the tracee's memory (perf).
    NotCaptured,
}

/// What a sampler saw a thread doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampled {
    /// On a CPU or runnable, not inside a syscall.
    Running,
    /// Blocked inside syscall `nr` with these argument registers.
    Blocked {
        /// Its number.
        nr: u32,
        /// Its six argument registers.
        args: [u64; 6],
    },
    /// Gone since the last look (its exit status is not known).
    Gone,
}

impl Sampled {
    /// What `/proc/PID/task/TID/syscall` says: `running`; blocked outside
    /// a syscall (`-1 sp pc`: a page fault, say), which is running as far
    /// as syscalls go; or blocked in syscall `nr` with its six argument
    /// registers. `None` for text the kernel does not write.
    pub fn from_proc_syscall(text: &str) -> Option<Sampled> {
        let text = text.trim();
        if text == "running" {
            return Some(Sampled::Running);
        }
        let mut fields = text.split_whitespace();
        let nr: i64 = fields.next()?.parse().ok()?;
        if nr < 0 {
            return Some(Sampled::Running);
        }
        let mut args = [0u64; 6];
        for arg in &mut args {
            let field = fields.next()?;
            *arg = u64::from_str_radix(field.trim_start_matches("0x"), 16).ok()?;
        }
        Some(Sampled::Blocked {
            nr: u32::try_from(nr).ok()?,
            args,
        })
    }
}

/// How a thread or process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// exit(code).
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
    /// Gone, but how was not seen: the `perf` backend sees a thread exit
    /// without its exit code (the tracepoint does not carry it).
    Unknown,
}

impl ExitStatus {
    /// The status a shell would report: the code, or 128 + the signal (0
    /// when unknown).
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(signal) => 128 + signal,
            ExitStatus::Unknown => 0,
        }
    }
}

/// Receives events as the tracer produces them. It runs on the tracer's
/// thread, while a tracee waits: it must be quick, and never block on a
/// slow consumer.
pub trait EventSink {
    /// Called for every event, in order.
    fn event(&mut self, event: &Event);

    /// Called when the tracer has handled every pending stop and is about
    /// to wait for more (with CLOCK_MONOTONIC now): a chance to flush.
    fn idle(&mut self, _now_ns: u64) {}
}

impl<F: FnMut(&Event)> EventSink for F {
    fn event(&mut self, event: &Event) {
        self(event)
    }
}
