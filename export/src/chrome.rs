//! Chrome trace event JSON, which ui.perfetto.dev and chrome://tracing
//! open: a named track per thread, each traced syscall a slice from entry
//! to exit, thread creation, exit, signals and exec as instants.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use serde_json::json;

use crate::render::{entry_args_of, return_value, signal_name, syscall_name};
use tracebench_analysis::futexstat::{FutexStats, WakeMatch};
use tracebench_trace::{Event, EventKind, EventSink, ExitStatus, OffCpuReason};

struct Open {
    nr: u32,
    pid: i32,
    start_ns: u64,
    text: String,
}

/// The name of an off-CPU slice.
fn off_cpu_name(reason: OffCpuReason) -> &'static str {
    match reason {
        OffCpuReason::Preempted => "preempted (runnable)",
        OffCpuReason::Sleep => "off-cpu (sleep)",
        OffCpuReason::DiskSleep => "off-cpu (disk sleep)",
        OffCpuReason::Other => "off-cpu",
    }
}

/// Streams `events` to `out` as one Chrome trace JSON document.
pub fn write<W: Write>(events: impl IntoIterator<Item = Event>, out: W) -> io::Result<W> {
    write_named(events, &HashMap::new(), out)
}

/// [`write()`], with the threads' names (a recording's threads.json, by
/// tid): Perfetto then shows `worker-0` rather than a bare tid, and each
/// process by its main thread's name. Each FUTEX_WAKE is joined by a flow
/// arrow to every wait it ended (matched as `-c`'s futex section matches
/// them), so Perfetto draws who woke whom.
pub fn write_named<W: Write>(
    events: impl IntoIterator<Item = Event>,
    names: &HashMap<i32, String>,
    mut out: W,
) -> io::Result<W> {
    out.write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n")?;
    let mut document = Document {
        out,
        first_record: true,
        origin: None,
        named: HashSet::new(),
        named_processes: HashSet::new(),
        names,
        open: HashMap::new(),
        off_cpu: HashMap::new(),
        last_ns: 0,
        futex: FutexStats::new(),
        flows: 0,
    };
    document.futex.keep_matches();
    for event in events {
        document.event(&event)?;
        document.futex.event(&event);
        for woke in document.futex.take_matches() {
            document.flow(&woke)?;
        }
    }
    document.finish()
}

fn micros(ns: u64, origin: u64) -> f64 {
    ns.saturating_sub(origin) as f64 / 1000.0
}

/// A Chrome trace being written.
struct Document<'a, W: Write> {
    out: W,
    first_record: bool,
    origin: Option<u64>,
    /// Threads whose name record is out.
    named: HashSet<i32>,
    /// Processes whose name record is out.
    named_processes: HashSet<i32>,
    /// Thread names the recording kept.
    names: &'a HashMap<i32, String>,
    /// Calls entered and not yet returned, by thread.
    open: HashMap<i32, Open>,
    /// Threads off their CPU (perf backend): since when, and why.
    off_cpu: HashMap<i32, (u64, OffCpuReason)>,
    last_ns: u64,
    /// Matches wakes to the waits they ended, for the flow arrows.
    futex: FutexStats,
    /// Flow arrows drawn so far (each one's id).
    flows: u64,
}

impl<W: Write> Document<'_, W> {
    fn emit(&mut self, value: serde_json::Value) -> io::Result<()> {
        if !self.first_record {
            self.out.write_all(b",\n")?;
        }
        self.first_record = false;
        serde_json::to_writer(&mut self.out, &value)?;
        Ok(())
    }

    fn event(&mut self, event: &Event) -> io::Result<()> {
        let origin = *self.origin.get_or_insert(event.time_ns);
        self.last_ns = self.last_ns.max(event.time_ns);
        let (pid, tid) = (event.pid, event.tid);
        self.name_process_and_thread(pid, tid)?;
        let ts = micros(event.time_ns, origin);
        let instant = |name: String| json!({"name": name, "ph": "i", "s": "t", "pid": pid, "tid": tid, "ts": ts});
        match &event.kind {
            EventKind::SyscallEntry {
                nr,
                args,
                data,
                data_capture,
            } => {
                let text = entry_args_of(*nr, args, data, *data_capture);
                let start_ns = event.time_ns;
                self.open.insert(
                    tid,
                    Open {
                        nr: *nr,
                        pid,
                        start_ns,
                        text,
                    },
                );
            }
            EventKind::SyscallExit { nr, ret, .. } => {
                let (start_ns, text) = match self.open.remove(&tid) {
                    Some(o) if o.nr == *nr => (o.start_ns, o.text),
                    _ => (event.time_ns, String::new()),
                };
                self.emit(json!({"name": syscall_name(*nr), "cat": "syscall", "ph": "X", "pid": pid, "tid": tid,
                    "ts": micros(start_ns, origin), "dur": micros(event.time_ns, start_ns),
                    "args": {"args": text, "ret": return_value(*nr, *ret)}}))?;
            }
            EventKind::OffCpu { reason } => {
                self.off_cpu.insert(tid, (event.time_ns, *reason));
            }
            EventKind::OnCpu { .. } => {
                if let Some((since, reason)) = self.off_cpu.remove(&tid) {
                    self.emit(json!({"name": off_cpu_name(reason), "cat": "sched", "ph": "X", "pid": pid,
                        "tid": tid, "ts": micros(since, origin), "dur": micros(event.time_ns, since)}))?;
                }
            }
            // Sampled states are timelines, not calls: the dashboard and
            // `-c` show them.
            EventKind::Sampled { .. } => {}
            other => {
                if let Some(name) = instant_name(other) {
                    self.emit(instant(name))?;
                }
            }
        }
        Ok(())
    }

    /// A flow arrow from a FUTEX_WAKE (its slice on the waker's track) to
    /// the end of the wait it ended (the waiter's slice).
    fn flow(&mut self, woke: &WakeMatch) -> io::Result<()> {
        let origin = self.origin.unwrap_or(0);
        self.flows += 1;
        let id = self.flows;
        let pid = woke.key.pid;
        self.emit(
            json!({"name": "futex wake", "cat": "futex", "ph": "s", "id": id,
            "pid": pid, "tid": woke.waker_tid, "ts": micros(woke.wake_entry_ns, origin)}),
        )?;
        // Just inside the wait's slice, which the arrow ends on ("bp": "e":
        // the enclosing slice).
        let end = micros(woke.wait_return_ns, origin) - 0.001;
        self.emit(
            json!({"name": "futex wake", "cat": "futex", "ph": "f", "bp": "e", "id": id,
            "pid": pid, "tid": woke.waiter_tid, "ts": end}),
        )
    }

    /// The name records of a thread's process and of the thread, the
    /// first time each is seen: the recorded names where known.
    fn name_process_and_thread(&mut self, pid: i32, tid: i32) -> io::Result<()> {
        if pid > 0 && self.named_processes.insert(pid) {
            let name = match self.names.get(&pid) {
                Some(name) => format!("{name} ({pid})"),
                None => format!("process {pid}"),
            };
            self.emit(json!({"name": "process_name", "ph": "M", "pid": pid,
                "args": {"name": name}}))?;
        }
        if self.named.insert(tid) {
            let name = match (self.names.get(&tid), pid == tid) {
                (Some(name), true) => format!("{name} {tid} (main)"),
                (Some(name), false) => format!("{name} {tid}"),
                (None, true) => format!("{tid} (main)"),
                (None, false) => tid.to_string(),
            };
            self.emit(
                json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                "args": {"name": name}}),
            )?;
        }
        Ok(())
    }

    /// Calls still in progress when the trace ended run to its end; then
    /// the document is closed.
    fn finish(mut self) -> io::Result<W> {
        let origin = self.origin.unwrap_or(0);
        let mut unfinished: Vec<_> = std::mem::take(&mut self.open).into_iter().collect();
        unfinished.sort_by_key(|(tid, _)| *tid);
        for (tid, o) in unfinished {
            // In its own process's track, not a fake process of its tid.
            self.emit(json!({"name": syscall_name(o.nr), "cat": "syscall", "ph": "X", "tid": tid,
                "pid": o.pid, "ts": micros(o.start_ns, origin), "dur": micros(self.last_ns, o.start_ns),
                "args": {"args": o.text, "ret": "unfinished"}}))?;
        }
        self.out.write_all(b"\n]}\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The name of the instant an event of this kind shows as, if any.
fn instant_name(kind: &EventKind) -> Option<String> {
    Some(match kind {
        EventKind::Spawned { child_tid, .. } => format!("spawn {child_tid}"),
        EventKind::Exited { status } => match status {
            ExitStatus::Code(code) => format!("exit {code}"),
            ExitStatus::Signal(signal) => format!("killed by {}", signal_name(*signal)),
            ExitStatus::Unknown => "exit".to_owned(),
        },
        EventKind::Signal { signal, .. } => signal_name(*signal),
        EventKind::GroupStop { signal } => format!("stopped by {}", signal_name(*signal)),
        EventKind::Exec { .. } => "exec".to_owned(),
        EventKind::Woken { waker_tid, .. } => format!("woken by {waker_tid}"),
        EventKind::Lost { cpu, count } => format!("{count} events lost (CPU {cpu} buffer full)"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use syscalls::Sysno;
    use tracebench_trace::DataCapture;

    #[test]
    fn threads_and_processes_are_named_and_unfinished_calls_stay_in_their_process() {
        // Issue 15: each killed thread's last slice made a fake process of
        // its tid, and threads were bare tids though the recording knew
        // worker-0….
        let futex = Sysno::futex.id() as u32;
        let entry = Event {
            time_ns: 5,
            pid: 10,
            tid: 12,
            kind: EventKind::SyscallEntry {
                nr: futex,
                args: [0x10, 0, 0, 0, 0, 0],
                data: vec![],
                data_capture: DataCapture::Captured,
            },
        };
        let leader = Event {
            time_ns: 1,
            pid: 10,
            tid: 10,
            kind: EventKind::Signal {
                signal: 10,
                info: Vec::new(),
            },
        };
        let names = HashMap::from([(10, "server".to_owned()), (12, "worker-0".to_owned())]);
        let out = write_named([leader, entry], &names, Vec::new()).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let records = doc["traceEvents"].as_array().unwrap();
        let named = |kind: &str| -> Vec<String> {
            records
                .iter()
                .filter(|r| r["name"] == kind)
                .map(|r| r["args"]["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(named("process_name"), ["server (10)"]);
        assert_eq!(named("thread_name"), ["server 10 (main)", "worker-0 12"]);
        let unfinished = records
            .iter()
            .find(|r| r["args"]["ret"] == "unfinished")
            .expect("the futex wait runs to the end");
        assert_eq!(unfinished["pid"], 10, "{unfinished}");
        assert_eq!(unfinished["tid"], 12);
    }

    #[test]
    fn slices_and_instants_form_valid_json() {
        let futex = Sysno::futex.id() as u32;
        let e = |time_ns, tid, kind| Event {
            time_ns,
            pid: 1,
            tid,
            kind,
        };
        let events = vec![
            e(
                1_000,
                1,
                EventKind::Spawned {
                    child_tid: 2,
                    child_pid: 1,
                    creation: tracebench_trace::Creation::Thread,
                },
            ),
            e(
                2_000,
                2,
                EventKind::SyscallEntry {
                    nr: futex,
                    args: [16, 128, 0, 0, 0, 0],
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            ),
            e(
                9_000,
                2,
                EventKind::SyscallExit {
                    nr: futex,
                    ret: 0,
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            ),
            e(
                9_500,
                1,
                EventKind::SyscallEntry {
                    nr: futex,
                    args: [16, 128, 1, 0, 0, 0],
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            ),
        ];
        let bytes = write(events, Vec::new()).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let records = doc["traceEvents"].as_array().unwrap();
        check_trace_event_format(records);
        let slice = records
            .iter()
            .find(|r| r["ph"] == "X" && r["tid"] == 2)
            .unwrap();
        assert_eq!(slice["name"], "futex");
        assert_eq!(slice["ts"], 1.0);
        assert_eq!(slice["dur"], 7.0);
        assert!(
            records
                .iter()
                .any(|r| r["ph"] == "i" && r["name"] == "spawn 2")
        );
        assert!(records.iter().any(|r| r["args"]["ret"] == "unfinished"));
        // One process name, two thread names.
        assert_eq!(records.iter().filter(|r| r["ph"] == "M").count(), 3);
    }

    /// The Trace Event Format's rules for what we write: the fields each
    /// phase needs, and every flow's end after its start.
    fn check_trace_event_format(records: &[serde_json::Value]) {
        let number = |r: &serde_json::Value, field: &str| {
            assert!(r[field].is_number(), "{field} in {r}");
        };
        let mut flow_starts = HashMap::new();
        for r in records {
            assert!(r["name"].is_string(), "name in {r}");
            number(r, "pid");
            match r["ph"].as_str().unwrap_or_else(|| panic!("ph in {r}")) {
                "X" => ["tid", "ts", "dur"].iter().for_each(|f| number(r, f)),
                "i" => {
                    ["tid", "ts"].iter().for_each(|f| number(r, f));
                    assert!(["g", "p", "t"].contains(&r["s"].as_str().unwrap()), "{r}");
                }
                "M" => {
                    assert!(["process_name", "thread_name"].contains(&r["name"].as_str().unwrap()));
                    assert!(r["args"]["name"].is_string(), "{r}");
                }
                "s" => {
                    ["tid", "ts", "id"].iter().for_each(|f| number(r, f));
                    flow_starts.insert(r["id"].as_u64().unwrap(), r["ts"].as_f64().unwrap());
                }
                "f" => {
                    ["tid", "ts", "id"].iter().for_each(|f| number(r, f));
                    assert_eq!(r["bp"], "e", "{r}");
                    let start = flow_starts[&r["id"].as_u64().unwrap()];
                    assert!(r["ts"].as_f64().unwrap() >= start, "{r}");
                }
                other => panic!("phase {other} in {r}"),
            }
        }
    }

    #[test]
    fn each_futex_wake_has_an_arrow_to_the_wait_it_ended() {
        // Issue 15: Perfetto should draw who woke whom.
        let futex = Sysno::futex.id() as u32;
        let e = |time_ns, tid, kind| Event {
            time_ns,
            pid: 1,
            tid,
            kind,
        };
        let call = |args: [u64; 6]| EventKind::SyscallEntry {
            nr: futex,
            args,
            data: vec![],
            data_capture: DataCapture::Captured,
        };
        let ret = |ret| EventKind::SyscallExit {
            nr: futex,
            ret,
            data: vec![],
            data_capture: DataCapture::Captured,
        };
        let events = vec![
            e(1_000, 2, call([16, 128, 0, 0, 0, 0])), // 2 waits on 16
            e(5_000, 1, call([16, 129, 1, 0, 0, 0])), // 1 wakes one
            e(5_500, 1, ret(1)),
            e(6_000, 2, ret(0)), // 2 is woken
        ];
        let bytes = write(events, Vec::new()).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let records = doc["traceEvents"].as_array().unwrap();
        check_trace_event_format(records);
        let start = records
            .iter()
            .find(|r| r["ph"] == "s")
            .expect("a flow start");
        let end = records.iter().find(|r| r["ph"] == "f").expect("a flow end");
        assert_eq!(
            (start["tid"].as_i64(), start["ts"].as_f64()),
            (Some(1), Some(4.0))
        );
        assert_eq!(end["tid"], 2);
        assert!(end["ts"].as_f64().unwrap() < 5.0 && end["ts"].as_f64().unwrap() > 4.9);
        assert_eq!(start["id"], end["id"]);
    }
}
