//! `tracebench trace`: the tracer, on the command line.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;
use tracebench_tracer::file::{Header, TraceWriter};
use tracebench_tracer::jsonl::JsonlWriter;
use tracebench_tracer::sink::Tee;
use tracebench_tracer::strace::{StraceWriter, TextOptions, Timestamps};
use tracebench_tracer::summary::Summary;
use tracebench_tracer::{EventSink, Options, Selection, Session, Target};

#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// Follow forks and threads (always on; accepted for strace users)
    #[arg(short = 'f')]
    follow: bool,
    /// Syscalls to record: trace=NAME,%CLASS,all; futex=wait records only
    /// futex calls that sleep (repeatable)
    #[arg(short = 'e', value_name = "EXPR")]
    expressions: Vec<String>,
    /// Write the trace to FILE instead of standard error
    #[arg(short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Bytes of strings and buffers to show
    #[arg(short = 's', value_name = "N", default_value_t = 32)]
    string_limit: usize,
    /// Attach to a running process (every thread) instead of starting one
    #[arg(short = 'p', value_name = "PID", conflicts_with = "command")]
    pid: Option<i32>,
    /// Stop at every syscall instead of installing a seccomp filter
    #[arg(long)]
    no_seccomp: bool,
    /// Prefix each line with the time of day (-tt: with microseconds;
    /// -ttt: seconds since the epoch, with microseconds)
    #[arg(short = 't', action = clap::ArgAction::Count)]
    absolute_time: u8,
    /// Prefix each line with the time since the previous line
    #[arg(short = 'r', conflicts_with = "absolute_time")]
    relative_time: bool,
    /// Show the time spent in each syscall
    #[arg(short = 'T')]
    durations: bool,
    /// Record every event to a trace file (export or replay it later);
    /// without -o, calls are then not printed
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    trace_file: Option<PathBuf>,
    /// Text format of -o (or standard error)
    #[arg(long, value_enum, default_value_t = TextFormat::Strace)]
    format: TextFormat,
    /// Print a summary per syscall and per thread at the end instead of
    /// every call (with -o, after the calls in that file). Its times are wall
    /// time inside each call, as strace's -c -w (strace's -c alone counts
    /// system CPU time)
    #[arg(short = 'c')]
    summary: bool,
    /// Do not stop the program at all: sample every thread's state from
    /// /proc HZ times a second and print the share of time in each state
    /// (statistical; no calls, arguments or return values)
    #[arg(long, value_name = "HZ", conflicts_with_all = ["trace_file", "summary", "no_seccomp"])]
    sample: Option<u32>,
    /// Run the tracer and the started program on this CPU only: far
    /// cheaper ptrace stops on VMs, but the program loses its other CPUs
    /// (with -p only the tracer is pinned)
    #[arg(long, value_name = "CPU")]
    cpu: Option<usize>,
    /// Let idle CPUs halt while tracing. By default (when
    /// /dev/cpu_dma_latency is writable, i.e. as root) idle CPUs are asked
    /// to poll, so a ptrace stop's wake-ups skip the interrupt and idle
    /// exit: about twice the throughput of a traced server on a VM, for idle CPUs
    /// that spin
    #[arg(long)]
    no_poll_idle: bool,
    /// The program to start and its arguments
    #[arg(last = true, value_name = "CMD", required_unless_present = "pid")]
    command: Vec<std::ffi::OsString>,
}

/// The text formats of `-o`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextFormat {
    /// strace's format
    Strace,
    /// One JSON object per line
    Jsonl,
}

/// The text output, one of two formats.
enum TextSink {
    Strace(StraceWriter<Box<dyn Write>>),
    Jsonl(JsonlWriter<Box<dyn Write>>),
}

impl TextSink {
    fn as_sink(&mut self) -> &mut dyn EventSink {
        match self {
            TextSink::Strace(w) => w,
            TextSink::Jsonl(w) => w,
        }
    }

    fn finish(self) -> std::io::Result<()> {
        match self {
            TextSink::Strace(w) => w.finish().map(drop),
            TextSink::Jsonl(w) => w.finish().map(drop),
        }
    }
}

/// Runs `tracebench trace`; returns the exit code to leave with (the
/// traced program's, like strace).
pub fn run(args: TraceArgs) -> anyhow::Result<u8> {
    let _ = args.follow;
    if let Some(hz) = args.sample {
        return sample(args, hz);
    }
    let selection = Selection::parse(&args.expressions)?;
    let command_line: Vec<String>;
    let target = match args.pid {
        Some(pid) => {
            command_line = vec!["-p".into(), pid.to_string()];
            Target::Attach { pid }
        }
        None => {
            command_line = args
                .command
                .iter()
                .map(|w| w.to_string_lossy().into_owned())
                .collect();
            let mut command = args.command.into_iter();
            let program = command.next().context("no command to trace")?;
            Target::Spawn {
                program,
                args: command.collect::<Vec<OsString>>(),
            }
        }
    };
    let attach = matches!(target, Target::Attach { .. });
    let options = Options {
        selection,
        seccomp: !args.no_seccomp && !attach,
        follow_forks: true,
        string_limit: args.string_limit,
        cpu: args.cpu,
        stdio: tracebench_tracer::ProgramStdio::Inherit,
        poll_idle: !args.no_poll_idle,
    };

    // Open every output before starting, so a bad path fails before the
    // program runs.
    // Like strace, calls go to standard error by default; with -c or -w
    // alone the summary or the recording is what was asked for.
    let mut text = if args.output.is_none() && (args.summary || args.trace_file.is_some()) {
        None
    } else {
        let out: Box<dyn Write> = match &args.output {
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            )),
            None => Box::new(std::io::stderr()),
        };
        Some(match args.format {
            TextFormat::Strace => TextSink::Strace(StraceWriter::new(
                out,
                TextOptions {
                    timestamps: if args.absolute_time >= 3 {
                        Timestamps::Epoch
                    } else if args.absolute_time == 2 {
                        Timestamps::Absolute
                    } else if args.absolute_time == 1 {
                        Timestamps::Seconds
                    } else if args.relative_time {
                        Timestamps::Relative
                    } else {
                        Timestamps::None
                    },
                    durations: args.durations,
                },
            )),
            TextFormat::Jsonl => TextSink::Jsonl(JsonlWriter::new(out)),
        })
    };
    let mut file = match &args.trace_file {
        Some(path) => Some(
            TraceWriter::create(path, &Header::now(command_line))
                .with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => None,
    };
    let mut summary = args.summary.then(Summary::new);

    tracebench_tracer::stop_on_signals().context("installing signal handlers")?;
    let session = Session::start(&target, &options)?;
    if let Some(TextSink::Strace(writer)) = text.as_mut() {
        writer.threads_at_start(session.thread_count());
    }
    if attach {
        eprintln!(
            "tracebench trace: attached to {} threads; every syscall stops them \
             (no seccomp filter on a running process); Ctrl-C detaches",
            session.thread_count()
        );
    }
    let mut sinks: Vec<&mut dyn EventSink> = Vec::new();
    if let Some(text) = text.as_mut() {
        sinks.push(text.as_sink());
    }
    if let Some(file) = file.as_mut() {
        sinks.push(file);
    }
    if let Some(summary) = summary.as_mut() {
        sinks.push(summary);
    }
    let outcome = session.run(&mut Tee(sinks))?;

    if let Some(text) = text {
        text.finish().context("writing the trace")?;
    }
    if let (Some(file), Some(path)) = (file, &args.trace_file) {
        let events = file.events();
        file.finish()
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "tracebench trace: {events} events written to {}",
            path.display()
        );
    }
    if let Some(summary) = summary {
        // With -o (strace text), after the calls in the same file, as
        // strace -C -o does; a JSON lines file stays JSON lines.
        match &args.output {
            Some(path) if args.format == TextFormat::Strace => {
                use std::io::Write as _;
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(path)
                    .and_then(|mut file| write!(file, "{summary}"))
                    .with_context(|| format!("writing the summary to {}", path.display()))?;
            }
            _ => eprint!("{summary}"),
        }
    }
    if outcome.detached {
        eprintln!("tracebench trace: detached; the program runs on");
    }
    Ok(outcome
        .exit
        .map_or(0, |status| status.shell_code().clamp(0, 255) as u8))
}

/// `trace --sample HZ`: no ptrace at all, only /proc.
fn sample(args: TraceArgs, hz: u32) -> anyhow::Result<u8> {
    use tracebench_tracer::states::Timelines;

    tracebench_tracer::stop_on_signals().context("installing signal handlers")?;
    let mut timelines = Timelines::new();
    let started = std::time::Instant::now();
    let (rounds, code) = match args.pid {
        Some(pid) => {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                anyhow::bail!("no process with pid {pid}");
            }
            let rounds = tracebench_tracer::sample::run(pid, hz, &mut timelines, || {
                !tracebench_tracer::interrupted()
            })?;
            (rounds, 0)
        }
        None => {
            let mut command = args.command.iter();
            let program = command.next().context("no command to trace")?;
            let mut child = std::process::Command::new(program)
                .args(command)
                .spawn()
                .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
            let pid = child.id() as i32;
            let mut status = None;
            let rounds = tracebench_tracer::sample::run(pid, hz, &mut timelines, || {
                if tracebench_tracer::interrupted() {
                    let _ = child.kill();
                }
                status = child.try_wait().ok().flatten();
                status.is_none()
            })?;
            let status = match status {
                Some(status) => status,
                None => child.wait().context("waiting for the program")?,
            };
            use std::os::unix::process::ExitStatusExt;
            let code = status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            (rounds, code.clamp(0, 255) as u8)
        }
    };
    let table = format!(
        "{timelines}{rounds} samples at {hz} Hz over {:.1} s (states are sampled, not traced: \
         short calls are missed)\n",
        started.elapsed().as_secs_f64()
    );
    match &args.output {
        Some(path) => std::fs::write(path, table)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => eprint!("{table}"),
    }
    Ok(code)
}
