//! The dashboard end to end: our server under our tracer and our load
//! generator, once without a terminal (a plain summary) and once in a real
//! terminal under tmux, driven by keys.
// A test reads as one story, start to finish: no line limit here.
#![allow(clippy::too_many_lines)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn servers_running() -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && cmdline.starts_with(BIN.as_bytes())
            && cmdline.windows(6).any(|w| w == b"\0serve")
        {
            count += 1;
        }
    }
    count
}

/// Waits (at most 5 s) for the count of our traced servers to come back
/// to `before`: none left running.
fn assert_servers_back_to(before: usize) {
    let (gone, n) = eventually(Duration::from_secs(5), || {
        let n = servers_running();
        (n == before, n)
    });
    assert!(gone, "{n} traced servers left running");
}

/// Runs the dashboard without a terminal for `run_for`, recorded into
/// `record`.
fn record_headless(record: &std::path::Path, run_for: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["dash", "--headless-for", run_for, "--record-dir"])
        .arg(record)
        .output()
        .unwrap()
}

/// A fresh headless recording of `run_for`, in a directory removed with
/// the returned guard.
fn recorded_run(run_for: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempdir();
    let record = dir.path().join("run");
    let output = record_headless(&record, run_for);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (dir, record)
}

#[test]
fn without_a_terminal_it_says_so_and_prints_a_summary() {
    let _serial = serial();
    let before = servers_running();
    let dir = tempdir();
    let record = dir.path().join("run");
    let output = record_headless(&record, "2s");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a terminal"), "{stderr}");
    let summary = String::from_utf8(output.stdout).unwrap();
    let workers = summary.lines().filter(|l| l.contains(" worker-")).count();
    assert_eq!(workers, 5, "{summary}");
    let answered = answered_in(&summary);
    // 10 connections on 5 workers at 50 ms: about 100 requests a second.
    assert!(answered >= 50, "{summary}");
    assert!(summary.contains("latency p50"), "{summary}");
    // Requests served per worker, attributed from the trace alone, add up
    // to what the client saw answered (plus those still in flight when the
    // load stopped, less any whose close the tracer missed at the stop).
    let served: u64 = summary
        .lines()
        .filter(|l| l.contains(" worker-"))
        .map(|l| l.split_whitespace().nth(5).unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(
        served + 5 >= answered && served <= answered + 20,
        "served {served}, answered {answered}: {summary}"
    );
    assert!(summary.contains("server side, from the trace"), "{summary}");
    // CPU per thread, from /proc, once a second.
    assert!(
        summary
            .lines()
            .filter(|l| l.contains(" worker-"))
            .all(|l| l.trim_end().ends_with('%')),
        "{summary}"
    );
    assert!(summary.contains("recorded to"), "{summary}");
    // The recording: every traced event, every measured request, the settings.
    let logged: u64 =
        tracebench_loadgen::hlog::read_log(&std::fs::read(record.join("latency.hlog")).unwrap())
            .unwrap()
            .iter()
            .map(|i| i.histogram.len())
            .sum();
    assert_eq!(
        logged, answered,
        "the interval log holds every answered request"
    );
    let export = Command::new(BIN)
        .arg("export")
        .arg(record.join("trace.tbt"))
        .arg("-c")
        .output()
        .unwrap();
    assert!(
        export.status.success() && export.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    assert!(String::from_utf8_lossy(&export.stdout).contains("accept4"));
    // The third job: the run's latency histogram as CSV.
    let csv = Command::new(BIN)
        .arg("export")
        .arg(&record)
        .args(["--csv", "-"])
        .output()
        .unwrap();
    assert!(
        csv.status.success(),
        "{}",
        String::from_utf8_lossy(&csv.stderr)
    );
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert!(
        csv.starts_with("\"Value\",\"Percentile\",\"TotalCount\",\"1/(1-Percentile)\""),
        "{csv}"
    );
    assert!(
        csv.trim_end().ends_with(&format!(",{answered},Infinity")),
        "{csv}"
    );
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record.join("settings.json")).unwrap()).unwrap();
    assert_eq!(settings["traced"]["mode"], "pool-futex");
    assert_eq!(servers_running(), before, "the traced server must be gone");
}

fn tmux(args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is needed for this test; .ci/test installs it")
}

/// Starts `command` in a detached tmux session `width` × 40.
fn start_tmux(session: &str, width: u16, command: &str) -> std::process::ExitStatus {
    let width = width.to_string();
    tmux(&[
        "new-session",
        "-d",
        "-s",
        session,
        "-x",
        &width,
        "-y",
        "40",
        command,
    ])
    .status
}

fn screen(session: &str) -> String {
    String::from_utf8_lossy(&tmux(&["capture-pane", "-t", session, "-p"]).stdout).into_owned()
}

fn wait_for_screen(session: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = screen(session);
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Presses q and waits (bounded) for the session to end; true if it did.
/// The session is killed either way, so a failed test leaves nothing behind.
fn press_q_and_wait(session: &str) -> bool {
    tmux(&["send-keys", "-t", session, "q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux(&["has-session", "-t", session]).status.success() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let ended = !tmux(&["has-session", "-t", session]).status.success();
    let _ = tmux(&["kill-session", "-t", session]);
    ended
}

#[test]
fn in_a_terminal_it_draws_the_panes_and_answers_keys() {
    let _serial = serial();
    let before = servers_running();
    let session = format!("tracebench-test-{}", std::process::id());
    let dir = tempdir();
    let command = format!(
        "{BIN} dash --record-dir {}",
        dir.path().join("run").display()
    );
    let status = start_tmux(&session, 120, &command);
    assert!(status.success());
    // The latency title appears with the first answered requests.
    let text = wait_for_screen(&session, "  p99.9 ");
    for needle in [
        "threads",
        "worker-4",
        "  p99.9 ",
        "answered per 100 ms",
        "accept",
    ] {
        if !text.contains(needle) {
            let _ = tmux(&["kill-session", "-t", &session]);
            panic!("missing {needle:?} on screen:\n{text}");
        }
    }
    // Busy workers sleep in their 50 ms delay; idle ones wait on the
    // queue's futex: one or the other must show.
    assert!(
        text.contains("sleep") || text.contains("futex-wait"),
        "{text}"
    );
    tmux(&["send-keys", "-t", &session, "Space"]);
    let paused = wait_for_screen(&session, "[paused]");
    tmux(&["send-keys", "-t", &session, "?"]);
    let help = wait_for_screen(&session, "select the next thread");
    tmux(&["send-keys", "-t", &session, "?"]);
    tmux(&["send-keys", "-t", &session, "e"]);
    let exported = wait_for_screen(&session, "exported");
    let csvs: Vec<_> = std::fs::read_dir(dir.path().join("run"))
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // load.csv is the recording's own, written from the start.
            name.ends_with(".csv") && name != "load.csv"
        })
        .collect();
    // The mouse wheel selects a thread (an SGR wheel-down report, as a
    // terminal sends it once the dashboard asked for mouse reports); enter
    // then filters the events on it.
    let mouse_mode = String::from_utf8_lossy(
        &tmux(&[
            "display",
            "-p",
            "-t",
            &session,
            "#{mouse_sgr_flag}#{mouse_any_flag}",
        ])
        .stdout,
    )
    .trim()
    .to_owned();
    tmux(&["send-keys", "-t", &session, "-l", "\x1b[<65;30;10M"]);
    tmux(&["send-keys", "-t", &session, "Enter"]);
    let wheeled = wait_for_screen(&session, "recent events of");
    tmux(&["send-keys", "-t", &session, "Enter"]);
    // Unpause; ] ] turns the load up from 10 to 20 connections, live.
    tmux(&["send-keys", "-t", &session, "Space", "]", "]"]);
    let more_load = wait_for_screen(&session, "c=20");
    // m: the same dashboard on the next mode, recorded beside the first.
    tmux(&["send-keys", "-t", &session, "m"]);
    let next_mode = wait_for_screen(&session, "server pool-std");
    let next_mode_live = wait_for_screen(&session, "  p99.9 ");
    // A smaller window: the next frame fits it.
    tmux(&["resize-window", "-t", &session, "-x", "100", "-y", "30"]);
    let (resized, small) = eventually(Duration::from_secs(5), || {
        let text = screen(&session);
        // The frame's own corner, not a wider frame cut by the window.
        let top = text.lines().next().unwrap_or_default().trim_end();
        let fits = top.chars().count() == 100 && top.ends_with('┐');
        (fits && text.contains("  p99.9 "), text)
    });
    let still_there = !press_q_and_wait(&session);
    assert!(resized, "not redrawn at 100x30:\n{small}");
    assert_eq!(mouse_mode, "11", "the dashboard asks for SGR mouse reports");
    assert!(wheeled.contains("recent events of"), "{wheeled}");
    assert!(more_load.contains("c=20"), "{more_load}");
    assert!(next_mode.contains("server pool-std"), "{next_mode}");
    assert!(next_mode_live.contains("  p99.9 "), "{next_mode_live}");
    assert!(
        dir.path().join("run-1-pool-std").join("trace.tbt").exists(),
        "the second mode has its own recording"
    );
    assert!(paused.contains("[paused]"), "{paused}");
    assert!(help.contains("select the next thread"), "{help}");
    assert!(exported.contains("exported"), "{exported}");
    assert_eq!(
        csvs.len(),
        1,
        "e writes the latency CSV into the run directory"
    );
    assert!(!still_there, "q did not quit");
    assert_servers_back_to(before);
}

#[test]
fn a_recording_replays_headless_and_in_a_terminal() {
    let _serial = serial();
    let dir = tempdir();
    let record = dir.path().join("run");
    let output = record_headless(&record, "2s");
    assert!(output.status.success());
    let live = String::from_utf8(output.stdout).unwrap();

    // Without a terminal: the whole recording's summary, the same counts.
    let output = succeeds(Command::new(BIN).arg("replay").arg(&record));
    let replayed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        answered_in(&replayed),
        answered_in(&live),
        "{live}\n{replayed}"
    );
    // The failures too (issue 16: a replay knew latencies only), from
    // load.csv, a line per interval of the latency log.
    assert!(failed_in(&live).is_some(), "{live}");
    assert_eq!(failed_in(&replayed), failed_in(&live), "{live}\n{replayed}");
    // Perfetto gets the recording's thread names (issue 15), not bare tids.
    let chrome = Command::new(BIN)
        .args(["export", "--chrome", "-"])
        .arg(&record)
        .output()
        .unwrap();
    assert!(chrome.status.success(), "{chrome:?}");
    let chrome = String::from_utf8_lossy(&chrome.stdout);
    assert!(chrome.contains("\"name\":\"worker-0 "), "no worker-0 track");
    assert!(chrome.contains("\"process_name\""), "no process track name");
    let outcomes = std::fs::read_to_string(record.join("load.csv")).unwrap();
    assert!(outcomes.starts_with("interval,in_flight,statuses,errors\n"));
    assert!(outcomes.lines().count() > 10, "{outcomes}");
    // At the end of the recording the server has stopped: its main thread
    // and five workers have exited.
    let exited = replayed.lines().filter(|l| l.contains(" exited ")).count();
    assert!(exited >= 6, "{replayed}");
    // The names the live run read from /proc come back from threads.json.
    assert_eq!(
        replayed.lines().filter(|l| l.contains(" worker-")).count(),
        5,
        "{replayed}"
    );

    // In a terminal: it plays, seeks to the end, and quits.
    let session = format!("tracebench-replay-{}", std::process::id());
    let command = format!("{BIN} replay {}", record.display());
    assert!(start_tmux(&session, 150, &command).success());
    let text = wait_for_screen(&session, "replay of");
    tmux(&["send-keys", "-t", &session, "End"]);
    let end = wait_for_screen(&session, "  p99.9 ");
    let still_there = !press_q_and_wait(&session);
    assert!(text.contains("replay of"), "{text}");
    assert!(end.contains("  p99.9 "), "{end}");
    assert!(!still_there, "q did not quit the replay");
}

fn answered_in(summary: &str) -> u64 {
    summary
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_thread_per_request_server_is_summed_up_not_listed_whole_and_roles_come_from_behaviour() {
    // Issue 16: python's exit summary was 1 143 thread lines, and every
    // thread of a server we did not write was main or thread.
    let _serial = serial();
    let output = Command::new(BIN)
        .args([
            "dash",
            "--headless-for",
            "2s",
            "--no-record",
            "--mode",
            "thread",
            "--delay",
            "1ms",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let summary = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<&str> = summary
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("tid name"))
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<i32>().is_ok())
        })
        .collect();
    assert!(rows.len() <= 20, "{} thread lines: {summary}", rows.len());
    let more = summary
        .lines()
        .find(|l| l.contains(" more threads ("))
        .unwrap_or_else(|| panic!("no line for the rest: {summary}"));
    // Every request is counted once, listed or summed up.
    let listed: u64 = rows
        .iter()
        .filter_map(|l| l.split_whitespace().rev().nth(1)?.parse::<u64>().ok())
        .sum();
    let rest: u64 = more
        .rsplit_once(", ")
        .and_then(|(_, r)| r.strip_suffix(" served")?.parse().ok())
        .unwrap();
    let attributed: u64 = summary
        .lines()
        .find_map(|l| {
            l.strip_prefix("server side, from the trace: ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap();
    assert_eq!(listed + rest, attributed, "{summary}");
    // The main thread accepts and hands off; each connection's thread
    // serves what it did not accept.
    assert!(
        rows.iter()
            .any(|l| l.split_whitespace().nth(2) == Some("acceptor")),
        "{summary}"
    );
    assert!(
        rows.iter().filter(|l| l.contains(" worker ")).count() >= 10,
        "{summary}"
    );
}

/// "N failed" on the summary's second line.
fn failed_in(summary: &str) -> Option<u64> {
    count_in_summary(summary, "failed")
}

#[test]
fn another_server_started_after_two_dashes_is_traced_and_loaded() {
    let _serial = serial();
    let before = servers_running();
    let addr = unused_loopback_addr();
    let url = format!("http://{addr}/");
    let output = Command::new(BIN)
        .args(["dash", "--headless-for", "2s", "--no-record", "--url", &url])
        .args(["--", BIN, "serve", "--mode", "thread", "--delay", "10ms"])
        .args(["--addr", &addr.to_string()])
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(summary.contains(&format!("at {url}")), "{summary}");
    assert!(answered_in(&summary) >= 20, "{summary}");
    // Thread mode starts a thread per connection: the table saw many.
    assert!(summary.lines().count() > 10, "{summary}");
    assert_servers_back_to(before);
}

#[test]
fn a_running_server_is_attached_loaded_and_left_running() {
    let _serial = serial();
    let server = ServerProcess::start(&["--workers", "3", "--delay", "10ms"]);
    let url = format!("http://{}/", server.addr);
    let output = Command::new(BIN)
        .args(["dash", "--headless-for", "2s", "--no-record", "--url", &url])
        .args(["-p", &server.pid().to_string()])
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(answered_in(&summary) >= 20, "{summary}");
    let workers = summary.lines().filter(|l| l.contains(" worker-")).count();
    assert_eq!(workers, 3, "every thread of the running server: {summary}");
    // Detached, not killed: it still serves, and no thread stays stopped.
    assert_eq!(get(server.addr, "/").unwrap().status, 200);
    let stopped: Vec<_> = threads_of(server.pid())
        .into_iter()
        .filter(|(_, _, state, _)| matches!(state, 't' | 'T'))
        .collect();
    assert!(stopped.is_empty(), "{stopped:?}");
    let (status, _) = server.stop();
    assert!(status.success());
}

#[test]
fn a_program_without_a_url_is_watched_without_load_until_it_ends() {
    let started = Instant::now();
    let output = Command::new(BIN)
        .args(["dash", "--headless-for", "20s", "--no-record", "--"])
        .args([BIN, "lab", "handshake", "--rounds", "200"])
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(summary.contains("load: none"), "{summary}");
    // Parent and child ping-pong through a shared futex word.
    assert!(summary.contains("futex: "), "{summary}");
    let exited = summary.lines().filter(|l| l.contains(" exited ")).count();
    assert!(exited >= 2, "the lab's two processes: {summary}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the dashboard ends with the program, not at --headless-for"
    );
}

/// The last line of a recording's trace, as strace text.
fn last_trace_line(run: &std::path::Path) -> String {
    let text = Command::new(BIN)
        .args(["export", "--strace", "-"])
        .arg(run)
        .output()
        .unwrap();
    assert!(text.status.success(), "{text:?}");
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    text.lines().last().unwrap_or_default().to_owned()
}

#[test]
fn the_end_sends_sigterm_waits_the_grace_then_kills() {
    // Issue 16: q (here, the end of a headless run) used to SIGKILL the
    // program; now it gets SIGTERM and --grace to drain, and the
    // recording holds its own shutdown.
    let dir = tempdir();
    let run = dir.path().join("drains");
    let output = Command::new(BIN)
        .args(["dash", "--headless-for", "1s", "--record-dir"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let last = last_trace_line(&run);
    assert!(last.ends_with("+++ exited with 0 +++"), "{last}");

    // A program that ignores SIGTERM is killed once the grace is over,
    // not before it.
    let run = dir.path().join("ignores");
    let started = Instant::now();
    let output = Command::new(BIN)
        .args([
            "dash",
            "--headless-for",
            "300ms",
            "--grace",
            "1500ms",
            "--record-dir",
        ])
        .arg(&run)
        .args([
            "--",
            "sh",
            "-c",
            "trap '' TERM; while :; do sleep 0.05; done",
        ])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(output.status.success(), "{output:?}");
    assert!(
        took >= Duration::from_millis(1700),
        "killed before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    let last = last_trace_line(&run);
    assert!(last.ends_with("+++ killed by SIGKILL +++"), "{last}");
}

#[test]
fn the_programs_output_is_recorded_and_shown_in_its_pane() {
    let _serial = serial();
    // Headless: every line, stdout and stderr alike, lands in the
    // recording's output.log and none on the dashboard's own output.
    let dir = tempdir();
    let record = dir.path().join("run");
    let script = "echo to stdout; echo to stderr >&2; printf 'no newline at the end'";
    let output = succeeds(
        Command::new(BIN)
            .args(["dash", "--headless-for", "20s", "--record-dir"])
            .arg(&record)
            .args(["--", "sh", "-c", script]),
    );
    let log = std::fs::read_to_string(record.join("output.log")).unwrap();
    assert_eq!(log, "to stdout\nto stderr\nno newline at the end");
    let ours = String::from_utf8_lossy(&output.stdout);
    assert!(!ours.contains("to stdout"), "{ours}");

    // In a terminal: `o` shows the pane with the program's lines.
    let session = format!("tracebench-output-{}", std::process::id());
    let command = format!(
        "{BIN} dash --no-record -- sh -c 'echo hello from the program; printf \"\\033[31mred\\033[0m\\n\"; sleep 30'"
    );
    assert!(start_tmux(&session, 120, &command).success());
    wait_for_screen(&session, "recent events");
    tmux(&["send-keys", "-t", &session, "o"]);
    let text = wait_for_screen(&session, "hello from the program");
    let _ = press_q_and_wait(&session);
    assert!(text.contains("program output"), "{text}");
    assert!(text.contains("hello from the program"), "{text}");
    // The colour sequence is gone; its text stays.
    assert!(text.lines().any(|l| l.contains("│red ")), "{text}");
}

#[test]
fn sigterm_or_a_closed_terminal_stops_it_like_q_and_the_exit_status_says_why() {
    let _serial = serial();
    let before = servers_running();
    // Headless, SIGTERM: the load stops before the server, so no request
    // fails, the summary is printed, and the status is 128 + 15.
    let dash = std::process::Command::new(BIN)
        .args(["dash", "--no-record", "--headless-for", "30s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: SIGTERM to the dashboard we started.
    assert_eq!(unsafe { libc::kill(dash.id() as i32, libc::SIGTERM) }, 0);
    let output = dash.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(143), "{summary}");
    assert!(answered_in(&summary) > 0, "{summary}");
    assert!(summary.contains(" 0 failed"), "{summary}");
    assert_eq!(servers_running(), before, "the traced server is gone");

    // In a terminal that goes away (tmux kill-session: SIGHUP), the
    // dashboard ends too instead of spinning on a dead terminal.
    let dir = tempdir();
    let marker = dir.path().join("hup-run");
    let session = format!("tracebench-hup-{}", std::process::id());
    let errors = dir.path().join("hup-stderr");
    let command = format!(
        "{BIN} dash --record-dir {} 2>{}",
        marker.display(),
        errors.display()
    );
    assert!(start_tmux(&session, 120, &command).success());
    wait_for_screen(&session, "  p99.9 ");
    let _ = tmux(&["kill-session", "-t", &session]);
    let marker = marker.to_string_lossy().into_owned();
    let (ended, left) = eventually(Duration::from_secs(10), || {
        let left = dashboards_with(&marker);
        (left.is_empty() && servers_running() == before, left)
    });
    assert!(ended, "still running after SIGHUP: {left:?}");
    // Its summary could not be printed to the closed terminal: no panic
    // for that (issue 14: "failed printing to stdout").
    let said = std::fs::read_to_string(&errors).unwrap_or_default();
    assert!(!said.contains("panicked"), "{said}");

    // A replay in a terminal: SIGTERM ends it as q does, 128 + 15.
    let recording = dir.path().join("to-replay");
    assert!(record_headless(&recording, "1s").status.success());
    let session = format!("tracebench-replay-term-{}", std::process::id());
    let command = format!(
        "bash -c '{BIN} replay {}; echo EXIT=$?; sleep 30'",
        recording.display()
    );
    assert!(start_tmux(&session, 120, &command).success());
    wait_for_screen(&session, "replay of");
    let replays = ours_with(&[" replay ", &recording.to_string_lossy()]);
    assert_eq!(replays.len(), 1, "{replays:?}");
    // SAFETY: SIGTERM to the replay we started.
    assert_eq!(unsafe { libc::kill(replays[0], libc::SIGTERM) }, 0);
    let text = wait_for_screen(&session, "EXIT=");
    let _ = tmux(&["kill-session", "-t", &session]);
    assert!(text.contains("EXIT=143"), "{text}");

    // A watched program that ends by itself gives its status, as `trace`.
    let status = Command::new(BIN)
        .args(["dash", "--no-record", "--headless-for", "20s", "--"])
        .args(["sh", "-c", "exit 7"])
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(7));
}

/// The pids of our dashboards whose command line contains `marker`.
fn dashboards_with(marker: &str) -> Vec<i32> {
    ours_with(&[" dash ", marker])
}

/// The pids of our processes whose command line contains every one of
/// `words` (arguments joined by spaces).
fn ours_with(words: &[&str]) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.starts_with(BIN) && words.iter().all(|w| cmdline.contains(w))).then_some(pid)
        })
        .collect()
}

#[test]
fn dash_bad_input_fails_with_one_line() {
    for args in [
        &["dash", "--url", "http://127.0.0.1:1/"][..],
        &["dash", "-p", "999999999", "--no-record"][..],
        &["dash", "--mode", "nonsense", "--no-record"][..],
        &["dash", "-e", "trace=nosuchcall", "--no-record"][..],
        &["dash", "--workers", "0", "--no-record"][..],
        &["dash", "-c", "0", "--no-record"][..],
        &["dash", "--rate", "0", "--no-record"][..],
        &["dash", "--no-record", "--url", "http://127.0.0.1:9/", "--"][..],
    ] {
        let output = Command::new(BIN).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error:") || first.starts_with("tracebench: "),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn recordings_are_never_written_over_and_a_failed_start_leaves_none() {
    let _serial = serial();
    let dir = tempdir();
    // A directory that holds anything is refused, and left as it was.
    let taken = dir.path().join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("trace.tbt"), b"an older run").unwrap();
    fails_with_one_line(
        Command::new(BIN)
            .args(["dash", "--headless-for", "1s", "--record-dir"])
            .arg(&taken),
        "never written over",
    );
    assert_eq!(
        std::fs::read(taken.join("trace.tbt")).unwrap(),
        b"an older run"
    );

    // A server that dies before listening: its own words, and no run left.
    let failed = dir.path().join("failed");
    let stderr = fails_with_one_line(
        Command::new(BIN)
            .args(["dash", "--url", "http://127.0.0.1:9/", "--record-dir"])
            .arg(&failed)
            .args([
                "--",
                "sh",
                "-c",
                "echo 'cannot bind: address in use' >&2; exit 3",
            ]),
        "exited before listening",
    );
    assert!(stderr.contains("cannot bind: address in use"), "{stderr}");
    assert!(
        !failed.exists(),
        "a run that never started left its directory"
    );

    // Default names: two dashboards started in the same second get one
    // directory each.
    let first = Command::new(BIN)
        .args(["dash", "--headless-for", "1s"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let second = Command::new(BIN)
        .args(["dash", "--headless-for", "1s"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(second.status.success());
    assert!(first.wait_with_output().unwrap().status.success());
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for run in runs {
        succeeds(
            Command::new(BIN)
                .arg("export")
                .arg(&run)
                .args(["--csv", "-"]),
        );
    }
}

#[test]
fn a_missing_corrupt_or_cut_recording_gives_one_line_and_a_clean_terminal() {
    let _serial = serial();
    let dir = tempdir();
    let good = dir.path().join("good");
    let output = record_headless(&good, "1s");
    assert!(output.status.success());
    let trace = std::fs::read(good.join("trace.tbt")).unwrap();
    assert!(trace.len() > 4096, "{} bytes", trace.len());
    // A flipped byte inside the first block's checked payload (after the
    // 14-byte preamble, the header body and the 24-byte block header), and
    // a file cut in half.
    let corrupt = dir.path().join("corrupt.tbt");
    let mut bytes = trace.clone();
    let header_body = u32::from_le_bytes(trace[10..14].try_into().unwrap()) as usize;
    bytes[14 + header_body + 24 + 10] ^= 0xff;
    std::fs::write(&corrupt, &bytes).unwrap();
    let cut = dir.path().join("cut.tbt");
    std::fs::write(&cut, &trace[..trace.len() / 2]).unwrap();
    let missing = dir.path().join("nothing-here");

    for (what, path) in [("missing", &missing), ("corrupt", &corrupt)] {
        let output = Command::new(BIN).arg("replay").arg(path).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{what}");
        // The error alone: no notice that there is no terminal before it.
        assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
        assert!(stderr.starts_with("tracebench: "), "{what}: {stderr}");
        assert!(!stderr.contains("not a terminal"), "{what}: {stderr}");
        assert!(output.stdout.is_empty(), "{what}");
    }
    // Cut short: it replays what there is and says so.
    let output = Command::new(BIN).arg("replay").arg(&cut).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cut short"));
    assert!(String::from_utf8_lossy(&output.stdout).contains("trace events"));

    // In a terminal: the error, the shell's prompt, and nothing of a
    // dashboard left on the screen.
    let session = format!("tracebench-bad-replay-{}", std::process::id());
    assert!(start_tmux(&session, 120, "env PS1='ready$ ' bash --norc --noprofile").success());
    let _ = wait_for_screen(&session, "ready$");
    let command = format!("{BIN} replay {}; echo EXIT=$?", corrupt.display());
    tmux(&["send-keys", "-t", &session, &command, "Enter"]);
    let text = wait_for_screen(&session, "EXIT=1");
    let _ = tmux(&["kill-session", "-t", &session]);
    assert!(text.contains("EXIT=1"), "{text}");
    assert!(text.contains("tracebench: reading"), "{text}");
    assert!(
        !text.contains("threads"),
        "no dashboard left behind:\n{text}"
    );
    assert!(
        text.lines().rfind(|l| !l.trim().is_empty()) == Some("ready$"),
        "{text}"
    );
}

/// The requests a `--csv` export counts: the total count of its last row.
fn csv_total(csv: &str) -> u64 {
    csv.lines()
        .last()
        .and_then(|l| l.split(',').nth(2))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no total in {csv}"))
}

#[test]
fn a_cut_latency_log_replays_and_exports_the_intervals_before_the_cut() {
    let _serial = serial();
    let (_dir, record) = recorded_run("2s");
    let log = record.join("latency.hlog");
    let whole = std::fs::read(&log).unwrap();
    let answered_whole: u64 = tracebench_loadgen::hlog::read_log(&whole)
        .unwrap()
        .iter()
        .map(|i| i.histogram.len())
        .sum();
    assert!(answered_whole > 0);
    // Cut two thirds of the way in, mid-line (as a dashboard killed while
    // writing would leave it).
    let mut cut = whole.len() * 2 / 3;
    while whole[cut - 1] == b'\n' {
        cut += 1;
    }
    std::fs::write(&log, &whole[..cut]).unwrap();

    let output = Command::new(BIN)
        .arg("replay")
        .arg(&record)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("not a terminal"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {stderr}");
    assert!(
        warnings[0].starts_with("tracebench: ")
            && warnings[0].contains("latency.hlog is cut short mid-line at byte")
            && warnings[0].contains("the rest of the log was ignored"),
        "{stderr}"
    );
    let replayed = String::from_utf8(output.stdout).unwrap();
    let answered = answered_in(&replayed);
    assert!(
        answered > 0 && answered <= answered_whole,
        "{answered} of {answered_whole}: {replayed}"
    );
    assert!(replayed.contains(" worker-"), "the trace is replayed whole");

    let output = succeeds(
        Command::new(BIN)
            .arg("export")
            .arg(&record)
            .args(["--csv", "-"]),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("cut short")).collect();
    assert_eq!(warnings.len(), 1, "one warning: {stderr}");
    assert!(
        warnings[0].starts_with("tracebench export: ") && warnings[0].contains("latency.hlog"),
        "{stderr}"
    );
    assert!(!stderr.contains("ParseError"), "{stderr}");
    let exported = csv_total(&String::from_utf8(output.stdout).unwrap());
    assert_eq!(
        exported, answered,
        "replay and export read the same intervals"
    );

    // Not a log at all: one clear line naming the file, from both.
    std::fs::write(&log, b"this is not an interval log\n").unwrap();
    for args in [&["replay"][..], &["export", "--csv", "-"][..]] {
        let output = Command::new(BIN)
            .arg(args[0])
            .arg(&record)
            .args(&args[1..])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(
            stderr.starts_with("tracebench: reading ")
                && stderr.contains("latency.hlog: not an HdrHistogram interval log"),
            "{args:?}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn export_refuses_to_write_over_its_own_input() {
    let _serial = serial();
    let (dir, record) = recorded_run("1s");
    let file = dir.path().join("copy.tbt");
    std::fs::copy(record.join("trace.tbt"), &file).unwrap();
    // Other names for the same files: a symbolic link, and a path that
    // goes round about.
    let link = dir.path().join("link.hlog");
    std::os::unix::fs::symlink(record.join("latency.hlog"), &link).unwrap();
    let roundabout = record.join("..").join("run").join("trace.tbt");
    // Every file of a recording is part of it, read or not (issue 14).
    let threads = record.join("threads.json");
    let settings = record.join("settings.json");
    let inputs = [
        record.join("trace.tbt"),
        record.join("latency.hlog"),
        threads.clone(),
        settings.clone(),
        file.clone(),
    ];
    let before: Vec<Vec<u8>> = inputs.iter().map(|p| std::fs::read(p).unwrap()).collect();

    let cases: [(&std::path::Path, &str, &std::path::Path); 7] = [
        (&file, "--strace", &file),
        (&record, "--csv", &record.join("latency.hlog")),
        (&record, "--hgrm", &link),
        (&record, "--jsonl", &roundabout),
        (&record, "--chrome", &record.join("trace.tbt")),
        (&record, "--jsonl", &threads),
        (&record, "--strace", &settings),
    ];
    // Each time a fresh output comes first and the input last: none is
    // written, not even the first.
    for (input, option, output) in cases {
        let fresh = dir.path().join("fresh.txt");
        let result = Command::new(BIN)
            .arg("export")
            .arg(input)
            .arg("--requests")
            .arg(&fresh)
            .arg(option)
            .arg(output)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        let what = format!("{option} {}", output.display());
        assert!(!result.status.success(), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
        assert!(
            stderr.starts_with(&format!("tracebench: {what} would overwrite the input ")),
            "{stderr}"
        );
        assert!(!fresh.exists(), "{what}: nothing is written");
        for (path, bytes) in inputs.iter().zip(&before) {
            assert!(
                std::fs::read(path).unwrap() == *bytes,
                "{what}: {} changed",
                path.display()
            );
        }
    }
    // Two outputs on one file: refused before either is written.
    let twice = dir.path().join("twice.csv");
    fails_with_one_line(
        Command::new(BIN)
            .arg("export")
            .arg(&record)
            .arg("--csv")
            .arg(&twice)
            .arg("--hgrm")
            .arg(dir.path().join(".").join("twice.csv")),
        "--csv and --hgrm both name",
    );
    assert!(!twice.exists());
    // Standard output and other files are still fine.
    succeeds(
        Command::new(BIN)
            .arg("export")
            .arg(&record)
            .args(["--csv", "-", "--strace"])
            .arg(dir.path().join("run.txt")),
    );
    assert!(
        std::fs::read_to_string(dir.path().join("run.txt"))
            .unwrap()
            .contains("accept4")
    );
}

#[test]
fn the_header_says_at_once_what_the_capture_will_not_see() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the perf backend needs root");
    let _serial = serial();
    let before = servers_running();
    let session = format!("tracebench-caveat-{}", std::process::id());
    // Without BTF, wake-ups come through perf events: a caveat known
    // from the start.
    let command = format!(
        "TRACEBENCH_BTF=/nonexistent/vmlinux {BIN} dash --backend perf --workers 2 --no-record"
    );
    assert!(start_tmux(&session, 250, &command).success());
    let text = wait_for_screen(&session, "read through perf events");
    let ended = press_q_and_wait(&session);
    assert!(
        text.lines()
            .take(3)
            .any(|l| l.contains("! reading /nonexistent/vmlinux")),
        "{text}"
    );
    assert!(ended, "q must end it");
    assert_servers_back_to(before);
}
