//! The trace file: a versioned header, then blocks of compact,
//! delta-encoded event records, each block checksummed, then an index of
//! the blocks for seeking. The format is documented in
//! `docs/trace-format.md`; keep the two in step.
//!
//! A file cut short (the tracer was killed) reads up to its last whole
//! block and says it was truncated; a file whose bytes were damaged fails
//! with an error that names the offset.

mod reader;
mod record;
mod varint;
mod writer;

use std::io;

pub use reader::{Index, TraceReader, read_index};
pub use writer::{BlockInfo, TraceWriter};

use crate::capture::Backend;
use varint::{Cursor, put_bytes, put_signed, put_varint};

/// The first bytes of every trace file.
pub const MAGIC: &[u8; 8] = b"TBTRACE\0";
/// The format version this code writes and reads.
pub const VERSION: u16 = 4;
/// The oldest version this code still reads (version 1 had no backend in
/// its header: its files were all made by ptrace).
pub const OLDEST_VERSION: u16 = 1;
pub(crate) const BLOCK_MAGIC: &[u8; 4] = b"TBBK";
pub(crate) const INDEX_MAGIC: &[u8; 4] = b"TBIX";
pub(crate) const FOOTER_MAGIC: &[u8; 8] = b"TBEND\0\0\0";
/// A block is written once its payload reaches this size.
pub(crate) const BLOCK_BYTES: usize = 64 * 1024;
/// Bytes of a block header: magic, payload length, event count, first
/// timestamp, CRC-32 (of the count, the timestamp and the payload since
/// version 3; of the payload alone before).
pub(crate) const BLOCK_HEADER_BYTES: usize = 4 + 4 + 4 + 8 + 4;
/// The largest block payload a reader accepts (a writer never makes one
/// larger than BLOCK_BYTES plus one record).
pub(crate) const MAX_BLOCK_BYTES: usize = 16 * 1024 * 1024;

/// What a trace file says about the run that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The machine architecture the syscall numbers belong to.
    pub arch: String,
    /// CLOCK_MONOTONIC at the start, in nanoseconds…
    pub monotonic_ns: u64,
    /// …and CLOCK_REALTIME at the same moment, so event times can be shown
    /// as wall-clock times.
    pub realtime_ns: i64,
    /// The traced command line (or `-p PID`).
    pub command: Vec<String>,
    /// The host name.
    pub host: String,
    /// The capture backend that made the trace (what it could see, and
    /// what it could not: perf captures no memory behind pointers).
    pub backend: Backend,
}

impl Header {
    /// A header for a trace by `backend` starting now, on this machine.
    pub fn now(command: Vec<String>, backend: Backend) -> Header {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        Header {
            arch: std::env::consts::ARCH.to_owned(),
            monotonic_ns: crate::clock::monotonic_ns(),
            realtime_ns: crate::clock::realtime_ns(),
            command,
            host,
            backend,
        }
    }
}

/// Why a trace file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TraceFileError {
    /// The underlying file failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Not a trace file at all.
    #[error("not a tracebench trace file (bad magic)")]
    NotATrace,
    /// Written by a newer tracebench.
    #[error(
        "trace file version {0} is not supported (this build reads versions {OLDEST_VERSION} to {VERSION})"
    )]
    UnsupportedVersion(u16),
    /// The bytes were damaged.
    #[error("corrupt trace file at byte {offset}: {what}")]
    Corrupt {
        /// Where the damage was found.
        offset: u64,
        /// What was wrong.
        what: String,
    },
}

pub(crate) fn encode_header(header: &Header) -> Vec<u8> {
    let mut body = Vec::new();
    put_bytes(&mut body, header.arch.as_bytes());
    put_varint(&mut body, header.monotonic_ns);
    put_signed(&mut body, header.realtime_ns);
    put_varint(&mut body, header.command.len() as u64);
    for word in &header.command {
        put_bytes(&mut body, word.as_bytes());
    }
    put_bytes(&mut body, header.host.as_bytes());
    put_bytes(&mut body, header.backend.name().as_bytes());
    body
}

/// Reads a header body of format `version`.
pub(crate) fn decode_header(body: &[u8], version: u16) -> Option<Header> {
    let mut c = Cursor {
        bytes: body,
        pos: 0,
    };
    let text = |c: &mut Cursor<'_>| c.bytes().map(|b| String::from_utf8_lossy(b).into_owned());
    let arch = text(&mut c)?;
    let monotonic_ns = c.varint()?;
    let realtime_ns = c.signed()?;
    let words = c.varint()?;
    let mut command = Vec::new();
    for _ in 0..words.min(1 << 16) {
        command.push(text(&mut c)?);
    }
    let host = text(&mut c)?;
    let backend = match version {
        1 => Backend::Ptrace,
        _ => text(&mut c)?.parse().ok()?,
    };
    Some(Header {
        arch,
        monotonic_ns,
        realtime_ns,
        command,
        host,
        backend,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Creation, DataCapture, Event, EventKind, EventSink, ExitStatus};

    fn sample_events() -> Vec<Event> {
        let e = |time_ns, pid, tid, kind| Event {
            time_ns,
            pid,
            tid,
            kind,
        };
        vec![
            e(
                1_000,
                10,
                10,
                EventKind::SyscallEntry {
                    nr: 202,
                    args: [0x7f00_dead_beef, 128, 0, 0, 0, u64::MAX],
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            ),
            e(
                1_500,
                10,
                11,
                EventKind::SyscallExit {
                    nr: 202,
                    ret: -11,
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            ),
            e(
                2_000,
                10,
                10,
                EventKind::SyscallExit {
                    nr: 0,
                    ret: 79,
                    data: b"GET / HTTP/1.1\r\n".to_vec(),
                    data_capture: DataCapture::Captured,
                },
            ),
            e(
                2_100,
                10,
                10,
                EventKind::Spawned {
                    child_tid: 12,
                    child_pid: 10,
                    creation: Creation::Thread,
                },
            ),
            e(
                2_200,
                10,
                10,
                EventKind::Spawned {
                    child_tid: 13,
                    child_pid: 13,
                    creation: Creation::Vfork,
                },
            ),
            e(2_300, 13, 13, EventKind::Exec { former_tid: 13 }),
            e(
                2_400,
                10,
                12,
                EventKind::Signal {
                    signal: 34,
                    info: Vec::new(),
                },
            ),
            e(
                2_500,
                10,
                12,
                EventKind::GroupStop {
                    signal: libc::SIGSTOP,
                },
            ),
            e(
                2_600,
                13,
                13,
                EventKind::Exited {
                    status: ExitStatus::Signal(9),
                },
            ),
            e(
                2_700,
                10,
                10,
                EventKind::Exited {
                    status: ExitStatus::Code(-1),
                },
            ),
        ]
    }

    fn write_all(events: &[Event]) -> Vec<u8> {
        let header = Header::now(
            vec!["server".into(), "--workers".into(), "5".into()],
            Backend::Ptrace,
        );
        let mut writer = TraceWriter::new(Vec::new(), &header).unwrap();
        for event in events {
            writer.event(event);
        }
        writer.finish().unwrap()
    }

    #[test]
    fn every_event_kind_round_trips() {
        let events = sample_events();
        let bytes = write_all(&events);
        let mut reader = TraceReader::new(bytes.as_slice()).unwrap();
        assert_eq!(reader.header().command, ["server", "--workers", "5"]);
        let read: Vec<Event> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(read, events);
        assert!(!reader.truncated());
    }

    #[test]
    fn a_file_cut_short_reads_up_to_its_last_whole_block() {
        // Many events, so there are several blocks.
        let events: Vec<Event> = (0..20_000u64)
            .map(|i| Event {
                time_ns: 1_000 + i * 7,
                pid: 5,
                tid: 5 + (i % 3) as i32,
                kind: EventKind::SyscallExit {
                    nr: 1,
                    ret: i as i64,
                    data: vec![b'x'; 8],
                    data_capture: DataCapture::Captured,
                },
            })
            .collect();
        let bytes = write_all(&events);
        let cut = &bytes[..bytes.len() * 2 / 3];
        let mut reader = TraceReader::new(cut).unwrap();
        let read: Vec<Event> = reader.by_ref().map(Result::unwrap).collect();
        assert!(reader.truncated());
        assert!(!read.is_empty() && read.len() < events.len());
        assert_eq!(read, events[..read.len()]);
    }

    #[test]
    fn damaged_bytes_are_a_clear_error() {
        let mut bytes = write_all(&sample_events());
        // Footer (16 bytes), then the index of one block (32 bytes): the byte
        // before them is the last byte of the only block.
        let last_event_byte = bytes.len() - 16 - 32 - 1;
        bytes[last_event_byte] ^= 0x55;
        let error = TraceReader::new(bytes.as_slice())
            .unwrap()
            .find_map(Result::err)
            .expect("an error");
        assert!(
            error.to_string().starts_with("corrupt trace file at byte"),
            "{error}"
        );
        assert!(matches!(
            TraceReader::new(&b"GIF89a..............."[..]),
            Err(TraceFileError::NotATrace)
        ));
    }

    #[test]
    fn the_index_lists_every_block() {
        let dir = std::env::temp_dir().join(format!("tb-index-{}", std::process::id()));
        let header = Header::now(vec![], Backend::Ptrace);
        let mut writer = TraceWriter::create(&dir, &header).unwrap();
        for i in 0..50_000u64 {
            writer.event(&Event {
                time_ns: i,
                pid: 1,
                tid: 1,
                kind: EventKind::Signal {
                    signal: 10,
                    info: Vec::new(),
                },
            });
        }
        writer.finish().unwrap();
        let index = read_index(&dir).unwrap().unwrap().blocks;
        std::fs::remove_file(&dir).unwrap();
        assert!(index.len() > 1);
        assert_eq!(
            index.iter().map(|b| u64::from(b.events)).sum::<u64>(),
            50_000
        );
        assert!(
            index
                .windows(2)
                .all(|w| w[0].first_ns < w[1].first_ns && w[0].offset < w[1].offset)
        );
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;
    use crate::{Event, EventKind, EventSink};

    fn finished_file(name: &str, events: &[Event]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("tb-{name}-{}", std::process::id()));
        let mut writer = TraceWriter::create(&path, &Header::now(vec![], Backend::Perf)).unwrap();
        for event in events {
            writer.event(event);
        }
        writer.finish().unwrap();
        path
    }

    #[test]
    fn the_index_totals_the_events_lost_per_cpu() {
        let lost = |time_ns, cpu, count| Event {
            time_ns,
            pid: 0,
            tid: 0,
            kind: EventKind::Lost { cpu, count },
        };
        let path = finished_file("lost", &[lost(1, 1, 5), lost(2, 0, 7), lost(3, 1, 10)]);
        let index = read_index(&path).unwrap().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(index.lost, vec![(0, 7), (1, 15)]);
        assert_eq!(index.lost_events(), 22);
        assert_eq!(index.events(), 3);
    }

    #[test]
    fn a_record_larger_than_a_block_may_be_is_cut_and_marked_partial() {
        // Issue 14: `trace -s 17000000 -w` wrote a block over the reader's
        // limit, and the whole file was unreadable.
        let huge = Event {
            time_ns: 1,
            pid: 1,
            tid: 1,
            kind: EventKind::SyscallExit {
                nr: 0,
                ret: MAX_BLOCK_BYTES as i64 + 1,
                data: vec![b'x'; MAX_BLOCK_BYTES + 1],
                data_capture: crate::DataCapture::Captured,
            },
        };
        let path = finished_file("huge", &[huge.clone(), huge]);
        let events: Vec<Event> = TraceReader::open(&path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(events.len(), 2);
        for event in events {
            let EventKind::SyscallExit {
                data, data_capture, ..
            } = event.kind
            else {
                panic!("{event:?}");
            };
            assert_eq!(data.len(), record::MAX_RECORD_DATA);
            assert_eq!(data_capture, crate::DataCapture::Partial);
        }
    }

    /// A finished file of 3 blocks of signals, and its block offsets.
    fn three_blocks() -> (std::path::PathBuf, Vec<u64>) {
        let events: Vec<Event> = (0..60_000u64)
            .map(|i| Event {
                time_ns: i,
                pid: 1,
                tid: 1,
                kind: EventKind::Signal {
                    signal: 10,
                    info: Vec::new(),
                },
            })
            .collect();
        let path = finished_file("damage", &events);
        let offsets = read_index(&path)
            .unwrap()
            .unwrap()
            .blocks
            .iter()
            .map(|b| b.offset)
            .collect();
        (path, offsets)
    }

    fn read_all(path: &std::path::Path) -> Result<usize, TraceFileError> {
        let mut count = 0;
        for event in TraceReader::open(path)? {
            event?;
            count += 1;
        }
        Ok(count)
    }

    #[test]
    fn a_damaged_block_timestamp_or_magic_is_an_error_not_a_quiet_end() {
        // Issue 14: a bit flip in a block's first timestamp gave "a trace
        // over 35185.5 s", and a block magic damaged into the index's cut
        // the file short without a word.
        let (path, offsets) = three_blocks();
        assert!(offsets.len() >= 3, "{offsets:?}");
        assert_eq!(read_all(&path).unwrap(), 60_000);
        let whole = std::fs::read(&path).unwrap();
        let second = offsets[1] as usize;
        let mut flipped = whole.clone();
        flipped[second + 12 + 5] ^= 0x04; // first_ns
        std::fs::write(&path, &flipped).unwrap();
        let error = read_all(&path).unwrap_err().to_string();
        assert!(error.contains("checksum"), "{error}");
        let mut renamed = whole.clone();
        renamed[second..second + 4].copy_from_slice(INDEX_MAGIC);
        std::fs::write(&path, &renamed).unwrap();
        let error = read_all(&path).unwrap_err().to_string();
        assert!(error.contains("found neither"), "{error}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_index_without_a_lost_section_still_reads() {
        // Version 2 wrote the blocks and nothing after them.
        let mut body = INDEX_MAGIC.to_vec();
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&30u64.to_le_bytes());
        body.extend_from_slice(&5u64.to_le_bytes());
        body.extend_from_slice(&9u32.to_le_bytes());
        let index = reader::decode_index(&body).unwrap();
        assert_eq!(index.events(), 9);
        assert!(index.lost.is_empty());
        // A lost section that disagrees with its own count is refused.
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(&[0; 12]);
        assert_eq!(reader::decode_index(&body), None);
    }
}

#[cfg(test)]
mod version_2_tests {
    use super::*;
    use crate::{DataCapture, Event, EventKind, EventSink, ExitStatus, OffCpuReason, Sampled};

    #[test]
    fn the_backend_data_markers_and_samples_round_trip() {
        let header = Header::now(vec!["x".into()], Backend::Perf);
        let mut writer = TraceWriter::new(Vec::new(), &header).unwrap();
        let kinds = vec![
            EventKind::SyscallEntry {
                nr: 1,
                args: [3, 0x7f00, 5, 0, 0, 0],
                data: Vec::new(),
                data_capture: DataCapture::NotCaptured,
            },
            EventKind::SyscallExit {
                nr: 1,
                ret: 5,
                data: Vec::new(),
                data_capture: DataCapture::NotCaptured,
            },
            EventKind::SyscallEntry {
                nr: 0,
                args: [3, 0x7f00, 5, 0, 0, 0],
                data: Vec::new(),
                data_capture: DataCapture::Captured,
            },
            EventKind::SyscallExit {
                nr: 0,
                ret: 5,
                data: b"ab".to_vec(),
                data_capture: DataCapture::Partial,
            },
            EventKind::Sampled {
                seen: Sampled::Blocked {
                    nr: 202,
                    args: [0x1000, 128, 0, 0, 0, 0],
                },
            },
            EventKind::Sampled {
                seen: Sampled::Running,
            },
            EventKind::Sampled {
                seen: Sampled::Gone,
            },
            EventKind::OffCpu {
                reason: OffCpuReason::Preempted,
            },
            EventKind::OffCpu {
                reason: OffCpuReason::DiskSleep,
            },
            EventKind::OnCpu { cpu: 1 },
            EventKind::Woken {
                waker_tid: 12,
                waker_pid: 10,
            },
            EventKind::Woken {
                waker_tid: 0,
                waker_pid: 0,
            },
            EventKind::Lost {
                cpu: 1,
                count: 1 << 40,
            },
            EventKind::Exited {
                status: ExitStatus::Unknown,
            },
        ];
        let events: Vec<Event> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Event {
                time_ns: 1_000 + i as u64 * 7,
                pid: 10,
                tid: 11,
                kind,
            })
            .collect();
        for event in &events {
            writer.event(event);
        }
        let bytes = writer.finish().unwrap();
        let mut reader = TraceReader::new(&bytes[..]).unwrap();
        assert_eq!(reader.header().backend, Backend::Perf);
        let back: Vec<Event> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(back, events);
    }

    #[test]
    fn a_data_marker_on_a_record_that_is_no_syscall_is_damage() {
        let header = Header::now(vec![], Backend::Ptrace);
        let mut writer = TraceWriter::new(Vec::new(), &header).unwrap();
        writer.event(&Event {
            time_ns: 5,
            pid: 1,
            tid: 1,
            kind: EventKind::Signal {
                signal: 2,
                info: Vec::new(),
            },
        });
        let mut bytes = writer.finish().unwrap();
        let body_len = u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize;
        let tag_at = 14 + body_len + BLOCK_HEADER_BYTES;
        assert_eq!(bytes[tag_at], 5, "the signal's tag");
        bytes[tag_at] |= 0x10;
        // Keep the block's checksum right, so the record itself is judged.
        let payload_len = u32::from_le_bytes(
            bytes[14 + body_len + 4..14 + body_len + 8]
                .try_into()
                .unwrap(),
        );
        let payload = tag_at..tag_at + payload_len as usize;
        let crc = crc32fast::hash(&bytes[payload]);
        bytes[14 + body_len + 20..14 + body_len + 24].copy_from_slice(&crc.to_le_bytes());
        let mut reader = TraceReader::new(&bytes[..]).unwrap();
        assert!(matches!(
            reader.next(),
            Some(Err(TraceFileError::Corrupt { .. }))
        ));
    }
}

#[cfg(test)]
mod block_tests {
    use super::*;
    use crate::{DataCapture, Event, EventKind};

    #[test]
    fn reading_resumes_at_any_block_seen_before() {
        let mut writer =
            TraceWriter::new(Vec::new(), &Header::now(vec![], Backend::Ptrace)).unwrap();
        let events: Vec<Event> = (0..50_000u64)
            .map(|i| Event {
                time_ns: 1_000 + i * 10,
                pid: 1,
                tid: 1 + (i % 7) as i32,
                kind: EventKind::SyscallEntry {
                    nr: (i % 300) as u32,
                    args: [i, 2, 3, 4, 5, 6],
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            })
            .collect();
        for event in &events {
            writer.write_event(event).unwrap();
        }
        let bytes = writer.finish().unwrap();
        let mut reader = TraceReader::new(std::io::Cursor::new(bytes)).unwrap();
        let mut blocks = Vec::new();
        let mut read = Vec::new();
        loop {
            let at = reader.position();
            match reader.read_block().unwrap() {
                Some(block) => {
                    blocks.push((at, read.len()));
                    read.extend(block);
                }
                None => break,
            }
        }
        assert_eq!(read, events);
        assert!(blocks.len() > 3, "several blocks: {}", blocks.len());
        let (offset, first) = blocks[2];
        reader.seek_block(offset).unwrap();
        let again: Vec<Event> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(again, events[first..]);
        // Iterating part of a block, then reading by blocks, loses nothing.
        reader.seek_block(blocks[1].0).unwrap();
        let head: Vec<Event> = reader.by_ref().take(3).map(Result::unwrap).collect();
        let rest = reader.read_block().unwrap().unwrap();
        assert_eq!(head[0], events[blocks[1].1]);
        assert_eq!(rest[0], events[blocks[1].1 + 3]);
    }
}
