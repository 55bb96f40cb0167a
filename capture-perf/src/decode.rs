//! Turning ring-buffer records (see [`crate::probe`] for their layout)
//! into [`Event`]s: the syscalls, context switches (off and on CPU),
//! wake-ups, thread and process creations, exits, execs and signals.

use foldhash::{HashMap, HashMapExt};
use std::collections::VecDeque;
use std::time::Instant;

use tracebench_trace::syscall::used_args;
use tracebench_trace::{
    Creation, DataCapture, Event, EventKind, ExitStatus, OffCpuReason, Selection,
};

use crate::probe::RAW;

/// The ids of the tracepoints the backend attached to.
#[derive(Debug, Clone)]
pub struct Ids {
    /// Syscall tracepoints: per-syscall ones (`syscalls:sys_enter_NAME`)
    /// or raw_syscalls' two; whether each is an exit, and how many
    /// argument fields an entry has.
    pub syscalls: HashMap<u64, SyscallPoint>,
    pub waking: u64,
    pub exec: u64,
    pub signal: u64,
    /// `signal_generate`: a signal sent to one of our threads (not an
    /// event of its own; it names the signal that kills a process whose
    /// threads the kernel then ends with SIGKILL).
    pub generate: u64,
    pub switch: u64,
    pub fork: u64,
    pub exit: u64,
    /// Whether sched_process_exit says if the exiting thread is its
    /// process's last (`group_dead`, 6.13 on).
    pub group_dead: bool,
}

/// One syscall tracepoint.
#[derive(Debug, Clone, Copy)]
pub struct SyscallPoint {
    pub exit: bool,
    pub args: usize,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}
fn i32_at(bytes: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Which records go on, decided in time order: syscall entries the
/// selection wants, an exit only after its entry, as under ptrace, and of
/// a context switch or a wake-up only the side that is one of our threads
/// (the kernel's filter let the record through for one of its threads,
/// not necessarily for both).
pub struct Pairing {
    selection: Selection,
    inside: HashMap<i32, u32>,
    /// Our threads and their processes, as the stream has shown them.
    ours: HashMap<i32, i32>,
    /// A spawned program before its exec: what it does until then is our
    /// fork's setup, not the program's, and is left out.
    before_exec: Option<i32>,
    /// Whether records were lost: a thread whose creation was among them
    /// is then taken for ours when it shows (the kernel follows it).
    adopt_unknown: bool,
}

impl Pairing {
    /// Pairing for `selection`.
    pub fn new(selection: Selection) -> Pairing {
        Pairing {
            selection,
            inside: HashMap::new(),
            ours: HashMap::new(),
            before_exec: None,
            adopt_unknown: false,
        }
    }

    /// Takes threads it was not told of for ours from now on: records
    /// were lost, and with them maybe some threads' creations.
    pub fn adopt_unknown(&mut self) {
        self.adopt_unknown = true;
    }

    /// Leaves out `tid`'s events until it enters execve (or execveat) or
    /// execs: a spawned program is traced from its exec, as under ptrace.
    /// An exec that fails ends in our fork's `_exit(127)`: its exit_group
    /// ends the wait too, so that it shows, as under ptrace, when execve
    /// itself is not traced.
    pub fn skip_until_exec(&mut self, tid: i32) {
        self.before_exec = Some(tid);
    }

    /// Whether `event` comes before the exec [`Pairing::skip_until_exec`]
    /// waits for (and so is left out).
    fn before_exec(&mut self, event: &Event) -> bool {
        if self.before_exec != Some(event.tid) {
            return false;
        }
        let execs = match &event.kind {
            EventKind::SyscallEntry { nr, .. } => [
                libc::SYS_execve,
                libc::SYS_execveat,
                libc::SYS_exit_group,
                libc::SYS_exit,
            ]
            .contains(&i64::from(*nr)),
            EventKind::Exec { .. } | EventKind::Exited { .. } => true,
            _ => false,
        };
        if execs {
            self.before_exec = None;
        }
        !execs
    }

    /// Counts `tid` of process `pid` as ours from the start.
    pub fn track(&mut self, tid: i32, pid: i32) {
        self.ours.insert(tid, pid);
    }

    /// Whether any thread followed is still alive, by /proc (an exit the
    /// stream has not reached yet, or whose record was lost, does not
    /// count); threads of process `except` (the root, reaped) aside.
    pub fn any_alive(&self, except: i32) -> bool {
        self.ours.iter().any(|(tid, pid)| {
            *pid != except && std::path::Path::new(&format!("/proc/{tid}")).exists()
        })
    }

    /// Whether `event`, the next in time order, goes on (the other side
    /// of a switch or a wake-up gets its process filled in).
    pub fn keep(&mut self, event: &mut Event) -> bool {
        if self.before_exec(event) {
            return false;
        }
        // Every thread followed was tracked, created by one (its creation
        // comes first) or took a followed thread's id in an exec: anything
        // else came through an id the kernel's set should not have held.
        let known = match &event.kind {
            EventKind::Lost { .. } => true,
            EventKind::Exec { former_tid } => {
                self.ours.contains_key(former_tid) || self.ours.contains_key(&event.tid)
            }
            _ => self.ours.contains_key(&event.tid),
        };
        let about_another = matches!(
            event.kind,
            EventKind::Woken { .. } | EventKind::OnCpu { .. } | EventKind::OffCpu { .. }
        );
        if !known && (!self.adopt_unknown || about_another) {
            return false;
        }
        match &event.kind {
            EventKind::Woken { .. } | EventKind::OnCpu { .. } | EventKind::OffCpu { .. } => {
                return match self.ours.get(&event.tid) {
                    Some(&pid) => {
                        event.pid = pid;
                        true
                    }
                    None => false,
                };
            }
            EventKind::Lost { .. } => return true,
            EventKind::Spawned {
                child_tid,
                child_pid,
                ..
            } => {
                self.ours.insert(*child_tid, *child_pid);
            }
            EventKind::Exec { former_tid } => {
                self.ours.remove(former_tid);
                // The execve it is inside of returns under the new id.
                if let Some(nr) = self.inside.remove(former_tid) {
                    self.inside.insert(event.tid, nr);
                }
            }
            _ => {}
        }
        if !matches!(event.kind, EventKind::Exited { .. }) {
            self.ours.insert(event.tid, event.pid);
        }
        match &event.kind {
            EventKind::SyscallEntry { nr, args, .. } => {
                if self.selection.matches(u64::from(*nr), args) {
                    self.inside.insert(event.tid, *nr);
                    true
                } else {
                    self.inside.remove(&event.tid);
                    false
                }
            }
            EventKind::SyscallExit { nr, .. } => self.inside.remove(&event.tid) == Some(*nr),
            EventKind::Exited { .. } => {
                self.inside.remove(&event.tid);
                self.ours.remove(&event.tid);
                true
            }
            _ => true,
        }
    }
}

/// Who and when of a record: its time, and the thread it fired in.
#[derive(Clone, Copy)]
struct Head {
    time_ns: u64,
    pid: i32,
    tid: i32,
}

impl Head {
    fn event(self, kind: EventKind) -> Event {
        Event {
            time_ns: self.time_ns,
            pid: self.pid,
            tid: self.tid,
            kind,
        }
    }
}

/// `clone(2)`'s flag for a thread of the same process.
const CLONE_THREAD: u64 = 0x10000;

/// `prev_state` of a context switch (the kernel's `TASK_REPORT` bits):
/// preempted, asleep (S, or I: idle), asleep uninterruptibly (D).
const STATE_PREEMPTED: u64 = 0x100;
const STATE_SLEEP: u64 = 0x01;
const STATE_DISK_SLEEP: u64 = 0x02;
const STATE_IDLE: u64 = 0x80;

/// What the decoder knows across records.
pub struct Decoder {
    ids: Ids,
    /// The process we spawned or attached to.
    root: i32,
    /// When its leader's exit was seen (its status comes from wait).
    pub root_exit_ns: Option<u64>,
    /// Records the ring had no room for, all CPUs.
    pub lost: u64,
    /// The last signal delivered to the root process, and when we read it.
    pub root_signal: Option<(i32, Instant)>,
    /// The root process's status, as its exit calls and signals say (for
    /// an attached one, which is not ours to reap).
    pub root_status: Option<ExitStatus>,
    /// Threads that called exit(2), and its code: their exit status.
    thread_exits: HashMap<i32, i32>,
    /// Processes on their way out, and the status every thread of theirs
    /// exits with: exit_group(2)'s code, or the fatal signal.
    group_exits: HashMap<i32, ExitStatus>,
    /// The last signal sent to each process that would end it if left to
    /// its default action: a fatal signal with no handler is turned into
    /// a SIGKILL of every thread when sent, and only that is delivered.
    fatal_sent: HashMap<i32, i32>,
    /// Our threads' processes, for the signals sent to a thread.
    pids: HashMap<i32, i32>,
}

/// Whether `signal`, left to its default action, ends the process.
fn fatal_by_default(signal: i32) -> bool {
    (1..=64).contains(&signal)
        && ![
            libc::SIGCHLD,
            libc::SIGCONT,
            libc::SIGURG,
            libc::SIGWINCH,
            libc::SIGSTOP,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
        ]
        .contains(&signal)
}

/// Why a thread left its CPU, from a switch's `prev_state`.
fn off_cpu_reason(state: u64) -> OffCpuReason {
    if state & STATE_PREEMPTED != 0 || state & 0xff == 0 {
        // Still runnable: preempted, or it yielded.
        OffCpuReason::Preempted
    } else if state & (STATE_SLEEP | STATE_IDLE) != 0 {
        OffCpuReason::Sleep
    } else if state & STATE_DISK_SLEEP != 0 {
        OffCpuReason::DiskSleep
    } else {
        OffCpuReason::Other
    }
}

impl Decoder {
    /// A decoder for a trace of `root`'s process tree.
    pub fn new(ids: Ids, root: i32) -> Decoder {
        Decoder {
            ids,
            root,
            root_exit_ns: None,
            lost: 0,
            root_signal: None,
            root_status: None,
            thread_exits: HashMap::new(),
            group_exits: HashMap::new(),
            fatal_sent: HashMap::new(),
            pids: HashMap::from_iter([(root, root)]),
        }
    }

    /// Counts `tid` of process `pid` as ours from the start.
    pub fn track(&mut self, tid: i32, pid: i32) {
        self.pids.insert(tid, pid);
    }

    /// Decodes one record read from the ring into `queue` (a record too
    /// short for its kind is skipped).
    pub fn record(&mut self, record: &[u8], queue: &mut VecDeque<Event>) {
        let _ = self.decode(record, queue);
    }

    /// Records `count` records lost on `cpu`, noticed at `time_ns`.
    pub fn lost(&mut self, cpu: u32, count: u64, time_ns: u64, queue: &mut VecDeque<Event>) {
        self.lost += count;
        queue.push_back(Event {
            time_ns,
            pid: 0,
            tid: 0,
            kind: EventKind::Lost { cpu, count },
        });
    }

    fn decode(&mut self, record: &[u8], out: &mut VecDeque<Event>) -> Option<()> {
        let time_ns = u64_at(record, 0)?;
        let tid = i32_at(record, 8)?;
        let pid = i32_at(record, 12)?;
        let raw = record.get(RAW..)?;
        let id = u64::from(u32_at(raw, 0)?);
        let head = Head { time_ns, pid, tid };
        let event = |kind| head.event(kind);
        if let Some(point) = self.ids.syscalls.get(&id).copied() {
            let kind = syscall(point, raw)?;
            self.note_exit_call(tid, pid, &kind);
            out.push_back(event(kind));
        } else if id == self.ids.switch {
            let cpu = u32_at(raw, 4)?;
            let reason = off_cpu_reason(u64_at(raw, 32)?);
            let next = i32_at(raw, 56)?;
            // Both sides: the pairing keeps the one (or two) of ours.
            out.push_back(event(EventKind::OffCpu { reason }));
            out.push_back(Event {
                time_ns,
                pid: 0,
                tid: next,
                kind: EventKind::OnCpu { cpu },
            });
        } else if id == self.ids.waking {
            // Fired in the waker: the woken thread is in the payload.
            out.push_back(Event {
                time_ns,
                pid: 0,
                tid: i32_at(raw, 24)?,
                kind: EventKind::Woken {
                    waker_tid: tid,
                    waker_pid: pid,
                },
            });
        } else if id == self.ids.fork {
            let child = i32_at(raw, 8)?;
            let thread = u64_at(raw, 32)? & CLONE_THREAD != 0;
            let child_pid = if thread { pid } else { child };
            self.pids.insert(child, child_pid);
            out.push_back(event(EventKind::Spawned {
                child_tid: child,
                child_pid,
                creation: if thread {
                    Creation::Thread
                } else {
                    Creation::Process
                },
            }));
        } else if id == self.ids.exit {
            self.exit(head, raw, out)?;
        } else if id == self.ids.exec {
            let new_pid = i32_at(raw, 12)?;
            // The threads the exec ended were killed; the process goes on.
            self.group_exits.remove(&new_pid);
            self.pids.remove(&i32_at(raw, 16)?);
            self.pids.insert(new_pid, new_pid);
            out.push_back(Event {
                time_ns,
                pid: new_pid,
                tid: new_pid,
                kind: EventKind::Exec {
                    former_tid: i32_at(raw, 16)?,
                },
            });
        } else if id == self.ids.generate {
            let signal = i32_at(raw, 8)?;
            let target = i32_at(raw, 36)?;
            if let (true, Some(&pid)) = (fatal_by_default(signal), self.pids.get(&target)) {
                self.fatal_sent.insert(pid, signal);
            }
        } else if id == self.ids.signal {
            self.signal(head, raw, out)?;
        }
        Some(())
    }
}

impl Decoder {
    /// A thread's end (`sched_process_exit`).
    fn exit(&mut self, head: Head, raw: &[u8], out: &mut VecDeque<Event>) -> Option<()> {
        let Head { time_ns, pid, tid } = head;
        let last = self.ids.group_dead && raw.get(32).copied()? != 0;
        let status = self.exit_status(tid, pid, raw)?;
        if pid == self.root && (last || self.root_exit_ns.is_none() && tid == pid) {
            // Its status comes from wait(2), when we reap it; it ends
            // when its last thread does (the leader may go first).
            self.root_exit_ns = Some(time_ns);
            self.root_status = Some(status);
        }
        // The root's is said once, at its process's end.
        if tid != self.root {
            out.push_back(head.event(EventKind::Exited { status }));
        }
        Some(())
    }

    /// A signal delivered (`signal_deliver`).
    fn signal(&mut self, head: Head, raw: &[u8], out: &mut VecDeque<Event>) -> Option<()> {
        let pid = head.pid;
        let signal = i32_at(raw, 8)?;
        if pid == self.root {
            self.root_signal = Some((signal, Instant::now()));
        }
        let first_of_end = !self.group_exits.contains_key(&pid);
        self.note_delivered(pid, signal, u64_at(raw, 24)?);
        // SIGKILL is how the kernel ends every thread of a process that
        // exits or is killed; no tracer sees it delivered (strace
        // neither), the exits say it. The first, though, stands for the
        // fatal signal sent that the kernel turned into them, which a
        // tracer shows. The tracepoint carries no siginfo: said by its
        // absence.
        let shown = match signal {
            libc::SIGKILL if first_of_end => self
                .fatal_sent
                .get(&pid)
                .copied()
                .filter(|&sent| sent != libc::SIGKILL),
            libc::SIGKILL => None,
            _ => Some(signal),
        };
        if let Some(signal) = shown {
            out.push_back(head.event(EventKind::Signal {
                signal,
                info: Vec::new(),
            }));
        }
        Some(())
    }

    /// Remembers the code of an exit or exit_group call `tid` enters.
    fn note_exit_call(&mut self, tid: i32, pid: i32, kind: &EventKind) {
        let EventKind::SyscallEntry { nr, args, .. } = kind else {
            return;
        };
        // The kernel keeps the low 8 bits of the code.
        let code = (args[0] & 0xff) as i32;
        match i64::from(*nr) {
            libc::SYS_exit => {
                self.thread_exits.insert(tid, code);
            }
            libc::SYS_exit_group => {
                self.group_exits
                    .entry(pid)
                    .or_insert(ExitStatus::Code(code));
            }
            _ => {}
        }
    }

    /// The status thread `tid` of `pid` exits with, as the exit record
    /// `raw` ends it: its own exit call's code, else its process's;
    /// unknown when neither was seen.
    fn exit_status(&mut self, tid: i32, pid: i32, raw: &[u8]) -> Option<ExitStatus> {
        let last = self.ids.group_dead && raw.get(32).copied()? != 0;
        let status = match self.thread_exits.remove(&tid) {
            Some(code) => ExitStatus::Code(code),
            None => self
                .group_exits
                .get(&pid)
                .copied()
                .unwrap_or(ExitStatus::Unknown),
        };
        if last || tid == pid && !self.ids.group_dead {
            self.group_exits.remove(&pid);
            self.fatal_sent.remove(&pid);
        }
        self.pids.remove(&tid);
        Some(status)
    }

    /// Notes signal `signal` delivered to a thread of `pid`, whose action
    /// is `handler`: left to a default that kills, it ends the process
    /// (SIGKILL: the fatal signal sent before it, if any, as wait(2) says).
    fn note_delivered(&mut self, pid: i32, signal: i32, handler: u64) {
        if handler != libc::SIG_DFL as u64 {
            if self.fatal_sent.get(&pid) == Some(&signal) {
                self.fatal_sent.remove(&pid); // handled
            }
            return;
        }
        if !fatal_by_default(signal) {
            return;
        }
        let signal = match signal {
            libc::SIGKILL => self.fatal_sent.get(&pid).copied().unwrap_or(signal),
            _ => signal,
        };
        self.group_exits
            .entry(pid)
            .or_insert(ExitStatus::Signal(signal));
    }
}

/// A syscall tracepoint's entry or exit.
fn syscall(point: SyscallPoint, raw: &[u8]) -> Option<EventKind> {
    // The number: raw_syscalls' long and the per-syscall int both start
    // at 8 (little-endian).
    let nr = u32_at(raw, 8)?;
    if point.exit {
        return Some(EventKind::SyscallExit {
            nr,
            ret: u64_at(raw, 16)? as i64,
            data: Vec::new(),
            data_capture: DataCapture::NotCaptured,
        });
    }
    let mut args = [0u64; 6];
    for (i, arg) in args.iter_mut().enumerate().take(point.args) {
        *arg = u64_at(raw, 16 + 8 * i)?;
    }
    // Entries the selection does not want (FUTEX_WAKE under futex=wait)
    // still go on: the pairing needs them to drop their exits.
    Some(EventKind::SyscallEntry {
        nr,
        args: used_args(u64::from(nr), args),
        data: Vec::new(),
        data_capture: DataCapture::NotCaptured,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Ids {
        Ids {
            syscalls: HashMap::new(),
            waking: 1,
            exec: 2,
            signal: 3,
            generate: 7,
            switch: 4,
            fork: 5,
            exit: 6,
            group_dead: true,
        }
    }

    /// A record as our programs write it: header, then `fields` of the
    /// raw tracepoint data at their offsets.
    fn record(tracepoint: u32, cpu: u32, fields: &[(usize, u64)]) -> Vec<u8> {
        let mut record = vec![0u8; RAW + 64];
        record[..8].copy_from_slice(&1000u64.to_ne_bytes());
        record[8..12].copy_from_slice(&7i32.to_ne_bytes()); // tid
        record[12..16].copy_from_slice(&5i32.to_ne_bytes()); // pid
        record[RAW..RAW + 4].copy_from_slice(&tracepoint.to_ne_bytes());
        record[RAW + 4..RAW + 8].copy_from_slice(&cpu.to_ne_bytes());
        for &(at, value) in fields {
            record[RAW + at..RAW + at + 8].copy_from_slice(&value.to_ne_bytes());
        }
        record
    }

    fn decode(record: &[u8]) -> Vec<Event> {
        let mut queue = VecDeque::new();
        Decoder::new(ids(), 1).record(record, &mut queue);
        queue.into()
    }

    #[test]
    fn a_switch_gives_both_sides_and_the_pairing_keeps_ours() {
        // prev 7 (D), next 9, on CPU 1.
        let events = decode(&record(4, 1, &[(24, 7), (32, 0x02), (56, 9)]));
        assert_eq!(events.len(), 2);
        assert!(matches!(
            events[0].kind,
            EventKind::OffCpu {
                reason: OffCpuReason::DiskSleep
            }
        ));
        assert_eq!(
            (events[1].tid, &events[1].kind),
            (9, &EventKind::OnCpu { cpu: 1 })
        );
        let mut pairing = Pairing::new(Selection::default());
        pairing.track(7, 5);
        let kept: Vec<i32> = events
            .into_iter()
            .filter_map(|mut e| pairing.keep(&mut e).then_some(e.tid))
            .collect();
        assert_eq!(kept, [7], "9 is not ours");
    }

    #[test]
    fn a_thread_never_told_of_is_dropped_until_records_are_lost() {
        let at = |tid, kind| Event {
            time_ns: 10,
            pid: 40,
            tid,
            kind,
        };
        let write = || {
            at(
                42,
                EventKind::SyscallEntry {
                    nr: libc::SYS_write as u32,
                    args: [1, 0, 1, 0, 0, 0],
                    data: Vec::new(),
                    data_capture: DataCapture::NotCaptured,
                },
            )
        };
        let mut pairing = Pairing::new(Selection::default());
        assert!(!pairing.keep(&mut write()), "an id the set should not hold");
        pairing.adopt_unknown();
        assert!(
            pairing.keep(&mut write()),
            "its creation may have been lost"
        );
        // Still not someone else's switch.
        let mut on = at(43, EventKind::OnCpu { cpu: 0 });
        assert!(!pairing.keep(&mut on));
    }

    #[test]
    fn prev_state_says_preempted_asleep_or_blocked() {
        assert_eq!(off_cpu_reason(0x100), OffCpuReason::Preempted);
        assert_eq!(off_cpu_reason(0), OffCpuReason::Preempted);
        assert_eq!(off_cpu_reason(0x01), OffCpuReason::Sleep);
        assert_eq!(off_cpu_reason(0x80), OffCpuReason::Sleep);
        assert_eq!(off_cpu_reason(0x02), OffCpuReason::DiskSleep);
        assert_eq!(off_cpu_reason(0x04), OffCpuReason::Other);
    }

    #[test]
    fn a_fork_says_thread_or_process_from_its_clone_flags() {
        let thread = decode(&record(5, 0, &[(8, 8), (32, CLONE_THREAD | 0x100)]));
        let process = decode(&record(5, 0, &[(8, 9), (32, 0x11)]));
        assert_eq!(
            thread[0].kind,
            EventKind::Spawned {
                child_tid: 8,
                child_pid: 5,
                creation: Creation::Thread
            }
        );
        assert_eq!(
            process[0].kind,
            EventKind::Spawned {
                child_tid: 9,
                child_pid: 9,
                creation: Creation::Process
            }
        );
    }

    #[test]
    fn a_short_record_is_skipped() {
        let whole = record(4, 1, &[(24, 7), (56, 9)]);
        assert!(decode(&whole[..RAW + 40]).is_empty());
    }
}
