//! The observer effect: the same server under the same load, untraced and
//! under each capture backend, side by side. A tracer that stops the
//! program at every selected syscall (ptrace) changes what it measures; one
//! that reads the kernel's tracepoints (perf) much less. This measures by
//! how much, on the machine at hand.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use plotters::prelude::*;
use tracebench_loadgen::{LoadConfig, StopAfter, Target};
use tracebench_server::Mode;
use tracebench_trace::CaptureStarter;
use tracebench_trace::signals::Noticed;

use crate::measure::ChildrenUsage;
use crate::traced::TracedServer;
use crate::{ExperimentConfig, ExperimentError};

/// One backend to compare: its name, and how to start it (`None`:
/// untraced).
#[derive(Clone)]
pub struct Observer {
    /// `none`, `ptrace`, `perf`.
    pub name: String,
    /// The capture, if any.
    pub capture: Option<CaptureStarter>,
}

/// What one backend's run measured.
#[derive(Debug, Clone)]
pub struct ObserverRow {
    /// The backend's name.
    pub name: String,
    /// Answered requests a second.
    pub throughput: f64,
    /// Client latency p50.
    pub p50: Duration,
    /// Client latency p99.
    pub p99: Duration,
    /// The server's CPU time (user + system) per answered request.
    pub cpu_per_request: Duration,
    /// Syscall entries the backend recorded (0 untraced).
    pub recorded: u64,
    /// Events the kernel lost (perf backend; 0 otherwise).
    pub lost: u64,
}

/// Runs `config.modes[0]` under a closed-loop load of `config.requests`
/// connections for `duration`, once per observer, in order.
pub fn observer_effect(
    config: &ExperimentConfig,
    observers: &[Observer],
    duration: Duration,
    noticed: &Noticed,
) -> Result<Vec<ObserverRow>, ExperimentError> {
    config.validate_load()?;
    crate::create_dir(&config.out)?;
    let mut rows = Vec::new();
    for observer in observers {
        rows.push(measure(config, observer, duration, noticed)?);
        if noticed.first().is_some() {
            return Err(ExperimentError::Interrupted {
                mode: config.modes[0],
                completed: rows.len(),
            });
        }
    }
    write_outputs(&config.out, &rows)?;
    Ok(rows)
}

/// A server, traced or not, and how to end it.
enum Running {
    Untraced(Child, String),
    Traced(TracedServer),
}

fn measure(
    config: &ExperimentConfig,
    observer: &Observer,
    duration: Duration,
    noticed: &Noticed,
) -> Result<ObserverRow, ExperimentError> {
    let mode = config.modes[0];
    let before = ChildrenUsage::now();
    let running = match &observer.capture {
        None => start_untraced(config, mode)?,
        Some(capture) => {
            let traced = ExperimentConfig {
                capture: capture.clone(),
                ..config.clone()
            };
            let path = config.out.join(format!("observer-{}.tbt", observer.name));
            Running::Traced(TracedServer::start(&traced, mode, &path, noticed)?)
        }
    };
    let url = match &running {
        Running::Untraced(_, url) => url.clone(),
        Running::Traced(server) => server.url(),
    };
    let target = Target::parse(&url).map_err(|source| ExperimentError::Load { mode, source })?;
    let mut load = LoadConfig::new(target);
    load.connections = config.requests;
    load.stop = StopAfter::Duration(duration);
    load.keep_alive = false;
    let cancel = Arc::new(AtomicBool::new(false));
    let report = tracebench_loadgen::run_observed(&load, cancel, |_| {})
        .map_err(|source| ExperimentError::Load { mode, source })?;
    let (recorded, lost) = match running {
        Running::Untraced(child, _) => {
            stop_untraced(child, mode)?;
            (0, 0)
        }
        Running::Traced(server) => {
            let analysis = server.stop()?;
            (analysis.traced_syscalls, analysis.lost_events)
        }
    };
    let usage = ChildrenUsage::now().since(&before);
    let answered = report.stats.completed().max(1);
    let latency = &report.stats.latency;
    Ok(ObserverRow {
        name: observer.name.clone(),
        throughput: report.stats.completed() as f64 / report.elapsed.as_secs_f64().max(1e-9),
        p50: Duration::from_nanos(latency.value_at_quantile(0.5)),
        p99: Duration::from_nanos(latency.value_at_quantile(0.99)),
        cpu_per_request: usage.cpu() / answered as u32,
        recorded,
        lost,
    })
}

/// `tracebench serve` on a port of its own choosing, once it listens.
fn start_untraced(config: &ExperimentConfig, mode: Mode) -> Result<Running, ExperimentError> {
    let failed = |message: String| ExperimentError::Server { mode, message };
    let mut child = Command::new(&config.exe)
        .args(["serve", "--mode", mode.name(), "--workers"])
        .arg(config.server_workers(mode).to_string())
        .arg("--delay")
        .arg(format!("{}us", config.delay.as_micros()))
        .args(["--addr", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| failed(format!("cannot start the server: {e}")))?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    let _ = BufReader::new(stdout).read_line(&mut line);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .map(str::to_owned);
    match url {
        Some(url) => Ok(Running::Untraced(child, url)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(failed(format!("the server did not listen: {line:?}")))
        }
    }
}

/// SIGTERM, then the drain; SIGKILL if it takes over 10 s.
fn stop_untraced(mut child: Child, mode: Mode) -> Result<(), ExperimentError> {
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for _ in 0..1000 {
        if child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(ExperimentError::Server {
        mode,
        message: "the server did not stop within 10 s of SIGTERM".into(),
    })
}

/// The table as Markdown: each backend beside the untraced run.
pub fn markdown(rows: &[ObserverRow]) -> String {
    let base = rows
        .iter()
        .find(|r| r.name == "none")
        .map_or(0.0, |r| r.throughput);
    let mut text = String::from(
        "| backend | req/s | vs untraced | p50 | p99 | server CPU/request | syscalls recorded | events lost |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let ratio = if base > 0.0 {
            format!("{:.2}×", row.throughput / base)
        } else {
            "-".into()
        };
        text += &format!(
            "| {} | {:.0} | {ratio} | {:.2} ms | {:.2} ms | {:.1} µs | {} | {} |\n",
            row.name,
            row.throughput,
            row.p50.as_secs_f64() * 1e3,
            row.p99.as_secs_f64() * 1e3,
            row.cpu_per_request.as_secs_f64() * 1e6,
            row.recorded,
            row.lost
        );
    }
    text
}

fn write_outputs(out: &Path, rows: &[ObserverRow]) -> Result<(), ExperimentError> {
    crate::write_file(out, "observer.md", &markdown(rows))?;
    crate::write_file(out, "observer.svg", &throughput_svg(rows)?)?;
    Ok(())
}

/// Throughput per backend, as bars, with the untraced one's as a line.
pub fn throughput_svg(rows: &[ObserverRow]) -> Result<String, ExperimentError> {
    let mut svg = String::new();
    draw_throughput(rows, &mut svg).map_err(|message| ExperimentError::Plot {
        name: "observer.svg".into(),
        message,
    })?;
    Ok(svg)
}

fn draw_throughput(rows: &[ObserverRow], svg: &mut String) -> Result<(), String> {
    let root = SVGBackend::with_string(svg, (160 * rows.len().max(1) as u32 + 160, 420))
        .into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let top = rows.iter().map(|r| r.throughput).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "The observer effect: requests/s under each capture backend",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..rows.len().max(1) as f64, 0f64..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("requests/s")
        .draw()
        .map_err(|e| e.to_string())?;
    let blue = RGBColor(49, 104, 176);
    chart
        .draw_series(rows.iter().enumerate().map(|(i, row)| {
            Rectangle::new(
                [(i as f64 + 0.2, 0.0), (i as f64 + 0.8, row.throughput)],
                blue.filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, row)| {
            Text::new(
                format!("{} ({:.0}/s)", row.name, row.throughput),
                (i as f64 + 0.2, row.throughput + top * 0.03),
                ("sans-serif", 14),
            )
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, throughput: f64) -> ObserverRow {
        ObserverRow {
            name: name.into(),
            throughput,
            p50: Duration::from_micros(400),
            p99: Duration::from_millis(2),
            cpu_per_request: Duration::from_micros(30),
            recorded: 10,
            lost: 0,
        }
    }

    #[test]
    fn the_table_compares_each_backend_with_the_untraced_run() {
        let rows = [
            row("none", 2000.0),
            row("ptrace", 1000.0),
            row("perf", 1900.0),
        ];
        let table = markdown(&rows);
        assert!(table.contains("| ptrace | 1000 | 0.50× |"), "{table}");
        assert!(table.contains("| perf | 1900 | 0.95× |"), "{table}");
        let svg = throughput_svg(&rows).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("perf (1900/s)"),
            "{svg}"
        );
    }
}
