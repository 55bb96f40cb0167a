//! The perf backend against real programs and real peers. CI runs as
//! root, which this backend needs (or CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH); the tests that need it
//! say so plainly if they cannot get it, rather than pass.
//!
//! The central check runs one program under two tracers at once: the perf
//! backend outside, strace -f (or our ptrace backend) inside. Tracepoints
//! fire for a ptraced program like for any other, so both see the very
//! same threads and calls, and their per-thread counts must be equal.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ServerProcess, TracepointCount, build_fixture, serial, tempdir, threads_of};

const BIN: &str = env!("CARGO_BIN_EXE_tracebench");

/// The calls compared: creation of threads and processes, their ends, and
/// the futex, pipe and socket calls the labs and the server are made of.
const SET: &str = "clone,clone3,fork,vfork,execve,exit,exit_group,futex,read,write,accept4,close,pipe2,semop,semtimedop,nanosleep,clock_nanosleep,wait4";

/// Per thread, per syscall name: how many calls were entered.
type Counts = BTreeMap<i32, BTreeMap<String, u64>>;

fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the perf backend tests need root (CI runs as root); run them with sudo"
    );
}

/// Counts one call. A thread's count starts again at its execve: what the
/// inner tracer's own child did before it exec'ed the program is seen by
/// the outer perf backend only, and is not the program's.
fn count(counts: &mut Counts, tid: i32, name: &str) {
    let calls = counts.entry(tid).or_default();
    if name == "execve" {
        calls.clear();
    }
    *calls.entry(name.to_owned()).or_insert(0) += 1;
}

/// A trace file's events, as `export --jsonl` writes them.
fn events_of(file: &Path) -> Vec<serde_json::Value> {
    let output = Command::new(BIN)
        .args(["export", "--jsonl", "-"])
        .arg(file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The syscall entries per thread of a trace file, from its JSON lines.
fn counts_of_trace(file: &Path) -> Counts {
    let mut counts = Counts::new();
    for event in events_of(file) {
        if event["type"] == "syscall_entry" {
            let tid = event["tid"].as_i64().unwrap() as i32;
            count(&mut counts, tid, event["name"].as_str().unwrap());
        }
    }
    counts
}

/// The same from strace -f -o text: one count per call, at its start.
fn counts_of_strace(file: &Path) -> Counts {
    let mut counts = Counts::new();
    for line in std::fs::read_to_string(file).unwrap().lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(tid) = pid.trim().parse::<i32>() else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("<...") || rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        if let Some((name, _)) = rest.split_once('(') {
            *counts
                .entry(tid)
                .or_default()
                .entry(name.to_owned())
                .or_insert(0) += 1;
        }
    }
    counts
}

/// `perf` (outside) and the inner tracer's counts of the same threads:
/// only the threads the inner tracer traced (perf also sees the inner
/// tracer itself).
fn same_threads(perf: &Counts, inner: &Counts) -> Counts {
    perf.iter()
        .filter(|(tid, _)| inner.contains_key(tid))
        .map(|(tid, calls)| (*tid, calls.clone()))
        .collect()
}

/// Runs `inner` (a tracer command around the program) under the perf
/// backend; returns the perf trace's path.
fn under_perf(dir: &Path, inner: &[&str]) -> std::path::PathBuf {
    let perf_file = dir.join("perf.tbt");
    let output = Command::new(BIN)
        .args(["trace", "--backend", "perf", "--buffer-size", "64M", "-e"])
        .arg(format!("trace={SET}"))
        .arg("--write")
        .arg(&perf_file)
        .arg("--")
        .args(inner)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("LOST"), "events lost: {stderr}");
    perf_file
}

#[test]
fn labs_per_thread_counts_equal_strace_f_and_the_ptrace_backend() {
    assert_root();
    let _serial = serial();
    let labs: [&[&str]; 5] = [
        &[
            "lab",
            "race",
            "--threads",
            "4",
            "--sync",
            "futex-mutex",
            "--target",
            "20000",
        ],
        &["lab", "raw-clone"],
        &["lab", "pipe"],
        &["lab", "semaphore"],
        &["lab", "handshake", "--rounds", "2000"],
    ];
    for lab in labs {
        let dir = tempdir();
        // strace -f inside, perf outside: one run, the same threads.
        let strace_file = dir.path().join("strace.txt");
        let strace_path = strace_file.to_str().unwrap();
        let expression = format!("trace={SET}");
        let mut inner = vec![
            "strace",
            "-f",
            "-qq",
            "-e",
            &expression,
            "-o",
            strace_path,
            BIN,
        ];
        inner.extend_from_slice(lab);
        let perf = counts_of_trace(&under_perf(dir.path(), &inner));
        let strace = counts_of_strace(&strace_file);
        assert!(strace.len() >= 2, "{lab:?}: {strace:?}");
        assert_eq!(
            same_threads(&perf, &strace),
            strace,
            "{lab:?}: perf vs strace -f"
        );

        // Our ptrace backend inside, perf outside.
        let ptrace_file = dir.path().join("ptrace.tbt");
        let ptrace_path = ptrace_file.to_str().unwrap();
        let mut inner = vec![
            BIN,
            "trace",
            "--no-poll-idle",
            "-e",
            &expression,
            "--write",
            ptrace_path,
            "--",
            BIN,
        ];
        inner.extend_from_slice(lab);
        let perf = counts_of_trace(&under_perf(dir.path(), &inner));
        let ptrace = counts_of_trace(&ptrace_file);
        assert_eq!(
            same_threads(&perf, &ptrace),
            ptrace,
            "{lab:?}: perf vs ptrace"
        );
    }
}

/// Thread and process creations, per creating thread, from a trace's
/// `spawned` events.
fn spawns_of_trace(file: &Path) -> BTreeMap<i32, BTreeSet<i64>> {
    let mut spawns: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for event in events_of(file) {
        if event["type"] == "spawned" {
            spawns
                .entry(event["tid"].as_i64().unwrap() as i32)
                .or_default()
                .insert(event["child_tid"].as_i64().unwrap());
        }
    }
    spawns
}

#[test]
fn a_loaded_server_counts_alike_under_both_backends_and_its_creations_too() {
    assert_root();
    let _serial = serial();
    let dir = tempdir();
    let ptrace_file = dir.path().join("ptrace.tbt");
    let perf_file = dir.path().join("perf.tbt");
    let expression = format!("trace={SET}");
    // perf outside, our ptrace backend inside, the server inside that.
    let mut tracer = Command::new(BIN);
    tracer
        .args([
            "trace",
            "--backend",
            "perf",
            "--buffer-size",
            "64M",
            "-e",
            &expression,
            "--write",
        ])
        .arg(&perf_file)
        .args([
            "--",
            BIN,
            "trace",
            "--no-poll-idle",
            "-e",
            &expression,
            "--write",
        ])
        .arg(&ptrace_file)
        .args([
            "--",
            BIN,
            "serve",
            "--mode",
            "pool-futex",
            "--workers",
            "3",
            "--addr",
            "127.0.0.1:0",
        ]);
    let mut server = ServerProcess::start_command(&mut tracer).unwrap();
    let addr = server.addr;
    let load = Command::new(BIN)
        .args(["load", "-c", "6", "-n", "60"])
        .arg(format!("http://{addr}/"))
        .output()
        .unwrap();
    assert!(load.status.success(), "{load:?}");
    // SIGINT to the whole group, as a terminal's Ctrl-C: the server drains.
    server.signal(libc::SIGINT);
    let (status, stderr) = server.wait(Duration::from_secs(20));
    assert!(status.success(), "{status:?} {stderr}");
    let ptrace = counts_of_trace(&ptrace_file);
    let perf = counts_of_trace(&perf_file);
    assert_eq!(same_threads(&perf, &ptrace), ptrace);
    let accepted: u64 = ptrace.values().filter_map(|c| c.get("accept4")).sum();
    assert!(accepted >= 60, "{ptrace:?}");
    let ptrace_spawns = spawns_of_trace(&ptrace_file);
    let perf_spawns: BTreeMap<_, _> = spawns_of_trace(&perf_file)
        .into_iter()
        .filter(|(tid, _)| ptrace.contains_key(tid))
        .collect();
    assert_eq!(perf_spawns, ptrace_spawns, "who created which thread");
}

#[test]
fn handshake_wakes_name_the_other_process_and_run_queue_waits_are_sane() {
    assert_root();
    let _serial = serial();
    let dir = tempdir();
    let file = dir.path().join("perf.tbt");
    let output = Command::new(BIN)
        .args([
            "trace",
            "--backend",
            "perf",
            "--buffer-size",
            "64M",
            "-e",
            "trace=futex",
            "--write",
        ])
        .arg(&file)
        .args(["--", BIN, "lab", "handshake", "--rounds", "2000"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let lab = String::from_utf8_lossy(&output.stdout);
    let events = events_of(&file);
    let pid_of = |e: &serde_json::Value| e["pid"].as_i64().unwrap();
    let pids: BTreeSet<i64> = events
        .iter()
        .filter(|e| e["type"] == "syscall_entry")
        .map(pid_of)
        .collect();
    assert_eq!(pids.len(), 2, "parent and child: {pids:?}");
    // Every FUTEX_WAKE that woke someone (returned 1) asleep is followed,
    // before it returns, by a wake-up of a thread of the other process,
    // naming the waker. A waiter the wake dequeued before it went to sleep
    // sees its node gone and never sleeps, and the kernel has nobody to
    // wake (no sched_waking) though the wake counts it: such wakes need a
    // waiter still on its CPU, and are rare.
    let mut pid_of_tid: BTreeMap<i64, i64> = BTreeMap::new();
    let mut off_cpu: BTreeSet<i64> = BTreeSet::new();
    let mut inside_wake: BTreeMap<i64, (usize, bool)> = BTreeMap::new();
    let (mut checked, mut raced) = (0, 0);
    for (i, event) in events.iter().enumerate() {
        let tid = event["tid"].as_i64().unwrap_or(0);
        match event["type"].as_str() {
            Some("off_cpu") => {
                off_cpu.insert(tid);
            }
            Some("on_cpu") => {
                off_cpu.remove(&tid);
            }
            Some("syscall_entry") => {
                pid_of_tid.insert(tid, pid_of(event));
                if event["text"].as_str().unwrap().contains("FUTEX_WAKE") {
                    let sleeper = off_cpu
                        .iter()
                        .any(|t| pid_of_tid.get(t).is_some_and(|&p| p != pid_of(event)));
                    inside_wake.insert(tid, (i, sleeper));
                }
            }
            Some("syscall_exit") if event["ret"] == 1 => {
                let Some((start, sleeper)) = inside_wake.remove(&tid) else {
                    continue;
                };
                let woken = events[start..i]
                    .iter()
                    .find(|e| e["type"] == "woken" && e["waker_tid"].as_i64() == Some(tid));
                let Some(woken) = woken else {
                    assert!(!sleeper, "no wake-up by {tid} in {:?}", &events[start..=i]);
                    raced += 1;
                    continue;
                };
                assert_ne!(pid_of(woken), pid_of(event), "the other process is woken");
                checked += 1;
            }
            Some("syscall_exit") => {
                inside_wake.remove(&tid);
            }
            _ => {}
        }
    }
    assert!(checked > 500, "only {checked} wakes that woke someone");
    assert!(
        raced * 100 < checked,
        "{raced} wakes woke nobody, {checked} did"
    );
    // Run-queue waits: from woken to on a CPU, never negative, and below
    // the lab's own worst round trip.
    let max_round_trip_us: f64 = lab
        .lines()
        .find(|l| l.starts_with("round trip "))
        .and_then(|l| l.split("max ").nth(1))
        .and_then(|m| m.split_whitespace().next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no round trip in {lab}"));
    // A wake-up of a thread still on its CPU (it had not gone to sleep
    // yet) is no run-queue wait: only one that was off it.
    let mut off_cpu: BTreeSet<i64> = BTreeSet::new();
    let mut woken_at: BTreeMap<i64, u64> = BTreeMap::new();
    let mut waits = 0;
    for event in &events {
        let tid = event["tid"].as_i64().unwrap_or(0);
        let at = event["time_ns"].as_u64().unwrap();
        match event["type"].as_str() {
            Some("off_cpu") => {
                off_cpu.insert(tid);
            }
            Some("woken") if off_cpu.contains(&tid) => {
                woken_at.entry(tid).or_insert(at);
            }
            Some("on_cpu") => {
                off_cpu.remove(&tid);
                if let Some(since) = woken_at.remove(&tid) {
                    assert!(at >= since);
                    let waited_us = (at - since) as f64 / 1000.0;
                    assert!(
                        waited_us < max_round_trip_us + 1000.0,
                        "{tid} waited {waited_us} µs for a CPU; the slowest round trip took {max_round_trip_us} µs"
                    );
                    waits += 1;
                }
            }
            _ => {}
        }
    }
    assert!(waits > 100, "{waits} run-queue waits seen");
    let summary = Command::new(BIN)
        .args(["export", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&summary.stdout);
    assert!(summary.contains("runnable->running"), "{summary}");
    assert!(summary.contains("who woke whom"), "{summary}");
}

#[test]
fn attaching_to_a_loaded_server_never_stops_it_and_leaves_nothing_behind() {
    assert_root();
    let _serial = serial();
    let server = ServerProcess::start(&["--workers", "3"]);
    let pid = server.pid();
    let fds_before = common::open_fds(pid);
    let bpf_before = (bpf_objects(PROG_GET_NEXT_ID), bpf_objects(MAP_GET_NEXT_ID));
    let tracer = Command::new(BIN)
        .args(["trace", "--backend", "perf", "-c", "-p", &pid.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let loader = Command::new(BIN)
        .args(["load", "-c", "4", "-z", "2s"])
        .arg(format!("http://{}/", server.addr))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // While it runs: no thread of the server is ever stopped or traced.
    let until = std::time::Instant::now() + Duration::from_millis(1800);
    let mut looks = 0;
    while std::time::Instant::now() < until {
        for (tid, name, state, _) in threads_of(pid) {
            assert!(state != 't' && state != 'T', "{name} ({tid}) stopped");
            let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
                .unwrap_or_default();
            assert!(status.contains("TracerPid:\t0"), "{name} traced");
        }
        looks += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let load = loader.wait_with_output().unwrap();
    assert!(load.status.success(), "the server kept serving: {load:?}");
    // SAFETY: SIGINT to the tracer we started.
    assert_eq!(unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) }, 0);
    let traced = tracer.wait_with_output().unwrap();
    assert!(traced.status.success(), "{traced:?}");
    let stderr = String::from_utf8_lossy(&traced.stderr);
    assert!(stderr.contains("accept4"), "{stderr}");
    assert!(
        stderr.contains("runnable"),
        "the scheduler's columns: {stderr}"
    );
    assert!(looks > 20);
    // Nothing of ours is left: no perf descriptor anywhere in our tree,
    // and tracefs as it was.
    assert_eq!(common::open_fds(pid), fds_before);
    let tracing = Path::new("/sys/kernel/tracing/events/raw_syscalls/sys_enter");
    assert_eq!(
        std::fs::read_to_string(tracing.join("enable"))
            .unwrap()
            .trim(),
        "0"
    );
    assert_eq!(
        std::fs::read_to_string(tracing.join("filter"))
            .unwrap()
            .trim(),
        "none"
    );
    let own: usize = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy().contains("perf_event"))
        })
        .count();
    assert_eq!(own, 0);
    // Our eBPF programs and maps are gone (freed a moment after their
    // last descriptor closed).
    let mut bpf_after = (0, 0);
    for _ in 0..50 {
        bpf_after = (bpf_objects(PROG_GET_NEXT_ID), bpf_objects(MAP_GET_NEXT_ID));
        if bpf_after == bpf_before {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(bpf_after, bpf_before, "eBPF (programs, maps) loaded");
    assert!(server.stop().0.success());
}

const PROG_GET_NEXT_ID: libc::c_long = 11;
const MAP_GET_NEXT_ID: libc::c_long = 12;

/// How many eBPF programs (or maps) the kernel holds, machine-wide.
fn bpf_objects(next_id: libc::c_long) -> usize {
    let mut attr = [0u32; 4]; // start_id, next_id, open_flags, padding
    let mut count = 0;
    loop {
        // SAFETY: bpf(BPF_*_GET_NEXT_ID) reads start_id and writes next_id
        // in our local array, of the size passed.
        let ret = unsafe { libc::syscall(libc::SYS_bpf, next_id, attr.as_mut_ptr(), 16) };
        if ret != 0 {
            return count; // ENOENT: no more
        }
        count += 1;
        attr[0] = attr[1];
    }
}

#[test]
fn a_tiny_buffer_under_a_busy_program_loses_events_and_says_so() {
    assert_root();
    let _serial = serial();
    let dir = tempdir();
    let file = dir.path().join("perf.tbt");
    let output = Command::new(BIN)
        .args([
            "trace",
            "--backend",
            "perf",
            "--buffer-size",
            "8K",
            "-e",
            "trace=futex,write",
            "--write",
        ])
        .arg(&file)
        .args(["--", BIN, "lab", "handshake", "--rounds", "50000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A reader that keeps up with the ring never loses: this one is held
    // stopped for a while, as a loaded machine might hold it, while the
    // program goes on.
    std::thread::sleep(Duration::from_millis(100));
    let tracer = output.id() as i32;
    // SAFETY: SIGSTOP and SIGCONT to the tracer we started.
    unsafe { libc::kill(tracer, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: as above.
    unsafe { libc::kill(tracer, libc::SIGCONT) };
    let output = output.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lost: u64 = stderr
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("tracebench trace: ")?;
            rest.split_once(" events LOST")?.0.parse().ok()
        })
        .unwrap_or_else(|| panic!("no loss said: {stderr}"));
    assert!(lost > 0);
    // The file reads back whole, with the losses in it.
    let text = Command::new(BIN)
        .args(["export", "--strace", "-"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(text.status.success());
    let text_output = text;
    let text = String::from_utf8_lossy(&text_output.stdout);
    let in_file: u64 = text
        .lines()
        .filter_map(|l| {
            l.split_once("--- ")?
                .1
                .split(" events lost")
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(in_file, lost, "every loss is in the file");
    // The index totals them, so a reader knows before reading on, and
    // the export and the summary say so first.
    let index = tracebench_trace::format::read_index(&file)
        .unwrap()
        .expect("a finished file");
    assert_eq!(index.lost_events(), lost);
    let export_stderr = String::from_utf8_lossy(&text_output.stderr);
    assert!(
        export_stderr.contains(&format!("{lost} events were LOST while recording")),
        "{export_stderr}"
    );
    let summary = Command::new(BIN)
        .args(["export", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&summary.stdout);
    assert!(
        summary.starts_with(&format!("!!! {lost} events LOST")),
        "{summary}"
    );
}

#[test]
fn without_the_privilege_perf_says_what_is_missing_and_auto_falls_back() {
    assert_root();
    let _serial = serial();
    // An unprivileged user: nobody, with no capabilities.
    let run_as_nobody = |backend: &str| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--",
            ])
            .args([
                BIN,
                "trace",
                "--backend",
                backend,
                "-e",
                "trace=write",
                "--",
                "true",
            ])
            .output()
            .unwrap()
    };
    let perf = run_as_nobody("perf");
    assert!(!perf.status.success());
    let stderr = String::from_utf8_lossy(&perf.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("perf backend is not available") && stderr.contains("root"),
        "{stderr}"
    );
    let auto = run_as_nobody("auto");
    let stderr = String::from_utf8_lossy(&auto.stderr);
    assert!(auto.status.success(), "{stderr}");
    assert!(stderr.contains("using the ptrace backend"), "{stderr}");
    // Not root, but with the capabilities the docs name: it works; one
    // short, and the line names the one missing.
    let with_caps = |caps: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(format!("--inh-caps=-all,{caps}"))
            .arg(format!("--ambient-caps=-all,{caps}"))
            .args(["--", BIN, "trace", "--backend", "perf", "-e", "trace=write"])
            .args(["--", "/bin/echo", "hi"])
            .output()
            .unwrap()
    };
    let enough = with_caps("+bpf,+perfmon,+dac_read_search");
    let stderr = String::from_utf8_lossy(&enough.stderr);
    assert!(enough.status.success(), "{stderr}");
    assert!(stderr.contains("write(1, "), "{stderr}");
    let short = with_caps("+bpf,+perfmon");
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert!(!short.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("CAP_DAC_READ_SEARCH"), "{stderr}");
}

#[test]
fn the_dashboard_runs_on_the_perf_backend_and_records_which_it_was() {
    assert_root();
    let _serial = serial();
    let dir = tempdir();
    let run = dir.path().join("run");
    let output = Command::new(BIN)
        .args([
            "dash",
            "--backend",
            "perf",
            "--headless-for",
            "2s",
            "--workers",
            "3",
        ])
        .arg("--record-dir")
        .arg(&run)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("worker-0"), "{summary}");
    let answered: u64 = summary
        .lines()
        .find(|l| l.contains(" answered,"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no answered count: {summary}"));
    assert!(answered > 10, "{summary}");
    let reader = tracebench_trace::format::TraceReader::open(&run.join("trace.tbt")).unwrap();
    assert_eq!(reader.header().backend, tracebench_trace::Backend::Perf);
    let kinds: BTreeSet<String> = reader
        .map(|e| {
            format!("{:?}", e.unwrap().kind)
                .split([' ', '{', '('])
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    for kind in ["SyscallEntry", "SyscallExit", "OnCpu", "OffCpu", "Woken"] {
        assert!(kinds.contains(kind), "{kind} missing: {kinds:?}");
    }
}

/// The dashboard says at its end what its captures could not see, as
/// `trace` does: here, a perf capture without BTF.
#[test]
fn the_dashboard_says_what_its_capture_could_not_see() {
    assert_root();
    let _serial = serial();
    for (btf, caveat) in [
        ("/nonexistent/vmlinux", true),
        ("/sys/kernel/btf/vmlinux", false),
    ] {
        let output = Command::new(BIN)
            .env("TRACEBENCH_BTF", btf)
            .args(["dash", "--backend", "perf", "--headless-for", "1s"])
            .args(["--workers", "2", "--no-record"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.contains(&format!(
                "tracebench: reading {btf}: No such file or directory"
            )) && stderr.contains("read through perf events"),
            caveat,
            "{btf}: {stderr}"
        );
    }
}

#[test]
fn ptrace_only_options_are_refused_with_perf_not_ignored() {
    for flag in [
        &["--cpu", "1"][..],
        &["--no-seccomp"],
        &["--no-poll-idle"],
        &["-y"],
    ] {
        let mut command = Command::new(BIN);
        command
            .args(["trace", "--backend", "perf"])
            .args(flag)
            .args(["--", "true"]);
        common::fails_with_one_line(&mut command, "is an option of the ptrace backend");
    }
    let bad_size = Command::new(BIN)
        .args([
            "trace",
            "--backend",
            "perf",
            "--buffer-size",
            "3X",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(bad_size.status.code(), Some(2), "clap's usage error");
    let stderr = String::from_utf8_lossy(&bad_size.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains("a size is bytes, or K, M or G"), "{stderr}");
}

#[test]
fn a_spawned_program_is_traced_from_its_execve_whole_and_nothing_before_it() {
    assert_root();
    let dir = tempdir();
    let traced = |backend: &str| {
        let out = dir.path().join(format!("{backend}.txt"));
        let status = Command::new(BIN)
            .args(["trace", "--backend", backend, "-e"])
            .arg("trace=execve,read,write,close,prctl,setrlimit,rt_sigaction")
            .arg("-o")
            .arg(&out)
            .args(["--", "/bin/echo", "hi"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{backend}: {status}");
        let text = std::fs::read_to_string(&out).unwrap();
        let calls: Vec<String> = text
            .lines()
            // "PID call", the pid padded to 5 as strace pads it.
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(_, call)| call.trim_start().to_owned())
            })
            .filter(|call| !call.starts_with("+++") && !call.starts_with("---"))
            .collect();
        (text, calls)
    };
    let (text, calls) = traced("perf");
    // The fork's own setup (the read it was held on, prctl, setrlimit) is
    // not the program's: the trace starts at the execve, entered and
    // returned, as under ptrace and strace.
    assert!(calls[0].starts_with("execve("), "{text}");
    assert!(calls[0].trim_end().ends_with("= 0"), "{text}");
    assert!(calls.iter().any(|c| c.starts_with("write(1, ")), "{text}");
    let names = |calls: &[String]| -> Vec<String> {
        calls
            .iter()
            .map(|c| c.split('(').next().unwrap().to_owned())
            .collect()
    };
    let (ptrace_text, ptrace_calls) = traced("ptrace");
    assert_eq!(
        names(&calls),
        names(&ptrace_calls),
        "perf:\n{text}\nptrace:\n{ptrace_text}"
    );
    // An exec that fails, with execve not traced: the fork's exit_group
    // still shows, as under ptrace (the wait for the exec must end).
    let script = dir.path().join("bad-interpreter");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for backend in ["perf", "ptrace"] {
        let output = Command::new(BIN)
            .args([
                "trace",
                "--backend",
                backend,
                "-e",
                "trace=exit_group",
                "--",
            ])
            .arg(&script)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(127), "{backend}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("exit_group(127)"), "{backend}: {stderr}");
    }
}

/// The per-thread rows of a `-c` table with the scheduler's columns:
/// tid, syscalls and each state's share, by column name.
fn state_rows(summary: &str) -> Vec<BTreeMap<String, f64>> {
    let mut lines = summary.lines().skip_while(|l| !l.contains("runnable"));
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    lines
        .take_while(|l| !l.starts_with('('))
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            (cells.len() == header.len()).then(|| {
                header
                    .iter()
                    .zip(cells)
                    .map(|(name, cell)| {
                        let value = cell.trim_end_matches('%').parse().unwrap_or(0.0);
                        ((*name).to_owned(), value)
                    })
                    .collect()
            })
        })
        .collect()
}

#[test]
fn pool_spin_spinners_wait_for_a_cpu_and_overtake_the_woken_acceptor() {
    assert_root();
    let _serial = serial();
    let dir = tempdir();
    let summary_file = dir.path().join("summary.txt");
    let trace_file = dir.path().join("spin.tbt");
    let mut tracer = Command::new(BIN);
    tracer
        .args(["trace", "--backend", "perf", "--buffer-size", "64M", "-c"])
        .args(["-e", "trace=accept4,futex,sched_yield", "-o"])
        .arg(&summary_file)
        .arg("--write")
        .arg(&trace_file)
        .args(["--", BIN, "serve", "--mode", "pool-spin", "--workers", "3"])
        .args(["--addr", "127.0.0.1:0"]);
    let mut server = ServerProcess::start_command(&mut tracer).unwrap();
    let load = Command::new(BIN)
        .args(["load", "-c", "4", "-n", "100"])
        .arg(format!("http://{}/?delay=5ms", server.addr))
        .output()
        .unwrap();
    assert!(load.status.success(), "{load:?}");
    server.signal(libc::SIGINT);
    let (status, stderr) = server.wait(Duration::from_secs(20));
    assert!(status.success(), "{status:?} {stderr}");
    let summary = std::fs::read_to_string(&summary_file).unwrap();
    let rows = state_rows(&summary);
    // Three spinners and the acceptor share this machine's CPUs (CI has
    // two): every sched_yield puts a spinner back in the run queue.
    let acceptor = rows
        .iter()
        .max_by(|a, b| a["accept"].total_cmp(&b["accept"]))
        .unwrap();
    assert!(acceptor["accept"] > 50.0, "{summary}");
    let acceptor_tid = acceptor["tid"] as i64;
    // The workers: however the CPUs were shared out (on a busy machine one
    // may yield far less than the others), each waited in the run queue.
    let spinners: Vec<_> = rows
        .iter()
        .filter(|r| r["tid"] as i64 != acceptor_tid)
        .collect();
    assert_eq!(spinners.len(), 3, "{summary}");
    for spinner in &spinners {
        assert!(spinner["runnable"] > 5.0, "{summary}");
    }
    assert!(
        spinners.iter().map(|r| r["syscalls"]).sum::<f64>() > 1000.0,
        "they spin: {summary}"
    );
    let spinner_tids: BTreeSet<i64> = spinners.iter().map(|r| r["tid"] as i64).collect();
    // While the acceptor, woken by a connection, waited for a CPU, a
    // spinner was put on one: the spinners overtake it.
    let mut woken = false;
    let mut overtaken = 0;
    for event in events_of(&trace_file) {
        let tid = event["tid"].as_i64().unwrap_or(0);
        match event["type"].as_str().unwrap_or("") {
            "woken" if tid == acceptor_tid => woken = true,
            "on_cpu" if tid == acceptor_tid => woken = false,
            "on_cpu" if woken && spinner_tids.contains(&tid) => {
                overtaken += 1;
                woken = false;
            }
            _ => {}
        }
    }
    assert!(overtaken > 0, "the acceptor was never overtaken\n{summary}");
}

#[test]
fn attaching_while_threads_are_born_follows_each_thread_once() {
    assert_root();
    let _serial = serial();
    let dir = tempdir();
    let churn = build_fixture("churn", dir.path());
    let mut program = Command::new(&churn).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = std::io::BufReader::new(program.stdout.take().unwrap());
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut ready).unwrap();
    assert_eq!(ready, "ready\n");
    let file = dir.path().join("churn.tbt");
    let tracer = Command::new(BIN)
        .args(["trace", "--backend", "perf", "--buffer-size", "64M"])
        .args(["-e", "trace=getppid", "--write"])
        .arg(&file)
        .args(["-p", &program.id().to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    // SAFETY: SIGINT to the tracer we started.
    assert_eq!(unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) }, 0);
    let traced = tracer.wait_with_output().unwrap();
    assert!(traced.status.success(), "{traced:?}");
    assert!(program.wait().unwrap().success());
    let mut calls: BTreeMap<i64, u64> = BTreeMap::new();
    let mut born = BTreeMap::new();
    let mut last_ns = 0;
    for event in events_of(&file) {
        last_ns = event["time_ns"].as_u64().unwrap_or(last_ns);
        match event["type"].as_str().unwrap_or("") {
            "syscall_entry" if event["name"] == "getppid" => {
                *calls.entry(event["tid"].as_i64().unwrap()).or_insert(0) += 1;
            }
            "spawned" => {
                born.insert(event["child_tid"].as_i64().unwrap(), last_ns);
            }
            _ => {}
        }
    }
    // Each thread calls getppid 5 times: more is a thread followed twice
    // (found by a scan of /proc after inheriting its creator's events).
    for (tid, n) in &calls {
        assert!(*n <= 5, "thread {tid} counted {n} calls of 5");
    }
    // Every thread born while traced is seen whole, but for those born
    // in the last moments, which the detach cuts (about 9 are born a
    // millisecond).
    let settled: Vec<i64> = born
        .iter()
        .filter(|(_, at)| **at + 100_000_000 < last_ns)
        .map(|(tid, _)| *tid)
        .collect();
    assert!(settled.len() > 100, "{} threads born", settled.len());
    let cut: Vec<_> = settled
        .iter()
        .filter(|tid| calls.get(tid) != Some(&5))
        .collect();
    assert!(cut.is_empty(), "threads not seen whole: {cut:?}");
}

#[test]
fn attached_a_program_that_execs_from_another_thread_is_traced_after_the_exec() {
    assert_root();
    let _serial = serial();
    let dir = tempdir();
    let fixture = build_fixture("thread_exec", dir.path());
    let mut program = Command::new(&fixture)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(program.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    let text = dir.path().join("exec.txt");
    let mut tracer = Command::new(BIN)
        .args([
            "trace",
            "--backend",
            "perf",
            "-e",
            "trace=write,exit_group,execve",
            "-o",
        ])
        .arg(&text)
        .args(["-p", &program.id().to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the tracer says it follows every thread, the thread may exec.
    let mut said = std::io::BufReader::new(tracer.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut said, &mut first).unwrap();
    assert!(first.contains("following every thread"), "{first}");
    std::io::Write::write_all(&mut program.stdin.take().unwrap(), b"x").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "after the exec\n");
    assert!(program.wait().unwrap().success());
    // The program's end ends an attached trace.
    let status = tracer.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&text).unwrap();
    assert!(text.contains("write(1, "), "{text}");
    assert!(text.contains("exit_group(0)"), "{text}");
    // The execve returns under the leader's id, and that is shown too.
    assert!(
        text.lines()
            .any(|l| l.contains("execve") && l.trim_end().ends_with("= 0")),
        "{text}"
    );
}

#[test]
fn descendants_that_outlive_the_program_are_followed_to_their_end() {
    assert_root();
    let _serial = serial();
    let dir = tempdir();
    let shell = ["sh", "-c", "(sleep 0.3; echo late) & echo early"];
    let mut writes = Vec::new();
    for backend in ["perf", "ptrace"] {
        let (output, file) = traced_writes(dir.path(), backend, &shell);
        assert!(output.status.success(), "{output:?}");
        let events = events_of(&file);
        let count = events
            .iter()
            .filter(|e| e["type"] == "syscall_entry" && e["name"] == "write")
            .count();
        // In time order to the end, the root's exit included.
        let times: Vec<u64> = events
            .iter()
            .map(|e| e["time_ns"].as_u64().unwrap())
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{backend}: out of order"
        );
        writes.push(count);
    }
    assert_eq!(writes, [2, 2], "perf, then ptrace: early and late");
}

#[test]
fn a_vfork_parent_blocks_in_d_while_its_child_sleeps_in_s() {
    assert_root();
    let _serial = serial();
    let dir = tempdir();
    let program = common::build_fixture("vfork_wait", dir.path());
    let file = under_perf(dir.path(), &[program.to_str().unwrap()]);
    let events = events_of(&file);
    let spawn = events
        .iter()
        .find(|e| e["type"] == "spawned")
        .expect("the vfork");
    let (parent, child) = (spawn["tid"].as_i64(), spawn["child_tid"].as_i64());
    // Each thread's longest time off its CPU, and why it left.
    let longest_off = |tid| {
        let mut off: Option<(f64, String)> = None;
        let mut longest = (0.0, String::new());
        for event in events.iter().filter(|e| e["tid"].as_i64() == tid) {
            let time = event["time_ns"].as_f64().unwrap() / 1e9;
            match event["type"].as_str() {
                Some("off_cpu") => off = Some((time, event["reason"].as_str().unwrap().into())),
                Some("on_cpu") => {
                    if let Some((since, reason)) = off.take()
                        && time - since > longest.0
                    {
                        longest = (time - since, reason);
                    }
                }
                _ => {}
            }
        }
        longest
    };
    let (parent_off, parent_reason) = longest_off(parent);
    let (child_off, child_reason) = longest_off(child);
    assert_eq!(parent_reason, "disk_sleep", "{parent_off} s");
    assert!(parent_off >= 0.15, "{parent_off} s");
    assert_eq!(child_reason, "sleep", "{child_off} s");
    assert!(child_off >= 0.15, "{child_off} s");
}

/// `trace --backend BACKEND -e trace=write --write DIR/BACKEND.tbt --
/// PROGRAM`: its output and the file.
fn traced_writes(
    dir: &Path,
    backend: &str,
    program: &[&str],
) -> (std::process::Output, std::path::PathBuf) {
    let file = dir.join(format!("{backend}.tbt"));
    let output = Command::new(BIN)
        .args([
            "trace",
            "--backend",
            backend,
            "-e",
            "trace=write",
            "--write",
        ])
        .arg(&file)
        .arg("--")
        .args(program)
        .output()
        .unwrap();
    (output, file)
}

/// Each thread's exit status in a trace file, sorted ("code 3",
/// "signal SIGTERM", or "unknown").
fn exit_statuses(file: &Path) -> Vec<String> {
    let mut statuses: Vec<String> = events_of(file)
        .iter()
        .filter(|e| e["type"] == "exited")
        .map(|e| match (e["code"].as_i64(), e["signal"].as_str()) {
            (Some(code), _) => format!("code {code}"),
            (_, Some(signal)) => format!("signal {signal}"),
            _ => "unknown".into(),
        })
        .collect();
    statuses.sort();
    statuses
}

#[test]
fn every_threads_exit_status_is_the_ptrace_backends() {
    assert_root();
    let _serial = serial();
    let dir = tempdir();
    let program = common::build_fixture("exits", dir.path());
    let traced = |backend: &str| {
        let (output, file) = traced_writes(dir.path(), backend, &[program.to_str().unwrap()]);
        // Its exit status, as strace passes it on.
        assert_eq!(output.status.code(), Some(3), "{output:?}");
        // The SIGKILLs with which the kernel ends a dying process's
        // threads are no signal a tracer shows; the SIGTERM that killed
        // the child is, once.
        let signals: Vec<String> = events_of(&file)
            .iter()
            .filter(|e| e["type"] == "signal")
            .map(|e| e["signal"].as_str().unwrap().to_owned())
            .filter(|signal| signal != "SIGCHLD")
            .collect();
        assert_eq!(signals, ["SIGTERM"], "{backend}");
        exit_statuses(&file)
    };
    let (perf, ptrace) = (traced("perf"), traced("ptrace"));
    assert_eq!(perf, ptrace);
    // The fixture's five threads: two killed, one alone with 0, two by
    // exit_group(3).
    assert_eq!(
        perf,
        [
            "code 0",
            "code 3",
            "code 3",
            "signal SIGTERM",
            "signal SIGTERM"
        ]
    );
}

#[test]
fn trace_none_shows_signals_and_exits_only_as_strace_does() {
    assert_root();
    let _serial = serial();
    for backend in ["ptrace", "perf"] {
        let output = Command::new(BIN)
            .args(["trace", "--backend", backend, "-f", "-e", "trace=none"])
            .args(["--", "sh", "-c", "/bin/true; exit 4"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(4), "{backend}: {output:?}");
        let text = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.iter().all(|l| l.contains("+++") || l.contains("---")),
            "{backend}: no syscall lines: {text}"
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("+++ exited with"))
                .count(),
            2,
            "{backend}: the shell and its child: {text}"
        );
        assert!(text.contains("+++ exited with 4 +++"), "{backend}: {text}");
    }
}

/// The kernel runs no perf-event eBPF program while another runs on the
/// CPU, and then drops that tracepoint's samples for every tool. Timer
/// wake-ups fire sched_waking from interrupts, which land in the middle
/// of our syscall programs on a busy traced program: were our wake-up
/// program one of those, `perf stat -a`'s count of sched_waking would fall
/// short of sched_wakeup's (which fires with it at every wake-up, and has
/// no program of ours). Measured before raw tracepoints: a fifth to a
/// third of them short.
#[test]
fn another_tools_counts_of_wake_ups_lose_nothing_while_we_trace() {
    assert_root();
    let _serial = serial();
    let waking = TracepointCount::open("sched", "sched_waking");
    let wakeup = TracepointCount::open("sched", "sched_wakeup");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Sleepers woken by timer interrupts, on every CPU.
    let sleepers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut naps = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && naps < 50_000 {
                    std::thread::sleep(Duration::from_micros(200));
                    naps += 1;
                }
            })
        })
        .collect();
    // Every call of a busy program through our syscall programs.
    let traced = Command::new(BIN)
        .args([
            "trace",
            "--backend",
            "perf",
            "-e",
            "trace=all",
            "-o",
            "/dev/null",
        ])
        .args([
            "--",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=1",
            "count=1500000",
        ])
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for sleeper in sleepers {
        sleeper.join().unwrap();
    }
    assert!(traced.status.success(), "{traced:?}");
    let stderr = String::from_utf8_lossy(&traced.stderr);
    assert!(!stderr.contains("skipped"), "{stderr}");
    let (waking, wakeup) = (waking.total(), wakeup.total());
    assert!(wakeup > 1000, "the sleepers were woken: {wakeup}");
    // A wake-up or two may be between its two tracepoints as we read.
    assert!(
        waking.abs_diff(wakeup) <= 2 + wakeup / 2000,
        "sched_waking {waking} against sched_wakeup {wakeup}"
    );
}

#[test]
fn another_tools_counts_of_the_tracepoints_we_use_go_on_while_we_trace() {
    assert_root();
    let _serial = serial();
    // Our programs on these return 1: a 0 would drop the hit for every
    // perf event on the tracepoint, this counter's too.
    let writes = TracepointCount::open("syscalls", "sys_enter_write");
    let traced = Command::new(BIN)
        .args(["trace", "--backend", "perf", "-e", "trace=write"])
        .args([
            "-o",
            "/dev/null",
            "--",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
        ])
        .args(["bs=1", "count=20000"])
        .output()
        .unwrap();
    assert!(traced.status.success(), "{traced:?}");
    let writes = writes.total();
    assert!(
        writes >= 20_000,
        "another tool counted {writes} writes of 20 000"
    );
}

/// Of a trace file: the FUTEX_WAKE calls that woke someone (returned 1),
/// and the wake-ups recorded.
fn wakes_and_woken(file: &Path) -> (usize, usize) {
    let events = events_of(file);
    let mut waking: BTreeSet<i64> = BTreeSet::new();
    let (mut wakes, mut woken) = (0, 0);
    for event in &events {
        let tid = event["tid"].as_i64().unwrap_or(0);
        match event["type"].as_str() {
            Some("syscall_entry")
                if event["text"].as_str().unwrap_or("").contains("FUTEX_WAKE") =>
            {
                waking.insert(tid);
            }
            // The removal is the guard's first half: every exit ends a wake.
            Some("syscall_exit") if waking.remove(&tid) && event["ret"] == 1 => wakes += 1,
            Some("woken") => woken += 1,
            _ => {}
        }
    }
    (wakes, woken)
}

/// A kernel in lockdown refuses programs that read its memory
/// (`bpf_probe_read_kernel`): the verifier rejects the check program
/// loaded first, with EINVAL. Here strace makes the kernel's answer to
/// that load (and to its retry for the verifier's log) EINVAL: the
/// capture falls back to perf events for wake-ups and signals, says why,
/// and every wake that woke someone still has its wake-up.
#[test]
fn a_kernel_that_refuses_our_reads_of_its_tasks_still_gets_every_wake_up_and_we_say_so() {
    assert_root();
    let _serial = serial();
    let dir = tempdir();
    let file = dir.path().join("refused.tbt");
    let log = dir.path().join("strace.log");
    let output = Command::new("strace")
        .env_remove("TRACEBENCH_BTF")
        .args(["-qq", "-e", "trace=bpf", "-e"])
        .arg("inject=bpf:error=EINVAL:when=1..2")
        .arg("-o")
        .arg(&log)
        .arg(BIN)
        .args(["trace", "--backend", "perf", "-e", "trace=futex", "--write"])
        .arg(&file)
        .args(["--", BIN, "lab", "handshake", "--rounds", "500"])
        .output()
        .expect("strace is needed for this test; .ci/run installs it");
    assert!(output.status.success(), "{output:?}");
    // The two calls refused were the check program's load and its retry.
    let log = std::fs::read_to_string(&log).unwrap();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("(INJECTED)")).collect();
    assert_eq!(refused.len(), 2, "{log}");
    for line in refused {
        assert!(
            line.contains("BPF_PROG_LOAD") && line.contains("BPF_PROG_TYPE_RAW_TRACEPOINT"),
            "the first bpf calls are no longer the check's load: {line}"
        );
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("this kernel refuses eBPF reads of its tasks")
            && stderr.contains("wake-ups and signals sent were read through perf events"),
        "{stderr}"
    );
    let (wakes, woken) = wakes_and_woken(&file);
    assert!(wakes > 200, "only {wakes} wakes");
    assert!(
        woken * 100 >= wakes * 99 && woken <= wakes + 20,
        "{woken} wake-ups for {wakes} wakes that woke someone"
    );
}

/// Without BTF (here: `TRACEBENCH_BTF` naming no file) the wake-ups and
/// signals go through perf events again, and `trace` says so; with the
/// kernel's BTF named explicitly, nothing is said. Either way every wake
/// that woke someone has its wake-up.
#[test]
fn without_btf_wake_ups_still_come_through_perf_events_and_trace_says_so() {
    assert_root();
    let _serial = serial();
    let dir = tempdir();
    for (btf, caveat) in [
        ("/nonexistent/vmlinux", true),
        ("/sys/kernel/btf/vmlinux", false),
    ] {
        let file = dir.path().join(format!("{caveat}.tbt"));
        let output = Command::new(BIN)
            .env("TRACEBENCH_BTF", btf)
            .args(["trace", "--backend", "perf", "-e", "trace=futex", "--write"])
            .arg(&file)
            .args(["--", BIN, "lab", "handshake", "--rounds", "500"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.contains("wake-ups and signals sent were read through perf events"),
            caveat,
            "{btf}: {stderr}"
        );
        if caveat {
            assert!(stderr.contains(btf), "names the file: {stderr}");
        }
        // A waiter the wake finds still awake is not woken (rare); the
        // lab's own threads' other wake-ups (thread exits) add a few.
        let (wakes, woken) = wakes_and_woken(&file);
        assert!(wakes > 200, "{btf}: only {wakes} wakes");
        assert!(
            woken * 100 >= wakes * 99 && woken <= wakes + 20,
            "{btf}: {woken} wake-ups for {wakes} wakes that woke someone"
        );
    }
}
