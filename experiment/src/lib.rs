//! The classic concurrency experiment in one call: every server mode of
//! tracebench — sync, fork, thread, pool-spin, pool-futex, pool-std — is
//! started under our tracer, one after the other, and given the same
//! batch of N concurrent requests of d seconds each. For each mode the
//! batch's wall time is set beside what the mode's model predicts (sync
//! N·d, a pool of W ⌈N/W⌉·d, thread and fork d), with the client's
//! latency, the server's CPU time, the threads and processes it created,
//! its context switches, futex waits, peak memory, and which thread served
//! which request (from the trace alone, [`tracebench_analysis::attribution`]).
//!
//! [`run`] writes a run directory: `table.md` and `table.csv`, one trace
//! file per mode (`<mode>.tbt`, for `tracebench replay`), `latency.svg`,
//! and `timeline-<mode>.svg` per mode.
#![warn(missing_docs)]

mod measure;
pub mod observer;
pub mod plot;
pub mod table;
pub mod theory;
mod traced;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracebench_analysis::attribution::RequestRecord;
use tracebench_loadgen::{LoadConfig, StopAfter, Target};
use tracebench_server::Mode;
use tracebench_trace::CaptureStarter;
use tracebench_trace::signals::Noticed;

pub use measure::ChildrenUsage;

/// Why an experiment could not run, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// A setting the experiment cannot use (`-c 0`, an unknown mode).
    #[error("{0}")]
    BadConfig(String),
    /// The output directory or a file in it could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The output directory is not safe to write into, or a file in it
    /// could not be created.
    #[error(transparent)]
    Files(#[from] tracebench_files::FileError),
    /// The output directory already holds files.
    #[error("{} already holds files, and an experiment is never written over: choose another directory", .0.display())]
    NotEmpty(PathBuf),
    /// The traced server could not be started, or did not listen.
    #[error("{mode}: {message}")]
    Server {
        /// The mode being run.
        mode: Mode,
        /// What went wrong.
        message: String,
    },
    /// The load generator failed.
    #[error("{mode}: load: {source}")]
    Load {
        /// The mode being run.
        mode: Mode,
        /// The load generator's error.
        source: tracebench_loadgen::LoadError,
    },
    /// A plot could not be drawn.
    #[error("plot {name}: {message}")]
    Plot {
        /// The plot's file name.
        name: String,
        /// The plotting library's message.
        message: String,
    },
    /// Ctrl-C (SIGINT, SIGTERM or SIGHUP): the traced server was stopped;
    /// the modes already measured were written.
    #[error("interrupted during {mode}: the server was stopped; {completed} mode(s) written")]
    Interrupted {
        /// The mode that was running.
        mode: Mode,
        /// How many modes had finished (and are in the written table);
        /// [`run`] fills it in.
        completed: usize,
    },
}

/// How long to wait, after the last answer, for the trace to show the
/// server closing every connection.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Debug, Clone)]
pub struct ExperimentConfig {
    /// The tracebench binary, whose `serve` is traced.
    pub exe: PathBuf,
    /// The modes, run in this order.
    pub modes: Vec<Mode>,
    /// N: requests fired at once, one connection each (`-c`).
    pub requests: usize,
    /// d: the server's simulated work per request (`--delay`).
    pub delay: Duration,
    /// W: workers of the pool modes (`--workers`).
    pub workers: usize,
    /// The run directory to write.
    pub out: PathBuf,
    /// The capture backend that traces the server.
    pub capture: CaptureStarter,
}

/// The most concurrent requests: each is a connection, a thread or a
/// process in some mode, and all are in flight at once.
pub const MAX_REQUESTS: usize = 1000;
/// The most pool workers (the server's own limit).
pub const MAX_WORKERS: usize = 4096;

impl ExperimentConfig {
    /// The article's experiment: every mode, N = 10, d = 1 s, W = 5.
    pub fn classic(exe: PathBuf, out: PathBuf, capture: CaptureStarter) -> Self {
        ExperimentConfig {
            exe,
            modes: Mode::ALL.to_vec(),
            requests: 10,
            delay: Duration::from_secs(1),
            workers: 5,
            out,
            capture,
        }
    }

    /// The `--workers` the server of `mode` runs with: W for a pool, and
    /// one event loop for epoll, whose point is that one thread serves
    /// every request at once.
    pub fn server_workers(&self, mode: Mode) -> usize {
        if mode.is_event_loop() {
            1
        } else {
            self.workers
        }
    }

    /// Checks the numbers a user can get wrong, with a one-line message.
    pub fn validate(&self) -> Result<(), ExperimentError> {
        let bad = |text: &str| Err(ExperimentError::BadConfig(text.to_owned()));
        self.validate_load()?;
        if self.delay.is_zero() {
            return bad("--delay must be longer than 0 (the model divides time into waves of d)");
        }
        self.validate_load()
    }

    /// The checks of [`ExperimentConfig::validate`] but the one that needs a
    /// model (a delay above 0): what a load against one server needs, as the
    /// observer effect runs it (a delay of 0 makes the busiest server).
    pub fn validate_load(&self) -> Result<(), ExperimentError> {
        let bad = |text: &str| Err(ExperimentError::BadConfig(text.to_owned()));
        if self.modes.is_empty() {
            return bad("--modes needs at least one mode");
        }
        if self.requests == 0 {
            return bad("-c must be at least 1");
        }
        if self.requests > MAX_REQUESTS {
            return bad(&format!("-c must be at most {MAX_REQUESTS}"));
        }
        if self.workers == 0 {
            return bad("--workers must be at least 1");
        }
        if self.workers > MAX_WORKERS {
            return bad(&format!("--workers must be at most {MAX_WORKERS}"));
        }
        if self.delay > Duration::from_secs(60) {
            return bad("--delay must be at most 60s");
        }
        Ok(())
    }
}

/// Whether a trace of system calls can follow `mode`'s requests: not on
/// io_uring, whose accepts, reads, writes and closes are operations inside
/// io_uring_enter(2), never system calls of their own.
pub fn attributable(mode: Mode) -> bool {
    mode != Mode::IoUring
}

/// Parses `--modes`: names separated by commas, in the order to run them
/// (`all` for the whole progression).
pub fn parse_modes(text: &str) -> Result<Vec<Mode>, ExperimentError> {
    let mut modes = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "all" {
            modes.extend(Mode::ALL);
            continue;
        }
        let mode = name.parse::<Mode>().map_err(|_| {
            ExperimentError::BadConfig(format!(
                "unknown mode '{name}' in --modes (known: {}, or all)",
                Mode::ALL.map(Mode::name).join(", ")
            ))
        })?;
        if modes.contains(&mode) {
            return Err(ExperimentError::BadConfig(format!(
                "mode '{name}' is listed twice in --modes"
            )));
        }
        modes.push(mode);
    }
    if modes.is_empty() {
        return Err(ExperimentError::BadConfig(
            "--modes needs at least one mode".into(),
        ));
    }
    Ok(modes)
}

/// Everything measured about one mode.
#[derive(Debug, Clone)]
pub struct ModeResult {
    /// The mode.
    pub mode: Mode,
    /// What the model predicts for the batch (see [`theory`]).
    pub theory: Duration,
    /// The batch's wall time: from firing the N requests to the last
    /// answer, as the load generator measured it.
    pub measured: Duration,
    /// Client latency (connect to last byte): fastest request.
    pub latency_min: Duration,
    /// Client latency, median.
    pub latency_p50: Duration,
    /// Client latency, 99th percentile.
    pub latency_p99: Duration,
    /// Client latency, slowest request.
    pub latency_max: Duration,
    /// Requests answered with a 2xx.
    pub answered: u64,
    /// Requests that failed or were answered otherwise.
    pub failed: u64,
    /// The server's resource use while it ran (see [`ChildrenUsage`]).
    pub usage: ChildrenUsage,
    /// Threads the server created (the tracer's `Spawned` events of kind
    /// thread).
    pub threads_created: u64,
    /// Processes the server created (fork, vfork, clone without
    /// CLONE_THREAD).
    pub processes_created: u64,
    /// System calls the tracer stopped the server at (each costs two
    /// ptrace stops, and so two of the server's context switches).
    pub traced_syscalls: u64,
    /// FUTEX_WAIT calls that returned, all words.
    pub futex_waits: u64,
    /// FUTEX_WAKE calls that returned, all words.
    pub futex_wakes: u64,
    /// The server process's peak resident set (VmHWM), KiB, read just
    /// before it was stopped; `None` if it could not be read.
    pub peak_rss_kib: Option<u64>,
    /// Every request attributed from the trace, in order of completion.
    pub requests: Vec<RequestRecord>,
}

impl ModeResult {
    /// How far the measured time is from theory, in % of theory
    /// (positive: slower than the model).
    pub fn deviation_percent(&self) -> f64 {
        theory::deviation_percent(self.measured, self.theory)
    }

    /// Requests attributed to a serving thread from the trace.
    pub fn attributed(&self) -> usize {
        self.requests.len()
    }

    /// Whether the trace can say which thread served each request (see
    /// [`attributable`]).
    pub fn attributable(&self) -> bool {
        attributable(self.mode)
    }

    /// Requests per serving thread, in order of each thread's first
    /// pick-up: `(tid, requests)`.
    pub fn served_by(&self) -> Vec<(i32, u64)> {
        let mut first_pick_up: Vec<(u64, i32)> = Vec::new();
        let mut counts: std::collections::HashMap<i32, u64> = Default::default();
        for request in &self.requests {
            let count = counts.entry(request.serving_tid).or_insert(0);
            if *count == 0 {
                first_pick_up.push((request.picked_up_ns, request.serving_tid));
            }
            *count += 1;
        }
        first_pick_up.sort_unstable();
        first_pick_up
            .into_iter()
            .map(|(_, tid)| (tid, counts[&tid]))
            .collect()
    }
}

/// What [`run`] wrote.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// The settings it ran with.
    pub config: ExperimentConfig,
    /// One result per mode, in the order run.
    pub results: Vec<ModeResult>,
    /// Every file written, relative paths inside `config.out`.
    pub files: Vec<PathBuf>,
}

/// Runs every mode of `config` in turn and writes the run directory.
/// `on_mode` is called as each mode starts (`None`) and ends (`Some`), for
/// progress output. SIGINT/SIGTERM/SIGHUP stop the traced server, write
/// what was measured so far and return [`ExperimentError::Interrupted`].
///
/// Resource use is read with `getrusage(RUSAGE_CHILDREN)` before and
/// after each mode, so the calling process should start no other child
/// processes meanwhile.
pub fn run(
    config: &ExperimentConfig,
    mut on_mode: impl FnMut(Mode, Option<&ModeResult>),
) -> Result<Experiment, ExperimentError> {
    config.validate()?;
    create_dir(&config.out)?;
    // Ctrl-C must stop the traced server (the capture does) instead of
    // killing us with the server still attached to our ptrace.
    let (_watch, noticed) =
        tracebench_trace::signals::notice().map_err(|e| ExperimentError::Server {
            mode: config.modes[0],
            message: format!("cannot install the signal handlers: {e}"),
        })?;
    let mut results = Vec::new();
    let mut files = Vec::new();
    let mut outcome = Ok(());
    for &mode in &config.modes {
        on_mode(mode, None);
        match run_mode(config, mode, &noticed) {
            Ok(result) => {
                files.push(PathBuf::from(trace_file_name(mode)));
                on_mode(mode, Some(&result));
                results.push(result);
            }
            Err(ExperimentError::Interrupted { mode, .. }) => {
                files.push(PathBuf::from(trace_file_name(mode)));
                outcome = Err(ExperimentError::Interrupted {
                    mode,
                    completed: results.len(),
                });
                break;
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    if !results.is_empty() {
        files.extend(write_outputs(config, &results)?);
    }
    outcome.map(|()| Experiment {
        config: config.clone(),
        results,
        files,
    })
}

/// The trace file of one mode, inside the run directory.
pub fn trace_file_name(mode: Mode) -> String {
    format!("{mode}.tbt")
}

/// The timeline plot of one mode, inside the run directory.
pub fn timeline_file_name(mode: Mode) -> String {
    format!("timeline-{mode}.svg")
}

/// Creates the output directory, private (or takes an empty one of ours):
/// one experiment's files are never mixed with another's.
pub(crate) fn create_dir(dir: &Path) -> Result<(), ExperimentError> {
    let out = tracebench_files::OutputDir::create(dir)?;
    if !out.is_empty()? {
        return Err(ExperimentError::NotEmpty(dir.to_owned()));
    }
    Ok(())
}

/// Writes the new file `name` into `dir` (private, never through a
/// symlink, never over an existing name).
pub(crate) fn write_file(dir: &Path, name: &str, text: &str) -> Result<PathBuf, ExperimentError> {
    tracebench_files::OutputDir::open(dir)?.write_file(name, text.as_bytes())?;
    Ok(PathBuf::from(name))
}

/// Writes the tables and plots of `results` into `config.out`.
fn write_outputs(
    config: &ExperimentConfig,
    results: &[ModeResult],
) -> Result<Vec<PathBuf>, ExperimentError> {
    let mut files = vec![
        write_file(&config.out, "table.md", &table::markdown(config, results))?,
        write_file(&config.out, "table.csv", &table::csv(config, results))?,
        write_file(&config.out, "latency.svg", &plot::latency_svg(results)?)?,
    ];
    for result in results {
        let name = timeline_file_name(result.mode);
        files.push(write_file(
            &config.out,
            &name,
            &plot::timeline_svg(result)?,
        )?);
    }
    Ok(files)
}

/// Starts `mode` traced, fires the batch, measures, and stops the server.
fn run_mode(
    config: &ExperimentConfig,
    mode: Mode,
    noticed: &Noticed,
) -> Result<ModeResult, ExperimentError> {
    let theory = theory::theoretical_time(mode, config.requests, config.workers, config.delay);
    let before = ChildrenUsage::now();
    let trace_path = config.out.join(trace_file_name(mode));
    // Dropping the server on any early return stops it.
    let server = traced::TracedServer::start(config, mode, &trace_path, noticed)?;
    if noticed.first().is_some() {
        return Err(ExperimentError::Interrupted { mode, completed: 0 });
    }

    let target =
        Target::parse(&server.url()).map_err(|source| ExperimentError::Load { mode, source })?;
    let mut load = LoadConfig::new(target);
    load.connections = config.requests;
    load.stop = StopAfter::Requests(config.requests as u64);
    load.keep_alive = false;
    // The slowest request of a batch waits for the whole batch; a mode
    // far off its model must still finish and show it, not time out.
    load.timeout = theory * 3 + Duration::from_secs(10);
    let cancel = Arc::new(AtomicBool::new(false));
    let report = {
        let cancel_on_signal = Arc::clone(&cancel);
        let noticed = noticed.clone();
        tracebench_loadgen::run_observed(&load, Arc::clone(&cancel), move |_| {
            if noticed.first().is_some() {
                cancel_on_signal.store(true, Ordering::SeqCst);
            }
        })
        .map_err(|source| ExperimentError::Load { mode, source })?
    };
    if report.cancelled || noticed.first().is_some() {
        return Err(ExperimentError::Interrupted { mode, completed: 0 });
    }
    // The client has its answer before the server's close returns: give
    // the trace a moment to see every close before the server is killed,
    // or the last requests would end at the kill (or not be seen at all).
    let answered_to_client = report.stats.completed() as usize;
    if attributable(mode) {
        server.wait_for_requests(answered_to_client, DRAIN_TIMEOUT, noticed);
    }
    if noticed.first().is_some() {
        return Err(ExperimentError::Interrupted { mode, completed: 0 });
    }
    // Before the stop: the server's memory is gone once it is killed.
    let peak_rss_kib = server.pid().and_then(measure::peak_rss_kib);
    let analysis = server.stop()?;
    let usage = ChildrenUsage::now().since(&before);

    let latency = &report.stats.latency;
    let at = |q: f64| Duration::from_nanos(latency.value_at_quantile(q));
    let answered = report
        .stats
        .statuses
        .iter()
        .filter(|(status, _)| (200..300).contains(*status))
        .map(|(_, count)| count)
        .sum();
    Ok(ModeResult {
        mode,
        theory,
        measured: report.elapsed,
        latency_min: Duration::from_nanos(latency.min()),
        latency_p50: at(0.5),
        latency_p99: at(0.99),
        latency_max: Duration::from_nanos(latency.max()),
        answered,
        failed: report.stats.failed() + report.stats.non_success(),
        usage,
        threads_created: analysis.threads_created,
        processes_created: analysis.processes_created,
        traced_syscalls: analysis.traced_syscalls,
        futex_waits: analysis.futex.totals().waits,
        futex_wakes: analysis.futex.totals().wakes,
        peak_rss_kib,
        requests: analysis.requests,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A capture starter for tests that never trace.
    pub(crate) fn never_started() -> CaptureStarter {
        CaptureStarter {
            backend: tracebench_trace::Backend::Ptrace,
            start: std::sync::Arc::new(
                |_: &tracebench_trace::Tracee,
                 _: tracebench_trace::ProgramStdio,
                 _: &tracebench_trace::Selection| {
                    Err(tracebench_trace::CaptureError::BadArgument(
                        "not started in this test".into(),
                    ))
                },
            ),
        }
    }

    fn config() -> ExperimentConfig {
        ExperimentConfig::classic(
            PathBuf::from("tracebench"),
            PathBuf::from("out"),
            crate::tests::never_started(),
        )
    }

    fn message(result: Result<impl std::fmt::Debug, ExperimentError>) -> String {
        let text = result.unwrap_err().to_string();
        assert_eq!(text.lines().count(), 1, "{text}");
        text
    }

    #[test]
    fn modes_parse_in_the_order_given() {
        assert_eq!(
            parse_modes("pool-std, sync").unwrap(),
            vec![Mode::PoolStd, Mode::Sync]
        );
        assert_eq!(parse_modes("all").unwrap(), Mode::ALL.to_vec());
    }

    #[test]
    fn bad_modes_say_what_is_known() {
        let text = message(parse_modes("nonsense"));
        assert!(text.contains("unknown mode 'nonsense'"), "{text}");
        assert!(text.contains("pool-futex"), "{text}");
        assert!(message(parse_modes("sync,sync")).contains("twice"));
        assert!(message(parse_modes(" , ")).contains("at least one"));
    }

    #[test]
    fn the_classic_settings_are_valid() {
        config().validate().unwrap();
    }

    #[test]
    fn bad_numbers_are_refused_in_one_line() {
        let with = |change: fn(&mut ExperimentConfig)| {
            let mut c = config();
            change(&mut c);
            message(c.validate())
        };
        assert_eq!(with(|c| c.requests = 0), "-c must be at least 1");
        assert!(with(|c| c.requests = MAX_REQUESTS + 1).contains("at most"));
        assert_eq!(with(|c| c.workers = 0), "--workers must be at least 1");
        assert!(with(|c| c.delay = Duration::ZERO).contains("--delay"));
        assert!(with(|c| c.modes.clear()).contains("at least one mode"));
    }

    #[test]
    fn requests_per_thread_follow_the_first_pick_up() {
        use tracebench_analysis::attribution::RequestEnd;
        let request = |tid: i32, picked_up_ns: u64| RequestRecord {
            connection: 0,
            index_on_connection: 0,
            fd: 4,
            acceptor_pid: 1,
            acceptor_tid: 1,
            serving_pid: 1,
            serving_tid: tid,
            accepted_ns: 0,
            started_ns: 0,
            picked_up_ns,
            ended_ns: picked_up_ns + 5,
            end: RequestEnd::Closed,
            bytes_read: 0,
            bytes_written: 0,
        };
        let result = ModeResult {
            mode: Mode::PoolFutex,
            theory: Duration::from_secs(1),
            measured: Duration::from_secs(1),
            latency_min: Duration::ZERO,
            latency_p50: Duration::ZERO,
            latency_p99: Duration::ZERO,
            latency_max: Duration::ZERO,
            answered: 3,
            failed: 0,
            usage: ChildrenUsage::default(),
            threads_created: 0,
            processes_created: 0,
            traced_syscalls: 0,
            futex_waits: 0,
            futex_wakes: 0,
            peak_rss_kib: None,
            // Completed in the order 9, 8, 9; 8 picked up first.
            requests: vec![request(9, 20), request(8, 10), request(9, 30)],
        };
        assert_eq!(result.served_by(), vec![(8, 1), (9, 2)]);
        assert_eq!(result.attributed(), 3);
    }
}
