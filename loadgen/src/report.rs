//! The summary printed after a run, in the spirit of oha's and wrk's.

use std::fmt;

use crate::config::LoadConfig;
use crate::engine::Report;
use crate::stats::ErrorKind;

fn ms(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

fn bytes(n: f64) -> String {
    if n >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", n / 1024.0 / 1024.0)
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}

/// A report together with the settings that produced it.
pub struct LoadSummary<'a> {
    /// What was measured.
    pub report: &'a Report,
    /// How.
    pub config: &'a LoadConfig,
}

impl LoadSummary<'_> {
    /// Counts, rates, bytes and connections.
    fn totals(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = &self.report.stats;
        let secs = self.report.elapsed.as_secs_f64().max(1e-9);
        let completed = stats.completed();
        let failed = stats.failed();
        let attempted = completed + failed;
        writeln!(f, "Summary:")?;
        if attempted > 0 {
            writeln!(
                f,
                "  Success rate:  {:.2}%",
                100.0 * (completed - stats.non_success()) as f64 / attempted as f64
            )?;
        }
        let in_flight = if stats.in_flight_at_end > 0 {
            format!(
                ", {} still in flight at the end (neither answered nor failed)",
                stats.in_flight_at_end
            )
        } else {
            String::new()
        };
        writeln!(
            f,
            "  Requests:      {completed} answered, {failed} failed{in_flight}, in {secs:.3} s"
        )?;
        if stats.retries > 0 {
            writeln!(
                f,
                "  Retried:       {} (sent again: the kept-alive connection was closed before an answer)",
                stats.retries
            )?;
        }
        writeln!(f, "  Requests/sec:  {:.1}", completed as f64 / secs)?;
        writeln!(
            f,
            "  Transfer:      {} ({}/s)",
            bytes(stats.bytes as f64),
            bytes(stats.bytes as f64 / secs)
        )?;
        writeln!(
            f,
            "  Connections:   {} opened (keep-alive {})",
            stats.connections,
            if self.config.keep_alive { "on" } else { "off" }
        )?;
        if self.report.cancelled {
            writeln!(
                f,
                "  Interrupted:   the run was stopped early; these are the measurements so far"
            )?;
        }
        Ok(())
    }

    /// The latency percentiles, the details of an open loop, the phases,
    /// and the histogram.
    fn latency(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = &self.report.stats;
        let open_loop = !stats.corrected.is_empty();
        let h = if open_loop {
            &stats.corrected
        } else {
            &stats.latency
        };
        let quantiles = [
            ("p50", 0.5),
            ("p75", 0.75),
            ("p90", 0.9),
            ("p99", 0.99),
            ("p99.9", 0.999),
            ("p99.99", 0.9999),
        ];
        if h.is_empty() {
            return Ok(());
        }
        {
            if open_loop {
                writeln!(
                    f,
                    "\nLatency from each request's planned send time (open loop; the one to trust):"
                )?;
            } else {
                writeln!(f, "\nLatency (connect or send to last byte):")?;
            }
            for (label, q) in quantiles {
                writeln!(f, "  {label:<7} {:>12}", ms(h.value_at_quantile(q) as f64))?;
            }
            writeln!(f, "  {:<7} {:>12}", "max", ms(h.max() as f64))?;
            writeln!(
                f,
                "  {:<7} {:>12}   stdev {}",
                "mean",
                ms(h.mean()),
                ms(h.stdev())
            )?;
            if open_loop {
                self.open_loop_details(f)?;
            }
            if !stats.connect.is_empty() {
                writeln!(
                    f,
                    "  connect p50 {}, p99 {}; first byte p50 {}, p99 {}",
                    ms(stats.connect.value_at_quantile(0.5) as f64),
                    ms(stats.connect.value_at_quantile(0.99) as f64),
                    ms(stats.first_byte.value_at_quantile(0.5) as f64),
                    ms(stats.first_byte.value_at_quantile(0.99) as f64),
                )?;
            }
            latency_histogram(f, h)?;
        }
        Ok(())
    }

    /// What only an open loop has: the latency from the actual send, how
    /// late sends were, and the requests never answered.
    fn open_loop_details(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = &self.report.stats;
        let actual = &stats.latency;
        let late = &stats.lateness;
        writeln!(
            f,
            "  from the actual send: p50 {}, p99 {}, max {}",
            ms(actual.value_at_quantile(0.5) as f64),
            ms(actual.value_at_quantile(0.99) as f64),
            ms(actual.max() as f64)
        )?;
        writeln!(
            f,
            "  sent late by: p50 {}, p99 {}, max {} (the generator's own lateness, and waits for a free connection)",
            ms(late.value_at_quantile(0.5) as f64),
            ms(late.value_at_quantile(0.99) as f64),
            ms(late.max() as f64)
        )?;
        if stats.unanswered > 0 {
            writeln!(
                f,
                "  unanswered: {} requests (timed out, or in flight or not yet sent at the end) count above at how long they had waited",
                stats.unanswered
            )?;
        }
        Ok(())
    }

    /// Status codes and errors by kind.
    fn statuses_and_errors(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = &self.report.stats;
        let failed = stats.failed();
        if !stats.statuses.is_empty() {
            write!(f, "\nStatus codes:")?;
            for (status, n) in &stats.statuses {
                write!(f, " [{status}] {n}")?;
            }
            writeln!(f)?;
        }
        if failed > 0 {
            write!(f, "Errors:")?;
            for kind in ErrorKind::ALL {
                if let Some(n) = stats.errors.get(&kind) {
                    write!(f, " {} {n}", kind.label())?;
                    if let Some(why) = kind.explanation() {
                        write!(f, " ({why})")?;
                    }
                    if let (ErrorKind::Tls, Some(first)) = (kind, &stats.first_tls_error) {
                        write!(f, " (the first: {first})")?;
                    }
                    write!(f, ";")?;
                }
            }
            writeln!(f)?;
        }
        Ok(())
    }

    /// What the load model means for the numbers above.
    fn load_model(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.config.rate {
            Some(rate) => writeln!(
                f,
                "\nLoad model: open loop, {rate} requests/s on schedule, at most {} in flight; latency \
                 counts from each request's planned send time, so a stall cannot hide the requests \
                 it delayed.",
                self.config.effective_connections()
            ),
            None => writeln!(
                f,
                "\nLoad model: closed loop, {} connections. Each connection waits for an answer before \
                 sending again, so a stalled server also stalls the requests that would have measured \
                 the stall (coordinated omission): these latencies can look better than users would \
                 see. --rate measures an open loop.",
                self.config.effective_connections()
            ),
        }
    }
}

/// The latency histogram as rows of log-spaced buckets.
fn latency_histogram(f: &mut fmt::Formatter<'_>, h: &hdrhistogram::Histogram<u64>) -> fmt::Result {
    writeln!(f, "\nHistogram (log-spaced buckets):")?;
    let (low, high) = (h.min().max(1) as f64, h.max().max(1) as f64);
    let rows: usize = if h.max() > h.min() { 10 } else { 1 };
    let ratio = (high / low).powf(1.0 / rows as f64);
    // Every recorded value goes to exactly one row, by its value.
    let mut counts = vec![0u64; rows];
    for value in h.iter_recorded() {
        let v = value.value_iterated_to().max(1) as f64;
        let row = if ratio > 1.0 {
            ((v / low).ln() / ratio.ln()).floor() as usize
        } else {
            0
        };
        counts[row.min(rows - 1)] += value.count_at_value();
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    for (i, count) in counts.iter().enumerate() {
        let upper = if i + 1 == rows {
            high
        } else {
            low * ratio.powi(i as i32 + 1)
        };
        let bar = "■".repeat((count * 40).div_ceil(most) as usize);
        writeln!(f, "  {:>12} [{count:>8}] {bar}", ms(upper))?;
    }
    Ok(())
}

impl fmt::Display for LoadSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.totals(f)?;
        self.latency(f)?;
        self.statuses_and_errors(f)?;
        self.load_model(f)
    }
}
