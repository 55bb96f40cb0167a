//! `tracebench export`: a recorded trace file to formats other tools read.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use tracebench_analysis::attribution::{Attributor, RequestRecord};
use tracebench_export::jsonl::JsonlWriter;
use tracebench_export::render::Strings;
use tracebench_export::strace::{
    Results, SignalFilter, StraceWriter, TextOptions, ThreadPrefix, Timestamps,
};
use tracebench_export::summary::TraceSummary;
use tracebench_files::Output;
use tracebench_loadgen::export::{VALUE_UNIT, write_buckets_csv, write_hgrm, write_percentile_csv};
use tracebench_trace::EventSink;
use tracebench_trace::format::{TraceFileError, TraceReader};

/// Arguments of `tracebench export`.
#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("format").required(true).multiple(true))]
pub struct ExportArgs {
    /// A recorded run (a runs/<time>/ directory of the dashboard) or a trace
    /// file written by `tracebench trace --write FILE` (- for standard input)
    #[arg(value_name = "RUN")]
    trace: PathBuf,
    /// The run's latency histogram as HdrHistogram percentile CSV (ms); - for stdout
    #[arg(long, value_name = "FILE", group = "format")]
    csv: Option<PathBuf>,
    /// The run's latency histogram as .hgrm text (ms); - for stdout
    #[arg(long, value_name = "FILE", group = "format")]
    hgrm: Option<PathBuf>,
    /// The run's latency buckets as lower_ns,upper_ns,count,cumulative_count
    #[arg(long, value_name = "FILE", group = "format")]
    buckets_csv: Option<PathBuf>,
    /// Chrome trace event JSON (open it in ui.perfetto.dev); - for stdout
    #[arg(long, value_name = "FILE", group = "format")]
    chrome: Option<PathBuf>,
    /// One JSON object per event; - for stdout
    #[arg(long, value_name = "FILE", group = "format")]
    jsonl: Option<PathBuf>,
    /// strace-compatible text (with -tt timestamps); - for stdout
    #[arg(long, value_name = "FILE", group = "format")]
    strace: Option<PathBuf>,
    /// Print the per-syscall, per-thread, futex and request summary (like trace -c)
    #[arg(short = 'c', long, group = "format")]
    summary: bool,
    /// One CSV line per request attributed from the trace (accept to
    /// close: acceptor, serving thread, queue wait, service); - for stdout
    #[arg(long, value_name = "FILE", group = "format")]
    requests: Option<PathBuf>,
    /// Queue wait (accept to pick-up) of every attributed request as
    /// HdrHistogram percentile CSV (ms); - for stdout
    #[arg(long, value_name = "FILE", group = "format")]
    queue_csv: Option<PathBuf>,
    /// Service time (pick-up to close) of every attributed request as
    /// HdrHistogram percentile CSV (ms); - for stdout
    #[arg(long, value_name = "FILE", group = "format")]
    service_csv: Option<PathBuf>,
    /// Server time (accept to close) of every attributed request as
    /// HdrHistogram percentile CSV (ms); - for stdout
    #[arg(long, value_name = "FILE", group = "format")]
    server_csv: Option<PathBuf>,
}

impl ExportArgs {
    /// Every file this export writes, with the option that names it
    /// (standard output, `-`, left out).
    fn outputs(&self) -> impl Iterator<Item = (&'static str, &Path)> {
        [
            ("--csv", &self.csv),
            ("--hgrm", &self.hgrm),
            ("--buckets-csv", &self.buckets_csv),
            ("--chrome", &self.chrome),
            ("--jsonl", &self.jsonl),
            ("--strace", &self.strace),
            ("--requests", &self.requests),
            ("--queue-csv", &self.queue_csv),
            ("--service-csv", &self.service_csv),
            ("--server-csv", &self.server_csv),
        ]
        .into_iter()
        .filter_map(|(option, path)| Some((option, path.as_deref()?)))
        .filter(|(_, path)| *path != Path::new("-"))
    }

    /// Every file an export must not write over: the trace file, or every
    /// file of a run directory (its trace and latency log are read; its
    /// threads.json, settings.json, load.csv and output.log are the rest
    /// of the recording).
    fn inputs(&self) -> Vec<PathBuf> {
        if !self.trace.is_dir() {
            return vec![self.trace.clone()];
        }
        match std::fs::read_dir(&self.trace) {
            Ok(entries) => entries.flatten().map(|entry| entry.path()).collect(),
            Err(_) => vec![
                self.trace.join("trace.tbt"),
                self.trace.join("latency.hlog"),
            ],
        }
    }
}

/// Refuses an export that would write over one of its own inputs: outputs
/// are truncated when created, before the input is read, so the recording
/// would be lost. Files are compared by device and inode, which catches
/// another spelling of the path, a symbolic link and a hard link alike.
fn check_outputs_spare_inputs(args: &ExportArgs) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let identity = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let inputs: Vec<_> = args
        .inputs()
        .into_iter()
        .filter_map(|path| Some((identity(&path)?, path)))
        .collect();
    // Two outputs on one file: the second would silently replace the first.
    let outputs: Vec<_> = args.outputs().collect();
    for (i, (option, output)) in outputs.iter().enumerate() {
        let same = |other: &Path| match (identity(output), identity(other)) {
            (Some(a), Some(b)) => a == b,
            _ => std::path::absolute(output).ok() == std::path::absolute(other).ok(),
        };
        if let Some((other_option, _)) = outputs[..i].iter().find(|(_, other)| same(other)) {
            anyhow::bail!(
                "{other_option} and {option} both name {}: each output needs its own file",
                output.display()
            );
        }
    }
    for (option, output) in args.outputs() {
        // An output that does not exist yet cannot be an input.
        let Some(id) = identity(output) else {
            continue;
        };
        if let Some((_, input)) = inputs.iter().find(|(input_id, _)| *input_id == id) {
            anyhow::bail!(
                "{option} {} would overwrite the input {} (the same file); choose another file, or - for standard output",
                output.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// An output: `-` for standard output, else a file written whole beside
/// its name and renamed over it at the end ([`Output::finish`]), so that an
/// error, a full disk or an output that is also an input leaves what was
/// there.
fn create(path: &Path) -> anyhow::Result<Output> {
    Ok(Output::create(path)?)
}

fn open(path: &Path) -> anyhow::Result<TraceReader<BufReader<File>>> {
    TraceReader::open(path).with_context(|| format!("cannot read {}", path.display()))
}

fn warn_if_truncated(reader: &TraceReader<BufReader<File>>, path: &Path, count: u64) {
    if reader.truncated() {
        eprintln!(
            "tracebench export: {} ends early (was the tracer killed?); exported its first {count} events",
            path.display()
        );
    }
}

/// The thread names a recording kept (threads.json), by tid: none if it
/// has none; none, and a word, if it cannot be read.
fn thread_names(run: &Path) -> HashMap<i32, String> {
    let path = run.join("threads.json");
    if !path.exists() {
        return HashMap::new();
    }
    let read = tracebench_files::read_input(&path, 64 << 20)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            serde_json::from_slice::<HashMap<String, String>>(&bytes).map_err(|e| e.to_string())
        });
    match read {
        Ok(names) => names
            .into_iter()
            .filter_map(|(tid, name)| Some((tid.parse().ok()?, name)))
            .collect(),
        Err(why) => {
            eprintln!(
                "tracebench export: {} is unreadable ({why}): threads are named by their ids",
                path.display()
            );
            HashMap::new()
        }
    }
}

/// Says, once, what the file's index says the capture lost.
fn warn_if_lost(path: &Path) {
    let Ok(Some(index)) = tracebench_trace::format::read_index(path) else {
        return;
    };
    if index.lost_events() > 0 {
        let cpus: Vec<String> = index
            .lost
            .iter()
            .map(|(cpu, count)| format!("{count} on CPU {cpu}"))
            .collect();
        eprintln!(
            "tracebench export: {}: {} events were LOST while recording ({}): the trace has gaps",
            path.display(),
            index.lost_events(),
            cpus.join(", ")
        );
    }
}

/// Feeds every event of `path` to `sink`, in order, stopping at the first
/// damaged block with a clear error.
fn feed(path: &Path, sink: &mut dyn EventSink) -> anyhow::Result<u64> {
    let mut reader = open(path)?;
    let mut count = 0;
    for event in reader.by_ref() {
        let event = event.with_context(|| format!("reading {}", path.display()))?;
        sink.event(&event);
        count += 1;
    }
    warn_if_truncated(&reader, path, count);
    Ok(count)
}

/// The whole run's latencies: every interval of the run's latency.hlog,
/// added up; of a log cut short or damaged, the intervals before the
/// damage, with a warning.
fn run_latency(run: &Path) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let log = run.join("latency.hlog");
    if !run.is_dir() || !log.exists() {
        anyhow::bail!(
            "{} is not a recorded run (no latency.hlog); histograms come from a dashboard run directory",
            run.display()
        );
    }
    let bytes = tracebench_files::read_input(&log, tracebench_loadgen::hlog::MAX_LOG_BYTES)
        .with_context(|| format!("cannot read {}", log.display()))?;
    let mut total = tracebench_loadgen::stats::latency_histogram();
    let damage = tracebench_loadgen::hlog::for_each_interval(&bytes, |interval| {
        let _ = total.add(&interval.histogram);
    })
    .with_context(|| format!("reading {}", log.display()))?;
    if let Some(damage) = damage {
        eprintln!(
            "tracebench export: {} is {damage}; exported the intervals before it, the rest of the log was ignored",
            log.display()
        );
    }
    Ok(total)
}

/// `--requests`, `--queue-csv`, `--service-csv`, `--server-csv`: one pass
/// of the request attributor over the trace.
fn export_requests(args: &ExportArgs) -> anyhow::Result<()> {
    let mut rows = match &args.requests {
        Some(path) => {
            let mut out = create(path)?;
            writeln!(out, "{}", RequestRecord::CSV_HEADER)
                .with_context(|| format!("writing {}", path.display()))?;
            Some((out, path))
        }
        None => None,
    };
    let mut attributor = Attributor::new();
    let mut failed: Option<std::io::Error> = None;
    let mut sink = |event: &tracebench_trace::Event| {
        attributor.feed(event, |request| {
            if let (Some((out, _)), None) = (rows.as_mut(), &failed)
                && let Err(e) = request.write_csv(out).and_then(|()| writeln!(out))
            {
                failed = Some(e);
            }
        });
    };
    feed(&args.trace, &mut sink)?;
    if let Some((out, path)) = rows {
        if let Some(e) = failed {
            return Err(e).with_context(|| format!("writing {}", path.display()));
        }
        out.finish()?;
    }
    let stats = attributor.stats();
    for (path, histogram) in [
        (&args.queue_csv, stats.queue_wait()),
        (&args.service_csv, stats.service()),
        (&args.server_csv, stats.server_time()),
    ] {
        if let Some(path) = path {
            write_percentile_csv(histogram, create(path)?)
                .with_context(|| format!("writing {}", path.display()))?
                .finish()?;
        }
    }
    let counts = attributor.counts();
    eprintln!(
        "tracebench export: {} requests attributed on {} connections ({} never served, {} still open at the end); values in {VALUE_UNIT}",
        counts.requests,
        counts.connections,
        counts.unserved,
        attributor.open_connections()
    );
    Ok(())
}

/// Runs `tracebench export`.
pub fn run(mut args: ExportArgs) -> anyhow::Result<()> {
    // `-`: a trace piped in, copied first (every output reads it anew).
    let magic = tracebench_trace::format::MAGIC;
    let input = tracebench_files::InputFile::open(&args.trace, magic)
        .context("cannot read a trace from standard input")?;
    args.trace = input.path().to_path_buf();
    check_outputs_spare_inputs(&args)?;
    export_latency(&args)?;
    let names = if args.trace.is_dir() {
        let names = thread_names(&args.trace);
        args.trace = args.trace.join("trace.tbt");
        names
    } else {
        HashMap::new()
    };
    let attribution = args.requests.is_some()
        || args.queue_csv.is_some()
        || args.service_csv.is_some()
        || args.server_csv.is_some();
    if args.strace.is_none()
        && args.jsonl.is_none()
        && args.chrome.is_none()
        && !args.summary
        && !attribution
    {
        return Ok(());
    }
    warn_if_lost(&args.trace);
    if attribution {
        export_requests(&args)?;
    }
    if let Some(path) = &args.strace {
        export_strace(&args.trace, path)?;
    }
    if let Some(path) = &args.jsonl {
        let mut writer = JsonlWriter::new(create(path)?);
        feed(&args.trace, &mut writer)?;
        writer
            .finish()
            .with_context(|| format!("writing {}", path.display()))?
            .finish()?;
    }
    if let Some(path) = &args.chrome {
        let mut reader = open(&args.trace)?;
        let mut error: Option<TraceFileError> = None;
        let mut count = 0;
        let stream = reader.by_ref().map_while(|event| match event {
            Ok(event) => {
                count += 1;
                Some(event)
            }
            Err(e) => {
                error = Some(e);
                None
            }
        });
        let out = tracebench_export::chrome::write_named(stream, &names, create(path)?)
            .with_context(|| format!("writing {}", path.display()))?;
        if let Some(e) = error {
            return Err(e).with_context(|| format!("reading {}", args.trace.display()));
        }
        out.finish()?;
        warn_if_truncated(&reader, &args.trace, count);
    }
    if args.summary {
        let mut summary = TraceSummary::new();
        feed(&args.trace, &mut summary)?;
        write!(std::io::stdout().lock(), "{summary}").context("writing the summary")?;
    }
    Ok(())
}

/// The run's latency histogram, as each format asked for.
fn export_latency(args: &ExportArgs) -> anyhow::Result<()> {
    if args.csv.is_none() && args.hgrm.is_none() && args.buckets_csv.is_none() {
        return Ok(());
    }
    let latency = run_latency(&args.trace)?;
    if let Some(path) = &args.csv {
        write_percentile_csv(&latency, create(path)?)
            .with_context(|| format!("writing {}", path.display()))?
            .finish()?;
    }
    if let Some(path) = &args.hgrm {
        write_hgrm(&latency, create(path)?)
            .with_context(|| format!("writing {}", path.display()))?
            .finish()?;
    }
    if let Some(path) = &args.buckets_csv {
        write_buckets_csv(&latency, create(path)?)
            .with_context(|| format!("writing {}", path.display()))?
            .finish()?;
    }
    eprintln!(
        "tracebench export: {} requests; values in {VALUE_UNIT}",
        latency.len()
    );
    Ok(())
}

/// strace text of the trace at `trace`, with the recording's wall-clock
/// times.
fn export_strace(trace: &Path, path: &Path) -> anyhow::Result<()> {
    let options = TextOptions {
        timestamps: Timestamps::Absolute,
        durations: true,
        prefix: ThreadPrefix::File,
        results: Results::All,
        signals: SignalFilter::default(),
        strings: Strings::Escaped,
        fd_paths: None,
    };
    let header = open(trace)?.header().clone();
    let mut writer = StraceWriter::new(create(path)?, options);
    writer.recorded_at(header.monotonic_ns, header.realtime_ns);
    feed(trace, &mut writer)?;
    writer
        .finish()
        .with_context(|| format!("writing {}", path.display()))?
        .finish()?;
    Ok(())
}
