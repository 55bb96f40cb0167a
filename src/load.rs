//! `tracebench load`: the load generator, on the command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use hdrhistogram::serialization::V2DeflateSerializer;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::SystemTime;
use tracebench_loadgen::export::{VALUE_UNIT, write_buckets_csv, write_hgrm, write_percentile_csv};
use tracebench_loadgen::hlog::{self, SecondsLog};
use tracebench_loadgen::report::LoadSummary;
use tracebench_loadgen::{LoadConfig, StopAfter, Target};

use crate::parse_duration;

/// Arguments of `tracebench load`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The URL to load (http:// or https://)
    url: String,
    /// Connections at once (never more than -n)
    #[arg(short = 'c', long = "connections", default_value_t = 10)]
    connections: usize,
    /// Send exactly this many requests
    #[arg(short = 'n', long = "requests", conflicts_with = "duration")]
    requests: Option<u64>,
    /// Send for this long (default 10s when -n is not given)
    #[arg(short = 'z', long = "duration", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Reuse connections (default: a new connection per request, like curl)
    #[arg(long)]
    keep_alive: bool,
    /// HTTP method (-m as in oha)
    #[arg(short = 'X', short_alias = 'm', long = "method", default_value = "GET")]
    method: String,
    /// Content-Type of the body (oha's -T)
    #[arg(short = 'T', long = "content-type", value_name = "TYPE")]
    content_type: Option<String>,
    /// Accept header (oha's -A)
    #[arg(short = 'A', long = "accept", value_name = "TYPE")]
    accept: Option<String>,
    /// Basic authorization, as curl's -u and oha's -a
    #[arg(short = 'a', long = "basic-auth", value_name = "USER:PASSWORD")]
    basic_auth: Option<String>,
    /// Extra header, "Name: value" (repeatable)
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Request body, or @FILE to read it from a file (@- from standard input)
    #[arg(short = 'd', long = "data", value_name = "DATA")]
    data: Option<String>,
    /// Fail a request that has no complete answer after this long
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// https: trust only the certificates in this PEM file, not the
    /// system's (curl's and oha's --cacert)
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// https: take any certificate, unchecked (curl's -k, oha's --insecure)
    #[arg(short = 'k', long)]
    insecure: bool,
    /// Do not measure requests completed in this first stretch
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: Duration,
    /// Event-loop threads (default: half the CPUs with --keep-alive, all of
    /// them without)
    #[arg(long)]
    threads: Option<usize>,
    /// Open loop: send this many requests per second on schedule, whatever
    /// the answers do, and count latency from each planned send time (-q as
    /// in oha)
    #[arg(short = 'q', long, value_name = "PER_SECOND")]
    rate: Option<f64>,
    /// Open loop: at most this many requests in flight (default: -c)
    #[arg(long, value_name = "N", requires = "rate")]
    max_inflight: Option<usize>,
    /// Exit non-zero when more than this many requests fail (an error, a
    /// timeout, or an answer whose status is neither 2xx nor 3xx)
    #[arg(long, default_value_t = 0)]
    max_errors: u64,
    /// Write the latency distribution as HdrHistogram percentile CSV (ms)
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Write the latency distribution as .hgrm text (ms), as wrk2 -L prints it
    #[arg(long, value_name = "FILE")]
    hgrm: Option<PathBuf>,
    /// Write the latency buckets as lower_ns,upper_ns,count,cumulative_count
    #[arg(long, value_name = "FILE")]
    buckets_csv: Option<PathBuf>,
    /// Write an HdrHistogram interval log (V2 + DEFLATE, one histogram per
    /// second), for HistogramLogAnalyzer or `tracebench merge`
    #[arg(long, value_name = "FILE")]
    hlog: Option<PathBuf>,
    /// Print the summary as JSON instead of text
    #[arg(long)]
    json: bool,
}

/// Writes the latency histogram to the outputs asked for: the percentile
/// CSV, the .hgrm and the bucket CSV, in that order; an error names the
/// file.
fn write_histograms(
    args: &LoadArgs,
    latency: &hdrhistogram::Histogram<u64>,
    [csv, hgrm, buckets]: [Option<tracebench_files::Output>; 3],
) -> anyhow::Result<()> {
    let named = |path: &Option<PathBuf>| {
        let path = path
            .as_deref()
            .map_or_else(String::new, |p| p.display().to_string());
        move || format!("writing {path}")
    };
    if let Some(out) = csv {
        write_percentile_csv(latency, out)
            .with_context(named(&args.csv))?
            .finish()?;
    }
    if let Some(out) = hgrm {
        write_hgrm(latency, out)
            .with_context(named(&args.hgrm))?
            .finish()?;
    }
    if let Some(out) = buckets {
        write_buckets_csv(latency, out)
            .with_context(named(&args.buckets_csv))?
            .finish()?;
    }
    Ok(())
}

/// The largest request body `-d @FILE` sends.
const MAX_BODY: u64 = 64 << 20;

/// An output: `-` for standard output, else a private file written whole
/// and renamed over its name at the end
/// ([`Output::finish`](tracebench_files::Output::finish)).
fn create(path: &Path) -> anyhow::Result<tracebench_files::Output> {
    Ok(tracebench_files::Output::create(path)?)
}

impl LoadArgs {
    fn config(&self) -> anyhow::Result<LoadConfig> {
        let mut config = LoadConfig::new(Target::parse(&self.url)?);
        config.connections = self.connections;
        config.stop = match (self.requests, self.duration) {
            (Some(n), _) => StopAfter::Requests(n),
            (None, Some(d)) => StopAfter::Duration(d),
            (None, None) => StopAfter::Duration(Duration::from_secs(10)),
        };
        config.keep_alive = self.keep_alive;
        config.method = self.method.clone();
        for header in &self.headers {
            let (name, value) = header
                .split_once(':')
                .with_context(|| format!("header {header:?} is not \"Name: value\""))?;
            config
                .headers
                .push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let extra = [
            ("Content-Type", &self.content_type),
            ("Accept", &self.accept),
        ];
        for (name, value) in extra {
            if let Some(value) = value {
                config.headers.push((name.to_owned(), value.clone()));
            }
        }
        if let Some(credentials) = &self.basic_auth {
            config.target.authorization =
                Some(tracebench_loadgen::config::basic_authorization(credentials));
        }
        if let Some(data) = &self.data {
            if self.duration.is_none()
                && self.requests.is_none()
                && humantime::parse_duration(data).is_ok()
            {
                // wrk's -d is a duration; here, as in curl and oha, a body.
                bail!(
                    "-d {data} is the request body here (as in curl and oha); for a duration use -z {data} (wrk's -d), or send that body from a file with -d @FILE"
                );
            }
            config.body = match data.strip_prefix('@') {
                Some(path) => tracebench_files::read_input(path.as_ref(), MAX_BODY)
                    .with_context(|| format!("cannot read {path}"))?,
                None => data.clone().into_bytes(),
            };
        }
        config.timeout = self.timeout;
        config.ca_file.clone_from(&self.cacert);
        config.insecure = self.insecure;
        config.warmup = self.warmup;
        if let Some(threads) = self.threads {
            if threads == 0 {
                bail!("--threads must be at least 1");
            }
            config.threads = threads;
        }
        config.rate = self.rate;
        if let Some(n) = self.max_inflight {
            if n == 0 {
                bail!("--max-inflight must be at least 1");
            }
            // In flight means on a connection: the pool is the bound.
            config.connections = n;
        }
        config.validate()?;
        Ok(config)
    }
}

fn percentiles_ms(h: &hdrhistogram::Histogram<u64>) -> serde_json::Value {
    let at = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
    serde_json::json!({
        "p50": at(0.5), "p75": at(0.75), "p90": at(0.9), "p99": at(0.99),
        "p99.9": at(0.999), "p99.99": at(0.9999), "max": h.max() as f64 / 1e6,
        "mean": h.mean() / 1e6, "stdev": h.stdev() / 1e6, "count": h.len(),
    })
}

fn json_summary(report: &tracebench_loadgen::Report, config: &LoadConfig) -> serde_json::Value {
    let stats = &report.stats;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    serde_json::json!({
        "url": format!("http://{}:{}{}", config.target.host, config.target.port, config.target.path),
        "load_model": if config.rate.is_some() { "open" } else { "closed" },
        "rate": config.rate,
        "connections": config.effective_connections(),
        "keep_alive": config.keep_alive,
        "elapsed_s": secs,
        "completed": stats.completed(),
        "failed": stats.failed(),
        "requests_per_s": stats.completed() as f64 / secs,
        "bytes": stats.bytes,
        "connections_opened": stats.connections,
                "latency_ms": percentiles_ms(stats.primary()),
        "latency_from_actual_send_ms": (!stats.corrected.is_empty()).then(|| percentiles_ms(&stats.latency)),
        "unanswered_in_planned_latency": (!stats.corrected.is_empty()).then_some(stats.unanswered),
        "in_flight_at_end": stats.in_flight_at_end,
        "retries": stats.retries,
        "lateness_ms": (!stats.lateness.is_empty()).then(|| percentiles_ms(&stats.lateness)),
        "connect_ms": percentiles_ms(&stats.connect),
        "first_byte_ms": percentiles_ms(&stats.first_byte),
        "statuses": stats.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
        "errors": stats.errors.iter().map(|(k, v)| (k.label(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
        "cancelled": report.cancelled,
    })
}

/// Runs `tracebench load`; returns the exit code.
pub fn run(args: LoadArgs) -> anyhow::Result<u8> {
    let config = args.config()?;
    // Open the outputs first: a bad path should fail before the load.
    let csv = args.csv.as_deref().map(create).transpose()?;
    let hgrm = args.hgrm.as_deref().map(create).transpose()?;
    let buckets = args.buckets_csv.as_deref().map(create).transpose()?;
    let mut hlog_file = args.hlog.as_deref().map(create).transpose()?;
    let mut serializer = V2DeflateSerializer::new();
    let mut log = match hlog_file.as_mut() {
        Some(file) => Some(SecondsLog::new(hlog::begin(
            file,
            &mut serializer,
            "tracebench load; values in nanoseconds",
        )?)),
        None => None,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&cancel))
            .context("installing signal handlers")?;
    }
    let progress = (!args.json && std::io::stderr().is_terminal()).then(|| progress_bar(&config));
    let mut done = 0u64;
    let mut log_error = None;
    let report = tracebench_loadgen::run_observed(&config, cancel, |snapshot| {
        if let Some(log) = log.as_mut()
            && log_error.is_none()
            && let Err(e) = log.add(snapshot)
        {
            log_error = Some(anyhow::Error::from(e));
        }
        if let Some(bar) = &progress {
            done += snapshot.completed() + snapshot.failed();
            let elapsed = snapshot.start + snapshot.duration;
            match config.stop {
                StopAfter::Requests(_) => bar.set_position(done),
                StopAfter::Duration(_) => bar.set_position(elapsed.as_millis() as u64),
            }
            let p99 = snapshot.latency.value_at_quantile(0.99) as f64 / 1e6;
            bar.set_message(format!(
                "{:.0} req/s, p99 {p99:.2} ms, {} in flight, {} errors",
                snapshot.completed() as f64 / snapshot.duration.as_secs_f64(),
                snapshot.in_flight,
                snapshot.failed()
            ));
        }
    })?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if let Some(e) = log_error {
        return Err(e);
    }
    if let Some(mut log) = log {
        log.flush()?;
    }
    if let Some(out) = hlog_file {
        out.finish()?;
    }
    let stats = &report.stats;
    let primary = stats.primary();
    write_histograms(&args, primary, [csv, hgrm, buckets])?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", json_summary(&report, &config))?;
    } else {
        write!(
            stdout,
            "{}",
            LoadSummary {
                report: &report,
                config: &config
            }
        )?;
        if args.csv.is_some() || args.hgrm.is_some() || args.hlog.is_some() {
            writeln!(
                stdout,
                "Histogram exports are in {VALUE_UNIT} (the .hlog holds nanoseconds, shown as ms)."
            )?;
        }
    }
    stdout.flush()?;
    judge(stats, &args.url, args.max_errors)?;
    Ok(0)
}

/// The exit status `--help` promises: an error when nothing was answered,
/// or when more than `max_errors` requests failed, counting as failed both
/// the errors (refused, reset, timeout, …) and the answers whose status is
/// neither 2xx nor 3xx. Requests the end of a `-z` run (or Ctrl-C) caught
/// in flight are neither: the summary names them.
fn judge(
    stats: &tracebench_loadgen::stats::Stats,
    url: &str,
    max_errors: u64,
) -> anyhow::Result<()> {
    let failed = stats.failed();
    if stats.completed() == 0 {
        if failed > 0 {
            let why: Vec<&str> = stats.errors.keys().map(|k| k.label()).collect();
            bail!(
                "cannot reach {url}: every request failed ({})",
                why.join(", ")
            );
        }
        bail!(
            "no request to {url} was answered ({} still in flight at the end)",
            stats.in_flight_at_end
        );
    }
    let refused_answers = stats.non_success();
    if failed + refused_answers > max_errors {
        let statuses: Vec<String> = stats
            .statuses
            .iter()
            .filter(|(status, _)| !(200..400).contains(*status))
            .map(|(status, n)| format!("{n} × {status}"))
            .collect();
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut why = Vec::new();
        if failed > 0 {
            why.push(plural(failed, "error", "errors"));
        }
        if refused_answers > 0 {
            why.push(format!("answered {}", statuses.join(", ")));
        }
        bail!(
            "{} failed ({}), more than --max-errors {max_errors}",
            plural(failed + refused_answers, "request", "requests"),
            why.join("; ")
        );
    }
    Ok(())
}

fn progress_bar(config: &LoadConfig) -> ProgressBar {
    let (length, unit) = match config.stop {
        StopAfter::Requests(n) => (n, "requests"),
        StopAfter::Duration(d) => (d.as_millis() as u64, "ms"),
    };
    let bar = ProgressBar::new(length);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {unit} {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// Arguments of `tracebench merge`.
#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// Interval logs (.hlog) to add together (- for standard input)
    #[arg(required = true, num_args = 2..)]
    logs: Vec<PathBuf>,
    /// Where to write the merged log
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// Intervals starting in the same period (by wall-clock time) are added
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    period: Duration,
}

/// Runs `tracebench merge`.
pub fn merge(args: MergeArgs) -> anyhow::Result<()> {
    // The merged log replaces -o only once whole, but an input named as
    // the output would still be gone: refused, as export refuses it.
    use std::os::unix::fs::MetadataExt;
    let identity = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    if let Some(output) = identity(&args.output)
        && let Some(input) = args.logs.iter().find(|log| identity(log) == Some(output))
    {
        anyhow::bail!(
            "-o {} would overwrite the input {} (the same file); choose another file, or - for standard output",
            args.output.display(),
            input.display()
        );
    }
    let mut logs = Vec::new();
    for path in &args.logs {
        let bytes = tracebench_files::read_input(path, tracebench_loadgen::hlog::MAX_LOG_BYTES)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let log = tracebench_loadgen::hlog::read_log(&bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        logs.push(log);
    }
    let merged = tracebench_loadgen::hlog::merge(&logs, args.period);
    let base = merged
        .first()
        .map_or(SystemTime::now(), |i| SystemTime::UNIX_EPOCH + i.start);
    let mut out = create(&args.output)?;
    tracebench_loadgen::hlog::write_log(&mut out, base, &merged)?;
    out.finish()?;
    let total: u64 = merged.iter().map(|i| i.histogram.len()).sum();
    eprintln!(
        "tracebench merge: {} logs, {} intervals, {total} values written to {}",
        args.logs.len(),
        merged.len(),
        args.output.display()
    );
    Ok(())
}
