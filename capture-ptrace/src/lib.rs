//! The ptrace capture backend of tracebench: like `strace -f`, it follows
//! every thread and child of a program and records the syscalls asked for
//! with their timestamps, their arguments and the memory behind pointer
//! arguments (paths, buffers, addresses), into any
//! [`tracebench_trace::EventSink`].
//!
//! ```no_run
//! use tracebench_capture_ptrace::{PtraceCapture, PtraceOptions};
//! use tracebench_trace::{Capture, Event, Tracee};
//! let tracee = Tracee::Spawn { program: "ls".into(), args: vec![] };
//! let capture = PtraceCapture::start(&tracee, &PtraceOptions::default())?;
//! let mut count = 0;
//! let end = Box::new(capture).run(&mut |_: &Event| count += 1)?;
//! println!("{count} events, {end:?}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cpu_latency;
mod engine;
mod pointers;
mod proc;
pub mod ptrace;
pub mod seccomp;
mod wake;

use tracebench_trace::{
    Backend, Capture, CaptureEnd, CaptureError, EventSink, ProgramStdio, Selection, StopHandle,
    Tracee,
};

use cpu_latency::CpuLatencyRequest;
use engine::{Engine, SPIN_BEFORE_BLOCK, pin_to_cpu};

/// How to trace.
/// How to trace.
#[derive(Debug, Clone)]
pub struct PtraceOptions {
    /// The syscalls to record.
    pub selection: Selection,
    /// Install a seccomp filter so only selected syscalls stop (spawn only).
    pub seccomp: bool,
    /// Follow forked and cloned processes (threads are always followed).
    pub follow_forks: bool,
    /// How many bytes of strings and buffers to capture.
    pub string_limit: usize,
    /// Run the tracer (and a spawned program) on this CPU only. A ptrace
    /// stop that crosses CPUs needs an inter-processor wake-up, which on
    /// virtual machines costs several times the stop itself.
    pub cpu: Option<usize>,
    /// Where a spawned program's standard input, output and error go.
    pub stdio: ProgramStdio,
    /// While tracing, ask that idle CPUs poll instead of halting (a CPU
    /// latency QoS request of 0 µs, see [`crate::cpu_latency`]), so the two
    /// wake-ups of every ptrace stop need no interrupt and no idle exit.
    /// Best effort: without write access to /dev/cpu_dma_latency (root's)
    /// the trace runs without it.
    pub poll_idle: bool,
}

impl Default for PtraceOptions {
    fn default() -> Self {
        PtraceOptions {
            selection: Selection::default(),
            seccomp: true,
            follow_forks: true,
            string_limit: 32,
            cpu: None,
            stdio: ProgramStdio::Inherit,
            poll_idle: true,
        }
    }
}

/// A ptrace capture that has started (the program is spawned or every
/// thread seized) but whose events have not been read yet.
pub struct PtraceCapture {
    engine: Engine,
    stop: StopHandle,
    /// Held for as long as the capture lives, through [`Capture::run`].
    idle_request: Option<CpuLatencyRequest>,
}

impl PtraceCapture {
    /// Spawns or attaches. Must be called on the thread that will call
    /// [`Capture::run`]: ptrace binds a tracee to the tracing thread.
    pub fn start(tracee: &Tracee, options: &PtraceOptions) -> Result<PtraceCapture, CaptureError> {
        if let Some(cpu) = options.cpu {
            // Before forking, so a spawned program inherits the mask.
            pin_to_cpu(cpu)?;
        }
        // Before the program starts, so its start-up is traced at the same
        // cost as the rest.
        let idle_request = if options.poll_idle {
            CpuLatencyRequest::poll_idle().ok()
        } else {
            None
        };
        let stop = StopHandle::new();
        let mut engine = Engine::new(options.clone(), stop.clone());
        engine.spin_before_block = idle_request.is_none().then_some(SPIN_BEFORE_BLOCK);
        match tracee {
            Tracee::Spawn { program, args } => engine.spawn(program, args)?,
            Tracee::Attach { pids } => {
                // A failure past the first leaves nothing stopped: the
                // engine lets go of what it seized when it is dropped.
                for &pid in pids {
                    engine.attach(pid)?;
                }
            }
        }
        Ok(PtraceCapture {
            engine,
            stop,
            idle_request,
        })
    }

    /// Whether idle CPUs are held polling for this capture
    /// ([`PtraceOptions::poll_idle`] asked, and the request was granted).
    pub fn polls_idle(&self) -> bool {
        self.idle_request.is_some()
    }

    /// Whether the seccomp fast path is in use.
    pub fn uses_seccomp(&self) -> bool {
        self.engine.seccomp
    }

    /// How many threads are traced now.
    pub fn thread_count(&self) -> usize {
        self.engine.threads.len()
    }
}

impl Capture for PtraceCapture {
    fn backend(&self) -> Backend {
        Backend::Ptrace
    }

    fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    fn run(mut self: Box<Self>, sink: &mut dyn EventSink) -> Result<CaptureEnd, CaptureError> {
        self.engine.run(sink)
    }
}
