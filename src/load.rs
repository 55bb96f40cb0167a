//! `tracebench load`: the load generator, on the command line.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use tracebench_loadgen::export::{VALUE_UNIT, write_buckets_csv, write_hgrm, write_percentile_csv};
use tracebench_loadgen::report::Summary;
use tracebench_loadgen::{LoadConfig, StopAfter, Target};

use crate::parse_duration;

/// Arguments of `tracebench load`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The URL to load (http:// only)
    url: String,
    /// Connections at once
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
    /// HTTP method
    #[arg(short = 'X', long = "method", default_value = "GET")]
    method: String,
    /// Extra header, "Name: value" (repeatable)
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Request body, or @FILE to read it from a file
    #[arg(short = 'd', long = "data", value_name = "DATA")]
    data: Option<String>,
    /// Fail a request that has no complete answer after this long
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Do not measure requests completed in this first stretch
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: Duration,
    /// Event-loop threads (default: one per CPU)
    #[arg(long)]
    threads: Option<usize>,
    /// Open loop: send this many requests per second on schedule, whatever
    /// the answers do, and count latency from each planned send time
    #[arg(long, value_name = "PER_SECOND")]
    rate: Option<f64>,
    /// Open loop: at most this many requests in flight (default: -c)
    #[arg(long, value_name = "N", requires = "rate")]
    max_inflight: Option<usize>,
    /// Exit non-zero when more than this many requests fail
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
}

fn create(path: &Path) -> anyhow::Result<BufWriter<File>> {
    Ok(BufWriter::new(File::create(path).with_context(|| {
        format!("cannot create {}", path.display())
    })?))
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
        if let Some(data) = &self.data {
            config.body = match data.strip_prefix('@') {
                Some(path) => std::fs::read(path).with_context(|| format!("cannot read {path}"))?,
                None => data.clone().into_bytes(),
            };
        }
        config.timeout = self.timeout;
        config.warmup = self.warmup;
        if let Some(threads) = self.threads {
            config.threads = threads;
        }
        config.rate = self.rate;
        if let Some(n) = self.max_inflight {
            // In flight means on a connection: the pool is the bound.
            config.connections = n;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs `tracebench load`; returns the exit code.
pub fn run(args: LoadArgs) -> anyhow::Result<u8> {
    let config = args.config()?;
    // Open the outputs first: a bad path should fail before the load.
    let csv = args.csv.as_deref().map(create).transpose()?;
    let hgrm = args.hgrm.as_deref().map(create).transpose()?;
    let buckets = args.buckets_csv.as_deref().map(create).transpose()?;
    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&cancel))
            .context("installing signal handlers")?;
    }
    let report = tracebench_loadgen::run(&config, cancel)?;
    let stats = &report.stats;
    if let Some(out) = csv {
        write_percentile_csv(&stats.latency, out).context("writing the CSV")?;
    }
    if let Some(out) = hgrm {
        write_hgrm(&stats.latency, out).context("writing the .hgrm")?;
    }
    if let Some(out) = buckets {
        write_buckets_csv(&stats.latency, out).context("writing the bucket CSV")?;
    }
    let mut stdout = std::io::stdout().lock();
    write!(
        stdout,
        "{}",
        Summary {
            report: &report,
            config: &config
        }
    )?;
    if args.csv.is_some() || args.hgrm.is_some() {
        writeln!(stdout, "Histogram exports are in {VALUE_UNIT}.")?;
    }
    stdout.flush()?;
    let failed = stats.failed();
    if stats.completed() == 0 && failed > 0 {
        let why: Vec<&str> = stats.errors.keys().map(|k| k.label()).collect();
        bail!(
            "cannot reach {}: every request failed ({})",
            args.url,
            why.join(", ")
        );
    }
    if failed > args.max_errors {
        bail!(
            "{failed} requests failed (more than --max-errors {})",
            args.max_errors
        );
    }
    Ok(0)
}
