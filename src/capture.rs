//! Picking a capture backend: the one place that names them, so that the
//! dashboard and the experiment only ever run a `Capture`.

use std::sync::Arc;

use tracebench_capture_ptrace::{PtraceCapture, PtraceOptions};
use tracebench_trace::{Backend, Capture, CaptureStarter, ProgramStdio, Selection, Tracee};

/// A starter of ptrace captures with the dashboard's settings: the seccomp
/// fast path for a spawned program, and idle CPUs polling if `poll_idle`.
pub fn ptrace_starter(poll_idle: bool) -> CaptureStarter {
    let start = move |tracee: &Tracee, stdio: ProgramStdio, selection: &Selection| {
        let options = PtraceOptions {
            selection: selection.clone(),
            stdio,
            poll_idle,
            ..PtraceOptions::default()
        };
        PtraceCapture::start(tracee, &options).map(|c| Box::new(c) as Box<dyn Capture>)
    };
    CaptureStarter {
        backend: Backend::Ptrace,
        start: Arc::new(start),
    }
}
