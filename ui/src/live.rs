//! The live dashboard: our server, spawned under our tracer on its own
//! thread, loaded by our load generator on another, and this thread turning
//! both feeds into actions for the model and frames for the terminal.

use std::io::{self, IsTerminal};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event as TermEvent, KeyEventKind};
use hdrhistogram::serialization::V2DeflateSerializer;
use tracebench_loadgen::hlog::{self, SecondsLog};
use tracebench_loadgen::{LoadConfig, StopAfter, Target};
use tracebench_tracer::file::{Header, TraceWriter};
use tracebench_tracer::sink::{ChannelSource, Tee};
use tracebench_tracer::{Options, Selection, Session};

use crate::keys::action_for;
use crate::model::{Action, App};

/// What the dashboard runs.
#[derive(Debug, Clone)]
pub struct DashConfig {
    /// The tracebench binary, whose `serve` is traced.
    pub exe: PathBuf,
    /// `--mode` of the server.
    pub mode: String,
    /// `--workers` of the server.
    pub workers: usize,
    /// `--delay` of the server.
    pub delay: Duration,
    /// Load connections.
    pub connections: usize,
    /// Open-loop rate, if any.
    pub rate: Option<f64>,
    /// Without a terminal, run this long and print a summary.
    pub headless_for: Duration,
    /// Record the run into this directory: `trace.tbt` (every traced
    /// event) and `latency.hlog` (the load generator's interval log).
    pub record: Option<PathBuf>,
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

/// Runs the dashboard until the user quits (or, without a terminal, for
/// `headless_for`), then stops the load and the traced server. Returns the
/// final model, for a summary.
pub fn run(config: &DashConfig) -> Result<App, DashError> {
    let addr = free_port().map_err(|e| DashError(format!("no free port on 127.0.0.1: {e}")))?;
    let (sink, source) = tracebench_tracer::sink::channel(1 << 16);
    let (started_tx, started_rx) = mpsc::channel::<Result<(), String>>();
    let server_args: Vec<std::ffi::OsString> = vec![
        "serve".into(),
        "--mode".into(),
        config.mode.clone().into(),
        "--workers".into(),
        config.workers.to_string().into(),
        "--delay".into(),
        format!("{}ms", config.delay.as_millis()).into(),
        "--addr".into(),
        addr.to_string().into(),
    ];
    let exe = config.exe.clone();
    let trace_file = match &config.record {
        Some(dir) => {
            let mut command = vec![exe.display().to_string()];
            command.extend(server_args.iter().map(|a| a.to_string_lossy().into_owned()));
            let path = dir.join("trace.tbt");
            Some(
                TraceWriter::create(&path, &Header::now(command))
                    .map_err(|e| DashError(format!("cannot create {}: {e}", path.display())))?,
            )
        }
        None => None,
    };
    let tracer = std::thread::Builder::new()
        .name("tracer".into())
        .spawn(move || {
            // The tracer thread owns every ptrace call.
            let _ = tracebench_tracer::stop_on_signals();
            let options = Options {
                selection: Selection::default(),
                silence: true,
                ..Options::default()
            };
            let target = tracebench_tracer::Target::Spawn {
                program: exe.into_os_string(),
                args: server_args,
            };
            match Session::start(&target, &options) {
                Ok(session) => {
                    let _ = started_tx.send(Ok(()));
                    let mut sink = sink;
                    // The file gets every event; the view may miss some.
                    match trace_file {
                        Some(mut file) => {
                            let _ = session.run(&mut Tee(vec![&mut sink, &mut file]));
                            if let Err(e) = file.finish() {
                                eprintln!(
                                    "tracebench: the recording's trace file is incomplete: {e}"
                                );
                            }
                        }
                        None => {
                            let _ = session.run(&mut sink);
                        }
                    }
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e.to_string()));
                }
            }
        })
        .map_err(|e| DashError(format!("cannot start the tracer thread: {e}")))?;
    match started_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(DashError(format!("cannot trace the server: {e}"))),
        Err(_) => return Err(DashError("the tracer thread died".into())),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            tracebench_tracer::request_stop();
            let _ = tracer.join();
            return Err(DashError(format!(
                "the server did not listen on {addr} within 10 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut load = LoadConfig::new(
        Target::parse(&format!("http://{addr}/")).map_err(|e| DashError(e.to_string()))?,
    );
    load.connections = config.connections;
    load.rate = config.rate;
    load.stop = StopAfter::Duration(Duration::from_secs(24 * 3600));
    let cancel = Arc::new(AtomicBool::new(false));
    let (snapshots_tx, snapshots) = mpsc::channel();
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
                        "tracebench dash; values in nanoseconds",
                    )
                    .ok()
                    .map(SecondsLog::new)
                });
                let _ = tracebench_loadgen::run_observed(&load, cancel, |s| {
                    if let Some(log) = log.as_mut() {
                        let _ = log.add(s);
                    }
                    let _ = snapshots_tx.send(s.clone());
                });
                if let Some(log) = log.as_mut() {
                    let _ = log.flush();
                }
            })
            .map_err(|e| DashError(format!("cannot start the load thread: {e}")))?
    };

    let title = format!(
        "server {} ({} workers, {} ms per request)   load: {}",
        config.mode,
        config.workers,
        config.delay.as_millis(),
        match config.rate {
            Some(rate) => format!(
                "open loop {rate} req/s, at most {} in flight",
                config.connections
            ),
            None => format!("closed loop, {} connections", config.connections),
        }
    );
    let mut app = App::new(title);
    let mut cpu = CpuSampler::default();
    let result = if io::stdout().is_terminal() {
        interactive(
            &mut app,
            &source,
            &snapshots,
            &mut cpu,
            config.record.as_deref(),
        )
    } else {
        let until = Instant::now() + config.headless_for;
        while Instant::now() < until {
            feed(&mut app, &source, &snapshots, &mut cpu);
            std::thread::sleep(Duration::from_millis(100));
        }
        feed(&mut app, &source, &snapshots, &mut cpu);
        Ok(())
    };

    cancel.store(true, Ordering::SeqCst);
    let _ = loader.join();
    tracebench_tracer::request_stop();
    let _ = tracer.join();
    // The last answers and events, so the summary matches the recording.
    feed(&mut app, &source, &snapshots, &mut cpu);
    if let Some(dir) = &config.record {
        // Names come from /proc while the threads live; keep them for a
        // replay.
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
    result.map(|()| app)
}

/// Hands everything the sources produced since the last call to the model.
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

fn feed(
    app: &mut App,
    source: &ChannelSource,
    snapshots: &mpsc::Receiver<tracebench_loadgen::Snapshot>,
    cpu: &mut CpuSampler,
) {
    cpu.sample(app);
    for event in source.receiver.try_iter().take(100_000) {
        let new_thread = !app.threads.contains_key(&event.tid);
        let tid = event.tid;
        app.update(Action::Trace(event));
        if new_thread {
            // The source, not the model, does the I/O.
            if let Ok(name) = std::fs::read_to_string(format!("/proc/{tid}/comm")) {
                app.update(Action::Named {
                    tid,
                    name: name.trim().to_owned(),
                });
            }
        }
    }
    for snapshot in snapshots.try_iter() {
        app.update(Action::Load(snapshot));
    }
    app.update(Action::Dropped(source.dropped.load(Ordering::Relaxed)));
}

/// Writes the latency histogram so far as percentile CSV and .hgrm (into
/// the recording's directory, or the current one), and says where.
pub fn export(app: &App, record: Option<&std::path::Path>) -> String {
    let dir = record.unwrap_or(std::path::Path::new("."));
    let stamp = (app.elapsed_s * 10.0) as u64;
    let csv = dir.join(format!("latency-at-{}.{}s.csv", stamp / 10, stamp % 10));
    let hgrm = csv.with_extension("hgrm");
    let written = std::fs::File::create(&csv)
        .and_then(|f| {
            tracebench_loadgen::export::write_percentile_csv(&app.latency, io::BufWriter::new(f))
                .map(drop)
        })
        .and_then(|()| std::fs::File::create(&hgrm))
        .and_then(|f| {
            tracebench_loadgen::export::write_hgrm(&app.latency, io::BufWriter::new(f)).map(drop)
        });
    match written {
        Ok(()) => format!(
            "exported {} requests to {} and .hgrm",
            app.latency.len(),
            csv.display()
        ),
        Err(e) => format!("export failed: {e}"),
    }
}

fn interactive(
    app: &mut App,
    source: &ChannelSource,
    snapshots: &mpsc::Receiver<tracebench_loadgen::Snapshot>,
    cpu: &mut CpuSampler,
    record: Option<&std::path::Path>,
) -> Result<(), DashError> {
    // ratatui::init restores the terminal from its panic hook too.
    let mut terminal =
        ratatui::try_init().map_err(|e| DashError(format!("cannot set up the terminal: {e}")))?;
    let result = (|| -> io::Result<()> {
        while !app.quit {
            feed(app, source, snapshots, cpu);
            terminal.draw(|frame| crate::view::draw(frame, app))?;
            if event::poll(Duration::from_millis(100))? {
                match event::read()? {
                    TermEvent::Key(key) if key.kind == KeyEventKind::Press => {
                        let ctrl_c = key.code == crossterm::event::KeyCode::Char('c')
                            && key
                                .modifiers
                                .contains(crossterm::event::KeyModifiers::CONTROL);
                        if ctrl_c {
                            app.update(Action::Quit);
                        } else if let Some(action) = action_for(key.code) {
                            if matches!(action, Action::Export) {
                                let status = export(app, record);
                                app.update(Action::Status(status));
                            } else {
                                app.update(action);
                            }
                        }
                    }
                    TermEvent::Mouse(mouse) => match mouse.kind {
                        event::MouseEventKind::ScrollDown => app.update(Action::SelectNext),
                        event::MouseEventKind::ScrollUp => app.update(Action::SelectPrevious),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Ok(())
    })();
    ratatui::restore();
    result.map_err(|e| DashError(format!("terminal: {e}")))
}
