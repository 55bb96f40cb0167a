//! The dashboard's budget, measured: ingest rate into the model, the cost
//! of a full frame, how fast a recording opens and seeks, and the memory a
//! long recording's replay takes. `bench/ui.sh` runs it and records the
//! figures in docs/benchmarks.md.
//!
//! `cargo bench -p tracebench-ui --bench ui [-- ingest|frame|replay|memory]`
//! (no argument: the first three; `memory` wants a process of its own,
//! because it reads the process's peak RSS).

use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use tracebench_trace::format::{Header, TraceWriter};
use tracebench_trace::{Event, EventKind, EventSink};
use tracebench_ui::model::{Action, App};

const THREADS: i32 = 100;
/// Trace time between two events: 20 µs, a busy traced server's pace.
const STEP_NS: u64 = 20_000;

/// A pool server's events, request after request: the acceptor accepts
/// and wakes a worker; the worker reads, sleeps, writes, closes and waits
/// again. 100 threads: the acceptor (tid 1000) and 99 workers.
struct Synthetic {
    i: u64,
    queue: Vec<Event>,
}

impl Synthetic {
    fn new() -> Self {
        Synthetic {
            i: 0,
            queue: Vec::new(),
        }
    }

    fn refill(&mut self) {
        let request = self.i / 14;
        let worker = 1001 + (request % (THREADS as u64 - 1)) as i32;
        let fd = 10 + request % 50;
        let t = |k: u64| 1_000_000_000 + (request * 14 + k) * STEP_NS;
        let e = |k: u64, tid: i32, kind: EventKind| Event {
            time_ns: t(k),
            pid: 1000,
            tid,
            kind,
        };
        let entry = |nr: u32, args: [u64; 6], data: Vec<u8>| EventKind::SyscallEntry {
            nr,
            args,
            data,
            data_capture: tracebench_trace::DataCapture::Captured,
        };
        let exit = |nr: u32, ret: i64, data: Vec<u8>| EventKind::SyscallExit {
            nr,
            ret,
            data,
            data_capture: tracebench_trace::DataCapture::Captured,
        };
        let (accept4, futex, recvfrom, nanosleep, sendto, close) = (288, 202, 45, 35, 44, 3);
        let request_bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        self.queue = vec![
            e(0, 1000, entry(accept4, [3, 0, 0, 0x80000, 0, 0], vec![])),
            e(1, 1000, exit(accept4, fd as i64, vec![])),
            e(2, 1000, entry(futex, [0x5000, 129, 1, 0, 0, 0], vec![])),
            e(3, 1000, exit(futex, 1, vec![])),
            e(4, worker, exit(futex, 0, vec![])),
            e(
                5,
                worker,
                entry(recvfrom, [fd, 0x7000, 8192, 0, 0, 0], vec![]),
            ),
            e(6, worker, exit(recvfrom, 27, request_bytes)),
            e(
                7,
                worker,
                entry(nanosleep, [0x7100, 0, 0, 0, 0, 0], vec![0; 16]),
            ),
            e(8, worker, exit(nanosleep, 0, vec![])),
            e(
                9,
                worker,
                entry(
                    sendto,
                    [fd, 0x7200, 125, 0, 0, 0],
                    b"HTTP/1.1 200 OK\r\n".to_vec(),
                ),
            ),
            e(10, worker, exit(sendto, 125, vec![])),
            e(11, worker, entry(close, [fd, 0, 0, 0, 0, 0], vec![])),
            e(12, worker, exit(close, 0, vec![])),
            e(13, worker, entry(futex, [0x5000, 128, 0, 0, 0, 0], vec![])),
        ];
        self.queue.reverse();
    }
}

impl Iterator for Synthetic {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        if self.queue.is_empty() {
            self.refill();
        }
        self.i += 1;
        self.queue.pop()
    }
}

fn ingest() -> App {
    let events: Vec<Event> = Synthetic::new().take(2_000_000).collect();
    let mut app = App::new("bench");
    let started = Instant::now();
    for event in events {
        app.update(Action::Trace(event));
    }
    let took = started.elapsed();
    println!(
        "ingest: 2000000 events in {:.3} s = {:.2} M events/s ({} threads, {} requests attributed)",
        took.as_secs_f64(),
        2.0 / took.as_secs_f64(),
        app.data.threads.len(),
        app.data.requests.stats().requests()
    );
    app
}

fn frame(app: &App) {
    let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
    let mut times = Vec::new();
    for _ in 0..300 {
        let started = Instant::now();
        terminal
            .draw(|frame| tracebench_ui::view::draw(frame, app))
            .unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "frame: 120x40, {} threads: mean {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        app.data.threads.len(),
        mean.as_secs_f64() * 1e3,
        times[times.len() * 99 / 100].as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3
    );
}

fn write_recording(dir: &std::path::Path, events: u64) {
    let mut writer = TraceWriter::create(
        &dir.join("trace.tbt"),
        &Header::now(vec![], tracebench_trace::Backend::Ptrace),
    )
    .unwrap();
    for event in Synthetic::new().take(events as usize) {
        writer.event(&event);
    }
    writer.finish().unwrap();
}

/// A cheap pseudo-random sequence, the same every run.
fn positions(n: usize) -> impl Iterator<Item = f64> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 10_000) as f64 / 10_000.0
    })
}

fn replay() {
    let dir = tempfile::tempdir().unwrap();
    write_recording(dir.path(), 1_000_000);
    let started = Instant::now();
    let mut player = tracebench_ui::replay::load(dir.path()).unwrap();
    let opened = started.elapsed();
    let (start, end) = (player.start_ns(), player.end_ns());
    let mut times = Vec::new();
    for at in positions(100) {
        let to = start + ((end - start) as f64 * at) as u64;
        let started = Instant::now();
        player.seek(to);
        times.push(started.elapsed());
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "replay: a 1000000-event recording ({:.1} s of trace) opens in {:.3} s; 100 seeks anywhere: mean {:.1} ms, max {:.1} ms",
        (end - start) as f64 / 1e9,
        opened.as_secs_f64(),
        mean.as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3
    );
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn memory() {
    let dir = tempfile::tempdir().unwrap();
    write_recording(dir.path(), 10_000_000);
    let size = std::fs::metadata(dir.path().join("trace.tbt"))
        .unwrap()
        .len();
    let before = status_kb("VmRSS:");
    let started = Instant::now();
    let mut player = tracebench_ui::replay::load(dir.path()).unwrap();
    let opened = started.elapsed();
    let (start, end) = (player.start_ns(), player.end_ns());
    for at in positions(20) {
        player.seek(start + ((end - start) as f64 * at) as u64);
    }
    println!(
        "memory: a 10000000-event recording ({} MB on disk) opened in {:.1} s; peak RSS {} MB (before opening {} MB)",
        size / 1_000_000,
        opened.as_secs_f64(),
        status_kb("VmHWM:") / 1024,
        before / 1024
    );
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| {
        if which.is_empty() {
            name != "memory"
        } else {
            which.iter().any(|w| w == name)
        }
    };
    if wants("ingest") || wants("frame") {
        let app = ingest();
        if wants("frame") {
            frame(&app);
        }
    }
    if wants("replay") {
        replay();
    }
    if wants("memory") {
        memory();
    }
}
