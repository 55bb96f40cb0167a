//! The ptrace engine of tracebench: like `strace -f`, it follows every
//! thread and child of a program, records the syscalls asked for with
//! their timestamps and decoded arguments, and hands each event to a sink
//! (strace-compatible text today; the trace file and the dashboard next).
//!
//! ```no_run
//! use tracebench_tracer::{Options, Target, trace};
//! use tracebench_tracer::strace::{StraceWriter, TextOptions};
//! let target = Target::Spawn { program: "ls".into(), args: vec![] };
//! let mut writer = StraceWriter::new(std::io::stderr(), TextOptions::default());
//! let outcome = trace(&target, &Options::default(), &mut writer)?;
//! writer.finish()?;
//! println!("{outcome:?}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod attribution;
mod capture;
pub mod chrome;
pub mod cpu_latency;
pub mod decode;
mod engine;
mod event;
pub mod file;
pub mod futexstat;
pub mod jsonl;
pub mod ptrace;
pub mod sample;
pub mod seccomp;
pub mod selection;
pub mod sink;
pub mod states;
pub mod strace;
pub mod summary;

pub use engine::{
    Options, Outcome, ProgramStdio, Session, Target, interrupted, monotonic_ns, notice_signals,
    request_stop, signalled, stop_on_signals, trace,
};
pub use event::{Creation, Event, EventKind, EventSink, ExitStatus};
pub use selection::Selection;

/// Why a trace could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// `-e` named something that is not a syscall or class.
    #[error("bad syscall selection: {0}")]
    BadSelection(String),
    /// A command-line value the tracer cannot use.
    #[error("{0}")]
    BadArgument(String),
    /// The program to spawn could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program as given.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// `-p` named no running process.
    #[error("no process with pid {0}")]
    NoSuchProcess(i32),
    /// The kernel refused to let us trace the process.
    #[error(
        "not permitted to trace pid {0} (another tracer, another user, or kernel.yama.ptrace_scope; try as root)"
    )]
    NotPermitted(i32),
    /// The seccomp filter could not be built.
    #[error("seccomp filter: {0}")]
    Seccomp(String),
    /// A system call the tracer needs failed.
    #[error("{what}")]
    Os {
        /// What we were doing.
        what: &'static str,
        /// What the kernel said.
        source: std::io::Error,
    },
}
