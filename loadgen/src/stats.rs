//! What a load run measured: latency histograms (HdrHistogram, ns, 1 ns to
//! 60 s, 3 significant digits), status codes, errors by kind, bytes. Each
//! worker fills its own [`Stats`]; they are merged at the end, so memory is
//! bounded however long the run.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

pub use tracebench_histogram::{MAX_LATENCY_NS, latency_histogram};

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// Nothing listens there (ECONNREFUSED).
    Refused,
    /// The connection was reset (ECONNRESET, EPIPE).
    Reset,
    /// No complete answer within `--timeout`.
    Timeout,
    /// Another error while connecting or reading.
    Read,
    /// Another error while sending.
    Write,
    /// The answer was not HTTP, or the connection closed mid-answer.
    BadResponse,
    /// The answer's head was over 64 KiB, or the whole answer over 16 MiB
    /// ([`crate::response::MAX_HEAD`], [`crate::response::MAX_RESPONSE`]).
    TooLarge,
    /// https: the TLS handshake failed (a certificate not trusted, a
    /// protocol error).
    Tls,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Refused,
        ErrorKind::Reset,
        ErrorKind::Timeout,
        ErrorKind::Read,
        ErrorKind::Write,
        ErrorKind::BadResponse,
        ErrorKind::TooLarge,
        ErrorKind::Tls,
    ];

    /// What the kind means, where the label alone does not say.
    pub fn explanation(self) -> Option<&'static str> {
        match self {
            ErrorKind::TooLarge => Some("a head over 64 KiB or an answer over 16 MiB"),
            _ => None,
        }
    }

    /// A short name.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Read => "read",
            ErrorKind::Write => "write",
            ErrorKind::BadResponse => "bad response",
            ErrorKind::TooLarge => "too large",
            ErrorKind::Tls => "tls",
        }
    }

    /// Classifies an I/O error met while connecting or reading.
    pub fn of_read(error: &std::io::Error) -> ErrorKind {
        if crate::tls::tls_failure(error).is_some() {
            return ErrorKind::Tls;
        }
        match error.kind() {
            std::io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => ErrorKind::Reset,
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Read,
        }
    }

    /// Classifies an I/O error met while writing.
    pub fn of_write(error: &std::io::Error) -> ErrorKind {
        match ErrorKind::of_read(error) {
            ErrorKind::Read => ErrorKind::Write,
            kind => kind,
        }
    }
}

/// Everything one worker (or the whole run) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Total time of each completed request from its actual start: its
    /// connect (a new connection) or send (a reused one), to the last byte.
    pub latency: Histogram<u64>,
    /// Time to connect, for requests that opened a connection.
    pub connect: Histogram<u64>,
    /// Time from the start to the first byte of the answer.
    pub first_byte: Histogram<u64>,
    /// Completed requests by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Failed requests by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Open loop only: latency from each request's planned send time, so
    /// time spent waiting behind a stalled server counts (no coordinated
    /// omission). Empty in the closed loop, where `latency` is all there is.
    pub corrected: Histogram<u64>,
    /// Open loop only: how late each request was sent after its planned
    /// time (the generator's own lateness, including waiting for a free
    /// connection).
    pub lateness: Histogram<u64>,
    /// Open loop only: requests that never got an answer in time (timed
    /// out, or still in flight or not yet sent when the run ended). Each
    /// is in `corrected` at how long it had waited since its planned time
    /// (a lower bound), so a stall longer than `--timeout` or than the
    /// rest of the run still shows in the tail.
    pub unanswered: u64,
    /// Closed loop only: requests still waiting for their answer when the
    /// run ended (`-z`'s deadline, or Ctrl-C). Neither answered nor
    /// failed: the run ended under them. The open loop counts them in
    /// `unanswered` instead.
    pub in_flight_at_end: u64,
    /// Requests sent again on a fresh connection because the kept-alive
    /// one they were sent on was closed by the server before any byte of
    /// an answer (idempotent methods only, as browsers and curl do).
    pub retries: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Connections opened.
    pub connections: u64,
    /// https: what the first TLS failure said (why the rest failed too,
    /// most likely: a certificate not trusted).
    pub first_tls_error: Option<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: latency_histogram(),
            connect: latency_histogram(),
            first_byte: latency_histogram(),
            corrected: latency_histogram(),
            lateness: latency_histogram(),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            unanswered: 0,
            in_flight_at_end: 0,
            retries: 0,
            bytes: 0,
            connections: 0,
            first_tls_error: None,
        }
    }
}

/// A duration as a histogram value: nanoseconds, within the histogram's
/// range.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_LATENCY_NS)
}

impl Stats {
    /// Records a completed request.
    pub fn record_response(
        &mut self,
        status: u16,
        total: Duration,
        first_byte: Duration,
        bytes: usize,
    ) {
        self.latency.saturating_record(nanos(total));
        self.first_byte.saturating_record(nanos(first_byte));
        *self.statuses.entry(status).or_insert(0) += 1;
        self.bytes += bytes as u64;
    }

    /// Records an open-loop request's latency from its planned time and its
    /// lateness.
    pub fn record_schedule(&mut self, from_planned: Duration, late: Duration) {
        self.corrected.saturating_record(nanos(from_planned));
        self.lateness.saturating_record(nanos(late));
    }

    /// Records an open-loop request that got no answer, having waited
    /// `waited` since its planned time.
    pub fn record_unanswered(&mut self, waited: Duration) {
        self.record_unanswered_n(waited, 1);
    }

    /// Records `n` unanswered requests that each waited about `waited`.
    pub fn record_unanswered_n(&mut self, waited: Duration, n: u64) {
        self.corrected.saturating_record_n(nanos(waited), n);
        self.unanswered += n;
    }

    /// Records how long a connect took.
    pub fn record_connect(&mut self, took: Duration) {
        self.connect.saturating_record(nanos(took));
        self.connections += 1;
    }

    /// Records a failed request.
    pub fn record_error(&mut self, kind: ErrorKind) {
        *self.errors.entry(kind).or_insert(0) += 1;
    }

    /// Adds another worker's measurements.
    pub fn merge(&mut self, other: &Stats) {
        // Histograms with the same bounds always add.
        let _ = self.latency.add(&other.latency);
        let _ = self.connect.add(&other.connect);
        let _ = self.first_byte.add(&other.first_byte);
        let _ = self.corrected.add(&other.corrected);
        let _ = self.lateness.add(&other.lateness);
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_insert(0) += n;
        }
        for (kind, n) in &other.errors {
            *self.errors.entry(*kind).or_insert(0) += n;
        }
        self.unanswered += other.unanswered;
        self.in_flight_at_end += other.in_flight_at_end;
        self.retries += other.retries;
        self.bytes += other.bytes;
        self.connections += other.connections;
        if self.first_tls_error.is_none() {
            self.first_tls_error.clone_from(&other.first_tls_error);
        }
    }

    /// The latencies to report: from the planned send time in the open
    /// loop, from the actual start in the closed loop.
    pub fn primary(&self) -> &Histogram<u64> {
        if self.corrected.is_empty() {
            &self.latency
        } else {
            &self.corrected
        }
    }

    /// Requests that got an answer (any status).
    pub fn completed(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Requests that failed.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Requests answered with a status that is not a success: neither 2xx
    /// nor 3xx (a redirect is the server working as meant).
    pub fn non_success(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| !(200..400).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_everything() {
        let mut a = Stats::default();
        a.record_response(
            200,
            Duration::from_millis(10),
            Duration::from_millis(9),
            100,
        );
        a.record_error(ErrorKind::Timeout);
        let mut b = Stats::default();
        b.record_response(503, Duration::from_millis(30), Duration::from_millis(1), 50);
        b.record_connect(Duration::from_micros(80));
        a.merge(&b);
        assert_eq!((a.completed(), a.failed(), a.non_success()), (2, 1, 1));
        assert_eq!(a.bytes, 150);
        assert_eq!(a.latency.len(), 2);
        assert!(a.latency.max() >= 29_000_000 && a.latency.max() <= 30_100_000);
        // Latencies beyond the histogram's range are clamped, not lost.
        a.record_response(200, Duration::from_secs(120), Duration::ZERO, 0);
        assert_eq!(a.latency.len(), 3);
    }
}
