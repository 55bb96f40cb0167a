//! What happened to each request, counted without locks so the hot path pays
//! one relaxed atomic increment.

use std::fmt;
use std::ops::AddAssign;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The fate of one request, or of a connection that never became one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered 200.
    Ok,
    /// Answered 404: the path is not `/`.
    NotFound,
    /// Answered 405: the method is neither GET nor HEAD.
    MethodNotAllowed,
    /// Answered 400: the request head could not be parsed, or its delay was
    /// out of range.
    BadRequest,
    /// Answered 413: the request body was larger than we are willing to read.
    BodyTooLarge,
    /// Answered 431: the request head did not fit in 8 KiB.
    HeadTooLarge,
    /// Answered 501: chunked request bodies are not supported.
    NotImplemented,
    /// Answered 503: the queue was full and `--when-full reject` was set.
    Rejected,
    /// The client sent nothing, or too little, within the read timeout (408
    /// if it had started a request).
    ReadTimeout,
    /// The client went away (EOF inside a request, reset, broken pipe).
    PeerGone,
    /// Another I/O error on the connection.
    Io,
    /// A fork-mode child died without reporting (killed by a signal).
    ChildCrashed,
}

impl Outcome {
    /// Every outcome, in the order summaries print them.
    pub const ALL: [Outcome; 12] = [
        Outcome::Ok,
        Outcome::NotFound,
        Outcome::MethodNotAllowed,
        Outcome::BadRequest,
        Outcome::BodyTooLarge,
        Outcome::HeadTooLarge,
        Outcome::NotImplemented,
        Outcome::Rejected,
        Outcome::ReadTimeout,
        Outcome::PeerGone,
        Outcome::Io,
        Outcome::ChildCrashed,
    ];

    /// A stable small number for the outcome (its position in
    /// [`Outcome::ALL`]); fork-mode children exit with it.
    pub fn index(self) -> usize {
        Outcome::ALL
            .iter()
            .position(|&o| o == self)
            .expect("every outcome is in ALL")
    }

    /// The outcome with this [`Outcome::index`].
    pub fn from_index(index: usize) -> Option<Outcome> {
        Outcome::ALL.get(index).copied()
    }

    /// A short lowercase label for summaries.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "404 not found",
            Outcome::MethodNotAllowed => "405 method",
            Outcome::BadRequest => "400 bad request",
            Outcome::BodyTooLarge => "413 body too large",
            Outcome::HeadTooLarge => "431 head too large",
            Outcome::NotImplemented => "501 chunked body",
            Outcome::Rejected => "503 rejected",
            Outcome::ReadTimeout => "read timeout",
            Outcome::PeerGone => "peer gone",
            Outcome::Io => "i/o error",
            Outcome::ChildCrashed => "child crashed",
        }
    }
}

const OUTCOMES: usize = Outcome::ALL.len();

/// Live counters of outcomes, shared between the thread that serves and the
/// thread that prints the summary.
#[derive(Debug)]
pub struct Tally {
    counts: [AtomicU64; OUTCOMES],
}

impl Tally {
    /// All counts at zero.
    pub const fn new() -> Self {
        Tally {
            counts: [const { AtomicU64::new(0) }; OUTCOMES],
        }
    }

    /// Counts one `outcome`.
    pub fn record(&self, outcome: Outcome) {
        self.counts[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts as they are now.
    pub fn snapshot(&self) -> Counts {
        Counts(std::array::from_fn(|i| {
            self.counts[i].load(Ordering::Relaxed)
        }))
    }
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

/// A copy of a [`Tally`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts([u64; OUTCOMES]);

impl Counts {
    /// How many times `outcome` happened.
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.0[outcome.index()]
    }

    /// Adds `n` to `outcome`'s count.
    pub fn add(&mut self, outcome: Outcome, n: u64) {
        self.0[outcome.index()] += n;
    }

    /// Requests answered 200.
    pub fn ok(&self) -> u64 {
        self.get(Outcome::Ok)
    }

    /// Everything that was not a 200.
    pub fn errors(&self) -> u64 {
        self.0.iter().sum::<u64>() - self.ok()
    }
}

impl AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }
}

/// One line of the summary: a worker, the acceptor, or a group such as
/// "all connection threads".
#[derive(Debug, Clone)]
pub struct Lane {
    /// Who did the work, e.g. `worker-3`.
    pub name: String,
    /// What came of it.
    pub counts: Counts,
}

/// What the server did between start and stop, printed at exit.
#[derive(Debug, Clone)]
pub struct ServeSummary {
    /// The concurrency model's name.
    pub mode: String,
    /// Time from the first accept to the end of the drain.
    pub elapsed: Duration,
    /// Per worker (or per group), in a stable order.
    pub lanes: Vec<Lane>,
    /// Model-specific facts, e.g. children forked and reaped.
    pub notes: Vec<String>,
}

impl ServeSummary {
    /// All lanes added up.
    pub fn total(&self) -> Counts {
        let mut total = Counts::default();
        for lane in &self.lanes {
            total += lane.counts;
        }
        total
    }
}

impl fmt::Display for ServeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total();
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "summary: mode {}, {:.1} s, {} ok, {} errors ({:.0} ok/s)",
            self.mode,
            secs,
            total.ok(),
            total.errors(),
            if secs > 0.0 {
                total.ok() as f64 / secs
            } else {
                0.0
            }
        )?;
        let width = self.lanes.iter().map(|l| l.name.len()).max().unwrap_or(0);
        for lane in &self.lanes {
            write!(f, "  {:<width$}  {:>8} ok", lane.name, lane.counts.ok())?;
            for outcome in Outcome::ALL.into_iter().skip(1) {
                let n = lane.counts.get(outcome);
                if n > 0 {
                    write!(f, ", {n} {}", outcome.label())?;
                }
            }
            writeln!(f)?;
        }
        if total.errors() > 0 {
            write!(f, "  errors by kind:")?;
            for outcome in Outcome::ALL.into_iter().skip(1) {
                let n = total.get(outcome);
                if n > 0 {
                    write!(f, " {} {n};", outcome.label())?;
                }
            }
            writeln!(f)?;
        }
        for note in &self.notes {
            writeln!(f, "  {note}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips() {
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::from_index(outcome.index()), Some(outcome));
        }
        assert_eq!(Outcome::from_index(OUTCOMES), None);
    }

    #[test]
    fn summary_adds_lanes_and_names_error_kinds() {
        let worker = Tally::default();
        worker.record(Outcome::Ok);
        worker.record(Outcome::Ok);
        worker.record(Outcome::BadRequest);
        let acceptor = Tally::default();
        acceptor.record(Outcome::Rejected);
        let summary = ServeSummary {
            mode: "pool-futex".into(),
            elapsed: Duration::from_secs(2),
            lanes: vec![
                Lane {
                    name: "acceptor".into(),
                    counts: acceptor.snapshot(),
                },
                Lane {
                    name: "worker-0".into(),
                    counts: worker.snapshot(),
                },
            ],
            notes: vec![],
        };
        assert_eq!(summary.total().ok(), 2);
        assert_eq!(summary.total().errors(), 2);
        let text = summary.to_string();
        assert!(text.contains("2 ok, 2 errors"), "{text}");
        assert!(text.contains("400 bad request 1;"), "{text}");
        assert!(text.contains("503 rejected 1;"), "{text}");
    }
}
