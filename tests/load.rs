//! `tracebench load` against our own server and against test servers that
//! misbehave on purpose, each on a loopback port of its own.
// A test reads as one story, start to finish: no line limit here.
#![allow(clippy::too_many_lines)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::*;
use tracebench_loadgen::stats::ErrorKind;
use tracebench_loadgen::{LoadConfig, StopAfter, Target, run};

fn config(addr: SocketAddr, path: &str) -> LoadConfig {
    let mut config = LoadConfig::new(Target::parse(&format!("http://{addr}{path}")).unwrap());
    config.threads = 2;
    config
}

fn never_cancelled() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

#[test]
fn latencies_counts_and_concurrency_against_a_10ms_server() {
    let _serial = serial();
    for keep_alive in [false, true] {
        // Thread mode reports how many connections it served at once.
        let mut args = vec!["--mode", "thread", "--delay", "10ms"];
        if keep_alive {
            args.push("--keep-alive");
        }
        let server = ServerProcess::start(&args);
        let mut config = config(server.addr, "/");
        config.connections = 10;
        config.keep_alive = keep_alive;
        config.stop = StopAfter::Requests(300);
        let report = run(&config, never_cancelled()).unwrap();
        let stats = &report.stats;
        assert_eq!(
            stats.completed(),
            300,
            "-n is exact (keep-alive {keep_alive})"
        );
        assert_eq!(stats.failed(), 0);
        assert_eq!(stats.statuses.get(&200), Some(&300));
        // The server's 10 ms, plus a connection and a thread: never less,
        // and on a loaded 2-core VM up to a few ms more (a 1.5 ms band
        // failed once in CI at 12.06 ms); a wrong measure (no delay, or
        // a delay counted twice) is far outside either way.
        let p50 = stats.latency.value_at_quantile(0.5) as f64 / 1e6;
        assert!(
            (10.0..=15.0).contains(&p50),
            "p50 {p50:.3} ms (keep-alive {keep_alive})"
        );
        let expected_connections = if keep_alive { 10 } else { 300 };
        assert_eq!(
            stats.connections, expected_connections,
            "keep-alive {keep_alive}"
        );
        let (status, summary) = server.stop();
        assert!(status.success());
        let at_once: usize = summary
            .split("at most ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{summary}"));
        // With keep-alive the 10 connections live through the run: the
        // server must never see an 11th. Without, a connection the client
        // has finished with may still be closing on the server's side when
        // its successor arrives, so up to one more per connection can
        // overlap for a moment; more would mean the generator opened more
        // than -c.
        let bound = if keep_alive { 10 } else { 20 };
        assert!(
            at_once <= bound,
            "the server saw {at_once} connections at once with -c 10 (keep-alive {keep_alive})"
        );
    }
}

#[test]
fn a_live_limit_turns_the_concurrency_up_and_down_during_a_run() {
    let _serial = serial();
    let server = ServerProcess::start(&["--mode", "thread", "--delay", "10ms", "--keep-alive"]);
    let limit = Arc::new(std::sync::atomic::AtomicUsize::new(2));
    let mut config = config(server.addr, "/");
    config.connections = 8;
    config.keep_alive = true;
    config.stop = StopAfter::Requests(600);
    config.live_limit = Some(Arc::clone(&limit));
    // (limit in force, in flight) per 100 ms snapshot.
    let mut seen: Vec<(usize, usize)> = Vec::new();
    let report = tracebench_loadgen::run_observed(&config, never_cancelled(), |snapshot| {
        let now = limit.load(std::sync::atomic::Ordering::SeqCst);
        seen.push((now, snapshot.in_flight));
        let next = match seen.len() {
            4 => 6,
            9 => 1,
            _ => now,
        };
        limit.store(next, std::sync::atomic::Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(report.stats.completed(), 600, "-n stays exact: {seen:?}");
    assert_eq!(report.stats.failed(), 0);
    // A snapshot right after a change may still show the old limit's
    // requests finishing; from the next one on, the new limit holds.
    for (i, &(limit, in_flight)) in seen.iter().enumerate() {
        let settled = i > 0 && seen[i - 1].0 == limit;
        if settled {
            assert!(in_flight <= limit, "snapshot {i}: {seen:?}");
        }
    }
    assert!(
        seen.iter()
            .any(|&(limit, in_flight)| limit == 6 && in_flight > 2),
        "raising the limit put more connections to work: {seen:?}"
    );
    assert!(
        report.stats.connections <= 6,
        "never more connections than the limit allowed: {}",
        report.stats.connections
    );
    drop(server);
}

#[test]
fn open_loop_requests_that_never_get_an_answer_still_show_in_the_tail() {
    let _serial = serial();
    // A server that reads and never answers: every request times out, and
    // with 4 connections the schedule falls behind at once.
    let addr = misbehaving_server(|mut stream| {
        read_request(&mut stream);
        std::thread::sleep(Duration::from_secs(5));
    });
    let mut config = config(addr, "/");
    config.rate = Some(50.0);
    config.connections = 4;
    config.timeout = Duration::from_millis(300);
    config.stop = StopAfter::Duration(Duration::from_secs(1));
    let report = run(&config, never_cancelled()).unwrap();
    let stats = &report.stats;
    assert_eq!(stats.completed(), 0);
    let timeouts = stats.errors.get(&ErrorKind::Timeout).copied().unwrap_or(0);
    assert!(timeouts >= 4, "{:?}", stats.errors);
    // About 50 requests were due in the second; each is in the planned-time
    // histogram: the timed out ones at >= 300 ms, the rest at their wait so
    // far; none is an answer, so the actual-send histogram stays empty.
    assert!(
        (40..=60).contains(&stats.unanswered),
        "{} unanswered, {:?}",
        stats.unanswered,
        stats.errors
    );
    assert_eq!(stats.corrected.len(), stats.unanswered);
    assert!(stats.latency.is_empty());
    assert!(
        stats.corrected.max() >= 600_000_000,
        "the backlog waited most of the second: max {} ns",
        stats.corrected.max()
    );
    assert!(
        stats.corrected.min() < 100_000_000,
        "the last slots had just come due"
    );
}

#[test]
fn open_loop_far_above_what_the_server_serves_counts_every_unsent_request() {
    // Issue 14: six identical runs at a rate far above the server's
    // reported 3, 1, 1, 19 516, none and 21 044 unanswered; about 38 000
    // each time was true. Every slot of the schedule is either answered,
    // failed, or unanswered, however the deadline falls.
    let _serial = serial();
    let addr = misbehaving_server(|mut stream| {
        read_request(&mut stream);
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    });
    for _ in 0..5 {
        let mut config = config(addr, "/");
        config.rate = Some(100_000.0);
        config.connections = 5;
        config.stop = StopAfter::Duration(Duration::from_millis(500));
        let report = run(&config, never_cancelled()).unwrap();
        let stats = &report.stats;
        let due = 100_000.0 * 0.5;
        let accounted = (stats.completed() + stats.failed() + stats.unanswered) as f64;
        assert!(
            accounted > 0.9 * due && accounted < 1.1 * due,
            "{} answered, {} failed, {} unanswered of ~{due} due",
            stats.completed(),
            stats.failed(),
            stats.unanswered
        );
    }
}

/// Requests the one-answer-per-connection server below has read.
static READ_BY_ONE_ANSWER_SERVER: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

#[test]
fn a_post_is_never_sent_twice_and_every_retry_is_counted() {
    // Issue 14: with --keep-alive -X POST, a server that closes after
    // reading a second request received 199 POSTs for -n 100, and no retry
    // was shown.
    use std::sync::atomic::Ordering;
    let _serial = serial();
    let addr = misbehaving_server(|mut s| {
        read_request(&mut s);
        READ_BY_ONE_ANSWER_SERVER.fetch_add(1, Ordering::SeqCst);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        // The next request on the connection is read, then dropped (a
        // close with nothing sent is no request).
        let mut byte = [0u8; 1];
        if matches!(s.peek(&mut byte), Ok(n) if n > 0) {
            read_request(&mut s);
            READ_BY_ONE_ANSWER_SERVER.fetch_add(1, Ordering::SeqCst);
        }
    });
    for method in ["POST", "GET"] {
        READ_BY_ONE_ANSWER_SERVER.store(0, Ordering::SeqCst);
        let mut load = config(addr, "/");
        load.method = method.into();
        load.keep_alive = true;
        load.connections = 1;
        load.stop = StopAfter::Requests(100);
        let report = run(&load, never_cancelled()).unwrap();
        let stats = &report.stats;
        let read = READ_BY_ONE_ANSWER_SERVER.load(Ordering::SeqCst);
        assert_eq!(
            stats.completed() + stats.failed(),
            100,
            "{method}: {:?}",
            stats.errors
        );
        // Every request the server read was one we counted: sent once, or
        // once more as a counted retry.
        assert_eq!(read, 100 + stats.retries, "{method}: {:?}", stats.errors);
        if method == "POST" {
            assert_eq!(stats.retries, 0, "a POST is never sent twice");
            assert!(stats.failed() >= 45, "{:?}", stats.errors);
        } else {
            // The one request on each fresh connection is answered; the
            // second is dropped and sent again.
            assert_eq!(stats.completed(), 100, "{:?}", stats.errors);
            assert!(stats.retries >= 90, "{} retries", stats.retries);
        }
    }
}

#[test]
fn a_server_that_floods_its_answer_is_cut_off_at_the_size_cap() {
    let _serial = serial();
    // A head with no length, then bytes as fast as loopback takes them,
    // for ever: reading must stop at the response cap, not at memory's end.
    let addr = misbehaving_server(|mut stream| {
        read_request(&mut stream);
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
        let block = vec![b'x'; 1 << 16];
        while stream.write_all(&block).is_ok() {}
    });
    let mut config = config(addr, "/");
    config.connections = 1;
    config.threads = 1;
    config.timeout = Duration::from_secs(20);
    config.stop = StopAfter::Requests(2);
    let started = Instant::now();
    let report = run(&config, never_cancelled()).unwrap();
    let stats = &report.stats;
    assert_eq!(
        stats.errors.get(&ErrorKind::TooLarge),
        Some(&2),
        "{:?}",
        stats.errors
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "cut off at the cap, long before the timeout: {:?}",
        started.elapsed()
    );
}

#[test]
fn on_a_terminal_a_progress_bar_moves_and_the_summary_follows() {
    let _serial = serial();
    let server = ServerProcess::start(&["--delay", "10ms"]);
    let session = format!("tracebench-load-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(args)
            .output()
            .expect("tmux is needed for this test; .ci/test installs it")
    };
    let command = format!("{BIN} load -z 3s -c 2 http://{}/; sleep 30", server.addr);
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "120",
        "-y",
        "30",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    let screen = || {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-t", &session, "-p"]).stdout).into_owned()
    };
    // While it runs: the bar, with the milliseconds done out of 3000.
    let (moving, during) = eventually(Duration::from_secs(10), || {
        let text = screen();
        let done: Option<u64> = text
            .lines()
            .find_map(|l| {
                l.split("/3000 ms")
                    .next()
                    .filter(|_| l.contains("/3000 ms"))
            })
            .and_then(|l| l.split_whitespace().last()?.parse().ok());
        (done.is_some_and(|d| d > 0 && d < 3000), text)
    });
    // At the end: the summary.
    let (finished, after) = eventually(Duration::from_secs(15), || {
        let text = screen();
        (text.contains("Latency"), text)
    });
    let _ = tmux(&["kill-session", "-t", &session]);
    assert!(moving, "no moving progress bar on the terminal:\n{during}");
    assert!(during.contains('█'), "{during}");
    assert!(finished, "no summary after the run:\n{after}");
}

/// A test server that accepts on loopback and treats each connection with
/// `behave`, until the test ends.
fn misbehaving_server(behave: fn(std::net::TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || behave(stream));
        }
    });
    addr
}

fn read_request(stream: &mut std::net::TcpStream) {
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn every_failure_is_counted_under_its_kind_in_bounded_time() {
    let _serial = serial();
    let resets = misbehaving_server(|mut s| {
        read_request(&mut s);
        // SO_LINGER 0: close sends a reset.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let garbage = misbehaving_server(|mut s| {
        read_request(&mut s);
        let _ = s.write_all(b"this is not http\r\n\r\n");
    });
    let slow = misbehaving_server(|mut s| {
        read_request(&mut s);
        std::thread::sleep(Duration::from_secs(3));
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    });
    let refused = unused_loopback_addr();
    for (addr, kind) in [
        (resets, ErrorKind::Reset),
        (garbage, ErrorKind::BadResponse),
        (slow, ErrorKind::Timeout),
        (refused, ErrorKind::Refused),
    ] {
        let mut config = config(addr, "/");
        config.connections = 2;
        config.stop = StopAfter::Requests(4);
        config.timeout = Duration::from_millis(300);
        let start = Instant::now();
        let report = run(&config, never_cancelled()).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{kind:?} took {:?}",
            start.elapsed()
        );
        assert_eq!(report.stats.completed(), 0, "{kind:?}");
        assert_eq!(
            report.stats.errors.get(&kind),
            Some(&4),
            "{kind:?}: {:?}",
            report.stats.errors
        );
        assert_eq!(
            report.stats.failed(),
            4,
            "{kind:?}: {:?}",
            report.stats.errors
        );
    }
}

#[test]
fn a_whole_answer_followed_by_a_reset_is_an_answer_as_curl_counts_it() {
    // Issue 16: the assembly server answers, then closes with part of the
    // request unread, so the kernel sends a reset after the answer; 44 of
    // 200 such answers were counted as resets.
    let _serial = serial();
    let answers_then_resets = misbehaving_server(|mut s| {
        let mut first = [0u8; 8];
        let _ = s.read(&mut first);
        // Let the rest of the request arrive, unread: close then resets.
        std::thread::sleep(Duration::from_millis(5));
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let mut whole = config(answers_then_resets, "/");
    whole.connections = 2;
    whole.stop = StopAfter::Requests(50);
    let report = run(&whole, never_cancelled()).unwrap();
    assert_eq!(report.stats.completed(), 50, "{:?}", report.stats.errors);
    assert_eq!(report.stats.failed(), 0, "{:?}", report.stats.errors);
    // The same reset after half an answer is still a reset.
    let half_then_resets = misbehaving_server(|mut s| {
        read_request(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello");
        std::thread::sleep(Duration::from_millis(5));
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let mut half = config(half_then_resets, "/");
    half.connections = 2;
    half.stop = StopAfter::Requests(4);
    let report = run(&half, never_cancelled()).unwrap();
    assert_eq!(report.stats.completed(), 0);
    assert_eq!(report.stats.errors.get(&ErrorKind::Reset), Some(&4));
}

/// A 1 MiB response head: one header of 1 MiB, then an empty body.
fn huge_head() -> Vec<u8> {
    let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Big: ".to_vec();
    head.extend(std::iter::repeat_n(b'b', 1 << 20));
    head.extend_from_slice(b"\r\n\r\n");
    head
}

#[test]
fn a_head_over_the_limit_is_too_large_whether_it_comes_at_once_or_in_pieces() {
    let _serial = serial();
    let at_once = misbehaving_server(|mut s| {
        read_request(&mut s);
        let _ = s.write_all(&huge_head());
    });
    let in_pieces = misbehaving_server(|mut s| {
        read_request(&mut s);
        for piece in huge_head().chunks(8 * 1024) {
            if s.write_all(piece).is_err() {
                return;
            }
            let _ = s.flush();
        }
    });
    for addr in [at_once, in_pieces] {
        let mut config = config(addr, "/");
        config.connections = 2;
        config.stop = StopAfter::Requests(20);
        config.timeout = Duration::from_secs(5);
        let report = run(&config, never_cancelled()).unwrap();
        assert_eq!(report.stats.completed(), 0, "{:?}", report.stats.statuses);
        assert_eq!(
            report.stats.errors.get(&ErrorKind::TooLarge),
            Some(&20),
            "{addr}: {:?}",
            report.stats.errors
        );
    }
}

#[test]
fn the_cli_prints_a_summary_exports_histograms_and_sets_its_exit_status() {
    let _serial = serial();
    let server = ServerProcess::start(&["--delay", "2ms"]);
    let dir = tempdir();
    let csv = dir.path().join("latency.csv");
    let hgrm = dir.path().join("latency.hgrm");
    let buckets = dir.path().join("buckets.csv");
    let url = format!("http://{}/", server.addr);
    let output = Command::new(BIN)
        .args(["load", &url, "-c", "4", "-n", "200", "--csv"])
        .arg(&csv)
        .arg("--hgrm")
        .arg(&hgrm)
        .arg("--buckets-csv")
        .arg(&buckets)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "Requests:      200 answered, 0 failed",
        "p99.99",
        "[200] 200",
        "coordinated omission",
    ] {
        assert!(summary.contains(needle), "missing {needle:?} in\n{summary}");
    }
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert!(csv.starts_with("\"Value\",\"Percentile\",\"TotalCount\",\"1/(1-Percentile)\"\n"));
    assert!(
        csv.trim_end().ends_with(",1.000000000000,200,Infinity"),
        "{csv}"
    );
    let hgrm = std::fs::read_to_string(&hgrm).unwrap();
    assert!(hgrm.contains("Total count    =          200]"), "{hgrm}");
    let buckets = std::fs::read_to_string(&buckets).unwrap();
    assert!(buckets.trim_end().ends_with(",200"), "{buckets}");
    assert!(server.stop().0.success());

    // Nothing listens: one clear line and a non-zero exit.
    let refused = unused_loopback_addr();
    let output = Command::new(BIN)
        .args([
            "load",
            &format!("http://{refused}/"),
            "-n",
            "5",
            "--timeout",
            "1s",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach") && stderr.contains("refused"),
        "{stderr}"
    );
}

#[test]
fn connections_are_capped_by_the_requests_of_n() {
    let _serial = serial();
    let server = ServerProcess::start(&[]);
    let started = Instant::now();
    let output = succeeds(Command::new(BIN).args([
        "load",
        &format!("http://{}/", server.addr),
        "-c",
        "100000",
        "-n",
        "5",
        "--json",
    ]));
    let took = started.elapsed();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["connections"], 5, "{json}");
    assert_eq!(json["completed"], 5, "{json}");
    assert_eq!(json["connections_opened"], 5, "{json}");
    // The largest child this test process has waited for: nothing here
    // comes near 100 MB unless a connection slot costs memory up front
    // (100 000 of them took 415 MB).
    // SAFETY: an all-zero rusage is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we pass.
    let filled = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(filled, 0);
    assert!(
        usage.ru_maxrss < 100 * 1024,
        "peak RSS {} KiB",
        usage.ru_maxrss
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(server.stop().0.success());
}

#[test]
fn the_exit_status_says_whether_every_request_succeeded() {
    let _serial = serial();
    // Accepts, reads the request, and never answers.
    let silent = misbehaving_server(|mut s| {
        read_request(&mut s);
        std::thread::sleep(Duration::from_secs(30));
    });
    let output = Command::new(BIN)
        .args(["load", &format!("http://{silent}/"), "-c", "2", "-z", "1s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.lines().count() == 1
            && stderr.contains("no request")
            && stderr.contains("2 still in flight"),
        "{stderr}"
    );
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        summary.contains("0 answered, 0 failed, 2 still in flight at the end"),
        "{summary}"
    );

    // Every request answered, with 404: failed requests, not successes.
    let server = ServerProcess::start(&[]);
    let url = format!("http://{}/nowhere", server.addr);
    let stderr = fails_with_one_line(
        Command::new(BIN).args(["load", &url, "-c", "1", "-n", "3"]),
        "3 requests failed",
    );
    assert!(stderr.contains("3 × 404"), "{stderr}");
    // Unless --max-errors allows them.
    succeeds(Command::new(BIN).args(["load", &url, "-n", "3", "--max-errors", "3"]));
    // A method the server does not serve: 405, a failure too.
    let root = format!("http://{}/", server.addr);
    let stderr = fails_with_one_line(
        Command::new(BIN).args(["load", &root, "-X", "DELETE", "-n", "1"]),
        "1 request failed",
    );
    assert!(stderr.contains("405"), "{stderr}");
    // And every answer a 200: success.
    succeeds(Command::new(BIN).args(["load", &root, "-n", "3"]));
    assert!(server.stop().0.success());
}

#[test]
fn bad_input_fails_with_one_clear_line() {
    for (args, needle) in [
        (&["load", "not a url"][..], "bad URL"),
        (
            &[
                "load",
                "https://127.0.0.1:9/",
                "--cacert",
                "/nonexistent.pem",
            ][..],
            "--cacert /nonexistent.pem",
        ),
        (
            &["load", "http://127.0.0.1:9/", "-c", "0"][..],
            "-c must be at least 1",
        ),
        (
            &["load", "http://127.0.0.1:9/", "-n", "0"][..],
            "-n must be at least 1",
        ),
        (
            &[
                "load",
                "http://127.0.0.1:9/",
                "--rate",
                "10",
                "--max-inflight",
                "0",
            ][..],
            "--max-inflight must be at least 1",
        ),
        (
            &["load", "http://127.0.0.1:9/", "-X", "BAD METHOD"][..],
            "is not an HTTP method",
        ),
        (
            &["load", "http://127.0.0.1:9/", "-X", "GET /x HTTP/1.1\r\nX:"][..],
            "is not an HTTP method",
        ),
        (
            &["load", "http://127.0.0.1:9/", "-H", "X-A: 1\r\nX-B: 2"][..],
            "is not a valid header",
        ),
        (
            &["load", "http://127.0.0.1:9/", "--frobnicate"][..],
            "unexpected argument",
        ),
    ] {
        let output = Command::new(BIN).args(args).output().unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        if needle != "unexpected argument" {
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        }
    }
}

#[test]
fn the_open_loop_shows_a_stall_that_the_actual_send_times_hide() {
    let _serial = serial();
    // A one-thread server that stalls once, for 500 ms, 800 ms into the
    // run, and otherwise answers at once.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut stalled = false;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            read_request(&mut stream);
            if !stalled && started.elapsed() >= Duration::from_millis(800) {
                stalled = true;
                std::thread::sleep(Duration::from_millis(500));
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    let mut config = config(addr, "/");
    config.rate = Some(200.0);
    config.connections = 2;
    config.stop = StopAfter::Requests(400);
    let report = run(&config, never_cancelled()).unwrap();
    let stats = &report.stats;
    assert_eq!(stats.completed(), 400, "{:?}", stats.errors);
    let corrected_p99 = stats.corrected.value_at_quantile(0.99) as f64 / 1e6;
    let actual_p99 = stats.latency.value_at_quantile(0.99) as f64 / 1e6;
    assert!(
        corrected_p99 >= 400.0,
        "the stall must show from the planned times: p99 {corrected_p99:.1} ms"
    );
    assert!(
        actual_p99 < 100.0,
        "the stall hides from the actual send times: p99 {actual_p99:.1} ms"
    );
    assert!(
        stats.lateness.max() >= 400_000_000,
        "requests were sent late behind the stall"
    );
    // 400 requests at 200/s take about 2 s plus the stall's catch-up.
    assert!(
        report.elapsed < Duration::from_secs(4),
        "{:?}",
        report.elapsed
    );
}

#[test]
fn interval_logs_read_back_and_merge_and_json_is_complete() {
    let _serial = serial();
    let server = ServerProcess::start(&["--delay", "1ms"]);
    let dir = tempdir();
    let url = format!("http://{}/", server.addr);
    let mut counts = Vec::new();
    let mut logs = Vec::new();
    for (name, extra) in [
        ("closed.hlog", &[][..]),
        ("open.hlog", &["--rate", "400"][..]),
    ] {
        let log = dir.path().join(name);
        let output = Command::new(BIN)
            .args(["load", &url, "-c", "3", "-n", "600", "--json", "--hlog"])
            .arg(&log)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(json["completed"], 600);
        assert_eq!(json["statuses"]["200"], 600);
        assert_eq!(
            json["load_model"],
            if extra.is_empty() { "closed" } else { "open" }
        );
        assert_eq!(
            json["latency_from_actual_send_ms"].is_null(),
            extra.is_empty()
        );
        let intervals = tracebench_loadgen::hlog::read_log(&std::fs::read(&log).unwrap()).unwrap();
        let logged: u64 = intervals.iter().map(|i| i.histogram.len()).sum();
        assert_eq!(logged, 600, "{name}: every measured request is in the log");
        counts.push(logged);
        logs.push(log);
    }
    let merged = dir.path().join("merged.hlog");
    let status = Command::new(BIN)
        .arg("merge")
        .args(&logs)
        .arg("-o")
        .arg(&merged)
        .status()
        .unwrap();
    assert!(status.success());
    // The first log from standard input (`-`): the same merge.
    let piped = dir.path().join("piped.hlog");
    let status = Command::new(BIN)
        .args(["merge", "-"])
        .args(&logs[1..])
        .arg("-o")
        .arg(&piped)
        .stdin(Stdio::from(std::fs::File::open(&logs[0]).unwrap()))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read(&piped).unwrap(),
        std::fs::read(&merged).unwrap()
    );
    // An output that is one of the inputs is refused, the input kept.
    let first = std::fs::read(&logs[0]).unwrap();
    fails_with_one_line(
        Command::new(BIN)
            .arg("merge")
            .args(&logs)
            .arg("-o")
            .arg(&logs[0]),
        "would overwrite the input",
    );
    assert_eq!(std::fs::read(&logs[0]).unwrap(), first);
    let intervals = tracebench_loadgen::hlog::read_log(&std::fs::read(&merged).unwrap()).unwrap();
    assert_eq!(
        intervals.iter().map(|i| i.histogram.len()).sum::<u64>(),
        counts.iter().sum::<u64>()
    );
    assert!(intervals.windows(2).all(|w| w[0].start < w[1].start));
    assert!(server.stop().0.success());
}

#[test]
fn ctrl_c_stops_the_run_and_prints_what_was_measured() {
    let _serial = serial();
    let server = ServerProcess::start(&["--delay", "5ms"]);
    let child = Command::new(BIN)
        .args([
            "load",
            &format!("http://{}/", server.addr),
            "-c",
            "2",
            "-z",
            "60s",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let start = Instant::now();
    // SAFETY: SIGINT to the load generator we started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let output = child.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "Ctrl-C took {:?}",
        start.elapsed()
    );
    assert!(output.status.success());
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(summary.contains("Interrupted:"), "{summary}");
    let answered: u64 = summary
        .split("Requests:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(answered > 20, "{summary}");
    assert!(server.stop().0.success());
}

#[test]
fn head_requests_and_servers_that_drop_idle_keep_alive_connections() {
    let _serial = serial();
    // HEAD answers carry a Content-Length but no body.
    let server = ServerProcess::start(&["--keep-alive"]);
    let mut head = config(server.addr, "/");
    head.method = "HEAD".into();
    head.keep_alive = true;
    head.connections = 2;
    head.stop = StopAfter::Requests(50);
    head.timeout = Duration::from_secs(2);
    let report = run(&head, never_cancelled()).unwrap();
    assert_eq!(
        (report.stats.completed(), report.stats.failed()),
        (50, 0),
        "{:?}",
        report.stats.errors
    );
    assert!(server.stop().0.success());

    // A server that promises keep-alive but closes each connection right
    // after its answer, as an idle timeout would: every reuse finds the
    // connection gone and is sent again on a fresh one, not counted as a
    // failure.
    let dropping = misbehaving_server(|mut s| {
        read_request(&mut s);
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok");
        std::thread::sleep(Duration::from_millis(5));
    });
    let mut reuse = config(dropping, "/");
    reuse.keep_alive = true;
    reuse.connections = 1;
    reuse.stop = StopAfter::Requests(20);
    reuse.timeout = Duration::from_secs(2);
    let report = run(&reuse, never_cancelled()).unwrap();
    assert_eq!(
        (report.stats.completed(), report.stats.failed()),
        (20, 0),
        "{:?}",
        report.stats.errors
    );
    assert!(
        report.stats.connections >= 20,
        "each request needed a fresh connection"
    );
}

#[test]
fn a_connection_count_over_the_file_limit_is_raised_to_or_refused_in_one_line() {
    // Issue 14: above the open-file limit EMFILE was counted as thousands
    // of "read" failures; the soft limit is raised to the hard one, and
    // a -c that still cannot fit is refused before any load.
    let _serial = serial();
    let server = ServerProcess::start(&["--delay", "0ms"]);
    let url = format!("http://{}/", server.addr);
    let load_under = |limits: &str, connections: &str| {
        Command::new("sh")
            .args([
                "-c",
                &format!("{limits}; exec {BIN} load {url} -c {connections} -n 600"),
            ])
            .output()
            .unwrap()
    };
    // Soft 256, hard higher: 500 connections fit once the soft is raised.
    let output = load_under("ulimit -Hn 4096; ulimit -Sn 256", "500");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("600 answered, 0 failed"), "{stdout}");
    // Hard 256: 5000 cannot fit.
    let output = load_under("ulimit -n 256", "5000");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("needs about 664 open files") // -c 5000 for 600 requests: 600 at most
            && stderr.contains("at most 256")
            && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
}

#[test]
fn a_dash_as_an_output_is_standard_output() {
    // Issue 15: `-` made a file named `-`.
    let _serial = serial();
    let server = ServerProcess::start(&["--delay", "0ms"]);
    let dir = tempdir();
    let output = Command::new(BIN)
        .args([
            "load",
            &format!("http://{}/", server.addr),
            "-n",
            "20",
            "--csv",
            "-",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Percentile"), "{stdout}");
    assert!(!dir.path().join("-").exists(), "no file named -");
}

#[test]
fn a_dash_as_an_input_is_standard_input() {
    // Issue 15: `-` is standard input wherever an input can be a stream:
    // a trace for export, a log for merge, a body for load (-d @-).
    let _serial = serial();
    let dir = tempdir();
    // `--write -`: the trace file on standard output (the program's own
    // output would go there too: this one writes elsewhere).
    let trace = dir.path().join("t.tbt");
    let traced = Command::new(BIN)
        .args(["trace", "-q", "--write", "-"])
        .args(["sh", "-c", "echo hi >/dev/null"])
        .stdout(Stdio::from(std::fs::File::create(&trace).unwrap()))
        .status()
        .unwrap();
    assert!(traced.success());
    assert!(!dir.path().join("-").exists(), "no file named -");
    let export = |input: &str, stdin: Stdio| {
        let output = Command::new(BIN)
            .args(["export", input, "--strace", "-"])
            .current_dir(dir.path())
            .stdin(stdin)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        output.stdout
    };
    let piped = export("-", Stdio::from(std::fs::File::open(&trace).unwrap()));
    assert!(!piped.is_empty());
    assert_eq!(
        piped,
        export("t.tbt", Stdio::null()),
        "the same as from the file"
    );
    // Not a trace: one line, non-zero.
    let garbage = Command::new(BIN)
        .args(["export", "-", "--strace", "-"])
        .stdin(Stdio::from(std::fs::File::open("/etc/hostname").unwrap()))
        .output()
        .unwrap();
    assert!(!garbage.status.success());
    let stderr = String::from_utf8_lossy(&garbage.stderr);
    assert!(
        stderr.contains("cannot read a trace from standard input"),
        "{stderr}"
    );
    // -c -o -: the summary follows the calls on standard output, and
    // what cannot both be standard output is refused.
    let summary = Command::new(BIN)
        .args([
            "trace",
            "-C",
            "-e",
            "trace=write",
            "-o",
            "-",
            "sh",
            "-c",
            "echo hi >/dev/null",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(summary.status.success(), "{summary:?}");
    let stdout = String::from_utf8_lossy(&summary.stdout);
    assert!(
        stdout.contains("write(1, \"hi\\n\", 3)") && stdout.contains("% time"),
        "{stdout}"
    );
    for (args, why) in [
        (&["-ff", "-o", "-"][..], "-ff writes a file per thread"),
        (
            &["--write", "-", "-o", "-"],
            "would both write to standard output",
        ),
    ] {
        fails_with_one_line(
            Command::new(BIN)
                .arg("trace")
                .args(args)
                .arg("true")
                .current_dir(dir.path()),
            why,
        );
    }
    assert!(!dir.path().join("-").exists(), "no file named -");
    // The body of a request from standard input.
    let (url, server) = one_request_server();
    let mut load = Command::new(BIN)
        .args(["load", &url, "-n", "1", "-X", "POST", "-d", "@-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    load.stdin.take().unwrap().write_all(b"from stdin").unwrap();
    assert!(load.wait().unwrap().success());
    assert!(server.join().unwrap().contains("Content-Length: 10"));
}

/// Accepts one connection on a fresh loopback port, answers 200, and hands
/// back the request head it read.
fn one_request_server() -> (String, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut buf = [0u8; 1024];
            let n = std::io::Read::read(&mut stream, &mut buf).unwrap();
            assert!(n > 0, "the client closed before its head");
            seen.extend_from_slice(&buf[..n]);
        }
        std::io::Write::write_all(
            &mut stream,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        String::from_utf8_lossy(&seen).into_owned()
    });
    (url, server)
}

#[test]
fn ohas_flags_mean_what_they_mean_in_oha() {
    // Issue 15: -q, -m, -T, -A and -a were refused.
    let (url, server) = one_request_server();
    let output = std::process::Command::new(BIN)
        .args(["load", &url, "-n", "1", "-c", "1", "-m", "POST"])
        .args(["-T", "application/json", "-A", "text/plain", "-a", "al:pw"])
        .args(["-d", "{}", "-q", "100"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let head = server.join().unwrap();
    assert!(head.starts_with("POST / HTTP/1.1\r\n"), "{head}");
    for line in [
        "Content-Type: application/json",
        "Accept: text/plain",
        // base64("al:pw")
        "Authorization: Basic YWw6cHc=",
    ] {
        assert!(head.contains(&format!("{line}\r\n")), "{line} in {head}");
    }
}

#[test]
fn a_wrk_users_duration_after_d_is_refused_not_sent_as_a_body() {
    // Refused before any connection: nothing needs to listen there.
    let url = format!("http://{}/", unused_loopback_addr());
    fails_with_one_line(
        std::process::Command::new(BIN).args(["load", &url, "-d", "30s"]),
        "for a duration use -z 30s",
    );
}

#[test]
fn https_checks_the_certificate_unless_told_not_to() {
    // Issue 15: https:// was refused ("http:// only"), where curl, oha,
    // hey and vegeta all load it.
    let _serial = serial();
    let dir = tempdir();
    let [ca, certificate, key] = common::foreign::certificates(dir.path());
    let tls_port = common::foreign::free_port();
    let nginx =
        common::foreign::nginx_tls(common::foreign::free_port(), tls_port, &certificate, &key)
            .start();
    let url = format!("https://127.0.0.1:{tls_port}/");
    let load = |extra: &[&str]| {
        Command::new(BIN)
            .args(["load", &url, "-c", "4", "-n", "200", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    // Not signed by anyone the system trusts: every request fails, and
    // the summary says why.
    let untrusted = Command::new(BIN)
        .args(["load", &url, "-c", "2", "-n", "20"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&untrusted.stdout);
    assert!(!untrusted.status.success(), "{text}");
    assert!(text.contains("tls 20"), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    // Trusted through --cacert: checked and answered, with and without
    // keep-alive; and with --insecure, unchecked.
    let ca = ca.display().to_string();
    // A body larger than what TLS queues before its handshake is done.
    let body = dir.path().join("body");
    std::fs::write(&body, vec![b'x'; 200_000]).unwrap();
    let body = format!("@{}", body.display());
    for extra in [
        &["--cacert", &ca][..],
        &["--cacert", &ca, "--keep-alive"],
        &["--insecure"],
        &["--cacert", &ca, "-X", "POST", "-d", &body],
    ] {
        let output = load(extra);
        assert!(output.status.success(), "{extra:?}: {output:?}");
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(json["completed"], 200, "{extra:?}: {json}");
        assert_eq!(json["statuses"]["200"], 200, "{extra:?}: {json}");
        let opened = json["connections_opened"].as_u64().unwrap();
        if extra.contains(&"--keep-alive") {
            assert_eq!(opened, 4, "{json}");
        } else {
            assert_eq!(opened, 200, "{json}");
        }
    }
    // The name is checked too: the certificate is for 127.0.0.1 only.
    let other_name = Command::new(BIN)
        .args(["load", &format!("https://localhost:{tls_port}/"), "-n", "4"])
        .args(["--cacert", &ca])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&other_name.stdout);
    assert!(!other_name.status.success(), "{text}");
    assert!(text.contains("not valid for name"), "{text}");
    nginx.stop();
}
