//! One JSON object per line per event, for scripts (`--format jsonl`,
//! `tracebench export --jsonl`).

use std::io::{self, Write};

use serde_json::{Value, json};

use crate::render::{entry_args_of, return_value, signal_name, syscall_name};
use tracebench_trace::{
    Creation, DataCapture, Event, EventKind, EventSink, ExitStatus, OffCpuReason, Sampled,
};

/// How `data_capture` is spelled in the JSON.
fn capture_name(capture: DataCapture) -> &'static str {
    match capture {
        DataCapture::Captured => "captured",
        DataCapture::Partial => "partial",
        DataCapture::NotCaptured => "not_captured",
    }
}

/// The JSON object for one event. Syscall records carry the raw numbers
/// and the strace-style decoded text side by side.
pub fn to_json(event: &Event) -> Value {
    let mut object = json!({ "time_ns": event.time_ns, "pid": event.pid, "tid": event.tid });
    let fields = match &event.kind {
        EventKind::SyscallEntry {
            nr,
            args,
            data,
            data_capture,
        } => json!({
            "type": "syscall_entry",
            "nr": nr,
            "name": syscall_name(*nr),
            "args": args,
            "text": entry_args_of(*nr, args, data, *data_capture),
            "data_capture": capture_name(*data_capture),
        }),
        EventKind::SyscallExit {
            nr,
            ret,
            data,
            data_capture,
        } => json!({
            "type": "syscall_exit",
            "nr": nr,
            "name": syscall_name(*nr),
            "ret": ret,
            "text": return_value(*nr, *ret),
            "data": String::from_utf8_lossy(data),
            "data_capture": capture_name(*data_capture),
        }),
        EventKind::Sampled { seen } => match seen {
            Sampled::Running => json!({ "type": "sampled", "state": "running" }),
            Sampled::Blocked { nr, args } => json!({
                "type": "sampled",
                "state": "blocked",
                "nr": nr,
                "name": syscall_name(*nr),
                "args": args,
            }),
            Sampled::Gone => json!({ "type": "sampled", "state": "gone" }),
        },
        EventKind::Spawned {
            child_tid,
            child_pid,
            creation,
        } => json!({
            "type": "spawned",
            "child_tid": child_tid,
            "child_pid": child_pid,
            "creation": match creation {
                Creation::Thread => "thread",
                Creation::Process => "process",
                Creation::Vfork => "vfork",
            },
        }),
        EventKind::Exited {
            status: ExitStatus::Code(code),
        } => json!({ "type": "exited", "code": code }),
        EventKind::Exited {
            status: ExitStatus::Signal(signal),
        } => {
            json!({ "type": "exited", "signal": signal_name(*signal) })
        }
        EventKind::Signal { signal, .. } => {
            json!({ "type": "signal", "signal": signal_name(*signal) })
        }
        EventKind::GroupStop { signal } => {
            json!({ "type": "group_stop", "signal": signal_name(*signal) })
        }
        EventKind::Exited {
            status: ExitStatus::Unknown,
        } => json!({ "type": "exited" }),
        EventKind::Exec { former_tid } => json!({ "type": "exec", "former_tid": former_tid }),
        EventKind::OffCpu { reason } => json!({ "type": "off_cpu", "reason": match reason {
            OffCpuReason::Preempted => "preempted",
            OffCpuReason::Sleep => "sleep",
            OffCpuReason::DiskSleep => "disk_sleep",
            OffCpuReason::Other => "other",
        }}),
        EventKind::OnCpu { cpu } => json!({ "type": "on_cpu", "cpu": cpu }),
        EventKind::Woken {
            waker_tid,
            waker_pid,
        } => json!({ "type": "woken", "waker_tid": waker_tid, "waker_pid": waker_pid }),
        EventKind::Lost { cpu, count } => json!({ "type": "lost", "cpu": cpu, "count": count }),
    };
    if let (Value::Object(target), Value::Object(extra)) = (&mut object, fields) {
        target.extend(extra);
    }
    object
}

/// Writes events as JSON lines.
pub struct JsonlWriter<W: Write> {
    out: W,
    error: Option<io::Error>,
}

impl<W: Write> JsonlWriter<W> {
    /// A writer to `out`.
    pub fn new(out: W) -> Self {
        JsonlWriter { out, error: None }
    }

    /// Flushes and returns the first write error, if any.
    pub fn finish(mut self) -> io::Result<W> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> EventSink for JsonlWriter<W> {
    fn event(&mut self, event: &Event) {
        if self.error.is_none() {
            let line = to_json(event).to_string();
            if let Err(e) = writeln!(self.out, "{line}") {
                self.error = Some(e);
            }
        }
    }
}
