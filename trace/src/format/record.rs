//! One event as a record of a block: the tag, the time delta, the thread,
//! then the fields of its kind (docs/trace-format.md, "Records").

use super::varint::{Cursor, put_bytes, put_signed, put_varint};
use crate::event::{Creation, DataCapture, Event, EventKind, ExitStatus, OffCpuReason, Sampled};

const KIND_ENTRY: u8 = 1;
const KIND_EXIT: u8 = 2;
const KIND_SPAWNED: u8 = 3;
const KIND_EXITED: u8 = 4;
const KIND_SIGNAL: u8 = 5;
const KIND_EXEC: u8 = 6;
const KIND_GROUP_STOP: u8 = 7;
const KIND_SAMPLED: u8 = 8;
const KIND_OFF_CPU: u8 = 9;
const KIND_ON_CPU: u8 = 10;
const KIND_WOKEN: u8 = 11;
const KIND_LOST: u8 = 12;
/// Tag bit: the record carries captured bytes (otherwise it has none and
/// no length byte either).
const TAG_DATA: u8 = 0x80;
/// Tag bit: a syscall exit whose number is that of its thread's last entry
/// in this block, so it is left out.
const TAG_SAME_NR: u8 = 0x40;
const KIND_MASK: u8 = 0x0f;
/// Tag bits of a syscall record (version 2): whether its pointer data was
/// captured (0, as in every version 1 file), partly (2) or not at all (1).
const TAG_CAPTURE_SHIFT: u8 = 4;
const TAG_CAPTURE_MASK: u8 = 0x30;
/// The most data bytes one record keeps (`trace -s` can ask for more):
/// a block is written once it passes [`super::BLOCK_BYTES`], so with one
/// such record it stays far below [`super::MAX_BLOCK_BYTES`], the most a
/// reader accepts. Data cut to this is marked partial.
pub(super) const MAX_RECORD_DATA: usize = super::MAX_BLOCK_BYTES / 4;

/// The threads a block has named so far: a record names its thread by a
/// small index after the thread's first record in the block, which spells
/// out tid and pid once. It also remembers each thread's last syscall
/// entry, which its exit usually repeats.
#[derive(Default)]
pub(super) struct ThreadTable {
    indexes: foldhash::HashMap<(i32, i32), usize>,
    threads: Vec<(i32, i32)>,
    last_entry: Vec<Option<u32>>,
}

impl ThreadTable {
    pub(super) fn clear(&mut self) {
        self.indexes.clear();
        self.threads.clear();
        self.last_entry.clear();
    }

    fn add(&mut self, key: (i32, i32)) -> usize {
        self.threads.push(key);
        self.last_entry.push(None);
        self.threads.len() - 1
    }
}

/// The tag's kind bits, its data, and whether the exit repeats its
/// thread's last entry number.
fn tag_of(kind: &EventKind, last_entry: Option<u32>) -> (u8, &[u8]) {
    let capture_bits = |capture: &DataCapture| {
        let bits = match capture {
            DataCapture::Captured => 0,
            DataCapture::NotCaptured => 1,
            DataCapture::Partial => 2,
        };
        bits << TAG_CAPTURE_SHIFT
    };
    match kind {
        EventKind::SyscallEntry {
            data, data_capture, ..
        } => (KIND_ENTRY | capture_bits(data_capture), data),
        EventKind::SyscallExit {
            nr,
            data,
            data_capture,
            ..
        } => {
            let same = if last_entry == Some(*nr) {
                TAG_SAME_NR
            } else {
                0
            };
            (KIND_EXIT | same | capture_bits(data_capture), data)
        }
        EventKind::Spawned { .. } => (KIND_SPAWNED, &[]),
        EventKind::Exited { .. } => (KIND_EXITED, &[]),
        EventKind::Signal { info, .. } => (KIND_SIGNAL, info),
        EventKind::Exec { .. } => (KIND_EXEC, &[]),
        EventKind::GroupStop { .. } => (KIND_GROUP_STOP, &[]),
        EventKind::Sampled { .. } => (KIND_SAMPLED, &[]),
        EventKind::OffCpu { .. } => (KIND_OFF_CPU, &[]),
        EventKind::OnCpu { .. } => (KIND_ON_CPU, &[]),
        EventKind::Woken { .. } => (KIND_WOKEN, &[]),
        EventKind::Lost { .. } => (KIND_LOST, &[]),
    }
}

/// Appends one event record. `previous_ns` is the time of the record
/// before it in the block (timestamps are stored as deltas).
pub(super) fn encode(out: &mut Vec<u8>, event: &Event, previous_ns: u64, table: &mut ThreadTable) {
    let key = (event.tid, event.pid);
    let known = table.indexes.get(&key).copied();
    let slot = known.unwrap_or_else(|| {
        let slot = table.add(key);
        table.indexes.insert(key, slot);
        slot
    });
    let (mut tag, mut data) = tag_of(&event.kind, table.last_entry[slot]);
    if data.len() > MAX_RECORD_DATA {
        // A record must fit in a block the reader accepts: what is cut is
        // said (partial), never silently dropped.
        data = &data[..MAX_RECORD_DATA];
        tag = (tag & !TAG_CAPTURE_MASK) | (2 << TAG_CAPTURE_SHIFT);
    }
    if !data.is_empty() {
        tag |= TAG_DATA;
    }
    out.push(tag);
    // Events arrive in the order the tracer saw them, so deltas are
    // almost always positive; a signed delta keeps a clock that went
    // backwards representable.
    put_signed(out, event.time_ns as i64 - previous_ns as i64);
    match known {
        Some(slot) => put_varint(out, slot as u64 + 1),
        None => {
            put_varint(out, 0);
            put_signed(out, event.tid.into());
            put_signed(out, event.pid.into());
        }
    }
    if let EventKind::SyscallEntry { nr, .. } = &event.kind {
        table.last_entry[slot] = Some(*nr);
    }
    encode_fields(out, &event.kind, tag & TAG_SAME_NR != 0);
    if !data.is_empty() {
        put_bytes(out, data);
    }
}

/// A syscall's number and argument registers; trailing zero registers are
/// left out (the tracer zeroes those a syscall does not read).
fn put_syscall(out: &mut Vec<u8>, nr: u32, args: &[u64; 6]) {
    put_varint(out, nr.into());
    let used = args.iter().rposition(|&a| a != 0).map_or(0, |i| i + 1);
    out.push(used as u8);
    for &arg in &args[..used] {
        put_varint(out, arg);
    }
}

/// The fields of the record's kind, after its thread.
fn encode_fields(out: &mut Vec<u8>, kind: &EventKind, same_nr: bool) {
    match kind {
        EventKind::SyscallEntry { nr, args, .. } => put_syscall(out, *nr, args),
        EventKind::SyscallExit { nr, ret, .. } => {
            if !same_nr {
                put_varint(out, (*nr).into());
            }
            put_signed(out, *ret);
        }
        EventKind::Spawned {
            child_tid,
            child_pid,
            creation,
        } => {
            put_signed(out, (*child_tid).into());
            put_signed(out, (*child_pid).into());
            out.push(match creation {
                Creation::Thread => 0,
                Creation::Process => 1,
                Creation::Vfork => 2,
            });
        }
        EventKind::Exited { status } => match status {
            ExitStatus::Code(code) => {
                out.push(0);
                put_signed(out, (*code).into());
            }
            ExitStatus::Signal(signal) => {
                out.push(1);
                put_signed(out, (*signal).into());
            }
            ExitStatus::Unknown => out.push(2),
        },
        EventKind::Signal { signal, .. } | EventKind::GroupStop { signal } => {
            put_signed(out, (*signal).into())
        }
        EventKind::Exec { former_tid } => put_signed(out, (*former_tid).into()),
        EventKind::Sampled { seen } => match seen {
            Sampled::Running => out.push(0),
            Sampled::Blocked { nr, args } => {
                out.push(1);
                put_syscall(out, *nr, args);
            }
            Sampled::Gone => out.push(2),
        },
        EventKind::OffCpu { reason } => out.push(match reason {
            OffCpuReason::Preempted => 0,
            OffCpuReason::Sleep => 1,
            OffCpuReason::DiskSleep => 2,
            OffCpuReason::Other => 3,
        }),
        EventKind::OnCpu { cpu } => put_varint(out, (*cpu).into()),
        EventKind::Woken {
            waker_tid,
            waker_pid,
        } => {
            put_signed(out, (*waker_tid).into());
            put_signed(out, (*waker_pid).into());
        }
        EventKind::Lost { cpu, count } => {
            put_varint(out, (*cpu).into());
            put_varint(out, *count);
        }
    }
}

/// Reads one record; `None` if it is not a valid one.
pub(super) fn decode(
    cursor: &mut Cursor<'_>,
    previous_ns: u64,
    table: &mut ThreadTable,
) -> Option<Event> {
    let tag = cursor.byte()?;
    let delta = cursor.signed()?;
    let time_ns = (previous_ns as i64).checked_add(delta)? as u64;
    let slot = match cursor.varint()? {
        0 => {
            let key = (cursor.int()?, cursor.int()?);
            table.add(key)
        }
        index => usize::try_from(index - 1)
            .ok()
            .filter(|&slot| slot < table.threads.len())?,
    };
    let (tid, pid) = table.threads[slot];
    let mut kind = decode_fields(cursor, tag, &mut table.last_entry[slot])?;
    if tag & TAG_DATA != 0 {
        let bytes = cursor.bytes()?.to_vec();
        match &mut kind {
            EventKind::SyscallEntry { data, .. }
            | EventKind::SyscallExit { data, .. }
            | EventKind::Signal { info: data, .. } => *data = bytes,
            _ => return None,
        }
    }
    Some(Event {
        time_ns,
        pid,
        tid,
        kind,
    })
}

fn get_syscall(cursor: &mut Cursor<'_>) -> Option<(u32, [u64; 6])> {
    let nr = u32::try_from(cursor.varint()?).ok()?;
    let used = usize::from(cursor.byte()?);
    if used > 6 {
        return None;
    }
    let mut args = [0u64; 6];
    for arg in &mut args[..used] {
        *arg = cursor.varint()?;
    }
    Some((nr, args))
}

/// The fields of a record of the kind `tag` names.
fn decode_fields(
    cursor: &mut Cursor<'_>,
    tag: u8,
    last_entry: &mut Option<u32>,
) -> Option<EventKind> {
    let data_capture = match (tag & TAG_CAPTURE_MASK) >> TAG_CAPTURE_SHIFT {
        0 => DataCapture::Captured,
        1 => DataCapture::NotCaptured,
        2 => DataCapture::Partial,
        _ => return None,
    };
    let kind = tag & KIND_MASK;
    if data_capture != DataCapture::Captured && !matches!(kind, KIND_ENTRY | KIND_EXIT) {
        return None;
    }
    Some(match kind {
        KIND_ENTRY => {
            let (nr, args) = get_syscall(cursor)?;
            *last_entry = Some(nr);
            EventKind::SyscallEntry {
                nr,
                args,
                data: Vec::new(),
                data_capture,
            }
        }
        KIND_EXIT => {
            let nr = if tag & TAG_SAME_NR != 0 {
                (*last_entry)?
            } else {
                u32::try_from(cursor.varint()?).ok()?
            };
            EventKind::SyscallExit {
                nr,
                ret: cursor.signed()?,
                data: Vec::new(),
                data_capture,
            }
        }
        _ => decode_other(cursor, kind)?,
    })
}

/// The fields of a record that is not a syscall.
fn decode_other(cursor: &mut Cursor<'_>, kind: u8) -> Option<EventKind> {
    Some(match kind {
        KIND_SPAWNED => EventKind::Spawned {
            child_tid: cursor.int()?,
            child_pid: cursor.int()?,
            creation: match cursor.byte()? {
                0 => Creation::Thread,
                1 => Creation::Process,
                2 => Creation::Vfork,
                _ => return None,
            },
        },
        KIND_EXITED => EventKind::Exited {
            status: match cursor.byte()? {
                0 => ExitStatus::Code(cursor.int()?),
                1 => ExitStatus::Signal(cursor.int()?),
                2 => ExitStatus::Unknown,
                _ => return None,
            },
        },
        KIND_SIGNAL => EventKind::Signal {
            signal: cursor.int()?,
            info: Vec::new(),
        },
        KIND_EXEC => EventKind::Exec {
            former_tid: cursor.int()?,
        },
        KIND_GROUP_STOP => EventKind::GroupStop {
            signal: cursor.int()?,
        },
        KIND_SAMPLED => EventKind::Sampled {
            seen: match cursor.byte()? {
                0 => Sampled::Running,
                1 => {
                    let (nr, args) = get_syscall(cursor)?;
                    Sampled::Blocked { nr, args }
                }
                2 => Sampled::Gone,
                _ => return None,
            },
        },
        _ => decode_scheduler(cursor, kind)?,
    })
}

/// The fields of a scheduler record (the perf backend's kinds).
fn decode_scheduler(cursor: &mut Cursor<'_>, kind: u8) -> Option<EventKind> {
    Some(match kind {
        KIND_OFF_CPU => EventKind::OffCpu {
            reason: match cursor.byte()? {
                0 => OffCpuReason::Preempted,
                1 => OffCpuReason::Sleep,
                2 => OffCpuReason::DiskSleep,
                3 => OffCpuReason::Other,
                _ => return None,
            },
        },
        KIND_ON_CPU => EventKind::OnCpu {
            cpu: u32::try_from(cursor.varint()?).ok()?,
        },
        KIND_WOKEN => EventKind::Woken {
            waker_tid: cursor.int()?,
            waker_pid: cursor.int()?,
        },
        KIND_LOST => EventKind::Lost {
            cpu: u32::try_from(cursor.varint()?).ok()?,
            count: cursor.varint()?,
        },
        _ => return None,
    })
}
