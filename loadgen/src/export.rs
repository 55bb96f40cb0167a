//! Histogram exports that other tools read: HdrHistogram's percentile CSV
//! and `.hgrm` percentile distribution (as HdrHistogram's
//! `outputPercentileDistribution` and wrk2 -L print them), and a plain
//! bucket CSV.

use std::io::{self, Write};

use hdrhistogram::Histogram;

/// Percentile rows per halving of the remaining distance to 100 %, as in
/// HdrHistogram's own tools.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Values are written in milliseconds (the histograms hold nanoseconds).
pub const VALUE_UNIT: &str = "milliseconds";
const NS_PER_UNIT: f64 = 1e6;

/// HdrHistogram's sub-bucket count for `digits` significant digits: the
/// smallest power of two at least 2 × 10^digits (2048 for 3).
fn sub_bucket_count(digits: u8) -> u64 {
    (2 * 10u64.pow(u32::from(digits))).next_power_of_two()
}

/// One row of the percentile distribution: value (ms), percentile (0..1),
/// cumulative count.
fn rows(histogram: &Histogram<u64>) -> Vec<(f64, f64, u64)> {
    let mut total = 0;
    histogram
        .iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|v| {
            total += v.count_since_last_iteration();
            (
                v.value_iterated_to() as f64 / NS_PER_UNIT,
                v.quantile_iterated_to(),
                total,
            )
        })
        .collect()
}

/// `"Value","Percentile","TotalCount","1/(1-Percentile)"`, values in
/// milliseconds, the last row's inverse `Infinity`.
pub fn write_percentile_csv<W: Write>(histogram: &Histogram<u64>, mut out: W) -> io::Result<W> {
    writeln!(
        out,
        "\"Value\",\"Percentile\",\"TotalCount\",\"1/(1-Percentile)\""
    )?;
    for (value, percentile, total) in rows(histogram) {
        if percentile < 1.0 {
            writeln!(
                out,
                "{value:.3},{percentile:.12},{total},{:.2}",
                1.0 / (1.0 - percentile)
            )?;
        } else {
            writeln!(out, "{value:.3},{percentile:.12},{total},Infinity")?;
        }
    }
    out.flush()?;
    Ok(out)
}

/// The classic `.hgrm` text, values in milliseconds.
pub fn write_hgrm<W: Write>(histogram: &Histogram<u64>, mut out: W) -> io::Result<W> {
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    for (value, percentile, total) in rows(histogram) {
        if percentile < 1.0 {
            writeln!(
                out,
                "{value:12.3} {percentile:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - percentile)
            )?;
        } else {
            writeln!(out, "{value:12.3} {percentile:2.12} {total:10}")?;
        }
    }
    writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        histogram.mean() / NS_PER_UNIT,
        histogram.stdev() / NS_PER_UNIT
    )?;
    writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        histogram.max() as f64 / NS_PER_UNIT,
        histogram.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        histogram.buckets(),
        sub_bucket_count(histogram.sigfig())
    )?;
    out.flush()?;
    Ok(out)
}

/// `lower_ns,upper_ns,count,cumulative_count`, one row per recorded bucket.
pub fn write_buckets_csv<W: Write>(histogram: &Histogram<u64>, mut out: W) -> io::Result<W> {
    writeln!(out, "lower_ns,upper_ns,count,cumulative_count")?;
    let mut cumulative = 0;
    for v in histogram.iter_recorded() {
        let count = v.count_at_value();
        cumulative += count;
        let value = v.value_iterated_to();
        writeln!(
            out,
            "{},{},{count},{cumulative}",
            histogram.lowest_equivalent(value),
            histogram.highest_equivalent(value)
        )?;
    }
    out.flush()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::latency_histogram;

    fn sample() -> Histogram<u64> {
        let mut h = latency_histogram();
        for ms in 1..=1000u64 {
            h.record(ms * 1_000_000).unwrap();
        }
        h
    }

    #[test]
    fn percentile_csv_reads_back() {
        let h = sample();
        let text = String::from_utf8(write_percentile_csv(&h, Vec::new()).unwrap()).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("\"Value\",\"Percentile\",\"TotalCount\",\"1/(1-Percentile)\"")
        );
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        let last = rows.last().unwrap();
        assert_eq!(last[3], "Infinity");
        assert_eq!(last[2], "1000");
        let value_at = |p: f64| -> f64 {
            rows.iter()
                .find(|r| r[1].parse::<f64>().unwrap() >= p)
                .unwrap()[0]
                .parse()
                .unwrap()
        };
        let p50 = h.value_at_quantile(0.5) as f64 / 1e6;
        assert!(
            (value_at(0.5) - p50).abs() < 1.0,
            "{} vs {p50}",
            value_at(0.5)
        );
        assert!((last[0].parse::<f64>().unwrap() - h.max() as f64 / 1e6).abs() < 0.001);
    }

    #[test]
    fn hgrm_and_buckets() {
        let h = sample();
        let hgrm = String::from_utf8(write_hgrm(&h, Vec::new()).unwrap()).unwrap();
        assert!(
            hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"),
            "{hgrm}"
        );
        assert!(hgrm.contains("#[Max     =     1000."), "{hgrm}");
        assert!(hgrm.contains("Total count    =         1000]"), "{hgrm}");
        assert!(hgrm.contains("SubBuckets     =         2048]"), "{hgrm}");
        let buckets = String::from_utf8(write_buckets_csv(&h, Vec::new()).unwrap()).unwrap();
        let last: Vec<u64> = buckets
            .lines()
            .last()
            .unwrap()
            .split(',')
            .map(|f| f.parse().unwrap())
            .collect();
        assert_eq!(last[3], 1000);
        let counted: u64 = buckets
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(2).unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(counted, 1000);
        assert!(last[0] <= 1_000_000_000 && 1_000_000_000 <= last[1]);
    }
}
