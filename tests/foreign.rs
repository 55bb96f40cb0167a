//! Servers we did not write, loaded and traced end to end (issue 16): the
//! assembly thread-pool server of tests/fixtures/asmserver.asm, nginx
//! (a master and 2 worker processes), python3's http.server (a thread per
//! request), a node http server (one event loop) and a JDK HttpServer (a
//! dispatcher thread and a pool of 4). Each runs on 127.0.0.1 on a free
//! port, is started by the test and stopped by pid with SIGTERM.
//!
//! What each really does at the syscall level, as strace -f shows it, is
//! asserted here on tracebench's own trace: which accept call, on which
//! thread, and how it makes its threads or processes.
// A test reads as one story, start to finish: no line limit here.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::foreign::{self, ForeignServer, GRACE, Running, free_port};
use common::*;

/// How a server ends on SIGTERM, by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// exit(code).
    Code(i32),
    /// Killed by this signal (its default action).
    Signal(i32),
}

fn ending_of(status: std::process::ExitStatus) -> Option<Ending> {
    status
        .code()
        .map(Ending::Code)
        .or_else(|| status.signal().map(Ending::Signal))
}

/// `tracebench load URL -n N -c C --json`, which must succeed; returns
/// the summary.
fn load(url: &str, requests: u32, connections: u32) -> serde_json::Value {
    let output = Command::new(BIN)
        .args(["load", url, "-c", &connections.to_string()])
        .args(["-n", &requests.to_string(), "--json", "--timeout", "20s"])
        .output()
        .expect("run tracebench load");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "tracebench load printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        output.status.success(),
        "tracebench load failed ({}): {summary}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    summary
}

/// Asserts that every one of `requests` was answered 200.
fn assert_all_answered_200(summary: &serde_json::Value, requests: u64, who: &str) {
    assert_eq!(summary["completed"], requests, "{who}: {summary}");
    assert_eq!(summary["failed"], 0, "{who}: {summary}");
    assert_eq!(summary["in_flight_at_end"], 0, "{who}: {summary}");
    let statuses = summary["statuses"].as_object().expect("statuses");
    assert_eq!(statuses.len(), 1, "{who}: only 200s: {summary}");
    assert_eq!(statuses["200"], requests, "{who}: {summary}");
}

/// How hard to load a server, and what to check beyond the answers.
struct Load {
    requests: u32,
    connections: u32,
    /// The server's open descriptors must come back to what they were
    /// (every connection closed).
    same_fds_after: bool,
}

/// The load of the brief: 200 requests on 4 connections.
const LIGHT: Load = Load {
    requests: 200,
    connections: 4,
    same_fds_after: false,
};

/// Starts `server`, loads it, and stops it with SIGTERM, which it must
/// obey within the grace period with the `ending` it has.
fn loads_and_stops(server: ForeignServer, load_shape: &Load, ending: Ending) {
    let _serial = serial();
    let name = server.name;
    let started = Instant::now();
    let running = server.start();
    let ready = started.elapsed();
    let pid = running.pid();
    let family = foreign::descendants(pid);
    let fds_before = open_fds(pid);
    let summary = load(&running.url(), load_shape.requests, load_shape.connections);
    assert_all_answered_200(&summary, u64::from(load_shape.requests), name);
    if load_shape.same_fds_after {
        // A worker closes just after it writes: give it a moment.
        let (same, fds) = eventually(Duration::from_secs(5), || {
            let fds = open_fds(pid);
            (fds == fds_before, fds)
        });
        assert!(
            same,
            "{name}: {fds_before} descriptors before the load, {fds} after"
        );
    }
    let stopped = running.stop();
    assert!(
        stopped.graceful,
        "{name} (pid {pid}) did not exit within {GRACE:?} of SIGTERM: {stopped:?}"
    );
    assert_eq!(
        ending_of(stopped.status),
        Some(ending),
        "{name}: {}",
        stopped.output
    );
    // Nothing of it is left: neither it nor a process it started (nginx's
    // workers).
    let left: Vec<i32> = family
        .iter()
        .copied()
        .chain([pid])
        .filter(|&p| foreign::alive(p))
        .collect();
    assert!(
        left.is_empty(),
        "{name} left {left:?} running (of {family:?})"
    );
    eprintln!(
        "{name}: serving after {ready:.2?}, {} requests in {:.3} s, stopped in {:.2?}",
        load_shape.requests, summary["elapsed_s"], stopped.took
    );
}

#[test]
fn asm_server_answers_every_request_closes_every_connection_and_exits_0_on_sigterm() {
    // Ours, so loaded harder: 100 connections at once against 4 workers
    // fill the ring of 64 and make the acceptor wait for room.
    let heavy = Load {
        requests: 3000,
        connections: 100,
        same_fds_after: true,
    };
    loads_and_stops(foreign::asm_server(free_port()), &heavy, Ending::Code(0));
}

#[test]
fn asm_server_refuses_a_missing_or_bad_port_with_its_usage() {
    let binary = foreign::asm_server_binary();
    for args in [&[][..], &["0"], &["65536"], &["80x"], &[""], &["1", "2"]] {
        let output = Command::new(binary).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "asmserver {args:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "usage: asmserver PORT (1 to 65535)\n",
            "asmserver {args:?}"
        );
    }
}

#[test]
fn nginx_answers_every_request_and_exits_0_on_sigterm() {
    // One worker here, two in the traced test.
    loads_and_stops(foreign::nginx(free_port(), 1), &LIGHT, Ending::Code(0));
}

#[test]
fn python_http_server_answers_every_request_and_dies_of_sigterm() {
    // python installs no SIGTERM handler: the default action kills it.
    loads_and_stops(
        foreign::python(free_port()),
        &LIGHT,
        Ending::Signal(libc::SIGTERM),
    );
}

#[test]
fn node_answers_every_request_and_exits_0_on_sigterm() {
    // server.js exits 0 from its own SIGTERM handler.
    loads_and_stops(foreign::node(free_port()), &LIGHT, Ending::Code(0));
}

#[test]
fn java_answers_every_request_and_exits_143_on_sigterm() {
    // The JVM catches SIGTERM, runs its shutdown hooks and exits 128 + 15.
    loads_and_stops(foreign::java(free_port()), &LIGHT, Ending::Code(143));
}

/// One completed call of a strace-style trace.
#[derive(Debug)]
struct Call {
    /// The calling thread; `None` for lines before the first `[pid N]`
    /// prefix (when the program had one thread).
    tid: Option<i32>,
    name: String,
    /// The whole call text, arguments and all (an `<unfinished ...>` part
    /// joined with its `resumed` part).
    text: String,
    /// The return value, when it is a number.
    ret: Option<i64>,
}

/// Every completed call of `trace` (tracebench trace's text output).
fn calls_of(trace: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut unfinished: HashMap<Option<i32>, String> = HashMap::new();
    for line in trace.lines() {
        // `[pid N] ` on a terminal, `N ` on every line of a file.
        let digits = line.bytes().take_while(u8::is_ascii_digit).count();
        let (tid, rest) = match line.strip_prefix("[pid ") {
            Some(tagged) => {
                let (tid, rest) = tagged.split_once("] ").expect("a closing bracket");
                (Some(tid.trim().parse::<i32>().expect("a tid")), rest)
            }
            None if digits > 0 && line[digits..].starts_with(' ') => {
                (line[..digits].parse().ok(), line[digits..].trim_start())
            }
            None => (None, line),
        };
        if rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        if let Some(start) = rest.strip_suffix(" <unfinished ...>") {
            unfinished.insert(tid, start.to_owned());
            continue;
        }
        let text = match rest.strip_prefix("<... ") {
            Some(resumed) => {
                let (_, tail) = resumed.split_once(" resumed>").expect("resumed>");
                unfinished.remove(&tid).unwrap_or_default() + tail
            }
            None => rest.to_owned(),
        };
        let name = text.split('(').next().unwrap_or_default().to_owned();
        let ret = text
            .rsplit_once("= ")
            .filter(|(call, _)| call.trim_end().ends_with(')'))
            .and_then(|(_, after)| after.split_whitespace().next()?.parse().ok());
        calls.push(Call {
            tid,
            name,
            text,
            ret,
        });
    }
    calls
}

/// The calls a server may answer with.
const WRITE_CALLS: [&str; 5] = ["write", "writev", "sendto", "sendmsg", "sendfile"];

/// What the trace of a server says about how it is built.
#[derive(Debug, Default)]
struct Shape {
    /// accept and accept4 calls that returned a connection, by name.
    accepts: HashMap<String, usize>,
    /// The threads (tids) that made those calls.
    accepting_threads: BTreeSet<Option<i32>>,
    /// What successful clone calls returned: with CLONE_THREAD (threads)
    /// and without (processes).
    clone_threads: Vec<i32>,
    clone_processes: Vec<i32>,
    /// What successful clone3 calls returned (glibc's pthread_create).
    clone3: Vec<i32>,
    /// Threads made (clone3, or clone with CLONE_THREAD) after the first
    /// accept: the trace is in time order.
    threads_after_first_accept: usize,
    /// Successful write-like calls on a descriptor above 2 (not the
    /// standard output or error: a connection, mostly), by name.
    writes: HashMap<String, usize>,
    /// The threads that made them, by name.
    writing_threads: HashMap<String, BTreeSet<Option<i32>>>,
    /// Of those, the calls whose buffer the trace shows (write, sendto:
    /// not writev's vector) starting an HTTP status line, and their threads.
    status_lines: usize,
    status_line_threads: BTreeSet<Option<i32>>,
}

fn shape_of(trace: &str) -> Shape {
    let mut shape = Shape::default();
    for call in calls_of(trace) {
        let Some(ret) = call.ret.filter(|r| *r >= 0) else {
            continue;
        };
        let name = call.name.as_str();
        if name == "accept" || name == "accept4" {
            *shape.accepts.entry(call.name.clone()).or_default() += 1;
            shape.accepting_threads.insert(call.tid);
        } else if name == "clone" || name == "clone3" {
            let child = i32::try_from(ret).unwrap();
            let thread = name == "clone3" || call.text.contains("CLONE_THREAD");
            if thread && !shape.accepts.is_empty() {
                shape.threads_after_first_accept += 1;
            }
            if name == "clone3" {
                shape.clone3.push(child);
            } else if call.text.contains("CLONE_THREAD") {
                shape.clone_threads.push(child);
            } else {
                shape.clone_processes.push(child);
            }
        } else if WRITE_CALLS.contains(&name) && ret > 0 {
            let fd: i32 = call.text[name.len() + 1..]
                .split(',')
                .next()
                .and_then(|fd| fd.trim().parse().ok())
                .expect("a descriptor");
            if fd > 2 {
                *shape.writes.entry(call.name.clone()).or_default() += 1;
                shape
                    .writing_threads
                    .entry(call.name.clone())
                    .or_default()
                    .insert(call.tid);
                if call.text.contains("\"HTTP/1.") {
                    shape.status_lines += 1;
                    shape.status_line_threads.insert(call.tid);
                }
            }
        }
    }
    shape
}

/// Runs `server` under `tracebench trace -e trace=accept,accept4,clone,
/// clone3,write,… -o FILE`, loads it with 50 requests, stops it with
/// SIGTERM (sent to the server, not to the tracer) and returns the
/// trace's shape, the tracer's ending and the server's pid.
fn traced_run(server: ForeignServer) -> (Shape, Option<Ending>, i32) {
    let _serial = serial();
    let name = server.name;
    let dir = tempdir();
    let trace_path = dir.path().join("trace.txt");
    let prefix: Vec<OsString> = vec![
        BIN.into(),
        "trace".into(),
        "-e".into(),
        format!(
            "trace=accept,accept4,clone,clone3,{}",
            WRITE_CALLS.join(",")
        )
        .into(),
        "-o".into(),
        trace_path.clone().into(),
        "--".into(),
    ];
    let started = Instant::now();
    let running: Running = server.start_under(&prefix);
    let ready = started.elapsed();
    let server_pid = running.server_pid();
    let summary = load(&running.url(), 50, 4);
    assert_all_answered_200(&summary, 50, name);
    let stopped = running.stop();
    assert!(
        stopped.graceful,
        "{name} traced did not exit within {GRACE:?} of SIGTERM: {stopped:?}"
    );
    let trace = std::fs::read_to_string(&trace_path).expect("the trace file");
    let shape = shape_of(&trace);
    eprintln!(
        "{name} traced: serving after {ready:.2?}, stopped in {:.2?}: {shape:?}",
        stopped.took
    );
    (shape, ending_of(stopped.status), server_pid)
}

/// At least `n` calls named `name` returned a connection, and none of the
/// other accept call.
fn assert_accepts(shape: &Shape, name: &str, n: usize, who: &str) {
    let other = if name == "accept4" {
        "accept"
    } else {
        "accept4"
    };
    let count = shape.accepts.get(name).copied().unwrap_or(0);
    assert!(
        count >= n,
        "{who}: {count} {name} returned a connection, expected at least {n}: {shape:?}"
    );
    assert!(
        !shape.accepts.contains_key(other),
        "{who} uses {name}, never {other}: {shape:?}"
    );
}

/// The server answers with `name`: at least `n` such calls on a
/// connection, and no other write-like call does as many. Returns the
/// threads that made them.
fn assert_answers_with(shape: &Shape, name: &str, n: usize, who: &str) -> BTreeSet<Option<i32>> {
    let count = shape.writes.get(name).copied().unwrap_or(0);
    assert!(
        count >= n,
        "{who}: {count} {name} calls wrote to a connection, expected at least {n}: {shape:?}"
    );
    for (other, &others) in &shape.writes {
        assert!(
            other == name || others < n,
            "{who} answers with {name}, yet {others} {other} calls: {shape:?}"
        );
    }
    shape.writing_threads[name].clone()
}

fn tids(children: &[i32]) -> BTreeSet<Option<i32>> {
    children.iter().map(|&c| Some(c)).collect()
}

#[test]
fn asm_server_traced_one_acceptor_and_four_raw_clone_threads_that_write() {
    let (shape, ending, pid) = traced_run(foreign::asm_server(free_port()));
    assert_eq!(
        ending,
        Some(Ending::Code(0)),
        "the tracer's status is the server's"
    );
    // 50 by the load, 1 by the readiness probe.
    assert_accepts(&shape, "accept4", 51, "asm");
    // The main thread accepts: the only tid that does is the pid (or the
    // line had no prefix, the server then having one thread).
    assert!(
        shape
            .accepting_threads
            .iter()
            .all(|t| t.is_none_or(|t| t == pid)),
        "only the acceptor (pid {pid}) accepts: {shape:?}"
    );
    assert_eq!(
        shape.clone_threads.len(),
        4,
        "4 workers from raw clone: {shape:?}"
    );
    assert!(
        shape.clone_processes.is_empty() && shape.clone3.is_empty(),
        "{shape:?}"
    );
    // The workers answer, with write; the acceptor never does.
    let writers = assert_answers_with(&shape, "write", 51, "asm");
    assert!(writers.is_subset(&tids(&shape.clone_threads)), "{shape:?}");
    assert_eq!(shape.status_lines, shape.writes["write"], "{shape:?}");
}

#[test]
fn nginx_traced_two_worker_processes_accept_and_answer_with_writev() {
    let (shape, ending, pid) = traced_run(foreign::nginx(free_port(), 2));
    assert_eq!(
        ending,
        Some(Ending::Code(0)),
        "the tracer's status is the server's"
    );
    assert_accepts(&shape, "accept4", 51, "nginx");
    // The master forks its 2 workers with clone (no CLONE_THREAD): the
    // accepts and the answers come from those, never from the master.
    assert_eq!(shape.clone_processes.len(), 2, "{shape:?}");
    assert!(
        shape.clone_threads.is_empty() && shape.clone3.is_empty(),
        "{shape:?}"
    );
    let workers = tids(&shape.clone_processes);
    assert!(
        !shape.accepting_threads.is_empty() && shape.accepting_threads.is_subset(&workers),
        "only the workers {workers:?} accept, not the master {pid}: {shape:?}"
    );
    // Head and body in one writev of two buffers.
    let writers = assert_answers_with(&shape, "writev", 51, "nginx");
    assert!(writers.is_subset(&workers), "{shape:?}");
}

#[test]
fn python_traced_main_thread_accepts_and_a_thread_per_request_answers_with_sendto() {
    let (shape, ending, pid) = traced_run(foreign::python(free_port()));
    // Killed by SIGTERM; the tracer reports that as 128 + 15.
    assert_eq!(ending, Some(Ending::Code(128 + libc::SIGTERM)));
    assert_accepts(&shape, "accept4", 51, "python");
    assert!(
        shape
            .accepting_threads
            .iter()
            .all(|t| t.is_none_or(|t| t == pid)),
        "only the main thread (pid {pid}) accepts: {shape:?}"
    );
    // ThreadingHTTPServer: a thread per connection, from clone3, and no
    // process.
    assert!(
        shape.threads_after_first_accept >= 51,
        "a thread per request: {shape:?}"
    );
    assert!(
        shape.clone_processes.is_empty() && shape.clone_threads.is_empty(),
        "{shape:?}"
    );
    // socket.sendall is sendto; each request's own thread answers it.
    let writers = assert_answers_with(&shape, "sendto", 51, "python");
    assert!(
        writers.len() >= 51,
        "a thread per request answers: {shape:?}"
    );
    assert!(writers.is_subset(&tids(&shape.clone3)), "{shape:?}");
}

#[test]
fn node_traced_one_event_loop_accepts_and_answers_with_writev() {
    let (shape, ending, pid) = traced_run(foreign::node(free_port()));
    assert_eq!(
        ending,
        Some(Ending::Code(0)),
        "the tracer's status is the server's"
    );
    assert_accepts(&shape, "accept4", 51, "node");
    assert_eq!(
        shape.accepting_threads,
        BTreeSet::from([Some(pid)]),
        "the main thread's event loop accepts: {shape:?}"
    );
    // libuv's pool and V8's helpers start with the process; no request
    // makes a thread.
    assert!(
        !shape.clone3.is_empty() && shape.threads_after_first_accept < 50,
        "a fixed set of threads: {shape:?}"
    );
    // The event loop answers too, with writev.
    let writers = assert_answers_with(&shape, "writev", 51, "node");
    assert_eq!(writers, BTreeSet::from([Some(pid)]), "{shape:?}");
}

#[test]
fn java_traced_a_dispatcher_thread_accepts_and_the_pool_of_4_answers() {
    let (shape, ending, pid) = traced_run(foreign::java(free_port()));
    assert_eq!(
        ending,
        Some(Ending::Code(143)),
        "the tracer's status is the JVM's"
    );
    // The JDK's ServerSocketChannel calls accept, not accept4.
    assert_accepts(&shape, "accept", 51, "java");
    // HttpServer's dispatcher thread accepts, not the process's first thread.
    assert_eq!(shape.accepting_threads.len(), 1, "{shape:?}");
    assert!(
        !shape.accepting_threads.contains(&Some(pid)) && !shape.accepting_threads.contains(&None),
        "a thread other than main (pid {pid}) accepts: {shape:?}"
    );
    // A fixed pool makes a thread per task until it has 4, so its 4
    // threads come after the first accept; the JVM may add a compiler or
    // GC thread of its own then, but no request makes a thread.
    assert!(
        (4..50).contains(&shape.threads_after_first_accept),
        "{shape:?}"
    );
    // The pool's threads answer with write: at most 4 of them, none of
    // them the dispatcher. (The JVM writes to files of its own too.)
    assert_answers_with(&shape, "write", 51, "java");
    assert!(shape.status_lines >= 51, "{shape:?}");
    let answering = &shape.status_line_threads;
    assert!(
        !answering.is_empty()
            && answering.len() <= 4
            && answering.is_disjoint(&shape.accepting_threads)
            && answering.is_subset(&tids(&shape.clone3)),
        "{shape:?}"
    );
}

#[test]
fn a_missing_tool_fails_with_what_to_run() {
    let panic = std::panic::catch_unwind(|| foreign::require_tool("no-such-tool-tracebench"))
        .expect_err("a missing tool must fail the test");
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert!(
        message.contains("no-such-tool-tracebench is not installed")
            && message.contains("bash .ci/test --install-only"),
        "{message}"
    );
}
