//! What each thread was doing, and when: a timeline of states built from
//! events alone, for the dashboard, the exporters and `-c`.
//!
//! A thread is `Running` between syscalls it was seen in, and in the state
//! its syscall implies while inside one (a FUTEX_WAIT is `FutexWait`, an
//! accept4 is `Accept`, …). Syscalls that are not traced are invisible, so
//! "Running" means "not inside a traced syscall".

use std::collections::BTreeMap;
use std::fmt;

use syscalls::Sysno;

use tracebench_trace::syscall::is_futex_wait;
use tracebench_trace::{Event, EventKind, EventSink, OffCpuReason, Sampled};

/// What a thread is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ThreadState {
    /// Not inside a traced syscall.
    Running,
    /// Sleeping in a futex wait on this address.
    FutexWait(u64),
    /// Waiting for a connection (accept, accept4).
    Accept,
    /// Sleeping on purpose: for a time (nanosleep, clock_nanosleep), or
    /// until a signal or a child's end (rt_sigsuspend, pause, wait4,
    /// waitid: nginx's master, a shell).
    Sleep,
    /// Reading, writing or closing.
    Io,
    /// Waiting for any of many descriptors to be ready, or for completions:
    /// where an event loop sits between events (epoll_wait, poll, select,
    /// io_uring_enter).
    EventWait,
    /// Inside another traced syscall (its number).
    Syscall(u32),
    /// Woken or preempted, waiting for a CPU (seen only with the `perf`
    /// backend, which sees the scheduler).
    Runnable,
    /// Asleep outside any traced syscall (seen only with the `perf`
    /// backend).
    Blocked,
    /// Gone.
    Exited,
}

impl ThreadState {
    /// The state a thread is in while inside syscall `nr` with `args`.
    pub fn of_syscall(nr: u32, args: &[u64; 6]) -> ThreadState {
        match Sysno::new(nr as usize) {
            Some(Sysno::futex) if is_futex_wait(args[1]) => ThreadState::FutexWait(args[0]),
            Some(Sysno::accept | Sysno::accept4) => ThreadState::Accept,
            Some(
                Sysno::nanosleep
                | Sysno::clock_nanosleep
                | Sysno::rt_sigsuspend
                | Sysno::pause
                | Sysno::rt_sigtimedwait
                | Sysno::wait4
                | Sysno::waitid,
            ) => ThreadState::Sleep,
            Some(
                Sysno::read
                | Sysno::write
                | Sysno::recvfrom
                | Sysno::sendto
                | Sysno::readv
                | Sysno::writev
                | Sysno::recvmsg
                | Sysno::sendmsg
                | Sysno::sendfile
                | Sysno::close,
            ) => ThreadState::Io,
            Some(
                Sysno::poll
                | Sysno::ppoll
                | Sysno::epoll_wait
                | Sysno::epoll_pwait
                | Sysno::epoll_pwait2
                | Sysno::io_uring_enter
                | Sysno::select
                | Sysno::pselect6,
            ) => ThreadState::EventWait,
            _ => ThreadState::Syscall(nr),
        }
    }

    /// A short name for tables: `futex-wait`, `accept`, `sleep`, …
    pub fn label(self) -> &'static str {
        LABELS[self.kind()]
    }

    /// Its kind's place in [`LABELS`]: states that differ only in their
    /// futex word or syscall are of one kind.
    fn kind(self) -> usize {
        match self {
            ThreadState::Running => 0,
            ThreadState::FutexWait(_) => 1,
            ThreadState::Accept => 2,
            ThreadState::Sleep => 3,
            ThreadState::Io => 4,
            ThreadState::EventWait => 5,
            ThreadState::Syscall(_) => 6,
            ThreadState::Runnable => 7,
            ThreadState::Blocked => 8,
            ThreadState::Exited => 9,
        }
    }
}

/// The label of each kind of state, in [`ThreadState::kind`]'s order.
const LABELS: [&str; 10] = [
    "running",
    "futex-wait",
    "accept",
    "sleep",
    "io",
    "event-wait",
    "syscall",
    "runnable",
    "blocked",
    "exited",
];

/// Nanoseconds spent in each kind of state, and which kinds were ever
/// entered (a kind entered for 0 ns still shows): an array, not a map,
/// because every traced event may add to it.
#[derive(Debug, Clone, Copy, Default)]
struct KindTotals {
    ns: [u64; LABELS.len()],
    entered: u16,
}

impl KindTotals {
    fn add(&mut self, state: ThreadState, ns: u64) {
        let kind = state.kind();
        self.ns[kind] += ns;
        self.entered |= 1 << kind;
    }

    fn was_entered(&self, state: ThreadState) -> bool {
        self.entered & (1 << state.kind()) != 0
    }

    fn by_label(&self) -> BTreeMap<&'static str, u64> {
        (0..LABELS.len())
            .filter(|kind| self.entered & (1 << kind) != 0)
            .map(|kind| (LABELS[kind], self.ns[kind]))
            .collect()
    }
}

/// What an event that only tells a thread's state (the scheduler's, or a
/// sampler's) does to a thread now in `current`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// It is in this state from now on.
    Enter(ThreadState),
    /// Its state stays as it is.
    Keep,
    /// The event is not one of those (a syscall, a spawn, an exit…).
    NotAState,
}

/// The state that `kind` says a thread is in, if it only says that: woken
/// (off its CPU) or preempted means runnable; asleep keeps the state of the traced call
/// it sleeps in, or is blocked outside one; on a CPU means running; a
/// sample says what it saw.
pub fn observed_state(kind: &EventKind, current: ThreadState) -> Observed {
    match kind {
        // A thread still on its CPU (not asleep yet) is woken without
        // waiting for one.
        EventKind::Woken { .. } if current == ThreadState::Running => Observed::Keep,
        EventKind::Woken { .. }
        | EventKind::OffCpu {
            reason: OffCpuReason::Preempted,
        } => Observed::Enter(ThreadState::Runnable),
        EventKind::OffCpu { .. } => match current {
            ThreadState::Running | ThreadState::Runnable => Observed::Enter(ThreadState::Blocked),
            _ => Observed::Keep,
        },
        EventKind::OnCpu { .. } => Observed::Enter(ThreadState::Running),
        EventKind::Sampled { seen } => Observed::Enter(match seen {
            Sampled::Running => ThreadState::Running,
            Sampled::Blocked { nr, args } => ThreadState::of_syscall(*nr, args),
            Sampled::Gone => ThreadState::Exited,
        }),
        _ => Observed::NotAState,
    }
}

/// One stretch of time a thread spent in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// When it started (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// When it ended; `None` while it lasts.
    pub end_ns: Option<u64>,
    /// The state.
    pub state: ThreadState,
    /// Seen by a look at the thread (/proc), not proven by a traced event:
    /// a thread blocked in a call the selection leaves out, say.
    pub sampled: bool,
}

/// The timeline of one thread.
#[derive(Debug, Clone, Default)]
pub struct ThreadTimeline {
    /// Its process.
    pub pid: i32,
    /// Its intervals, oldest first, without gaps after the first (only
    /// the current one when its [`Timelines`] keeps no history).
    pub intervals: Vec<Interval>,
    /// Traced syscalls it completed.
    pub syscalls: u64,
    /// Nanoseconds of its ended intervals, by kind of state: what
    /// `time_by_state` adds the current interval to.
    ended: KindTotals,
    /// Nanoseconds of its ended intervals that a look at /proc gave.
    ended_sampled: u64,
}

impl ThreadTimeline {
    /// The state it was in at `at_ns` (`None` before its first interval).
    pub fn state_at(&self, at_ns: u64) -> Option<ThreadState> {
        let after = self.intervals.partition_point(|i| i.start_ns <= at_ns);
        after.checked_sub(1).map(|i| self.intervals[i].state)
    }

    /// The state it is in now.
    pub fn current(&self) -> ThreadState {
        self.intervals
            .last()
            .map_or(ThreadState::Running, |i| i.state)
    }

    /// Since when it has been in its current state.
    pub fn since_ns(&self) -> Option<u64> {
        self.intervals.last().map(|i| i.start_ns)
    }

    fn enter(&mut self, state: ThreadState, at: u64, history: bool) {
        self.enter_as(state, at, false, history);
    }

    /// Ends the current interval at `at` and starts one in `state`; with
    /// no `history`, the ended interval is only added to the totals.
    fn enter_as(&mut self, state: ThreadState, at: u64, sampled: bool, history: bool) {
        if let Some(last) = self.intervals.last_mut() {
            if last.state == state {
                return;
            }
            last.end_ns = Some(at);
            let ended = *last;
            self.add_ended(&ended);
            if !history {
                self.intervals.clear();
            }
        }
        self.intervals.push(Interval {
            start_ns: at,
            end_ns: None,
            state,
            sampled,
        });
    }

    fn add_ended(&mut self, interval: &Interval) {
        let ns = interval
            .end_ns
            .unwrap_or(interval.start_ns)
            .max(interval.start_ns)
            - interval.start_ns;
        self.ended.add(interval.state, ns);
        if interval.sampled {
            self.ended_sampled += ns;
        }
    }

    /// The current interval, if it is still open, and its length up to
    /// `now`.
    fn open_ns(&self, now_ns: u64) -> Option<(&Interval, u64)> {
        let last = self.intervals.last().filter(|i| i.end_ns.is_none())?;
        Some((last, now_ns.max(last.start_ns) - last.start_ns))
    }

    /// Nanoseconds up to `now` whose state a look at the thread gave, not
    /// the trace.
    pub fn sampled_ns(&self, now_ns: u64) -> u64 {
        let open = self
            .open_ns(now_ns)
            .filter(|(i, _)| i.sampled)
            .map_or(0, |(_, ns)| ns);
        self.ended_sampled + open
    }

    /// Nanoseconds spent in each kind of state up to `now`, over its whole
    /// life (the current interval is counted up to `now`).
    pub fn time_by_state(&self, now_ns: u64) -> BTreeMap<&'static str, u64> {
        let mut totals = self.ended.by_label();
        if let Some((interval, ns)) = self.open_ns(now_ns) {
            *totals.entry(interval.state.label()).or_insert(0) += ns;
        }
        totals
    }

    /// Whether it was ever in `state` (by label).
    fn was_ever(&self, state: ThreadState) -> bool {
        self.ended.was_entered(state)
            || self
                .intervals
                .last()
                .is_some_and(|i| i.state.kind() == state.kind())
    }
}

/// Every thread's timeline, fed event by event.
#[derive(Debug, Clone)]
pub struct Timelines {
    threads: BTreeMap<i32, ThreadTimeline>,
    last_ns: u64,
    /// Whether ended intervals are kept (for `state_at`), or only added
    /// to each thread's totals: a summary's memory must not grow with
    /// the length of the trace.
    history: bool,
}

impl Default for Timelines {
    fn default() -> Self {
        Timelines {
            threads: BTreeMap::new(),
            last_ns: 0,
            history: true,
        }
    }
}

impl Timelines {
    /// An empty model that keeps every interval.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty model that keeps only each thread's totals and current
    /// interval: what a summary needs, in memory that does not grow with
    /// the trace's length.
    pub fn totals_only() -> Self {
        Timelines {
            history: false,
            ..Self::default()
        }
    }

    /// Updates the model with one event.
    pub fn apply(&mut self, event: &Event) {
        self.last_ns = self.last_ns.max(event.time_ns);
        if matches!(event.kind, EventKind::Lost { .. }) {
            return; // a gap in the trace (tid 0), not a thread's doing
        }
        let history = self.history;
        let thread = self
            .threads
            .entry(event.tid)
            .or_insert_with(|| ThreadTimeline {
                pid: event.pid,
                ..ThreadTimeline::default()
            });
        match observed_state(&event.kind, thread.current()) {
            Observed::Enter(state) => {
                let sampled = matches!(event.kind, EventKind::Sampled { .. });
                return thread.enter_as(state, event.time_ns, sampled, history);
            }
            Observed::Keep => return,
            Observed::NotAState => {}
        }
        match &event.kind {
            EventKind::SyscallEntry { nr, args, .. } => {
                thread.enter(ThreadState::of_syscall(*nr, args), event.time_ns, history)
            }
            EventKind::SyscallExit { .. } => {
                thread.syscalls += 1;
                thread.enter(ThreadState::Running, event.time_ns, history);
            }
            EventKind::Exited { .. } => thread.enter(ThreadState::Exited, event.time_ns, history),
            EventKind::Exec { former_tid } if *former_tid != event.tid => {
                // The exec'ing thread took over the leader's tid.
                if let Some(mut former) = self.threads.remove(former_tid) {
                    former.enter(ThreadState::Exited, event.time_ns, history);
                    self.threads.insert(*former_tid, former);
                }
            }
            EventKind::Spawned {
                child_tid,
                child_pid,
                ..
            } => {
                let at = event.time_ns;
                let child = self
                    .threads
                    .entry(*child_tid)
                    .or_insert_with(|| ThreadTimeline {
                        pid: *child_pid,
                        ..ThreadTimeline::default()
                    });
                if child.intervals.is_empty() {
                    child.enter(ThreadState::Running, at, history);
                }
            }
            _ => {
                if thread.intervals.is_empty() {
                    thread.enter(ThreadState::Running, event.time_ns, history);
                }
            }
        }
    }

    /// The threads, by tid.
    pub fn threads(&self) -> &BTreeMap<i32, ThreadTimeline> {
        &self.threads
    }

    /// The time of the latest event applied.
    pub fn last_ns(&self) -> u64 {
        self.last_ns
    }

    /// Forgets threads that exited before `before_ns` (a fork-per-connection
    /// server leaves one per request); returns their tids.
    pub fn forget_exited_before(&mut self, before_ns: u64) -> Vec<i32> {
        let gone: Vec<i32> = self
            .threads
            .iter()
            .filter(|(_, t)| {
                t.current() == ThreadState::Exited && t.since_ns().is_some_and(|s| s < before_ns)
            })
            .map(|(tid, _)| *tid)
            .collect();
        for tid in &gone {
            self.threads.remove(tid);
        }
        gone
    }

    /// Forgets intervals that ended before `before_ns`, so a long live view
    /// keeps bounded memory (the current interval of each thread stays).
    pub fn prune_before(&mut self, before_ns: u64) {
        for thread in self.threads.values_mut() {
            let keep_from = thread
                .intervals
                .iter()
                .position(|i| i.end_ns.is_none_or(|end| end >= before_ns))
                .unwrap_or(thread.intervals.len());
            thread.intervals.drain(..keep_from);
        }
    }

    /// Records that thread `tid` of process `pid` was seen in `state` at
    /// `at_ns` (for sources that observe states rather than events, such
    /// as sampling /proc).
    pub fn observe(&mut self, tid: i32, pid: i32, state: ThreadState, at_ns: u64) {
        self.last_ns = self.last_ns.max(at_ns);
        let history = self.history;
        self.threads
            .entry(tid)
            .or_insert_with(|| ThreadTimeline {
                pid,
                ..ThreadTimeline::default()
            })
            .enter(state, at_ns, history);
    }
}

impl EventSink for Timelines {
    fn event(&mut self, event: &Event) {
        self.apply(event);
    }

    /// Time passes without events too: a sampler emits only changes, and
    /// a thread still blocked now has been blocked until now.
    fn idle(&mut self, now_ns: u64) {
        self.last_ns = self.last_ns.max(now_ns);
    }
}

/// The per-thread table: syscalls seen and the share of its life each
/// thread spent in each state.
impl fmt::Display for Timelines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The scheduler's columns only when a backend saw the scheduler.
        let scheduler = self
            .threads
            .values()
            .any(|t| t.was_ever(ThreadState::Runnable) || t.was_ever(ThreadState::Blocked));
        writeln!(
            f,
            "    tid   syscalls  running  futex-wait   accept    sleep       io  event-wait  syscall{}  sampled",
            if scheduler { " runnable  blocked" } else { "" }
        )?;
        for (tid, thread) in &self.threads {
            let times = thread.time_by_state(self.last_ns);
            let lived: u64 = times
                .iter()
                .filter(|(k, _)| **k != "exited")
                .map(|(_, v)| v)
                .sum();
            let share = |label: &str| {
                let ns = times.get(label).copied().unwrap_or(0);
                if lived > 0 {
                    format!("{:>7.1}%", 100.0 * ns as f64 / lived as f64)
                } else {
                    format!("{:>8}", "-")
                }
            };
            write!(
                f,
                "{tid:>7} {:>10} {} {:>11} {} {} {} {:>11} {}",
                thread.syscalls,
                share("running"),
                share("futex-wait"),
                share("accept"),
                share("sleep"),
                share("io"),
                share("event-wait"),
                share("syscall"),
            )?;
            if scheduler {
                write!(f, " {} {}", share("runnable"), share("blocked"))?;
            }
            let sampled = thread.sampled_ns(self.last_ns).min(lived);
            match lived {
                0 => writeln!(f, " {:>8}", "-")?,
                _ => writeln!(f, " {:>7.1}%", 100.0 * sampled as f64 / lived as f64)?,
            }
        }
        writeln!(
            f,
            "(sampled: the share of its life whose state a look at /proc gave, not the trace: \
             blocked in a call not traced, or running)"
        )?;
        if !scheduler {
            writeln!(
                f,
                "(runnable, waiting for a CPU: needs --backend perf, which sees the scheduler)"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracebench_trace::DataCapture;

    fn at(time_ns: u64, tid: i32, kind: EventKind) -> Event {
        Event {
            time_ns,
            pid: 1,
            tid,
            kind,
        }
    }

    #[test]
    fn a_loss_is_no_thread() {
        let mut model = Timelines::new();
        model.apply(&at(0, 7, EventKind::OnCpu { cpu: 0 }));
        let mut lost = at(5, 0, EventKind::Lost { cpu: 1, count: 3 });
        lost.pid = 0;
        model.apply(&lost);
        assert_eq!(model.threads.keys().copied().collect::<Vec<_>>(), [7]);
    }

    #[test]
    fn the_scheduler_shows_runnable_and_blocked() {
        let mut model = Timelines::new();
        let futex_wait = [0x10, libc::FUTEX_WAIT as u64, 0, 0, 0, 0];
        model.apply(&at(
            0,
            7,
            EventKind::SyscallEntry {
                nr: libc::SYS_futex as u32,
                args: futex_wait,
                data: vec![],
                data_capture: tracebench_trace::DataCapture::NotCaptured,
            },
        ));
        model.apply(&at(
            10,
            7,
            EventKind::OffCpu {
                reason: OffCpuReason::Sleep,
            },
        ));
        let thread = &model.threads()[&7];
        assert_eq!(
            thread.current(),
            ThreadState::FutexWait(0x10),
            "asleep in its wait"
        );
        model.apply(&at(
            100,
            7,
            EventKind::Woken {
                waker_tid: 8,
                waker_pid: 1,
            },
        ));
        assert_eq!(model.threads()[&7].current(), ThreadState::Runnable);
        model.apply(&at(130, 7, EventKind::OnCpu { cpu: 0 }));
        assert_eq!(model.threads()[&7].current(), ThreadState::Running);
        model.apply(&at(
            200,
            7,
            EventKind::OffCpu {
                reason: OffCpuReason::Preempted,
            },
        ));
        assert_eq!(model.threads()[&7].current(), ThreadState::Runnable);
        model.apply(&at(220, 7, EventKind::OnCpu { cpu: 1 }));
        model.apply(&at(
            300,
            7,
            EventKind::OffCpu {
                reason: OffCpuReason::DiskSleep,
            },
        ));
        assert_eq!(
            model.threads()[&7].current(),
            ThreadState::Blocked,
            "asleep outside a traced call"
        );
        let times = model.threads()[&7].time_by_state(400);
        assert_eq!(times["runnable"], 30 + 20);
        assert!(model.to_string().contains("runnable"));
    }

    #[test]
    fn states_follow_syscalls() {
        let futex = Sysno::futex.id() as u32;
        let accept4 = Sysno::accept4.id() as u32;
        let wait = [
            0xabc,
            libc::FUTEX_WAIT as u64 | libc::FUTEX_PRIVATE_FLAG as u64,
            0,
            0,
            0,
            0,
        ];
        let mut model = Timelines::new();
        model.apply(&at(
            0,
            1,
            EventKind::Spawned {
                child_tid: 2,
                child_pid: 1,
                creation: tracebench_trace::Creation::Thread,
            },
        ));
        model.apply(&at(
            10,
            2,
            EventKind::SyscallEntry {
                nr: futex,
                args: wait,
                data: vec![],
                data_capture: DataCapture::Captured,
            },
        ));
        model.apply(&at(
            20,
            1,
            EventKind::SyscallEntry {
                nr: accept4,
                args: [3, 0, 0, 0, 0, 0],
                data: vec![],
                data_capture: DataCapture::Captured,
            },
        ));
        assert_eq!(model.threads()[&2].current(), ThreadState::FutexWait(0xabc));
        assert_eq!(model.threads()[&1].current(), ThreadState::Accept);
        model.apply(&at(
            50,
            2,
            EventKind::SyscallExit {
                nr: futex,
                ret: 0,
                data: vec![],
                data_capture: DataCapture::Captured,
            },
        ));
        model.apply(&at(
            60,
            2,
            EventKind::Exited {
                status: tracebench_trace::ExitStatus::Code(0),
            },
        ));
        let worker = &model.threads()[&2];
        assert_eq!(worker.current(), ThreadState::Exited);
        assert_eq!(worker.syscalls, 1);
        let times = worker.time_by_state(100);
        assert_eq!(times["futex-wait"], 40);
        assert_eq!(times["running"], 10 + 10);
    }

    #[test]
    fn totals_only_gives_the_same_table_in_memory_that_does_not_grow() {
        let mut whole = Timelines::new();
        let mut totals = Timelines::totals_only();
        let futex = libc::SYS_futex as u32;
        let wait = [0x10, libc::FUTEX_WAIT as u64, 0, 0, 0, 0];
        for round in 0..1000u64 {
            let t = round * 100;
            for model in [&mut whole, &mut totals] {
                model.observe(3, 1, ThreadState::Sleep, t + 5);
                model.apply(&at(
                    t + 10,
                    3,
                    EventKind::SyscallEntry {
                        nr: futex,
                        args: wait,
                        data: vec![],
                        data_capture: DataCapture::NotCaptured,
                    },
                ));
                model.apply(&at(
                    t + 70,
                    3,
                    EventKind::SyscallExit {
                        nr: futex,
                        ret: 0,
                        data: vec![],
                        data_capture: DataCapture::Captured,
                    },
                ));
            }
        }
        let (a, b) = (&whole.threads()[&3], &totals.threads()[&3]);
        assert_eq!(a.time_by_state(200_000), b.time_by_state(200_000));
        assert_eq!(a.sampled_ns(200_000), b.sampled_ns(200_000));
        assert_eq!(b.time_by_state(200_000)["futex-wait"], 60 * 1000);
        assert_eq!(whole.to_string(), totals.to_string());
        assert_eq!(a.intervals.len(), 3000);
        assert_eq!(b.intervals.len(), 1);
    }

    #[test]
    fn state_at_and_pruning() {
        let mut model = Timelines::new();
        model.observe(1, 1, ThreadState::Running, 0);
        model.observe(1, 1, ThreadState::Sleep, 100);
        model.observe(1, 1, ThreadState::Running, 200);
        let thread = &model.threads()[&1];
        assert_eq!(thread.state_at(50), Some(ThreadState::Running));
        assert_eq!(thread.state_at(150), Some(ThreadState::Sleep));
        assert_eq!(thread.state_at(999), Some(ThreadState::Running));
        model.prune_before(150);
        assert_eq!(model.threads()[&1].intervals.len(), 2);
        model.prune_before(10_000);
        assert_eq!(
            model.threads()[&1].intervals.len(),
            1,
            "the current interval stays"
        );
    }
}
