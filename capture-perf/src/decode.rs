//! Turning ring-buffer records into [`Event`]s: tracepoint samples (the
//! syscalls, wake-ups, execs and signals), the kernel's context-switch
//! records (on and off CPU), its fork and exit records, and its count of
//! records lost.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::VecDeque;
use std::time::Instant;

use tracebench_trace::syscall::used_args;
use tracebench_trace::{
    Creation, DataCapture, Event, EventKind, ExitStatus, OffCpuReason, Selection,
};

use crate::merge::FromSet;
use crate::sys;

/// The ids of the tracepoints the backend opened.
#[derive(Debug, Clone)]
pub struct Ids {
    /// Syscall tracepoints: per-syscall ones (`syscalls:sys_enter_NAME`)
    /// or raw_syscalls' two; whether each is an exit, and how many
    /// argument fields an entry has.
    pub syscalls: HashMap<u64, SyscallPoint>,
    pub waking: u64,
    pub exec: u64,
    pub signal: u64,
}

/// One syscall tracepoint.
#[derive(Debug, Clone, Copy)]
pub struct SyscallPoint {
    pub exit: bool,
    pub args: usize,
}

/// Where a sample's raw tracepoint data starts: header (8), identifier
/// (8), pid and tid (8), time (8), raw size (4).
const RAW: usize = 36;
/// The trailer of every other record (`sample_id_all` with TID, TIME and
/// IDENTIFIER): pid, tid, time and the event's id, at its end.
const TRAILER: usize = 24;

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
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

/// Which records go on, decided in time order after the CPUs' rings are
/// merged (a thread that migrated while blocked has its entry in one ring
/// and its exit in another): syscall entries the selection wants, an exit
/// only after its entry, as under ptrace, and wake-ups of our threads only.
pub struct Pairing {
    selection: Selection,
    inside: HashMap<i32, u32>,
    /// Our threads and their processes, as the stream has shown them.
    ours: HashMap<i32, i32>,
    /// A spawned program before its exec: what it does until then is our
    /// fork's setup, not the program's, and is left out.
    before_exec: Option<i32>,
    /// Whether a thread can be followed twice (see [`Pairing::once_per_thread`]).
    once_per_thread: bool,
    /// The set of events each thread's records are taken from.
    owners: HashMap<i32, u32>,
    /// The latest exits kept, and from which set: the other set's copy of
    /// an exit comes right after it and is dropped. Anything else under
    /// that tid is a new thread (whose creation may have been lost).
    exited: VecDeque<(i32, u32)>,
}

/// How many recent exits [`Pairing`] remembers.
const RECENT_EXITS: usize = 64;

impl Pairing {
    /// Pairing for `selection`.
    pub fn new(selection: Selection) -> Pairing {
        Pairing {
            selection,
            inside: HashMap::new(),
            ours: HashMap::new(),
            before_exec: None,
            once_per_thread: false,
            owners: HashMap::new(),
            exited: VecDeque::new(),
        }
    }

    /// Keeps one copy of each thread's records when a thread can be
    /// followed by two sets of events: attached to a running process, a
    /// thread that a followed thread created during the scan of
    /// /proc/PID/task inherited its creator's events, and is then found and
    /// opened by the next scan too. Every record carries its event's id,
    /// hence its set; the set of a thread's first record in time order is
    /// the one kept (the one that followed it from earliest on), and the
    /// other's copies are dropped.
    pub fn once_per_thread(&mut self) {
        self.once_per_thread = true;
    }

    /// Whether `event`, from event set `set` (0: a machine-wide event),
    /// is the copy kept.
    fn is_kept_copy(&mut self, event: &Event, set: u32) -> bool {
        match event.kind {
            EventKind::Spawned { child_tid, .. } => {
                // Reported once already (the decoder keeps one fork record
                // per task), and a new task under a tid used before.
                self.owners.remove(&child_tid);
                return true;
            }
            EventKind::Exec { former_tid } if former_tid != event.tid => {
                // The exec'ing thread takes the leader's tid, and its set
                // goes with it.
                match self.owners.remove(&former_tid) {
                    Some(kept) => self.owners.insert(event.tid, kept),
                    None => self.owners.remove(&event.tid),
                };
            }
            _ => {}
        }
        if set == 0 || !self.once_per_thread {
            return true;
        }
        let exit = matches!(event.kind, EventKind::Exited { .. });
        if exit
            && !self.owners.contains_key(&event.tid)
            && self
                .exited
                .iter()
                .any(|&(tid, kept)| tid == event.tid && kept != set)
        {
            // The other set's copy of an exit already kept.
            return false;
        }
        let kept = *self.owners.entry(event.tid).or_insert(set) == set;
        if kept && exit {
            // Its tid may come back as a new thread, whose creation may be
            // lost: it starts afresh.
            self.owners.remove(&event.tid);
            if self.exited.len() == RECENT_EXITS {
                self.exited.pop_front();
            }
            self.exited.push_back((event.tid, set));
        }
        kept
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

    /// Whether `event`, the next in time order, goes on (a wake-up gets
    /// the woken thread's process filled in).
    pub fn keep(&mut self, event: &mut Event, set: u32) -> bool {
        if self.before_exec(event) || !self.is_kept_copy(event, set) {
            return false;
        }
        match &event.kind {
            EventKind::Woken { .. } => {
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

/// What the decoder knows across records.
pub struct Decoder {
    ids: Ids,
    /// Tasks whose creation was reported (a fork record comes once per
    /// event of the parent that asks for it).
    forked: HashSet<i32>,
    /// The process we spawned or attached to.
    root: i32,
    /// When its leader's exit was seen (its status comes from wait).
    pub root_exit_ns: Option<u64>,
    /// Records the kernel dropped, all CPUs.
    pub lost: u64,
    /// The last signal delivered to the root process, and when we read it.
    pub root_signal: Option<(i32, Instant)>,
    /// Which set each per-thread event belongs to, by id.
    sets: HashMap<u64, u32>,
}

/// Where one record's events go: its ring's queue, each event with the
/// set of the event that wrote the record.
pub struct Out<'a> {
    queue: &'a mut VecDeque<FromSet>,
    set: u32,
}

impl Out<'_> {
    fn push(&mut self, event: Event) {
        self.queue.push_back((event, self.set));
    }
}

impl Decoder {
    /// A decoder for a trace of `root`'s process tree, whose per-thread
    /// events belong to `sets` (by event id).
    pub fn new(ids: Ids, root: i32, sets: HashMap<u64, u32>) -> Decoder {
        Decoder {
            ids,
            forked: HashSet::new(),
            root,
            root_exit_ns: None,
            lost: 0,
            root_signal: None,
            sets,
        }
    }

    /// Decodes one record read from CPU `cpu`'s ring into `out`, each
    /// event with the set of the event that wrote the record (0: none).
    pub fn record(&mut self, cpu: u32, record: &[u8], queue: &mut VecDeque<FromSet>) {
        let (Some(kind), Some(misc)) = (u32_at(record, 0), u16_at(record, 4)) else {
            return;
        };
        let id = match kind {
            sys::RECORD_SAMPLE => u64_at(record, 8),
            sys::RECORD_LOST => None,
            _ => record
                .len()
                .checked_sub(8)
                .and_then(|at| u64_at(record, at)),
        };
        let set = id.and_then(|id| self.sets.get(&id).copied()).unwrap_or(0);
        let _ = self.decode(kind, misc, cpu, record, &mut Out { queue, set });
    }

    fn decode(
        &mut self,
        kind: u32,
        misc: u16,
        cpu: u32,
        record: &[u8],
        out: &mut Out<'_>,
    ) -> Option<()> {
        match kind {
            sys::RECORD_SAMPLE => self.sample(record, out),
            sys::RECORD_SWITCH => self.switch(misc, cpu, record, out),
            sys::RECORD_FORK | sys::RECORD_EXIT => self.task(kind, record, out),
            sys::RECORD_LOST => {
                let count = u64_at(record, 16)?;
                self.lost += count;
                let time_ns = u64_at(record, record.len().checked_sub(16)?)?;
                out.push(Event {
                    time_ns,
                    pid: 0,
                    tid: 0,
                    kind: EventKind::Lost { cpu, count },
                });
                Some(())
            }
            _ => Some(()),
        }
    }

    /// A tracepoint sample.
    fn sample(&mut self, record: &[u8], out: &mut Out<'_>) -> Option<()> {
        let pid = i32_at(record, 16)?;
        let tid = i32_at(record, 20)?;
        let time_ns = u64_at(record, 24)?;
        let raw = record.get(RAW..)?;
        let id = u64::from(u16_at(raw, 0)?);
        let event = |kind| Event {
            time_ns,
            pid,
            tid,
            kind,
        };
        if id == self.ids.waking {
            // Machine-wide, and fired in the waker: the woken thread is in
            // the payload. Whether it is ours is decided after the merge
            // (its creation may sit in another CPU's ring), by [`Pairing`].
            let woken = i32_at(raw, 24)?;
            out.push(Event {
                time_ns,
                pid: 0,
                tid: woken,
                kind: EventKind::Woken {
                    waker_tid: tid,
                    waker_pid: pid,
                },
            });
            return Some(());
        }
        let syscall = self.ids.syscalls.get(&id).copied();
        if let Some(SyscallPoint {
            exit: false,
            args: count,
        }) = syscall
        {
            // The number: raw_syscalls' long and the per-syscall int both
            // start at 8 (little-endian).
            let nr = u64::from(u32_at(raw, 8)?);
            let mut args = [0u64; 6];
            for (i, arg) in args.iter_mut().enumerate().take(count) {
                *arg = u64_at(raw, 16 + 8 * i)?;
            }
            // Entries the selection does not want (FUTEX_WAKE under
            // futex=wait) still go on: the pairing after the merge needs
            // them to drop their exits (see [`Pairing`]).
            out.push(event(EventKind::SyscallEntry {
                nr: nr as u32,
                args: used_args(nr, args),
                data: Vec::new(),
                data_capture: DataCapture::NotCaptured,
            }));
        } else if syscall.is_some() {
            out.push(event(EventKind::SyscallExit {
                nr: u32_at(raw, 8)?,
                ret: u64_at(raw, 16)? as i64,
                data: Vec::new(),
                data_capture: DataCapture::NotCaptured,
            }));
        } else if id == self.ids.exec {
            let new_pid = i32_at(raw, 12)?;
            let former_tid = i32_at(raw, 16)?;
            out.push(Event {
                time_ns,
                pid: new_pid,
                tid: new_pid,
                kind: EventKind::Exec { former_tid },
            });
        } else if id == self.ids.signal {
            let signal = i32_at(raw, 8)?;
            if pid == self.root {
                self.root_signal = Some((signal, Instant::now()));
            }
            // The tracepoint carries no siginfo: said by its absence.
            out.push(event(EventKind::Signal {
                signal,
                info: Vec::new(),
            }));
        }
        Some(())
    }

    /// A context switch of one of our threads on `cpu`.
    fn switch(&mut self, misc: u16, cpu: u32, record: &[u8], out: &mut Out<'_>) -> Option<()> {
        let trailer = record.len().checked_sub(TRAILER)?;
        let pid = i32_at(record, trailer)?;
        let tid = i32_at(record, trailer + 4)?;
        let time_ns = u64_at(record, trailer + 8)?;
        let kind = if misc & sys::MISC_SWITCH_OUT == 0 {
            EventKind::OnCpu { cpu }
        } else if misc & sys::MISC_SWITCH_OUT_PREEMPT != 0 {
            EventKind::OffCpu {
                reason: OffCpuReason::Preempted,
            }
        } else {
            EventKind::OffCpu {
                reason: OffCpuReason::Sleep,
            }
        };
        out.push(Event {
            time_ns,
            pid,
            tid,
            kind,
        });
        Some(())
    }

    /// A task created or gone: `{pid, ppid, tid, ptid, time}`.
    fn task(&mut self, kind: u32, record: &[u8], out: &mut Out<'_>) -> Option<()> {
        let pid = i32_at(record, 8)?;
        let ppid = i32_at(record, 12)?;
        let tid = i32_at(record, 16)?;
        let ptid = i32_at(record, 20)?;
        let time_ns = u64_at(record, 24)?;
        if kind == sys::RECORD_FORK {
            // Once per task, whichever of the parent's events said so.
            if !self.forked.insert(tid) {
                return Some(());
            }
            out.push(Event {
                time_ns,
                pid: ppid,
                tid: ptid,
                kind: EventKind::Spawned {
                    child_tid: tid,
                    child_pid: pid,
                    creation: if pid == ppid {
                        Creation::Thread
                    } else {
                        Creation::Process
                    },
                },
            });
            return Some(());
        }
        // Only our tasks' events report exits: no need to know it first
        // (its other records may sit in a ring read later).
        self.forked.remove(&tid);
        if tid == self.root {
            // Its status comes from wait(2), when we reap it.
            self.root_exit_ns = Some(time_ns);
            return Some(());
        }
        out.push(Event {
            time_ns,
            pid,
            tid,
            kind: EventKind::Exited {
                status: ExitStatus::Unknown,
            },
        });
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time_ns: u64, tid: i32, kind: EventKind) -> Event {
        Event {
            time_ns,
            pid: 1,
            tid,
            kind,
        }
    }

    fn signal(time_ns: u64, tid: i32) -> Event {
        at(
            time_ns,
            tid,
            EventKind::Signal {
                signal: 10,
                info: Vec::new(),
            },
        )
    }

    fn exited(time_ns: u64, tid: i32) -> Event {
        at(
            time_ns,
            tid,
            EventKind::Exited {
                status: ExitStatus::Unknown,
            },
        )
    }

    /// Which of `events` (each with its set) an attaching capture keeps.
    fn kept(events: Vec<(Event, u32)>) -> Vec<(u64, u32)> {
        let mut pairing = Pairing::new(Selection::default());
        pairing.once_per_thread();
        events
            .into_iter()
            .filter_map(|(mut event, set)| {
                let time = event.time_ns;
                pairing.keep(&mut event, set).then_some((time, set))
            })
            .collect()
    }

    #[test]
    fn a_thread_followed_twice_is_kept_once_and_its_tid_can_come_back() {
        let events = vec![
            // Thread 7, followed by sets 1 and 2: set 1 came first.
            (signal(10, 7), 1),
            (signal(11, 7), 2),
            (signal(20, 7), 2),
            (signal(21, 7), 1),
            (exited(30, 7), 1),
            (exited(31, 7), 2),
            // Tid 7 again, a new thread whose creation was lost, seen
            // by set 2 only.
            (signal(40, 7), 2),
            (exited(50, 7), 2),
        ];
        assert_eq!(kept(events), [(10, 1), (21, 1), (30, 1), (40, 2), (50, 2)]);
    }

    #[test]
    fn a_thread_that_execs_takes_the_leaders_tid_with_its_own_set() {
        let exec = |time_ns| at(time_ns, 1, EventKind::Exec { former_tid: 5 });
        let events = vec![
            (signal(10, 1), 1), // the leader, set 1
            (signal(11, 5), 3), // the thread that will exec, set 3
            (exec(20), 3),
            (signal(30, 1), 3), // the program after the exec, as tid 1
        ];
        assert_eq!(kept(events), [(10, 1), (11, 3), (20, 3), (30, 3)]);
    }
}
