//! `tracebench trace`: the tracer, on the command line.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;
use tracebench_analysis::states::Timelines;
use tracebench_capture_perf::{PerfCapture, PerfOptions};
use tracebench_capture_ptrace::{PtraceCapture, PtraceOptions};
use tracebench_capture_sample::SampleCapture;
use tracebench_export::jsonl::JsonlWriter;
use tracebench_export::render::{FdPaths, Strings};
use tracebench_export::strace::{
    PerThreadFiles, Results, SignalFilter, StraceWriter, TextOptions, ThreadPrefix, Timestamps,
};
use tracebench_export::summary::{SortBy, TraceSummary};
use tracebench_trace::format::{Header, TraceWriter};
use tracebench_trace::sink::Tee;
use tracebench_trace::{Backend, Capture, EventSink, ProgramStdio, Selection, Tracee};

#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// Follow forks and threads (always on; accepted for strace users);
    /// -ff with -o FILE writes each thread's calls to FILE.TID, as strace
    #[arg(short = 'f', action = clap::ArgAction::Count)]
    follow: u8,
    /// Syscalls to record, as strace: trace=NAME,%CLASS,/REGEX,?NAME,all,
    /// !SET for all but SET; futex=wait records only futex calls that
    /// sleep; signal=SET the signals shown (all, none, SIGINT,TERM…,
    /// !SET); status=successful|failed the calls shown (repeatable)
    #[arg(short = 'e', value_name = "EXPR")]
    expressions: Vec<String>,
    /// Write the trace to FILE instead of standard error
    #[arg(short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Bytes of strings and buffers to show
    #[arg(short = 's', value_name = "N", default_value_t = 32)]
    string_limit: usize,
    /// Attach to a running process (every thread) instead of starting one;
    /// several as strace takes them: -p 1 -p 2, or -p "1 2", or -p 1,2
    #[arg(
        short = 'p',
        value_name = "PID",
        conflicts_with = "command",
        value_parser = parse_pids
    )]
    pid: Vec<Vec<i32>>,
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
    /// Show only the calls that returned without an error (strace's -z)
    #[arg(short = 'z', conflicts_with = "failed_only")]
    successful_only: bool,
    /// Show only the calls that returned an error (strace's -Z)
    #[arg(short = 'Z')]
    failed_only: bool,
    /// Strings in hexadecimal: -x those holding non-printable bytes, -xx
    /// all of them (strace's -x, -xx)
    #[arg(short = 'x', action = clap::ArgAction::Count)]
    hex_strings: u8,
    /// Show what each descriptor refers to: a path, `socket:[inode]`,
    /// `pipe:[inode]` (strace's -y; the ptrace backend only, which reads it
    /// while the thread is stopped)
    #[arg(short = 'y')]
    decode_fds: bool,
    /// Say nothing about attaching and detaching (strace's -q; -qq as
    /// well)
    #[arg(short = 'q', action = clap::ArgAction::Count)]
    quiet: u8,
    /// Record every event to a trace file (export or replay it later);
    /// without -o, calls are then not printed
    #[arg(long = "write", value_name = "FILE")]
    trace_file: Option<PathBuf>,
    /// With -c, count wall time inside each call, as strace's -w does: our
    /// -c always does, so this is accepted for strace users (the trace
    /// file is --write)
    #[arg(short = 'w')]
    wall_clock: bool,
    /// Text format of -o (or standard error)
    #[arg(long, value_enum, default_value_t = TextFormat::Strace)]
    format: TextFormat,
    /// Print a summary per syscall and per thread at the end instead of
    /// every call (with -o, after the calls in that file). Alone, it counts
    /// every syscall, as strace's -c does (-e narrows it). Its times are
    /// wall time inside each call, as strace's -c -w (strace's -c alone
    /// counts system CPU time)
    #[arg(short = 'c')]
    summary: bool,
    /// The summary of -c and every call as well (strace's -C)
    #[arg(short = 'C', conflicts_with = "summary")]
    summary_and_calls: bool,
    /// Order -c's table by time (default), calls, errors, name, max-time,
    /// avg-time or nothing (strace's -S)
    #[arg(short = 'S', value_enum, value_name = "KEY")]
    sort_by: Option<SortKey>,
    /// Do not stop the program at all: sample every thread's state from
    /// /proc HZ times a second and print the share of time in each state
    /// (statistical; no calls, arguments or return values)
    #[arg(long, value_name = "HZ", conflicts_with_all = ["summary", "no_seccomp"])]
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
    #[command(flatten)]
    capture: crate::capture::CaptureArgs,
    /// The program to start and its arguments (`--` before it is
    /// optional, as with strace: `tracebench trace ls -l`)
    #[arg(
        value_name = "CMD",
        required_unless_present = "pid",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 1..
    )]
    command: Vec<std::ffi::OsString>,
}

/// The orders of `-S`, with strace's names.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SortKey {
    #[value(alias = "time_total", alias = "total_time")]
    Time,
    #[value(alias = "count")]
    Calls,
    #[value(alias = "error")]
    Errors,
    #[value(alias = "syscall", alias = "syscall_name")]
    Name,
    #[value(name = "max-time", alias = "max_time", alias = "time_max")]
    MaxTime,
    #[value(name = "avg-time", alias = "avg_time", alias = "time_avg")]
    AvgTime,
    #[value(alias = "none")]
    Nothing,
}

impl From<SortKey> for SortBy {
    fn from(key: SortKey) -> SortBy {
        match key {
            SortKey::Time => SortBy::Time,
            SortKey::Calls => SortBy::Calls,
            SortKey::Errors => SortBy::Errors,
            SortKey::Name => SortBy::Name,
            SortKey::MaxTime => SortBy::MaxTime,
            SortKey::AvgTime => SortBy::AvgTime,
            SortKey::Nothing => SortBy::Nothing,
        }
    }
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
    /// -ff: a file per thread.
    PerThread(PerThreadFiles<std::io::BufWriter<std::fs::File>, OpenThreadFile>),
}

/// Opens `BASE.TID` for -ff.
type OpenThreadFile = Box<dyn FnMut(i32) -> std::io::Result<std::io::BufWriter<std::fs::File>>>;

impl TextSink {
    fn as_sink(&mut self) -> &mut dyn EventSink {
        match self {
            TextSink::Strace(w) => w,
            TextSink::Jsonl(w) => w,
            TextSink::PerThread(w) => w,
        }
    }

    /// Ends the text; strace text written to a file (or `-`) takes the
    /// `-c` summary after the calls, as strace -C -o does: whether it did.
    fn finish(self, summary: Option<&TraceSummary>) -> std::io::Result<bool> {
        match self {
            TextSink::Strace(w) => {
                let mut out = w.finish()?;
                let Some(summary) = summary else {
                    return Ok(false);
                };
                write!(out, "{summary}")?;
                out.flush()?;
                Ok(true)
            }
            // JSON lines stay JSON lines; -ff has no one file.
            TextSink::Jsonl(w) => w.finish().map(|_| false),
            TextSink::PerThread(w) => w.finish().map(|()| false),
        }
    }
}

/// Runs `tracebench trace`; returns the exit code to leave with (the
/// traced program's, like strace).
pub fn run(args: TraceArgs) -> anyhow::Result<u8> {
    if args.follow >= 2 && args.output.is_none() {
        anyhow::bail!("-ff writes each thread to FILE.TID: it needs -o FILE");
    }
    if args.follow >= 2 && (args.summary || args.summary_and_calls) {
        // As strace refuses it: one summary has no place among FILE.TID.
        anyhow::bail!("-c and -C cannot be used with -ff (one summary, a file per thread)");
    }
    let first_word = args.command.first().map(|w| w.to_string_lossy());
    if args.wall_clock && first_word.is_some_and(|w| w.ends_with(".tbt")) {
        // `-w FILE` wrote a trace file before -w became strace's.
        anyhow::bail!(
            "-w is strace's wall-clock flag for -c; to record a trace file use --write FILE"
        );
    }
    let (tracee, command_line) = tracee_of(&args)?;
    let backend = match args.sample {
        Some(_) => Backend::Sample,
        None => args.capture.resolve(),
    };
    if backend == Backend::Sample {
        return sample(&args, &tracee, args.sample.unwrap_or(100));
    }
    let attach = matches!(tracee, Tracee::Attach { .. });
    // strace's -c and -C count every call unless -e narrows them, with
    // -o or without.
    let syscalls = syscall_expressions(&args.expressions);
    let selection = if (args.summary || args.summary_and_calls) && syscalls.is_empty() {
        Selection::parse(&["trace=all"])?
    } else {
        Selection::parse(&syscalls)?
    };
    // Open every output before starting, so a bad path fails before the
    // program runs.
    let mut outputs = Outputs::open(&args, command_line, backend)?;
    let capture: Box<dyn Capture> = match backend {
        Backend::Perf => {
            refuse_ptrace_only_flags(&args)?;
            let options = PerfOptions {
                selection,
                stdio: ProgramStdio::Inherit,
                buffer_bytes: args.capture.buffer_size,
            };
            let capture = PerfCapture::start(&tracee, &options)?;
            if attach && args.quiet == 0 {
                eprintln!(
                    "tracebench trace: following every thread through kernel tracepoints; \
                     nothing is stopped; Ctrl-C lets go"
                );
            }
            Box::new(capture)
        }
        _ => Box::new(start_ptrace(&args, &tracee, selection, &mut outputs)?),
    };
    let _signals = tracebench_trace::signals::forward_to(&capture.stop_handle())
        .context("installing signal handlers")?;
    let end = capture.run(&mut Tee(outputs.sinks()))?;
    outputs.finish(&args)?;
    for gap in end.gaps() {
        eprintln!("tracebench trace: {gap}");
    }
    if end.detached && args.quiet == 0 {
        eprintln!("tracebench trace: detached; the program runs on");
    }
    Ok(end
        .exit
        .map_or(0, |status| status.shell_code().clamp(0, 255) as u8))
}

/// What descriptor `fd` of thread `tid` refers to (its working directory
/// for AT_FDCWD), from /proc, as strace -y reads it.
fn fd_path(tid: i32, fd: i32) -> Option<String> {
    // AT_FDCWD, as <fcntl.h> defines it on Linux.
    const AT_FDCWD: i32 = -100;
    let link = if fd == AT_FDCWD {
        format!("/proc/{tid}/cwd")
    } else {
        format!("/proc/{tid}/fd/{fd}")
    };
    let target = std::fs::read_link(link).ok()?;
    Some(target.to_string_lossy().into_owned())
}

/// The options that only the ptrace backend has: said, not ignored.
fn refuse_ptrace_only_flags(args: &TraceArgs) -> anyhow::Result<()> {
    const NOTHING_TO_SPEED_UP: &str = "the perf backend stops nothing to speed up";
    let given = [
        (args.no_seccomp, "--no-seccomp", NOTHING_TO_SPEED_UP),
        (args.cpu.is_some(), "--cpu", NOTHING_TO_SPEED_UP),
        (args.no_poll_idle, "--no-poll-idle", NOTHING_TO_SPEED_UP),
        (
            args.decode_fds,
            "-y",
            "the perf backend does not stop the program, so a descriptor may \
             refer to something else by the time it is printed",
        ),
    ];
    match given.iter().find(|(set, _, _)| *set) {
        Some((_, flag, why)) => {
            anyhow::bail!("{flag} is an option of the ptrace backend; {why}")
        }
        None => Ok(()),
    }
}

/// Starts the ptrace backend, telling the strace writer how many threads
/// it follows from the start.
fn start_ptrace(
    args: &TraceArgs,
    tracee: &Tracee,
    selection: Selection,
    outputs: &mut Outputs,
) -> anyhow::Result<PtraceCapture> {
    let attach = matches!(tracee, Tracee::Attach { .. });
    let options = PtraceOptions {
        selection,
        seccomp: !args.no_seccomp && !attach,
        follow_forks: true,
        string_limit: args.string_limit,
        cpu: args.cpu,
        stdio: ProgramStdio::Inherit,
        poll_idle: !args.no_poll_idle,
    };
    let capture = PtraceCapture::start(tracee, &options)?;
    if let Some(TextSink::Strace(writer)) = outputs.text.as_mut() {
        writer.threads_at_start(capture.thread_count());
    }
    if attach && args.quiet == 0 {
        eprintln!(
            "tracebench trace: attached to {} threads; every syscall stops them \
             (no seccomp filter on a running process); Ctrl-C detaches",
            capture.thread_count()
        );
    }
    Ok(capture)
}

/// The -e expressions that choose syscalls (not signal= or status=).
fn syscall_expressions(expressions: &[String]) -> Vec<&str> {
    expressions
        .iter()
        .map(String::as_str)
        .filter(|e| !e.starts_with("signal=") && !e.starts_with("status="))
        .collect()
}

/// The set of the last `-e QUALIFIER=SET`, as strace takes the last.
fn last_qualifier<'a>(expressions: &'a [String], qualifier: &str) -> Option<&'a str> {
    expressions
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix(qualifier))
}

/// `-e status=SET`, if given.
fn status(args: &TraceArgs) -> anyhow::Result<Option<Results>> {
    last_qualifier(&args.expressions, "status=")
        .map(|set| Results::parse_status(set).map_err(anyhow::Error::msg))
        .transpose()
}

/// The pids of one -p: a number, or several split by spaces or commas
/// (`-p "$(pidof nginx)"`), as strace reads them.
fn parse_pids(text: &str) -> Result<Vec<i32>, String> {
    let pids: Result<Vec<i32>, String> = text
        .split([' ', ',', '\t', '\n'])
        .filter(|word| !word.is_empty())
        .map(|word| match word.parse::<i32>() {
            Ok(pid) if pid > 0 => Ok(pid),
            _ => Err(format!("{word:?} is not a process id")),
        })
        .collect();
    match pids {
        Ok(pids) if pids.is_empty() => Err("no process id given".into()),
        other => other,
    }
}

/// What to trace, and the command line the trace file's header records.
fn tracee_of(args: &TraceArgs) -> anyhow::Result<(Tracee, Vec<String>)> {
    let mut pids: Vec<i32> = Vec::new();
    for pid in args.pid.iter().flatten() {
        if !pids.contains(pid) {
            pids.push(*pid);
        }
    }
    if !pids.is_empty() {
        let command_line = pids.iter().flat_map(|pid| ["-p".into(), pid.to_string()]);
        let command_line = command_line.collect();
        return Ok((Tracee::Attach { pids }, command_line));
    }
    let command_line = args
        .command
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    let mut command = args.command.iter().cloned();
    let program = command.next().context("no command to trace")?;
    let tracee = Tracee::Spawn {
        program,
        args: command.collect::<Vec<OsString>>(),
    };
    Ok((tracee, command_line))
}

/// Where the events of `trace` go: the text (-o or standard error), the
/// trace file (-w) and the summary (-c).
struct Outputs {
    text: Option<TextSink>,
    file: Option<TraceWriter<std::io::BufWriter<std::fs::File>>>,
    summary: Option<TraceSummary>,
    /// -c -o FILE: the file the summary alone goes to, opened before the
    /// program starts so that a bad path fails first, not last.
    summary_file: Option<std::fs::File>,
}

impl Outputs {
    fn open(
        args: &TraceArgs,
        command_line: Vec<String>,
        backend: Backend,
    ) -> anyhow::Result<Outputs> {
        let file = match &args.trace_file {
            Some(path) => Some(trace_writer(path, &Header::now(command_line, backend))?),
            None => None,
        };
        let summary_file = match &args.output {
            Some(path) if summary_alone(args) => Some(tracebench_files::create_streamed(path)?),
            _ => None,
        };
        Ok(Outputs {
            text: text_sink(args)?,
            file,
            summary_file,
            summary: (args.summary || args.summary_and_calls).then(|| {
                TraceSummary::new().sorted_by(args.sort_by.map_or(SortBy::Time, SortBy::from))
            }),
        })
    }

    fn sinks(&mut self) -> Vec<&mut dyn EventSink> {
        let mut sinks: Vec<&mut dyn EventSink> = Vec::new();
        if let Some(text) = self.text.as_mut() {
            sinks.push(text.as_sink());
        }
        if let Some(file) = self.file.as_mut() {
            sinks.push(file);
        }
        if let Some(summary) = self.summary.as_mut() {
            sinks.push(summary);
        }
        sinks
    }

    /// Writes out what is buffered, the file's index, and the summary.
    fn finish(self, args: &TraceArgs) -> anyhow::Result<()> {
        let mut summary = self.summary;
        if let Some(text) = self.text {
            let into_file = summary.as_ref().filter(|_| args.output.is_some());
            let took = text.finish(into_file).with_context(|| match &args.output {
                Some(path) if args.follow >= 2 => format!("writing {}.TID", path.display()),
                Some(path) => format!("writing {}", path.display()),
                None => "writing the trace to standard error".to_owned(),
            })?;
            if took {
                summary = None;
            }
        }
        if let (Some(file), Some(path)) = (self.file, &args.trace_file) {
            let events = file.events();
            file.finish()
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "tracebench trace: {events} events written to {}",
                path.display()
            );
        }
        match (summary, self.summary_file, &args.output) {
            (Some(summary), Some(mut out), Some(path)) => {
                write!(out, "{summary}")
                    .and_then(|()| out.flush())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            (Some(summary), ..) => eprint!("{summary}"),
            (None, ..) => {}
        }
        Ok(())
    }
}

/// Whether -c asks for the summary alone, as strace's -c: always, but with
/// `--format jsonl -o FILE`, where the events are the point of the file
/// and the summary goes to standard error after them.
fn summary_alone(args: &TraceArgs) -> bool {
    args.summary && (args.format == TextFormat::Strace || args.output.is_none())
}

/// The text output: like strace, calls go to standard error by default;
/// with -c (the summary alone, to -o if given, as strace's -c -o) or -w
/// alone the summary or the recording is what was asked for.
fn text_sink(args: &TraceArgs) -> anyhow::Result<Option<TextSink>> {
    let stdout = Some(std::path::Path::new("-"));
    if args.output.as_deref() == stdout {
        if args.follow >= 2 {
            anyhow::bail!("-ff writes a file per thread, FILE.TID: it needs -o FILE, not -o -");
        }
        if args.trace_file.as_deref() == stdout {
            anyhow::bail!("-o - and --write - would both write to standard output");
        }
    }
    if summary_alone(args) || (args.output.is_none() && args.trace_file.is_some()) {
        return Ok(None);
    }
    let timestamps = match (args.absolute_time, args.relative_time) {
        (3.., _) => Timestamps::Epoch,
        (2, _) => Timestamps::Absolute,
        (1, _) => Timestamps::Seconds,
        (0, true) => Timestamps::Relative,
        (0, false) => Timestamps::None,
    };
    let options = TextOptions {
        timestamps,
        durations: args.durations,
        // In a file, strace -f names the thread on every line.
        prefix: if args.output.is_some() {
            ThreadPrefix::File
        } else {
            ThreadPrefix::Screen
        },
        results: match (args.successful_only, args.failed_only, status(args)?) {
            (_, _, Some(results)) => results,
            (true, _, None) => Results::Successful,
            (_, true, None) => Results::Failed,
            _ => Results::All,
        },
        signals: match last_qualifier(&args.expressions, "signal=") {
            Some(set) => SignalFilter::parse(set).map_err(anyhow::Error::msg)?,
            None => SignalFilter::default(),
        },
        strings: match args.hex_strings {
            0 => Strings::Escaped,
            1 => Strings::HexWhenBinary,
            _ => Strings::Hex,
        },
        fd_paths: args.decode_fds.then_some(fd_path as FdPaths),
    };
    if let (Some(base), true) = (&args.output, args.follow >= 2) {
        let base = base.clone();
        let open: OpenThreadFile = Box::new(move |tid| {
            let path = PathBuf::from(format!("{}.{tid}", base.display()));
            tracebench_files::create_streamed(&path)
                .map(std::io::BufWriter::new)
                .map_err(std::io::Error::other)
        });
        return Ok(Some(TextSink::PerThread(PerThreadFiles::new(
            open, options,
        ))));
    }
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(tracebench_files::create_streamed(
            path,
        )?)),
        None => Box::new(std::io::stderr()),
    };
    Ok(Some(match args.format {
        TextFormat::Strace => TextSink::Strace(StraceWriter::new(out, options)),
        TextFormat::Jsonl => TextSink::Jsonl(JsonlWriter::new(out)),
    }))
}

/// Counts the sampler's rounds: it is idle once after each.
struct Rounds(u64);

impl EventSink for Rounds {
    fn event(&mut self, _: &tracebench_trace::Event) {}

    fn idle(&mut self, _: u64) {
        self.0 += 1;
    }
}

/// `trace --sample HZ`: no ptrace at all, only /proc; the share of time
/// each thread spent in each state (and with -w, the samples themselves).
/// (See [`trace_writer`] for the file.)
fn sample(args: &TraceArgs, tracee: &Tracee, hz: u32) -> anyhow::Result<u8> {
    let (_, command_line) = tracee_of(args)?;
    let mut file = match &args.trace_file {
        Some(path) => Some(trace_writer(
            path,
            &Header::now(command_line, Backend::Sample),
        )?),
        None => None,
    };
    let capture = SampleCapture::start(tracee, hz, &ProgramStdio::Inherit)?;
    let _signals = tracebench_trace::signals::forward_to(&capture.stop_handle())
        .context("installing signal handlers")?;
    let mut timelines = Timelines::totals_only();
    let mut rounds = Rounds(0);
    let started = std::time::Instant::now();
    let end = {
        let mut sinks: Vec<&mut dyn EventSink> = vec![&mut timelines, &mut rounds];
        if let Some(file) = file.as_mut() {
            sinks.push(file);
        }
        Box::new(capture).run(&mut Tee(sinks))?
    };
    if let (Some(file), Some(path)) = (file, &args.trace_file) {
        file.finish()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let table = format!(
        "{timelines}{} samples at {hz} Hz over {:.1} s (states are sampled, not traced: \
         short calls are missed)\n",
        rounds.0,
        started.elapsed().as_secs_f64()
    );
    match &args.output {
        Some(path) => {
            let mut out = tracebench_files::create_streamed(path)?;
            out.write_all(table.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => eprint!("{table}"),
    }
    Ok(end
        .exit
        .map_or(0, |status| status.shell_code().clamp(0, 255) as u8))
}

/// The trace file `-w` names: private, never through a symlink, written
/// as the trace goes (a killed tracer leaves what it wrote, readable).
fn trace_writer(
    path: &std::path::Path,
    header: &Header,
) -> anyhow::Result<TraceWriter<std::io::BufWriter<std::fs::File>>> {
    let file = tracebench_files::create_streamed(path)?;
    TraceWriter::new(std::io::BufWriter::with_capacity(1 << 17, file), header)
        .with_context(|| format!("cannot create {}", path.display()))
}
