//! The trace model of tracebench, the same whatever captured it: one
//! [`Event`] per thing a traced thread did, the sinks events flow into,
//! the syscall selection (`-e`) and the facts about syscalls every layer
//! shares, the clock, the trace file ([`format`](mod@format)), and the [`Capture`]
//! interface every capture backend implements.
//!
//! Nothing here stops, reads or signals a traced program: that is the
//! capture backends' business (`tracebench-capture-ptrace`,
//! `tracebench-capture-perf`, `tracebench-capture-sample`).
//!
//! ```
//! use tracebench_trace::{Event, EventKind, sink::Tee};
//! let mut count = 0;
//! let mut counter = |_: &Event| count += 1;
//! let mut tee = Tee(vec![&mut counter]);
//! use tracebench_trace::EventSink;
//! tee.event(&Event { time_ns: 1, pid: 7, tid: 7, kind: EventKind::Signal { signal: 2, info: Vec::new() } });
//! drop(tee);
//! assert_eq!(count, 1);
//! ```

pub mod capture;
pub mod clock;
mod event;
pub mod format;
pub mod program;
pub mod selection;
pub mod signals;
pub mod sink;
pub mod syscall;

pub use capture::{
    Backend, Capture, CaptureEnd, CaptureError, CaptureStarter, ProgramStdio, StartCapture,
    StopHandle, Tracee,
};
pub use event::{
    Creation, DataCapture, Event, EventKind, EventSink, ExitStatus, OffCpuReason, Sampled,
};
pub use selection::{Selection, SelectionError};
