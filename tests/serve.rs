//! `tracebench serve` end to end: every concurrency model, run as a real
//! process on a loopback port and judged from the outside, by its answers,
//! its timing, and what /proc says about it.
// A test reads as one story, start to finish: no line limit here.
#![allow(clippy::too_many_lines)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::*;

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

#[test]
fn every_mode_answers_100_sequential_and_100_concurrent_requests() {
    let _serial = serial();
    for mode in MODES {
        let server = ServerProcess::start(&["--mode", mode]);
        for i in 0..100 {
            let response = get(server.addr, "/").unwrap_or_else(|e| panic!("{mode} #{i}: {e}"));
            assert_eq!(response.status, 200, "{mode}");
            assert_eq!(response.body, b"<h1>Hello, World!</h1>", "{mode}");
            assert_eq!(response.header("connection"), Some("close"), "{mode}");
        }
        let (results, _) = concurrent_gets(server.addr, "/", 100);
        for (i, result) in results.into_iter().enumerate() {
            let response = result.unwrap_or_else(|e| panic!("{mode} concurrent #{i}: {e}"));
            assert_eq!(response.status, 200, "{mode}");
        }
        let (status, summary) = server.stop();
        assert!(status.success(), "{mode}: {status}");
        assert!(summary.contains(&format!("mode {mode}")), "{summary}");
        assert!(summary.contains("200 ok, 0 errors"), "{mode}: {summary}");
    }
}

#[test]
fn ten_delayed_requests_take_as_long_as_each_model_predicts() {
    let _serial = serial();
    // (mode, workers, lower bound, upper bound) for 10 concurrent requests
    // of 200 ms: sync serialises them (10 × 0.2 s), a pool of 5 runs two
    // rounds (2 × 0.2 s), a thread or process each runs them all at once,
    // and so does one event loop on one thread, with timers.
    let cases = [
        ("sync", "5", 1.9, 4.0),
        ("pool-futex", "5", 0.38, 0.6),
        ("pool-std", "5", 0.38, 0.6),
        ("thread", "5", 0.19, 0.35),
        ("fork", "5", 0.19, 0.35),
        ("epoll", "1", 0.19, 0.35),
        ("io-uring", "1", 0.19, 0.35),
    ];
    for (mode, workers, low, high) in cases {
        let server =
            ServerProcess::start(&["--mode", mode, "--workers", workers, "--delay", "200ms"]);
        // One warm-up request, so thread and page-fault start-up costs are
        // not charged to the batch.
        get(server.addr, "/?delay=0").unwrap();
        let (results, took) = concurrent_gets(server.addr, "/", 10);
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().is_ok_and(|r| r.status == 200)),
            "{mode}: {results:?}"
        );
        let secs = took.as_secs_f64();
        assert!(
            (low..=high).contains(&secs),
            "{mode}: 10 × 200 ms took {secs:.3} s, expected {low}..{high}"
        );
        assert!(server.stop().0.success());
    }
}

#[test]
fn idle_futex_and_std_workers_sleep_while_spinning_workers_burn_cpu() {
    let _serial = serial();
    let worker_cpu = |pid: i32| -> (u64, Vec<char>) {
        // The server prints its address before its workers start.
        let (started, workers) = eventually(Duration::from_secs(5), || {
            let workers: Vec<_> = threads_of(pid)
                .into_iter()
                .filter(|t| t.1.starts_with("worker-"))
                .collect();
            (workers.len() == 5, workers)
        });
        assert!(started, "{workers:?}");
        (
            workers.iter().map(|t| t.3).sum(),
            workers.iter().map(|t| t.2).collect(),
        )
    };
    for mode in ["pool-futex", "pool-std"] {
        let server = ServerProcess::start(&["--mode", mode]);
        get(server.addr, "/").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let (before, states) = worker_cpu(server.pid());
        assert!(
            states.iter().all(|&s| s == 'S'),
            "{mode}: idle workers in states {states:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
        let (after, _) = worker_cpu(server.pid());
        assert_eq!(after, before, "{mode}: idle workers used CPU");
        assert!(server.stop().0.success());
    }
    let server = ServerProcess::start(&["--mode", "pool-spin"]);
    let (before, states) = worker_cpu(server.pid());
    std::thread::sleep(Duration::from_millis(300));
    let (after, _) = worker_cpu(server.pid());
    // 300 ms of spinning on up to two cores is up to 60 ticks of 10 ms.
    assert!(
        after >= before + 10,
        "pool-spin used only {} ticks (states {states:?})",
        after - before
    );
    assert!(
        states.contains(&'R'),
        "spinning workers should be running: {states:?}"
    );
    assert!(server.stop().0.success());
}

#[test]
fn bad_requests_get_their_status_and_the_server_keeps_serving() {
    let _serial = serial();
    for mode in ["sync", "pool-futex", "epoll", "io-uring"] {
        let server = ServerProcess::start(&["--mode", mode]);
        let addr = server.addr;
        let malformed = exchange(addr, b"this is not http\r\n\r\n").unwrap();
        assert_eq!(malformed.status, 400);
        assert_eq!(get(addr, "/").unwrap().status, 200);
        assert_eq!(get(addr, "/missing").unwrap().status, 404);
        let post = exchange(addr, b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").unwrap();
        assert_eq!(post.status, 405);
        assert_eq!(post.header("allow"), Some("GET, HEAD"));
        // RFC 9110 6.6.1: an origin server with a clock dates 2xx and 4xx.
        for answer in [&malformed, &post, &get(addr, "/").unwrap()] {
            let date = answer.header("date").expect("a Date header");
            let date = httpdate::parse_http_date(date).unwrap();
            let age = SystemTime::now().duration_since(date).unwrap();
            assert!(age < Duration::from_secs(5), "{mode}: dated {age:?} ago");
        }
        let mut huge = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        huge.resize(9 * 1024, b'x');
        huge.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exchange(addr, &huge).unwrap().status, 431);
        assert_eq!(get(addr, "/?delay=forever").unwrap().status, 400);
        let head = exchange(addr, b"HEAD / HTTP/1.1\r\n\r\n");
        // HEAD announces the GET body's length but sends no body.
        let head_bytes = {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"HEAD / HTTP/1.1\r\n\r\n").unwrap();
            let mut b = Vec::new();
            s.read_to_end(&mut b).unwrap();
            String::from_utf8(b).unwrap()
        };
        assert!(
            head.is_err(),
            "a HEAD answer has no body to match its Content-Length"
        );
        assert!(
            head_bytes.starts_with("HTTP/1.1 200 OK") && head_bytes.contains("Content-Length: 22")
        );
        assert!(head_bytes.ends_with("\r\n\r\n"), "{head_bytes:?}");
        // A body sent with a GET is read, not left to reset the connection.
        let with_body =
            exchange(addr, b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!(with_body.status, 200);
        assert_eq!(get(addr, "/").unwrap().status, 200);
        let (status, summary) = server.stop();
        assert!(status.success());
        for kind in [
            "400 bad request 2",
            "404 not found 1",
            "405 method 1",
            "431 head too large 1",
        ] {
            assert!(
                summary.contains(kind),
                "{mode}: missing {kind:?} in {summary}"
            );
        }
    }
}

/// Connects, sends nothing, and returns how long until the server closed.
fn silent_client_lifetime(server: &ServerProcess) -> Duration {
    let mut silent = TcpStream::connect(server.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected a close, got {:?}", &buf[..n]);
    start.elapsed()
}

#[test]
fn a_client_that_sends_nothing_is_dropped_after_the_read_timeout() {
    let _serial = serial();
    for mode in ["pool-futex", "epoll", "io-uring"] {
        silent_and_stalled_clients_time_out(mode);
    }
}

fn silent_and_stalled_clients_time_out(mode: &str) {
    let server = ServerProcess::start(&[
        "--mode",
        mode,
        "--read-timeout",
        "300ms",
        "--no-defer-accept",
    ]);
    let waited = silent_client_lifetime(&server);
    assert!(
        waited >= Duration::from_millis(250),
        "dropped too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(1),
        "dropped too late: {waited:?}"
    );
    // The timeout is the connections', not the listener's: an acceptor idle
    // for longer still accepts.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(get(server.addr, "/").unwrap().status, 200);
    // A client that starts a request and stalls gets 408.
    let stalled = exchange(server.addr, b"GET / HTTP/1.1\r\nHost:").unwrap();
    assert_eq!(stalled.status, 408);
    assert_eq!(get(server.addr, "/").unwrap().status, 200);
    let (status, summary) = server.stop();
    assert!(status.success());
    assert!(summary.contains("read timeout 2"), "{summary}");

    // With TCP_DEFER_ACCEPT (the default) the kernel holds a silent
    // connection for at least a second (it rounds up to whole seconds)
    // before the server even sees it; then the read timeout applies.
    let server = ServerProcess::start(&["--mode", mode, "--read-timeout", "300ms"]);
    let waited = silent_client_lifetime(&server);
    assert!(
        waited >= Duration::from_millis(1000),
        "not deferred: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "dropped too late: {waited:?}"
    );
    let stalled = exchange(server.addr, b"GET / HTTP/1.1\r\nHost:").unwrap();
    assert_eq!(stalled.status, 408);
    assert!(server.stop().0.success());
}

#[test]
fn overload_with_reject_answers_200_or_503_and_leaks_nothing() {
    let _serial = serial();
    let server = ServerProcess::start(&[
        "--mode",
        "pool-futex",
        "--workers",
        "5",
        "--queue",
        "10",
        "--when-full",
        "reject",
        "--delay",
        "20ms",
    ]);
    get(server.addr, "/").unwrap();
    let fds_before = open_fds(server.pid());
    let (results, _) = concurrent_gets(server.addr, "/", 200);
    let mut ok = 0;
    let mut rejected = 0;
    for result in &results {
        match result {
            Ok(r) if r.status == 200 => ok += 1,
            Ok(r) if r.status == 503 => {
                assert_eq!(r.header("retry-after"), Some("1"));
                rejected += 1
            }
            other => panic!("neither 200 nor 503: {other:?}"),
        }
    }
    assert_eq!(ok + rejected, 200);
    assert!(
        rejected > 0,
        "200 clients on 5 workers and 10 slots were never refused"
    );
    let port = server.addr.port();
    let (settled, fds) = eventually(Duration::from_secs(5), || {
        let fds = open_fds(server.pid());
        (fds == fds_before, fds)
    });
    assert!(settled, "descriptors: {fds_before} before, {fds} after");
    let (clean, states) = eventually(Duration::from_secs(5), || {
        let states = sockets_on_port(port);
        (!states.contains(&TCP_CLOSE_WAIT), states)
    });
    assert!(clean, "sockets left in CLOSE_WAIT: {states:?}");
    let (status, summary) = server.stop();
    assert!(status.success());
    assert!(
        summary.contains(&format!("503 rejected {rejected}")),
        "{summary}"
    );
}

#[test]
fn sigterm_serves_the_connections_waiting_in_the_listen_backlog() {
    let _serial = serial();
    // One request in flight and three behind it that nothing has accepted
    // yet: in sync mode they wait in the kernel's backlog, in a pool of one
    // worker with a queue of one, one waits in the queue, one in the
    // acceptor's hands and one in the backlog.
    for args in [
        &["--mode", "sync"][..],
        &["--mode", "pool-futex", "--workers", "1", "--queue", "1"][..],
        &["--mode", "thread"][..],
        &["--mode", "epoll", "--workers", "1"][..],
        &["--mode", "epoll", "--workers", "2"][..],
        &["--mode", "io-uring", "--workers", "1"][..],
        &["--mode", "io-uring", "--workers", "2"][..],
    ] {
        let mut all = args.to_vec();
        all.extend(["--delay", "300ms"]);
        let mut server = ServerProcess::start(&all);
        let stderr = server.stderr_lines();
        sigterm_amid_requests(&server, 4, &format!("{args:?}"));
        let (status, summary) = server.wait(Duration::from_secs(10));
        assert!(status.success(), "{args:?}: {status}");
        assert!(summary.contains("4 ok, 0 errors"), "{args:?}: {summary}");
        let said = stderr.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(
            said.contains("stopping; serving 4 queued and in-flight connections"),
            "{args:?}: {said}"
        );
    }
}

#[test]
fn a_second_signal_while_draining_exits_at_once_and_says_so() {
    let _serial = serial();
    for mode in ["thread", "fork", "sync", "pool-std", "epoll", "io-uring"] {
        let mut server = ServerProcess::start(&["--mode", mode, "--delay", "30s"]);
        let stderr = server.stderr_lines();
        let addr = server.addr;
        let client = std::thread::spawn(move || get(addr, "/"));
        std::thread::sleep(Duration::from_millis(300));
        server.signal(libc::SIGINT);
        let said = stderr.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(
            said.contains("stopping; serving 1 queued and in-flight connections"),
            "{mode}: {said}"
        );
        // Still draining: the request has 29 s to go.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            TcpStream::connect(addr).is_err(),
            "{mode} accepts while draining"
        );
        let pid = server.pid();
        let children = children_of(pid);
        let started = Instant::now();
        server.signal(libc::SIGTERM);
        let (status, _) = server.wait(Duration::from_secs(5));
        assert!(started.elapsed() < Duration::from_secs(3), "{mode}");
        assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{mode}");
        let said = stderr.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(
            said.contains("second signal") && said.contains("dropping 1 connections"),
            "{mode}: {said}"
        );
        assert!(
            client.join().unwrap().is_err(),
            "{mode}: the request was cut"
        );
        // A fork-mode child does not go on serving behind its parent's back.
        for (child, _) in children {
            let (gone, _) = eventually(Duration::from_secs(5), || {
                (
                    !std::path::Path::new(&format!("/proc/{child}")).exists(),
                    (),
                )
            });
            assert!(gone, "{mode}: child {child} outlived the server");
        }
    }
}

/// Sends `n` concurrent GETs, SIGTERMs the server 150 ms in (while they
/// are served or queued), and checks that every one was answered 200.
fn sigterm_amid_requests(server: &ServerProcess, n: usize, case: &str) {
    let addr = server.addr;
    let clients = std::thread::spawn(move || concurrent_gets(addr, "/", n).0);
    std::thread::sleep(Duration::from_millis(150));
    server.signal(libc::SIGTERM);
    for result in clients.join().unwrap() {
        assert_eq!(
            result.as_ref().map(|r| r.status).ok(),
            Some(200),
            "{case}: {result:?}"
        );
    }
}

#[test]
fn sigterm_stops_accepting_but_serves_what_is_in_flight_and_exits_0() {
    let _serial = serial();
    for (mode, in_flight) in [
        ("pool-futex", 8),
        ("pool-std", 8),
        ("thread", 8),
        ("fork", 8),
        ("sync", 1),
        ("epoll", 8),
        ("io-uring", 8),
    ] {
        let server = ServerProcess::start(&["--mode", mode, "--workers", "5", "--delay", "400ms"]);
        let addr = server.addr;
        sigterm_amid_requests(&server, in_flight, mode);
        let mut server = server;
        let (status, summary) = server.wait(Duration::from_secs(10));
        assert!(status.success(), "{mode}: {status}");
        assert!(
            summary.contains(&format!("{in_flight} ok, 0 errors")),
            "{mode}: {summary}"
        );
        assert!(
            TcpStream::connect(addr).is_err(),
            "{mode} still accepts after exiting"
        );
    }
}

#[test]
fn sigint_stops_an_idle_server_at_once() {
    let _serial = serial();
    let server = ServerProcess::start(&[]);
    server.signal(libc::SIGINT);
    let mut server = server;
    let start = Instant::now();
    let (status, summary) = server.wait(Duration::from_secs(10));
    assert!(status.success());
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(summary.contains("0 ok, 0 errors"), "{summary}");
}

#[test]
fn fork_mode_reaps_every_child_and_thread_mode_joins_every_thread() {
    let _serial = serial();
    let server = ServerProcess::start(&["--mode", "fork"]);
    let (results, _) = concurrent_gets(server.addr, "/", 50);
    assert!(results.iter().all(|r| r.is_ok()));
    let (reaped, children) = eventually(Duration::from_secs(5), || {
        let children = children_of(server.pid());
        (children.is_empty(), children)
    });
    assert!(reaped, "children left (Z = zombie): {children:?}");
    let (status, summary) = server.stop();
    assert!(status.success());
    assert!(
        summary.contains("50 children forked, 50 reaped"),
        "{summary}"
    );

    let server = ServerProcess::start(&["--mode", "thread"]);
    let baseline = threads_of(server.pid()).len();
    let (results, _) = concurrent_gets(server.addr, "/?delay=50ms", 50);
    assert!(results.iter().all(|r| r.is_ok()));
    let (joined, threads) = eventually(Duration::from_secs(5), || {
        let threads = threads_of(server.pid());
        (threads.len() == baseline, threads)
    });
    assert!(joined, "{baseline} threads before, now {threads:?}");
    let (status, summary) = server.stop();
    assert!(status.success());
    assert!(summary.contains("50 threads started"), "{summary}");
}

#[test]
fn a_client_that_resets_mid_request_never_kills_the_server() {
    let _serial = serial();
    for mode in MODES {
        let server = ServerProcess::start(&["--mode", mode]);
        for _ in 0..5 {
            let stream = TcpStream::connect(server.addr).unwrap();
            (&stream)
                .write_all(b"GET /?delay=100ms HTTP/1.1\r\n\r\n")
                .unwrap();
            // SO_LINGER 0: close sends a reset, and the server's answer
            // 100 ms later meets EPIPE/ECONNRESET, where SIGPIPE would kill.
            socket2::SockRef::from(&stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(stream);
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(get(server.addr, "/").unwrap().status, 200, "{mode} died");
        let (status, summary) = server.stop();
        assert!(status.success(), "{mode}: {status}");
        assert!(summary.contains("peer gone 5"), "{mode}: {summary}");
    }
}

#[test]
fn keep_alive_serves_several_requests_per_connection_only_when_enabled() {
    let _serial = serial();
    for mode in ["pool-futex", "epoll", "io-uring"] {
        keep_alive_only_when_enabled(mode);
    }
}

fn keep_alive_only_when_enabled(mode: &str) {
    let request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let server = ServerProcess::start(&["--mode", mode, "--keep-alive"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for _ in 0..3 {
        stream.write_all(request).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).unwrap();
        let response = parse_response(&buf[..n]).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }
    // Two pipelined requests in one write get two answers in order.
    stream
        .write_all(&[&request[..], &request[..]].concat())
        .unwrap();
    let mut both = Vec::new();
    while both
        .windows(22)
        .filter(|w| *w == b"<h1>Hello, World!</h1>")
        .count()
        < 2
    {
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0);
        both.extend_from_slice(&buf[..n]);
    }
    drop(stream);
    assert!(server.stop().0.success());

    let server = ServerProcess::start(&["--mode", mode]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Without --keep-alive, the second of two pipelined requests is not
    // served, and the first answer still arrives whole (no reset).
    stream
        .write_all(&[&request[..], &request[..]].concat())
        .unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    let response = parse_response(&all).unwrap();
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.body, b"<h1>Hello, World!</h1>");
    assert!(server.stop().0.success());
}

#[test]
fn pipelined_requests_are_answered_without_waiting_for_acknowledgements() {
    let _serial = serial();
    // 100 rounds of two requests in one write, as wrk's pipelining sends
    // them. Under Nagle's rule the second answer of a round waited for
    // the client to acknowledge the first, which a client past its first
    // few segments delays by up to 40 ms: seconds for these rounds. With
    // TCP_NODELAY they take milliseconds; the bound is wide enough for any
    // loaded machine and far below the stall.
    const ROUNDS: usize = 100;
    let request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let answers = |all: &[u8]| {
        all.windows(22)
            .filter(|w| *w == b"<h1>Hello, World!</h1>")
            .count()
    };
    for mode in MODES {
        let server = ServerProcess::start(&["--mode", mode, "--keep-alive"]);
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16384];
        for _ in 0..ROUNDS {
            stream.write_all(&request.repeat(2)).unwrap();
            let mut all = Vec::new();
            while answers(&all) < 2 {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "{mode}: closed after {} answers", answers(&all));
                all.extend_from_slice(&buf[..n]);
            }
        }
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "{mode}: {took:?}");
        drop(stream);
        assert!(server.stop().0.success(), "{mode}");
    }
}

#[test]
fn a_restart_on_the_same_port_binds_at_once() {
    let _serial = serial();
    for args in [
        &["--mode", "pool-futex"][..],
        &["--mode", "epoll"],
        &["--mode", "epoll", "--workers", "2", "--reuseport"],
        &["--mode", "io-uring"],
        // A socket per ring: each ring's accept holds its socket until the
        // accept's last completion.
        &["--mode", "io-uring", "--workers", "2"],
    ] {
        restart_binds_at_once(args);
    }
}

fn restart_binds_at_once(args: &[&str]) {
    let server = ServerProcess::start(args);
    let addr = server.addr;
    let (results, _) = concurrent_gets(addr, "/", 100);
    assert!(results.iter().all(|r| r.is_ok()));
    assert!(server.stop_at_exit().success());
    // Once it has exited, none of its sockets may still listen: bound at
    // once (std sets SO_REUSEADDR), with no SO_REUSEPORT to share the port.
    let bound = std::net::TcpListener::bind(addr);
    assert!(bound.is_ok(), "{args:?}: {addr} still taken: {bound:?}");
    drop(bound);
    // The server closed first, so its side of those connections sits in
    // TIME_WAIT; without SO_REUSEADDR this bind would fail for a minute.
    let addr_arg = addr.to_string();
    let again = ServerProcess::start_raw(&["serve", "--mode", "epoll", "--addr", &addr_arg])
        .unwrap_or_else(|stderr| panic!("{args:?}: restart on {addr} failed: {stderr}"));
    assert_eq!(get(again.addr, "/").unwrap().status, 200);
    assert!(again.stop().0.success());
}

#[test]
fn curl_gets_the_page() {
    let _serial = serial();
    let server = ServerProcess::start(&[]);
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--include", "--max-time", "10"])
        .arg(format!("http://{}/?delay=10ms", server.addr))
        .output()
        .expect("curl is needed for this test; .ci/run installs it");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n<h1>Hello, World!</h1>"), "{text}");
    assert!(server.stop().0.success());
}

#[test]
fn bad_flags_and_busy_ports_fail_with_one_clear_line() {
    let _serial = serial();
    let run = |args: &[&str]| {
        let output = Command::new(BIN).args(args).output().unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (status, stderr) = run(&["serve", "--mode", "turbo"]);
    assert!(!status.success());
    assert!(stderr.contains("invalid value 'turbo'"), "{stderr}");
    let (status, stderr) = run(&["serve", "--delay", "soon"]);
    assert!(!status.success(), "{stderr}");
    let (status, stderr) = run(&["serve", "--delay", "1y"]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.lines().count() == 1 && stderr.contains("--delay must be at most 60s"),
        "{stderr}"
    );
    let (status, stderr) = run(&["serve", "--workers", "0"]);
    assert!(!status.success(), "{stderr}");

    let server = ServerProcess::start(&[]);
    let (status, stderr) = run(&["serve", "--addr", &server.addr.to_string()]);
    assert!(!status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("tracebench: cannot listen on"),
        "{stderr}"
    );
    assert!(server.stop().0.success());
}

#[test]
fn completions_are_generated() {
    let output = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let script = String::from_utf8(output.stdout).unwrap();
    assert!(
        script.contains("tracebench") && script.contains("--when-full"),
        "{script}"
    );
}

#[test]
fn completions_into_a_closed_pipe_are_not_a_crash() {
    // A pipe whose reading end is closed before the writer starts, as in
    // `tracebench completions bash | true`: every write fails with EPIPE.
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors of the array we pass.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned here once.
    let (read_end, write_end) = unsafe {
        use std::os::fd::{FromRawFd, OwnedFd};
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    drop(read_end);
    for shell in ["bash", "zsh", "fish"] {
        let output = Command::new(BIN)
            .args(["completions", shell])
            .stdout(write_end.try_clone().unwrap())
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "{shell}: {} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn out_of_descriptors_is_said_once_a_second_not_a_hundred_times() {
    // Issue 14: EMFILE logged 100 lines a second.
    let _serial = serial();
    let mut server = ServerProcess::start_command(Command::new("sh").args([
        "-c",
        &format!("ulimit -n 24; exec {BIN} serve --addr 127.0.0.1:0 --mode thread --delay 3s"),
    ]))
    .unwrap();
    let stderr = server.stderr_lines();
    // More connections than descriptors, each held by a sleeping request.
    let mut held = Vec::new();
    for _ in 0..40 {
        if let Ok(mut stream) = std::net::TcpStream::connect(server.addr) {
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            held.push(stream);
        }
    }
    std::thread::sleep(Duration::from_millis(2_500));
    let lines: Vec<String> = stderr
        .try_iter()
        .filter(|l| l.contains("accept:"))
        .collect();
    drop(held);
    let _ = server.stop();
    assert!(
        !lines.is_empty(),
        "EMFILE never met: the test proves nothing"
    );
    assert!(
        lines.len() <= 4,
        "{} lines in 2.5 s: {lines:#?}",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .skip(1)
            .all(|l| l.contains("more since the last line")),
        "{lines:#?}"
    );
}

#[test]
fn a_head_that_trickles_in_late_is_cut_at_the_read_timeout_from_the_connect() {
    let _serial = serial();
    // Issue 14: a slowloris client held a worker for the read timeout after
    // its first byte, and a first byte just before the timeout nearly
    // doubled that. The whole head is now due one read timeout after the
    // server starts waiting for it, in every mode.
    for mode in ["sync", "thread", "pool-futex", "epoll", "io-uring"] {
        let server =
            ServerProcess::start(&["--mode", mode, "--read-timeout", "1s", "--no-defer-accept"]);
        let mut stream = TcpStream::connect(server.addr).unwrap();
        let connected = Instant::now();
        std::thread::sleep(Duration::from_millis(800));
        stream.write_all(b"G").unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut answer = Vec::new();
        let cut = loop {
            let mut buf = [0u8; 512];
            match stream.read(&mut buf) {
                Ok(0) => break connected.elapsed(),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(_) if connected.elapsed() > Duration::from_secs(4) => {
                    panic!("{mode}: still open after 4 s")
                }
                // A byte every 100 ms, as long as the server lets it in.
                Err(_) => {
                    let _ = stream.write_all(b"a");
                }
            }
        };
        assert!(
            answer.starts_with(b"HTTP/1.1 408"),
            "{mode}: {:?}",
            String::from_utf8_lossy(&answer)
        );
        assert!(
            cut < Duration::from_millis(1500),
            "{mode}: cut {cut:?} after the connect, with a 1 s read timeout"
        );
        let (status, _) = server.stop();
        assert!(status.success(), "{mode}");
    }
}

#[test]
fn man_pages_are_written_for_every_command_and_rewritten_whole() {
    // Issue 15: no man page.
    let dir = tempdir();
    let pages = dir.path().join("man1");
    for _ in 0..2 {
        let output = Command::new(BIN).arg("man").arg(&pages).output().unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 12);
    }
    for command in [
        "",
        "-serve",
        "-dash",
        "-replay",
        "-trace",
        "-export",
        "-load",
        "-merge",
        "-experiment",
        "-lab",
        "-completions",
    ] {
        let page = std::fs::read_to_string(pages.join(format!("tracebench{command}.1")))
            .unwrap_or_else(|e| panic!("tracebench{command}.1: {e}"));
        assert!(page.contains(".TH tracebench"), "{command}: {page}");
        assert!(page.contains(".SH SYNOPSIS"), "{command}");
    }
    let serve = std::fs::read_to_string(pages.join("tracebench-serve.1")).unwrap();
    // The page is --help's own text: the modes and flags as they are.
    for text in ["io\\-uring", "\\-\\-reuseport", "\\-\\-max\\-connections"] {
        assert!(serve.contains(text), "{text} in {serve}");
    }
}

#[test]
fn a_full_pool_closes_idle_keep_alive_connections_first() {
    // Issue 14: quiet keep-alive clients held every worker of a pool while
    // new clients waited out the read timeout. As nginx does at its
    // connection limit, the idle connection is closed first.
    for mode in ["pool-futex", "pool-std", "pool-spin"] {
        let server = ServerProcess::start(&[
            "--mode",
            mode,
            "--workers",
            "2",
            "--queue",
            "1",
            "--keep-alive",
            "--read-timeout",
            "20s",
        ]);
        // Two clients take both workers and go quiet after one answer.
        let mut quiet: Vec<TcpStream> = (0..2)
            .map(|_| {
                let mut stream = TcpStream::connect(server.addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap();
                assert_eq!(parse_response(&buf[..n]).unwrap().status, 200);
                stream
            })
            .collect();
        // Both workers wait for a next request (on a loaded machine one may
        // still be on its way there).
        let waiting = Instant::now();
        while threads_blocked_in(server.pid(), libc::SYS_recvfrom) < 2 {
            assert!(
                waiting.elapsed() < Duration::from_secs(10),
                "{mode}: workers never waited"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // One more fills the queue, the next finds it full: both are
        // answered at once, not after 20 s.
        let started = Instant::now();
        let clients: Vec<_> = (0..2)
            .map(|_| {
                let addr = server.addr;
                let client = std::thread::spawn(move || {
                    exchange(
                        addr,
                        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                    )
                });
                std::thread::sleep(Duration::from_millis(100));
                client
            })
            .collect();
        for client in clients {
            assert_eq!(client.join().unwrap().unwrap().status, 200, "{mode}");
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "{mode}: {took:?}");
        // The longest idle was closed (end of stream); the other is open.
        assert_eq!(quiet[0].read(&mut [0; 64]).unwrap(), 0, "{mode}");
        quiet[1].set_nonblocking(true).unwrap();
        let still = quiet[1].read(&mut [0; 64]);
        assert!(
            still
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "{mode}: {still:?}"
        );
        drop(quiet);
        assert!(server.stop().0.success(), "{mode}");
    }
}
