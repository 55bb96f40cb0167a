//! The results as a Markdown table (`table.md`, also printed) and as CSV
//! (`table.csv`), the same numbers in both.

use std::fmt::Write as _;

use crate::{ExperimentConfig, ModeResult};

/// The CSV's header line, one column per number (times in seconds or
/// milliseconds as the name says, memory in KiB). `measured_s` has µs
/// precision, so `deviation_pct` can be recomputed from the file.
pub const CSV_HEADER: &str = "mode,requests,workers,delay_s,theory_s,measured_s,deviation_pct,\
    p50_ms,p99_ms,max_ms,answered,failed,cpu_user_s,cpu_system_s,cpu_s,\
    threads_created,processes_created,voluntary_switches,involuntary_switches,context_switches,\
    traced_syscalls,futex_waits,futex_wakes,peak_rss_kib,attributed,serving_threads,requests_per_thread";

/// One CSV row per mode, under [`CSV_HEADER`]. `requests_per_thread`
/// lists each serving thread's count, `;`-separated, in order of its first
/// request; an unknown peak RSS is an empty field.
pub fn csv(config: &ExperimentConfig, results: &[ModeResult]) -> String {
    let mut out = String::new();
    out.push_str(CSV_HEADER);
    out.push('\n');
    for r in results {
        let served = r.served_by();
        let per_thread: Vec<String> = served.iter().map(|(_, n)| n.to_string()).collect();
        let _ = writeln!(
            out,
            "{},{},{},{:.3},{:.3},{:.6},{:.1},{:.1},{:.1},{:.1},{},{},{:.3},{:.3},{:.3},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.mode,
            config.requests,
            config.workers,
            config.delay.as_secs_f64(),
            r.theory.as_secs_f64(),
            r.measured.as_secs_f64(),
            r.deviation_percent(),
            ms(r.latency_p50),
            ms(r.latency_p99),
            ms(r.latency_max),
            r.answered,
            r.failed,
            r.usage.user.as_secs_f64(),
            r.usage.system.as_secs_f64(),
            r.usage.cpu().as_secs_f64(),
            r.threads_created,
            r.processes_created,
            r.usage.voluntary_switches,
            r.usage.involuntary_switches,
            r.usage.context_switches(),
            r.traced_syscalls,
            r.futex_waits,
            r.futex_wakes,
            r.peak_rss_kib.map(|k| k.to_string()).unwrap_or_default(),
            r.attributed(),
            served.len(),
            per_thread.join(";"),
        );
    }
    out
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// How the requests were spread: `5 × 2` when 5 threads served 2 each,
/// else the counts in order of each thread's first request (`3+3+2+2`).
pub fn spread(served: &[(i32, u64)]) -> String {
    match served.first() {
        None => "none".into(),
        Some((_, first)) if served.iter().all(|(_, n)| n == first) => {
            format!("{} × {first}", served.len())
        }
        Some(_) => served
            .iter()
            .map(|(_, n)| n.to_string())
            .collect::<Vec<_>>()
            .join("+"),
    }
}

/// The Markdown table: a line saying what ran, the table, and a note on
/// what the columns count.
pub fn markdown(config: &ExperimentConfig, results: &[ModeResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "N = {} concurrent requests (one connection each), d = {} per request, W = {} pool workers; every mode traced.\n",
        config.requests,
        humanize(config.delay),
        config.workers
    );
    out.push_str(
        "| mode | theory | measured | vs theory | p50 | p99 | server CPU | threads | processes | ctx switches | futex waits | peak RSS | served by (threads × requests) |\n",
    );
    out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} s | {:+.1} % | {:.0} ms | {:.0} ms | {:.3} s | {} | {} | {} | {} | {} | {} |",
            r.mode,
            theory_text(r),
            r.measured.as_secs_f64(),
            r.deviation_percent(),
            ms(r.latency_p50),
            ms(r.latency_p99),
            r.usage.cpu().as_secs_f64(),
            r.threads_created,
            r.processes_created,
            r.usage.context_switches(),
            r.futex_waits,
            r.peak_rss_kib.map_or_else(
                || "n/a".to_owned(),
                |k| format!("{:.1} MiB", k as f64 / 1024.0)
            ),
            if r.attributable() {
                spread(&r.served_by())
            } else {
                "n/a: its I/O is inside io_uring_enter".to_owned()
            },
        );
    }
    let failed: u64 = results.iter().map(|r| r.failed).sum();
    if failed > 0 {
        let _ = writeln!(
            out,
            "\n**{failed} request(s) failed**; see table.csv (answered, failed)."
        );
    }
    out.push_str(
        "\nTheory: sync N·d, pool ⌈N/W⌉·d, thread, fork and the event loops d (epoll and io-uring run one loop). Server CPU and context switches: \
         getrusage(RUSAGE_CHILDREN) over the mode's run (every thread and reaped child, \
         and the two ptrace stops of each traced syscall). Threads and processes: created by \
         the server, from the trace. Peak RSS: VmHWM of the server process.\n",
    );
    out
}

/// The theory column: the formula's value, e.g. `2.000 s (⌈N/W⌉·d)`.
fn theory_text(r: &ModeResult) -> String {
    use tracebench_server::Mode;
    let formula = match r.mode {
        Mode::Sync => "N·d",
        Mode::Fork | Mode::Thread | Mode::Epoll | Mode::IoUring => "d",
        Mode::PoolSpin | Mode::PoolFutex | Mode::PoolStd => "⌈N/W⌉·d",
    };
    format!("{:.3} s ({formula})", r.theory.as_secs_f64())
}

/// `1 s`, `200 ms`, `1.5 s`.
fn humanize(d: std::time::Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use tracebench_analysis::attribution::{RequestEnd, RequestRecord};
    use tracebench_server::Mode;

    use super::*;
    use crate::ChildrenUsage;

    fn request(serving_tid: i32, picked_up_ns: u64) -> RequestRecord {
        RequestRecord {
            connection: 0,
            index_on_connection: 0,
            fd: 4,
            acceptor_pid: 100,
            acceptor_tid: 100,
            serving_pid: 100,
            serving_tid,
            accepted_ns: picked_up_ns.saturating_sub(10),
            started_ns: picked_up_ns.saturating_sub(10),
            picked_up_ns,
            ended_ns: picked_up_ns + 1_000,
            end: RequestEnd::Closed,
            bytes_read: 80,
            bytes_written: 120,
        }
    }

    fn pool_result() -> ModeResult {
        ModeResult {
            mode: Mode::PoolFutex,
            theory: Duration::from_secs(2),
            measured: Duration::from_millis(2040),
            latency_min: Duration::from_millis(1001),
            latency_p50: Duration::from_millis(1500),
            latency_p99: Duration::from_millis(2030),
            latency_max: Duration::from_millis(2035),
            answered: 10,
            failed: 0,
            usage: ChildrenUsage {
                user: Duration::from_millis(12),
                system: Duration::from_millis(30),
                voluntary_switches: 200,
                involuntary_switches: 5,
            },
            threads_created: 5,
            processes_created: 0,
            traced_syscalls: 90,
            futex_waits: 14,
            futex_wakes: 10,
            peak_rss_kib: Some(3072),
            // Worker 11 starts first, then 12; 11 serves 3, 12 serves 2.
            requests: vec![
                request(11, 10),
                request(12, 20),
                request(11, 30),
                request(12, 40),
                request(11, 50),
            ],
        }
    }

    fn config() -> ExperimentConfig {
        ExperimentConfig {
            modes: vec![Mode::PoolFutex],
            ..ExperimentConfig::classic(
                PathBuf::from("tracebench"),
                PathBuf::from("out"),
                crate::tests::never_started(),
            )
        }
    }

    #[test]
    fn csv_has_a_header_and_one_row_per_mode() {
        let text = csv(&config(), &[pool_result()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let header: Vec<&str> = lines[0].split(',').collect();
        let row: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(header.len(), row.len());
        let field = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
        assert_eq!(field("mode"), "pool-futex");
        assert_eq!(field("requests"), "10");
        assert_eq!(field("workers"), "5");
        assert_eq!(field("delay_s"), "1.000");
        assert_eq!(field("theory_s"), "2.000");
        assert_eq!(field("measured_s"), "2.040000");
        assert_eq!(field("deviation_pct"), "2.0");
        assert_eq!(field("p50_ms"), "1500.0");
        assert_eq!(field("p99_ms"), "2030.0");
        assert_eq!(field("cpu_s"), "0.042");
        assert_eq!(field("context_switches"), "205");
        assert_eq!(field("futex_waits"), "14");
        assert_eq!(field("peak_rss_kib"), "3072");
        assert_eq!(field("attributed"), "5");
        assert_eq!(field("serving_threads"), "2");
        assert_eq!(field("requests_per_thread"), "3;2");
    }

    #[test]
    fn an_unknown_peak_is_an_empty_field() {
        let mut result = pool_result();
        result.peak_rss_kib = None;
        let text = csv(&config(), &[result]);
        let row = text.lines().nth(1).unwrap();
        let header: Vec<&str> = CSV_HEADER.split(',').collect();
        let index = header.iter().position(|h| *h == "peak_rss_kib").unwrap();
        assert_eq!(row.split(',').nth(index), Some(""));
    }

    #[test]
    fn markdown_row_matches_the_csv() {
        let text = markdown(&config(), &[pool_result()]);
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 2, "{text}");
        let header_cells = rows[0].matches('|').count();
        assert_eq!(rows[1].matches('|').count(), header_cells, "{text}");
        assert_eq!(
            rows[1],
            "| pool-futex | 2.000 s (⌈N/W⌉·d) | 2.040 s | +2.0 % | 1500 ms | 2030 ms | 0.042 s | 5 | 0 | 205 | 14 | 3.0 MiB | 3+2 |"
        );
        assert!(text.starts_with("N = 10 concurrent requests"), "{text}");
        assert!(text.contains("d = 1 s"), "{text}");
        assert!(!text.contains("failed"), "{text}");
    }

    #[test]
    fn markdown_says_when_requests_failed() {
        let mut result = pool_result();
        result.failed = 2;
        assert!(markdown(&config(), &[result]).contains("**2 request(s) failed**"));
    }

    #[test]
    fn spread_groups_equal_counts() {
        assert_eq!(spread(&[(1, 2), (2, 2), (3, 2)]), "3 × 2");
        assert_eq!(spread(&[(1, 10)]), "1 × 10");
        assert_eq!(spread(&[(1, 3), (2, 1)]), "3+1");
        assert_eq!(spread(&[]), "none");
    }
}
