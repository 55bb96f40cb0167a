//! `tracebench lab NAME` end to end: the real binary, its output, and what
//! `tracebench trace` sees of it (clone flags, futex calls), plus `ipcs -s`
//! after the semaphore lab, finished or interrupted.
// A test reads as one story, start to finish: no line limit here.
#![allow(clippy::too_many_lines)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// `tracebench ARGS…`, bounded: a lab that hangs fails the test.
fn tracebench(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tracebench");
    let pid = child.id() as i32;
    let (done, finished) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output().expect("wait for tracebench");
        let _ = done.send(());
        output
    });
    if finished.recv_timeout(Duration::from_secs(120)).is_err() {
        // SAFETY: kill(2) on the child we started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("tracebench {args:?} did not finish within 120 s");
    }
    waiter.join().unwrap()
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a lab that must succeed and returns its standard output.
fn lab_ok(args: &[&str]) -> String {
    let mut all = vec!["lab"];
    all.extend_from_slice(args);
    let output = tracebench(&all);
    assert!(
        output.status.success(),
        "{all:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout_of(&output)
}

/// The number after `label` on the line that starts with it.
fn number_after(text: &str, label: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in {text}"))
}

#[test]
fn race_without_sync_loses_updates() {
    let _serial = serial();
    // Four threads that read, yield and write: a single overlap loses an
    // update. A few attempts keep a machine that happened to run them one
    // after another from failing the test, without hiding a counter that
    // never loses anything.
    let mut losses = Vec::new();
    for _ in 0..5 {
        let text = lab_ok(&[
            "race",
            "--sync",
            "none",
            "--threads",
            "4",
            "--target",
            "200000",
        ]);
        assert_eq!(number_after(&text, "expected"), 200_000, "{text}");
        let lost = number_after(&text, "lost");
        assert_eq!(number_after(&text, "final") + lost, 200_000, "{text}");
        losses.push(lost);
        if lost > 0 {
            break;
        }
    }
    assert!(
        losses.iter().any(|&lost| lost > 0),
        "no update lost in 5 runs: {losses:?}"
    );
}

#[test]
fn race_with_a_lock_or_an_atomic_loses_nothing() {
    let _serial = serial();
    for sync in ["futex-mutex", "atomic"] {
        let text = lab_ok(&[
            "race",
            "--sync",
            sync,
            "--threads",
            "4",
            "--target",
            "50001",
        ]);
        assert_eq!(number_after(&text, "final"), 50_001, "{sync}: {text}");
        assert_eq!(number_after(&text, "lost"), 0, "{sync}: {text}");
    }
}

/// The flags of a traced `clone(...)` call line, as a sorted list.
fn clone_flags_of(line: &str) -> Vec<String> {
    let flags = line
        .split("flags=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no flags= in {line}"));
    let mut flags: Vec<String> = flags.split('|').map(str::to_owned).collect();
    flags.sort();
    flags
}

#[test]
fn raw_clone_finds_min_and_max_with_exactly_the_material_flags() {
    let _serial = serial();
    let dir = tempdir();
    let trace = dir.path().join("clone.txt");
    let output = tracebench(&[
        "trace",
        "-e",
        "trace=clone,clone3",
        "-o",
        trace.to_str().unwrap(),
        "--",
        BIN,
        "lab",
        "raw-clone",
        "--text",
        "Traced: raw {clone}!",
    ]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout_of(&output);
    assert!(text.contains("found the smallest byte: 0x20 ' '"), "{text}");
    assert!(text.contains("found the largest byte: 0x7d '}'"), "{text}");
    assert!(text.contains("stacks unmapped: 2 of 2"), "{text}");

    let calls = std::fs::read_to_string(&trace).unwrap();
    let clone_lines: Vec<&str> = calls
        .lines()
        .filter(|line| line.contains("clone(") || line.contains("clone3("))
        .collect();
    assert_eq!(
        clone_lines.len(),
        2,
        "two clone calls and no clone3:\n{calls}"
    );
    let mut expected: Vec<String> = [
        "CLONE_VM",
        "CLONE_FS",
        "CLONE_FILES",
        "CLONE_SIGHAND",
        "CLONE_PARENT",
        "CLONE_THREAD",
        "CLONE_IO",
        "CLONE_CHILD_CLEARTID",
    ]
    .map(str::to_owned)
    .to_vec();
    expected.sort();
    for line in clone_lines {
        assert!(
            line.contains("clone(child_stack="),
            "raw clone, not clone3: {line}"
        );
        assert_eq!(clone_flags_of(line), expected, "{line}");
    }
}

#[test]
fn handshake_makes_two_futex_wakes_per_round_trip_under_the_tracer() {
    let _serial = serial();
    let dir = tempdir();
    let trace = dir.path().join("futex.txt");
    let output = tracebench(&[
        "trace",
        "-e",
        "trace=futex",
        "-o",
        trace.to_str().unwrap(),
        "--",
        BIN,
        "lab",
        "handshake",
        "--rounds",
        "300",
    ]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout_of(&output);
    assert_eq!(number_after(&text, "round trips"), 300, "{text}");

    let calls = std::fs::read_to_string(&trace).unwrap();
    // A call's name and arguments are on the line where it starts (whole,
    // or ending in <unfinished ...>); "resumed" lines repeat neither.
    let starts = |op: &str| {
        calls
            .lines()
            .filter(|line| !line.contains("resumed>") && line.contains(&format!("{op},")))
            .count()
    };
    assert_eq!(
        starts("FUTEX_WAKE"),
        600,
        "2 × 300 non-private wakes:\n{calls}"
    );
    assert_eq!(starts("FUTEX_WAKE_PRIVATE"), 0, "{calls}");
    // The lab's own count of its waits (parent and child) matches the
    // tracer's.
    let waits_counted: u64 = text
        .lines()
        .filter(|line| line.contains(" futex  "))
        .map(|line| {
            let before = line.split(" FUTEX_WAIT").next().unwrap();
            before.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(starts("FUTEX_WAIT") as u64, waits_counted, "{text}");
}

#[test]
fn pipe_echoes_every_message_and_reports_end_of_file() {
    let _serial = serial();
    let text = lab_ok(&["pipe", "--messages", "200"]);
    assert!(text.contains("sent 200 messages"), "{text}");
    assert!(text.contains("200 came back identical"), "{text}");
    assert!(
        text.contains("the child's read(2) returned 0 (end of file)"),
        "{text}"
    );
    assert!(
        text.contains("exited 0: the parent's read(2) returned 0 (end of file) too"),
        "{text}"
    );
}

/// The semaphore set ids `ipcs -s` lists. ipcs is a real dependency of
/// the test (util-linux; .ci/test installs it): missing, the test fails.
fn semaphore_sets() -> Vec<i32> {
    let output = Command::new("ipcs")
        .arg("-s")
        .output()
        .expect("ipcs (util-linux) must be installed: bash .ci/test installs it");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("0x"))
        .filter_map(|line| line.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

/// The set id in the semaphore lab's first line.
fn set_id_in(line: &str) -> i32 {
    line.split("System V set ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no set id in {line:?}"))
}

#[test]
fn semaphore_alternates_and_leaves_no_set_behind() {
    let _serial = serial();
    let text = lab_ok(&["semaphore", "--rounds", "500"]);
    let id = set_id_in(text.lines().next().unwrap());
    assert!(
        text.contains("parent turns 500, child turns 500, out of turn 0"),
        "{text}"
    );
    assert!(text.contains(&format!("set {id} removed")), "{text}");
    let sets = semaphore_sets();
    assert!(!sets.contains(&id), "set {id} still listed: {sets:?}");
}

#[test]
fn semaphore_removes_its_set_on_sigint() {
    let _serial = serial();
    // 2000 rounds of 2 × 5 ms: 20 s unless interrupted.
    let mut lab = Command::new(BIN)
        .args(["lab", "semaphore", "--rounds", "2000", "--delay", "5ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the semaphore lab");
    let pid = lab.id() as i32;
    let mut stdout = BufReader::new(lab.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let id = set_id_in(&first);
    let (running, sets) = eventually(Duration::from_secs(10), || {
        let sets = semaphore_sets();
        (sets.contains(&id) && !children_of(pid).is_empty(), sets)
    });
    assert!(running, "set {id} and the child while running: {sets:?}");
    let child = children_of(pid)[0].0;

    // SAFETY: kill(2) on the lab we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let (exited, status) = eventually(Duration::from_secs(20), || {
        let status = lab.try_wait().unwrap();
        (status.is_some(), status)
    });
    if !exited {
        let _ = lab.kill();
        let _ = lab.wait();
        panic!("the lab did not stop on SIGINT");
    }
    assert_eq!(status.unwrap().code(), Some(130), "exit 128 + SIGINT");
    let sets = semaphore_sets();
    assert!(!sets.contains(&id), "set {id} left after SIGINT: {sets:?}");
    // The parent reaped its child before exiting.
    assert!(
        !std::path::Path::new(&format!("/proc/{child}")).exists()
            || !std::fs::read_to_string(format!("/proc/{child}/cmdline"))
                .unwrap_or_default()
                .contains("semaphore"),
        "child {child} outlived the lab"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut lab.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("interrupted by signal 2"), "{stderr}");
}

#[test]
fn mutex_table_covers_every_lock_and_thread_count() {
    let _serial = serial();
    let text = lab_ok(&["mutex", "--threads", "3", "--duration", "30ms"]);
    for lock in ["futex-mutex", "std-mutex", "spinlock"] {
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with(lock)).collect();
        assert_eq!(rows.len(), 3, "{lock}: {text}");
        for (threads, row) in rows.iter().enumerate() {
            let fields: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(fields[1], (threads + 1).to_string(), "{row}");
            assert!(fields[2].parse::<u64>().unwrap() > 0, "{row}");
        }
    }
    assert!(text.contains("every count adds up"), "{text}");
}

#[test]
fn bad_flags_are_one_line_clap_errors() {
    let _serial = serial();
    for args in [
        &["lab", "race", "--sync", "bogus"][..],
        &["lab", "race", "--threads", "0"],
        &["lab", "handshake", "--rounds", "0"],
        &["lab", "semaphore", "--rounds", "40000"],
        &["lab", "no-such-lab"],
    ] {
        let output = tracebench(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.lines().next().unwrap_or("").starts_with("error: "),
            "{args:?}: {stderr}"
        );
    }
    // Out of the lab's own range (not clap's): one line, status 1.
    let output = tracebench(&["lab", "semaphore", "--delay", "5s"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn every_lab_says_what_it_teaches() {
    let _serial = serial();
    for (lab, teaches) in [
        ("race", "lose updates"),
        ("raw-clone", "CLONE_CHILD_CLEARTID"),
        ("handshake", "non-private"),
        ("pipe", "read(2) returns 0"),
        ("semaphore", "IPC_RMID"),
        ("mutex", "spinlock"),
    ] {
        let output = tracebench(&["lab", lab, "--help"]);
        assert!(output.status.success());
        let help = stdout_of(&output);
        assert!(help.contains(teaches), "{lab} --help: {help}");
    }
}
