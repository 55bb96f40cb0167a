//! `tracebench dash` (and `tracebench` alone): the live dashboard.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tracebench_analysis::states::ThreadState;
use tracebench_ui::live::Traced;
use tracebench_ui::{App, DashConfig};

use crate::parse_duration;

/// Arguments of `tracebench dash`.
#[derive(clap::Args, Debug)]
pub struct DashArgs {
    /// Concurrency model of the traced server
    #[arg(long, default_value = "pool-futex")]
    mode: String,
    /// Workers of the server's pool (default 5), or its event loops
    /// (epoll, io-uring: default one per CPU)
    #[arg(long)]
    workers: Option<usize>,
    /// Simulated work per request, long enough to make queueing visible
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    delay: Duration,
    /// Load connections (in flight at most, with --rate)
    #[arg(short = 'c', long = "connections", default_value_t = 10)]
    connections: usize,
    /// Open-loop load at this many requests per second
    #[arg(long)]
    rate: Option<f64>,
    /// Syscalls to trace, as strace: trace=NAME,%CLASS,/REGEX,!SET,all;
    /// futex=wait (repeatable;
    /// default: what tells every thread's state in a server)
    #[arg(short = 'e', value_name = "EXPR")]
    expressions: Vec<String>,
    /// Trace this running program (every thread; detached at the end)
    /// instead of starting our server; with --url, load it too
    #[arg(short = 'p', value_name = "PID", conflicts_with = "command")]
    pid: Option<i32>,
    /// Where the server given by -p or after -- serves HTTP (the load goes
    /// there; http:// or https://)
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// https: trust only the certificates in this PEM file, not the
    /// system's (curl's and oha's --cacert)
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// https: take any certificate, unchecked (curl's -k, oha's --insecure)
    #[arg(short = 'k', long)]
    insecure: bool,
    /// Without a terminal: run this long, then print a summary
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    headless_for: Duration,
    /// On q (or SIGTERM, SIGINT): the program the dashboard started gets
    /// SIGTERM, this long to end by itself, then SIGKILL
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    grace: Duration,
    /// Do not record the run
    #[arg(long, conflicts_with = "record_dir")]
    no_record: bool,
    /// Record the run here instead of runs/<time>/
    #[arg(long, value_name = "DIR")]
    record_dir: Option<std::path::PathBuf>,
    /// Let idle CPUs halt while tracing (by default, as root, they poll so
    /// ptrace stops are cheap; see `tracebench trace --help`)
    #[arg(long)]
    no_poll_idle: bool,
    #[command(flatten)]
    capture: crate::capture::CaptureArgs,
    /// Start and trace this program instead of our server; with --url,
    /// load it too (without, only watch it: `-- tracebench lab race`)
    #[arg(last = true, value_name = "CMD")]
    command: Vec<std::ffi::OsString>,
}

impl Default for DashArgs {
    fn default() -> Self {
        DashArgs {
            mode: "pool-futex".into(),
            workers: None,
            delay: Duration::from_millis(50),
            connections: 10,
            rate: None,
            expressions: Vec::new(),
            pid: None,
            url: None,
            cacert: None,
            insecure: false,
            headless_for: Duration::from_secs(5),
            grace: Duration::from_secs(3),
            no_record: false,
            record_dir: None,
            no_poll_idle: false,
            capture: crate::capture::CaptureArgs::default(),
            command: Vec::new(),
        }
    }
}

/// The plain-text summary printed after the dashboard (or instead of it,
/// without a terminal).
pub fn summary(app: &App) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "{}", app.title);
    if app.data.elapsed_s > 0.0 {
        let _ = writeln!(
            text,
            "{} answered, {} failed, {} in flight at the end, in {:.1} s; {} trace events ({} not shown live)",
            app.data.completed,
            app.data.failed,
            app.data.in_flight,
            app.data.elapsed_s,
            app.data.events,
            app.data.dropped
        );
    } else {
        // No load ran: the trace's own span is the run's length.
        let traced_s = app.data.now_ns.saturating_sub(app.data.origin_ns) as f64 / 1e9;
        let _ = writeln!(
            text,
            "{} trace events over {traced_s:.1} s ({} not shown live)",
            app.data.events, app.data.dropped
        );
    }
    if !app.data.latency.is_empty() {
        let ms = |q: f64| app.data.latency.value_at_quantile(q) as f64 / 1e6;
        let _ = writeln!(
            text,
            "latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            app.data.latency.max() as f64 / 1e6
        );
    }
    let stats = app.data.requests.stats();
    if stats.requests() > 0 {
        let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e6;
        let _ = writeln!(
            text,
            "server side, from the trace: {} requests; queued p50 {:.1} ms, p99 {:.1} ms; served p50 {:.1} ms, p99 {:.1} ms",
            stats.requests(),
            ms(stats.queue_wait(), 0.5),
            ms(stats.queue_wait(), 0.99),
            ms(stats.service(), 0.5),
            ms(stats.service(), 0.99)
        );
    }
    let futex = app.data.futex.totals();
    if futex.calls() > 0 {
        let _ = writeln!(
            text,
            "futex: {} waits ({} EAGAIN, {} timed out), {} wakes waking {:.2} each, {} thundering herds",
            futex.waits,
            futex.eagain,
            futex.timeouts,
            futex.wakes,
            futex.woken_per_wake(),
            futex.herds
        );
    }
    thread_table(app, &mut text);
    let hidden = app.data.threads.len() - app.listed_threads().count();
    if hidden > 0 {
        let _ = writeln!(
            text,
            "({hidden} threads that exited more than 5 s before the end are not listed; the dashboard's x key lists them)"
        );
    }
    text
}

/// The summary's thread table: the busiest threads, one line each, and
/// a line for the rest.
fn thread_table(app: &App, text: &mut String) {
    let _ = writeln!(
        text,
        "{:>8} {:<15} {:<10} {:<12} {:>9} {:>7} {:>5}",
        "tid", "name", "role", "state", "syscalls", "served", "cpu"
    );
    // A thread-per-request server makes thousands: the busiest are listed,
    // the rest summed up in one line.
    let mut listed: Vec<_> = app.listed_threads().collect();
    listed.sort_by_key(|(tid, _)| {
        std::cmp::Reverse(app.data.syscalls_of(**tid) + app.data.served_by(**tid))
    });
    let rest = listed.split_off(listed.len().min(SUMMARY_THREADS));
    listed.sort_by_key(|(tid, _)| **tid);
    for (tid, row) in listed {
        let state = match app.data.state_of(*tid) {
            ThreadState::FutexWait(_) => "futex-wait",
            other => other.label(),
        };
        let state = if row.sampled {
            format!("{state}~")
        } else {
            state.to_owned()
        };
        let _ = writeln!(
            text,
            "{tid:>8} {:<15} {:<10} {state:<12} {:>9} {:>7} {:>5}",
            row.name,
            app.data.role_of(*tid),
            app.data.syscalls_of(*tid),
            app.data.served_by(*tid),
            row.cpu
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.0}%"))
        );
    }
    if !rest.is_empty() {
        let exited = rest
            .iter()
            .filter(|(tid, _)| app.data.state_of(**tid) == ThreadState::Exited)
            .count();
        let syscalls: u64 = rest
            .iter()
            .map(|(tid, _)| app.data.syscalls_of(**tid))
            .sum();
        let served: u64 = rest.iter().map(|(tid, _)| app.data.served_by(**tid)).sum();
        let _ = writeln!(
            text,
            "{:>8} {} more threads ({exited} exited): {syscalls} syscalls, {served} served",
            "…",
            rest.len()
        );
    }
}

/// Threads the exit summary lists one per line; the rest get one line.
const SUMMARY_THREADS: usize = 20;

/// A new, empty directory for a recording: `runs/<time>`, sortable and
/// with no ':' to quote, or `runs/<time>-2`, `-3`… when dashboards start
/// within the same second (created here, so two of them can never share
/// one).
fn new_run_dir() -> anyhow::Result<std::path::PathBuf> {
    // Ours and private, not a symlink (a `runs` planted towards /etc must
    // not make us create /etc/<time>/).
    let runs = tracebench_files::OutputDir::create(std::path::Path::new("runs"))?;
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "-");
    for n in 1.. {
        let name = if n == 1 {
            stamp.clone()
        } else {
            format!("{stamp}-{n}")
        };
        match runs.create_dir(&name) {
            Ok(dir) => return Ok(dir.path().to_path_buf()),
            Err(tracebench_files::FileError::Io { error, .. })
                if error.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("some name is free")
}

/// Runs the dashboard. The exit status: 128 + the signal that ended the dashboard, or the
/// traced program's own if it ended by itself (like `tracebench trace`),
/// or 0.
pub fn run(args: DashArgs) -> anyhow::Result<u8> {
    let exe = std::env::current_exe().context("cannot find the tracebench binary")?;
    let selection = tracebench_trace::Selection::parse(&args.expressions)?;
    // Checked here, as `serve` and `load` check them, rather than found
    // out from a server that never listens or a load that never starts.
    if args.workers == Some(0) {
        anyhow::bail!("--workers must be at least 1");
    }
    if args.connections == 0 {
        anyhow::bail!("-c must be at least 1");
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        anyhow::bail!("--rate must be a positive number of requests per second, not {rate}");
    }
    let traced = match (args.pid, args.command.split_first(), args.url) {
        (Some(pid), _, url) => Traced::Attach { pid, url },
        (None, Some((program, rest)), url) => Traced::Command {
            program: program.clone(),
            args: rest.to_vec(),
            url,
        },
        (None, None, Some(_)) => {
            anyhow::bail!("--url goes with -p PID or -- CMD: the server to load")
        }
        _ => {
            let mode = args.mode.parse::<tracebench_server::Mode>()?;
            Traced::Serve {
                mode: args.mode,
                workers: args
                    .workers
                    .unwrap_or_else(|| crate::serve::default_workers(mode)),
                delay: args.delay,
            }
        }
    };
    let record = match (args.no_record, args.record_dir) {
        (true, _) => None,
        (false, Some(dir)) => Some(dir),
        (false, None) => Some(new_run_dir()?),
    };
    let config = DashConfig {
        exe,
        traced,
        modes: tracebench_server::Mode::ALL
            .iter()
            .map(|m| m.to_string())
            .collect(),
        selection,
        connections: args.connections,
        rate: args.rate,
        headless_for: args.headless_for,
        grace: args.grace,
        record,
        restarts: 0,
        capture: args.capture.starter(!args.no_poll_idle),
        ca_file: args.cacert,
        insecure: args.insecure,
    };
    let finished = tracebench_ui::run(&config)?;
    // A closed terminal (SIGHUP) leaves standard output unwritable: that
    // is no reason to panic, and the exit status below says what ended us.
    let _ = write!(std::io::stdout().lock(), "{}", summary(&finished.app));
    for dir in &finished.recordings {
        let prefix = dir.display().to_string();
        let line = if finished.write_errors.iter().any(|e| e.starts_with(&prefix)) {
            format!("recorded to {prefix}/, incompletely: some of its files could not be written")
        } else {
            format!(
                "recorded to {prefix}/ (trace.tbt, latency.hlog, load.csv, settings.json, threads.json, output.log)"
            )
        };
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
    for gap in &finished.capture_gaps {
        eprintln!("tracebench: {gap}");
    }
    // A file that could not be written whole is said, and the run fails.
    for error in &finished.write_errors {
        eprintln!("tracebench: cannot write {error}: the recording is incomplete");
    }
    if !finished.write_errors.is_empty() && finished.signal.is_none() {
        return Ok(1);
    }
    Ok(match (finished.signal, finished.program_exit) {
        (Some(signal), _) => 128u8.saturating_add(signal as u8),
        (None, Some(status)) => status.shell_code().clamp(0, 255) as u8,
        (None, None) => 0,
    })
}

/// Arguments of `tracebench replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// A recorded run (runs/<time>/) or a trace file
    #[arg(value_name = "RUN")]
    run: std::path::PathBuf,
}

/// Replays a recording in the dashboard (or, without a terminal, prints
/// the whole run's summary).
/// The exit status: 128 + the signal that ended it, or 0.
pub fn replay(args: ReplayArgs) -> anyhow::Result<u8> {
    // The recording is read through before anything is said about it, so
    // a recording that cannot be replayed gives its error alone.
    let player = tracebench_ui::replay::load(&args.run)?;
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        eprintln!(
            "tracebench: standard output is not a terminal, so no dashboard: the whole recording's summary"
        );
    }
    let log_damage = player.log_damage.clone();
    let notes = player.notes.clone();
    let replayed = tracebench_ui::replay::play(player)?;
    for note in notes {
        eprintln!("tracebench: {note}");
    }
    if replayed.truncated {
        eprintln!(
            "tracebench: the recording was cut short (the tracer did not finish it); replayed up to where it ends"
        );
    }
    if let Some(damage) = log_damage {
        eprintln!(
            "tracebench: {} is {damage}; replayed the latencies of the intervals before it, the rest of the log was ignored",
            args.run.join("latency.hlog").display()
        );
    }
    let _ = write!(std::io::stdout().lock(), "{}", summary(&replayed.app));
    Ok(replayed
        .signal
        .map_or(0, |signal| 128u8.saturating_add(signal as u8)))
}
