//! The plots, as SVG text (plotters' SVG backend, no font library: labels
//! are `<text>` elements the viewer sets in its own sans-serif).
//!
//! - [`latency_svg`]: per mode, the client's p50 and p99 latency as bars,
//!   the slowest request as a tick, and the model's batch time as a
//!   line across the group.
//! - [`timeline_svg`]: per mode, a row per serving thread and a bar per
//!   request: light from accept to pick-up (the queue wait), solid from
//!   pick-up to close (the service).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::{ExperimentError, ModeResult};

const P50: RGBColor = RGBColor(49, 104, 176);
const P99: RGBColor = RGBColor(230, 126, 34);
const THEORY: RGBColor = RGBColor(30, 30, 30);
const SLOWEST: RGBColor = RGBColor(192, 57, 43);
const SERVICE: RGBColor = RGBColor(49, 104, 176);
const QUEUE: RGBColor = RGBColor(158, 193, 232);

fn plot_error(name: &str) -> impl Fn(String) -> ExperimentError + '_ {
    move |message| ExperimentError::Plot {
        name: name.to_owned(),
        message,
    }
}

/// Client latency per mode: p50 and p99 bars, the slowest request, and
/// the model's batch time (the latency of the last wave).
pub fn latency_svg(results: &[ModeResult]) -> Result<String, ExperimentError> {
    let mut svg = String::new();
    draw_latency(results, &mut svg).map_err(plot_error("latency.svg"))?;
    Ok(svg)
}

fn draw_latency(results: &[ModeResult], svg: &mut String) -> Result<(), String> {
    let groups = results.len().max(1);
    let width = (140 * groups as u32 + 160).max(520);
    let root = SVGBackend::with_string(svg, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (area, footer) = root.split_vertically(480 - LEGEND_HEIGHT);
    let top = results
        .iter()
        .flat_map(|r| [r.latency_max, r.latency_p99, r.theory])
        .max()
        .unwrap_or_default()
        .as_secs_f64()
        .max(0.001)
        * 1.15;
    let mut chart = ChartBuilder::on(&area)
        .caption(
            "Client latency per mode: p50, p99 (bars), slowest (tick), theory (line)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..groups as f64, 0f64..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("seconds")
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, r) in results.iter().enumerate() {
        let x = i as f64;
        let p50 = r.latency_p50.as_secs_f64();
        let p99 = r.latency_p99.as_secs_f64();
        let max = r.latency_max.as_secs_f64();
        let theory = r.theory.as_secs_f64();
        chart
            .draw_series([
                Rectangle::new([(x + 0.15, 0.0), (x + 0.5, p50)], P50.filled()),
                Rectangle::new([(x + 0.5, 0.0), (x + 0.85, p99)], P99.filled()),
            ])
            .map_err(|e| e.to_string())?;
        chart
            .draw_series([
                PathElement::new([(x + 0.55, max), (x + 0.8, max)], SLOWEST.stroke_width(3)),
                PathElement::new(
                    [(x + 0.05, theory), (x + 0.95, theory)],
                    THEORY.stroke_width(1),
                ),
            ])
            .map_err(|e| e.to_string())?;
        let (label_x, label_y) = chart.backend_coord(&(x + 0.5, 0.0));
        let (_, p99_y) = chart.backend_coord(&(x + 0.5, p99.max(theory).max(max)));
        let below = ("sans-serif", 14)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top));
        let above = ("sans-serif", 12)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        area.draw(&Text::new(
            r.mode.name().to_owned(),
            (label_x, label_y + 8),
            below,
        ))
        .map_err(|e| e.to_string())?;
        area.draw(&Text::new(
            format!("{p50:.2} / {p99:.2} s"),
            (label_x, p99_y - 4),
            above,
        ))
        .map_err(|e| e.to_string())?;
    }
    legend(
        &footer,
        &[
            (P50, Mark::Bar, "p50"),
            (P99, Mark::Bar, "p99"),
            (SLOWEST, Mark::Tick, "slowest request"),
            (THEORY, Mark::Line, "theory: N·d, ⌈N/W⌉·d or d"),
        ],
    )?;
    root.present().map_err(|e| e.to_string())
}

/// The height of the strip under a chart that holds its legend.
const LEGEND_HEIGHT: u32 = 30;

/// How a series is drawn, and so its mark in the legend.
#[derive(Clone, Copy)]
enum Mark {
    /// A filled bar: a square.
    Bar,
    /// A short thick stroke.
    Tick,
    /// A thin line across.
    Line,
}

/// A legend, left to right, one entry per series with the series' own
/// mark, in its own strip (so it never covers the data).
fn legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    entries: &[(RGBColor, Mark, &str)],
) -> Result<(), String> {
    let mut x = 80;
    for (color, mark, label) in entries {
        let drawn = match mark {
            Mark::Bar => area.draw(&Rectangle::new([(x, 8), (x + 12, 20)], color.filled())),
            Mark::Tick => area.draw(&PathElement::new(
                [(x + 1, 14), (x + 11, 14)],
                color.stroke_width(3),
            )),
            Mark::Line => area.draw(&PathElement::new(
                [(x - 2, 14), (x + 14, 14)],
                color.stroke_width(1),
            )),
        };
        drawn.map_err(|e| e.to_string())?;
        area.draw(&Text::new(
            (*label).to_owned(),
            (x + 18, 14),
            ("sans-serif", 13)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(|e| e.to_string())?;
        // plotters' naive metrics (no font library) are too narrow for
        // sans-serif: 8 px per character keeps entries apart.
        x += 18 + 8 * label.chars().count() as i32 + 24;
    }
    Ok(())
}

/// Which thread served which request when: a row per serving thread (in
/// order of its first pick-up), per request a light bar from accept to
/// pick-up and a solid one from pick-up to close. Time runs from the
/// first accept.
pub fn timeline_svg(result: &ModeResult) -> Result<String, ExperimentError> {
    let mut svg = String::new();
    draw_timeline(result, &mut svg).map_err(plot_error(&crate::timeline_file_name(result.mode)))?;
    Ok(svg)
}

fn draw_timeline(result: &ModeResult, svg: &mut String) -> Result<(), String> {
    let rows: Vec<i32> = result.served_by().iter().map(|(tid, _)| *tid).collect();
    // In fork mode each row is a process (its one thread's id is its pid).
    let (row_label, row_kind) = match result.mode {
        tracebench_server::Mode::Fork => ("pid", "process"),
        _ => ("tid", "thread"),
    };
    // At least four rows' height, so the axis labels keep a readable size.
    let height = 130 + LEGEND_HEIGHT + 30 * rows.len().max(4) as u32;
    let root = SVGBackend::with_string(svg, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (area, footer) = root.split_vertically(height - LEGEND_HEIGHT);
    let start = result.requests.iter().map(|r| r.accepted_ns).min();
    let since = |ns: u64| ns.saturating_sub(start.unwrap_or(ns)) as f64 / 1e9;
    let end = result
        .requests
        .iter()
        .map(|r| since(r.ended_ns))
        .fold(result.theory.as_secs_f64(), f64::max)
        * 1.05;
    let plural = |n: usize, what: &str| {
        let ending = match (n, what.ends_with('s')) {
            (1, _) => "",
            (_, true) => "es",
            _ => "s",
        };
        format!("{n} {what}{ending}")
    };
    let caption = if result.attributable() {
        format!(
            "{}: which {row_kind} served which request when ({}, {})",
            result.mode,
            plural(result.requests.len(), "request"),
            plural(rows.len(), row_kind)
        )
    } else {
        format!(
            "{}: not drawn: its accepts, reads and writes happen inside io_uring_enter, no syscalls to follow",
            result.mode
        )
    };
    let mut chart = ChartBuilder::on(&area)
        .caption(caption, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..end.max(0.001), 0f64..rows.len().max(1) as f64)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("seconds since the first accept")
        .x_label_formatter(&|v| format!("{v:.2}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (row, tid) in rows.iter().enumerate() {
        // Row 0 at the top, like a table.
        let y = (rows.len() - 1 - row) as f64;
        let (label_x, label_y) = chart.backend_coord(&(0.0, y + 0.5));
        area.draw(&Text::new(
            format!("{row_label} {tid}"),
            (label_x - 8, label_y),
            ("sans-serif", 12)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(|e| e.to_string())?;
        for request in result.requests.iter().filter(|r| r.serving_tid == *tid) {
            let (accepted, picked_up, ended) = (
                since(request.accepted_ns),
                since(request.picked_up_ns),
                since(request.ended_ns),
            );
            // Two lanes, so a queued request's wait never hides the
            // service of the one before it on the same thread: service
            // below, the wait above it, thinner and lighter.
            chart
                .draw_series([
                    Rectangle::new([(picked_up, y + 0.1), (ended, y + 0.6)], SERVICE.filled()),
                    Rectangle::new(
                        [(picked_up, y + 0.1), (ended, y + 0.6)],
                        WHITE.stroke_width(1),
                    ),
                    Rectangle::new([(accepted, y + 0.65), (picked_up, y + 0.9)], QUEUE.filled()),
                ])
                .map_err(|e| e.to_string())?;
        }
    }
    legend(
        &footer,
        &[
            (SERVICE, Mark::Bar, "service (pick-up → close)"),
            (QUEUE, Mark::Bar, "queue wait (accept → pick-up)"),
        ],
    )?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tracebench_analysis::attribution::{RequestEnd, RequestRecord};
    use tracebench_server::Mode;

    use super::*;
    use crate::ChildrenUsage;

    fn result(mode: Mode, requests: Vec<RequestRecord>) -> ModeResult {
        ModeResult {
            mode,
            theory: Duration::from_millis(200),
            measured: Duration::from_millis(210),
            latency_min: Duration::from_millis(101),
            latency_p50: Duration::from_millis(150),
            latency_p99: Duration::from_millis(205),
            latency_max: Duration::from_millis(206),
            answered: requests.len() as u64,
            failed: 0,
            usage: ChildrenUsage::default(),
            threads_created: 2,
            processes_created: 0,
            traced_syscalls: 40,
            futex_waits: 3,
            futex_wakes: 2,
            peak_rss_kib: None,
            requests,
        }
    }

    fn request(serving_tid: i32, accepted_ms: u64, picked_up_ms: u64) -> RequestRecord {
        let ms = 1_000_000;
        RequestRecord {
            connection: 0,
            index_on_connection: 0,
            fd: 5,
            acceptor_pid: 1,
            acceptor_tid: 1,
            serving_pid: 1,
            serving_tid,
            accepted_ns: 5_000 * ms + accepted_ms * ms,
            started_ns: 5_000 * ms + accepted_ms * ms,
            picked_up_ns: 5_000 * ms + picked_up_ms * ms,
            ended_ns: 5_000 * ms + (picked_up_ms + 100) * ms,
            end: RequestEnd::Closed,
            bytes_read: 70,
            bytes_written: 130,
        }
    }

    #[test]
    fn the_latency_plot_is_svg_with_its_labels_as_text() {
        let results = [
            result(Mode::Sync, vec![]),
            result(Mode::PoolFutex, vec![request(7, 0, 0)]),
        ];
        let svg = latency_svg(&results).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for label in [
            "sync",
            "pool-futex",
            "p50",
            "p99",
            "seconds",
            "0.15 / 0.20 s",
        ] {
            assert!(
                svg.contains(&format!(">{label}<")) || svg.contains(label),
                "{label}"
            );
        }
        assert!(svg.contains("<text"), "no text elements");
        // Issue 15: slowest and theory had one swatch between them; each
        // series has its own entry, in its own colour.
        assert!(svg.contains("slowest request"), "{svg}");
        assert!(svg.contains("theory: N·d, ⌈N/W⌉·d or d\n"), "{svg}");
        assert!(svg.contains("#C0392B"), "the slowest tick's colour");
        // Four bars plus the background.
        assert!(svg.matches("<rect").count() > 4, "bars");
    }

    #[test]
    fn the_timeline_has_a_row_per_serving_thread() {
        let requests = vec![
            request(21, 0, 0),
            request(22, 0, 1),
            request(21, 0, 100),
            request(22, 1, 101),
        ];
        let svg = timeline_svg(&result(Mode::PoolStd, requests)).unwrap();
        assert!(svg.contains("tid 21") && svg.contains("tid 22"));
        assert!(!svg.contains("tid 23"));
        assert!(
            svg.contains(
                "pool-std: which thread served which request when (4 requests, 2 threads)"
            )
        );
        assert!(svg.contains("queue wait (accept"));
        assert!(svg.contains("seconds since the first accept"));
    }

    #[test]
    fn fork_rows_are_processes() {
        let requests = vec![request(31, 0, 0), request(32, 0, 1)];
        let svg = timeline_svg(&result(Mode::Fork, requests)).unwrap();
        assert!(svg.contains("pid 31") && svg.contains("pid 32"), "{svg}");
        assert!(!svg.contains("tid 31"));
        assert!(
            svg.contains("fork: which process served which request when (2 requests, 2 processes)"),
            "{svg}"
        );
    }

    #[test]
    fn io_uring_says_why_it_has_no_rows() {
        let svg = timeline_svg(&result(Mode::IoUring, vec![])).unwrap();
        assert!(svg.contains("inside io_uring_enter"), "{svg}");
    }

    #[test]
    fn an_empty_mode_still_draws() {
        let svg = timeline_svg(&result(Mode::Thread, vec![])).unwrap();
        assert!(svg.contains("0 requests, 0 threads"));
        assert!(latency_svg(&[]).unwrap().contains("<svg"));
    }
}
