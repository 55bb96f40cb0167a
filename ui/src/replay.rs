//! Replay: the same panes over a recorded run, with a playhead that plays,
//! pauses, changes speed, steps and seeks. The recording is the source;
//! the model and the widgets are the live dashboard's.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, IsTerminal};
use std::path::Path;
use std::time::{Duration, Instant};

use crossterm::event::KeyCode;
use tracebench_loadgen::Snapshot;
use tracebench_loadgen::hlog::Damage;
use tracebench_trace::Event;
use tracebench_trace::format::{Header, TraceFileError, TraceReader};

use crate::error::DashError;
use crate::keys::{ReplayAction, replay_action_for};
use crate::model::{Action, App, RunData};
use crate::source::Source;

/// Playback speeds, slowest first; the last one plays as fast as it can.
pub const SPEEDS: [f64; 8] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, f64::INFINITY];

/// A model saved at a block boundary while the recording was first read:
/// seeking restores the nearest one before the target and plays on from
/// there, so no seek replays more than one checkpoint's worth of events.
struct Checkpoint {
    /// The time of the last event applied (0 for the start).
    at_ns: u64,
    /// Where the next block starts in the file.
    offset: u64,
    /// The intervals of the load already applied.
    next_interval: usize,
    /// The model's data after those events.
    data: RunData,
}

/// The most checkpoints kept, whatever the recording's length: their
/// memory is the replay's largest cost.
const MAX_CHECKPOINTS: u64 = 32;
/// The fewest events between two checkpoints.
const MIN_CHECKPOINT_EVENTS: u64 = 50_000;

/// One interval of the load's log, kept small: the values recorded in it
/// and their counts (a full histogram takes a quarter megabyte).
struct LoadInterval {
    /// When it ends, on the trace's clock.
    ends_ns: u64,
    /// When it starts, since the start of the load.
    start: Duration,
    duration: Duration,
    /// (value, count) for every recorded value.
    counts: Vec<(u64, u64)>,
    /// Statuses, errors and in flight, from load.csv (a recording made
    /// before it existed has none: every answer then counts as a 200).
    outcome: Option<tracebench_loadgen::outcomes::Outcome>,
}

impl LoadInterval {
    fn snapshot(&self, index: usize) -> Snapshot {
        let mut latency = tracebench_loadgen::stats::latency_histogram();
        let mut answered = 0;
        for &(value, count) in &self.counts {
            latency.saturating_record_n(value, count);
            answered += count;
        }
        let (statuses, errors, in_flight) = match &self.outcome {
            Some(outcome) => (
                outcome.statuses.clone(),
                outcome.errors.clone(),
                outcome.in_flight,
            ),
            // The latency log alone: every answer counts as a 200.
            None => (
                [(200u16, answered)].into_iter().collect(),
                Default::default(),
                0,
            ),
        };
        Snapshot {
            index: index as u64,
            start: self.start,
            duration: self.duration,
            latency,
            statuses,
            errors,
            in_flight,
            warmup: false,
        }
    }
}

/// A recorded run and where the playhead is. The trace stays on disk: it
/// is read once to place checkpoints, then read again from the nearest
/// checkpoint on every seek back.
pub struct Player {
    title: String,
    reader: TraceReader<BufReader<File>>,
    /// Events read from the file and not applied yet, oldest first.
    pending: VecDeque<Event>,
    checkpoints: Vec<Checkpoint>,
    intervals: Vec<LoadInterval>,
    start_ns: u64,
    end_ns: u64,
    /// Every event of the recording.
    pub total_events: u64,
    /// Where the playhead is (trace clock, ns).
    pub playhead_ns: u64,
    next_interval: usize,
    /// Index into [`SPEEDS`].
    pub speed: usize,
    /// Whether time moves.
    pub playing: bool,
    /// The model as of the playhead.
    pub app: App,
    /// Whether the recording ended early (the file was cut short).
    pub truncated: bool,
    /// Where the load's interval log (latency.hlog) stops being readable,
    /// if it does: the intervals before it are replayed, the rest is not.
    pub log_damage: Option<Damage>,
    /// Thread names the recording kept (threads.json), by tid.
    names: std::collections::HashMap<i32, String>,
    /// What of the recording's side files could not be read, to be said.
    pub notes: Vec<String>,
    /// Where `e` writes (the run's directory).
    export_dir: Option<std::path::PathBuf>,
    /// When the terminal loop last moved the playhead.
    last_pump: Option<Instant>,
}

fn read_error(path: &Path) -> impl Fn(TraceFileError) -> DashError + '_ {
    move |error| DashError::ReadTrace {
        path: path.to_path_buf(),
        error,
    }
}

/// Opens a run directory (or a bare trace file) for replay: reads it once
/// through, checking every block and placing checkpoints.
pub fn load(run: &Path) -> Result<Player, DashError> {
    let (trace_path, log_path) = if run.is_dir() {
        (run.join("trace.tbt"), Some(run.join("latency.hlog")))
    } else {
        (run.to_path_buf(), None)
    };
    let reader = TraceReader::open(&trace_path).map_err(|error| DashError::OpenTrace {
        path: trace_path.clone(),
        error,
    })?;
    let (mut intervals, log_damage) = match log_path.filter(|p| p.exists()) {
        Some(path) => read_latency_log(&path, reader.header())?,
        None => (Vec::new(), None),
    };
    let mut notes = Vec::new();
    let outcomes_path = run.join("load.csv");
    if run.is_dir() && outcomes_path.exists() {
        let outcomes = tracebench_files::read_input(&outcomes_path, MAX_SIDE_FILE)
            .ok()
            .and_then(|bytes| tracebench_loadgen::outcomes::read(&String::from_utf8_lossy(&bytes)));
        match outcomes {
            Some(outcomes) => {
                for (index, interval) in intervals.iter_mut().enumerate() {
                    interval.outcome = outcomes.get(&(index as u64)).cloned();
                }
            }
            None => notes.push(format!(
                "{} is unreadable: statuses, errors and in-flight counts are not replayed",
                outcomes_path.display()
            )),
        }
    }
    let names = if run.is_dir() {
        read_thread_names(run, &mut notes)
    } else {
        Default::default()
    };
    let title = format!("replay of {}", run.display());
    let mut app = App::new(title.clone());
    app.replay = true;
    let mut player = Player {
        title,
        pending: VecDeque::new(),
        checkpoints: vec![Checkpoint {
            at_ns: 0,
            offset: reader.position(),
            next_interval: 0,
            data: RunData::default(),
        }],
        intervals,
        start_ns: 0,
        end_ns: 0,
        total_events: 0,
        playhead_ns: 0,
        next_interval: 0,
        speed: 2,
        playing: true,
        app,
        truncated: false,
        log_damage,
        names,
        notes,
        reader,
        export_dir: run.is_dir().then(|| run.to_path_buf()),
        last_pump: None,
    };
    player.first_pass(&trace_path)?;
    Ok(player)
}

/// The load's interval log at `path`, each interval placed on the trace's
/// clock with `header`'s anchor, and where the log stops being readable,
/// if it does.
fn read_latency_log(
    path: &Path,
    header: &Header,
) -> Result<(Vec<LoadInterval>, Option<Damage>), DashError> {
    let bytes = tracebench_files::read_input(path, tracebench_loadgen::hlog::MAX_LOG_BYTES)
        .map_err(|error| DashError::OpenLatencyLog {
            path: path.to_path_buf(),
            error,
        })?;
    // The trace's clock is CLOCK_MONOTONIC; the log's is the wall clock.
    // The trace header anchors one to the other.
    let to_trace_clock = |wall: Duration| -> u64 {
        let wall_ns = wall.as_nanos() as i128;
        (wall_ns - header.realtime_ns as i128 + header.monotonic_ns as i128).max(0) as u64
    };
    let mut intervals = Vec::new();
    let mut first_start = None;
    // Like a trace cut short, a log cut short (the dashboard was killed
    // mid-line) or damaged keeps what precedes the damage: the run is not
    // lost for a line of its latencies.
    let damage = tracebench_loadgen::hlog::for_each_interval(&bytes, |interval| {
        let first = *first_start.get_or_insert(interval.start);
        intervals.push(LoadInterval {
            ends_ns: to_trace_clock(interval.start + interval.duration),
            start: interval.start.saturating_sub(first),
            duration: interval.duration,
            counts: interval
                .histogram
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
            outcome: None,
        });
    })
    .map_err(|error| DashError::ReadLatencyLog {
        path: path.to_path_buf(),
        error,
    })?;
    Ok((intervals, damage))
}

/// The largest side file of a recording read (threads.json, load.csv).
const MAX_SIDE_FILE: u64 = 64 << 20;

/// The thread names a run directory kept (threads.json), by tid: none if
/// the file is missing; none, and a note saying why, if it is there but
/// cannot be read.
fn read_thread_names(
    run: &Path,
    notes: &mut Vec<String>,
) -> std::collections::HashMap<i32, String> {
    let path = run.join("threads.json");
    if !path.exists() {
        return Default::default();
    }
    let names = tracebench_files::read_input(&path, MAX_SIDE_FILE)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            serde_json::from_slice::<std::collections::HashMap<String, String>>(&bytes)
                .map_err(|e| e.to_string())
        });
    match names {
        Ok(names) => names
            .into_iter()
            .filter_map(|(tid, name)| Some((tid.parse().ok()?, name)))
            .collect(),
        Err(why) => {
            notes.push(format!(
                "{} is unreadable ({why}): threads are shown without names",
                path.display()
            ));
            Default::default()
        }
    }
}

/// Events between two checkpoints, for at most [`MAX_CHECKPOINTS`] of
/// them about evenly spread: the index tells how many events there are (a
/// cut file has none; its size gives an estimate, at about ten bytes an
/// event).
fn checkpoint_spacing(trace_path: &Path) -> u64 {
    let expected_events = match tracebench_trace::format::read_index(trace_path) {
        Ok(Some(index)) => index.events(),
        _ => std::fs::metadata(trace_path).map_or(0, |m| m.len() / 10),
    };
    (expected_events / MAX_CHECKPOINTS).max(MIN_CHECKPOINT_EVENTS)
}

impl Player {
    /// The first pass: every event through the model once, checkpoints
    /// placed on the way; then back to the start.
    fn first_pass(&mut self, trace_path: &Path) -> Result<(), DashError> {
        let mut spacing = checkpoint_spacing(trace_path);
        let mut since_checkpoint = 0;
        let mut first = None;
        loop {
            if since_checkpoint >= spacing {
                self.place_checkpoint(&mut spacing);
                since_checkpoint = 0;
            }
            let Some(block) = self.reader.read_block().map_err(read_error(trace_path))? else {
                break;
            };
            since_checkpoint += block.len() as u64;
            self.total_events += block.len() as u64;
            if let (None, Some(event)) = (first, block.first()) {
                first = Some(event.time_ns);
            }
            for event in block {
                self.end_ns = self.end_ns.max(event.time_ns);
                self.apply(event);
            }
        }
        self.truncated = self.reader.truncated();
        self.start_ns = first.unwrap_or(0);
        self.end_ns = self.end_ns.max(self.start_ns);
        self.restore(0);
        self.playhead_ns = self.start_ns;
        Ok(())
    }

    /// Saves the model as it is at the next block; past
    /// [`MAX_CHECKPOINTS`] (more events than the estimate said: a cut
    /// file), keeps every other checkpoint (the start among them) and
    /// doubles `spacing` for the next ones.
    fn place_checkpoint(&mut self, spacing: &mut u64) {
        self.checkpoints.push(Checkpoint {
            at_ns: self.end_ns,
            offset: self.reader.position(),
            next_interval: self.next_interval,
            data: self.app.data.clone(),
        });
        if self.checkpoints.len() > MAX_CHECKPOINTS as usize {
            let mut index = 0;
            self.checkpoints.retain(|_| {
                index += 1;
                index % 2 == 1
            });
            *spacing *= 2;
        }
    }
}

impl Player {
    /// Applies one event and the load's intervals that ended before it.
    fn apply(&mut self, event: Event) {
        self.apply_intervals_until(event.time_ns);
        self.app.update(Action::Trace(event));
        self.name_new_threads();
    }

    fn apply_intervals_until(&mut self, to_ns: u64) {
        while let Some(interval) = self.intervals.get(self.next_interval) {
            if interval.ends_ns > to_ns {
                break;
            }
            let snapshot = interval.snapshot(self.next_interval);
            self.app.update(Action::Load(snapshot));
            self.next_interval += 1;
        }
    }

    fn name_new_threads(&mut self) {
        for tid in self.app.data.take_unnamed() {
            if let Some(name) = self.names.get(&tid) {
                self.app.update(Action::Named {
                    tid,
                    name: name.clone(),
                });
            }
        }
    }

    /// Puts the model's data back to checkpoint `index`, keeping what
    /// the user set (selection, zoom, panes: the view's state).
    fn restore(&mut self, index: usize) {
        let checkpoint = &self.checkpoints[index];
        self.app.data = checkpoint.data.clone();
        self.next_interval = checkpoint.next_interval;
        self.pending.clear();
        // The file was read through once already: a failure now means it
        // changed underneath; the replay then ends where reading stops.
        let _ = self.reader.seek_block(checkpoint.offset);
        self.playhead_ns = checkpoint.at_ns.max(self.start_ns);
    }

    /// The last checkpoint taken at or before `at_ns` (the first one, at
    /// the start, if none).
    fn checkpoint_at_or_before(&self, at_ns: u64) -> usize {
        self.checkpoints
            .partition_point(|c| c.at_ns <= at_ns)
            .saturating_sub(1)
    }

    /// The next event not yet applied, read from the file if need be.
    fn peek(&mut self) -> Option<&Event> {
        if self.pending.is_empty() {
            let block = self.reader.read_block().ok().flatten()?;
            self.pending.extend(block);
        }
        self.pending.front()
    }

    /// Moves the playhead to `to_ns` (clamped to the recording), feeding the
    /// model what lies in between; seeking back starts again from the last
    /// checkpoint before `to_ns`.
    pub fn seek(&mut self, to_ns: u64) {
        let to_ns = to_ns.clamp(self.start_ns, self.end_ns);
        let checkpoint = self.checkpoint_at_or_before(to_ns);
        let behind = to_ns < self.playhead_ns;
        let far_ahead = self.checkpoints[checkpoint].at_ns > self.playhead_ns;
        if behind || far_ahead {
            self.restore(checkpoint);
        }
        while let Some(event) = self.peek() {
            if event.time_ns > to_ns {
                break;
            }
            let event = self.pending.pop_front().expect("peeked");
            self.apply(event);
        }
        // At the end, the last (partial) interval counts too, though its
        // nominal end lies past the last event.
        let last = if to_ns >= self.end_ns {
            u64::MAX
        } else {
            to_ns
        };
        self.apply_intervals_until(last);
        self.playhead_ns = to_ns;
        self.app.data.now_ns = to_ns;
    }

    /// Moves to the next event, of the selected thread if one is selected.
    pub fn step(&mut self) {
        let selected = self.app.view_state.selected;
        let playhead = self.playhead_ns;
        while let Some(event) = self.peek() {
            let (at, tid) = (event.time_ns, event.tid);
            let event = self.pending.pop_front().expect("peeked");
            self.apply(event);
            if at > playhead && selected.is_none_or(|s| s == tid) {
                self.playing = false;
                self.playhead_ns = at;
                self.app.data.now_ns = at;
                return;
            }
        }
        // Nothing more of that thread: the playhead stays where it was,
        // and the model, which read on to the end, is rebuilt there.
        self.playing = false;
        let checkpoint = self.checkpoint_at_or_before(playhead);
        self.restore(checkpoint);
        self.seek(playhead);
    }

    /// Moves back to the previous event, of the selected thread if one is
    /// selected (the playhead stays if there is none).
    pub fn step_back(&mut self) {
        self.playing = false;
        let selected = self.app.view_state.selected;
        let playhead = self.playhead_ns;
        // Scan the stretch before the playhead from its checkpoint, then
        // each earlier stretch up to where the later one began, until an
        // event of the thread turns up: every event is read at most once,
        // and the model is rebuilt only at the end.
        let mut checkpoint = self.checkpoint_at_or_before(playhead.saturating_sub(1));
        let mut until = playhead;
        let found = loop {
            let start = self.checkpoints[checkpoint].offset;
            self.pending.clear();
            if self.reader.seek_block(start).is_err() {
                break None;
            }
            let mut last = None;
            while let Some(event) = self.peek() {
                if event.time_ns >= until {
                    break;
                }
                if selected.is_none_or(|tid| tid == event.tid) {
                    last = Some(event.time_ns);
                }
                self.pending.pop_front();
            }
            if last.is_some() || checkpoint == 0 {
                break last;
            }
            until = self.checkpoints[checkpoint].at_ns.saturating_add(1);
            checkpoint -= 1;
        };
        // Rebuild the model at the event found (or where the playhead was).
        let to = found.unwrap_or(playhead);
        let checkpoint = self.checkpoint_at_or_before(to);
        self.restore(checkpoint);
        self.seek(to);
    }

    /// When the recording starts (trace clock, ns).
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    /// When the recording ends (trace clock, ns).
    pub fn end_ns(&self) -> u64 {
        self.end_ns
    }

    /// Seconds played and recorded.
    pub fn position(&self) -> (f64, f64) {
        (
            (self.playhead_ns - self.start_ns) as f64 / 1e9,
            (self.end_ns - self.start_ns) as f64 / 1e9,
        )
    }

    fn status(&self) -> String {
        let (at, total) = self.position();
        let speed = SPEEDS[self.speed];
        let speed = if speed.is_infinite() {
            "max".to_owned()
        } else {
            format!("x{speed}")
        };
        format!(
            "{}   {} {speed}   {at:.1} s / {total:.1} s{}",
            self.title,
            if self.playing { "▶" } else { "⏸" },
            match (self.truncated, self.log_damage.is_some()) {
                (true, _) => "   (the recording ends early)",
                (false, true) => "   (the latency log ends early)",
                (false, false) => "",
            }
        )
    }

    /// Advances the playhead by `wall` of real time at the current speed.
    pub fn advance(&mut self, wall: Duration) {
        if !self.playing {
            return;
        }
        let speed = SPEEDS[self.speed];
        let to = if speed.is_infinite() {
            self.end_ns
        } else {
            self.playhead_ns
                .saturating_add((wall.as_nanos() as f64 * speed) as u64)
        };
        self.seek(to);
        if self.playhead_ns >= self.end_ns {
            self.playing = false;
        }
    }

    /// Handles a replay key; false if the key is not a replay key.
    pub fn on_key(&mut self, key: KeyCode) -> bool {
        match replay_action_for(key) {
            Some(action) => {
                self.perform(action);
                true
            }
            None => false,
        }
    }

    /// Carries out a replay key's action.
    pub fn perform(&mut self, action: ReplayAction) {
        const SECOND: u64 = 1_000_000_000;
        match action {
            ReplayAction::PlayPause => self.playing = !self.playing,
            ReplayAction::Faster => self.speed = (self.speed + 1).min(SPEEDS.len() - 1),
            ReplayAction::Slower => self.speed = self.speed.saturating_sub(1),
            ReplayAction::Seek(seconds) => {
                let by = seconds.unsigned_abs() * SECOND;
                self.seek(if seconds < 0 {
                    self.playhead_ns.saturating_sub(by)
                } else {
                    self.playhead_ns.saturating_add(by)
                });
            }
            ReplayAction::ToStart => self.seek(self.start_ns),
            ReplayAction::ToEnd => self.seek(self.end_ns),
            ReplayAction::NextEvent => self.step(),
            ReplayAction::PreviousEvent => self.step_back(),
        }
    }
}

/// Plays a loaded recording (see [`load`]) in the terminal; without one,
/// plays it through to its end at once. Returns the model at the end.
pub fn play(mut player: Player) -> Result<Replayed, DashError> {
    let truncated = player.truncated;
    if !io::stdout().is_terminal() {
        player.seek(player.end_ns);
        return Ok(Replayed {
            app: player.app,
            truncated,
            signal: None,
        });
    }
    // SIGTERM, SIGHUP or SIGINT end the replay as q does, the terminal
    // given back (by default they would leave it in raw mode).
    let (_watch, noticed) = tracebench_trace::signals::notice().map_err(DashError::Signals)?;
    let mut terminal = crate::terminal::init().map_err(DashError::TerminalSetup)?;
    player.last_pump = Some(Instant::now());
    let result = crate::terminal::drive(&mut terminal, &mut player, &noticed);
    crate::terminal::restore();
    result.map_err(DashError::Terminal)?;
    Ok(Replayed {
        app: player.app,
        truncated,
        signal: noticed.first(),
    })
}

/// What a replay ended with.
pub struct Replayed {
    /// The model at the end, for a summary.
    pub app: App,
    /// The recording was cut short (it replayed up to where it ends).
    pub truncated: bool,
    /// The signal (SIGTERM, SIGHUP, SIGINT) that ended the replay, if one did.
    pub signal: Option<i32>,
}

impl Source for Player {
    fn app(&mut self) -> &mut App {
        &mut self.app
    }

    fn pump(&mut self) {
        let now = Instant::now();
        let wall = self.last_pump.map_or(Duration::ZERO, |last| now - last);
        self.last_pump = Some(now);
        self.advance(wall);
        self.app.title = self.status();
    }

    fn on_key(&mut self, key: KeyCode) -> bool {
        Player::on_key(self, key)
    }

    fn export_dir(&self) -> Option<&Path> {
        self.export_dir.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracebench_trace::DataCapture;
    use tracebench_trace::format::{Header, TraceWriter};
    use tracebench_trace::{EventKind, EventSink};

    fn recording() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = TraceWriter::create(
            &dir.path().join("trace.tbt"),
            &Header::now(vec![], tracebench_trace::Backend::Ptrace),
        )
        .unwrap();
        for (i, tid) in [1, 2, 1, 2, 1].into_iter().enumerate() {
            writer.event(&Event {
                time_ns: 1_000_000_000 * (i as u64 + 1),
                pid: 1,
                tid,
                kind: EventKind::Signal {
                    signal: 10,
                    info: Vec::new(),
                },
            });
        }
        writer.finish().unwrap();
        dir
    }

    #[test]
    fn seeking_back_rebuilds_the_same_model() {
        let dir = recording();
        let mut player = load(dir.path()).unwrap();
        player.seek(3_500_000_000);
        assert_eq!(player.app.data.events, 3);
        player.seek(u64::MAX);
        assert_eq!(player.app.data.events, 5);
        player.seek(2_000_000_000);
        assert_eq!(
            player.app.data.events, 2,
            "a rebuilt model, not a rewound one"
        );
        assert_eq!(player.position(), (1.0, 4.0));
    }

    /// Writes a latency.hlog of `n` 100 ms intervals (interval i holds
    /// i + 1 requests of 1 ms) into `dir`, on the clock of its trace.
    fn write_latency_log(dir: &Path, n: u64) -> Vec<u8> {
        use tracebench_loadgen::hlog::{Interval, write_log};
        let header = TraceReader::open(&dir.join("trace.tbt"))
            .unwrap()
            .header()
            .clone();
        // The wall-clock time of the trace's first event (1 s in).
        let wall = Duration::from_nanos(
            (header.realtime_ns - header.monotonic_ns as i64 + 1_000_000_000) as u64,
        );
        let intervals: Vec<Interval> = (0..n)
            .map(|i| {
                let mut histogram = tracebench_loadgen::stats::latency_histogram();
                histogram.record_n(1_000_000, i + 1).unwrap();
                Interval {
                    start: wall + Duration::from_millis(100 * i),
                    duration: Duration::from_millis(100),
                    histogram,
                }
            })
            .collect();
        let mut bytes = Vec::new();
        write_log(&mut bytes, std::time::UNIX_EPOCH + wall, &intervals).unwrap();
        std::fs::write(dir.join("latency.hlog"), &bytes).unwrap();
        bytes
    }

    #[test]
    fn a_latency_log_cut_mid_line_replays_the_intervals_before_the_cut() {
        let dir = recording();
        let whole = write_latency_log(dir.path(), 10);
        // Cut in the middle of the eighth interval's line.
        let line_starts: Vec<usize> = whole
            .iter()
            .enumerate()
            .filter(|&(at, _)| at > 0 && whole[at - 1] == b'\n' && whole[at].is_ascii_digit())
            .map(|(at, _)| at)
            .collect();
        assert_eq!(line_starts.len(), 10);
        std::fs::write(
            dir.path().join("latency.hlog"),
            &whole[..line_starts[7] + 20],
        )
        .unwrap();
        let mut player = load(dir.path()).unwrap();
        let damage = player.log_damage.clone().expect("the cut is reported");
        assert!(damage.cut, "{damage}");
        assert_eq!(damage.intervals, 7);
        assert_eq!(damage.offset, line_starts[7]);
        assert!(!player.truncated, "the trace itself is whole");
        assert!(player.status().contains("latency log ends early"));
        player.seek(u64::MAX);
        assert_eq!(player.app.data.events, 5, "every event of the trace");
        // The seven intervals before the cut, 1 + 2 + … + 7 requests.
        assert_eq!(player.next_interval, 7);
        let answered: u64 = player
            .intervals
            .iter()
            .flat_map(|i| &i.counts)
            .map(|c| c.1)
            .sum();
        assert_eq!(answered, 28);
    }

    #[test]
    fn the_replay_shows_the_errors_and_in_flight_the_live_run_had() {
        // Issue 16: the live run showed 402 errors and 10 in flight; its
        // replay showed 0 and 0, from latencies alone.
        let dir = recording();
        write_latency_log(dir.path(), 4);
        let mut csv = String::from("interval,in_flight,statuses,errors\n");
        for i in 0..4 {
            csv += &format!("{i},{},200={};503=1,reset=2\n", 10 - i, i + 1);
        }
        std::fs::write(dir.path().join("load.csv"), csv).unwrap();
        let mut player = load(dir.path()).unwrap();
        player.seek(u64::MAX);
        let data = &player.app.data;
        assert_eq!(data.failed, 8, "2 resets in each of 4 intervals");
        assert_eq!(data.in_flight, 7, "as at the end of the last interval");
        assert_eq!(data.completed, 1 + 2 + 3 + 4 + 4, "the 200s and the 503s");

        // A recording from before load.csv: latencies only, as before.
        std::fs::remove_file(dir.path().join("load.csv")).unwrap();
        let mut player = load(dir.path()).unwrap();
        player.seek(u64::MAX);
        assert_eq!(player.app.data.failed, 0);
        assert_eq!(player.app.data.completed, 10);
    }

    #[test]
    fn a_damaged_side_file_is_said_and_the_replay_goes_on() {
        // Issue 14: a damaged threads.json was ignored without a word.
        let dir = recording();
        std::fs::write(dir.path().join("threads.json"), b"{ not json").unwrap();
        std::fs::write(dir.path().join("load.csv"), b"garbage").unwrap();
        let player = load(dir.path()).unwrap();
        let notes = player.notes.join("\n");
        assert!(notes.contains("threads.json is unreadable"), "{notes}");
        assert!(notes.contains("load.csv is unreadable"), "{notes}");
    }

    #[test]
    fn a_latency_log_that_is_no_log_is_an_error_naming_it() {
        let dir = recording();
        std::fs::write(dir.path().join("latency.hlog"), b"\x00\x01 not a log\n").unwrap();
        let error = load(dir.path()).err().expect("an error").to_string();
        assert!(error.starts_with("reading "), "{error}");
        assert!(
            error.contains("latency.hlog: not an HdrHistogram interval log"),
            "{error}"
        );
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn stepping_follows_the_selected_thread() {
        let dir = recording();
        let mut player = load(dir.path()).unwrap();
        player.seek(0);
        player.app.view_state.selected = Some(2);
        player.step();
        assert_eq!(player.playhead_ns, 2_000_000_000);
        player.step();
        assert_eq!(player.playhead_ns, 4_000_000_000);
        assert!(!player.playing, "stepping pauses");
        // Nothing more of thread 2: the playhead and the model stay put.
        player.step();
        assert_eq!(player.playhead_ns, 4_000_000_000);
        assert_eq!(
            player.app.data.events, 4,
            "the model is that of the playhead"
        );
        player.on_key(KeyCode::End);
        player.step();
        assert_eq!(player.playhead_ns, 5_000_000_000, "nothing after the end");
        // Back, of thread 2: 4 s, then 2 s, then nothing before.
        player.step_back();
        assert_eq!(player.playhead_ns, 4_000_000_000);
        assert_eq!(player.app.data.events, 4);
        player.on_key(KeyCode::Char('p'));
        assert_eq!(player.playhead_ns, 2_000_000_000);
        assert_eq!(player.app.data.events, 2);
        player.step_back();
        assert_eq!(player.playhead_ns, 2_000_000_000, "nothing before");
        assert_eq!(player.app.data.events, 2);
        // Any thread: the event just before.
        player.app.view_state.selected = None;
        player.step_back();
        assert_eq!(player.playhead_ns, 1_000_000_000);
    }

    #[test]
    fn speeds_and_play() {
        let dir = recording();
        let mut player = load(dir.path()).unwrap();
        assert_eq!(SPEEDS[player.speed], 1.0);
        player.on_key(KeyCode::Char('>'));
        player.advance(Duration::from_millis(500));
        assert_eq!(
            player.playhead_ns, 2_000_000_000,
            "x2 for 0.5 s is 1 s of trace"
        );
        for _ in 0..10 {
            player.on_key(KeyCode::Char('>'));
        }
        player.advance(Duration::from_millis(1));
        assert_eq!(player.playhead_ns, 5_000_000_000, "max plays to the end");
        assert!(!player.playing);
    }

    /// A recording of `n` syscalls on 8 threads, 10 µs apart.
    fn long_recording(n: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = TraceWriter::create(
            &dir.path().join("trace.tbt"),
            &Header::now(vec![], tracebench_trace::Backend::Ptrace),
        )
        .unwrap();
        for i in 0..n {
            let tid = 100 + (i % 8) as i32;
            let kind = if (i / 8) % 2 == 0 {
                EventKind::SyscallEntry {
                    nr: 202,
                    args: [0x1000 + tid as u64, 128, 0, 0, 0, 0],
                    data: vec![],
                    data_capture: DataCapture::Captured,
                }
            } else {
                EventKind::SyscallExit {
                    nr: 202,
                    ret: 0,
                    data: vec![],
                    data_capture: DataCapture::Captured,
                }
            };
            writer.event(&Event {
                time_ns: 1_000_000_000 + i * 10_000,
                pid: 100,
                tid,
                kind,
            });
        }
        writer.finish().unwrap();
        dir
    }

    fn fingerprint(app: &App) -> Vec<String> {
        let mut lines = vec![format!(
            "events {} now {}",
            app.data.events, app.data.now_ns
        )];
        for (tid, row) in &app.data.threads {
            lines.push(format!(
                "{tid} {:?} since {} syscalls {}",
                app.data.state_of(*tid),
                app.data.since_of(*tid),
                row.syscalls
            ));
        }
        lines.extend(app.data.recent.iter().map(|e| e.line(app.data.origin_ns)));
        lines
    }

    #[test]
    fn seeking_through_checkpoints_gives_the_model_a_straight_play_gives() {
        let dir = long_recording(400_000);
        let mut player = load(dir.path()).unwrap();
        assert_eq!(player.total_events, 400_000);
        assert!(
            player.checkpoints.len() >= 4,
            "{}",
            player.checkpoints.len()
        );
        let start = player.start_ns();
        let targets = [0.3, 0.9, 2.5, 3.1, 3.99].map(|s| start + (s * 1e9) as u64);
        // Straight: forward only, event by event.
        let mut straight = Vec::new();
        for &target in &targets {
            player.seek(target);
            straight.push(fingerprint(&player.app));
        }
        // Jumping around: to the end, then back to each, in another order.
        for &k in &[3usize, 0, 4, 1, 2] {
            player.seek(u64::MAX);
            player.seek(targets[k]);
            assert_eq!(fingerprint(&player.app), straight[k], "target {k}");
        }
        // Stepping back to thread 103's previous event lands where a
        // straight play to that event would.
        for &target in &targets[1..] {
            player.seek(target);
            player.app.view_state.selected = Some(103);
            player.step_back();
            let before = (target - 1_000_000_000 - 1) / 10_000;
            let previous = (0..=before).rev().find(|i| i % 8 == 3).unwrap();
            let expected = 1_000_000_000 + previous * 10_000;
            assert_eq!(player.playhead_ns, expected);
            let stepped = fingerprint(&player.app);
            player.seek(start);
            player.seek(expected);
            assert_eq!(stepped, fingerprint(&player.app));
        }
    }
}
