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
use tracebench_files::OutputDir;
use tracebench_loadgen::{LoadConfig, StopAfter, Target};
use tracebench_loadgen::{hlog, outcomes};
use tracebench_trace::CaptureEnd;
use tracebench_trace::format::{Header, TraceWriter};
use tracebench_trace::signals::Noticed;
use tracebench_trace::sink::{ChannelSource, Tee};
use tracebench_trace::{CaptureStarter, ProgramStdio, Selection, StopHandle, Tracee};

use crate::error::DashError;
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
    /// At the end, how long a program the dashboard started has between
    /// SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Record the run into this directory: `trace.tbt` (every traced
    /// event) and `latency.hlog` (the load generator's interval log).
    pub record: Option<PathBuf>,
    /// How many times `m` restarted the dashboard before this run (0 for
    /// the first).
    pub restarts: usize,
    /// How to start a capture: the backend the binary chose.
    pub capture: CaptureStarter,
    /// https: trust only the certificates of this PEM file (`--cacert`).
    pub ca_file: Option<PathBuf>,
    /// https: take any certificate (`-k`, `--insecure`).
    pub insecure: bool,
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
            let wanted = dir.with_file_name(format!("{first}-{}-{next}", config.restarts));
            // Taken already (an earlier dashboard's): the next free name,
            // as for the first run's, rather than the end of the dashboard.
            (1..)
                .map(|n| match n {
                    1 => wanted.clone(),
                    n => PathBuf::from(format!("{}-{n}", wanted.display())),
                })
                .find(|candidate| std::fs::symlink_metadata(candidate).is_err())
                .unwrap_or(wanted)
        });
        config.traced = Traced::Serve {
            mode: next,
            workers: *workers,
            delay: *delay,
        };
        Some(config)
    }
}

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
    pub program_exit: Option<tracebench_trace::ExitStatus>,
    /// The SIGINT, SIGTERM or SIGHUP that ended the dashboard, if any.
    pub signal: Option<i32>,
    /// Files of the recordings that could not be written whole.
    pub write_errors: Vec<String>,
    /// What the captures could not see (events lost, probes skipped,
    /// caveats of the backend), one sentence each.
    pub capture_gaps: Vec<String>,
}

/// Runs the dashboard until the user quits (or, without a terminal, for
/// `headless_for`), then stops the load and the traced server (an attached
/// one is detached and runs on). `m` restarts it on the next server mode.
pub fn run(config: &DashConfig) -> Result<Finished, DashError> {
    // SIGTERM, SIGHUP or a SIGINT from outside stop the dashboard as `q`
    // does: the load first, the traced program after.
    let (_watch, noticed) = tracebench_trace::signals::notice().map_err(DashError::Signals)?;
    let mut config = config.clone();
    let mut recordings = Vec::new();
    let mut capture_gaps = Vec::new();
    // The load's concurrency as the user left it before a restart.
    let mut next_connections = None;
    let mut terminal = if io::stdout().is_terminal() {
        Some(crate::terminal::init().map_err(DashError::TerminalSetup)?)
    } else {
        None
    };
    let write_errors = WriteErrors::default();
    let result = loop {
        let mut running = match start_recorded(&config, &mut recordings, &write_errors) {
            Ok(running) => running,
            Err(e) => break Err(e),
        };
        let mut app = App::new(config.title());
        app.captures_output = running.output.is_some();
        app.caveats.clone_from(&running.caveats);
        if config.load_url().is_some() {
            app.view_state.connections = next_connections.unwrap_or(config.connections);
        }
        let shown = match terminal.as_mut() {
            Some(terminal) => {
                let mut live = LiveSource {
                    running: &mut running,
                    app: &mut app,
                    config: &config,
                };
                crate::terminal::drive(terminal, &mut live, &noticed).map_err(DashError::Terminal)
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
                run_headless(&mut running, &mut app, config.headless_for, &noticed);
                Ok(())
            }
        };
        let end = running.stop(&mut app, &config, terminal.as_mut());
        let program_exit = end.as_ref().and_then(|end| end.exit);
        capture_gaps.extend(end.iter().flat_map(CaptureEnd::gaps));
        if let Err(e) = shown {
            break Err(e);
        }
        match app.restart.then(|| config.next_mode()).flatten() {
            Some(next) => {
                // What the user set carries over to the next mode.
                next_connections =
                    (app.view_state.connections > 0).then_some(app.view_state.connections);
                config = next;
            }
            None => break Ok((app, program_exit)),
        }
    };
    if terminal.is_some() {
        crate::terminal::restore();
    }
    result.map(|(app, program_exit)| Finished {
        app,
        recordings,
        program_exit,
        signal: noticed.first(),
        write_errors: write_errors.taken(),
        capture_gaps,
    })
}

/// Prepares the recording of `config`'s run, if it is recorded (and
/// adds it to `recordings`), and starts the run. A run that cannot start
/// recorded nothing, so it leaves no run directory behind.
fn start_recorded(
    config: &DashConfig,
    recordings: &mut Vec<PathBuf>,
    write_errors: &WriteErrors,
) -> Result<Running, DashError> {
    let recording = match &config.record {
        Some(dir) => {
            let recording = prepare_recording(dir, config)?;
            recordings.push(dir.clone());
            Some(recording)
        }
        None => None,
    };
    Running::start(config, recording, write_errors).inspect_err(|_| {
        // prepare_recording found the directory empty.
        if let Some(dir) = &config.record {
            let _ = std::fs::remove_dir_all(dir);
            recordings.pop();
        }
    })
}

/// Without a terminal: feeds the model for `duration`, or until the
/// traced program ends or a signal comes, then once more.
fn run_headless(running: &mut Running, app: &mut App, duration: Duration, noticed: &Noticed) {
    let until = Instant::now() + duration;
    while Instant::now() < until && !running.traced_program_ended() && noticed.first().is_none() {
        running.feed(app);
        std::thread::sleep(Duration::from_millis(100));
    }
    // The last CPU sample, while the threads still live.
    running.feed(app);
}

/// The first write error of each file of a recording, from whichever
/// thread writes it: the run then says which files are incomplete and
/// ends non-zero, and never lists them as recorded whole.
#[derive(Debug, Clone, Default)]
pub struct WriteErrors(Arc<std::sync::Mutex<Vec<String>>>);

impl WriteErrors {
    /// Records that `name` of the recording could not be written (once
    /// per file).
    fn failed(&self, path: &std::path::Path, error: &dyn std::fmt::Display) {
        let name = path.display().to_string();
        let mut errors = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !errors.iter().any(|e| e.starts_with(&name)) {
            errors.push(format!("{name}: {error}"));
        }
    }

    /// Every error so far, a line each ("trace.tbt: No space left…").
    pub fn taken(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A recording's files, every one created at the start relative to a
/// handle on its directory ([`OutputDir`]: private, never through a
/// symlink, never over an existing name), and handed to the part of the
/// run that writes it.
struct Recording {
    dir: OutputDir,
    trace: Option<std::fs::File>,
    latency: Option<std::fs::File>,
    outcomes: Option<std::fs::File>,
    output: Option<std::fs::File>,
    threads: Option<std::fs::File>,
}

/// Creates a recording's directory (or takes an empty one of ours),
/// writes its settings.json and creates its other files. A directory that
/// already holds files is refused: a recording is never written over.
fn prepare_recording(dir: &std::path::Path, config: &DashConfig) -> Result<Recording, DashError> {
    let dir = OutputDir::create(dir).map_err(DashError::Files)?;
    if !dir.is_empty().map_err(DashError::Files)? {
        return Err(DashError::RecordingNotEmpty(dir.path().to_path_buf()));
    }
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
            "trace": "trace.tbt", "latency": "latency.hlog", "load outcomes": "load.csv", "thread names": "threads.json",
            "program output": "output.log",
        },
    });
    dir.write_file("settings.json", format!("{settings:#}\n").as_bytes())
        .map_err(DashError::Files)?;
    let create = |name: &str| dir.create_file(name).map(Some).map_err(DashError::Files);
    Ok(Recording {
        trace: create("trace.tbt")?,
        latency: create("latency.hlog")?,
        outcomes: create("load.csv")?,
        output: create("output.log")?,
        threads: create("threads.json")?,
        dir,
    })
}

/// A command as text, for the recording's settings and trace header.
fn command_line(program: &std::ffi::OsStr, args: &[std::ffi::OsString]) -> Vec<String> {
    std::iter::once(program)
        .chain(args.iter().map(|a| a.as_os_str()))
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// What to trace for `config`, and where it serves HTTP.
fn tracee_of(config: &DashConfig) -> Result<(Tracee, Option<String>), DashError> {
    Ok(match &config.traced {
        Traced::Serve {
            mode,
            workers,
            delay,
        } => {
            let addr = free_port().map_err(DashError::NoFreePort)?;
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
                Tracee::Spawn { program, args },
                Some(format!("http://{addr}/")),
            )
        }
        Traced::Command { program, args, url } => (
            Tracee::Spawn {
                program: program.clone(),
                args: args.clone(),
            },
            url.clone(),
        ),
        Traced::Attach { pid, url } => (Tracee::Attach { pids: vec![*pid] }, url.clone()),
    })
}

/// The recording's trace file, if the run is recorded.
fn open_trace_file(
    config: &DashConfig,
    tracee: &Tracee,
    recording: &mut Option<Recording>,
) -> Result<Option<TraceWriter<std::io::BufWriter<std::fs::File>>>, DashError> {
    let Some((file, dir)) = recording
        .as_mut()
        .and_then(|r| Some((r.trace.take()?, r.dir.path().to_path_buf())))
    else {
        return Ok(None);
    };
    let command = match tracee {
        Tracee::Spawn { program, args } => command_line(program, args),
        Tracee::Attach { pids } => pids.iter().map(|pid| format!("-p {pid}")).collect(),
    };
    let header = Header::now(command, config.capture.backend);
    TraceWriter::new(std::io::BufWriter::with_capacity(1 << 17, file), &header)
        .map(Some)
        .map_err(|error| DashError::CreateTrace {
            path: dir.join("trace.tbt"),
            error,
        })
}

/// Starts the capture on its own thread (a ptrace capture binds its
/// tracees to the thread that started it); returns the thread, which
/// returns how the traced program ended, and the handle that stops it.
fn start_tracer(
    config: &DashConfig,
    tracee: Tracee,
    stdio: ProgramStdio,
    mut sink: tracebench_trace::sink::ChannelSink,
    trace_file: Option<(
        TraceWriter<std::io::BufWriter<std::fs::File>>,
        PathBuf,
        WriteErrors,
    )>,
) -> Result<(TracerThread, StopHandle, Vec<String>), DashError> {
    let (started_tx, started_rx) = mpsc::channel::<Result<(StopHandle, Vec<String>), String>>();
    let selection = config.selection.clone();
    let starter = config.capture.clone();
    let tracer = std::thread::Builder::new()
        .name("tracer".into())
        .spawn(move || {
            let capture = match (starter.start)(&tracee, stdio, &selection) {
                Ok(capture) => capture,
                Err(e) => {
                    let _ = started_tx.send(Err(e.to_string()));
                    return None;
                }
            };
            let _ = started_tx.send(Ok((capture.stop_handle(), capture.caveats())));
            // The file gets every event; the view may miss some.
            let end = match trace_file {
                Some((mut file, path, errors)) => {
                    let end = capture.run(&mut Tee(vec![&mut sink, &mut file]));
                    if let Err(e) = file.finish() {
                        errors.failed(&path, &e);
                    }
                    end
                }
                None => capture.run(&mut sink),
            };
            end.ok()
        })
        .map_err(|error| DashError::Thread {
            name: "tracer thread",
            error,
        })?;
    match started_rx.recv() {
        Ok(Ok((stop, caveats))) => Ok((tracer, stop, caveats)),
        Ok(Err(e)) => {
            let _ = tracer.join();
            Err(DashError::TracerStart(e))
        }
        Err(_) => Err(DashError::TracerDied),
    }
}

/// The load's two files of a recording, where they are, and where their
/// write errors go.
struct LoadLogs {
    latency: Option<std::fs::File>,
    outcomes: Option<std::fs::File>,
    paths: (PathBuf, PathBuf),
    errors: WriteErrors,
}

/// Starts the load against `target` on its own thread, recording its
/// interval log if the run is recorded.
fn start_load(
    config: &DashConfig,
    target: Target,
    running: &Running,
    logs: LoadLogs,
) -> Result<
    (
        std::thread::JoinHandle<()>,
        mpsc::Receiver<tracebench_loadgen::Snapshot>,
    ),
    DashError,
> {
    let (snapshots_tx, snapshots) = mpsc::channel();
    let mut load = LoadConfig::new(target);
    // Room for `]` to turn the concurrency up; the limit says how many
    // of these connections carry requests.
    load.connections = config.connections.max(MAX_LOAD_CONNECTIONS);
    load.live_limit = Some(Arc::clone(&running.limit));
    load.rate = config.rate;
    load.stop = StopAfter::Duration(Duration::from_secs(24 * 3600));
    load.ca_file.clone_from(&config.ca_file);
    load.insecure = config.insecure;
    let LoadLogs {
        latency: mut hlog_file,
        outcomes: outcomes_file,
        paths: (hlog_path, outcomes_path),
        errors,
    } = logs;
    // What the latency log cannot hold (statuses, errors, in flight), a
    // line per interval, for the replay.
    let mut outcomes_file = outcomes_file.map(io::BufWriter::new);
    if let Some(out) = outcomes_file.as_mut() {
        outcomes::write_header(out).map_err(|error| DashError::CreateRecording {
            path: outcomes_path.clone(),
            error,
        })?;
    }
    let loader = {
        let cancel = Arc::clone(&running.cancel);
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
                use std::io::Write;
                let _ = tracebench_loadgen::run_observed(&load, cancel, |s| {
                    // Every 100 ms interval, empty ones too: a replay
                    // redraws the throughput and the latency as they
                    // were, not a second at a time.
                    if let Some(log) = log.as_mut()
                        && let Err(e) = log.write_histogram(&s.latency, s.start, s.duration, None)
                    {
                        let reason = match e {
                            hdrhistogram::serialization::interval_log::IntervalLogWriterError::IoError(io) => io.to_string(),
                            other => format!("{other:?}"),
                        };
                        errors.failed(&hlog_path, &reason);
                    }
                    if let Some(out) = outcomes_file.as_mut()
                        && let Err(e) = outcomes::write_line(out, s).and_then(|()| out.flush())
                    {
                        errors.failed(&outcomes_path, &e);
                    }
                    let _ = snapshots_tx.send(s.clone());
                });
            })
            .map_err(|error| DashError::Thread {
                name: "load thread",
                error,
            })?
    };
    Ok((loader, snapshots))
}

/// The thread running the capture; it returns how the traced program
/// ended while traced, if it did.
type TracerThread = std::thread::JoinHandle<Option<CaptureEnd>>;

/// A traced server and the load against it, running on their threads.
struct Running {
    /// Returns how the traced program ended while traced, if it did.
    tracer: Option<TracerThread>,
    /// Ends the capture.
    stop: StopHandle,
    /// What the capture will not see (shown in the header).
    caveats: Vec<String>,
    loader: Option<std::thread::JoinHandle<()>>,
    cancel: Arc<AtomicBool>,
    limit: Arc<AtomicUsize>,
    source: ChannelSource,
    snapshots: mpsc::Receiver<tracebench_loadgen::Snapshot>,
    cpu: CpuSampler,
    /// Lines of the spawned program's output (none for an attached one).
    output: Option<mpsc::Receiver<String>>,
    /// The recording's threads.json, written at the end (its path, and
    /// where its write error goes).
    threads_file: Option<(std::fs::File, PathBuf, WriteErrors)>,
}

impl Running {
    /// Starts the tracer (which spawns or attaches), waits for the server
    /// to listen, and starts the load.
    fn start(
        config: &DashConfig,
        mut recording: Option<Recording>,
        write_errors: &WriteErrors,
    ) -> Result<Running, DashError> {
        let path_of = |name: &str| {
            config
                .record
                .as_ref()
                .map_or_else(PathBuf::new, |dir| dir.join(name))
        };
        let (tracee, url) = tracee_of(config)?;
        let load_target = url
            .map(|url| Target::parse(&url).map_err(DashError::Url))
            .transpose()?;
        let trace_file = open_trace_file(config, &tracee, &mut recording)?;
        let (stdio, output) = match &tracee {
            Tracee::Spawn { .. } => {
                let log = recording.as_mut().and_then(|r| r.output.take());
                let log = log.map(|file| (file, path_of("output.log"), write_errors.clone()));
                let (write_end, lines) = capture_output(log)?;
                (ProgramStdio::Capture(Arc::new(write_end)), Some(lines))
            }
            Tracee::Attach { .. } => (ProgramStdio::Inherit, None),
        };
        let (sink, source) = tracebench_trace::sink::channel(1 << 16);
        let trace_file = trace_file.map(|file| (file, path_of("trace.tbt"), write_errors.clone()));
        let (tracer, stop, caveats) = start_tracer(config, tracee, stdio, sink, trace_file)?;
        let mut running = Running {
            tracer: Some(tracer),
            stop,
            caveats,
            loader: None,
            cancel: Arc::new(AtomicBool::new(false)),
            limit: Arc::new(AtomicUsize::new(config.connections)),
            source,
            snapshots: mpsc::channel().1,
            cpu: CpuSampler::default(),
            output,
            threads_file: recording
                .as_mut()
                .and_then(|r| r.threads.take())
                .map(|file| (file, path_of("threads.json"), write_errors.clone())),
        };
        let Some(load_target) = load_target else {
            return Ok(running);
        };
        running.wait_for_listen(load_target.addrs[0])?;
        let logs = recording
            .as_mut()
            .map(|r| (r.latency.take(), r.outcomes.take()))
            .unwrap_or_default();
        let logs = LoadLogs {
            latency: logs.0,
            outcomes: logs.1,
            paths: (path_of("latency.hlog"), path_of("load.csv")),
            errors: write_errors.clone(),
        };
        let (loader, snapshots) = start_load(config, load_target, &running, logs)?;
        running.loader = Some(loader);
        running.snapshots = snapshots;
        Ok(running)
    }

    /// Waits until the server accepts connections at `addr` (10 s at most);
    /// if it never does, stops the trace and says why.
    fn wait_for_listen(&mut self, addr: SocketAddr) -> Result<(), DashError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            let exited = self.traced_program_ended();
            if Instant::now() > deadline || exited {
                self.stop.stop();
                if let Some(tracer) = self.tracer.take() {
                    let _ = tracer.join();
                }
                // The program's own last words say why, far better than we can.
                let said = self
                    .output
                    .as_ref()
                    .and_then(last_line)
                    .map_or_else(String::new, |line| {
                        format!(": {}", crate::model::terminal_line(&line))
                    });
                return Err(if exited {
                    DashError::ExitedBeforeListening { addr, said }
                } else {
                    DashError::DidNotListen { addr, said }
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Whether the traced program is gone (the tracer has returned).
    fn traced_program_ended(&self) -> bool {
        self.tracer.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Hands everything the sources produced since the last call to the
    /// model, and the model's load concurrency to the load generator.
    fn feed(&mut self, app: &mut App) {
        if app.view_state.connections > 0 {
            self.limit
                .store(app.view_state.connections, Ordering::Relaxed);
        }
        self.cpu.sample(app);
        for event in self.source.receiver.try_iter().take(100_000) {
            app.update(Action::Trace(event));
        }
        for tid in app.data.take_unnamed() {
            // The source, not the model, does the I/O.
            let Some(pid) = app.data.threads.get(&tid).map(|row| row.pid) else {
                continue;
            };
            if let Some(stat) = task_stat(pid, tid) {
                app.update(Action::Named {
                    tid,
                    name: stat.comm.trim().to_owned(),
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
        app.update(Action::Tick(tracebench_trace::clock::monotonic_ns()));
        app.update(Action::Dropped(self.source.dropped.load(Ordering::Relaxed)));
    }

    /// Stops the load, then the trace: a spawned program gets SIGTERM and
    /// `config.grace` to end by itself (its own shutdown is traced and
    /// recorded; the screen counts the time down), then SIGKILL; an
    /// attached one is detached. Feeds the model what came last, so the
    /// summary matches the recording. Returns how the capture ended (with
    /// the traced program's exit only if it ended by itself, before we
    /// stopped it).
    fn stop(
        mut self,
        app: &mut App,
        config: &DashConfig,
        terminal: Option<&mut ratatui::DefaultTerminal>,
    ) -> Option<CaptureEnd> {
        let ended_by_itself = self.traced_program_ended();
        self.cancel.store(true, Ordering::SeqCst);
        if let Some(loader) = self.loader.take() {
            let _ = loader.join();
        }
        if !ended_by_itself && !matches!(config.traced, Traced::Attach { .. }) {
            // How it ended is in the recording and the table; the exit
            // status of ours follows only a program that ended by itself.
            self.terminate(app, config.grace, terminal);
        }
        self.stop.stop();
        let end = self
            .tracer
            .take()
            .and_then(|tracer| tracer.join().ok().flatten());
        self.feed(app);
        if let Some((mut file, path, errors)) = self.threads_file.take() {
            // Names come from /proc while the threads live; keep them for
            // a replay (in the file created at the start).
            use std::io::Write;
            let names: std::collections::BTreeMap<String, &str> = app
                .data
                .threads
                .iter()
                .map(|(tid, row)| (tid.to_string(), row.name.as_str()))
                .collect();
            let json = serde_json::to_string_pretty(&names).unwrap_or_default();
            if let Err(e) = file
                .write_all(json.as_bytes())
                .and_then(|()| file.sync_data())
            {
                errors.failed(&path, &e);
            }
        }
        // The exit status of ours follows only a program that ended by
        // itself.
        end.map(|end| CaptureEnd {
            exit: end.exit.filter(|_| ended_by_itself),
            ..end
        })
    }

    /// Sends the spawned program SIGTERM (through the capture, which
    /// traces its shutdown) and waits up to `grace` for it to end, drawing
    /// the countdown.
    fn terminate(
        &mut self,
        app: &mut App,
        grace: Duration,
        mut terminal: Option<&mut ratatui::DefaultTerminal>,
    ) {
        self.stop.interrupt(libc::SIGTERM);
        let until = Instant::now() + grace;
        loop {
            let ended = self.tracer.as_ref().is_none_or(|t| t.is_finished());
            let left = until.saturating_duration_since(Instant::now());
            if ended || left.is_zero() {
                return;
            }
            self.feed(app);
            app.update(Action::Status(format!(
                "stopping: SIGTERM sent to the program; SIGKILL in {:.1} s",
                left.as_secs_f64()
            )));
            if let Some(terminal) = terminal.as_mut() {
                let _ = terminal.draw(|frame| crate::view::draw(frame, app));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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
    log: Option<(std::fs::File, PathBuf, WriteErrors)>,
) -> Result<(std::os::fd::OwnedFd, mpsc::Receiver<String>), DashError> {
    use std::io::{BufRead, Read, Write};
    let (read_end, write_end) = std::io::pipe().map_err(DashError::OutputPipe)?;
    let mut log = log.map(|(file, path, errors)| (io::BufWriter::new(file), path, errors));
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
                if let Some((log, path, errors)) = log.as_mut()
                    && let Err(e) = log.write_all(&line).and_then(|()| log.flush())
                {
                    errors.failed(path, &e);
                }
                let _ = lines_tx.try_send(String::from_utf8_lossy(&line).into_owned());
            }
        })
        .map_err(|error| DashError::Thread {
            name: "output reader",
            error,
        })?;
    Ok((write_end.into(), lines))
}

/// /proc/PID/task/TID/stat of a thread, through the procfs crate: its
/// name (`comm`, the same as the task's comm file) and its CPU ticks.
fn task_stat(pid: i32, tid: i32) -> Option<procfs::process::Stat> {
    procfs::process::Process::new(pid)
        .ok()?
        .task_from_tid(tid)
        .ok()?
        .stat()
        .ok()
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
        let stat = task_stat(pid, tid)?;
        Some(stat.utime + stat.stime)
    }

    fn sample(&mut self, app: &mut App) {
        let now = Instant::now();
        let elapsed = match self.last {
            Some(last) if now - last < Duration::from_secs(1) => return,
            Some(last) => Some(now - last),
            None => None,
        };
        self.last = Some(now);
        let hz = procfs::ticks_per_second().max(1) as f64;
        let threads: Vec<(i32, i32)> = app
            .data
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
            Action::MoreLoad | Action::LessLoad if self.app.view_state.connections == 0 => {
                Some("no load to change: give --url".into())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracebench_trace::{Backend, CaptureError};

    #[test]
    fn reads_a_threads_name_and_cpu_ticks_from_proc() {
        let pid = std::process::id() as i32;
        // The main thread: named after the test binary (15 characters).
        let stat = task_stat(pid, pid).expect("our own main thread");
        assert!(stat.comm.starts_with("tracebench_ui"), "{}", stat.comm);
        assert!(CpuSampler::ticks_of(pid, pid).is_some());
        assert!(task_stat(pid, -5).is_none(), "no such thread");
    }

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
            grace: Duration::from_secs(3),
            record: Some("runs/T-pool-std".into()),
            restarts: 0,
            capture: CaptureStarter {
                backend: Backend::Ptrace,
                start: Arc::new(|_: &Tracee, _: ProgramStdio, _: &Selection| {
                    Err(CaptureError::BadArgument("not started in this test".into()))
                }),
            },
            ca_file: None,
            insecure: false,
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

        // Issue 14: `m` ended the dashboard when the next name was taken.
        let base = tempfile::tempdir().unwrap();
        config.restarts = 0;
        config.record = Some(base.path().join("run"));
        std::fs::create_dir(base.path().join("run-1-sync")).unwrap();
        let next = config.next_mode().unwrap();
        assert_eq!(next.record, Some(base.path().join("run-1-sync-2")));
    }
}
