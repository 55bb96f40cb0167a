//! Picking a capture backend: the one place that names them, so that the
//! dashboard and the experiment only ever run a `Capture`.

use std::sync::Arc;

use clap::ValueEnum;
use tracebench_capture_perf::{PerfCapture, PerfOptions};
use tracebench_capture_ptrace::{PtraceCapture, PtraceOptions};
use tracebench_capture_sample::SampleCapture;
use tracebench_trace::{Backend, Capture, CaptureStarter, ProgramStdio, Selection, Tracee};

/// `--backend`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// ptrace: stops the program at each selected syscall, reads pointer
    /// arguments, needs no privilege
    #[default]
    Ptrace,
    /// Kernel tracepoints: no stops, the scheduler's view (runnable, who
    /// woke whom); needs root (or CAP_BPF, CAP_PERFMON and
    /// CAP_DAC_READ_SEARCH)
    Perf,
    /// perf where it can run, else ptrace (and says so)
    Auto,
    /// /proc sampling, 100 times a second: nothing stopped, no privilege;
    /// states only, statistical (short calls are missed)
    Sample,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        <BackendChoice as ValueEnum>::from_str(name, false)
    }
}

/// The options of every command that captures.
#[derive(clap::Args, Debug, Clone)]
pub struct CaptureArgs {
    /// How to capture: ptrace (stops the program at each selected syscall;
    /// reads strings and addresses; unprivileged), perf (kernel
    /// tracepoints: never stops it, adds the scheduler's view; root, or
    /// CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH; pointers are shown
    /// raw), auto (perf, else ptrace), or
    /// sample (thread states from /proc, 100 times a second)
    #[arg(long, value_enum, default_value_t = BackendChoice::Ptrace)]
    pub backend: BackendChoice,
    /// Ring buffer per CPU for --backend perf (512K, 4M, …). A full buffer
    /// loses events: they are counted and shown, never hidden
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = parse_size)]
    pub buffer_size: usize,
}

impl Default for CaptureArgs {
    fn default() -> Self {
        CaptureArgs {
            backend: BackendChoice::Ptrace,
            buffer_size: tracebench_capture_perf::DEFAULT_BUFFER_BYTES,
        }
    }
}

/// `512K`, `4M`, `1G` or plain bytes.
fn parse_size(text: &str) -> Result<usize, String> {
    let (number, unit) = match text.trim_end_matches(['B', 'b', 'i']).char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&text[..at], c.to_ascii_uppercase()),
        _ => (text, ' '),
    };
    let shift = match unit {
        ' ' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("{text:?}: a size is bytes, or K, M or G")),
    };
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (512K, 4M, …)"))?;
    let bytes = number << shift;
    if !(8192..=(1 << 30)).contains(&bytes) {
        return Err(format!("{text:?}: a ring buffer is 8K to 1G per CPU"));
    }
    Ok(bytes)
}

impl CaptureArgs {
    /// The backend `auto` comes to here: perf if it can run, else ptrace,
    /// saying why on stderr.
    pub fn resolve(&self) -> Backend {
        match self.backend {
            BackendChoice::Ptrace => Backend::Ptrace,
            BackendChoice::Perf => Backend::Perf,
            BackendChoice::Sample => Backend::Sample,
            BackendChoice::Auto => match tracebench_capture_perf::available() {
                Ok(()) => Backend::Perf,
                Err(e) => {
                    eprintln!("tracebench: {e}; using the ptrace backend");
                    Backend::Ptrace
                }
            },
        }
    }

    /// A starter of the chosen backend's captures, with the dashboard's
    /// settings for ptrace: the seccomp fast path for a spawned program,
    /// and idle CPUs polling if `poll_idle`.
    pub fn starter(&self, poll_idle: bool) -> CaptureStarter {
        match self.resolve() {
            Backend::Perf => perf_starter(self.buffer_size),
            Backend::Sample => sample_starter(),
            Backend::Ptrace => ptrace_starter(poll_idle),
        }
    }
}

fn perf_starter(buffer_bytes: usize) -> CaptureStarter {
    let start = move |tracee: &Tracee, stdio: ProgramStdio, selection: &Selection| {
        let options = PerfOptions {
            selection: selection.clone(),
            stdio,
            buffer_bytes,
        };
        PerfCapture::start(tracee, &options).map(|c| Box::new(c) as Box<dyn Capture>)
    };
    CaptureStarter {
        backend: Backend::Perf,
        start: Arc::new(start),
    }
}

/// How often the dashboard's and the experiment's sampler looks.
const SAMPLE_HZ: u32 = 100;

fn sample_starter() -> CaptureStarter {
    // A sampler sees states, not calls: the selection does not apply.
    let start = |tracee: &Tracee, stdio: ProgramStdio, _: &Selection| {
        SampleCapture::start(tracee, SAMPLE_HZ, &stdio).map(|c| Box::new(c) as Box<dyn Capture>)
    };
    CaptureStarter {
        backend: Backend::Sample,
        start: Arc::new(start),
    }
}

fn ptrace_starter(poll_idle: bool) -> CaptureStarter {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("4X").is_err());
        assert!(parse_size("1").is_err(), "too small");
        assert!(parse_size("").is_err());
    }
}
