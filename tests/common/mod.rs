//! Helpers for tests that run the real `tracebench` binary: start a server
//! on a free loopback port, talk HTTP to it by hand, read /proc about it,
//! and stop it the way a user would.
#![allow(dead_code)]

pub mod foreign;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The tests of one file run one at a time: several measure wall time or
/// CPU time, which a neighbour burning both cores would distort.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub const BIN: &str = env!("CARGO_BIN_EXE_tracebench");

pub struct ServerProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    stdout: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// `tracebench serve --addr 127.0.0.1:0 ARGS…`, once it listens.
    pub fn start(args: &[&str]) -> ServerProcess {
        let mut all = vec!["serve", "--addr", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Self::start_raw(&all).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    /// Runs `tracebench ARGS…` and waits for its "listening on" line.
    pub fn start_raw(args: &[&str]) -> Result<ServerProcess, String> {
        Self::start_command(Command::new(BIN).args(args))
    }

    /// Runs `command` (which starts a server, perhaps under a tracer) and
    /// waits for the "listening on" line on its standard output.
    pub fn start_command(command: &mut Command) -> Result<ServerProcess, String> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tracebench");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                return Err(String::from_utf8_lossy(&output.stderr).into_owned());
            }
        };
        let addr = first
            .split_whitespace()
            .find_map(|word| word.strip_prefix("http://"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        Ok(ServerProcess {
            child: Some(child),
            addr,
            stdout: rx,
        })
    }

    /// The server's standard error, line by line, as it comes.
    pub fn stderr_lines(&mut self) -> mpsc::Receiver<String> {
        let stderr = self.child.as_mut().unwrap().stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns the status
    /// and everything printed after the first line.
    pub fn stop(mut self) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(20))
    }

    /// Sends SIGTERM and returns the moment the server has exited (a
    /// blocking wait, not a poll; bounded at 20 s): for what must hold
    /// from the first instant after the exit.
    pub fn stop_at_exit(mut self) -> ExitStatus {
        let pid = self.pid();
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(status) => status.unwrap(),
            Err(_) => {
                // SAFETY: kill(2) on our own child's pid, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("server did not exit within 20 s");
            }
        }
    }

    pub fn wait(&mut self, limit: Duration) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut rest = String::new();
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(5)) {
            rest += &line;
            rest.push('\n');
        }
        (status, rest)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // A failed test must not leave a server behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `raw` on a fresh connection and reads the whole answer (the server
/// closes). Checks that Content-Length matches the body.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.write_all(raw)?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    parse_response(&bytes)
}

pub fn parse_response(bytes: &[u8]) -> std::io::Result<Response> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad(&format!("no head in {:?}", String::from_utf8_lossy(bytes))))?;
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let body = bytes[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let response = Response { status, head, body };
    let length: usize = response
        .header("content-length")
        .ok_or_else(|| bad("no content-length"))?
        .parse()
        .map_err(|_| bad("bad content-length"))?;
    if length != response.body.len() {
        return Err(bad(&format!(
            "Content-Length {length} but {} body bytes",
            response.body.len()
        )));
    }
    Ok(response)
}

pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
}

/// `n` GETs at once, one thread and one connection each; returns the
/// results and the wall time of the batch.
pub fn concurrent_gets(
    addr: SocketAddr,
    path: &str,
    n: usize,
) -> (Vec<std::io::Result<Response>>, Duration) {
    let start = Instant::now();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let path = path.to_owned();
            std::thread::spawn(move || get(addr, &path))
        })
        .collect();
    let results = threads.into_iter().map(|t| t.join().unwrap()).collect();
    (results, start.elapsed())
}

/// How many of PID's threads are blocked in system call `number`
/// (/proc/PID/task/*/syscall).
pub fn threads_blocked_in(pid: i32, number: i64) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("syscall")).ok())
        .filter(|syscall| syscall.split_whitespace().next() == Some(&number.to_string()))
        .count()
}

/// /proc/PID/task/*: (tid, comm, state letter, utime + stime in ticks).
pub fn threads_of(pid: i32) -> Vec<(i32, String, char, u64)> {
    let mut threads = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some(parsed) = parse_stat(&stat) {
            threads.push(parsed);
        }
    }
    threads
}

/// (pid, comm, state, utime + stime) from a /proc stat line; comm may hold
/// spaces and parentheses, so split at the last ')'.
pub fn parse_stat(stat: &str) -> Option<(i32, String, char, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let pid = stat[..open].trim().parse().ok()?;
    let comm = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Fields after the comm start at "state" (field 3); utime and stime are
    // fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((pid, comm, state, utime + stime))
}

/// Children of `pid` and their state letters.
pub fn children_of(pid: i32) -> Vec<(i32, char)> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(pid) {
            let child = stat.split_whitespace().next().unwrap().parse().unwrap();
            children.push((child, fields[0].chars().next().unwrap()));
        }
    }
    children
}

pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// TCP sockets on loopback whose local port is `port`, with their kernel
/// state code (e.g. 0x08 is CLOSE_WAIT), from /proc/net/tcp.
pub fn sockets_on_port(port: u16) -> Vec<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
            (local_port == port).then_some(state)
        })
        .collect()
}

pub const TCP_CLOSE_WAIT: u8 = 0x08;

/// A fresh temporary directory, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// Polls `check` every 20 ms until it holds or `limit` passes; returns the
/// last value for the assertion message.
pub fn eventually<T>(limit: Duration, mut check: impl FnMut() -> (bool, T)) -> (bool, T) {
    let deadline = Instant::now() + limit;
    loop {
        let (ok, value) = check();
        if ok || Instant::now() > deadline {
            return (ok, value);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first child process of `pid`, waiting (bounded) for it to appear.
pub fn first_child_of(pid: i32) -> i32 {
    let (found, children) = eventually(Duration::from_secs(10), || {
        let children = children_of(pid);
        (!children.is_empty(), children)
    });
    assert!(found, "process {pid} started no child");
    children[0].0
}

/// A loopback address where nothing listens (bound, then released).
pub fn unused_loopback_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Runs `command` to its end and returns its output; fails the test, with
/// the command's standard error, if it did not succeed.
pub fn succeeds(command: &mut Command) -> std::process::Output {
    let output = command.output().expect("the command starts");
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `command` to its end, which must fail with exactly one line on
/// standard error containing `needle`; returns that line.
pub fn fails_with_one_line(command: &mut Command, needle: &str) -> String {
    let output = command.output().expect("the command starts");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{command:?} succeeded: {stderr}");
    assert!(
        stderr.lines().count() == 1 && stderr.contains(needle),
        "{command:?}: expected one line with {needle:?}, got: {stderr}"
    );
    stderr
}

/// The number before `word` on the dashboard summary's second line ("N
/// answered, M failed, K in flight at the end, …"); for "flight", the
/// number two words back.
pub fn count_in_summary(summary: &str, word: &str) -> Option<u64> {
    let line = summary.lines().nth(1)?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| w.trim_end_matches(',') == word)?;
    let back = if word == "flight" { 2 } else { 1 };
    words.get(at.checked_sub(back)?)?.parse().ok()
}

/// Builds tests/fixtures/NAME.c with the system C compiler (the one Rust
/// links with) into `dir`.
pub fn build_fixture(name: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.c"));
    let binary = dir.join(name);
    let output = Command::new("cc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("a C compiler (cc) is needed to build the test fixture");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}

/// Counts a tracepoint's hits, as `perf stat` does: on every CPU for every
/// task, or for one thread.
pub struct TracepointCount {
    events: Vec<std::fs::File>,
}

impl TracepointCount {
    /// One counting perf event per CPU, every task (`perf stat -a`).
    pub fn open(group: &str, name: &str) -> TracepointCount {
        // Every CPU online, whatever CPUs this test may run on.
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
        let cpus = online.trim().split(',').flat_map(|range| {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            first.parse::<i32>().unwrap()..=last.parse::<i32>().unwrap()
        });
        let events = cpus.map(|cpu| counter(group, name, -1, cpu)).collect();
        TracepointCount { events }
    }

    /// One counting perf event following thread `tid` on any CPU.
    pub fn of_thread(group: &str, name: &str, tid: i32) -> TracepointCount {
        TracepointCount {
            events: vec![counter(group, name, tid, -1)],
        }
    }

    pub fn total(&self) -> u64 {
        self.events
            .iter()
            .map(|mut file| {
                let mut count = [0u8; 8];
                file.read_exact(&mut count).unwrap();
                u64::from_ne_bytes(count)
            })
            .sum()
    }
}

/// A counting perf event on tracepoint `group:name` for thread `tid` (-1:
/// every task) on `cpu` (-1: any), enabled at once.
fn counter(group: &str, name: &str, tid: i32, cpu: i32) -> std::fs::File {
    let id: u64 = std::fs::read_to_string(format!("/sys/kernel/tracing/events/{group}/{name}/id"))
        .unwrap_or_else(|e| panic!("tracepoint {group}:{name} (needs root and tracefs): {e}"))
        .trim()
        .parse()
        .unwrap();
    // struct perf_event_attr, its first 64 bytes: type PERF_TYPE_TRACEPOINT
    // (2) and size, then config; counting, enabled at once.
    let mut attr = [0u64; 8];
    attr[0] = 2 | (64 << 32);
    attr[1] = id;
    // SAFETY: perf_event_open reads our 64-byte attribute.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), tid, cpu, -1, 8) };
    assert!(
        fd >= 0,
        "perf_event_open {group}:{name} for {tid} on CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the descriptor was just returned to us alone.
    unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) }
}
