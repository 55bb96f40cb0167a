//! Replay: the same panes over a recorded run, with a playhead that plays,
//! pauses, changes speed, steps and seeks. The recording is the source;
//! the model and the widgets are the live dashboard's.

use std::io::{self, IsTerminal};
use std::path::Path;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind};
use tracebench_loadgen::Snapshot;
use tracebench_loadgen::hlog::Interval;
use tracebench_tracer::Event;
use tracebench_tracer::file::TraceReader;

use crate::keys::action_for;
use crate::live::DashError;
use crate::model::{Action, App};

/// Playback speeds, slowest first; the last one plays as fast as it can.
pub const SPEEDS: [f64; 8] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, f64::INFINITY];

/// A recorded run, in memory, and where the playhead is.
pub struct Player {
    title: String,
    events: Vec<Event>,
    /// The load's intervals: when each ends, on the trace's clock, and what
    /// it measured.
    intervals: Vec<(u64, Snapshot)>,
    start_ns: u64,
    end_ns: u64,
    /// Where the playhead is (trace clock, ns).
    pub playhead_ns: u64,
    next_event: usize,
    next_interval: usize,
    /// Index into [`SPEEDS`].
    pub speed: usize,
    /// Whether time moves.
    pub playing: bool,
    /// The model as of the playhead.
    pub app: App,
    /// Whether the recording ended early (the file was cut short).
    pub truncated: bool,
    /// Thread names the recording kept (threads.json), by tid.
    names: std::collections::HashMap<i32, String>,
}

/// Reads a run directory (or a bare trace file) into a [`Player`].
pub fn load(run: &Path) -> Result<Player, DashError> {
    let (trace_path, log_path) = if run.is_dir() {
        (run.join("trace.tbt"), Some(run.join("latency.hlog")))
    } else {
        (run.to_path_buf(), None)
    };
    let mut reader = TraceReader::open(&trace_path)
        .map_err(|e| DashError(format!("cannot read {}: {e}", trace_path.display())))?;
    let header = reader.header().clone();
    let mut events = Vec::new();
    for event in reader.by_ref() {
        events
            .push(event.map_err(|e| DashError(format!("reading {}: {e}", trace_path.display())))?);
    }
    let truncated = reader.truncated();
    let intervals: Vec<Interval> = match log_path.filter(|p| p.exists()) {
        Some(path) => {
            let bytes = std::fs::read(&path)
                .map_err(|e| DashError(format!("cannot read {}: {e}", path.display())))?;
            tracebench_loadgen::hlog::read_log(&bytes)
                .map_err(|e| DashError(format!("reading {}: {e}", path.display())))?
        }
        None => Vec::new(),
    };
    // The trace's clock is CLOCK_MONOTONIC; the log's is the wall clock.
    // The trace header anchors one to the other.
    let to_trace_clock = |wall: Duration| -> u64 {
        let wall_ns = wall.as_nanos() as i128;
        (wall_ns - header.realtime_ns as i128 + header.monotonic_ns as i128).max(0) as u64
    };
    let first_start = intervals.first().map_or(Duration::ZERO, |i| i.start);
    let intervals = intervals
        .into_iter()
        .enumerate()
        .map(|(index, interval)| {
            let statuses = [(200u16, interval.histogram.len())].into_iter().collect();
            let snapshot = Snapshot {
                index: index as u64,
                start: interval.start.saturating_sub(first_start),
                duration: interval.duration,
                latency: interval.histogram,
                statuses,
                errors: Default::default(),
                in_flight: 0,
                warmup: false,
            };
            (to_trace_clock(interval.start + interval.duration), snapshot)
        })
        .collect();
    let names = if run.is_dir() {
        std::fs::read(run.join("threads.json"))
            .ok()
            .and_then(|bytes| {
                serde_json::from_slice::<std::collections::HashMap<String, String>>(&bytes).ok()
            })
            .map(|names| {
                names
                    .into_iter()
                    .filter_map(|(tid, name)| Some((tid.parse().ok()?, name)))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Default::default()
    };
    let start_ns = events.first().map_or(0, |e| e.time_ns);
    let end_ns = events.last().map_or(0, |e| e.time_ns);
    let title = format!("replay of {}", run.display());
    let mut app = App::new(title.clone());
    app.replay = true;
    Ok(Player {
        app,
        title,
        events,
        intervals,
        start_ns,
        end_ns,
        playhead_ns: start_ns,
        next_event: 0,
        next_interval: 0,
        speed: 2,
        playing: true,
        truncated,
        names,
    })
}

impl Player {
    /// Moves the playhead to `to_ns` (clamped to the recording), feeding the
    /// model what lies in between; seeking back rebuilds the model from the
    /// start.
    pub fn seek(&mut self, to_ns: u64) {
        let to_ns = to_ns.clamp(self.start_ns, self.end_ns);
        if to_ns < self.playhead_ns {
            let (selected, help, window) = (self.app.selected, self.app.help, self.app.window_ns);
            self.app = App::new(self.title.clone());
            self.app.replay = true;
            self.app.selected = selected;
            self.app.help = help;
            self.app.window_ns = window;
            self.next_event = 0;
            self.next_interval = 0;
        }
        while let Some(event) = self.events.get(self.next_event) {
            if event.time_ns > to_ns {
                break;
            }
            self.app.update(Action::Trace(event.clone()));
            self.next_event += 1;
        }
        for tid in self.app.take_unnamed() {
            if let Some(name) = self.names.get(&tid) {
                self.app.update(Action::Named {
                    tid,
                    name: name.clone(),
                });
            }
        }
        // At the end, the last (partial) second counts too, though its
        // nominal end lies past the last event.
        let at_end = to_ns >= self.end_ns;
        while let Some((ends_ns, snapshot)) = self.intervals.get(self.next_interval) {
            if *ends_ns > to_ns && !at_end {
                break;
            }
            self.app.update(Action::Load(snapshot.clone()));
            self.next_interval += 1;
        }
        self.playhead_ns = to_ns;
        self.app.now_ns = to_ns;
    }

    /// Moves to the next event, of the selected thread if one is selected.
    pub fn step(&mut self) {
        let selected = self.app.selected;
        let next = self.events[self.next_event..]
            .iter()
            .find(|e| e.time_ns > self.playhead_ns && selected.is_none_or(|tid| e.tid == tid))
            .map(|e| e.time_ns);
        if let Some(at) = next {
            self.playing = false;
            self.seek(at);
        }
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
            if self.truncated {
                "   (the recording ends early)"
            } else {
                ""
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
        const SECOND: u64 = 1_000_000_000;
        match key {
            KeyCode::Char(' ') => self.playing = !self.playing,
            KeyCode::Char('>') | KeyCode::Char('.') => {
                self.speed = (self.speed + 1).min(SPEEDS.len() - 1)
            }
            KeyCode::Char('<') | KeyCode::Char(',') => self.speed = self.speed.saturating_sub(1),
            KeyCode::Right => self.seek(self.playhead_ns.saturating_add(SECOND)),
            KeyCode::Left => self.seek(self.playhead_ns.saturating_sub(SECOND)),
            KeyCode::PageDown => self.seek(self.playhead_ns.saturating_add(10 * SECOND)),
            KeyCode::PageUp => self.seek(self.playhead_ns.saturating_sub(10 * SECOND)),
            KeyCode::Home => self.seek(self.start_ns),
            KeyCode::End => self.seek(self.end_ns),
            KeyCode::Char('n') => self.step(),
            _ => return false,
        }
        true
    }
}

/// The replay keys, for the help overlay.
pub const REPLAY_KEYS: &[(&str, &str)] = &[
    ("space", "play or pause"),
    ("< >", "slower / faster (x0.25 to x16, max)"),
    ("← →", "seek 1 s back / forward"),
    ("PgUp PgDn", "seek 10 s back / forward"),
    ("Home End", "to the start / the end"),
    ("n", "step to the next event (of the selected thread)"),
];

/// Replays `run` in the terminal; without one, prints the whole run's
/// summary. Returns the model at the end.
pub fn run(run: &Path) -> Result<App, DashError> {
    let mut player = load(run)?;
    if !io::stdout().is_terminal() {
        player.seek(player.end_ns);
        return Ok(player.app);
    }
    let mut terminal =
        ratatui::try_init().map_err(|e| DashError(format!("cannot set up the terminal: {e}")))?;
    let result = (|| -> io::Result<()> {
        let mut last = Instant::now();
        loop {
            let now = Instant::now();
            player.advance(now - last);
            last = now;
            player.app.title = player.status();
            terminal.draw(|frame| crate::view::draw(frame, &player.app))?;
            if event::poll(Duration::from_millis(50))?
                && let TermEvent::Key(key) = event::read()?
                && key.kind == KeyEventKind::Press
            {
                if player.on_key(key.code) {
                    continue;
                }
                if let Some(action) = action_for(key.code) {
                    // Space is play/pause here, handled above.
                    if matches!(action, Action::Export) {
                        let status = crate::live::export(&player.app, run.is_dir().then_some(run));
                        player.app.update(Action::Status(status));
                    } else {
                        player.app.update(action);
                    }
                }
                if player.app.quit {
                    return Ok(());
                }
            }
        }
    })();
    ratatui::restore();
    result.map_err(|e| DashError(format!("terminal: {e}")))?;
    Ok(player.app)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracebench_tracer::file::{Header, TraceWriter};
    use tracebench_tracer::{EventKind, EventSink};

    fn recording() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut writer =
            TraceWriter::create(&dir.path().join("trace.tbt"), &Header::now(vec![])).unwrap();
        for (i, tid) in [1, 2, 1, 2, 1].into_iter().enumerate() {
            writer.event(&Event {
                time_ns: 1_000_000_000 * (i as u64 + 1),
                pid: 1,
                tid,
                kind: EventKind::Signal { signal: 10 },
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
        assert_eq!(player.app.events, 3);
        player.seek(u64::MAX);
        assert_eq!(player.app.events, 5);
        player.seek(2_000_000_000);
        assert_eq!(player.app.events, 2, "a rebuilt model, not a rewound one");
        assert_eq!(player.position(), (1.0, 4.0));
    }

    #[test]
    fn stepping_follows_the_selected_thread() {
        let dir = recording();
        let mut player = load(dir.path()).unwrap();
        player.seek(0);
        player.app.selected = Some(2);
        player.step();
        assert_eq!(player.playhead_ns, 2_000_000_000);
        player.step();
        assert_eq!(player.playhead_ns, 4_000_000_000);
        assert!(!player.playing, "stepping pauses");
        player.on_key(KeyCode::End);
        player.step();
        assert_eq!(player.playhead_ns, 5_000_000_000, "nothing after the end");
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
}
