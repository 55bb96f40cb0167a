//! The dashboard tells the truth about servers we did not write (issue 16):
//! for the assembly thread-pool server, nginx, python's http.server, node
//! and a JDK HttpServer, run headless under load and recorded, the roles
//! come from what the threads do, every answered request is served by a
//! thread of the trace, a thread blocked in a call not traced is not
//! "running", the bytes written are counted, the end is SIGTERM and the
//! server's own shutdown (never SIGKILL), and the replay of the recording
//! gives the live run's counts.
// A test reads as one story, start to finish: no line limit here.
#![allow(clippy::too_many_lines)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::foreign::{self, ForeignServer, free_port};
use common::*;

/// Load connections of every run.
const CONNECTIONS: u64 = 4;

/// One thread's line of the dashboard's exit summary.
#[derive(Debug)]
struct Row {
    tid: i32,
    role: String,
    state: String,
    served: u64,
    /// The CPU column ("0%", "12%", "-").
    cpu: String,
}

/// What a headless dashboard run printed and recorded.
struct DashRun {
    summary: String,
    run: PathBuf,
    _dir: tempfile::TempDir,
}

impl DashRun {
    /// The thread table: fixed columns (tid 8, name 15, role 10, state 12),
    /// as `dash` prints them; names may be blank.
    fn rows(&self) -> Vec<Row> {
        self.summary
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("tid name"))
            .skip(1)
            .filter(|l| l.get(..8).is_some_and(|t| t.trim().parse::<i32>().is_ok()))
            .map(|l| {
                let field =
                    |from: usize, to: usize| l.get(from..to.min(l.len())).unwrap_or("").trim();
                let numbers: Vec<&str> = l.get(49..).unwrap_or("").split_whitespace().collect();
                Row {
                    tid: field(0, 8).parse().unwrap(),
                    role: field(25, 35).to_owned(),
                    state: field(36, 48).to_owned(),
                    served: numbers.get(1).and_then(|n| n.parse().ok()).unwrap_or(0),
                    cpu: numbers.get(2).map_or_else(String::new, |c| (*c).to_owned()),
                }
            })
            .collect()
    }

    /// Requests served by the threads summed up on the "… more threads"
    /// line.
    fn served_by_the_rest(&self) -> u64 {
        self.summary
            .lines()
            .find(|l| l.contains(" more threads ("))
            .and_then(|l| l.rsplit_once(", ")?.1.strip_suffix(" served")?.parse().ok())
            .unwrap_or(0)
    }

    /// A number before `word` on the summary's second line ("N answered,
    /// M failed").
    fn count(&self, word: &str) -> u64 {
        summary_count(&self.summary, word)
    }

    /// Requests the trace attributed ("server side, from the trace: N").
    fn attributed(&self) -> u64 {
        self.summary
            .lines()
            .find_map(|l| {
                l.strip_prefix("server side, from the trace: ")?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no server side: {}", self.summary))
    }
}

fn summary_count(summary: &str, word: &str) -> u64 {
    count_in_summary(summary, word)
        .unwrap_or_else(|| panic!("no {word:?} in {:?}", summary.lines().nth(1)))
}

/// `tracebench dash` on `server` for `run_for`, loaded with
/// [`CONNECTIONS`] connections, recorded.
fn dash_on(server: &ForeignServer, run_for: &str) -> DashRun {
    let url = format!("http://127.0.0.1:{}/", server.port);
    dash_loading(server, run_for, &url, &[])
}

/// [`dash_on`], loading `url` with `extra` options.
fn dash_loading(server: &ForeignServer, run_for: &str, url: &str, extra: &[&str]) -> DashRun {
    let dir = tempdir();
    let run = dir.path().join("run");
    let output = Command::new(BIN)
        .args([
            "dash",
            "--headless-for",
            run_for,
            "--grace",
            "5s",
            "--record-dir",
        ])
        .arg(&run)
        .args(["--url", url])
        .args(extra)
        .args(["-c", &CONNECTIONS.to_string(), "--"])
        .args(server.command_line())
        .current_dir(server.dir())
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    if std::env::var_os("SHOW").is_some() {
        eprintln!("{summary}");
    }
    assert!(
        output.status.success(),
        "{}: {output:?}\n{summary}",
        server.name
    );
    DashRun {
        summary,
        run,
        _dir: dir,
    }
}

fn export(run: &Path, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .arg("export")
        .arg(run)
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What every server must show, whatever its architecture.
fn check_the_common_truths(name: &str, dash: &DashRun) {
    let rows = dash.rows();
    let answered = dash.count("answered");
    assert!(answered >= 20, "{name}: {}", dash.summary);
    // Every answer was served by a thread of the trace; the trace may
    // count a few more: those in flight when the load stopped, and the
    // dashboard's own probe (a connection that asks nothing, made to see
    // that the server listens).
    let attributed = dash.attributed();
    assert!(
        (answered..=answered + CONNECTIONS + 1).contains(&attributed),
        "{name}: {answered} answered, {attributed} attributed\n{}",
        dash.summary
    );
    let served: u64 = rows.iter().map(|r| r.served).sum::<u64>() + dash.served_by_the_rest();
    assert_eq!(
        served, attributed,
        "{name}: served column\n{}",
        dash.summary
    );
    // The answers' bytes are counted, whatever call wrote them (writev,
    // sendto, write…).
    let requests = export(&dash.run, &["--requests", "-"]);
    let header: Vec<&str> = requests.lines().next().unwrap().split(',').collect();
    let written = header.iter().position(|c| *c == "bytes_written").unwrap();
    let with_bytes = requests
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(written).is_some_and(|b| b != "0"))
        .count() as u64;
    assert!(
        with_bytes >= answered,
        "{name}: {with_bytes} requests with bytes written, {answered} answered"
    );
    // No thread that used no CPU is called running for most of its life:
    // blocked in a call not traced, it was looked at in /proc.
    let states = export(&dash.run, &["-c"]);
    for row in rows.iter().filter(|r| r.cpu == "0%") {
        let Some(running) = running_share(&states, row.tid) else {
            continue;
        };
        assert!(
            running < 50.0,
            "{name}: thread {} used no CPU yet is running {running} % of its life\n{states}",
            row.tid
        );
    }
    // The end was SIGTERM and the server's own shutdown, not SIGKILL.
    let text = export(&dash.run, &["--strace", "-"]);
    assert!(
        !text.contains("killed by SIGKILL"),
        "{name}: {}",
        text.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    // The replay gives the live run's counts.
    let replay = Command::new(BIN)
        .arg("replay")
        .arg(&dash.run)
        .output()
        .unwrap();
    assert!(replay.status.success(), "{name}: {replay:?}");
    let replayed = String::from_utf8_lossy(&replay.stdout);
    for word in ["answered", "failed", "flight"] {
        assert_eq!(
            summary_count(&replayed, word),
            dash.count(word),
            "{name}: {word}\n{}\n{replayed}",
            dash.summary
        );
    }
}

/// The share of its life thread `tid` was running, from `-c`'s thread
/// table (the first table whose rows start with a tid).
fn running_share(summary: &str, tid: i32) -> Option<f64> {
    summary
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&tid.to_string()))?
        .split_whitespace()
        .nth(2)?
        .trim_end_matches('%')
        .parse()
        .ok()
}

fn roles<'a>(rows: &'a [Row], role: &str) -> Vec<&'a Row> {
    rows.iter().filter(|r| r.role == role).collect()
}

#[test]
fn the_assembly_pool_has_one_acceptor_and_four_workers() {
    let _serial = serial();
    let server = foreign::asm_server(free_port());
    let dash = dash_on(&server, "2s");
    check_the_common_truths("asm", &dash);
    let rows = dash.rows();
    assert_eq!(roles(&rows, "acceptor").len(), 1, "{}", dash.summary);
    let workers = roles(&rows, "worker");
    assert_eq!(workers.len(), 4, "{}", dash.summary);
    assert!(workers.iter().all(|w| w.served > 0), "{}", dash.summary);
}

#[test]
fn nginx_workers_are_event_loops_and_the_waiting_master_is_not_running() {
    let _serial = serial();
    let server = foreign::nginx(free_port(), 1);
    let dash = dash_on(&server, "3s");
    check_the_common_truths("nginx", &dash);
    let rows = dash.rows();
    let loops = roles(&rows, "event-loop");
    assert_eq!(loops.len(), 1, "{}", dash.summary);
    assert!(loops[0].served > 0);
    // The master waits for signals in rt_sigsuspend: in the default set
    // now, and a look at /proc says so between its calls; -c of the
    // recording shows it asleep, not running.
    let master = rows.iter().map(|r| r.tid).min().unwrap();
    let summary = export(&dash.run, &["-c"]);
    let running = running_share(&summary, master)
        .unwrap_or_else(|| panic!("no line for the master {master}: {summary}"));
    assert!(
        running < 50.0,
        "the master is running {running} %: {summary}"
    );
}

#[test]
fn the_dashboard_loads_https_with_the_certificate_checked() {
    // Issue 15: the dashboard's load speaks https too, with load's
    // --cacert and -k; without them this self-made certificate fails
    // every request.
    let _serial = serial();
    let certificates = tempdir();
    let [ca, certificate, key] = foreign::certificates(certificates.path());
    let tls_port = free_port();
    let server = foreign::nginx_tls(free_port(), tls_port, &certificate, &key);
    let url = format!("https://127.0.0.1:{tls_port}/");
    let ca = ca.display().to_string();
    let dash = dash_loading(&server, "2s", &url, &["--cacert", &ca]);
    let answered = dash.count("answered");
    assert!(answered >= 20, "{}", dash.summary);
}

#[test]
fn python_accepts_on_one_thread_and_serves_on_a_thread_per_request() {
    let _serial = serial();
    let server = foreign::python(free_port());
    let dash = dash_on(&server, "2s");
    check_the_common_truths("python", &dash);
    let rows = dash.rows();
    let acceptors = roles(&rows, "acceptor");
    assert_eq!(acceptors.len(), 1, "{}", dash.summary);
    assert_eq!(acceptors[0].served, 0, "it hands off: {}", dash.summary);
    assert!(roles(&rows, "worker").len() >= 5, "{}", dash.summary);
    assert!(rows.len() <= 20, "the rest summed up: {}", dash.summary);
}

#[test]
fn node_serves_on_one_event_loop() {
    let _serial = serial();
    let server = foreign::node(free_port());
    let dash = dash_on(&server, "2s");
    check_the_common_truths("node", &dash);
    let rows = dash.rows();
    let loops = roles(&rows, "event-loop");
    assert_eq!(loops.len(), 1, "{}", dash.summary);
    assert_eq!(
        loops[0].served,
        dash.attributed(),
        "one loop serves all: {}",
        dash.summary
    );
}

#[test]
fn the_jvm_has_a_dispatcher_and_a_pool_of_workers() {
    let _serial = serial();
    let server = foreign::java(free_port());
    let dash = dash_on(&server, "3s");
    check_the_common_truths("java", &dash);
    let rows = dash.rows();
    assert_eq!(roles(&rows, "acceptor").len(), 1, "{}", dash.summary);
    let workers = roles(&rows, "worker");
    assert!((1..=4).contains(&workers.len()), "{}", dash.summary);
    // None of the JVM's own threads is taken for part of the server.
    assert!(roles(&rows, "event-loop").is_empty(), "{}", dash.summary);
    assert!(
        rows.iter()
            .all(|r| r.state != "running" || r.role != "idle")
    );
}

fn tmux(args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is needed for this test; .ci/test installs it")
}

/// The dashboard on `server` in a terminal (tmux): it draws the server's
/// `role` thread and its latency, then q ends it with SIGTERM within the
/// grace, the dashboard's status is 0, and the recording holds the
/// server's own end (never SIGKILL). Returns the recording's strace text.
fn q_in_a_terminal(server: &ForeignServer, role: &str) -> String {
    let dir = tempdir();
    let run = dir.path().join("run");
    let status = dir.path().join("status");
    let line: Vec<String> = server
        .command_line()
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    let command = format!(
        "{BIN} dash --grace 5s --record-dir {} --url http://127.0.0.1:{}/ -c 4 -- {}; echo $? > {}",
        run.display(),
        server.port,
        line.join(" "),
        status.display()
    );
    let session = format!("tracebench-{}-{}", server.name, std::process::id());
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "150",
        // Room for the JVM's thirty-odd threads in the table.
        "-y",
        "60",
        "-c",
        &server.dir().display().to_string(),
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    let screen = || {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-t", &session, "-p"]).stdout).into_owned()
    };
    // The JVM takes seconds to start under a tracer.
    let (drawn, text) = eventually(Duration::from_secs(40), || {
        let text = screen();
        (text.contains("p99.9") && text.contains(role), text)
    });
    if !drawn {
        let _ = tmux(&["kill-session", "-t", &session]);
    }
    assert!(drawn, "{}: {text}", server.name);
    tmux(&["send-keys", "-t", &session, "q"]);
    let (ended, _) = eventually(Duration::from_secs(8), || {
        let done = std::fs::read_to_string(&status).is_ok_and(|s| !s.trim().is_empty());
        (done, ())
    });
    let last_screen = screen();
    let _ = tmux(&["kill-session", "-t", &session]);
    assert!(
        ended,
        "{}: q did not end it within the grace: {last_screen}",
        server.name
    );
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "0");
    let text = export(&run, &["--strace", "-"]);
    assert!(text.contains("--- SIGTERM"), "{}: no SIGTERM", server.name);
    assert!(!text.contains("killed by SIGKILL"), "{}", server.name);
    text
}

#[test]
fn in_a_terminal_q_ends_nginx_with_sigterm_and_its_own_shutdown() {
    // Issue 16: q killed the server it started with SIGKILL, so nginx left
    // its pid file and no shutdown showed in the recording.
    let _serial = serial();
    let server = foreign::nginx(free_port(), 2);
    let pid_file = server.dir().join("nginx.pid");
    let text = q_in_a_terminal(&server, "event-loop");
    assert!(
        !pid_file.exists(),
        "nginx's own shutdown removes its pid file"
    );
    assert!(
        text.trim_end().ends_with("+++ exited with 0 +++"),
        "{}",
        &text[text.len().saturating_sub(400)..]
    );
}

#[test]
fn in_a_terminal_q_ends_the_other_four_with_sigterm() {
    let _serial = serial();
    for (server, role, end) in [
        (
            foreign::asm_server(free_port()),
            "acceptor",
            "+++ exited with 0 +++",
        ),
        (
            foreign::node(free_port()),
            "event-loop",
            "+++ exited with 0 +++",
        ),
        // python has no SIGTERM handler: the signal's default action ends it.
        (
            foreign::python(free_port()),
            "acceptor",
            "+++ killed by SIGTERM +++",
        ),
        // The JVM runs its shutdown hooks, then exits 143.
        (
            foreign::java(free_port()),
            "acceptor",
            "+++ exited with 143 +++",
        ),
    ] {
        let text = q_in_a_terminal(&server, role);
        assert!(
            text.trim_end().ends_with(end),
            "{}: {}",
            server.name,
            &text[text.len().saturating_sub(400)..]
        );
    }
}
