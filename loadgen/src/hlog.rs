//! HdrHistogram interval logs (`.hlog`, V2 + DEFLATE), the format
//! HistogramLogAnalyzer and HdrHistogram's HistogramLogProcessor read: one
//! histogram per interval, so a run's latency can be followed over time,
//! and logs from several generators can be added interval by interval.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriter, IntervalLogWriterBuilder, LogEntry,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};

use crate::LoadError;
use crate::engine::Snapshot;
use crate::stats::new_histogram;

/// Values in logs are nanoseconds; tools show them divided by this
/// (milliseconds).
pub const MAX_VALUE_DIVISOR: f64 = 1e6;

/// One interval of a log.
#[derive(Debug, Clone)]
pub struct Interval {
    /// When it started, since the Unix epoch.
    pub start: Duration,
    /// How long it lasted.
    pub duration: Duration,
    /// What was recorded in it.
    pub histogram: Histogram<u64>,
}

fn io_error(what: &'static str) -> impl Fn(std::fmt::Arguments<'_>) -> LoadError {
    move |details| LoadError::Io(what, std::io::Error::other(details.to_string()))
}

/// Writes `intervals` (sorted by start) as an interval log whose BaseTime
/// and StartTime are `base`.
pub fn write_log<W: Write>(
    out: &mut W,
    base: SystemTime,
    intervals: &[Interval],
) -> Result<(), LoadError> {
    let error = io_error("writing an interval log");
    let mut serializer = V2DeflateSerializer::new();
    let base_since_epoch = base.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment("written by tracebench; values in nanoseconds")
        .with_start_time(base)
        .with_base_time(base)
        .with_max_value_divisor(MAX_VALUE_DIVISOR)
        .begin_log_with(out, &mut serializer)
        .map_err(|e| error(format_args!("{e}")))?;
    for interval in intervals {
        let offset = interval.start.saturating_sub(base_since_epoch);
        log.write_histogram(&interval.histogram, offset, interval.duration, None)
            .map_err(|e| error(format_args!("{e:?}")))?;
    }
    Ok(())
}

/// Starts an interval log on `out` (BaseTime and StartTime now): the
/// serializer is the caller's, as the crate's writer borrows both.
pub fn begin<'a, 'b, W: Write>(
    out: &'a mut W,
    serializer: &'b mut V2DeflateSerializer,
    comment: &str,
) -> Result<IntervalLogWriter<'a, 'b, W, V2DeflateSerializer>, LoadError> {
    let now = SystemTime::now();
    IntervalLogWriterBuilder::new()
        .add_comment(comment)
        .with_start_time(now)
        .with_base_time(now)
        .with_max_value_divisor(MAX_VALUE_DIVISOR)
        .begin_log_with(out, serializer)
        .map_err(|e| io_error("writing an interval log")(format_args!("{e}")))
}

/// Turns a run's 100 ms snapshots into one interval per second, written as
/// each second completes, so memory stays flat however long the run.
pub struct SecondsLog<'a, 'b, W: Write> {
    writer: IntervalLogWriter<'a, 'b, W, V2DeflateSerializer>,
    current: Option<(u64, Histogram<u64>)>,
}

impl<'a, 'b, W: Write> SecondsLog<'a, 'b, W> {
    /// Logs through `writer` (see [`begin`]).
    pub fn new(writer: IntervalLogWriter<'a, 'b, W, V2DeflateSerializer>) -> Self {
        SecondsLog {
            writer,
            current: None,
        }
    }

    /// Adds a snapshot (warm-up snapshots are left out, as they are from
    /// the results).
    pub fn add(&mut self, snapshot: &Snapshot) -> Result<(), LoadError> {
        if snapshot.warmup {
            return Ok(());
        }
        let second = snapshot.start.as_secs();
        if self
            .current
            .as_ref()
            .is_some_and(|(current, _)| *current != second)
        {
            self.flush()?;
        }
        let (_, histogram) = self
            .current
            .get_or_insert_with(|| (second, new_histogram()));
        let _ = histogram.add(&snapshot.latency);
        Ok(())
    }

    /// Writes the second in progress.
    pub fn flush(&mut self) -> Result<(), LoadError> {
        if let Some((second, histogram)) = self.current.take() {
            self.writer
                .write_histogram(
                    &histogram,
                    Duration::from_secs(second),
                    Duration::from_secs(1),
                    None,
                )
                .map_err(|e| io_error("writing an interval log")(format_args!("{e:?}")))?;
        }
        Ok(())
    }
}

/// Reads every interval of a log, with absolute start times.
pub fn read_log(bytes: &[u8]) -> Result<Vec<Interval>, LoadError> {
    let mut intervals = Vec::new();
    for_each_interval(bytes, |interval| intervals.push(interval))?;
    Ok(intervals)
}

/// Reads a log one interval at a time, handing each to `each`: a long log
/// is read in the memory of one interval.
pub fn for_each_interval(bytes: &[u8], mut each: impl FnMut(Interval)) -> Result<(), LoadError> {
    let error = io_error("reading an interval log");
    let mut base: Option<Duration> = None;
    let mut start_time: Option<Duration> = None;
    for entry in IntervalLogIterator::new(bytes) {
        match entry.map_err(|e| error(format_args!("{e:?}")))? {
            LogEntry::BaseTime(time) => base = Some(time),
            LogEntry::StartTime(time) => start_time = Some(time),
            LogEntry::Interval(interval) => {
                let encoded = base64::engine::general_purpose::STANDARD
                    .decode(interval.encoded_histogram())
                    .map_err(|e| error(format_args!("{e}")))?;
                let histogram: Histogram<u64> = Deserializer::new()
                    .deserialize(&mut encoded.as_slice())
                    .map_err(|e| error(format_args!("{e:?}")))?;
                // HdrHistogram's own rule: without a BaseTime, timestamps
                // are absolute unless they are more than a year smaller than
                // StartTime, in which case they count from it.
                const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
                let stamp = interval.start_timestamp();
                let origin = match (base, start_time) {
                    (Some(base), _) => base,
                    (None, Some(start)) if stamp + YEAR < start => start,
                    _ => Duration::ZERO,
                };
                each(Interval {
                    start: origin + stamp,
                    duration: interval.duration(),
                    histogram,
                });
            }
        }
    }
    Ok(())
}

/// Adds logs interval by interval: intervals that start in the same
/// `period` (by wall-clock time) are summed. The exact way to combine the
/// measurements of generators run side by side.
pub fn merge(logs: &[Vec<Interval>], period: Duration) -> Vec<Interval> {
    let period_ns = period.as_nanos().max(1);
    let mut merged: std::collections::BTreeMap<u128, Interval> = std::collections::BTreeMap::new();
    for log in logs {
        for interval in log {
            let slot = interval.start.as_nanos() / period_ns;
            let entry = merged.entry(slot).or_insert_with(|| Interval {
                start: Duration::from_nanos((slot * period_ns) as u64),
                duration: period,
                histogram: new_histogram(),
            });
            // Histograms from other tools may have other bounds; adding
            // can then fail for values beyond ours, which saturate instead.
            if entry.histogram.add(&interval.histogram).is_err() {
                for value in interval.histogram.iter_recorded() {
                    entry
                        .histogram
                        .saturating_record_n(value.value_iterated_to(), value.count_at_value());
                }
            }
        }
    }
    merged.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(start_s: u64, values_ms: &[u64]) -> Interval {
        let mut histogram = new_histogram();
        for v in values_ms {
            histogram.record(v * 1_000_000).unwrap();
        }
        Interval {
            start: Duration::from_secs(start_s),
            duration: Duration::from_secs(1),
            histogram,
        }
    }

    #[test]
    fn logs_round_trip_and_merge_to_the_sum() {
        let base = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = vec![
            interval(1_700_000_000, &[1, 2, 3]),
            interval(1_700_000_001, &[10]),
        ];
        let b = vec![
            interval(1_700_000_000, &[4]),
            interval(1_700_000_002, &[100, 200]),
        ];
        let mut bytes_a = Vec::new();
        write_log(&mut bytes_a, base, &a).unwrap();
        let text = String::from_utf8(bytes_a.clone()).unwrap();
        assert!(text.contains("#[BaseTime: 1700000000.000"), "{text}");
        let read_a = read_log(&bytes_a).unwrap();
        assert_eq!(read_a.len(), 2);
        assert_eq!(read_a[0].start, Duration::from_secs(1_700_000_000));
        assert_eq!(read_a[0].histogram, a[0].histogram);
        let mut bytes_b = Vec::new();
        write_log(&mut bytes_b, base, &b).unwrap();
        let merged = merge(
            &[read_a, read_log(&bytes_b).unwrap()],
            Duration::from_secs(1),
        );
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0].histogram.len(), 4);
        let mut all = new_histogram();
        for i in a.iter().chain(&b) {
            all.add(&i.histogram).unwrap();
        }
        let mut total = new_histogram();
        for i in &merged {
            total.add(&i.histogram).unwrap();
        }
        assert_eq!(total, all);
    }
}
