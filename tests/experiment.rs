//! `tracebench experiment` end to end: the real binary runs every mode
//! traced and writes its run directory; the numbers must say what the
//! models say.
//!
//! Timing on a shared 2-core machine: the issue asks for 5 % of theory on
//! the real run (d = 1 s, docs/experiments.md). `--quick` uses d = 200 ms,
//! where the fixed costs (start-up under ptrace, ~10 connects, creating
//! 10 threads or processes, two ptrace stops per traced syscall) are a few
//! ms to a few tens of ms, i.e. 5–25 % of one wave, and a neighbour's build
//! can add more. So the quick test checks what the model is about — how
//! many back-to-back waves of d the batch took — with a tolerance of half
//! a wave: |measured − theory| < d/2. That is robust to tens of ms of noise
//! yet fails if any mode behaved like another model: the nearest wrong
//! answers are a whole wave away (thread taking pool time: 2 waves
//! instead of 1; a pool taking sync time: 10 instead of 2).
// A test reads as one story, start to finish: no line limit here.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tracebench_analysis::attribution::Attributor;
use tracebench_trace::format::TraceReader;

const MODES: [&str; 8] = [
    "sync",
    "fork",
    "thread",
    "pool-spin",
    "pool-futex",
    "pool-std",
    "epoll",
    "io-uring",
];
const N: u64 = 10;
const W: u64 = 5;
const QUICK_DELAY_S: f64 = 0.2;

/// One row of table.csv, by column name.
struct Row(HashMap<String, String>);

impl Row {
    fn text(&self, column: &str) -> &str {
        self.0
            .get(column)
            .unwrap_or_else(|| panic!("no column {column}"))
    }

    fn number(&self, column: &str) -> f64 {
        self.text(column)
            .parse()
            .unwrap_or_else(|e| panic!("{column} = {:?}: {e}", self.text(column)))
    }
}

fn read_csv(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(cells.len(), header.len(), "{line}");
            Row(header
                .iter()
                .zip(cells)
                .map(|(h, c)| (h.to_string(), c.to_string()))
                .collect())
        })
        .collect()
}

/// The contents of every `<text>` element of an SVG, trimmed.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|element| {
            let body = &element[element.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_owned())
        })
        .collect()
}

/// Requests the attribution finds when it reads the trace file back.
fn requests_in_trace(path: &Path) -> usize {
    let mut reader = TraceReader::open(path).unwrap();
    assert!(!reader.truncated(), "{} is cut short", path.display());
    let mut attributor = Attributor::new();
    let mut requests = 0;
    while let Some(block) = reader.read_block().unwrap() {
        for event in &block {
            attributor.feed(event, |_| requests += 1);
        }
    }
    requests
}

#[test]
fn quick_experiment_writes_every_file_and_matches_theory() {
    let _serial = serial();
    let dir = tempdir();
    let out = dir.path().join("run");
    let output = Command::new(BIN)
        .args(["experiment", "--quick", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stderr}");

    // Every file, and the table printed is the table written.
    let mut expected = vec![
        "table.md".to_owned(),
        "table.csv".to_owned(),
        "latency.svg".to_owned(),
    ];
    for mode in MODES {
        expected.push(format!("{mode}.tbt"));
        expected.push(format!("timeline-{mode}.svg"));
    }
    for name in &expected {
        let path = out.join(name);
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        assert!(size > 0, "{name} missing or empty; {stderr}");
    }
    let table_md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert_eq!(stdout, table_md);
    assert_eq!(
        table_md
            .lines()
            .filter(|l| MODES.iter().any(|m| l.starts_with(&format!("| {m} |"))))
            .count(),
        MODES.len(),
        "{table_md}"
    );

    // Plots: SVG, with their labels as text (no font library needed).
    let latency = std::fs::read_to_string(out.join("latency.svg")).unwrap();
    assert!(latency.starts_with("<svg"));
    let labels = svg_texts(&latency);
    for mode in MODES {
        assert!(labels.iter().any(|l| l == mode), "{mode} in {labels:?}");
        let timeline = std::fs::read_to_string(out.join(format!("timeline-{mode}.svg"))).unwrap();
        let labels = svg_texts(&timeline);
        if mode == "io-uring" {
            // Nothing to draw from syscalls, and the plot says why.
            assert!(
                labels.iter().any(|l| l.contains("inside io_uring_enter")),
                "{labels:?}"
            );
            continue;
        }
        // fork's rows are processes, and say so.
        let (row, kind) = if mode == "fork" {
            ("pid ", "process")
        } else {
            ("tid ", "thread")
        };
        assert!(
            labels.iter().any(|l| l.starts_with(row)),
            "{mode}: no {kind} rows in {labels:?}"
        );
        assert!(
            labels
                .iter()
                .any(|l| l.starts_with(&format!("{mode}: which {kind} served"))),
            "{labels:?}"
        );
    }

    let rows = read_csv(&out.join("table.csv"));
    let modes: Vec<&str> = rows.iter().map(|r| r.text("mode")).collect();
    assert_eq!(modes, MODES, "one row per mode, in the progression's order");
    for row in &rows {
        let mode = row.text("mode");
        let context = format!("{mode}: {stderr}");
        assert_eq!(row.number("answered"), N as f64, "{context}");
        assert_eq!(row.number("failed"), 0.0, "{context}");
        // io_uring's accepts, reads and writes are no system calls: a
        // syscall trace cannot tie its requests to a thread.
        let attributable = mode != "io-uring";
        let expected = if attributable { N } else { 0 };
        assert_eq!(row.number("attributed"), expected as f64, "{context}");
        let per_thread: u64 = row
            .text("requests_per_thread")
            .split(';')
            .filter(|n| !n.is_empty())
            .map(|n| n.parse::<u64>().unwrap())
            .sum();
        assert_eq!(per_thread, expected, "{context}");
        let serving = row.number("serving_threads") as u64;
        match mode {
            "sync" | "epoll" => assert_eq!(serving, 1, "{context}"),
            "io-uring" => assert_eq!(serving, 0, "{context}"),
            "thread" | "fork" => assert_eq!(serving, N, "{context}"),
            _ => assert!((1..=W).contains(&serving), "{context}"),
        }
        match mode {
            "thread" => assert!(row.number("threads_created") >= N as f64, "{context}"),
            "fork" => assert!(row.number("processes_created") >= N as f64, "{context}"),
            // One event loop: the main thread serves everything.
            "sync" | "epoll" | "io-uring" => {
                assert_eq!(row.number("threads_created"), 0.0, "{context}");
                assert_eq!(row.number("processes_created"), 0.0, "{context}");
            }
            _ => assert_eq!(row.number("threads_created"), W as f64, "{context}"),
        }
        if mode == "pool-futex" || mode == "pool-std" {
            // Idle workers sleep on the queue's condition variable.
            assert!(row.number("futex_waits") >= 1.0, "{context}");
        }
        assert!(row.number("peak_rss_kib") > 100.0, "{context}");
        assert!(row.number("context_switches") > 0.0, "{context}");
        assert!(row.number("p50_ms") <= row.number("p99_ms"), "{context}");

        // Theory, and the table's arithmetic.
        let waves = match mode {
            "sync" => N,
            "thread" | "fork" | "epoll" | "io-uring" => 1,
            _ => N.div_ceil(W),
        } as f64;
        let theory = row.number("theory_s");
        let measured = row.number("measured_s");
        assert!((theory - waves * QUICK_DELAY_S).abs() < 1e-9, "{context}");
        let deviation = (measured - theory) / theory * 100.0;
        assert!(
            (row.number("deviation_pct") - deviation).abs() < 0.1,
            "{context}"
        );
        assert!(
            (measured - theory).abs() < QUICK_DELAY_S / 2.0,
            "{mode}: {measured:.3} s is not {waves} wave(s) of {QUICK_DELAY_S} s; {stderr}"
        );
        // No request can beat the model: the slowest waits every wave.
        assert!(row.number("max_ms") >= theory * 1e3 * 0.98, "{context}");

        // The trace file is whole and says the same.
        assert_eq!(
            requests_in_trace(&out.join(format!("{mode}.tbt"))),
            expected as usize,
            "{context}"
        );
    }
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let _serial = serial();
    let dir = tempdir();
    let out = dir.path().join("never");
    for (args, needle) in [
        (&["--modes", "nonsense"][..], "unknown mode 'nonsense'"),
        (&["--modes", "sync,sync"][..], "listed twice"),
        (&["-c", "0"][..], "-c must be at least 1"),
        (&["--workers", "0"][..], "--workers must be at least 1"),
        (&["--delay", "0s"][..], "--delay must be longer than 0"),
    ] {
        let output = Command::new(BIN)
            .arg("experiment")
            .args(args)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} created the run directory");
    }
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                stat.rfind(')')
                    .and_then(|end| stat[end + 2..].split_whitespace().nth(1))
                    .and_then(|ppid| ppid.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

#[test]
fn ctrl_c_stops_the_traced_server_and_keeps_the_finished_modes() {
    let _serial = serial();
    let dir = tempdir();
    let out = dir.path().join("run");
    let mut child = Command::new(BIN)
        .args([
            "experiment",
            "--modes",
            "thread,sync",
            "--delay",
            "500ms",
            "--out",
        ])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // sync (10 × 500 ms) has started once its trace file exists; its
    // server is then our child.
    let started = Instant::now();
    let server = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "sync never started"
        );
        if out.join("sync.tbt").exists()
            && let Some(&server) = children_of(child.id()).first()
        {
            break server;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("the experiment did not stop within 10 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("interrupted during sync"), "{stderr}");
    assert!(
        !Path::new(&format!("/proc/{server}")).exists(),
        "the traced server {server} outlived the experiment"
    );
    // The mode that finished is in the table; the interrupted one is not.
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(table.contains("| thread |"), "{table}");
    assert!(!table.contains("| sync |"), "{table}");
}

/// `--backends`: the same server, untraced and under each backend, in one
/// table; the ptrace backend, which stops the server at each selected
/// syscall, costs it more CPU per request than no tracer at all; every
/// traced run recorded its calls and lost none.
#[test]
fn the_observer_effect_compares_the_backends_on_one_server() {
    let _serial = serial();
    let dir = tempdir();
    let out = dir.path().join("observer");
    let output = Command::new(BIN)
        .args([
            "experiment",
            "--backends",
            "none,ptrace,perf",
            "--duration",
            "1s",
            "-c",
            "4",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8(output.stdout).unwrap();
    let rows: HashMap<&str, Vec<&str>> = table
        .lines()
        .skip(2)
        .map(|l| {
            let cells: Vec<&str> = l
                .split('|')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            (cells[0], cells)
        })
        .collect();
    assert_eq!(rows.len(), 3, "{table}");
    let number = |backend: &str, column: usize| -> f64 {
        rows[backend][column]
            .trim_end_matches(['×', ' ', 'm', 's', 'µ'])
            .parse()
            .unwrap_or_else(|_| panic!("{backend} column {column}: {table}"))
    };
    assert_eq!(number("none", 2), 1.0);
    for backend in ["ptrace", "perf"] {
        assert!(number(backend, 1) > 100.0, "{backend} served: {table}");
        assert!(
            number(backend, 6) > 100.0,
            "{backend} recorded calls: {table}"
        );
        assert_eq!(number(backend, 7), 0.0, "{backend} lost events: {table}");
    }
    assert_eq!(number("none", 6), 0.0);
    assert!(
        number("ptrace", 5) > number("none", 5),
        "ptrace stops cost the server CPU: {table}"
    );
    for file in [
        "observer.md",
        "observer.svg",
        "observer-ptrace.tbt",
        "observer-perf.tbt",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let svg = std::fs::read_to_string(out.join("observer.svg")).unwrap();
    assert!(svg.contains("perf ("), "{svg}");
}
