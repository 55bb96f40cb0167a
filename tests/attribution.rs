//! Request attribution and futex statistics on real traced runs of our
//! server, in every accept-based mode: the trace alone says which thread
//! served each request, and the export writes it out.
// A test reads as one story, start to finish: no line limit here.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use tracebench_analysis::attribution::{Attributor, RequestEnd, RequestRecord};
use tracebench_export::render::syscall_name;
use tracebench_trace::format::TraceReader;
use tracebench_trace::{Creation, Event, EventKind};

/// A recorded run: the trace file and the server's process id.
struct Run {
    _dir: tempfile::TempDir,
    trace: PathBuf,
    server_pid: i32,
}

/// Runs `tracebench serve --mode MODE ARGS…` under `tracebench trace --write`,
/// sends `rounds` rounds of `per_round` concurrent GETs of `path` (a new
/// connection each), and stops the server with SIGTERM.
fn traced_run(mode: &str, args: &[&str], path: &str, rounds: usize, per_round: usize) -> Run {
    let dir = tempdir();
    let trace = dir.path().join("run.tbt");
    let mut command = Command::new(BIN);
    command
        .args(["trace", "--write"])
        .arg(&trace)
        .args(["--", BIN, "serve", "--addr", "127.0.0.1:0", "--mode", mode])
        .args(args);
    let mut tracer = ServerProcess::start_command(&mut command)
        .unwrap_or_else(|stderr| panic!("the traced server did not start: {stderr}"));
    for _ in 0..rounds {
        let (results, _) = concurrent_gets(tracer.addr, path, per_round);
        for result in results {
            assert_eq!(result.expect("a response").status, 200);
        }
    }
    let server = children_of(tracer.pid());
    assert_eq!(server.len(), 1, "one server under the tracer: {server:?}");
    // SAFETY: kill(2) on the server process the tracer started for us.
    assert_eq!(unsafe { libc::kill(server[0].0, libc::SIGTERM) }, 0);
    let (status, _) = tracer.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    Run {
        _dir: dir,
        trace,
        server_pid: server[0].0,
    }
}

fn events(trace: &Path) -> Vec<Event> {
    TraceReader::open(trace)
        .expect("open the trace")
        .map(|e| e.expect("a whole event"))
        .collect()
}

fn attribute(events: &[Event]) -> (Vec<RequestRecord>, Attributor) {
    let mut attributor = Attributor::new();
    let mut records = Vec::new();
    for event in events {
        attributor.feed(event, |r| records.push(r.clone()));
    }
    (records, attributor)
}

/// What the raw events say, independently of the attributor: accept4
/// returns (time → (tid, fd)), close returns (time → (tid, fd)), and the
/// tasks each process created.
struct Facts {
    accepts: HashMap<u64, (i32, i32)>,
    closes: HashMap<u64, (i32, i32)>,
    threads: BTreeSet<i32>,
    processes: BTreeSet<i32>,
}

fn facts(events: &[Event]) -> Facts {
    let mut facts = Facts {
        accepts: HashMap::new(),
        closes: HashMap::new(),
        threads: BTreeSet::new(),
        processes: BTreeSet::new(),
    };
    let mut entered: HashMap<i32, (u32, u64)> = HashMap::new();
    for event in events {
        match &event.kind {
            EventKind::SyscallEntry { nr, args, .. } => {
                entered.insert(event.tid, (*nr, args[0]));
            }
            EventKind::SyscallExit { nr, ret, .. } => {
                let Some((entered_nr, arg0)) = entered.remove(&event.tid) else {
                    continue;
                };
                if entered_nr != *nr {
                    continue;
                }
                if syscall_name(*nr) == "accept4" && *ret >= 0 {
                    facts
                        .accepts
                        .insert(event.time_ns, (event.tid, *ret as i32));
                }
                if syscall_name(*nr) == "close" {
                    facts.closes.insert(event.time_ns, (event.tid, arg0 as i32));
                }
            }
            EventKind::Spawned {
                child_tid,
                creation,
                ..
            } => {
                match creation {
                    Creation::Thread => facts.threads.insert(*child_tid),
                    _ => facts.processes.insert(*child_tid),
                };
            }
            _ => {}
        }
    }
    facts
}

/// Checks every record against the raw events: it starts at an accept4
/// return of its fd on the acceptor, ends at a close return of that fd on
/// the serving thread, and queue wait + service is exactly that span.
fn check_against_events(records: &[RequestRecord], facts: &Facts, server_pid: i32) {
    for r in records {
        assert_eq!(r.end, RequestEnd::Closed, "{r:?}");
        assert_eq!((r.acceptor_pid, r.acceptor_tid), (server_pid, server_pid));
        assert_eq!(
            facts.accepts.get(&r.accepted_ns),
            Some(&(r.acceptor_tid, r.fd)),
            "{r:?}"
        );
        assert_eq!(
            facts.closes.get(&r.ended_ns),
            Some(&(r.serving_tid, r.fd)),
            "{r:?}"
        );
        assert!(r.accepted_ns <= r.picked_up_ns && r.picked_up_ns <= r.ended_ns);
        assert_eq!(
            r.queue_wait_ns() + r.service_ns(),
            r.ended_ns - r.accepted_ns
        );
        assert!(r.bytes_read > 0 && r.bytes_written > 0, "{r:?}");
    }
    let connections: BTreeSet<u64> = records.iter().map(|r| r.connection).collect();
    assert_eq!(
        connections.len(),
        records.len(),
        "one request per connection"
    );
}

#[test]
fn a_pool_futex_run_of_50_requests_is_attributed_to_its_workers() {
    let _serial = serial();
    let run = traced_run("pool-futex", &["--workers", "5"], "/?delay=20ms", 5, 10);
    let events = events(&run.trace);
    let facts = facts(&events);
    let (records, attributor) = attribute(&events);
    assert_eq!(records.len(), 50, "{:?}", attributor.counts());
    check_against_events(&records, &facts, run.server_pid);
    assert_eq!(facts.threads.len(), 5, "five workers");
    for r in &records {
        assert_ne!(r.serving_tid, r.acceptor_tid, "served by a worker: {r:?}");
        assert_eq!(r.serving_pid, run.server_pid);
        assert!(facts.threads.contains(&r.serving_tid), "{r:?}");
    }
    let workers = attributor.stats().workers();
    assert_eq!(workers.values().map(|w| w.requests).sum::<u64>(), 50);
    assert!(workers.keys().all(|tid| facts.threads.contains(tid)));
    assert_eq!(attributor.stats().queue_wait().len(), 50);
    assert_eq!(attributor.counts().unserved, 0);
    assert_eq!(attributor.open_connections(), 0);

    // Ten requests at once on five workers: some waited in the queue. At
    // least one woke a sleeping worker, so its pick-up is a futex return
    // that came before the worker's first read of the fd.
    let mut first_read: BTreeMap<(i32, i32, u64), u64> = BTreeMap::new();
    for event in &events {
        if let EventKind::SyscallEntry { nr, args, .. } = &event.kind
            && syscall_name(*nr) == "recvfrom"
        {
            first_read
                .entry((event.tid, args[0] as i32, event.time_ns))
                .or_insert(event.time_ns);
        }
    }
    assert!(
        records.iter().any(
            |r| first_read.keys().any(|&(tid, fd, at)| tid == r.serving_tid
                && fd == r.fd
                && at > r.picked_up_ns
                && at < r.ended_ns)
        ),
        "no pick-up at a futex return"
    );

    // The futex section of the same trace: the workers' condition variable
    // word saw waits, and wakes matched to them.
    let mut futex = tracebench_analysis::futexstat::FutexStats::new();
    for event in &events {
        futex.feed(event);
    }
    let busiest = futex.top(1);
    assert_eq!(busiest.len(), 1);
    let (key, word) = busiest[0];
    assert_eq!(key.pid, run.server_pid);
    assert!(word.waits > 0 && word.wakes > 0, "{word:?}");
    assert!(word.wake_to_run.count > 0, "{word:?}");
    assert_eq!(word.herds, 0, "one notify per connection wakes one worker");
}

#[test]
fn thread_per_connection_requests_are_served_by_their_own_threads() {
    let _serial = serial();
    let run = traced_run("thread", &[], "/", 2, 5);
    let events = events(&run.trace);
    let facts = facts(&events);
    let (records, attributor) = attribute(&events);
    assert_eq!(records.len(), 10, "{:?}", attributor.counts());
    check_against_events(&records, &facts, run.server_pid);
    let serving: BTreeSet<i32> = records.iter().map(|r| r.serving_tid).collect();
    assert_eq!(serving.len(), 10, "a thread per connection: {serving:?}");
    assert!(serving.iter().all(|tid| facts.threads.contains(tid)));
    assert!(!serving.contains(&run.server_pid));
}

#[test]
fn sync_requests_are_served_by_the_acceptor_itself() {
    let _serial = serial();
    let run = traced_run("sync", &[], "/", 2, 5);
    let events = events(&run.trace);
    let facts = facts(&events);
    let (records, attributor) = attribute(&events);
    assert_eq!(records.len(), 10, "{:?}", attributor.counts());
    check_against_events(&records, &facts, run.server_pid);
    for r in &records {
        assert_eq!(
            (r.serving_pid, r.serving_tid),
            (run.server_pid, run.server_pid)
        );
    }
    assert_eq!(attributor.stats().served_by(run.server_pid), 10);
}

#[test]
fn fork_requests_are_served_by_the_children() {
    let _serial = serial();
    let run = traced_run("fork", &[], "/", 2, 5);
    let events = events(&run.trace);
    let facts = facts(&events);
    let (records, attributor) = attribute(&events);
    assert_eq!(records.len(), 10, "{:?}", attributor.counts());
    check_against_events(&records, &facts, run.server_pid);
    let children: BTreeSet<i32> = records.iter().map(|r| r.serving_pid).collect();
    assert_eq!(children.len(), 10, "a process per connection");
    for r in &records {
        assert!(facts.processes.contains(&r.serving_pid), "{r:?}");
        assert_eq!(r.serving_tid, r.serving_pid);
    }
    assert_eq!(attributor.counts().unserved, 0);
}

#[test]
fn export_writes_requests_and_histograms_whose_counts_match() {
    let _serial = serial();
    let run = traced_run("pool-futex", &["--workers", "3"], "/", 4, 5);
    let dir = tempdir();
    let requests = dir.path().join("requests.csv");
    let queue = dir.path().join("queue.csv");
    let service = dir.path().join("service.csv");
    let output = Command::new(BIN)
        .arg("export")
        .arg(&run.trace)
        .arg("--requests")
        .arg(&requests)
        .arg("--queue-csv")
        .arg(&queue)
        .arg("--service-csv")
        .arg(&service)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("20 requests attributed"), "{stderr}");

    let text = std::fs::read_to_string(&requests).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header,
        RequestRecord::CSV_HEADER.split(',').collect::<Vec<_>>()
    );
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 20);
    for row in &rows {
        assert_eq!(row.len(), header.len());
        let number = |name: &str| row[column(name)].parse::<u64>().unwrap();
        assert_eq!(
            number("queue_wait_ns") + number("service_ns"),
            number("server_ns")
        );
        assert_ne!(row[column("serving_tid")], row[column("acceptor_tid")]);
    }
    for csv in [&queue, &service] {
        let text = std::fs::read_to_string(csv).unwrap();
        assert_eq!(
            text.lines().next(),
            Some(r#""Value","Percentile","TotalCount","1/(1-Percentile)""#)
        );
        let total: u64 = text
            .lines()
            .last()
            .and_then(|l| l.split(',').nth(2))
            .and_then(|c| c.parse().ok())
            .unwrap();
        assert_eq!(total, 20, "{text}");
    }

    // -c prints the futex section and the requests after the syscall table.
    let summary = Command::new(BIN)
        .arg("export")
        .arg(&run.trace)
        .arg("-c")
        .output()
        .unwrap();
    let summary = String::from_utf8(summary.stdout).unwrap();
    assert!(summary.contains("futex words:"), "{summary}");
    assert!(summary.contains("thundering herds:"), "{summary}");
    assert!(summary.contains("20 requests attributed"), "{summary}");
}

#[test]
fn kept_alive_connections_carry_one_record_per_request() {
    let _serial = serial();
    let dir = tempdir();
    let trace = dir.path().join("keep-alive.tbt");
    let mut command = Command::new(BIN);
    command.args(["trace", "--write"]).arg(&trace).args([
        "--",
        BIN,
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--workers",
        "3",
        "--keep-alive",
    ]);
    let mut tracer = ServerProcess::start_command(&mut command)
        .unwrap_or_else(|stderr| panic!("the traced server did not start: {stderr}"));
    let url = format!("http://{}/", tracer.addr);
    let load = Command::new(BIN)
        .args(["load", &url, "-c", "2", "-n", "20", "--keep-alive"])
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let server = children_of(tracer.pid());
    // SAFETY: kill(2) on the server process the tracer started for us.
    assert_eq!(unsafe { libc::kill(server[0].0, libc::SIGTERM) }, 0);
    assert!(tracer.wait(Duration::from_secs(30)).0.success());

    let (records, attributor) = attribute(&events(&trace));
    assert_eq!(records.len(), 20, "{:?}", attributor.counts());
    let mut by_connection: BTreeMap<u64, Vec<&RequestRecord>> = BTreeMap::new();
    for r in &records {
        by_connection.entry(r.connection).or_default().push(r);
    }
    assert_eq!(by_connection.len(), 2, "two kept-alive connections");
    for requests in by_connection.values() {
        let indexes: Vec<u32> = requests.iter().map(|r| r.index_on_connection).collect();
        assert_eq!(indexes, (0..requests.len() as u32).collect::<Vec<_>>());
        let serving: BTreeSet<i32> = requests.iter().map(|r| r.serving_tid).collect();
        assert_eq!(serving.len(), 1, "one worker serves a whole connection");
        for (r, next) in requests.iter().zip(requests.iter().skip(1)) {
            assert_eq!(r.end, RequestEnd::NextRequest);
            // The idle time between two requests is nobody's service.
            assert!(r.ended_ns <= next.started_ns, "{r:?} {next:?}");
            assert_eq!(next.queue_wait_ns(), 0);
        }
        assert!(
            requests
                .iter()
                .all(|r| r.bytes_read > 0 && r.bytes_written > 0)
        );
    }
}
