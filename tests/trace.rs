//! `tracebench trace` end to end, on real programs: our own server traced
//! through real requests (and compared with strace -f on the same run
//! shape), attach and detach, EXITKILL, and bad input.
// A test reads as one story, start to finish: no line limit here.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// One strace-style line: the thread id (`None` before the first
/// `[pid N]` prefix, i.e. the only thread) and the rest. strace writing to
/// a file with -f prefixes every line with a bare `N ` instead.
fn lines_by_thread(text: &str) -> Vec<(Option<i32>, String)> {
    text.lines()
        .map(|line| {
            if let Some(rest) = line.strip_prefix("[pid ") {
                let (tid, rest) = rest.split_once("] ").expect("closing bracket");
                return (Some(tid.trim().parse().expect("tid")), rest.to_owned());
            }
            let digits = line.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 && line[digits..].starts_with(' ') {
                return (
                    line[..digits].parse().ok(),
                    line[digits..].trim_start().to_owned(),
                );
            }
            (None, line.to_owned())
        })
        .collect()
}

/// The return value at the end of a completed syscall line (strace pads
/// `)   = 4` with spaces when writing to a file).
fn return_of(line: &str) -> Option<&str> {
    let (_, after) = line.rsplit_once(')')?;
    after
        .trim_start()
        .strip_prefix('=')?
        .split_whitespace()
        .next()
}

/// The return values of every completed `name` call, whether printed on
/// one line or split into `<unfinished ...>` and `<... name resumed>`.
fn returns_of(text: &str, name: &str) -> Vec<i32> {
    let resumed = format!("<... {name} resumed>");
    let call = format!("{name}(");
    lines_by_thread(text)
        .iter()
        .filter(|(_, rest)| {
            rest.starts_with(&resumed)
                || (rest.starts_with(&call) && !rest.ends_with("<unfinished ...>"))
        })
        .filter_map(|(_, rest)| return_of(rest)?.parse().ok())
        .collect()
}

/// What a trace of the pool server says, reduced to what two tracers must
/// agree on.
#[derive(Debug, PartialEq, Eq)]
struct ServerShape {
    /// clone3 calls that made threads.
    threads_created: usize,
    /// accept4 calls that returned a connection, per calling thread.
    accepts_per_thread: Vec<usize>,
}

fn server_shape(text: &str) -> ServerShape {
    let mut threads_created = 0;
    let mut accepts: HashMap<Option<i32>, usize> = HashMap::new();
    // A call split by <unfinished ...> completes on a "resumed" line.
    let mut open: HashMap<Option<i32>, String> = HashMap::new();
    for (tid, rest) in lines_by_thread(text) {
        let name = if let Some(resumed) = rest.strip_prefix("<... ") {
            resumed.split_whitespace().next().unwrap_or("").to_owned()
        } else {
            let name = rest.split('(').next().unwrap_or("").to_owned();
            if rest.ends_with("<unfinished ...>") {
                open.insert(tid, name);
                continue;
            }
            name
        };
        if rest.starts_with("<... ") {
            open.remove(&tid);
        }
        let Some(ret) = return_of(&rest) else {
            continue;
        };
        let succeeded = ret.parse::<i64>().is_ok_and(|r| r >= 0);
        if name == "clone3" && succeeded {
            threads_created += 1;
        }
        if name == "accept4" && succeeded {
            *accepts.entry(tid).or_default() += 1;
        }
    }
    let mut accepts_per_thread: Vec<usize> = accepts.into_values().collect();
    accepts_per_thread.sort_unstable();
    ServerShape {
        threads_created,
        accepts_per_thread,
    }
}

/// Starts `tracer_args… BIN serve --addr 127.0.0.1:0 --workers 5` under a
/// tracer (ours or strace), sends 20 requests, stops the server with
/// SIGTERM (so it exits 0 by itself) and returns the tracer's exit status.
fn traced_server_run(tracer: &str, tracer_args: &[&str]) -> std::process::ExitStatus {
    let mut args: Vec<&str> = tracer_args.to_vec();
    args.extend([BIN, "serve", "--addr", "127.0.0.1:0", "--workers", "5"]);
    let mut tracer = ServerProcess::start_command(Command::new(tracer).args(&args))
        .unwrap_or_else(|stderr| panic!("{tracer} did not start the server: {stderr}"));
    for _ in 0..20 {
        assert_eq!(get(tracer.addr, "/").unwrap().status, 200);
    }
    let server = children_of(tracer.pid());
    assert_eq!(
        server.len(),
        1,
        "the tracer should have one child: {server:?}"
    );
    // SAFETY: kill(2) on the server process the tracer started for us.
    assert_eq!(unsafe { libc::kill(server[0].0, libc::SIGTERM) }, 0);
    tracer.wait(Duration::from_secs(30)).0
}

#[test]
fn traces_the_pool_server_like_strace_does() {
    let _serial = serial();
    let dir = tempdir();
    let ours = dir.path().join("ours.txt");
    let theirs = dir.path().join("strace.txt");
    let status = traced_server_run(BIN, &["trace", "-o", ours.to_str().unwrap(), "--"]);
    assert!(
        status.success(),
        "the exit status follows the server's 0: {status}"
    );
    let text = std::fs::read_to_string(&ours).unwrap();

    let shape = server_shape(&text);
    assert_eq!(shape.threads_created, 5, "{shape:?}");
    assert_eq!(
        shape.accepts_per_thread,
        vec![20],
        "all 20 accepts on one thread: {shape:?}"
    );
    // Every worker sleeps in FUTEX_WAIT at least once, on its own tid.
    let workers = returns_of(&text, "clone3");
    assert_eq!(workers.len(), 5, "{workers:?}");
    let lines = lines_by_thread(&text);
    for worker in workers {
        let waits = lines
            .iter()
            .filter(|(tid, rest)| *tid == Some(worker) && rest.contains("FUTEX_WAIT"))
            .count();
        assert!(waits > 0, "worker {worker} never waited on a futex");
    }
    assert!(text.contains("+++ exited with 0 +++"), "{text}");

    // The same run shape under strace -f with the same syscalls.
    let status = traced_server_run(
        "strace",
        &[
            "-f",
            "-e",
            "trace=clone3,accept4,futex",
            "-o",
            theirs.to_str().unwrap(),
        ],
    );
    assert!(status.success(), "{status}");
    let reference = server_shape(&std::fs::read_to_string(&theirs).unwrap());
    assert_eq!(shape, reference);
}

#[test]
fn futex_wait_filter_keeps_waits_and_drops_wakes() {
    let _serial = serial();
    let dir = tempdir();
    let out = dir.path().join("waits.txt");
    let status = traced_server_run(
        BIN,
        &[
            "trace",
            "-e",
            "trace=accept4",
            "-e",
            "futex=wait",
            "-o",
            out.to_str().unwrap(),
            "--",
        ],
    );
    assert!(status.success());
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("FUTEX_WAIT"), "{text}");
    assert!(!text.contains("FUTEX_WAKE"), "{text}");
    assert_eq!(server_shape(&text).accepts_per_thread, vec![20]);
}

#[test]
fn attach_traces_and_detach_leaves_the_server_running() {
    let _serial = serial();
    let server = ServerProcess::start(&["--workers", "3"]);
    let dir = tempdir();
    let out = dir.path().join("attach.txt");
    let pid = server.pid().to_string();
    let mut tracer = Command::new(BIN)
        .args(["trace", "-p", &pid, "-o", out.to_str().unwrap()])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until every thread is traced (TracerPid in /proc).
    let (attached, _) = eventually(Duration::from_secs(10), || {
        let traced = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .all(|t| {
                std::fs::read_to_string(t.path().join("status")).is_ok_and(|s| {
                    s.lines()
                        .any(|l| l.starts_with("TracerPid:") && l.trim_end() != "TracerPid:\t0")
                })
            });
        (traced, ())
    });
    assert!(attached, "not every thread got traced");
    for _ in 0..5 {
        assert_eq!(get(server.addr, "/").unwrap().status, 200);
    }
    // SAFETY: SIGINT to the tracer we started.
    assert_eq!(unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = tracer.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the tracer did not detach");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(server_shape(&text).accepts_per_thread, vec![5], "{text}");
    // Nobody is left stopped, and the server serves on, untraced.
    for (_, name, state, _) in threads_of(server.pid()) {
        assert!(state != 't' && state != 'T', "{name} left in state {state}");
    }
    assert_eq!(get(server.addr, "/").unwrap().status, 200);
    let (status, summary) = server.stop();
    assert!(status.success());
    assert!(summary.contains("6 ok"), "{summary}");
}

#[test]
fn killing_the_tracer_kills_the_spawned_program_and_killing_the_program_ends_the_trace() {
    let _serial = serial();
    // EXITKILL: the tracee must not outlive a tracer killed with -9.
    let mut tracer = Command::new(BIN)
        .args(["trace", "-o", "/dev/null", "--", "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let child = first_child_of(tracer.id() as i32);
    let sleeper = child;
    // Let it exec, so the kill lands on a traced program, not our own
    // forked child (which PR_SET_PDEATHSIG covers).
    let (execed, _) = eventually(Duration::from_secs(10), || {
        let comm = std::fs::read_to_string(format!("/proc/{sleeper}/comm")).unwrap_or_default();
        (comm.trim() == "sleep", ())
    });
    assert!(execed);
    tracer.kill().unwrap();
    tracer.wait().unwrap();
    let (gone, state) = eventually(Duration::from_secs(5), || {
        let state = std::fs::read_to_string(format!("/proc/{sleeper}/stat")).ok();
        let alive = state
            .as_deref()
            .and_then(parse_stat)
            .is_some_and(|(_, _, s, _)| s != 'Z' && s != 'X');
        (!alive, state)
    });
    assert!(gone, "the tracee outlived its tracer: {state:?}");

    // kill -9 of the tracee: the tracer reports it and exits 128 + 9.
    let dir = tempdir();
    let out = dir.path().join("killed.txt");
    let recording = dir.path().join("killed.tbt");
    let mut tracer = Command::new(BIN)
        .args([
            "trace",
            "-o",
            out.to_str().unwrap(),
            "--write",
            recording.to_str().unwrap(),
        ])
        .args(["--", "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let child = first_child_of(tracer.id() as i32);
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: SIGKILL to the sleep(1) our tracer started.
    assert_eq!(unsafe { libc::kill(child, libc::SIGKILL) }, 0);
    let status = tracer.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.trim_end().ends_with("+++ killed by SIGKILL +++"),
        "{text}"
    );
    // The recording was finished properly and reads to its end.
    let export = Command::new(BIN)
        .arg("export")
        .arg(&recording)
        .args(["--strace", "-"])
        .output()
        .unwrap();
    assert!(export.status.success());
    assert!(
        export.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let replayed = String::from_utf8(export.stdout).unwrap();
    assert!(
        replayed.trim_end().ends_with("+++ killed by SIGKILL +++"),
        "{replayed}"
    );
}

#[test]
fn exit_status_and_output_of_the_traced_program_are_its_own() {
    let _serial = serial();
    let run = |args: &[&str]| Command::new(args[0]).args(&args[1..]).output().unwrap();
    let script = "echo out; echo err >&2; exit 7";
    let plain = run(&["sh", "-c", script]);
    let traced = run(&[BIN, "trace", "-o", "/dev/null", "--", "sh", "-c", script]);
    assert_eq!(traced.status.code(), Some(7));
    assert_eq!(traced.stdout, plain.stdout);
    assert_eq!(traced.stderr, plain.stderr);
    let unfiltered = run(&[
        BIN,
        "trace",
        "--no-seccomp",
        "-o",
        "/dev/null",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(unfiltered.status.code(), Some(7));
    assert_eq!(unfiltered.stdout, plain.stdout);
}

#[test]
fn bad_input_fails_with_one_clear_line() {
    let _serial = serial();
    let run = |args: &[&str]| {
        let output = Command::new(BIN).args(args).output().unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let one_line = |stderr: &str| stderr.lines().count() == 1;

    let (status, stderr) = run(&["trace", "-p", "999999999"]);
    assert!(!status.success());
    assert!(
        stderr.contains("no process with pid 999999999") && one_line(&stderr),
        "{stderr}"
    );
    // Issue 14: itself, and a zombie, each said for what it is.
    let output = Command::new("sh")
        .args(["-c", &format!("exec {BIN} trace -p $$")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("this tracebench itself") && one_line(&stderr),
        "{stderr}"
    );
    let mut zombie = Command::new("true").spawn().unwrap();
    let pid = zombie.id().to_string();
    let (gone, _) = eventually(std::time::Duration::from_secs(5), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.contains(") Z "), ())
    });
    assert!(gone, "the child never became a zombie");
    let (status, stderr) = run(&["trace", "-p", &pid]);
    zombie.wait().unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("is a zombie") && one_line(&stderr),
        "{stderr}"
    );

    let (status, stderr) = run(&["trace", "-e", "trace=futex,frobnicate", "--", "true"]);
    assert!(!status.success());
    assert!(
        stderr.contains("unknown syscall \"frobnicate\"") && one_line(&stderr),
        "{stderr}"
    );

    let (status, stderr) = run(&["trace", "--", "no-such-program-here"]);
    assert!(!status.success());
    assert!(
        stderr.starts_with("tracebench: cannot run no-such-program-here: no such program in PATH")
            && one_line(&stderr),
        "{stderr}"
    );
    // A path that exists but cannot run says why, as execve would.
    let dir = tempdir();
    let plain = dir.path().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    for (path, why) in [
        (plain.as_path(), "Permission denied"),
        (dir.path(), "Is a directory"),
    ] {
        let (status, stderr) = run(&["trace", "--", path.to_str().unwrap()]);
        assert!(!status.success());
        assert!(stderr.contains(why) && one_line(&stderr), "{stderr}");
    }

    // A process that already has a tracer cannot get a second one.
    let mut first = Command::new(BIN)
        .args(["trace", "-o", "/dev/null", "--", "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let child = first_child_of(first.id() as i32);
    // Only once the first tracer holds it: the child exists a moment
    // before it is seized, and a second tracer coming in that moment would
    // win (and the first would say so).
    let tracer_line = format!("TracerPid:\t{}", first.id());
    let (seized, status) = eventually(Duration::from_secs(10), || {
        let status = std::fs::read_to_string(format!("/proc/{child}/status")).unwrap_or_default();
        (status.lines().any(|l| l == tracer_line), status)
    });
    assert!(seized, "{status}");
    let (status, stderr) = run(&["trace", "-p", &child.to_string()]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("not permitted to trace") && one_line(&stderr),
        "{stderr}"
    );
}

#[test]
fn a_recorded_trace_file_exports_to_jsonl_chrome_strace_and_a_summary() {
    let _serial = serial();
    let dir = tempdir();
    let file = dir.path().join("run.tbt");
    let status = traced_server_run(
        BIN,
        &[
            "trace",
            "-o",
            "/dev/null",
            "--write",
            file.to_str().unwrap(),
            "--",
        ],
    );
    assert!(status.success());
    let export = |args: &[&str]| {
        let output = Command::new(BIN)
            .arg("export")
            .arg(&file)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };

    let jsonl = export(&["--jsonl", "-"]);
    let records: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let accepted = records
        .iter()
        .filter(|r| {
            r["type"] == "syscall_exit" && r["name"] == "accept4" && r["ret"].as_i64() >= Some(0)
        })
        .count();
    assert_eq!(accepted, 20);
    assert_eq!(
        records
            .iter()
            .filter(|r| r["type"] == "spawned" && r["creation"] == "thread")
            .count(),
        5
    );

    let chrome: serde_json::Value = serde_json::from_str(&export(&["--chrome", "-"])).unwrap();
    let slices = chrome["traceEvents"].as_array().unwrap();
    // 20 accepts, and perhaps the one the stop ended.
    let accept_returns: Vec<&str> = slices
        .iter()
        .filter(|r| r["ph"] == "X" && r["name"] == "accept4")
        .map(|r| r["args"]["ret"].as_str().unwrap())
        .collect();
    assert_eq!(
        accept_returns
            .iter()
            .filter(|r| r.parse::<i64>().is_ok_and(|v| v >= 0))
            .count(),
        20
    );
    // The stop may land while the acceptor is between two accepts (it then
    // never calls accept4 again) or inside one (EINVAL, perhaps after an
    // ERESTARTSYS); before closing, the server takes what waits in the
    // listen backlog with non-blocking accepts, the last of which finds it
    // empty (EAGAIN): nothing else.
    assert!(
        accept_returns
            .iter()
            .filter(|r| r.parse::<i64>().is_err())
            .all(|r| r.contains("EINVAL") || r.contains("ERESTARTSYS") || r.contains("EAGAIN")),
        "{accept_returns:?}"
    );
    assert!(
        slices.iter().filter(|r| r["ph"] == "M").count() >= 6,
        "a named track per thread"
    );

    let text = export(&["--strace", "-"]);
    // Drop the -tt timestamp that follows the thread (`N ` on every line,
    // as strace -f writes a file).
    let untimed: Vec<String> = text
        .lines()
        .map(|line| {
            let (tid, rest) = line.split_once(' ').expect("a thread first");
            let rest = rest.trim_start();
            format!("{tid} {}", rest.split_once(' ').map_or(rest, |(_, r)| r))
        })
        .collect();
    assert_eq!(
        server_shape(&untimed.join("\n")).accepts_per_thread,
        vec![20]
    );

    let summary = export(&["-c"]);
    assert!(
        summary.lines().any(|l| l.ends_with(" accept4")
            && l.split_whitespace()
                .nth(4)
                // 20, and the interrupted, drain (EAGAIN) and closed ones.
                .is_some_and(|calls| calls.parse::<u32>().is_ok_and(|c| (20..=23).contains(&c)))),
        "{summary}"
    );
    assert!(summary.contains("futex-wait"), "{summary}");
}

#[test]
fn a_trace_file_cut_short_by_kill_9_still_reads_up_to_the_cut() {
    let _serial = serial();
    let dir = tempdir();
    let file = dir.path().join("cut.tbt");
    let mut tracer = Command::new(BIN)
        .args([
            "trace",
            "-o",
            "/dev/null",
            "--write",
            file.to_str().unwrap(),
            "--",
        ])
        .args([
            "sh",
            "-c",
            "while true; do echo tick > /dev/null; sleep 0.05; done",
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    tracer.kill().unwrap();
    tracer.wait().unwrap();
    let output = Command::new(BIN)
        .arg("export")
        .arg(&file)
        .args(["--jsonl", "-"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ends early"), "{stderr}");
    let lines = String::from_utf8(output.stdout).unwrap().lines().count();
    // 1.2 s of a loop that sleeps 50 ms: far more than one block's worth of
    // events must have been flushed while the tracer idled.
    assert!(lines > 50, "only {lines} events survived");
}

#[test]
fn signals_stops_threads_and_a_non_leader_exec_behave_the_same_traced() {
    let _serial = serial();
    let dir = tempdir();
    let fixture = build_fixture("signals", dir.path());
    let plain = Command::new(&fixture).output().unwrap();
    assert_eq!(plain.status.code(), Some(3), "{plain:?}");
    for extra in [&[][..], &["--no-seccomp"][..], &["-e", "all"][..]] {
        let out = dir.path().join("signals.txt");
        let traced = Command::new(BIN)
            .arg("trace")
            .args(extra)
            .arg("-o")
            .arg(&out)
            .arg("--")
            .arg(&fixture)
            .output()
            .unwrap();
        assert_eq!(
            traced.status.code(),
            Some(3),
            "{extra:?}: {}",
            String::from_utf8_lossy(&traced.stderr)
        );
        assert_eq!(traced.stdout, plain.stdout, "{extra:?}");
        let text = std::fs::read_to_string(&out).unwrap();
        // With who sent each, as strace shows the siginfo.
        assert!(
            text.contains("--- SIGUSR1 {si_signo=SIGUSR1, si_code=SI_TKILL, si_pid="),
            "{extra:?}\n{text}"
        );
        // glibc's SIGRTMIN+2 is the kernel's 32 + 4, which strace calls SIGRT_4.
        assert!(
            text.contains("--- SIGRT_4 {si_signo=SIGRT_4"),
            "{extra:?}\n{text}"
        );
        assert!(
            text.contains("--- stopped by SIGSTOP ---"),
            "{extra:?}\n{text}"
        );
        assert!(
            text.contains("--- SIGCONT {si_signo=SIGCONT, si_code=SI_USER"),
            "{extra:?}\n{text}"
        );
        assert!(
            text.contains("+++ superseded by execve in pid"),
            "{extra:?}\n{text}"
        );
        assert!(
            text.trim_end().ends_with("+++ exited with 3 +++"),
            "{extra:?}\n{text}"
        );
        // The exec'ing thread's write was read through its own tid even
        // though its leader had exited.
        assert!(
            text.contains("write(1, \"exec from a non-leader thread\""),
            "{extra:?}\n{text}"
        );
    }
}

#[test]
fn ctrl_c_in_the_window_before_the_blocking_wait_still_ends_the_trace() {
    use std::io::BufRead;
    // The test hook holds the window between the loop's last look at the
    // interrupt flag and its blocking waitpid open for 300 ms, once the
    // traced `sleep` is idle; a SIGINT landing there must not wait for the
    // sleep's next event (30 s away).
    let mut tracer = Command::new(BIN)
        .args(["trace", "-o", "/dev/null", "--", "sleep", "30"])
        .env("TRACEBENCH_TEST_INTERRUPT_WINDOW_MS", "300")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = tracer.stderr.take().unwrap();
    let (opened_tx, opened) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("interrupt window open") {
                let _ = opened_tx.send(());
            }
        }
    });
    opened
        .recv_timeout(Duration::from_secs(10))
        .expect("the test hook's window never opened");
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let (ended, status) = eventually(Duration::from_secs(10), || match tracer.try_wait() {
        Ok(Some(status)) => (true, Some(status)),
        _ => (false, None),
    });
    if !ended {
        let _ = tracer.kill();
    }
    assert!(ended, "the trace went on after Ctrl-C");
    // Like strace, the exit status follows the tracee's: killed by our
    // SIGKILL (EXITKILL) when we stop.
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
}

#[test]
fn ctrl_c_is_the_programs_to_handle_as_under_strace() {
    use std::os::unix::process::CommandExt;
    let _serial = serial();
    // A terminal's Ctrl-C: SIGINT to the whole process group, tracer and
    // server alike. The server drains and exits 0 by itself; so do we.
    let dir = tempdir();
    let out = dir.path().join("served.txt");
    let tracer = Command::new(BIN)
        .args(["trace", "-o", out.to_str().unwrap(), "--"])
        .args([BIN, "serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let server = first_child_of(tracer.id() as i32);
    // Exec'd (before, the child is a copy of the tracer), then a moment
    // to install its handlers and listen.
    let (execed, _) = eventually(Duration::from_secs(10), || {
        let cmdline = std::fs::read(format!("/proc/{server}/cmdline")).unwrap_or_default();
        (cmdline.windows(6).any(|w| w == b"\0serve"), ())
    });
    assert!(execed);
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: SIGINT to the process group we made for the tracer.
    let sent = unsafe { libc::kill(-(tracer.id() as i32), libc::SIGINT) };
    assert_eq!(sent, 0);
    let output = tracer.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{summary}");
    assert!(
        summary.contains("workers"),
        "the server's own summary: {summary}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.trim_end().ends_with("+++ exited with 0 +++"), "{text}");

    // SIGINT to the tracer alone: passed on to the program (which dies of
    // it, as sleep does), and the status follows.
    let tracer = tracer_of_a_sleep(&[]);
    // SAFETY: SIGINT to our tracer.
    assert_eq!(unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) }, 0);
    let status = tracer.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{status:?}");

    // A program that ignores it: a second signal kills it.
    let tracer = Command::new(BIN)
        .args([
            "trace",
            "-o",
            "/dev/null",
            "--",
            "sh",
            "-c",
            "trap '' INT; sleep 30",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: SIGINT to our tracer, twice.
    let interrupt = || unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    assert_eq!(interrupt(), 0);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(interrupt(), 0);
    let started = std::time::Instant::now();
    let status = tracer.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(128 + libc::SIGKILL), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn with_c_and_o_the_file_holds_the_summary_alone_as_strace_writes_it() {
    let dir = tempdir();
    let written = |tracer: &[&str], name: &str| {
        let out = dir.path().join(name);
        let output = succeeds(
            Command::new(tracer[0])
                .args(&tracer[1..])
                .args(["-c", "-e", "trace=write", "-o"])
                .arg(&out)
                .args(["sh", "-c", "echo one; echo two"])
                .stdout(Stdio::null()),
        );
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (std::fs::read_to_string(&out).unwrap(), stderr)
    };
    let (strace, _) = written(&["strace", "-f"], "strace.txt");
    let (ours, stderr) = written(&[BIN, "trace"], "ours.txt");
    for text in [&strace, &ours] {
        assert!(text.starts_with("% time"), "the summary first: {text}");
        assert!(!text.contains("write(1"), "and no calls: {text}");
        assert!(text.contains(" write\n"), "{text}");
    }
    assert!(
        !stderr.contains("% time"),
        "not on standard error too: {stderr}"
    );
    // Without -e, every call is counted, -o or not, as strace counts them.
    let everything = dir.path().join("all.txt");
    succeeds(
        Command::new(BIN)
            .args(["trace", "-c", "-o"])
            .arg(&everything)
            .args(["ls", "/"])
            .stdout(Stdio::null()),
    );
    let text = std::fs::read_to_string(&everything).unwrap();
    for call in [" openat\n", " mmap\n", " execve\n"] {
        assert!(text.contains(call), "{call:?} counted: {text}");
    }
    // With --format jsonl but no -o, -c is still the summary alone.
    let output = succeeds(
        Command::new(BIN)
            .args(["trace", "-c", "--format", "jsonl", "true"])
            .stdout(Stdio::null()),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("% time"), "{stderr}");
    assert!(!stderr.contains("{\""), "no events: {stderr}");
    // One summary has no place among a file per thread: refused, as strace
    // refuses it.
    fails_with_one_line(
        Command::new(BIN)
            .args(["trace", "-c", "-ff", "-o"])
            .arg(dir.path().join("per-thread"))
            .arg("true"),
        "-ff",
    );
}

#[test]
fn with_big_c_and_o_the_summary_follows_the_calls_in_the_file() {
    let dir = tempdir();
    let out = dir.path().join("calls.txt");
    let output = succeeds(
        Command::new(BIN)
            .args(["trace", "-C", "-e", "trace=write", "-o"])
            .arg(&out)
            .args(["--", "sh", "-c", "echo one; echo two"])
            .stdout(Stdio::null()),
    );
    let text = std::fs::read_to_string(&out).unwrap();
    // The result aligned at column 40 (pid prefix included), as strace
    // aligns it.
    let calls = text.find("write(1, \"one\\n\", 4) ").expect(&text);
    let whole = text[calls..].lines().next().unwrap();
    let start = text[..calls].rfind('\n').map_or(0, |n| n + 1);
    assert_eq!(
        text[start..].find("= 4"),
        Some(40),
        "= at column 40: {whole}"
    );
    let table = text.find("% time").expect(&text);
    assert!(calls < table, "the calls, then the summary: {text}");
    assert!(text.contains(" write\n"), "{text}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("% time"),
        "not on standard error too: {stderr}"
    );
}

#[test]
fn execve_shows_its_arguments_and_environment_as_strace_does() {
    let args = [
        "-e",
        "trace=execve",
        "-s",
        "8",
        "--",
        "/bin/echo",
        "hi",
        "a very long argument",
    ];
    let ours = Command::new(BIN).arg("trace").args(args).output().unwrap();
    let theirs = Command::new("strace")
        .args(args)
        .output()
        .expect("strace is needed for this test; .ci/test installs it");
    let execve_line = |stderr: &[u8]| -> String {
        let text = String::from_utf8_lossy(stderr).into_owned();
        let line = text
            .lines()
            .find(|l| l.starts_with("execve("))
            .unwrap_or_else(|| panic!("no execve line in {text}"))
            .to_owned();
        // The environment's address differs from run to run.
        let start = line.find(", 0x").unwrap();
        let end = start + 2 + line[start + 2..].find(' ').unwrap();
        format!("{}{}", &line[..start + 2], &line[end..])
    };
    assert_eq!(execve_line(&ours.stderr), execve_line(&theirs.stderr));
    assert!(execve_line(&ours.stderr).contains(r#"["/bin/ech"..., "hi", "a very l"...]"#));
}

#[test]
fn the_traced_program_starts_as_it_would_untraced_without_a_parent_death_signal() {
    let dir = tempdir();
    let fixture = build_fixture("pdeathsig", dir.path());
    let plain = Command::new(&fixture).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "pdeathsig=0\n");
    for extra in [&[][..], &["--no-seccomp"][..]] {
        let traced = Command::new(BIN)
            .arg("trace")
            .args(extra)
            .args(["-o", "/dev/null", "--"])
            .arg(&fixture)
            .output()
            .unwrap();
        assert!(traced.status.success(), "{traced:?}");
        assert_eq!(traced.stdout, plain.stdout, "{extra:?}");
    }
}

#[test]
fn a_traced_program_dies_of_sigpipe_as_it_does_untraced() {
    // Issue 14: `trace -- CMD | head` ended 0 where strace ends 141: our
    // runtime ignores SIGPIPE, and the ignore was inherited through exec,
    // so the program met EPIPE instead.
    let script = "yes | head -c 1 >/dev/null; echo ${PIPESTATUS[0]}";
    let plain = Command::new("bash").args(["-c", script]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "141\n");
    // The perf backend spawns its own way (it needs root: CI runs as root).
    for run in [
        vec!["trace"],
        vec!["trace", "--no-seccomp"],
        vec!["trace", "--backend", "perf"],
    ] {
        let traced = Command::new(BIN)
            .args(&run)
            .args(["-o", "/dev/null", "--", "bash", "-c", script])
            .output()
            .unwrap();
        assert_eq!(traced.stdout, plain.stdout, "{run:?}: {traced:?}");
    }
}

#[test]
fn sampling_reads_thread_states_without_stopping_anything() {
    let _serial = serial();
    let output = Command::new(BIN)
        .args(["trace", "--sample", "100", "--", "sleep", "0.6"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let table = String::from_utf8(output.stderr).unwrap();
    let row = table.lines().nth(1).unwrap_or_default();
    let sleep_share: f64 = row
        .split_whitespace()
        .nth(5)
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(
        sleep_share > 80.0,
        "sleep(1) should be seen sleeping:\n{table}"
    );
    let status = Command::new(BIN)
        .args(["trace", "--sample", "50", "--", "sh", "-c", "exit 4"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(4));

    // Attached to the server: the acceptor waits in accept, workers on
    // their futex, and nothing is ever stopped (no TracerPid).
    let server = ServerProcess::start(&["--workers", "3"]);
    let pid = server.pid().to_string();
    let sampler = Command::new(BIN)
        .args(["trace", "--sample", "200", "-p", &pid])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    for (_, name, state, _) in threads_of(server.pid()) {
        assert!(state != 't' && state != 'T', "{name} stopped");
    }
    // SAFETY: SIGINT to the sampler we started.
    assert_eq!(unsafe { libc::kill(sampler.id() as i32, libc::SIGINT) }, 0);
    let output = sampler.wait_with_output().unwrap();
    assert!(output.status.success());
    let table = String::from_utf8(output.stderr).unwrap();
    let shares = |tid: i32, column: usize| -> f64 {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&tid.to_string()))
            .unwrap();
        row.split_whitespace()
            .nth(column)
            .unwrap()
            .trim_end_matches('%')
            .parse()
            .unwrap()
    };
    assert!(
        shares(server.pid(), 4) > 80.0,
        "the acceptor should be in accept:\n{table}"
    );
    let workers: Vec<i32> = threads_of(server.pid())
        .iter()
        .filter(|t| t.1.starts_with("worker-"))
        .map(|t| t.0)
        .collect();
    assert_eq!(workers.len(), 3);
    for worker in workers {
        assert!(
            shares(worker, 3) > 80.0,
            "worker {worker} should wait on its futex:\n{table}"
        );
    }
    assert!(server.stop().0.success());
}

/// The CPU latency the kernel grants now, in µs: the strictest request
/// any process holds (about 2 000 s when none does).
fn cpu_latency_limit_us() -> i32 {
    let bytes = std::fs::read("/dev/cpu_dma_latency")
        .expect("read /dev/cpu_dma_latency: the tracer's idle polling is tested as root");
    i32::from_ne_bytes(bytes[..4].try_into().unwrap())
}

/// Whether `pid` holds /dev/cpu_dma_latency open (and so a request).
fn holds_cpu_latency_request(pid: i32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| target == std::path::Path::new("/dev/cpu_dma_latency"))
            })
        })
        .unwrap_or(false)
}

/// Starts `tracebench trace ARGS -o /dev/null -- sleep 30` and waits until
/// the sleep runs traced.
fn tracer_of_a_sleep(args: &[&str]) -> std::process::Child {
    let tracer = Command::new(BIN)
        .arg("trace")
        .args(args)
        .args(["-o", "/dev/null", "--", "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let sleeper = first_child_of(tracer.id() as i32);
    let (execed, _) = eventually(Duration::from_secs(10), || {
        let comm = std::fs::read_to_string(format!("/proc/{sleeper}/comm")).unwrap_or_default();
        (comm.trim() == "sleep", ())
    });
    assert!(execed);
    tracer
}

#[test]
fn idle_cpus_poll_while_tracing_and_halt_again_after() {
    let _serial = serial();
    let before = cpu_latency_limit_us();

    // By default the tracer holds a 0 µs request for as long as it traces.
    let mut tracer = tracer_of_a_sleep(&[]);
    assert!(holds_cpu_latency_request(tracer.id() as i32));
    assert_eq!(cpu_latency_limit_us(), 0);
    // Even killed with -9 it leaves nothing behind: the kernel withdraws
    // the request with the dead process's files.
    tracer.kill().unwrap();
    tracer.wait().unwrap();
    let (withdrawn, limit) = eventually(Duration::from_secs(5), || {
        let limit = cpu_latency_limit_us();
        (limit == before, limit)
    });
    assert!(
        withdrawn,
        "limit {limit} µs after the tracer died, {before} before"
    );

    // --no-poll-idle: no request at all.
    let mut tracer = tracer_of_a_sleep(&["--no-poll-idle"]);
    assert!(!holds_cpu_latency_request(tracer.id() as i32));
    assert_eq!(cpu_latency_limit_us(), before);
    tracer.kill().unwrap();
    tracer.wait().unwrap();
}

/// A sampled run writes a trace file like any other: it replays and
/// exports, its header says it was sampled, and the sleeper is seen
/// asleep in it.
#[test]
fn a_sampled_trace_is_written_and_replayed_like_any_other() {
    let _serial = serial();
    let dir = tempdir();
    let file = dir.path().join("sampled.tbt");
    let traced = Command::new(BIN)
        .args(["trace", "--backend", "sample", "--write"])
        .arg(&file)
        .args(["--", "sleep", "0.4"])
        .output()
        .unwrap();
    assert!(traced.status.success(), "{traced:?}");
    let reader = tracebench_trace::format::TraceReader::open(&file).unwrap();
    assert_eq!(reader.header().backend, tracebench_trace::Backend::Sample);
    let summary = Command::new(BIN)
        .args(["export", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(summary.status.success(), "{summary:?}");
    let table = String::from_utf8_lossy(&summary.stdout);
    let sleep_share: f64 = table
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("tid"))
        .nth(1)
        .and_then(|row| row.split_whitespace().nth(5))
        .and_then(|share| share.trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("no sleep share in {table}"));
    assert!(sleep_share > 80.0, "{table}");
    let replayed = Command::new(BIN).arg("replay").arg(&file).output().unwrap();
    assert!(replayed.status.success(), "{replayed:?}");
    assert!(String::from_utf8_lossy(&replayed.stdout).contains("trace events"));
}

#[test]
fn a_thread_blocked_in_a_call_not_traced_is_looked_at_not_called_running() {
    // Issue 16: nginx's master sat in rt_sigsuspend, not traced, and was
    // "running" 100 % of the time. Here a shell waits in wait4 for a child
    // in clock_nanosleep, neither traced: both are looked at in /proc and
    // shown as sleeping, marked sampled, in the file and in -c.
    let dir = tempdir();
    let file = dir.path().join("t.jsonl");
    let output = Command::new(BIN)
        .args([
            "trace",
            "-c",
            "--format",
            "jsonl",
            "-e",
            "trace=futex",
            "-o",
        ])
        .arg(&file)
        .args(["--", "sh", "-c", "sleep 1.2; true"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    let sampled: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "sampled" && e["state"] == "blocked")
        .collect();
    let names: Vec<&str> = sampled.iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(names.contains(&"wait4"), "{names:?}");
    assert!(names.contains(&"clock_nanosleep"), "{names:?}");
    // -c (to stderr here, after the file) tells the sampled share apart.
    let summary = String::from_utf8_lossy(&output.stderr);
    let sleeper = summary
        .lines()
        .skip_while(|l| !l.contains(" sampled"))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .collect::<Vec<_>>();
    assert_eq!(sleeper.len(), 2, "{summary}");
    for row in sleeper {
        let share = |i: usize| row[i].trim_end_matches('%').parse::<f64>().unwrap();
        // tid, syscalls, running, futex-wait, accept, sleep, io, event-wait,
        // syscall, sampled
        assert!(share(5) > 50.0, "sleeping most of its life: {row:?}");
        assert!(share(9) > 50.0, "and known by a look: {row:?}");
        assert!(share(2) < 50.0, "not running: {row:?}");
    }
}

#[test]
fn strace_process_tree_reads_our_file_as_it_reads_straces() {
    // Issue 15: strace-process-tree rejected every file we wrote ("There
    // should've been a PID at the beginning of line 1"): a file names the
    // thread on every line now, as strace -f -o does.
    let _serial = serial();
    let dir = tempdir();
    let ours = dir.path().join("ours.txt");
    let theirs = dir.path().join("strace.txt");
    let script = "/bin/true & /bin/true & wait";
    let output = Command::new(BIN)
        .args(["trace", "-o"])
        .arg(&ours)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let output = Command::new("strace")
        .args(["-f", "-o"])
        .arg(&theirs)
        .args(["sh", "-c", script])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let tree = |file: &std::path::Path| {
        let output = Command::new("strace-process-tree")
            .arg(file)
            .output()
            .expect("strace-process-tree: .ci/test installs it from PyPI");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // The same shape: a shell and its two children, pids aside.
    let shape = |text: String| -> Vec<String> {
        text.lines()
            .map(|l| {
                l.chars()
                    .filter(|c| !c.is_ascii_digit())
                    .collect::<String>()
            })
            .collect()
    };
    let (ours, theirs) = (tree(&ours), tree(&theirs));
    assert_eq!(
        shape(ours.clone()),
        shape(theirs.clone()),
        "ours:\n{ours}\nstrace's:\n{theirs}"
    );
    assert_eq!(ours.lines().count(), 3, "{ours}");
}

/// What stracetools' parser makes of each file: its lines, those it
/// parsed, and the calls by name.
const STRACETOOLS_READ: &str = r#"
import sys, json, collections
from stracetools import StraceParser
out = []
for path in sys.argv[1:]:
    parser = StraceParser()
    lines = [l for l in open(path) if l.strip()]
    events = [parser.parse_line(l) for l in lines]
    names = collections.Counter(e.name for e in events if e is not None)
    out.append({"lines": len(lines), "parsed": sum(e is not None for e in events), "names": names})
print(json.dumps(out))
"#;

#[test]
fn stracetools_reads_our_file_as_it_reads_straces() {
    // Issue 15: stracetools (PyPI) parsed 0 of 341 lines of our files. It
    // reads `strace -f -tt -T` files: pid, wall-clock time, the call.
    let _serial = serial();
    let dir = tempdir();
    let ours = dir.path().join("ours.txt");
    let theirs = dir.path().join("strace.txt");
    let flags = ["-f", "-tt", "-T", "-e", "trace=all", "-o"];
    for (tracer, first, file) in [(BIN, "trace", &ours), ("strace", "-q", &theirs)] {
        let output = Command::new(tracer)
            .arg(first)
            .args(flags)
            .arg(file)
            .args(["ls", "-la", "/etc"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{tracer}: {output:?}");
    }
    let output = Command::new("python3")
        .args(["-c", STRACETOOLS_READ])
        .args([&ours, &theirs])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "stracetools: .ci/test installs it from PyPI: {output:?}"
    );
    let read: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let (ours, theirs) = (&read[0], &read[1]);
    assert!(ours["lines"].as_u64().unwrap() > 100, "{read}");
    assert_eq!(ours["parsed"], ours["lines"], "every line of ours: {read}");
    assert_eq!(theirs["parsed"], theirs["lines"], "and of strace's: {read}");
    assert_eq!(ours["names"], theirs["names"], "the same calls: {read}");
}

#[test]
fn like_strace_the_command_needs_no_dashes_and_c_alone_counts_every_call() {
    // Issue 15: `tracebench trace ls` was refused, and -c counted only the
    // default selection (20 000 sched_yield calls went missing).
    let output = Command::new(BIN)
        .args(["trace", "-e", "trace=execve", "ls", "-d", "/"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "/\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("execve(\"/usr/bin/ls\", [\"ls\", \"-d\", \"/\"]"),
        "{stderr}"
    );

    let output = Command::new(BIN)
        .args(["trace", "-c", BIN, "lab", "race", "--target", "2000"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let summary = String::from_utf8_lossy(&output.stderr);
    let calls_of = |name: &str| {
        summary
            .lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .and_then(|l| l.split_whitespace().rev().nth(1)?.parse::<u64>().ok())
    };
    // The race lab yields between its read and its write: sched_yield is
    // not in the default set, yet strace's -c would count it.
    assert!(
        calls_of("sched_yield").is_some_and(|n| n >= 2000),
        "{summary}"
    );
    assert!(calls_of("mmap").is_some(), "{summary}");
}

/// The syscall names in a strace-format file (`PID name(…` lines), once
/// each, sorted.
fn names_in_strace_file(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let line = line
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start();
            let name = &line[..line.find('(')?];
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                .then(|| name.to_owned())
                .filter(|n| !n.is_empty())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn straces_classes_negations_and_regexes_select_what_strace_selects() {
    // Issue 15: -e trace= took names and a few classes of our own; strace
    // users write %file, %desc, !…, /regex. The same program traced by
    // strace and by us with each expression: the same syscalls appear.
    let _serial = serial();
    let dir = tempdir();
    let program = [
        "python3",
        "-c",
        "import os, socket, signal, time\n\
         s = socket.socket(); s.close()\n\
         signal.signal(signal.SIGUSR1, lambda *a: None)\n\
         os.getuid(); time.time(); os.listdir('/')",
    ];
    for expression in [
        "trace=%file",
        "trace=%desc",
        "trace=%memory",
        "trace=%signal",
        "trace=%process",
        "trace=%net",
        "trace=%creds",
        "trace=!%desc,%memory,%signal",
        "trace=/^(mmap|brk|.*stat.*)$",
        "trace=?no_such_call,openat",
    ] {
        let theirs = dir.path().join("strace.txt");
        let ours = dir.path().join("ours.txt");
        let strace = Command::new("strace")
            .args(["-f", "-qq", "-e", expression, "-o"])
            .arg(&theirs)
            .args(program)
            .output()
            .expect("strace is installed by the test script");
        assert!(strace.status.success(), "strace {expression}: {strace:?}");
        let traced = Command::new(BIN)
            .args(["trace", "-e", expression, "-o"])
            .arg(&ours)
            .args(program)
            .output()
            .unwrap();
        assert!(traced.status.success(), "{expression}: {traced:?}");
        let (theirs, ours) = (names_in_strace_file(&theirs), names_in_strace_file(&ours));
        assert!(!ours.is_empty(), "{expression}: nothing traced");
        assert_eq!(ours, theirs, "{expression}: ours, then strace's");
    }
}

#[test]
fn z_and_capital_z_show_the_calls_strace_shows() {
    // Issue 15: strace's -z (successful calls only) and -Z (failed only).
    let _serial = serial();
    let dir = tempdir();
    let program = ["ls", "/nonexistent", "/"];
    for flag in ["-z", "-Z"] {
        let theirs = dir.path().join("strace.txt");
        let ours = dir.path().join("ours.txt");
        let strace = Command::new("strace")
            .args(["-f", flag, "-e", "trace=%file", "-o"])
            .arg(&theirs)
            .args(program)
            .output()
            .expect("strace is installed by the test script");
        assert!(!strace.status.success(), "ls of a missing path fails");
        let traced = Command::new(BIN)
            .args(["trace", flag, "-e", "trace=%file", "-o"])
            .arg(&ours)
            .args(program)
            .output()
            .unwrap();
        assert_eq!(traced.status.code(), strace.status.code(), "{traced:?}");
        // The calls in order, by name and by whether they failed.
        let calls = |path: &std::path::Path| -> Vec<(String, bool)> {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .filter_map(|l| {
                    let l = l
                        .trim_start_matches(|c: char| c.is_ascii_digit())
                        .trim_start();
                    let name = &l[..l.find('(')?];
                    Some((name.to_owned(), l.contains("= -1 ")))
                })
                .collect()
        };
        let (theirs, ours) = (calls(&theirs), calls(&ours));
        assert!(!ours.is_empty(), "{flag}");
        assert_eq!(ours, theirs, "{flag}: ours, then strace's");
        let failed = flag == "-Z";
        assert!(ours.iter().all(|(_, f)| *f == failed), "{flag}: {ours:?}");
    }
}

#[test]
fn q_keeps_the_attach_and_detach_lines_out() {
    // strace's -q: the trace, and no word of our own about attaching.
    let _serial = serial();
    for (flags, said) in [(&[][..], true), (&["-q"][..], false)] {
        let mut sleeper = Command::new("sleep").arg("0.6").spawn().unwrap();
        let traced = Command::new(BIN)
            .arg("trace")
            .args(flags)
            .args(["-e", "trace=clock_nanosleep,exit_group", "-p"])
            .arg(sleeper.id().to_string())
            .output()
            .unwrap();
        let _ = sleeper.wait();
        let stderr = String::from_utf8_lossy(&traced.stderr);
        assert!(traced.status.success(), "{flags:?}: {stderr}");
        assert!(
            stderr.contains("exit_group("),
            "{flags:?}: the trace itself: {stderr}"
        );
        assert_eq!(
            stderr.contains("tracebench trace: attached"),
            said,
            "{flags:?}: {stderr}"
        );
    }
}

#[test]
fn several_p_follow_several_processes_as_straces_do() {
    // Issue 15: -p took one pid. strace takes -p 1 -p 2 and -p "1 2".
    let _serial = serial();
    for spelling in ["separate", "one list"] {
        let sleepers: Vec<_> = ["0.6", "0.9", "1.2"]
            .iter()
            .map(|time| Command::new("sleep").arg(time).spawn().unwrap())
            .collect();
        let pids: Vec<String> = sleepers.iter().map(|s| s.id().to_string()).collect();
        let mut trace = Command::new(BIN);
        trace.args(["trace", "-q", "-e", "trace=clock_nanosleep,exit_group"]);
        if spelling == "separate" {
            for pid in &pids {
                trace.args(["-p", pid]);
            }
        } else {
            trace.args(["-p", &pids.join(" ")]);
        }
        let traced = trace.output().unwrap();
        for mut sleeper in sleepers {
            let _ = sleeper.wait();
        }
        let stderr = String::from_utf8_lossy(&traced.stderr);
        assert!(traced.status.success(), "{spelling}: {stderr}");
        // Every process is followed to its end, and the trace ends with
        // the last of them.
        for pid in &pids {
            assert!(
                stderr.contains(&format!("[pid {pid:>5}] exit_group(0)"))
                    || stderr.contains(&format!("[pid {pid}] exit_group(0)")),
                "{spelling}: {pid} in {stderr}"
            );
        }
    }
    // One that cannot be followed: an error, and the others let go, not
    // left stopped.
    let mut sleeper = Command::new("sleep").arg("5").spawn().unwrap();
    let first = sleeper.id().to_string();
    fails_with_one_line(
        Command::new(BIN).args(["trace", "-p", &first, "-p", "999999999"]),
        "no process with pid 999999999",
    );
    let status = std::fs::read_to_string(format!("/proc/{first}/status")).unwrap();
    assert!(status.contains("TracerPid:\t0\n"), "{status}");
    assert!(
        !status.contains("(stopped)") && !status.contains("(tracing stop)"),
        "{status}"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    // A usage error, as clap reports them: status 2, the reason first.
    let bad = Command::new(BIN)
        .args(["trace", "-p", "1 x"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains("\"x\" is not a process id"), "{stderr}");
    fails_with_one_line(
        Command::new(BIN).args(["trace", "--backend", "perf", "-p", "1,2"]),
        "several (-p) need the ptrace backend",
    );
}

#[test]
fn e_signal_and_e_status_filter_what_is_shown_as_straces_do() {
    // Issue 15: -e signal= and -e status= were refused as unknown syscalls.
    let _serial = serial();
    let shown = |tracer: &str, first: &str, filters: &[&str], argv: &[&str]| {
        let output = Command::new(tracer)
            .arg(first)
            .args(["-e", "trace=kill,openat"])
            .args(filters.iter().flat_map(|f| ["-e", f]))
            .args(argv)
            // cargo's library path would add dozens of failed openat.
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        // The calls, signals (with their siginfo) and ends, each up to its
        // result.
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .filter(|l| {
                ["openat(", "kill(", "---", "+++"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .map(|l| l.split(" = ").next().unwrap().trim_end().to_owned())
            .map(|l| l.replace(char::is_numeric, "N"))
            .collect::<Vec<_>>()
    };
    let script = ["sh", "-c", "trap '' USR1; kill -USR1 $$; kill -USR2 $$"];
    for filters in [
        &["signal=none"][..],
        &["signal=!SIGUSR1"],
        &["signal=USR1"],
        &["signal=all"],
    ] {
        let ours = shown(BIN, "trace", filters, &script);
        let theirs = shown("strace", "-f", filters, &script);
        assert_eq!(ours, theirs, "{filters:?}");
    }
    let cat = ["cat", "/nonexistent", "/etc/hostname"];
    for filters in [
        &["status=failed"][..],
        &["status=successful"],
        &["status=!failed"],
    ] {
        let ours = shown(BIN, "trace", filters, &cat);
        let theirs = shown("strace", "-f", filters, &cat);
        assert!(ours.len() > 1, "{filters:?}: {ours:?}");
        assert_eq!(ours, theirs, "{filters:?}");
    }
    fails_with_one_line(
        Command::new(BIN).args(["trace", "-e", "signal=SIGBOGUS", "true"]),
        "signal=SIGBOGUS: unknown signal",
    );
}

#[test]
fn w_is_straces_wall_clock_flag_and_the_trace_file_is_write() {
    // Issue 15: our -w wrote a trace file where strace's -w means a
    // wall-clock -c.
    let summary = Command::new(BIN)
        .args(["trace", "-c", "-w", "true"])
        .output()
        .unwrap();
    assert!(summary.status.success(), "{summary:?}");
    assert!(String::from_utf8_lossy(&summary.stderr).contains("total"));
    fails_with_one_line(
        Command::new(BIN).args(["trace", "-w", "run.tbt", "--", "true"]),
        "use --write FILE",
    );
}

#[test]
fn capital_c_prints_calls_and_summary_and_capital_s_orders_the_table() {
    // Issue 15: strace's -C (the summary and the calls) and -S (order).
    let both = Command::new(BIN)
        .args(["trace", "-C", "ls", "/"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(both.status.success(), "{stderr}");
    assert!(
        stderr.contains("openat(") && stderr.contains("% time"),
        "{stderr}"
    );
    let table_by = |key: &str| {
        let out = Command::new(BIN)
            .args(["trace", "-c", "-S", key, "ls", "/"])
            .output()
            .unwrap();
        let table = calls_table(&String::from_utf8_lossy(&out.stderr));
        assert!(table.len() > 5, "{key}: {table:?}");
        table
    };
    // % time, seconds, usecs/call, max usecs, calls, [errors,] syscall
    let calls: Vec<u64> = table_by("calls")
        .iter()
        .map(|r| r[4].parse().unwrap())
        .collect();
    assert!(calls.windows(2).all(|w| w[0] >= w[1]), "{calls:?}");
    let names: Vec<String> = table_by("name")
        .iter()
        .map(|r| r.last().unwrap().clone())
        .collect();
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "{names:?}");
}

/// The rows of -c's per-syscall table, split into fields.
fn calls_table(summary: &str) -> Vec<Vec<String>> {
    summary
        .lines()
        .skip_while(|l| !l.starts_with("% time"))
        .skip(2)
        .take_while(|l| !l.starts_with("------"))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn ff_writes_a_file_per_thread_as_strace_does() {
    // Issue 15: strace -ff -o BASE writes BASE.TID per thread, no prefix.
    let _serial = serial();
    let dir = tempdir();
    let program = ["sh", "-c", "true & true & wait"];
    let files_of = |base: &str| -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{base}."))
            })
            .collect();
        files.sort();
        files
    };
    let strace = Command::new("strace")
        .arg("-ff")
        .arg("-o")
        .arg(dir.path().join("s"))
        .args(program)
        .output()
        .expect("strace is installed by the test script");
    assert!(strace.status.success(), "{strace:?}");
    let traced = Command::new(BIN)
        .args(["trace", "-ff", "-e", "trace=all", "-o"])
        .arg(dir.path().join("t"))
        .args(program)
        .output()
        .unwrap();
    assert!(traced.status.success(), "{traced:?}");
    let (theirs, ours) = (files_of("s"), files_of("t"));
    assert_eq!(ours.len(), 3, "sh and its two children: {ours:?}");
    assert_eq!(
        ours.len(),
        theirs.len(),
        "{ours:?} against strace's {theirs:?}"
    );
    for file in &ours {
        let text = std::fs::read_to_string(file).unwrap();
        let first = text.lines().next().unwrap_or_default();
        // A thread's own file names no thread: the line starts with the call.
        assert!(
            first.starts_with(|c: char| c.is_ascii_lowercase()),
            "{}: {first}",
            file.display()
        );
        assert!(
            text.contains("+++ exited with 0 +++"),
            "{}: {text}",
            file.display()
        );
    }
    fails_with_one_line(
        Command::new(BIN).args(["trace", "-ff", "true"]),
        "it needs -o FILE",
    );
}

#[test]
fn x_and_xx_write_strings_in_hex_as_strace_does() {
    // Issue 15: strace's -x (hex for strings with non-printable bytes) and
    // -xx (hex for all).
    let _serial = serial();
    let dir = tempdir();
    for (i, content) in [&b"a\tb\x01\xff\n"[..], b"abc\n", b"a\tb\n", b"a\x01b"]
        .into_iter()
        .enumerate()
    {
        let input = dir.path().join(format!("in{i}"));
        std::fs::write(&input, content).unwrap();
        for flag in ["-x", "-xx"] {
            let line_of = |tool: &str, out: &std::path::Path| -> String {
                let mut command = Command::new(tool);
                if tool == BIN {
                    command.arg("trace");
                }
                let status = command
                    .args([flag, "-e", "trace=write", "-o"])
                    .arg(out)
                    .arg("cat")
                    .arg(&input)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "{tool} {flag}");
                let text = std::fs::read_to_string(out).unwrap();
                let line = text
                    .lines()
                    .find(|l| l.contains("write("))
                    .unwrap_or_default();
                // strace pads before " = "; the pid prefix is ours in a file.
                let line = line.trim_start_matches(|c: char| c.is_ascii_digit()).trim();
                line.split_whitespace().collect::<Vec<_>>().join(" ")
            };
            let theirs = line_of("strace", &dir.path().join("s"));
            let ours = line_of(BIN, &dir.path().join("t"));
            assert!(theirs.starts_with("write(1, "), "{theirs}");
            assert_eq!(ours, theirs, "{flag} of {content:?}");
        }
    }
}
