//! The dashboard's model: everything the screen shows, changed only by
//! [`App::update`] with an [`Action`]. No I/O happens here, so every
//! behaviour can be tested without a terminal.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};

use hdrhistogram::Histogram;
use tracebench_analysis::states::{Observed, ThreadState, observed_state};
use tracebench_export::render::{
    entry_args_of, exit_args_of, return_value, signal_name, syscall_name,
};
use tracebench_loadgen::Snapshot;
use tracebench_loadgen::stats::latency_histogram;

use tracebench_analysis::attribution::Attributor;
use tracebench_analysis::futexstat::FutexStats;
use tracebench_analysis::roles::Roles;

use crate::history::StateHistory;
use tracebench_trace::{DataCapture, Event, EventKind, ExitStatus};

/// How many recent events the events pane keeps.
pub const RECENT_EVENTS: usize = 200;
/// How many 100 ms throughput samples the sparkline keeps (a minute).
pub const THROUGHPUT_HISTORY: usize = 600;
/// The shortest stretch the timeline shows (+ zooms in down to it).
pub const MIN_WINDOW_NS: u64 = 100_000_000;
/// The longest stretch the timeline shows, and keeps (- zooms out to it).
pub const MAX_WINDOW_NS: u64 = 60_000_000_000;
/// How long an exited thread stays in the table unless `x` shows them all.
pub const EXITED_SHOWN_NS: u64 = 5_000_000_000;
/// The most load connections `]` turns up to.
pub const MAX_LOAD_CONNECTIONS: usize = 256;
/// Lines of the traced program's output the output pane keeps.
pub const OUTPUT_LINES: usize = 500;
/// Characters of one output line kept (a line is cut there).
pub const OUTPUT_LINE_CHARS: usize = 400;

/// What the lower left pane shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LowerPane {
    /// The recent events, strace-style.
    #[default]
    Events,
    /// Waits, wakes and herds per futex word.
    Futex,
    /// The traced program's standard output and error.
    Output,
}

/// A syscall entered and not yet returned: number, entry time,
/// arguments, and the data read at entry with whether it was captured.
type PendingCall = (u32, u64, [u64; 6], Vec<u8>, DataCapture);

/// One row of the thread table: who the thread is and what it does.
#[derive(Debug, Clone)]
pub struct ThreadRow {
    /// The process.
    pub pid: i32,
    /// Its name (`comm`), once known.
    pub name: String,
    /// Its CPU use over the last second, in % of one core, once measured.
    pub cpu: Option<f64>,
    /// Traced syscalls it completed.
    pub syscalls: u64,
    /// Its state now and in the past minute.
    pub history: StateHistory,
    /// The syscall it is in: number, entry time, arguments, entry data
    /// (kept for the events pane's line when it returns).
    pending: Option<PendingCall>,
    /// Whether an event of its own arrived (a thread names itself early,
    /// so by then its name is worth reading).
    seen: bool,
    /// Whether its current state was seen by a look at /proc rather than
    /// proven by the trace (a call outside the selection, say).
    pub sampled: bool,
}

impl ThreadRow {
    fn new(pid: i32, at_ns: u64) -> ThreadRow {
        ThreadRow {
            pid,
            name: String::new(),
            cpu: None,
            syscalls: 0,
            history: StateHistory::new(ThreadState::Running, at_ns),
            pending: None,
            seen: false,
            sampled: false,
        }
    }
}

/// Exited threads of one name pattern this many or more share a row: a
/// pool's few workers keep a row each when the server ends.
const GROUPED_FROM: usize = 10;

/// A row of the thread table.
#[derive(Debug)]
pub enum TableRow<'a> {
    /// One thread.
    Thread(i32, &'a ThreadRow),
    /// Threads that exited, taken together.
    Exited(ExitedGroup),
}

/// How the thread table is ordered; `s` moves to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// By thread id, exited threads grouped in place of their first.
    #[default]
    Tid,
    /// Busiest state first: running, waiting for a CPU, in I/O, … exited.
    State,
    /// Most CPU first.
    Cpu,
    /// Most traced syscalls first.
    Syscalls,
    /// Most requests served first.
    Served,
    /// By name.
    Name,
}

impl SortKey {
    const ORDER: [SortKey; 6] = [
        SortKey::Tid,
        SortKey::State,
        SortKey::Cpu,
        SortKey::Syscalls,
        SortKey::Served,
        SortKey::Name,
    ];

    /// The key after this one, round to the first.
    pub fn next(self) -> SortKey {
        let at = Self::ORDER.iter().position(|k| *k == self).unwrap_or(0);
        Self::ORDER[(at + 1) % Self::ORDER.len()]
    }

    /// Its name, as the table's title shows it.
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Tid => "tid",
            SortKey::State => "state",
            SortKey::Cpu => "cpu",
            SortKey::Syscalls => "syscalls",
            SortKey::Served => "served",
            SortKey::Name => "name",
        }
    }
}

/// Where a state ranks when the table is sorted by state: doing something
/// first, gone last.
fn state_rank(state: ThreadState) -> u8 {
    match state {
        ThreadState::Running => 0,
        ThreadState::Runnable => 1,
        ThreadState::Io => 2,
        ThreadState::Syscall(_) => 3,
        ThreadState::Accept => 4,
        ThreadState::EventWait => 5,
        ThreadState::FutexWait(_) => 6,
        ThreadState::Sleep => 7,
        ThreadState::Blocked => 8,
        ThreadState::Exited => 9,
    }
}

/// Exited threads of one name pattern and role, taken together.
#[derive(Debug, Default, Clone)]
pub struct ExitedGroup {
    /// The name with its digits replaced by `*` (`conn-*`; `*` alone for
    /// threads without a name).
    pub pattern: String,
    /// Their role.
    pub role: &'static str,
    /// How many.
    pub count: usize,
    /// Their traced syscalls.
    pub syscalls: u64,
    /// Requests they served.
    pub served: u64,
    /// How long each lived, shortest first.
    pub lived_ns: Vec<u64>,
}

impl ExitedGroup {
    /// The lifetime at quantile `q` (0 to 1).
    pub fn lived_at(&self, q: f64) -> u64 {
        let last = self.lived_ns.len().saturating_sub(1);
        self.lived_ns
            .get(((last as f64) * q).round() as usize)
            .copied()
            .unwrap_or(0)
    }
}

/// One line of the events pane, kept raw: it is formatted only when drawn,
/// so ingesting an event costs no formatting.
#[derive(Debug, Clone)]
pub struct RecentEvent {
    /// When it happened (trace clock, ns).
    pub time_ns: u64,
    /// The thread.
    pub tid: i32,
    /// What happened.
    pub what: Recent,
}

/// What a [`RecentEvent`] shows.
#[derive(Debug, Clone)]
pub enum Recent {
    /// A completed syscall, with what its entry and exit carried.
    Call {
        /// The syscall.
        nr: u32,
        /// Its arguments and the data read at entry (and whether it was
        /// captured), if the entry was seen.
        entry: Option<([u64; 6], Vec<u8>, DataCapture)>,
        /// When it was entered, if seen.
        entry_ns: Option<u64>,
        /// Its return value.
        ret: i64,
        /// The data read at exit.
        exit_data: Vec<u8>,
        /// Whether the exit's data was captured.
        exit_capture: DataCapture,
    },
    /// Anything else: a thread started or exited, a signal, an exec.
    Other(EventKind),
}

impl RecentEvent {
    /// The strace-style line: `+1.234567 [tid] accept4(3, …) = 5 <0.000120>`,
    /// its time counted from `origin_ns`.
    pub fn line(&self, origin_ns: u64) -> String {
        let at = self.time_ns.saturating_sub(origin_ns) as f64 / 1e9;
        let text = match &self.what {
            Recent::Call {
                nr,
                entry,
                entry_ns,
                ret,
                exit_data,
                exit_capture,
            } => {
                let name = syscall_name(*nr);
                let result = return_value(*nr, *ret);
                let took = entry_ns
                    .map(|e| format!(" <{:.6}>", self.time_ns.saturating_sub(e) as f64 / 1e9))
                    .unwrap_or_default();
                match entry {
                    Some((args, entry_data, entry_capture)) => {
                        // Arguments filled in by the kernel continue
                        // those known at entry.
                        let shown = entry_args_of(*nr, args, entry_data, *entry_capture)
                            + &exit_args_of(*nr, args, *ret, exit_data, *exit_capture);
                        format!("{name}({shown}) = {result}{took}")
                    }
                    None => format!("<... {name} resumed>) = {result}"),
                }
            }
            Recent::Other(EventKind::Exited { status }) => match status {
                ExitStatus::Code(code) => format!("+++ exited with {code} +++"),
                ExitStatus::Unknown => "+++ exited (status not captured) +++".to_owned(),
                ExitStatus::Signal(signal) => {
                    format!("+++ killed by {} +++", signal_name(*signal))
                }
            },
            Recent::Other(EventKind::Spawned { child_tid, .. }) => {
                format!("started {child_tid}")
            }
            Recent::Other(EventKind::Signal { signal, .. }) => {
                format!("--- {} ---", signal_name(*signal))
            }
            Recent::Other(EventKind::GroupStop { signal }) => {
                format!("--- stopped by {} ---", signal_name(*signal))
            }
            Recent::Other(EventKind::Exec { .. }) => "+++ exec +++".to_owned(),
            Recent::Other(_) => String::new(),
        };
        format!("{at:>9.6} [{}] {text}", self.tid)
    }
}

/// What can happen to the dashboard.
#[derive(Debug, Clone)]
pub enum Action {
    /// The tracer saw this.
    Trace(Event),
    /// The thread `tid` is called `name` (read from /proc by the source).
    Named {
        /// The thread.
        tid: i32,
        /// Its name.
        name: String,
    },
    /// Thread `tid` used this much CPU lately (% of one core, from /proc).
    Cpu {
        /// The thread.
        tid: i32,
        /// Percent of one core.
        percent: f64,
    },
    /// The load generator measured another interval.
    Load(Snapshot),
    /// The tracer's live feed dropped this many events so far.
    Dropped(u64),
    /// Quit the dashboard.
    Quit,
    /// Show a shorter stretch of the timeline.
    ZoomIn,
    /// Show a longer stretch of the timeline.
    ZoomOut,
    /// Freeze or unfreeze the view (data keeps arriving).
    TogglePause,
    /// Show or hide the help overlay.
    ToggleHelp,
    /// Hide the help overlay if shown.
    HideHelp,
    /// Export the latency histogram (the source writes the file).
    Export,
    /// A line for the header's status (what an export wrote, say).
    Status(String),
    /// Select the next thread in the table.
    SelectNext,
    /// Select the previous thread in the table.
    SelectPrevious,
    /// Show only the selected thread's events, or every thread's again.
    ToggleFilter,
    /// One step more load concurrency (the source applies it).
    MoreLoad,
    /// One step less load concurrency (the source applies it).
    LessLoad,
    /// Restart with the next server mode (the source does it).
    NextMode,
    /// Show the futex words instead of the recent events, or back.
    ToggleFutexPane,
    /// Show the traced program's output instead of the recent events, or
    /// back.
    ToggleOutputPane,
    /// The traced program wrote this line (standard output or error).
    Output(String),
    /// Time passed: the trace clock (CLOCK_MONOTONIC) reads this now, even
    /// if no event came (a live source sends it every frame, so an idle
    /// program's states keep aging and its timeline keeps moving).
    Tick(u64),
    /// Show every thread that exited in the last minute, or only those of
    /// the last few seconds.
    ToggleExited,
    /// Show threads that exited one row per name pattern, or each its own.
    ToggleGroups,
    /// Order the thread table by the next [`SortKey`].
    NextSort,
    /// Start typing a name to show only the threads whose name holds it.
    StartSearch,
    /// A character typed into the search.
    SearchType(char),
    /// The last character of the search taken back.
    SearchBackspace,
    /// Stop typing: keep the search (true, Enter) or drop it (false, Esc).
    EndSearch(bool),
    /// Mark the present: the latency panes then count only the requests
    /// answered between the mark and the present (or the playhead). Again:
    /// forget the mark.
    MarkRange,
}

/// Where a marked range starts: the time, and the histograms as they were
/// then, so the range's own are the difference.
#[derive(Debug, Clone)]
pub struct RangeMark {
    /// Trace time of the mark (ns).
    pub at_ns: u64,
    /// The client's latencies answered by then.
    pub latency: Histogram<u64>,
    /// The server's queue waits attributed by then.
    pub queue_wait: Histogram<u64>,
    /// The server's service times attributed by then.
    pub service: Histogram<u64>,
}

/// What was counted between two states of one growing histogram, in
/// either order (a replay can go back before its mark).
fn between(now: &Histogram<u64>, at_mark: &Histogram<u64>) -> Histogram<u64> {
    let (later, earlier) = if now.len() >= at_mark.len() {
        (now, at_mark)
    } else {
        (at_mark, now)
    };
    let mut range = later.clone();
    // Counts only grow, so the earlier histogram fits in the later.
    let _ = range.subtract(earlier);
    range
}

/// A line of a program's output as a terminal would leave it, safe to draw
/// inside ours: what follows the last carriage return (a progress bar's
/// latest state), colour and cursor sequences removed, tabs expanded to
/// 8-column stops, other control characters dropped, and the line cut at
/// [`OUTPUT_LINE_CHARS`] characters.
pub fn terminal_line(raw: &str) -> String {
    let raw = raw.strip_suffix('\n').unwrap_or(raw);
    let raw = raw.strip_suffix('\r').unwrap_or(raw);
    let raw = raw.rsplit('\r').next().unwrap_or(raw);
    let mut line = String::with_capacity(raw.len().min(OUTPUT_LINE_CHARS));
    let mut width = 0;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if width >= OUTPUT_LINE_CHARS {
            break;
        }
        match c {
            '\u{1b}' => {
                // CSI (ESC [ parameters final) or OSC (ESC ] ... BEL or
                // ESC \): skipped whole; any other escape: ESC and its
                // one following character.
                match chars.next() {
                    Some('[') => {
                        for c in chars.by_ref() {
                            if ('\u{40}'..='\u{7e}').contains(&c) {
                                break;
                            }
                        }
                    }
                    Some(']') => {
                        while let Some(c) = chars.next() {
                            if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some())
                            {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
            '\t' => {
                let spaces = 8 - width % 8;
                line.extend(std::iter::repeat_n(' ', spaces));
                width += spaces;
            }
            c if c.is_control() => {}
            c => {
                line.push(c);
                width += 1;
            }
        }
    }
    line
}

/// What the run produced: the trace's threads, events and analyses, the
/// load's counts and latencies, the program's output. Only data, changed
/// only by the data's actions: pausing freezes a copy of it, and a
/// replay's checkpoints are copies of it.
#[derive(Debug, Clone)]
pub struct RunData {
    /// Threads by tid.
    pub threads: BTreeMap<i32, ThreadRow>,
    /// The newest trace time seen (ns).
    pub now_ns: u64,
    /// Latencies of every request so far.
    pub latency: Histogram<u64>,
    /// Requests answered in each 100 ms interval, oldest first.
    pub throughput: VecDeque<u64>,
    /// Requests answered and failed so far.
    pub completed: u64,
    /// Requests failed so far.
    pub failed: u64,
    /// Requests in flight at the last snapshot.
    pub in_flight: usize,
    /// Seconds of load so far.
    pub elapsed_s: f64,
    /// Events seen by the view, and dropped by the live feed.
    pub events: u64,
    /// See [`Action::Dropped`].
    pub dropped: u64,
    /// Events the kernel lost before the capture could read them (a full
    /// ring buffer of the perf backend), all CPUs.
    pub lost: u64,
    /// Events a second over the last second of trace.
    pub events_per_s: f64,
    /// When the last once-a-second upkeep ran (trace clock), and the
    /// events seen by then.
    tick: (u64, u64),
    /// Recent events, newest last.
    pub recent: VecDeque<RecentEvent>,
    /// Where the trace starts (ns): event times are shown from it.
    pub origin_ns: u64,
    /// Requests followed from accept to close in the trace: who served
    /// each, how long it queued, how long it took.
    pub requests: Attributor,
    /// Waits, wakes and herds per futex word.
    pub futex: FutexStats,
    /// What each thread is for, from what it does.
    pub roles: Roles,
    /// The traced program's last lines of output, newest last, made safe
    /// to draw ([`terminal_line`]).
    pub output: VecDeque<String>,
    /// Threads whose first own event arrived since the source last asked
    /// ([`RunData::take_unnamed`]), for it to look up their names.
    unnamed: Vec<i32>,
}

/// What the user set and the widgets keep from frame to frame, as
/// opposed to what the data made: selection, filter, panes, zoom, range
/// mark, load, help, status, the table's scroll. Never frozen: keys act
/// while the view is paused, and a replay keeps it across seeks.
#[derive(Debug, Clone)]
pub struct ViewState {
    /// How much time the timeline shows.
    pub window_ns: u64,
    /// The selected thread, if any.
    pub selected: Option<i32>,
    /// The help overlay is shown.
    pub help: bool,
    /// The last status message.
    pub status: String,
    /// The load's concurrency (connections, or the most requests in
    /// flight in an open loop); 0 when the view has no live load.
    pub connections: usize,
    /// The events pane shows only the selected thread's events.
    pub filter: bool,
    /// What the lower left pane shows.
    pub lower_pane: LowerPane,
    /// The first row the thread table showed last frame: the table keeps
    /// it from frame to frame and scrolls only when the selection leaves
    /// the view (widget state, the one thing drawing writes).
    pub table_offset: std::cell::Cell<usize>,
    /// The table lists every thread that exited within the last minute
    /// (fork and thread modes make one per request), not only the last
    /// few seconds' ([`EXITED_SHOWN_NS`]).
    pub show_exited: bool,
    /// How the thread table is ordered.
    pub sort: SortKey,
    /// The table shows only threads whose name holds this (any case);
    /// empty: every thread.
    pub search: String,
    /// Keys go into [`ViewState::search`] until Enter or Esc.
    pub search_editing: bool,
    /// Threads that exited get a row each, rather than one row per name
    /// pattern ([`RunData::table_rows`]).
    pub each_exited: bool,
    /// Where a range starts ([`Action::MarkRange`]).
    pub range_mark: Option<RangeMark>,
}

/// Everything the dashboard shows: the run's data, the view's state, and
/// the flags the source reads.
#[derive(Debug, Clone)]
pub struct App {
    /// A line saying what runs: server mode, workers, load model.
    pub title: String,
    /// What the capture said at its start it will not see (the header
    /// shows them; they are printed again at the end).
    pub caveats: Vec<String>,
    /// What the run produced (live, even while the view is paused).
    pub data: RunData,
    /// What the user set and the widgets keep.
    pub view_state: ViewState,
    /// The view is frozen: it draws the data as it was when paused.
    pub paused: bool,
    /// The user asked to quit.
    pub quit: bool,
    /// The view replays a recording (its keys join the help).
    pub replay: bool,
    /// The user asked to restart with the next server mode.
    pub restart: bool,
    /// Whether the source captures the program's output at all (not for a
    /// program we attached to, nor in a replay).
    pub captures_output: bool,
    /// The data as it was when the view was paused, drawn while paused.
    frozen: Option<Box<RunData>>,
}

impl Default for RunData {
    fn default() -> RunData {
        RunData {
            threads: BTreeMap::new(),
            now_ns: 0,
            latency: latency_histogram(),
            throughput: VecDeque::with_capacity(THROUGHPUT_HISTORY),
            completed: 0,
            failed: 0,
            in_flight: 0,
            elapsed_s: 0.0,
            events: 0,
            dropped: 0,
            lost: 0,
            events_per_s: 0.0,
            tick: (0, 0),
            recent: VecDeque::with_capacity(RECENT_EVENTS),
            origin_ns: 0,
            requests: Attributor::new(),
            futex: FutexStats::new(),
            roles: Roles::new(),
            output: VecDeque::new(),
            unnamed: Vec::new(),
        }
    }
}

impl Default for ViewState {
    fn default() -> ViewState {
        ViewState {
            window_ns: 5_000_000_000,
            selected: None,
            help: false,
            status: String::new(),
            connections: 0,
            filter: false,
            lower_pane: LowerPane::Events,
            table_offset: std::cell::Cell::new(0),
            show_exited: false,
            sort: SortKey::Tid,
            search: String::new(),
            search_editing: false,
            each_exited: false,
            range_mark: None,
        }
    }
}

impl App {
    /// An empty dashboard titled `title`.
    pub fn new(title: impl Into<String>) -> App {
        App {
            title: title.into(),
            caveats: Vec::new(),
            data: RunData::default(),
            view_state: ViewState::default(),
            paused: false,
            quit: false,
            replay: false,
            restart: false,
            captures_output: false,
            frozen: None,
        }
    }

    /// The data to draw: as it was when paused, while paused; the live
    /// data otherwise.
    pub fn shown_data(&self) -> &RunData {
        self.frozen.as_deref().unwrap_or(&self.data)
    }

    /// Applies one action: the data's to the data (also while paused), the
    /// view's to the view's state.
    pub fn update(&mut self, action: Action) {
        match action {
            Action::Trace(_)
            | Action::Named { .. }
            | Action::Cpu { .. }
            | Action::Load(_)
            | Action::Dropped(_)
            | Action::Output(_)
            | Action::Tick(_) => self.data.update(action),
            Action::Quit => self.quit = true,
            Action::TogglePause => {
                self.paused = !self.paused;
                self.frozen = self.paused.then(|| Box::new(self.data.clone()));
            }
            // The source acts on it; the model only shows the outcome.
            Action::Export => {}
            Action::NextMode => self.restart = !self.replay,
            Action::SelectNext => self.select(1),
            Action::SelectPrevious => self.select(-1),
            Action::MarkRange => self.mark_range(),
            Action::ZoomIn
            | Action::ZoomOut
            | Action::ToggleHelp
            | Action::HideHelp
            | Action::Status(_)
            | Action::ToggleFilter
            | Action::MoreLoad
            | Action::LessLoad
            | Action::ToggleFutexPane
            | Action::ToggleOutputPane
            | Action::ToggleExited
            | Action::ToggleGroups
            | Action::NextSort
            | Action::StartSearch
            | Action::SearchType(_)
            | Action::SearchBackspace
            | Action::EndSearch(_) => self.view_state.update(action),
        }
    }

    /// Marks the present (the live data's), or forgets the mark.
    fn mark_range(&mut self) {
        self.view_state.range_mark = match self.view_state.range_mark.take() {
            Some(_) => None,
            None => Some(RangeMark {
                at_ns: self.data.now_ns,
                latency: self.data.latency.clone(),
                queue_wait: self.data.requests.stats().queue_wait().clone(),
                service: self.data.requests.stats().service().clone(),
            }),
        };
    }

    /// Whether the events pane shows only this thread's events.
    pub fn shows_events_of(&self, tid: i32) -> bool {
        !self.view_state.filter || self.view_state.selected.is_none_or(|s| s == tid)
    }

    /// The threads the table lists of the live data (see
    /// [`RunData::listed_threads`]).
    pub fn listed_threads(&self) -> impl Iterator<Item = (&i32, &ThreadRow)> {
        self.data.listed_threads(self.view_state.show_exited)
    }

    fn select(&mut self, step: isize) {
        let tids: Vec<i32> = self
            .shown_data()
            .sorted_table_rows(&self.view_state)
            .iter()
            .filter_map(|row| match row {
                TableRow::Thread(tid, _) => Some(*tid),
                TableRow::Exited(_) => None,
            })
            .collect();
        if tids.is_empty() {
            return;
        }
        let position = self
            .view_state
            .selected
            .and_then(|s| tids.iter().position(|&t| t == s));
        let next = match position {
            None if step > 0 => 0,
            None => tids.len() - 1,
            Some(p) => (p as isize + step).rem_euclid(tids.len() as isize) as usize,
        };
        self.view_state.selected = Some(tids[next]);
    }

    /// The latencies of the live data the view shows (see
    /// [`RunData::shown_latency`]).
    pub fn shown_latency(&self) -> Cow<'_, Histogram<u64>> {
        self.data.shown_latency(self.view_state.range_mark.as_ref())
    }

    /// The server's times of the live data the view shows (see
    /// [`RunData::shown_server_times`]).
    pub fn shown_server_times(&self) -> (Cow<'_, Histogram<u64>>, Cow<'_, Histogram<u64>>) {
        self.data
            .shown_server_times(self.view_state.range_mark.as_ref())
    }
}

impl ViewState {
    /// Applies one of the view's actions (others are [`App::update`]'s).
    fn update(&mut self, action: Action) {
        match action {
            Action::ZoomIn => self.window_ns = (self.window_ns / 2).max(MIN_WINDOW_NS),
            Action::ZoomOut => self.window_ns = (self.window_ns * 2).min(MAX_WINDOW_NS),
            Action::ToggleHelp => self.help = !self.help,
            Action::HideHelp => self.help = false,
            Action::Status(text) => self.status = text,
            Action::ToggleFilter => self.filter = !self.filter && self.selected.is_some(),
            Action::MoreLoad if self.connections > 0 => {
                self.connections =
                    (self.connections + load_step(self.connections)).min(MAX_LOAD_CONNECTIONS);
            }
            Action::LessLoad if self.connections > 0 => {
                let step = load_step(self.connections.saturating_sub(1));
                self.connections = self.connections.saturating_sub(step).max(1);
            }
            Action::ToggleFutexPane => self.toggle_lower_pane(LowerPane::Futex),
            Action::ToggleOutputPane => self.toggle_lower_pane(LowerPane::Output),
            Action::ToggleExited => self.show_exited = !self.show_exited,
            Action::ToggleGroups => self.each_exited = !self.each_exited,
            Action::NextSort => self.sort = self.sort.next(),
            Action::StartSearch => {
                self.search.clear();
                self.search_editing = true;
            }
            // A name is short (15 bytes in the kernel); so is a search.
            Action::SearchType(c) if !c.is_control() && self.search.chars().count() < 32 => {
                self.search.push(c);
            }
            Action::SearchBackspace => {
                self.search.pop();
            }
            Action::EndSearch(keep) => {
                self.search_editing = false;
                if !keep {
                    self.search.clear();
                }
            }
            // MoreLoad and LessLoad without a load; the rest are not the
            // view's.
            _ => {}
        }
    }

    /// Shows `pane` in the lower left, or the events if it shows already.
    fn toggle_lower_pane(&mut self, pane: LowerPane) {
        self.lower_pane = if self.lower_pane == pane {
            LowerPane::Events
        } else {
            pane
        };
    }
}

impl RunData {
    /// Applies one of the data's actions (others are [`App::update`]'s).
    fn update(&mut self, action: Action) {
        match action {
            Action::Trace(event) => self.apply_event(event),
            Action::Named { tid, name } => {
                if let Some(row) = self.threads.get_mut(&tid) {
                    // The program names its threads: never let a name
                    // carry terminal escapes to a screen or a summary.
                    row.name = terminal_line(&name);
                }
            }
            Action::Load(snapshot) => self.apply_load(&snapshot),
            Action::Dropped(n) => self.dropped = n,
            Action::Cpu { tid, percent } => {
                if let Some(row) = self.threads.get_mut(&tid) {
                    row.cpu = Some(percent);
                }
            }
            Action::Output(line) => {
                if self.output.len() == OUTPUT_LINES {
                    self.output.pop_front();
                }
                self.output.push_back(terminal_line(&line));
            }
            Action::Tick(now_ns) if self.origin_ns != 0 && now_ns > self.now_ns => {
                self.upkeep(now_ns);
                self.now_ns = now_ns;
            }
            // A tick before the trace starts or that goes back, and the
            // actions that are not the data's.
            _ => {}
        }
    }

    /// Counts the load generator's interval (warm-up ones are not).
    fn apply_load(&mut self, snapshot: &Snapshot) {
        if snapshot.warmup {
            return;
        }
        let _ = self.latency.add(&snapshot.latency);
        let answered = snapshot.completed();
        self.completed += answered;
        self.failed += snapshot.failed();
        self.in_flight = snapshot.in_flight;
        self.elapsed_s = (snapshot.start + snapshot.duration).as_secs_f64();
        if self.throughput.len() == THROUGHPUT_HISTORY {
            self.throughput.pop_front();
        }
        self.throughput.push_back(answered);
    }

    fn apply_event(&mut self, event: Event) {
        self.events += 1;
        if let EventKind::Lost { count, .. } = event.kind {
            // A gap in the trace, not a thread's doing.
            self.lost += count;
            return;
        }
        let roles = &mut self.roles;
        self.requests.feed(&event, |request| roles.request(request));
        self.roles.feed(&event);
        self.futex.feed(&event);
        let at = event.time_ns;
        self.upkeep(at);
        self.now_ns = self.now_ns.max(at);
        if self.origin_ns == 0 {
            self.origin_ns = at;
        }
        let row = self
            .threads
            .entry(event.tid)
            .or_insert_with(|| ThreadRow::new(event.pid, at));
        if !row.seen {
            row.seen = true;
            self.unnamed.push(event.tid);
        }
        match observed_state(&event.kind, row.history.current()) {
            // A state seen, not a call: the timeline shows it.
            Observed::Enter(state) => {
                row.sampled = matches!(event.kind, EventKind::Sampled { .. });
                return row.history.enter(state, at);
            }
            Observed::Keep => return,
            Observed::NotAState => {}
        }
        row.sampled = false;
        let what = match event.kind {
            EventKind::SyscallEntry {
                nr,
                args,
                data,
                data_capture,
            } => {
                row.history.enter(ThreadState::of_syscall(nr, &args), at);
                row.pending = Some((nr, at, args, data, data_capture));
                return;
            }
            EventKind::SyscallExit {
                nr,
                ret,
                data,
                data_capture,
            } => {
                row.syscalls += 1;
                row.history.enter(ThreadState::Running, at);
                let entry = row.pending.take().filter(|(entered, ..)| *entered == nr);
                Recent::Call {
                    nr,
                    entry_ns: entry.as_ref().map(|(_, at, ..)| *at),
                    entry: entry.map(|(_, _, args, data, capture)| (args, data, capture)),
                    ret,
                    exit_data: data,
                    exit_capture: data_capture,
                }
            }
            EventKind::Exited { .. } => {
                row.history.enter(ThreadState::Exited, at);
                row.pending = None;
                Recent::Other(event.kind)
            }
            EventKind::Spawned {
                child_tid,
                child_pid,
                creation,
            } => {
                self.threads
                    .entry(child_tid)
                    .or_insert_with(|| ThreadRow::new(child_pid, at));
                Recent::Other(EventKind::Spawned {
                    child_tid,
                    child_pid,
                    creation,
                })
            }
            EventKind::Exec { former_tid } => {
                if former_tid != event.tid
                    && let Some(former) = self.threads.get_mut(&former_tid)
                {
                    // The exec'ing thread took over the leader's tid.
                    former.history.enter(ThreadState::Exited, at);
                }
                Recent::Other(EventKind::Exec { former_tid })
            }
            other => Recent::Other(other),
        };
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(RecentEvent {
            time_ns: at,
            tid: event.tid,
            what,
        });
    }

    /// Once a second of trace time (`at`): the event rate, and forget
    /// threads gone for longer than the timeline shows (fork mode makes one
    /// per request).
    fn upkeep(&mut self, at: u64) {
        if at < self.tick.0 + 1_000_000_000 {
            return;
        }
        let (tick_ns, tick_events) = self.tick;
        if tick_ns > 0 {
            self.events_per_s = (self.events - tick_events) as f64 / ((at - tick_ns) as f64 / 1e9);
        }
        self.tick = (at, self.events);
        let horizon = at.saturating_sub(MAX_WINDOW_NS);
        let requests = &mut self.requests;
        let roles = &mut self.roles;
        self.threads.retain(|tid, row| {
            let keep =
                row.history.current() != ThreadState::Exited || row.history.since_ns() >= horizon;
            if !keep {
                requests.stats_mut().forget_worker(*tid);
                roles.forget(*tid);
            }
            keep
        });
    }

    /// The threads that showed up since the last call: the source names
    /// them (from /proc, or from a recording) with [`Action::Named`].
    pub fn take_unnamed(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.unnamed)
    }

    /// The threads the table lists, in tid order: all but those that
    /// exited more than [`EXITED_SHOWN_NS`] ago, unless `show_exited`.
    pub fn listed_threads(&self, show_exited: bool) -> impl Iterator<Item = (&i32, &ThreadRow)> {
        let horizon = self.now_ns.saturating_sub(EXITED_SHOWN_NS);
        self.threads.iter().filter(move |(_, row)| {
            show_exited
                || row.history.current() != ThreadState::Exited
                || row.history.since_ns() >= horizon
        })
    }

    /// The thread table's rows: every listed thread, but those that
    /// exited taken together by name pattern and role (a thread-per-request
    /// server leaves hundreds of `conn-N`), unless `each_exited`. A group
    /// takes the place of its first member.
    pub fn table_rows(&self, show_exited: bool, each_exited: bool) -> Vec<TableRow<'_>> {
        let mut groups: HashMap<(String, &'static str), ExitedGroup> = HashMap::new();
        let listed: Vec<(i32, &ThreadRow)> = self
            .listed_threads(show_exited)
            .map(|(tid, row)| (*tid, row))
            .collect();
        let key = |tid: i32, row: &ThreadRow| {
            (
                row.name
                    .trim_end_matches(|c: char| c.is_ascii_digit())
                    .to_owned(),
                self.role_of(tid),
            )
        };
        for &(tid, row) in &listed {
            if row.history.current() != ThreadState::Exited || each_exited {
                continue;
            }
            let group = groups.entry(key(tid, row)).or_default();
            group.count += 1;
            group.syscalls += row.syscalls;
            group.served += self.served_by(tid);
            group
                .lived_ns
                .push(row.history.since_ns().saturating_sub(row.history.born_ns()));
        }
        groups.retain(|_, g| g.count >= GROUPED_FROM);
        let mut rows = Vec::new();
        for (tid, row) in listed {
            let exited = row.history.current() == ThreadState::Exited;
            match exited.then(|| key(tid, row)) {
                Some(key) if groups.contains_key(&key) => {
                    if let Some(mut group) = groups.remove(&key) {
                        group.pattern = format!("{}*", key.0);
                        group.role = key.1;
                        group.lived_ns.sort_unstable();
                        rows.push(TableRow::Exited(group));
                    }
                }
                _ => rows.push(TableRow::Thread(tid, row)),
            }
        }
        rows
    }

    /// The thread table's rows as the view orders them ([`SortKey`]);
    /// ties, and the default, keep [`RunData::table_rows`]' order.
    pub fn sorted_table_rows(&self, view: &ViewState) -> Vec<TableRow<'_>> {
        let mut rows = self.table_rows(view.show_exited, view.each_exited);
        let tid = |row: &TableRow| match row {
            TableRow::Thread(tid, _) => Some(*tid),
            TableRow::Exited(_) => None,
        };
        let state = |row: &TableRow| match row {
            TableRow::Thread(_, r) => state_rank(r.history.current()),
            TableRow::Exited(_) => state_rank(ThreadState::Exited),
        };
        let cpu = |row: &TableRow| match row {
            TableRow::Thread(_, r) => r.cpu.unwrap_or(0.0),
            TableRow::Exited(_) => 0.0,
        };
        let syscalls = |row: &TableRow| match row {
            TableRow::Thread(_, r) => r.syscalls,
            TableRow::Exited(g) => g.syscalls,
        };
        let served = |row: &TableRow| match row {
            TableRow::Thread(tid, _) => self.served_by(*tid),
            TableRow::Exited(g) => g.served,
        };
        let name = |row: &TableRow| match row {
            TableRow::Thread(_, r) => r.name.clone(),
            TableRow::Exited(g) => g.pattern.clone(),
        };
        if !view.search.is_empty() {
            let wanted = view.search.to_lowercase();
            rows.retain(|r| name(r).to_lowercase().contains(&wanted));
        }
        match view.sort {
            SortKey::Tid => {}
            SortKey::State => rows.sort_by_key(|r| state(r)),
            SortKey::Cpu => rows.sort_by(|a, b| cpu(b).total_cmp(&cpu(a))),
            SortKey::Syscalls => rows.sort_by_key(|r| std::cmp::Reverse(syscalls(r))),
            SortKey::Served => rows.sort_by_key(|r| std::cmp::Reverse(served(r))),
            SortKey::Name => rows.sort_by_key(|r| (name(r), tid(r))),
        }
        rows
    }

    /// The latencies the view shows: all answered so far, or those between
    /// the range mark and now (either way round: a replay can go back
    /// before its mark).
    pub fn shown_latency(&self, mark: Option<&RangeMark>) -> Cow<'_, Histogram<u64>> {
        match mark {
            Some(mark) => Cow::Owned(between(&self.latency, &mark.latency)),
            None => Cow::Borrowed(&self.latency),
        }
    }

    /// The server's side the view shows, as attributed from the trace:
    /// queue waits and service times of every request so far, or of those
    /// closed between the range mark and now.
    pub fn shown_server_times(
        &self,
        mark: Option<&RangeMark>,
    ) -> (Cow<'_, Histogram<u64>>, Cow<'_, Histogram<u64>>) {
        let stats = self.requests.stats();
        match mark {
            Some(mark) => (
                Cow::Owned(between(stats.queue_wait(), &mark.queue_wait)),
                Cow::Owned(between(stats.service(), &mark.service)),
            ),
            None => (
                Cow::Borrowed(stats.queue_wait()),
                Cow::Borrowed(stats.service()),
            ),
        }
    }

    /// What thread `tid` is doing.
    pub fn state_of(&self, tid: i32) -> ThreadState {
        self.threads
            .get(&tid)
            .map_or(ThreadState::Running, |t| t.history.current())
    }

    /// Since when thread `tid` has been in its state (trace clock, ns).
    pub fn since_of(&self, tid: i32) -> u64 {
        self.threads
            .get(&tid)
            .map_or(self.now_ns, |t| t.history.since_ns())
    }

    /// Requests thread `tid` served (as attributed from the trace).
    pub fn served_by(&self, tid: i32) -> u64 {
        self.requests.stats().served_by(tid)
    }

    /// What thread `tid` is for, from what it does ([`Roles`]).
    pub fn role_of(&self, tid: i32) -> &'static str {
        self.roles.role(tid).label()
    }

    /// Traced syscalls thread `tid` completed.
    pub fn syscalls_of(&self, tid: i32) -> u64 {
        self.threads.get(&tid).map_or(0, |t| t.syscalls)
    }

    /// Requests per second over the last second of snapshots.
    pub fn recent_rate(&self) -> f64 {
        let last: u64 = self.throughput.iter().rev().take(10).sum();
        let samples = self.throughput.len().clamp(1, 10);
        last as f64 / (samples as f64 * 0.1)
    }
}

/// How far `[` and `]` move the load's concurrency from `connections`:
/// by one up to 10, by 5 up to 50, by 10 beyond.
fn load_step(connections: usize) -> usize {
    match connections {
        0..10 => 1,
        10..50 => 5,
        _ => 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tracebench_trace::Creation;
    use tracebench_trace::DataCapture;

    fn event(time_ns: u64, tid: i32, kind: EventKind) -> Action {
        Action::Trace(Event {
            time_ns,
            pid: 100,
            tid,
            kind,
        })
    }

    #[test]
    fn threads_follow_their_syscalls() {
        let futex = syscalls::Sysno::futex.id() as u32;
        let wait = [0x10, libc_futex_wait(), 0, 0, 0, 0];
        let mut app = App::new("test");
        app.update(event(
            1,
            100,
            EventKind::Spawned {
                child_tid: 101,
                child_pid: 100,
                creation: Creation::Thread,
            },
        ));
        app.update(event(
            2,
            101,
            EventKind::SyscallEntry {
                nr: futex,
                args: wait,
                data: vec![],
                data_capture: DataCapture::Captured,
            },
        ));
        app.update(Action::Named {
            tid: 101,
            name: "worker-0".into(),
        });
        assert_eq!(app.data.state_of(101), ThreadState::FutexWait(0x10));
        assert_eq!(app.data.role_of(101), "idle", "it has served nothing yet");
        app.update(Action::Cpu {
            tid: 101,
            percent: 12.5,
        });
        assert_eq!(app.data.threads[&101].cpu, Some(12.5));
        app.update(event(
            9,
            101,
            EventKind::SyscallExit {
                nr: futex,
                ret: 0,
                data: vec![],
                data_capture: DataCapture::Captured,
            },
        ));
        assert_eq!(app.data.state_of(101), ThreadState::Running);
        assert_eq!(app.data.since_of(101), 9);
        assert_eq!(
            app.data.recent.back().unwrap().line(1),
            " 0.000000 [101] futex(0x10, FUTEX_WAIT_PRIVATE, 0, NULL) = 0 <0.000000>"
        );
    }

    #[test]
    fn s_sorts_the_table_and_the_selection_follows_the_order() {
        // Issue 15: no sort. Three threads: 103 made the most syscalls, 102
        // used the most CPU, 101 is named first.
        let getpid = syscalls::Sysno::getpid.id() as u32;
        let mut app = App::new("test");
        for (tid, calls, cpu, name) in [
            (101, 1, 1.0, "alpha"),
            (102, 2, 50.0, "beta"),
            (103, 3, 5.0, "gamma"),
        ] {
            for i in 0..calls {
                let at = u64::from(i as u32) * 10 + tid as u64;
                let args = [0; 6];
                let entry = EventKind::SyscallEntry {
                    nr: getpid,
                    args,
                    data: vec![],
                    data_capture: DataCapture::Captured,
                };
                app.update(event(at, tid, entry));
                let exit = EventKind::SyscallExit {
                    nr: getpid,
                    ret: 0,
                    data: vec![],
                    data_capture: DataCapture::Captured,
                };
                app.update(event(at + 1, tid, exit));
            }
            app.update(Action::Cpu { tid, percent: cpu });
            app.update(Action::Named {
                tid,
                name: name.into(),
            });
        }
        let order = |app: &App| -> Vec<i32> {
            app.data
                .sorted_table_rows(&app.view_state)
                .iter()
                .filter_map(|r| match r {
                    TableRow::Thread(tid, _) => Some(*tid),
                    TableRow::Exited(_) => None,
                })
                .collect()
        };
        assert_eq!(order(&app), [101, 102, 103], "by tid at first");
        let mut seen = Vec::new();
        for _ in 0..6 {
            app.update(Action::NextSort);
            seen.push((app.view_state.sort, order(&app)));
        }
        assert_eq!(seen[1], (SortKey::Cpu, vec![102, 103, 101]));
        assert_eq!(seen[2], (SortKey::Syscalls, vec![103, 102, 101]));
        assert_eq!(seen[4], (SortKey::Name, vec![101, 102, 103]));
        assert_eq!(seen[5].0, SortKey::Tid, "round to the first");
        // Down moves through the rows as they are shown.
        app.update(Action::NextSort);
        app.update(Action::NextSort);
        app.update(Action::SelectNext);
        assert_eq!(app.view_state.selected, Some(102), "most CPU first");
        app.update(Action::SelectNext);
        assert_eq!(app.view_state.selected, Some(103));
        // / then a name: only the threads whose name holds it, any case.
        app.update(Action::StartSearch);
        for c in ['E', 't', '\u{1b}'] {
            app.update(Action::SearchType(c));
        }
        assert_eq!(
            app.view_state.search, "Et",
            "a control character is not text"
        );
        assert_eq!(order(&app), [102], "beta holds et");
        app.update(Action::SearchBackspace);
        app.update(Action::SearchType('A'));
        assert!(order(&app).is_empty(), "nobody is called *ea*");
        app.update(Action::SearchBackspace);
        app.update(Action::SearchBackspace);
        app.update(Action::SearchType('m'));
        app.update(Action::EndSearch(true));
        assert_eq!(order(&app), [103], "Enter keeps *m*: gamma");
        assert!(!app.view_state.search_editing);
        app.update(Action::StartSearch);
        app.update(Action::EndSearch(false));
        assert_eq!(order(&app).len(), 3, "Esc drops the search");
    }

    fn libc_futex_wait() -> u64 {
        128 // FUTEX_WAIT | FUTEX_PRIVATE_FLAG
    }

    #[test]
    fn pause_freezes_the_view_while_data_keeps_arriving() {
        let mut app = App::new("test");
        let mut snapshot = tracebench_loadgen_snapshot(5);
        app.update(Action::Load(snapshot.clone()));
        app.update(Action::TogglePause);
        snapshot.index = 1;
        app.update(Action::Load(snapshot));
        assert_eq!(app.data.completed, 10, "the model keeps counting");
        assert_eq!(app.shown_data().completed, 5, "the view stays frozen");
        app.update(Action::TogglePause);
        assert_eq!(app.shown_data().completed, 10);
    }

    #[test]
    fn a_marked_range_and_a_pause_never_copy_the_data_per_event() {
        // Issue 16: with a range marked and the view paused, every event
        // once made a new copy of the data; the dashboard fell behind and
        // dropped events. The paused copy is made once, at the pause.
        let mut app = App::new("test");
        app.update(Action::Load(tracebench_loadgen_snapshot(5)));
        app.update(Action::MarkRange);
        app.update(Action::TogglePause);
        let frozen: *const RunData = app.shown_data();
        for i in 0..10_000u64 {
            app.update(Action::Trace(Event {
                time_ns: 1_000 + i,
                pid: 1,
                tid: 1,
                kind: EventKind::Signal {
                    signal: 10,
                    info: Vec::new(),
                },
            }));
        }
        assert!(std::ptr::eq(frozen, app.shown_data()), "one paused copy");
        assert_eq!(app.shown_data().events, 0, "the view stays as paused");
        assert_eq!(app.data.events, 10_000, "the live data takes every event");
        app.update(Action::TogglePause);
        assert_eq!(app.shown_data().events, 10_000);
    }

    #[test]
    fn exited_threads_of_one_name_share_a_row_until_g() {
        // Issue 16: a thread-per-request server flooded the table.
        let mut app = App::new("test");
        for i in 0..12 {
            let tid = 200 + i;
            app.update(event(
                1_000,
                100,
                EventKind::Spawned {
                    child_tid: tid,
                    child_pid: 100,
                    creation: Creation::Thread,
                },
            ));
            app.update(Action::Named {
                tid,
                name: format!("conn-{i}"),
            });
            app.update(event(
                2_000 + 1_000 * u64::from(i as u32),
                tid,
                EventKind::Exited {
                    status: tracebench_trace::ExitStatus::Code(0),
                },
            ));
        }
        let rows = app
            .data
            .table_rows(app.view_state.show_exited, app.view_state.each_exited);
        let groups: Vec<&ExitedGroup> = rows
            .iter()
            .filter_map(|r| match r {
                TableRow::Exited(g) => Some(g),
                TableRow::Thread(..) => None,
            })
            .collect();
        assert_eq!(groups.len(), 1, "{rows:?}");
        assert_eq!(groups[0].count, 12);
        assert_eq!(groups[0].pattern, "conn-*");
        assert_eq!(groups[0].lived_at(0.0), 1_000);
        assert_eq!(groups[0].lived_at(1.0), 12_000);
        assert!(rows.iter().any(|r| matches!(r, TableRow::Thread(100, _))));
        app.update(Action::ToggleGroups);
        let rows = app
            .data
            .table_rows(app.view_state.show_exited, app.view_state.each_exited);
        assert_eq!(rows.len(), 13, "each its own row");
    }

    #[test]
    fn a_thread_name_carries_no_terminal_escape() {
        // Issue 14: prctl(PR_SET_NAME, "\x1b[2J…") reached the terminal
        // through the plain summaries.
        let mut app = App::new("test");
        app.update(event(
            1,
            7,
            EventKind::Signal {
                signal: 10,
                info: Vec::new(),
            },
        ));
        app.update(Action::Named {
            tid: 7,
            name: "\u{1b}[2Jwipe\u{7}".into(),
        });
        let name = &app.data.threads[&7].name;
        assert!(
            !name.contains('\u{1b}') && !name.contains('\u{7}'),
            "{name:?}"
        );
        assert!(name.contains("wipe"), "{name:?}");
    }

    #[test]
    fn selection_wraps_around() {
        let mut app = App::new("test");
        for tid in [3, 1, 2] {
            app.update(event(
                1,
                tid,
                EventKind::Signal {
                    signal: 10,
                    info: Vec::new(),
                },
            ));
        }
        app.update(Action::SelectNext);
        assert_eq!(app.view_state.selected, Some(1));
        app.update(Action::SelectPrevious);
        assert_eq!(app.view_state.selected, Some(3));
    }

    fn tracebench_loadgen_snapshot(answered: u64) -> Snapshot {
        let mut latency = latency_histogram();
        for _ in 0..answered {
            latency.record(1_000_000).unwrap();
        }
        Snapshot {
            index: 0,
            start: Duration::ZERO,
            duration: Duration::from_millis(100),
            latency,
            statuses: [(200u16, answered)].into_iter().collect(),
            errors: BTreeMap::new(),
            in_flight: 2,
            warmup: false,
        }
    }

    #[test]
    fn threads_gone_for_a_minute_are_forgotten() {
        let mut app = App::new("test");
        app.update(event(
            1,
            7,
            EventKind::Exited {
                status: ExitStatus::Code(0),
            },
        ));
        app.update(event(
            2,
            8,
            EventKind::Signal {
                signal: 10,
                info: Vec::new(),
            },
        ));
        assert_eq!(app.data.threads.len(), 2);
        app.update(event(
            MAX_WINDOW_NS + 10_000_000_000,
            8,
            EventKind::Signal {
                signal: 10,
                info: Vec::new(),
            },
        ));
        assert!(
            !app.data.threads.contains_key(&7),
            "the exited thread is forgotten"
        );
        assert!(
            app.data.threads.contains_key(&8),
            "a live one stays, however quiet"
        );
    }

    #[test]
    fn every_other_action_changes_what_it_says() {
        let mut app = App::new("test");
        app.update(Action::Dropped(7));
        assert_eq!(app.data.dropped, 7);
        app.update(Action::Status("saved".into()));
        assert_eq!(app.view_state.status, "saved");
        app.update(Action::ToggleHelp);
        assert!(app.view_state.help);
        app.update(Action::ToggleHelp);
        assert!(!app.view_state.help);
        let before = app.clone();
        app.update(Action::Export);
        assert_eq!(
            (app.view_state.status.as_str(), app.data.completed),
            (before.view_state.status.as_str(), before.data.completed),
            "export is the source's to do"
        );
        let window = app.view_state.window_ns;
        app.update(Action::ZoomIn);
        assert_eq!(app.view_state.window_ns, window / 2);
        for _ in 0..20 {
            app.update(Action::ZoomIn);
        }
        assert_eq!(app.view_state.window_ns, MIN_WINDOW_NS);
        app.update(Action::Quit);
        assert!(app.quit);
    }

    #[test]
    fn enter_filters_the_events_on_the_selected_thread() {
        let mut app = App::new("test");
        app.update(Action::ToggleFilter);
        assert!(
            !app.view_state.filter,
            "nothing selected: nothing to filter on"
        );
        for tid in [1, 2] {
            app.update(event(
                1,
                tid,
                EventKind::Signal {
                    signal: 10,
                    info: Vec::new(),
                },
            ));
        }
        app.update(Action::SelectNext);
        app.update(Action::ToggleFilter);
        assert!(app.view_state.filter);
        assert!(app.shows_events_of(1) && !app.shows_events_of(2));
        app.update(Action::ToggleFilter);
        assert!(app.shows_events_of(2));
    }

    #[test]
    fn brackets_step_the_load_and_m_asks_for_the_next_mode() {
        let mut app = App::new("test");
        app.update(Action::MoreLoad);
        assert_eq!(
            app.view_state.connections, 0,
            "no live load, nothing to change"
        );
        app.view_state.connections = 9;
        app.update(Action::MoreLoad);
        assert_eq!(app.view_state.connections, 10);
        app.update(Action::MoreLoad);
        assert_eq!(app.view_state.connections, 15);
        app.update(Action::LessLoad);
        assert_eq!(
            app.view_state.connections, 10,
            "the way down retraces the way up"
        );
        app.update(Action::LessLoad);
        assert_eq!(app.view_state.connections, 9);
        app.view_state.connections = 1;
        app.update(Action::LessLoad);
        assert_eq!(app.view_state.connections, 1, "never below one");
        app.view_state.connections = MAX_LOAD_CONNECTIONS;
        app.update(Action::MoreLoad);
        assert_eq!(app.view_state.connections, MAX_LOAD_CONNECTIONS);
        app.update(Action::NextMode);
        assert!(app.restart);
        let mut replay = App::new("replay");
        replay.replay = true;
        replay.update(Action::NextMode);
        assert!(!replay.restart, "a replay has no server to restart");
    }

    #[test]
    fn a_marked_range_counts_only_the_answers_inside_it() {
        let mut app = App::new("test");
        app.update(Action::Load(tracebench_loadgen_snapshot(5)));
        app.update(Action::MarkRange);
        assert_eq!(app.shown_latency().len(), 0, "nothing answered since");
        app.update(Action::Load(tracebench_loadgen_snapshot(3)));
        assert_eq!(app.shown_latency().len(), 3);
        assert_eq!(app.data.latency.len(), 8, "the whole run is still counted");
        // A replay rebuilt to before the mark: the range runs backwards.
        let mut earlier = App::new("test");
        earlier.update(Action::Load(tracebench_loadgen_snapshot(2)));
        earlier.view_state.range_mark = app.view_state.range_mark.clone();
        assert_eq!(earlier.shown_latency().len(), 3, "5 at the mark, 2 now");
        app.update(Action::MarkRange);
        assert_eq!(app.shown_latency().len(), 8);
    }

    /// A sync server's request as the trace shows it: tid 100 accepts fd
    /// at `at`, reads, writes, and closes it `service_ns` later.
    fn served_request(app: &mut App, at: u64, fd: i64, service_ns: u64) {
        use syscalls::Sysno;
        let call = |app: &mut App, t: u64, sysno: Sysno, arg0: u64, ret: i64| {
            let nr = sysno.id() as u32;
            let args = [arg0, 0, 0, 0, 0, 0];
            let data = vec![];
            app.update(event(
                t,
                100,
                EventKind::SyscallEntry {
                    nr,
                    args,
                    data,
                    data_capture: DataCapture::Captured,
                },
            ));
            let data = vec![];
            app.update(event(
                t + 1,
                100,
                EventKind::SyscallExit {
                    nr,
                    ret,
                    data,
                    data_capture: DataCapture::Captured,
                },
            ));
        };
        call(app, at, Sysno::accept4, 3, fd);
        call(app, at + 10, Sysno::recvfrom, fd as u64, 79);
        call(app, at + service_ns / 2, Sysno::sendto, fd as u64, 125);
        call(app, at + service_ns, Sysno::close, fd as u64, 0);
    }

    #[test]
    fn a_marked_range_counts_only_the_server_times_inside_it() {
        let mut app = App::new("test");
        served_request(&mut app, 1_000, 4, 1_000);
        app.update(Action::Tick(10_000));
        app.update(Action::MarkRange);
        let (queue, service) = app.shown_server_times();
        assert_eq!(
            (queue.len(), service.len()),
            (0, 0),
            "nothing since the mark"
        );
        served_request(&mut app, 20_000, 5, 900_000);
        served_request(&mut app, 1_000_000, 6, 900_000);
        let (queue, service) = app.shown_server_times();
        assert_eq!((queue.len(), service.len()), (2, 2));
        assert!(
            service.min() >= 800_000,
            "only the slow ones: {}",
            service.min()
        );
        app.update(Action::MarkRange);
        let (_, service) = app.shown_server_times();
        assert_eq!(service.len(), 3, "r again: the whole run");
        assert!(service.min() < 10_000);
    }

    #[test]
    fn under_steady_events_exited_threads_go_and_the_rate_is_measured() {
        let mut app = App::new("test");
        app.update(event(
            1,
            7,
            EventKind::Exited {
                status: ExitStatus::Code(0),
            },
        ));
        // Ten events a second for 70 s, never a second of silence.
        for i in 1..=700u64 {
            app.update(event(
                i * 100_000_000,
                8,
                EventKind::Signal {
                    signal: 10,
                    info: Vec::new(),
                },
            ));
        }
        assert!(
            !app.data.threads.contains_key(&7),
            "gone a minute: forgotten"
        );
        assert!(
            (app.data.events_per_s - 10.0).abs() < 0.5,
            "{} events/s",
            app.data.events_per_s
        );
    }

    #[test]
    fn time_passes_without_events() {
        let mut app = App::new("test");
        app.update(Action::Tick(5));
        assert_eq!(app.data.now_ns, 0, "no trace yet: nothing to age");
        app.update(event(
            1_000,
            7,
            EventKind::Exited {
                status: ExitStatus::Code(0),
            },
        ));
        app.update(event(
            2_000,
            8,
            EventKind::Signal {
                signal: 10,
                info: Vec::new(),
            },
        ));
        app.update(Action::Tick(1_500_000_000));
        assert_eq!(app.data.now_ns, 1_500_000_000, "the states age");
        app.update(Action::Tick(3_000_000_000));
        assert_eq!(app.data.events_per_s, 0.0, "no events in the last second");
        app.update(Action::Tick(MAX_WINDOW_NS + 5_000_000_000));
        assert!(!app.data.threads.contains_key(&7), "forgotten while idle");
        assert!(app.data.threads.contains_key(&8));
    }

    #[test]
    fn threads_gone_a_while_leave_the_list_unless_x() {
        let mut app = App::new("test");
        app.update(event(
            1_000,
            7,
            EventKind::Exited {
                status: ExitStatus::Code(0),
            },
        ));
        app.update(event(
            2_000,
            8,
            EventKind::Signal {
                signal: 10,
                info: Vec::new(),
            },
        ));
        let listed = |app: &App| app.listed_threads().map(|(t, _)| *t).collect::<Vec<_>>();
        assert_eq!(listed(&app), [7, 8], "just exited: still listed");
        app.update(Action::Tick(EXITED_SHOWN_NS + 2_000));
        assert_eq!(listed(&app), [8]);
        app.update(Action::SelectNext);
        app.update(Action::SelectNext);
        assert_eq!(
            app.view_state.selected,
            Some(8),
            "selection skips what is not listed"
        );
        app.update(Action::ToggleExited);
        assert_eq!(listed(&app), [7, 8]);
    }

    #[test]
    fn keys_act_on_the_frozen_view() {
        let mut app = App::new("test");
        let window = app.view_state.window_ns;
        app.update(Action::TogglePause);
        app.update(Action::ZoomIn);
        app.update(Action::ToggleFutexPane);
        assert_eq!(app.view_state.window_ns, window / 2, "zoom while paused");
        assert_eq!(app.view_state.lower_pane, LowerPane::Futex);
        assert!(app.paused);
    }

    #[test]
    fn the_output_pane_keeps_the_last_lines_and_takes_turns_with_the_futex_pane() {
        let mut app = App::new("test");
        for i in 0..OUTPUT_LINES + 3 {
            app.update(Action::Output(format!("line {i}\n")));
        }
        assert_eq!(app.data.output.len(), OUTPUT_LINES);
        assert_eq!(app.data.output.front().unwrap(), "line 3");
        assert_eq!(
            app.data.output.back().unwrap(),
            &format!("line {}", OUTPUT_LINES + 2)
        );

        app.update(Action::ToggleOutputPane);
        assert_eq!(app.view_state.lower_pane, LowerPane::Output);
        app.update(Action::ToggleFutexPane);
        assert_eq!(
            app.view_state.lower_pane,
            LowerPane::Futex,
            "f goes to the futex words"
        );
        app.update(Action::ToggleOutputPane);
        app.update(Action::ToggleOutputPane);
        assert_eq!(
            app.view_state.lower_pane,
            LowerPane::Events,
            "o again: the events"
        );
    }

    #[test]
    fn program_output_is_made_safe_to_draw() {
        // Colours go, the text stays.
        assert_eq!(terminal_line("\u{1b}[1;31mred\u{1b}[0m ok\n"), "red ok");
        // A progress bar redrawn with \r: its last state.
        assert_eq!(terminal_line("10%\r50%\r100%\r\n"), "100%");
        // A window title (OSC, ended by BEL or ST) and a lone escape.
        assert_eq!(
            terminal_line("\u{1b}]0;title\u{7}a\u{1b}]2;t\u{1b}\\b\u{1b}7c"),
            "abc"
        );
        // Tabs to 8-column stops; other control characters dropped.
        assert_eq!(terminal_line("a\tb\u{7}\u{8}c"), "a       bc");
        // Cut at the limit, by characters, not bytes.
        let long = "é".repeat(OUTPUT_LINE_CHARS + 10);
        assert_eq!(terminal_line(&long).chars().count(), OUTPUT_LINE_CHARS);
        // An escape cut off at the end of the line is not an error.
        assert_eq!(terminal_line("x\u{1b}["), "x");
    }
}
