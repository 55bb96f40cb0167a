//! `tracebench experiment`: every server mode, traced, under the same
//! batch of concurrent requests, set beside its model.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tracebench_experiment::observer::{Observer, observer_effect};
use tracebench_experiment::{ExperimentConfig, ModeResult, parse_modes};
use tracebench_server::Mode;

use crate::parse_duration;

/// The delay of `--quick`: long enough that one wave of requests stands
/// well above the tracing and start-up costs (a few ms), short enough for
/// CI (about 4 s for every mode).
const QUICK_DELAY: Duration = Duration::from_millis(200);

/// Arguments of `tracebench experiment`.
#[derive(clap::Args, Debug)]
pub struct ExperimentArgs {
    /// N: concurrent requests, fired at once, one connection each
    #[arg(short = 'c', long = "concurrency", default_value_t = 10)]
    concurrency: usize,
    /// d: the server's work per request (a nanosleep); 1s, or 0s with
    /// --backends
    #[arg(long, value_parser = parse_duration)]
    delay: Option<Duration>,
    /// W: workers of the pool modes (an event loop runs alone: one thread
    /// serves every request)
    #[arg(long, default_value_t = 5)]
    workers: usize,
    /// The modes to run, in order, comma-separated (or all)
    #[arg(long, default_value = "all", value_name = "MODE,…")]
    modes: String,
    /// A short delay (200ms) for a quick check, as in CI; overrides --delay
    #[arg(long)]
    quick: bool,
    /// The run directory (default: runs/experiment-<time>/)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Instead of the modes: the observer effect. The same server (the
    /// first of --modes; pool-futex for all) under the same load, untraced
    /// (none) and under each backend, side by side
    #[arg(long, value_name = "none,ptrace,perf", conflicts_with = "quick")]
    backends: Option<String>,
    /// How long each --backends run loads the server
    #[arg(long, default_value = "3s", value_parser = parse_duration, requires = "backends")]
    duration: Duration,
    #[command(flatten)]
    capture: crate::capture::CaptureArgs,
}

/// Runs the experiment, prints progress on stderr and the table on stdout.
pub fn run(args: ExperimentArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the tracebench binary")?;
    let out = args.out.unwrap_or_else(|| {
        // runs/experiment-2026-11-22T15-57-21Z: sortable, no ':' to quote.
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        PathBuf::from("runs").join(format!("experiment-{}", stamp.replace(':', "-")))
    });
    let observing = args.backends.is_some();
    let delay = match (args.quick, args.delay) {
        (true, _) => QUICK_DELAY,
        (false, Some(delay)) => delay,
        (false, None) if observing => Duration::ZERO,
        (false, None) => Duration::from_secs(1),
    };
    let mut modes = parse_modes(&args.modes)?;
    if observing && args.modes == "all" {
        modes = vec![Mode::PoolFutex];
    }
    let config = ExperimentConfig {
        exe,
        modes,
        requests: args.concurrency,
        delay,
        workers: args.workers,
        out,
        capture: args.capture.starter(true),
    };
    if let Some(backends) = &args.backends {
        return observe(&config, backends, args.duration, &args.capture);
    }
    config.validate()?;
    eprintln!(
        "tracebench: {} concurrent requests of {} against {} mode(s), traced, into {}/",
        config.requests,
        humantime::format_duration(config.delay),
        config.modes.len(),
        config.out.display()
    );
    let experiment = tracebench_experiment::run(&config, progress)?;
    print!(
        "{}",
        tracebench_experiment::table::markdown(&config, &experiment.results)
    );
    let files: Vec<String> = experiment
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    eprintln!(
        "tracebench: wrote {}/: {}",
        config.out.display(),
        files.join(", ")
    );
    eprintln!(
        "tracebench: replay a mode with `tracebench replay {}`",
        config
            .out
            .join(tracebench_experiment::trace_file_name(config.modes[0]))
            .display()
    );
    Ok(())
}

/// `--backends`: the observer effect, a table on stdout and a plot.
fn observe(
    config: &ExperimentConfig,
    backends: &str,
    duration: Duration,
    capture: &crate::capture::CaptureArgs,
) -> anyhow::Result<()> {
    let observers = backends
        .split(',')
        .map(|name| {
            let capture = match name.trim() {
                "none" => None,
                "ptrace" | "perf" | "sample" => {
                    let mut chosen = capture.clone();
                    chosen.backend = name.trim().parse().map_err(anyhow::Error::msg)?;
                    Some(chosen.starter(true))
                }
                other => {
                    anyhow::bail!("--backends: unknown backend {other:?} (none, ptrace, perf)")
                }
            };
            Ok(Observer {
                name: name.trim().to_owned(),
                capture,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "tracebench: {} under {} connections for {} each, {}",
        config.modes[0],
        config.requests,
        humantime::format_duration(duration),
        backends
    );
    let (_watch, noticed) = tracebench_trace::signals::notice().context("catching signals")?;
    let rows = observer_effect(config, &observers, duration, &noticed)?;
    print!("{}", tracebench_experiment::observer::markdown(&rows));
    eprintln!(
        "tracebench: wrote {}/observer.md and observer.svg",
        config.out.display()
    );
    Ok(())
}

/// One line per mode on stderr: its start, then how it compared.
fn progress(mode: Mode, result: Option<&ModeResult>) {
    let mut err = std::io::stderr().lock();
    let _ = match result {
        None => write!(err, "  {:<10} running… ", mode.name()),
        Some(r) => writeln!(
            err,
            "{:.3} s (theory {:.3} s, {:+.1} %), {}",
            r.measured.as_secs_f64(),
            r.theory.as_secs_f64(),
            r.deviation_percent(),
            if r.attributable() {
                format!(
                    "{} of {} requests attributed",
                    r.attributed(),
                    r.answered + r.failed
                )
            } else {
                "requests not attributable: their I/O is inside io_uring_enter".to_owned()
            },
        ),
    };
    let _ = err.flush();
}
