//! Our server, spawned under our tracer on a thread of its own (ptrace
//! ties a tracee to the thread that traces it), every event written to the
//! mode's trace file and analysed as it arrives.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracebench_analysis::attribution::{Attributor, RequestRecord};
use tracebench_analysis::futexstat::FutexStats;
use tracebench_server::Mode;
use tracebench_trace::format::{Header, TraceWriter};
use tracebench_trace::signals::Noticed;
use tracebench_trace::sink::Tee;
use tracebench_trace::{
    Creation, Event, EventKind, EventSink, ProgramStdio, Selection, StopHandle, Tracee,
};

use crate::measure::listening_port_of;
use crate::{ExperimentConfig, ExperimentError};

/// How long a traced server may take to listen (a loaded machine, a debug
/// build, ptrace stops on its start-up calls).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);

/// What the trace of one mode says, computed while it is recorded.
#[derive(Default)]
pub struct Analysis {
    /// Per-request attribution.
    attributor: Attributor,
    /// Per-futex-word statistics.
    pub futex: FutexStats,
    /// Every request attributed, in order of completion.
    pub requests: Vec<RequestRecord>,
    /// `Spawned` events of kind thread.
    pub threads_created: u64,
    /// `Spawned` events of kind process or vfork.
    pub processes_created: u64,
    /// Syscall entries the tracer stopped at.
    pub traced_syscalls: u64,
    /// Events the kernel lost (a full ring buffer of the perf backend).
    pub lost_events: u64,
    /// The traced program's pid, from its first event, for /proc.
    server_pid: Arc<AtomicI32>,
    /// `requests.len()`, for the thread waiting to stop the server.
    attributed: Arc<AtomicUsize>,
}

impl EventSink for Analysis {
    fn event(&mut self, event: &Event) {
        // The first event is the spawned program's own (its exec).
        let _ =
            self.server_pid
                .compare_exchange(0, event.pid, Ordering::Relaxed, Ordering::Relaxed);
        match &event.kind {
            EventKind::Spawned { creation, .. } => match creation {
                Creation::Thread => self.threads_created += 1,
                Creation::Process | Creation::Vfork => self.processes_created += 1,
            },
            EventKind::SyscallEntry { .. } => self.traced_syscalls += 1,
            EventKind::Lost { count, .. } => self.lost_events += count,
            _ => {}
        }
        self.futex.feed(event);
        let requests = &mut self.requests;
        self.attributor
            .feed(event, |request| requests.push(request.clone()));
        self.attributed.store(requests.len(), Ordering::Relaxed);
    }
}

/// The tracer thread's result: the analysis, and whether the trace file
/// was completed.
type TracerResult = (Analysis, Result<(), String>);

/// Starts the capture on a thread of its own (a ptrace capture binds its
/// tracee to the thread that started it), every event to `file` and
/// `analysis`; returns the thread and the handle that stops the capture.
fn spawn_tracer(
    config: &ExperimentConfig,
    tracee: Tracee,
    file: TraceWriter<std::io::BufWriter<std::fs::File>>,
    trace_path: &Path,
    mut analysis: Analysis,
) -> Result<(JoinHandle<TracerResult>, StopHandle), String> {
    let (started_tx, started_rx) = mpsc::channel::<Result<StopHandle, String>>();
    let trace_path = trace_path.to_path_buf();
    let starter = config.capture.clone();
    let selection = Selection::default();
    let tracer = std::thread::Builder::new()
        .name("tracer".into())
        .spawn(move || -> TracerResult {
            let capture = match (starter.start)(&tracee, ProgramStdio::Null, &selection) {
                Ok(capture) => capture,
                Err(e) => {
                    // Created first so a directory we cannot write to
                    // fails before a server starts; no server, no trace.
                    drop(file);
                    let _ = std::fs::remove_file(&trace_path);
                    let _ = started_tx.send(Err(e.to_string()));
                    return (analysis, Ok(()));
                }
            };
            let _ = started_tx.send(Ok(capture.stop_handle()));
            let mut file = file;
            let ran = capture.run(&mut Tee(vec![&mut file, &mut analysis]));
            let finished = file.finish().map(drop).map_err(|e| e.to_string());
            let outcome = match ran {
                Ok(_) => finished,
                Err(e) => Err(format!("the trace failed: {e}")),
            };
            (analysis, outcome)
        })
        .map_err(|e| format!("cannot start the tracer thread: {e}"))?;
    match started_rx.recv() {
        Ok(Ok(stop)) => Ok((tracer, stop)),
        Ok(Err(e)) => {
            let _ = tracer.join();
            Err(format!("cannot trace the server: {e}"))
        }
        Err(_) => Err("the tracer thread died".into()),
    }
}

/// A server of one mode, running traced. Dropping it stops the server
/// (the tracer kills a program it spawned) and waits for the tracer, so no
/// early return leaves a server running or stopped under a dead tracer.
pub struct TracedServer {
    mode: Mode,
    addr: SocketAddr,
    server_pid: Arc<AtomicI32>,
    attributed: Arc<AtomicUsize>,
    tracer: Option<JoinHandle<TracerResult>>,
    /// Ends the capture (and with it the server).
    stop: StopHandle,
}

impl TracedServer {
    /// Starts `tracebench serve --mode MODE` (from `config.exe`) traced by
    /// `config.capture`, recording to `trace_path`, and returns once it
    /// listens (or once `noticed` has a signal).
    pub fn start(
        config: &ExperimentConfig,
        mode: Mode,
        trace_path: &Path,
        noticed: &Noticed,
    ) -> Result<TracedServer, ExperimentError> {
        let failed = |message: String| ExperimentError::Server { mode, message };
        let exe = &config.exe;
        // Port 0: the server takes a free port itself (no window in which
        // another program could take one chosen for it), and we read which
        // from its own listening socket.
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let args: Vec<std::ffi::OsString> = vec![
            "serve".into(),
            "--mode".into(),
            mode.name().into(),
            "--workers".into(),
            config.server_workers(mode).to_string().into(),
            "--delay".into(),
            format!("{}us", config.delay.as_micros()).into(),
            "--addr".into(),
            addr.to_string().into(),
        ];
        let command = std::iter::once(exe.as_os_str())
            .chain(args.iter().map(|a| a.as_os_str()))
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let file = trace_file(trace_path, &Header::now(command, config.capture.backend))
            .map_err(|e| failed(format!("cannot create {}: {e}", trace_path.display())))?;
        let tracee = Tracee::Spawn {
            program: exe.as_os_str().to_owned(),
            args,
        };
        let mut server = TracedServer {
            mode,
            addr,
            server_pid: Arc::new(AtomicI32::new(0)),
            attributed: Arc::new(AtomicUsize::new(0)),
            tracer: None,
            stop: StopHandle::new(),
        };
        let analysis = Analysis {
            server_pid: Arc::clone(&server.server_pid),
            attributed: Arc::clone(&server.attributed),
            ..Analysis::default()
        };
        let (tracer, stop) =
            spawn_tracer(config, tracee, file, trace_path, analysis).map_err(failed)?;
        server.tracer = Some(tracer);
        server.stop = stop;
        server.wait_until_listening(noticed)?;
        Ok(server)
    }

    /// Waits until the traced server listens, and learns its port.
    fn wait_until_listening(&mut self, noticed: &Noticed) -> Result<(), ExperimentError> {
        let mode = self.mode;
        let failed = |message: String| ExperimentError::Server { mode, message };
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            let pid = self.server_pid.load(Ordering::Relaxed);
            if let Some(port) = (pid > 0).then(|| listening_port_of(pid)).flatten() {
                self.addr.set_port(port);
                return Ok(());
            }
            if self.tracer.as_ref().is_none_or(|t| t.is_finished()) {
                let outcome = self.finish();
                return Err(failed(format!(
                    "the server exited before listening on {}{}",
                    self.addr,
                    outcome.err().map(|e| format!(" ({e})")).unwrap_or_default()
                )));
            }
            if noticed.first().is_some() {
                return Err(ExperimentError::Interrupted { mode, completed: 0 });
            }
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "the server did not listen on {} within {} s",
                    self.addr,
                    LISTEN_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The URL the server answers at.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The server's process id, once its first event was seen.
    pub fn pid(&self) -> Option<i32> {
        Some(self.server_pid.load(Ordering::Relaxed)).filter(|&pid| pid > 0)
    }

    /// Waits until the trace has attributed `requests` requests (the
    /// server closed them), at most `limit`, or until Ctrl-C.
    pub fn wait_for_requests(&self, requests: usize, limit: Duration, noticed: &Noticed) {
        let deadline = Instant::now() + limit;
        while self.attributed.load(Ordering::Relaxed) < requests
            && Instant::now() < deadline
            && noticed.first().is_none()
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the server (the tracer kills it and reaps it) and returns
    /// what its trace said.
    pub fn stop(mut self) -> Result<Analysis, ExperimentError> {
        let mode = self.mode;
        self.finish()
            .map_err(|message| ExperimentError::Server { mode, message })
    }

    /// Asks the tracer to end (killing the server), waits for it, and
    /// takes its result; `Err` if it already was taken.
    fn finish(&mut self) -> Result<Analysis, String> {
        let Some(tracer) = self.tracer.take() else {
            return Err("the tracer already ended".into());
        };
        self.stop.stop();
        match tracer.join() {
            Ok((analysis, Ok(()))) => Ok(analysis),
            Ok((_, Err(e))) => Err(e),
            Err(_) => Err("the tracer thread panicked".into()),
        }
    }
}

impl Drop for TracedServer {
    fn drop(&mut self) {
        if self.tracer.is_some() {
            let _ = self.finish();
        }
    }
}

/// A mode's trace file in the output directory: private, a new name,
/// never through a symlink.
fn trace_file(
    path: &Path,
    header: &Header,
) -> Result<TraceWriter<std::io::BufWriter<std::fs::File>>, String> {
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => (dir, name.to_string_lossy()),
        _ => return Err("not a file name".into()),
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let file = tracebench_files::OutputDir::open(dir)
        .and_then(|d| d.create_file(&name))
        .map_err(|e| e.to_string())?;
    TraceWriter::new(std::io::BufWriter::with_capacity(1 << 17, file), header)
        .map_err(|e| e.to_string())
}
