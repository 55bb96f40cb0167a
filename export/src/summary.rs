//! `-c`: counts and times per syscall, like `strace -c`, per thread the
//! share of time spent in each state, and the busiest futex words
//! ([`tracebench_analysis::futexstat`]).

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};
use std::fmt;

use syscalls::Sysno;

use crate::render::syscall_name;
use tracebench_analysis::attribution::Attributor;
use tracebench_analysis::futexstat::FutexStats;
use tracebench_analysis::states::Timelines;
use tracebench_trace::{Event, EventKind, EventSink};

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    calls: u64,
    errors: u64,
    total_ns: u64,
    max_ns: u64,
}

/// How the per-syscall table is ordered (strace's -S).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    /// Most time first (strace's default).
    #[default]
    Time,
    /// Most calls first.
    Calls,
    /// Most errors first.
    Errors,
    /// By name.
    Name,
    /// The longest single call first.
    MaxTime,
    /// The longest mean call first.
    AvgTime,
    /// By syscall number, as they are kept.
    Nothing,
}

/// Collects the statistics as events arrive; print it with `Display`.
#[derive(Debug)]
pub struct TraceSummary {
    sort: SortBy,
    syscalls: BTreeMap<u32, Totals>,
    entered: HashMap<i32, (u32, u64)>,
    timelines: Timelines,
    futex: FutexStats,
    requests: Attributor,
    first_ns: Option<u64>,
    /// Events the kernel dropped, per CPU (the perf backend's full rings).
    lost: BTreeMap<u32, u64>,
}

/// Futex words listed in the summary.
const FUTEX_TOP: usize = 10;

impl TraceSummary {
    /// An empty summary.
    pub fn new() -> Self {
        TraceSummary {
            sort: SortBy::default(),
            syscalls: BTreeMap::new(),
            entered: HashMap::new(),
            timelines: Timelines::totals_only(),
            futex: FutexStats::default(),
            requests: Attributor::default(),
            first_ns: None,
            lost: BTreeMap::new(),
        }
    }

    /// Orders the per-syscall table by `sort`.
    pub fn sorted_by(mut self, sort: SortBy) -> Self {
        self.sort = sort;
        self
    }

    /// (calls, errors) for syscall `nr`.
    pub fn calls(&self, nr: u32) -> (u64, u64) {
        self.syscalls
            .get(&nr)
            .map_or((0, 0), |t| (t.calls, t.errors))
    }

    /// The futex statistics behind the summary's futex section.
    pub fn futex(&self) -> &FutexStats {
        &self.futex
    }

    /// The request attribution behind the summary's requests section.
    pub fn requests(&self) -> &Attributor {
        &self.requests
    }
}

impl Default for TraceSummary {
    fn default() -> Self {
        Self::new()
    }
}

impl EventSink for TraceSummary {
    fn event(&mut self, event: &Event) {
        self.first_ns.get_or_insert(event.time_ns);
        self.timelines.apply(event);
        self.futex.feed(event);
        self.requests.feed(event, |_| {});
        match &event.kind {
            EventKind::SyscallEntry { nr, .. } => {
                self.entered.insert(event.tid, (*nr, event.time_ns));
            }
            EventKind::SyscallExit { nr, ret, .. } => {
                let spent = match self.entered.remove(&event.tid) {
                    Some((entered_nr, at)) if entered_nr == *nr => event.time_ns.saturating_sub(at),
                    _ => 0,
                };
                let totals = self.syscalls.entry(*nr).or_default();
                totals.calls += 1;
                totals.errors += u64::from((-4095..0).contains(ret));
                totals.total_ns += spent;
                totals.max_ns = totals.max_ns.max(spent);
            }
            EventKind::Lost { cpu, count } => *self.lost.entry(*cpu).or_default() += count,
            _ => {}
        }
    }
}

impl TraceSummary {
    /// The warning above everything when events were lost: every count
    /// below is short by an unknown share of them.
    fn write_lost(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self.lost.values().sum();
        if total == 0 {
            return Ok(());
        }
        let cpus: Vec<String> = self
            .lost
            .iter()
            .map(|(cpu, count)| format!("{count} on CPU {cpu}"))
            .collect();
        writeln!(
            f,
            "!!! {total} events LOST ({}): the kernel's ring buffers were full; \
             the counts below are short (a larger --buffer-size helps)\n",
            cpus.join(", ")
        )
    }
}

impl fmt::Display for TraceSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all_ns: u64 = self.syscalls.values().map(|t| t.total_ns).sum();
        self.write_lost(f)?;
        writeln!(
            f,
            "% time     seconds  usecs/call   max usecs     calls    errors syscall"
        )?;
        writeln!(
            f,
            "------ ----------- ----------- ----------- --------- --------- ----------------"
        )?;
        let mut rows: Vec<_> = self.syscalls.iter().collect();
        let mean = |t: &Totals| t.total_ns / t.calls.max(1);
        match self.sort {
            SortBy::Time => rows.sort_by_key(|(_, t)| std::cmp::Reverse(t.total_ns)),
            SortBy::Calls => rows.sort_by_key(|(_, t)| std::cmp::Reverse(t.calls)),
            SortBy::Errors => rows.sort_by_key(|(_, t)| std::cmp::Reverse(t.errors)),
            SortBy::Name => rows.sort_by_key(|(nr, _)| syscall_name(**nr)),
            SortBy::MaxTime => rows.sort_by_key(|(_, t)| std::cmp::Reverse(t.max_ns)),
            SortBy::AvgTime => rows.sort_by_key(|(_, t)| std::cmp::Reverse(mean(t))),
            SortBy::Nothing => {}
        }
        let (mut calls, mut errors) = (0, 0);
        for (nr, t) in rows {
            calls += t.calls;
            errors += t.errors;
            writeln!(
                f,
                "{:>6.2} {:>11.6} {:>11} {:>11} {:>9} {:>9} {}",
                if all_ns > 0 {
                    100.0 * t.total_ns as f64 / all_ns as f64
                } else {
                    0.0
                },
                t.total_ns as f64 / 1e9,
                t.total_ns / t.calls.max(1) / 1000,
                t.max_ns / 1000,
                t.calls,
                if t.errors > 0 {
                    t.errors.to_string()
                } else {
                    String::new()
                },
                syscall_name(*nr)
            )?;
        }
        writeln!(
            f,
            "------ ----------- ----------- ----------- --------- --------- ----------------"
        )?;
        writeln!(
            f,
            "100.00 {:>11.6} {:>11} {:>11} {:>9} {:>9} total",
            all_ns as f64 / 1e9,
            "",
            "",
            calls,
            errors
        )?;

        write!(f, "\n{}", self.timelines)?;
        if self.syscalls.contains_key(&(Sysno::futex.id() as u32)) {
            write!(f, "\n{}", self.futex.report(FUTEX_TOP))?;
        }
        if self.requests.stats().requests() > 0 {
            write!(f, "\n{}", self.requests.stats())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracebench_trace::DataCapture;

    #[test]
    fn counts_calls_errors_and_time() {
        let futex = Sysno::futex.id() as u32;
        let e = |time_ns, kind| Event {
            time_ns,
            pid: 1,
            tid: 1,
            kind,
        };
        let mut summary = TraceSummary::new();
        for (start, ret) in [(0u64, 0i64), (100, -11), (200, 1)] {
            summary.event(&e(
                start,
                EventKind::SyscallEntry {
                    nr: futex,
                    args: [0, 0, 0, 0, 0, 0],
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            ));
            summary.event(&e(
                start + 50,
                EventKind::SyscallExit {
                    nr: futex,
                    ret,
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            ));
        }
        assert_eq!(summary.calls(futex), (3, 1));
        let text = summary.to_string();
        assert!(text.contains("futex"), "{text}");
        assert!(text.contains("futex words: 1 "), "{text}");
        assert!(text.contains("1 EAGAIN"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.ends_with("total") && l.contains(" 3 ")),
            "{text}"
        );
    }

    #[test]
    fn lost_events_head_the_summary() {
        let mut summary = TraceSummary::new();
        assert!(!summary.to_string().contains("LOST"));
        for (cpu, count) in [(1, 4), (0, 2), (1, 6)] {
            summary.event(&Event {
                time_ns: 1,
                pid: 0,
                tid: 0,
                kind: EventKind::Lost { cpu, count },
            });
        }
        let text = summary.to_string();
        assert!(
            text.starts_with("!!! 12 events LOST (2 on CPU 0, 10 on CPU 1)"),
            "{text}"
        );
    }
}
