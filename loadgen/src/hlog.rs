//! HdrHistogram interval logs (`.hlog`, V2 + DEFLATE), the format
//! HistogramLogAnalyzer and HdrHistogram's HistogramLogProcessor read: one
//! histogram per interval, so a run's latency can be followed over time,
//! and logs from several generators can be added interval by interval.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriter, IntervalLogWriterBuilder, LogEntry, LogIteratorError,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};

use crate::LoadError;
use crate::engine::Snapshot;
use crate::stats::latency_histogram;

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
            .get_or_insert_with(|| (second, latency_histogram()));
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

/// The largest interval log read (a day of a dashboard's 100 ms
/// intervals is well under it); a larger one is refused, not read into
/// memory.
pub const MAX_LOG_BYTES: u64 = 1 << 30;

/// Where a log stops being readable, after a readable start: a log cut
/// short (its writer was killed mid-line, the disk filled) or damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The whole intervals read before it.
    pub intervals: usize,
    /// The byte where the first unreadable line starts.
    pub offset: usize,
    /// Whether that line is the log's last and has no end: a cut, not a
    /// corruption.
    pub cut: bool,
    /// What is wrong with the line (for a cut, that it has no end).
    pub cause: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.cut {
            write!(f, "cut short mid-line at byte {}", self.offset)?;
        } else {
            write!(f, "damaged at byte {} ({})", self.offset, self.cause)?;
        }
        write!(f, ", after {} whole intervals", self.intervals)
    }
}

/// Why a log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Nothing at its start reads as an interval log: no header line and no
    /// interval before the first unreadable line.
    #[error("not an HdrHistogram interval log ({cause} at byte {offset})")]
    NotALog {
        /// Where the first unreadable line starts.
        offset: usize,
        /// What is wrong with it.
        cause: String,
    },
    /// A log that starts well but is cut short or damaged further on
    /// ([`read_log`] only; [`for_each_interval`] reads up to it).
    #[error("interval log {0}")]
    Damaged(Damage),
}

/// Reads every interval of a log, with absolute start times; a log cut
/// short or damaged anywhere is an error (see [`for_each_interval`] to
/// read up to the damage instead).
pub fn read_log(bytes: &[u8]) -> Result<Vec<Interval>, LogError> {
    let mut intervals = Vec::new();
    match for_each_interval(bytes, |interval| intervals.push(interval))? {
        None => Ok(intervals),
        Some(damage) => Err(LogError::Damaged(damage)),
    }
}

/// Reads a log one interval at a time, handing each to `each`: a long log
/// is read in the memory of one interval.
///
/// A log whose start reads well but which is cut short or damaged further
/// on is read up to its last whole interval before the damage, which is
/// returned (what follows it is not read: a line after a damaged one may
/// belong to another run written over this one). A log that does not
/// start like an interval log is an error.
pub fn for_each_interval(
    bytes: &[u8],
    mut each: impl FnMut(Interval),
) -> Result<Option<Damage>, LogError> {
    let mut base: Option<Duration> = None;
    let mut start_time: Option<Duration> = None;
    let mut entries = 0usize;
    let mut intervals = 0usize;
    // The iterator stops at the first line it cannot parse, and hands
    // intervals out as slices of `bytes`: both tell where a line starts.
    let line_start = |inner: &str| {
        let at = (inner.as_ptr() as usize).saturating_sub(bytes.as_ptr() as usize);
        bytes[..at.min(bytes.len())]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |newline| newline + 1)
    };
    let mut problem: Option<(usize, String)> = None;
    for entry in IntervalLogIterator::new(bytes) {
        let entry = match entry {
            Ok(entry) => entry,
            Err(LogIteratorError::ParseError { offset }) => {
                problem = Some((offset, "an unreadable line".to_string()));
                break;
            }
        };
        entries += 1;
        match entry {
            LogEntry::BaseTime(time) => base = Some(time),
            LogEntry::StartTime(time) => start_time = Some(time),
            LogEntry::Interval(interval) => {
                let encoded = interval.encoded_histogram();
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| format!("an interval whose histogram is not base64: {e}"))
                    .and_then(|decoded| {
                        Deserializer::new()
                            .deserialize::<u64, _>(&mut decoded.as_slice())
                            .map_err(|e| format!("an interval whose histogram is unreadable: {e}"))
                    });
                let histogram: Histogram<u64> = match decoded {
                    Ok(histogram) => histogram,
                    Err(cause) => {
                        problem = Some((line_start(encoded), cause));
                        break;
                    }
                };
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
                intervals += 1;
            }
        }
    }
    let Some((offset, cause)) = problem else {
        return Ok(None);
    };
    if entries == 0 {
        return Err(LogError::NotALog { offset, cause });
    }
    Ok(Some(Damage {
        intervals,
        offset,
        cut: !bytes[offset.min(bytes.len())..].contains(&b'\n'),
        cause,
    }))
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
                histogram: latency_histogram(),
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
        let mut histogram = latency_histogram();
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
        let mut all = latency_histogram();
        for i in a.iter().chain(&b) {
            all.add(&i.histogram).unwrap();
        }
        let mut total = latency_histogram();
        for i in &merged {
            total.add(&i.histogram).unwrap();
        }
        assert_eq!(total, all);
    }

    /// A log of `n` one-second intervals, each with `i + 1` values.
    fn log_of(n: u64) -> Vec<u8> {
        let base = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let intervals: Vec<Interval> = (0..n)
            .map(|i| interval(1_700_000_000 + i, &vec![i + 1; i as usize + 1]))
            .collect();
        let mut bytes = Vec::new();
        write_log(&mut bytes, base, &intervals).unwrap();
        bytes
    }

    /// Where each interval line ends (just past its newline).
    fn interval_line_ends(bytes: &[u8]) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut start = 0;
        for (at, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                if bytes[start].is_ascii_digit() {
                    ends.push(at + 1);
                }
                start = at + 1;
            }
        }
        ends
    }

    #[test]
    fn a_log_cut_anywhere_after_its_header_reads_every_whole_interval_before_the_cut() {
        let bytes = log_of(5);
        let ends = interval_line_ends(&bytes);
        assert_eq!(ends.len(), 5);
        // From the first header entry on, every cut reads: the whole
        // intervals before it, and the cut reported unless it falls just
        // after a newline (then the log is whole as far as it goes).
        let first_entry = String::from_utf8_lossy(&bytes).find("#[StartTime").unwrap();
        let first_entry_end = first_entry
            + bytes[first_entry..]
                .iter()
                .position(|&b| b == b'\n')
                .unwrap()
            + 1;
        for len in first_entry_end..=bytes.len() {
            let prefix = &bytes[..len];
            let mut values = 0;
            let mut read = 0;
            let damage = for_each_interval(prefix, |i| {
                read += 1;
                values += i.histogram.len();
            })
            .unwrap_or_else(|e| panic!("cut at {len}: {e}"));
            let whole = ends.iter().filter(|&&end| end <= len).count();
            assert_eq!(read, whole, "cut at {len}");
            // Interval i holds i + 1 values.
            assert_eq!(values, (1..=whole as u64).sum::<u64>(), "cut at {len}");
            if prefix.ends_with(b"\n") {
                assert_eq!(damage, None, "cut at {len}");
            } else {
                let damage = damage.unwrap_or_else(|| panic!("cut at {len} not reported"));
                assert!(damage.cut, "{damage}");
                assert_eq!(damage.intervals, whole, "{damage}");
                let line_start = prefix.iter().rposition(|&b| b == b'\n').unwrap() + 1;
                assert_eq!(damage.offset, line_start, "{damage}");
                assert!(matches!(read_log(prefix), Err(LogError::Damaged(_))));
            }
        }
    }

    #[test]
    fn a_damaged_interval_stops_the_reading_there_and_says_where() {
        let mut bytes = log_of(5);
        let ends = interval_line_ends(&bytes);
        // A byte of the third interval's histogram no base64 has.
        let third = ends[1];
        let comma = third
            + bytes[third..ends[2]]
                .iter()
                .rposition(|&b| b == b',')
                .unwrap();
        bytes[comma + 10] = b'!';
        let mut read = 0;
        let damage = for_each_interval(&bytes, |_| read += 1).unwrap().unwrap();
        assert_eq!(read, 2);
        assert_eq!(damage.intervals, 2);
        assert_eq!(damage.offset, third);
        assert!(!damage.cut);
        let text = damage.to_string();
        assert!(
            text.starts_with(&format!("damaged at byte {third} (")),
            "{text}"
        );
        assert!(text.contains("base64"), "{text}");
        let error = read_log(&bytes).unwrap_err().to_string();
        assert!(!error.contains('\n'), "{error}");
        assert!(error.contains("after 2 whole intervals"), "{error}");
    }

    #[test]
    fn what_is_not_an_interval_log_is_an_error_saying_so() {
        for bytes in [
            &b"hello\nworld\n"[..],
            b"# a comment, then\nnot a log\n",
            b"TBTRACE\0\x01\x02\x03",
            b"#tracebench dash; values in nano",
        ] {
            let error = for_each_interval(bytes, |_| panic!("no interval"))
                .expect_err(&String::from_utf8_lossy(bytes));
            assert!(matches!(error, LogError::NotALog { .. }), "{error:?}");
            let text = error.to_string();
            assert!(
                text.starts_with("not an HdrHistogram interval log (an unreadable line at byte "),
                "{text}"
            );
        }
        // Nothing at all is a log of no intervals, not damage.
        assert_eq!(
            for_each_interval(b"", |_| panic!("no interval")).unwrap(),
            None
        );
    }
}
