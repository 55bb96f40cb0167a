//! The live dashboard: our server, spawned under our tracer on its own
//! thread, loaded by our load generator on another, and this thread turning
//! both feeds into actions for the model and frames for the terminal.

use std::io::{self, IsTerminal};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::serialization::V2DeflateSerializer;
use tracebench_loadgen::hlog;
use tracebench_loadgen::{LoadConfig, StopAfter, Target};
use tracebench_tracer::file::{Header, TraceWriter};
use tracebench_tracer::sink::{ChannelSource, Tee};
use tracebench_tracer::{Options, ProgramStdio, Selection, Session};

use crate::model::{Action, App, MAX_LOAD_CONNECTIONS};
use crate::source::Source;

/// What the dashboard traces and loads.
#[derive(Debug, Clone)]
pub enum Traced {
    /// `tracebench serve` with these settings, started by the dashboard.
    Serve {
        /// `--mode` of the server.
        mode: String,
        /// `--workers` of the server.
        workers: usize,
        /// `--delay` of the server.
        delay: Duration,
    },
    /// Any program, started under the tracer; the load goes to `url`, if
    /// any (a lab, say, is only watched).
    Command {
        /// The program (searched in PATH).
        program: std::ffi::OsString,
        /// Its arguments.
        args: Vec<std::ffi::OsString>,
        /// Where it serves HTTP.
        url: Option<String>,
    },
    /// A process already running: every thread is seized, and detached
    /// again at the end; the load goes to `url`, if any.
    Attach {
        /// Its pid.
        pid: i32,
        /// Where it serves HTTP.
        url: Option<String>,
    },
}

/// What the dashboard runs.
#[derive(Debug, Clone)]
pub struct DashConfig {
    /// The tracebench binary, whose `serve` is traced.
    pub exe: PathBuf,
    /// The server to trace.
    pub traced: Traced,
    /// The server modes `m` cycles through, in order.
    pub modes: Vec<String>,
    /// The syscalls to trace.
    pub selection: Selection,
    /// Load connections (the most in flight, with `rate`).
    pub connections: usize,
    /// Open-loop rate, if any.
    pub rate: Option<f64>,
    /// Without a terminal, run this long and print a summary.
    pub headless_for: Duration,
    /// Record the run into this directory: `trace.tbt` (every traced
    /// event) and `latency.hlog` (the load generator's interval log).
    pub record: Option<PathBuf>,
    /// How many times `m` restarted the dashboard before this run (0 for
    /// the first).
    pub restarts: usize,
    /// Ask idle CPUs to poll while tracing ([`Options::poll_idle`]).
    pub poll_idle: bool,
}

impl DashConfig {
    /// The line the header shows: what runs, and the load model.
    pub fn title(&self) -> String {
        let server = match &self.traced {
            Traced::Serve {
                mode,
                workers,
                delay,
            } => format!(
                "server {mode} ({workers} workers, {} ms per request)",
                delay.as_millis()
            ),
            Traced::Command { program, url, .. } => match url {
                Some(url) => format!("{} at {url}", program.to_string_lossy()),
                None => program.to_string_lossy().into_owned(),
            },
            Traced::Attach { pid, url } => match url {
                Some(url) => format!("pid {pid} at {url}"),
                None => format!("pid {pid}"),
            },
        };
        let load = match (self.rate, self.load_url()) {
            (_, None) => "none (no --url)".to_owned(),
            (Some(rate), _) => format!("open loop {rate} req/s"),
            (None, _) => "closed loop".to_owned(),
        };
        format!("{server}   load: {load}")
    }

    /// Where the load goes, if anywhere (our server: wherever it listens).
    fn load_url(&self) -> Option<&str> {
        match &self.traced {
            Traced::Serve { .. } => Some(""),
            Traced::Command { url, .. } | Traced::Attach { url, .. } => url.as_deref(),
        }
    }

    /// The same dashboard on the next server mode, recorded beside the
    /// first run (`<dir>-<n>-<mode>` for the n-th restart, so going round
    /// the modes never overwrites a recording); `None` unless the
    /// dashboard starts the server.
    pub fn next_mode(&self) -> Option<DashConfig> {
        let Traced::Serve {
            mode,
            workers,
            delay,
        } = &self.traced
        else {
            return None;
        };
        let position = self.modes.iter().position(|m| m == mode)?;
        let next = self.modes[(position + 1) % self.modes.len()].clone();
        let mut config = self.clone();
        config.restarts = self.restarts + 1;
        config.record = self.record.as_ref().map(|dir| {
            let name = dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            // The first run's name: this one's without the suffix added
            // for it (exactly that suffix, never a user's own).
            let suffix = format!("-{}-{mode}", self.restarts);
            let first = match self.restarts {
                0 => name.as_str(),
                _ => name.strip_suffix(&suffix).unwrap_or(&name),
            };
            dir.with_file_name(format!("{first}-{}-{next}", config.restarts))
        });
        config.traced = Traced::Serve {
            mode: next,
            workers: *workers,
            delay: *delay,
        };
        Some(config)
    }
}

/// Why the dashboard could not run.
#[derive(Debug)]
pub struct DashError(pub String);

impl std::fmt::Display for DashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DashError {}

fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// What a dashboard run ended with.
pub struct Finished {
    /// The last model shown, for a summary.
    pub app: App,
    /// Every recording made (one per server mode, with `m`).
    pub recordings: Vec<PathBuf>,
    /// How the traced program ended, if it ended by itself (not stopped by
    /// us at the end, nor an attached one that runs on).
    pub program_exit: Option<tracebench_tracer::ExitStatus>,
    /// The SIGINT, SIGTERM or SIGHUP that ended the dashboard, if any.
    pub signal: Option<i32>,
}

/// Runs the dashboard until the user quits (or, without a terminal, for
/// `headless_for`), then stops the load and the traced server (an attached
/// one is detached and runs on). `m` restarts it on the next server mode.
pub fn run(config: &DashConfig) -> Result<Finished, DashError> {
    let mut config = config.clone();
    let mut recordings = Vec::new();
    // The load's concurrency as the user left it before a restart.
    let mut next_connections = None;
    let mut terminal = if io::stdout().is_terminal() {
        Some(
            crate::source::init_terminal()
                .map_err(|e| DashError(format!("cannot set up the terminal: {e}")))?,
        )
    } else {
        None
    };
    let result = loop {
        if let Some(dir) = &config.record {
            if let Err(e) = prepare_recording(dir, &config) {
                break Err(e);
            }
            recordings.push(dir.clone());
        }
        let mut running = match Running::start(&config) {
            Ok(running) => running,
            Err(e) => {
                // Nothing ran, so nothing was recorded: leave no run
                // directory behind (prepare_recording found it empty).
                if let Some(dir) = &config.record {
                    let _ = std::fs::remove_dir_all(dir);
                    recordings.pop();
                }
                break Err(e);
            }
        };
        let mut app = App::new(config.title());
        app.captures_output = running.output.is_some();
        if config.load_url().is_some() {
            app.connections = next_connections.unwrap_or(config.connections);
        }
        let shown = match terminal.as_mut() {
            Some(terminal) => {
                let mut live = LiveSource {
                    running: &mut running,
                    app: &mut app,
                    config: &config,
                };
                crate::source::drive(terminal, &mut live)
                    .map_err(|e| DashError(format!("terminal: {e}")))
            }
            None => {
                // Said once the run has started, so that a run that cannot
                // start says only why.
                if recordings.len() <= 1 && config.restarts == 0 {
                    eprintln!(
                        "tracebench: standard output is not a terminal, so no dashboard: running {:?} and printing a summary",
                        config.headless_for
                    );
                }
                let until = Instant::now() + config.headless_for;
                while Instant::now() < until
                    && !running.traced_program_ended()
                    && tracebench_tracer::signalled().is_none()
                {
                    running.feed(&mut app);
                    std::thread::sleep(Duration::from_millis(100));
                }
                // The last CPU sample, while the threads still live.
                running.feed(&mut app);
                Ok(())
            }
        };
        let program_exit = running.stop(&mut app, config.record.as_deref());
        if let Err(e) = shown {
            break Err(e);
        }
        match app.restart.then(|| config.next_mode()).flatten() {
            Some(next) => {
                // What the user set carries over to the next mode.
                next_connections = (app.connections > 0).then_some(app.connections);
                config = next;
            }
            None => break Ok((app, program_exit)),
        }
    };
    if terminal.is_some() {
        crate::source::restore_terminal();
    }
    result.map(|(app, program_exit)| Finished {
        app,
        recordings,
        program_exit,
        signal: tracebench_tracer::signalled(),
    })
}

/// Creates a recording's directory and its settings.json. A directory that
/// already holds files is refused: a recording is never written over.
fn prepare_recording(dir: &std::path::Path, config: &DashConfig) -> Result<(), DashError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(DashError(format!(
                    "{} already holds files, and a recording is never written over: choose another directory",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(DashError(format!("cannot read {}: {e}", dir.display()))),
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| DashError(format!("cannot create {}: {e}", dir.display())))?;
    let traced = match &config.traced {
        Traced::Serve {
            mode,
            workers,
            delay,
        } => serde_json::json!({
            "mode": mode, "workers": workers, "delay_ms": delay.as_millis() as u64,
        }),
        Traced::Command { program, args, url } => serde_json::json!({
            "command": command_line(program, args),
            "url": url,
        }),
        Traced::Attach { pid, url } => serde_json::json!({ "pid": pid, "url": url }),
    };
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let settings = serde_json::json!({
        "traced": traced,
        "title": config.title(),
        "connections": config.connections,
        "rate": config.rate,
        "started_unix_s": started,
        "files": {
            "trace": "trace.tbt", "latency": "latency.hlog", "thread names": "threads.json",
            "program output": "output.log",
        },
    });
    let path = dir.join("settings.json");
    std::fs::write(&path, format!("{settings:#}\n"))
        .map_err(|e| DashError(format!("cannot write {}: {e}", path.display())))
}

/// A command as text, for the recording's settings and trace header.
fn command_line(program: &std::ffi::OsStr, args: &[std::ffi::OsString]) -> Vec<String> {
    std::iter::once(program)
        .chain(args.iter().map(|a| a.as_os_str()))
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// A traced server and the load against it, running on their threads.
struct Running {
    /// Returns how the traced program ended while traced, if it did.
    tracer: Option<std::thread::JoinHandle<Option<tracebench_tracer::ExitStatus>>>,
    loader: Option<std::thread::JoinHandle<()>>,
    cancel: Arc<AtomicBool>,
    limit: Arc<AtomicUsize>,
    source: ChannelSource,
    snapshots: mpsc::Receiver<tracebench_loadgen::Snapshot>,
    cpu: CpuSampler,
    /// Lines of the spawned program's output (none for an attached one).
    output: Option<mpsc::Receiver<String>>,
}

impl Running {
    /// Starts the tracer (which spawns or attaches), waits for the server
    /// to listen, and starts the load.
    fn start(config: &DashConfig) -> Result<Running, DashError> {
        let (target, url) = match &config.traced {
            Traced::Serve {
                mode,
                workers,
                delay,
            } => {
                let addr = free_port()
                    .map_err(|e| DashError(format!("no free port on 127.0.0.1: {e}")))?;
                let args: Vec<std::ffi::OsString> = vec![
                    "serve".into(),
                    "--mode".into(),
                    mode.into(),
                    "--workers".into(),
                    workers.to_string().into(),
                    "--delay".into(),
                    format!("{}ms", delay.as_millis()).into(),
                    "--addr".into(),
                    addr.to_string().into(),
                ];
                let program = config.exe.clone().into_os_string();
                (
                    tracebench_tracer::Target::Spawn { program, args },
                    Some(format!("http://{addr}/")),
                )
            }
            Traced::Command { program, args, url } => (
                tracebench_tracer::Target::Spawn {
                    program: program.clone(),
                    args: args.clone(),
                },
                url.clone(),
            ),
            Traced::Attach { pid, url } => {
                (tracebench_tracer::Target::Attach { pid: *pid }, url.clone())
            }
        };
        let load_target = url
            .map(|url| Target::parse(&url).map_err(|e| DashError(format!("--url: {e}"))))
            .transpose()?;
        let trace_file = match &config.record {
            Some(dir) => {
                let command = match &target {
                    tracebench_tracer::Target::Spawn { program, args } => {
                        command_line(program, args)
                    }
                    tracebench_tracer::Target::Attach { pid } => vec![format!("-p {pid}")],
                };
                let path = dir.join("trace.tbt");
                Some(
                    TraceWriter::create(&path, &Header::now(command))
                        .map_err(|e| DashError(format!("cannot create {}: {e}", path.display())))?,
                )
            }
            None => None,
        };
        let (stdio, output) = match &target {
            tracebench_tracer::Target::Spawn { .. } => {
                let log = config.record.as_ref().map(|dir| dir.join("output.log"));
                let (write_end, lines) = capture_output(log.as_deref())?;
                (ProgramStdio::Capture(Arc::new(write_end)), Some(lines))
            }
            tracebench_tracer::Target::Attach { .. } => (ProgramStdio::Inherit, None),
        };
        let (sink, source) = tracebench_tracer::sink::channel(1 << 16);
        let (started_tx, started_rx) = mpsc::channel::<Result<(), String>>();
        let selection = config.selection.clone();
        let poll_idle = config.poll_idle;
        let tracer = std::thread::Builder::new()
            .name("tracer".into())
            .spawn(move || {
                // The tracer thread owns every ptrace call. A signal is
                // only noted: the dashboard stops the load before the
                // trace, as when the user quits.
                let _ = tracebench_tracer::notice_signals();
                let options = Options {
                    selection,
                    stdio,
                    poll_idle,
                    ..Options::default()
                };
                match Session::start(&target, &options) {
                    Ok(session) => {
                        let _ = started_tx.send(Ok(()));
                        let mut sink = sink;
                        // The file gets every event; the view may miss some.
                        let outcome = match trace_file {
                            Some(mut file) => {
                                let outcome = session.run(&mut Tee(vec![&mut sink, &mut file]));
                                if let Err(e) = file.finish() {
                                    eprintln!(
                                        "tracebench: the recording's trace file is incomplete: {e}"
                                    );
                                }
                                outcome
                            }
                            None => session.run(&mut sink),
                        };
                        outcome.ok().and_then(|o| o.exit)
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e.to_string()));
                        None
                    }
                }
            })
            .map_err(|e| DashError(format!("cannot start the tracer thread: {e}")))?;
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = tracer.join();
                return Err(DashError(format!("cannot trace the server: {e}")));
            }
            Err(_) => return Err(DashError("the tracer thread died".into())),
        }
        let limit = Arc::new(AtomicUsize::new(config.connections));
        let cancel = Arc::new(AtomicBool::new(false));
        let (snapshots_tx, snapshots) = mpsc::channel();
        let Some(load_target) = load_target else {
            return Ok(Running {
                tracer: Some(tracer),
                loader: None,
                cancel,
                limit,
                source,
                snapshots,
                cpu: CpuSampler::default(),
                output,
            });
        };
        let addr = load_target.addrs[0];
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline || tracer.is_finished() {
                let exited = tracer.is_finished();
                tracebench_tracer::request_stop();
                let _ = tracer.join();
                // The program's own last words say why, far better than we can.
                let said = output
                    .as_ref()
                    .and_then(last_line)
                    .map_or_else(String::new, |line| {
                        format!(": {}", crate::model::terminal_line(&line))
                    });
                return Err(DashError(if exited {
                    format!("the server exited before listening on {addr}{said}")
                } else {
                    format!("the server did not listen on {addr} within 10 s{said}")
                }));
            }
            std::thread::sleep(Duration::from_millis(20));
        }

        let mut load = LoadConfig::new(load_target);
        // Room for `]` to turn the concurrency up; the limit says how many
        // of these connections carry requests.
        load.connections = config.connections.max(MAX_LOAD_CONNECTIONS);
        load.live_limit = Some(Arc::clone(&limit));
        load.rate = config.rate;
        load.stop = StopAfter::Duration(Duration::from_secs(24 * 3600));
        let mut hlog_file = match &config.record {
            Some(dir) => {
                let path = dir.join("latency.hlog");
                Some(
                    std::fs::File::create(&path)
                        .map_err(|e| DashError(format!("cannot create {}: {e}", path.display())))?,
                )
            }
            None => None,
        };
        let loader = {
            let cancel = Arc::clone(&cancel);
            std::thread::Builder::new()
                .name("load".into())
                .spawn(move || {
                    let mut serializer = V2DeflateSerializer::new();
                    let mut log = hlog_file.as_mut().and_then(|file| {
                        hlog::begin(
                            file,
                            &mut serializer,
                            "tracebench dash; values in nanoseconds; 100 ms intervals",
                        )
                        .ok()
                    });
                    let _ = tracebench_loadgen::run_observed(&load, cancel, |s| {
                        // Every 100 ms interval, empty ones too: a replay
                        // redraws the throughput and the latency as they
                        // were, not a second at a time.
                        if let Some(log) = log.as_mut() {
                            let _ = log.write_histogram(&s.latency, s.start, s.duration, None);
                        }
                        let _ = snapshots_tx.send(s.clone());
                    });
                })
                .map_err(|e| DashError(format!("cannot start the load thread: {e}")))?
        };
        Ok(Running {
            tracer: Some(tracer),
            loader: Some(loader),
            cancel,
            limit,
            source,
            snapshots,
            cpu: CpuSampler::default(),
            output,
        })
    }

    /// Whether the traced program is gone (the tracer has returned).
    fn traced_program_ended(&self) -> bool {
        self.tracer.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Hands everything the sources produced since the last call to the
    /// model, and the model's load concurrency to the load generator.
    fn feed(&mut self, app: &mut App) {
        if app.connections > 0 {
            self.limit.store(app.connections, Ordering::Relaxed);
        }
        self.cpu.sample(app);
        for event in self.source.receiver.try_iter().take(100_000) {
            app.update(Action::Trace(event));
        }
        for tid in app.take_unnamed() {
            // The source, not the model, does the I/O.
            let Some(pid) = app.threads.get(&tid).map(|row| row.pid) else {
                continue;
            };
            if let Ok(name) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")) {
                app.update(Action::Named {
                    tid,
                    name: name.trim().to_owned(),
                });
            }
        }
        for snapshot in self.snapshots.try_iter() {
            app.update(Action::Load(snapshot));
        }
        if let Some(output) = &self.output {
            for line in output.try_iter() {
                app.update(Action::Output(line));
            }
        }
        // The trace's clock is CLOCK_MONOTONIC: an idle program's states
        // age, and its timeline moves, without events.
        app.update(Action::Tick(tracebench_tracer::monotonic_ns()));
        app.update(Action::Dropped(self.source.dropped.load(Ordering::Relaxed)));
    }

    /// Stops the load, then the trace (a spawned server is killed, an
    /// attached one detached), and feeds the model what came last, so the
    /// summary matches the recording. Returns how the traced program ended
    /// if it ended by itself, before we stopped it.
    fn stop(
        mut self,
        app: &mut App,
        record: Option<&std::path::Path>,
    ) -> Option<tracebench_tracer::ExitStatus> {
        let ended_by_itself = self.traced_program_ended();
        self.cancel.store(true, Ordering::SeqCst);
        if let Some(loader) = self.loader.take() {
            let _ = loader.join();
        }
        tracebench_tracer::request_stop();
        let exit = self
            .tracer
            .take()
            .and_then(|tracer| tracer.join().ok().flatten());
        self.feed(app);
        if let Some(dir) = record {
            // Names come from /proc while the threads live; keep them for
            // a replay.
            let names: std::collections::BTreeMap<String, &str> = app
                .threads
                .iter()
                .map(|(tid, row)| (tid.to_string(), row.name.as_str()))
                .collect();
            let _ = std::fs::write(
                dir.join("threads.json"),
                serde_json::to_string_pretty(&names).unwrap_or_default(),
            );
        }
        exit.filter(|_| ended_by_itself)
    }
}

/// The last non-blank line a program wrote, waiting briefly for the reader
/// to reach the end of what it wrote.
fn last_line(lines: &mpsc::Receiver<String>) -> Option<String> {
    let mut last = None;
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if !line.trim().is_empty() => last = Some(line),
            Ok(_) => {}
            // The end of the output, or no more time to wait for it.
            Err(_) => return last,
        }
    }
}

/// Lines the view may fall behind by before the reader drops some (the
/// log keeps every one).
const OUTPUT_BACKLOG: usize = 1024;
/// The most bytes of output taken as one line.
const OUTPUT_PIECE: u64 = 64 * 1024;

/// A pipe for a spawned program's standard output and error: its write
/// end (for [`ProgramStdio::Capture`]) and the lines read from the other
/// end by a thread of ours, each also appended to `log` if given. The
/// program is never slowed by the view: lines the view has not taken when
/// [`OUTPUT_BACKLOG`] wait are dropped from it, not from the log. The
/// thread ends at end-of-file, once the program and all its children have
/// closed the pipe.
fn capture_output(
    log: Option<&std::path::Path>,
) -> Result<(std::os::fd::OwnedFd, mpsc::Receiver<String>), DashError> {
    use std::io::{BufRead, Read, Write};
    let (read_end, write_end) = std::io::pipe()
        .map_err(|e| DashError(format!("cannot make a pipe for the program's output: {e}")))?;
    let mut log = match log {
        Some(path) => Some(io::BufWriter::new(std::fs::File::create(path).map_err(
            |e| DashError(format!("cannot create {}: {e}", path.display())),
        )?)),
        None => None,
    };
    let (lines_tx, lines) = mpsc::sync_channel(OUTPUT_BACKLOG);
    std::thread::Builder::new()
        .name("program output".into())
        .spawn(move || {
            let mut reader = io::BufReader::new(read_end);
            let mut line = Vec::new();
            loop {
                line.clear();
                // A line without an end is taken in pieces.
                match (&mut reader)
                    .take(OUTPUT_PIECE)
                    .read_until(b'\n', &mut line)
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if let Some(log) = log.as_mut() {
                    let _ = log.write_all(&line).and_then(|()| log.flush());
                }
                let _ = lines_tx.try_send(String::from_utf8_lossy(&line).into_owned());
            }
        })
        .map_err(|e| DashError(format!("cannot start the output reader: {e}")))?;
    Ok((write_end.into(), lines))
}

/// CPU time of threads, sampled from /proc about once a second.
#[derive(Default)]
struct CpuSampler {
    last: Option<Instant>,
    ticks: std::collections::HashMap<i32, u64>,
}

impl CpuSampler {
    /// user + system ticks of a thread (fields 14 and 15 of its stat).
    fn ticks_of(pid: i32, tid: i32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
        let fields: Vec<&str> = stat
            .get(stat.rfind(')')? + 2..)?
            .split_whitespace()
            .collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    }

    fn sample(&mut self, app: &mut App) {
        let now = Instant::now();
        let elapsed = match self.last {
            Some(last) if now - last < Duration::from_secs(1) => return,
            Some(last) => Some(now - last),
            None => None,
        };
        self.last = Some(now);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let threads: Vec<(i32, i32)> = app
            .threads
            .iter()
            .map(|(tid, row)| (*tid, row.pid))
            .collect();
        for (tid, pid) in threads {
            let Some(ticks) = Self::ticks_of(pid, tid) else {
                continue;
            };
            if let (Some(elapsed), Some(before)) = (elapsed, self.ticks.get(&tid)) {
                let percent =
                    (ticks.saturating_sub(*before)) as f64 / hz / elapsed.as_secs_f64() * 100.0;
                app.update(Action::Cpu { tid, percent });
            }
            self.ticks.insert(tid, ticks);
        }
    }
}

/// Writes the latency histogram so far as percentile CSV and .hgrm (into
/// the recording's directory, or the current one), and says where.
pub fn export(app: &App, record: Option<&std::path::Path>) -> String {
    let dir = record.unwrap_or(std::path::Path::new("."));
    let stamp = (app.elapsed_s * 10.0) as u64;
    let csv = dir.join(format!("latency-at-{}.{}s.csv", stamp / 10, stamp % 10));
    let hgrm = csv.with_extension("hgrm");
    // What the view shows: every answer, or those of the marked range.
    let latency = app.shown_latency();
    let written = std::fs::File::create(&csv)
        .and_then(|f| {
            tracebench_loadgen::export::write_percentile_csv(&latency, io::BufWriter::new(f))
                .map(drop)
        })
        .and_then(|()| std::fs::File::create(&hgrm))
        .and_then(|f| {
            tracebench_loadgen::export::write_hgrm(&latency, io::BufWriter::new(f)).map(drop)
        });
    match written {
        Ok(()) => format!(
            "exported {} requests to {} and .hgrm",
            latency.len(),
            csv.display()
        ),
        Err(e) => format!("export failed: {e}"),
    }
}

/// The live run as the dashboard's [`Source`].
struct LiveSource<'a> {
    running: &'a mut Running,
    app: &'a mut App,
    config: &'a DashConfig,
}

impl Source for LiveSource<'_> {
    fn app(&mut self) -> &mut App {
        self.app
    }

    fn pump(&mut self) {
        self.running.feed(self.app);
    }

    fn on_key(&mut self, _key: crossterm::event::KeyCode) -> bool {
        false
    }

    fn export_dir(&self) -> Option<&std::path::Path> {
        self.config.record.as_deref()
    }

    fn refuses(&self, action: &Action) -> Option<String> {
        match action {
            Action::NextMode if self.config.next_mode().is_none() => {
                Some("m restarts tracebench's own server only".into())
            }
            Action::MoreLoad | Action::LessLoad if self.app.connections == 0 => {
                Some("no load to change: give --url".into())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_go_round_the_modes_and_never_reuse_a_recording() {
        let mut config = DashConfig {
            exe: "tracebench".into(),
            traced: Traced::Serve {
                mode: "pool-futex".into(),
                workers: 5,
                delay: Duration::from_millis(50),
            },
            modes: ["sync", "pool-futex", "pool-std"]
                .map(String::from)
                .to_vec(),
            selection: Selection::default(),
            connections: 10,
            rate: None,
            headless_for: Duration::from_secs(1),
            record: Some("runs/T-pool-std".into()),
            restarts: 0,
            poll_idle: true,
        };
        let mut seen = vec![config.record.clone().unwrap()];
        for _ in 0..7 {
            config = config.next_mode().unwrap();
            seen.push(config.record.clone().unwrap());
        }
        let names: Vec<String> = seen.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "runs/T-pool-std",
                "runs/T-pool-std-1-pool-std",
                "runs/T-pool-std-2-sync",
                "runs/T-pool-std-3-pool-futex",
                "runs/T-pool-std-4-pool-std",
                "runs/T-pool-std-5-sync",
                "runs/T-pool-std-6-pool-futex",
                "runs/T-pool-std-7-pool-std",
            ],
            "a user's own name ending like a mode is kept whole"
        );
        assert!(matches!(&config.traced, Traced::Serve { mode, .. } if mode == "pool-std"));
    }
}
