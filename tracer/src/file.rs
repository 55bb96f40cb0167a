//! The trace file: a versioned header, then blocks of compact,
//! delta-encoded event records, each block checksummed, then an index of
//! the blocks for seeking. The format is documented in
//! `docs/trace-format.md`; keep the two in step.
//!
//! A file cut short (the tracer was killed) reads up to its last whole
//! block and says it was truncated; a file whose bytes were damaged fails
//! with an error that names the offset.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::event::{Creation, Event, EventKind, EventSink, ExitStatus};

/// The first bytes of every trace file.
pub const MAGIC: &[u8; 8] = b"TBTRACE\0";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
const BLOCK_MAGIC: &[u8; 4] = b"TBBK";
const INDEX_MAGIC: &[u8; 4] = b"TBIX";
const FOOTER_MAGIC: &[u8; 8] = b"TBEND\0\0\0";
/// A block is written once its payload reaches this size.
const BLOCK_BYTES: usize = 64 * 1024;
/// Bytes of a block header: magic, payload length, event count, first
/// timestamp, CRC-32 of the payload.
const BLOCK_HEADER_BYTES: usize = 4 + 4 + 4 + 8 + 4;
/// The largest block payload a reader accepts (a writer never makes one
/// larger than BLOCK_BYTES plus one record).
const MAX_BLOCK_BYTES: usize = 16 * 1024 * 1024;

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
}

impl Header {
    /// A header for a trace starting now, on this machine.
    pub fn now(command: Vec<String>) -> Header {
        let clock = |id| {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes only to our local timespec.
            unsafe { libc::clock_gettime(id, &mut t) };
            t.tv_sec * 1_000_000_000 + t.tv_nsec
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        Header {
            arch: std::env::consts::ARCH.to_owned(),
            monotonic_ns: clock(libc::CLOCK_MONOTONIC) as u64,
            realtime_ns: clock(libc::CLOCK_REALTIME),
            command,
            host,
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
    #[error("trace file version {0} is not supported (this build reads version {VERSION})")]
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

// --- encoding helpers ---------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_signed(out: &mut Vec<u8>, value: i64) {
    put_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A cursor over a block payload; every read fails cleanly past the end.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn signed(&mut self) -> Option<i64> {
        let v = self.varint()?;
        Some(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn int(&mut self) -> Option<i32> {
        i32::try_from(self.signed()?).ok()
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(len)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }
}

const KIND_ENTRY: u8 = 1;
const KIND_EXIT: u8 = 2;
const KIND_SPAWNED: u8 = 3;
const KIND_EXITED: u8 = 4;
const KIND_SIGNAL: u8 = 5;
const KIND_EXEC: u8 = 6;
const KIND_GROUP_STOP: u8 = 7;
/// Tag bit: the record carries captured bytes (otherwise it has none and
/// no length byte either).
const TAG_DATA: u8 = 0x80;
/// Tag bit: a syscall exit whose number is that of its thread's last entry
/// in this block, so it is left out.
const TAG_SAME_NR: u8 = 0x40;
const KIND_MASK: u8 = 0x0f;

/// The threads a block has named so far: a record names its thread by a
/// small index after the thread's first record in the block, which spells
/// out tid and pid once. It also remembers each thread's last syscall
/// entry, which its exit usually repeats.
#[derive(Default)]
struct ThreadTable {
    indexes: std::collections::HashMap<(i32, i32), usize>,
    threads: Vec<(i32, i32)>,
    last_entry: Vec<Option<u32>>,
}

impl ThreadTable {
    fn clear(&mut self) {
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

/// Appends one event record. `previous_ns` is the time of the record
/// before it in the block (timestamps are stored as deltas).
fn encode(out: &mut Vec<u8>, event: &Event, previous_ns: u64, table: &mut ThreadTable) {
    let key = (event.tid, event.pid);
    let known = table.indexes.get(&key).copied();
    let slot = match known {
        Some(slot) => slot,
        None => {
            let slot = table.add(key);
            table.indexes.insert(key, slot);
            slot
        }
    };
    let (kind, data, same_nr) = match &event.kind {
        EventKind::SyscallEntry { data, .. } => (KIND_ENTRY, data.as_slice(), false),
        EventKind::SyscallExit { nr, data, .. } => (
            KIND_EXIT,
            data.as_slice(),
            table.last_entry[slot] == Some(*nr),
        ),
        EventKind::Spawned { .. } => (KIND_SPAWNED, &[][..], false),
        EventKind::Exited { .. } => (KIND_EXITED, &[][..], false),
        EventKind::Signal { .. } => (KIND_SIGNAL, &[][..], false),
        EventKind::Exec { .. } => (KIND_EXEC, &[][..], false),
        EventKind::GroupStop { .. } => (KIND_GROUP_STOP, &[][..], false),
    };
    let mut tag = kind;
    if !data.is_empty() {
        tag |= TAG_DATA;
    }
    if same_nr {
        tag |= TAG_SAME_NR;
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
    match &event.kind {
        EventKind::SyscallEntry { nr, args, .. } => {
            put_varint(out, (*nr).into());
            // Trailing zero arguments are left out (the tracer zeroes the
            // registers a syscall does not use).
            let used = args.iter().rposition(|&a| a != 0).map_or(0, |i| i + 1);
            out.push(used as u8);
            for &arg in &args[..used] {
                put_varint(out, arg);
            }
            table.last_entry[slot] = Some(*nr);
        }
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
        },
        EventKind::Signal { signal } | EventKind::GroupStop { signal } => {
            put_signed(out, (*signal).into())
        }
        EventKind::Exec { former_tid } => put_signed(out, (*former_tid).into()),
    }
    if !data.is_empty() {
        put_bytes(out, data);
    }
}

fn decode(cursor: &mut Cursor<'_>, previous_ns: u64, table: &mut ThreadTable) -> Option<Event> {
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
    let mut kind = match tag & KIND_MASK {
        KIND_ENTRY => {
            let nr = u32::try_from(cursor.varint()?).ok()?;
            let used = usize::from(cursor.byte()?);
            if used > 6 {
                return None;
            }
            let mut args = [0u64; 6];
            for arg in &mut args[..used] {
                *arg = cursor.varint()?;
            }
            table.last_entry[slot] = Some(nr);
            EventKind::SyscallEntry {
                nr,
                args,
                data: Vec::new(),
            }
        }
        KIND_EXIT => {
            let nr = if tag & TAG_SAME_NR != 0 {
                table.last_entry[slot]?
            } else {
                u32::try_from(cursor.varint()?).ok()?
            };
            EventKind::SyscallExit {
                nr,
                ret: cursor.signed()?,
                data: Vec::new(),
            }
        }
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
                _ => return None,
            },
        },
        KIND_SIGNAL => EventKind::Signal {
            signal: cursor.int()?,
        },
        KIND_EXEC => EventKind::Exec {
            former_tid: cursor.int()?,
        },
        KIND_GROUP_STOP => EventKind::GroupStop {
            signal: cursor.int()?,
        },
        _ => return None,
    };
    if tag & TAG_DATA != 0 {
        let bytes = cursor.bytes()?.to_vec();
        match &mut kind {
            EventKind::SyscallEntry { data, .. } | EventKind::SyscallExit { data, .. } => {
                *data = bytes
            }
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

fn encode_header(header: &Header) -> Vec<u8> {
    let mut body = Vec::new();
    put_bytes(&mut body, header.arch.as_bytes());
    put_varint(&mut body, header.monotonic_ns);
    put_signed(&mut body, header.realtime_ns);
    put_varint(&mut body, header.command.len() as u64);
    for word in &header.command {
        put_bytes(&mut body, word.as_bytes());
    }
    put_bytes(&mut body, header.host.as_bytes());
    body
}

fn decode_header(body: &[u8]) -> Option<Header> {
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
    Some(Header {
        arch,
        monotonic_ns,
        realtime_ns,
        command,
        host,
    })
}

// --- writing ------------------------------------------------------------

/// Where a block starts, and what it holds: the index entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Byte offset of the block header in the file.
    pub offset: u64,
    /// Time of the block's first event.
    pub first_ns: u64,
    /// Events in the block.
    pub events: u32,
}

/// Writes events to a trace file. As an [`EventSink`] it never fails
/// mid-trace: the first I/O error is kept and returned by
/// [`TraceWriter::finish`].
pub struct TraceWriter<W: Write> {
    out: W,
    offset: u64,
    block: Vec<u8>,
    block_events: u32,
    block_first_ns: u64,
    previous_ns: u64,
    threads: ThreadTable,
    index: Vec<BlockInfo>,
    events: u64,
    error: Option<io::Error>,
}

impl TraceWriter<BufWriter<File>> {
    /// Creates (or truncates) `path` and writes the header.
    pub fn create(path: &Path, header: &Header) -> Result<Self, TraceFileError> {
        TraceWriter::new(
            BufWriter::with_capacity(BLOCK_BYTES * 2, File::create(path)?),
            header,
        )
    }
}

impl<W: Write> TraceWriter<W> {
    /// Writes the header to `out`.
    pub fn new(mut out: W, header: &Header) -> Result<Self, TraceFileError> {
        let body = encode_header(header);
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&(body.len() as u32).to_le_bytes())?;
        out.write_all(&body)?;
        Ok(TraceWriter {
            out,
            offset: (MAGIC.len() + 2 + 4 + body.len()) as u64,
            block: Vec::with_capacity(BLOCK_BYTES + 4096),
            block_events: 0,
            block_first_ns: 0,
            previous_ns: 0,
            threads: ThreadTable::default(),
            index: Vec::new(),
            events: 0,
            error: None,
        })
    }

    /// Events written so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Writes the current block out (and flushes), so a crash after this
    /// loses nothing written before it.
    pub fn flush_block(&mut self) -> io::Result<()> {
        if self.block_events > 0 {
            let crc = crc32fast::hash(&self.block);
            let mut header = [0u8; BLOCK_HEADER_BYTES];
            header[0..4].copy_from_slice(BLOCK_MAGIC);
            header[4..8].copy_from_slice(&(self.block.len() as u32).to_le_bytes());
            header[8..12].copy_from_slice(&self.block_events.to_le_bytes());
            header[12..20].copy_from_slice(&self.block_first_ns.to_le_bytes());
            header[20..24].copy_from_slice(&crc.to_le_bytes());
            self.out.write_all(&header)?;
            self.out.write_all(&self.block)?;
            self.index.push(BlockInfo {
                offset: self.offset,
                first_ns: self.block_first_ns,
                events: self.block_events,
            });
            self.offset += (BLOCK_HEADER_BYTES + self.block.len()) as u64;
            self.block.clear();
            self.block_events = 0;
        }
        self.out.flush()
    }

    /// Adds one event.
    pub fn write_event(&mut self, event: &Event) -> io::Result<()> {
        if self.block_events == 0 {
            self.block_first_ns = event.time_ns;
            self.previous_ns = event.time_ns;
            self.threads.clear();
        }
        encode(&mut self.block, event, self.previous_ns, &mut self.threads);
        self.previous_ns = event.time_ns;
        self.block_events += 1;
        self.events += 1;
        if self.block.len() >= BLOCK_BYTES {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Writes the last block, the index and the footer; returns the
    /// output and the first error met on the way, if any.
    pub fn finish(mut self) -> Result<W, TraceFileError> {
        if let Some(error) = self.error.take() {
            return Err(error.into());
        }
        self.flush_block()?;
        let index_offset = self.offset;
        let mut index = Vec::with_capacity(4 + 4 + self.index.len() * 20);
        index.extend_from_slice(INDEX_MAGIC);
        index.extend_from_slice(&(self.index.len() as u32).to_le_bytes());
        for block in &self.index {
            index.extend_from_slice(&block.offset.to_le_bytes());
            index.extend_from_slice(&block.first_ns.to_le_bytes());
            index.extend_from_slice(&block.events.to_le_bytes());
        }
        index.extend_from_slice(&crc32fast::hash(&index).to_le_bytes());
        self.out.write_all(&index)?;
        self.out.write_all(&index_offset.to_le_bytes())?;
        self.out.write_all(FOOTER_MAGIC)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> EventSink for TraceWriter<W> {
    fn event(&mut self, event: &Event) {
        if self.error.is_none()
            && let Err(e) = self.write_event(event)
        {
            self.error = Some(e);
        }
    }

    fn idle(&mut self, now_ns: u64) {
        // A block older than this is written out when the tracer next waits:
        // a tracer killed with -9 loses the events since the last such
        // moment (a block begun just before a long quiet spell waits for
        // the next stop).
        const MAX_BLOCK_AGE_NS: u64 = 200_000_000;
        if self.error.is_none()
            && self.block_events > 0
            && now_ns.saturating_sub(self.block_first_ns) >= MAX_BLOCK_AGE_NS
            && let Err(e) = self.flush_block()
        {
            self.error = Some(e);
        }
    }
}

// --- reading ------------------------------------------------------------

/// Reads a trace file block by block.
pub struct TraceReader<R: Read> {
    input: R,
    header: Header,
    offset: u64,
    block: Vec<u8>,
    decoded: std::vec::IntoIter<Event>,
    truncated: bool,
    finished: bool,
}

impl TraceReader<BufReader<File>> {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<Self, TraceFileError> {
        TraceReader::new(BufReader::with_capacity(BLOCK_BYTES * 2, File::open(path)?))
    }
}

/// Reads exactly `buf.len()` bytes, or reports how many there were.
fn read_fully(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl<R: Read> TraceReader<R> {
    /// Reads the header from `input`.
    pub fn new(mut input: R) -> Result<Self, TraceFileError> {
        let mut fixed = [0u8; 14];
        if read_fully(&mut input, &mut fixed)? < fixed.len() || &fixed[0..8] != MAGIC {
            return Err(TraceFileError::NotATrace);
        }
        let version = u16::from_le_bytes([fixed[8], fixed[9]]);
        if version != VERSION {
            return Err(TraceFileError::UnsupportedVersion(version));
        }
        let body_len = u32::from_le_bytes(fixed[10..14].try_into().expect("4 bytes")) as usize;
        if body_len > MAX_BLOCK_BYTES {
            return Err(TraceFileError::Corrupt {
                offset: 10,
                what: format!("header of {body_len} bytes"),
            });
        }
        let mut body = vec![0u8; body_len];
        if read_fully(&mut input, &mut body)? < body_len {
            return Err(TraceFileError::Corrupt {
                offset: 14,
                what: "the header is cut short".into(),
            });
        }
        let header = decode_header(&body).ok_or_else(|| TraceFileError::Corrupt {
            offset: 14,
            what: "unreadable header".into(),
        })?;
        Ok(TraceReader {
            input,
            header,
            offset: 14 + body_len as u64,
            block: Vec::new(),
            decoded: Vec::new().into_iter(),
            truncated: false,
            finished: false,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Whether the file ended inside a block (the tracer was killed before
    /// it could finish the file): everything before that block was read.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The byte offset of the next block: where [`TraceReader::read_block`]
    /// goes on from, and where [`TraceReader::seek_block`] can come back to.
    pub fn position(&self) -> u64 {
        self.offset
    }

    /// The events of the next block (or what is left of the current one
    /// after iterating); `Ok(None)` at the end of the events.
    pub fn read_block(&mut self) -> Result<Option<Vec<Event>>, TraceFileError> {
        let rest: Vec<Event> = self.decoded.by_ref().collect();
        if !rest.is_empty() {
            return Ok(Some(rest));
        }
        if self.finished {
            return Ok(None);
        }
        match self.next_block() {
            Ok(true) => Ok(Some(std::mem::take(&mut self.decoded).collect())),
            Ok(false) => {
                self.finished = true;
                Ok(None)
            }
            Err(error) => {
                self.finished = true;
                Err(error)
            }
        }
    }

    /// Reads the next block into `decoded`; `Ok(false)` at the end.
    fn next_block(&mut self) -> Result<bool, TraceFileError> {
        let mut header = [0u8; BLOCK_HEADER_BYTES];
        let got = read_fully(&mut self.input, &mut header)?;
        if got == 0 {
            // No index and no footer: the writer never finished.
            self.truncated = true;
            return Ok(false);
        }
        if got >= 4 && &header[0..4] == INDEX_MAGIC {
            return Ok(false);
        }
        if got < BLOCK_HEADER_BYTES {
            self.truncated = true;
            return Ok(false);
        }
        if &header[0..4] != BLOCK_MAGIC {
            return Err(TraceFileError::Corrupt {
                offset: self.offset,
                what: "expected a block".into(),
            });
        }
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        let count = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        let first_ns = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(header[20..24].try_into().expect("4 bytes"));
        if len > MAX_BLOCK_BYTES {
            return Err(TraceFileError::Corrupt {
                offset: self.offset,
                what: format!("a block of {len} bytes"),
            });
        }
        self.block.resize(len, 0);
        if read_fully(&mut self.input, &mut self.block)? < len {
            self.truncated = true;
            return Ok(false);
        }
        let payload_offset = self.offset + BLOCK_HEADER_BYTES as u64;
        if crc32fast::hash(&self.block) != crc {
            return Err(TraceFileError::Corrupt {
                offset: payload_offset,
                what: "block checksum mismatch".into(),
            });
        }
        let mut cursor = Cursor {
            bytes: &self.block,
            pos: 0,
        };
        // The count is outside the checksum: never trust it for an
        // allocation (a record takes at least three bytes).
        let mut events = Vec::with_capacity((count as usize).min(len / 3).min(1 << 16));
        let mut previous = first_ns;
        let mut threads = ThreadTable::default();
        for _ in 0..count {
            let at = cursor.pos;
            let event = decode(&mut cursor, previous, &mut threads).ok_or_else(|| {
                TraceFileError::Corrupt {
                    offset: payload_offset + at as u64,
                    what: "unreadable event record".into(),
                }
            })?;
            previous = event.time_ns;
            events.push(event);
        }
        if cursor.pos != self.block.len() {
            return Err(TraceFileError::Corrupt {
                offset: payload_offset,
                what: "block length disagrees".into(),
            });
        }
        self.offset = payload_offset + len as u64;
        self.decoded = events.into_iter();
        Ok(true)
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = Result<Event, TraceFileError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(event) = self.decoded.next() {
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            match self.next_block() {
                Ok(true) => {}
                Ok(false) => {
                    self.finished = true;
                    return None;
                }
                Err(error) => {
                    self.finished = true;
                    return Some(Err(error));
                }
            }
        }
    }
}

impl<R: Read + Seek> TraceReader<R> {
    /// Goes back (or forward) to the block at `offset`, a
    /// [`TraceReader::position`] seen earlier: blocks decode on their own,
    /// so reading can start at any of them.
    pub fn seek_block(&mut self, offset: u64) -> Result<(), TraceFileError> {
        self.input.seek(SeekFrom::Start(offset))?;
        self.offset = offset;
        self.decoded = Vec::new().into_iter();
        self.finished = false;
        self.truncated = false;
        Ok(())
    }
}

/// Reads the block index of a finished trace file (for seeking by time).
/// `Ok(None)` if the file has no index (it was cut short).
pub fn read_index(path: &Path) -> Result<Option<Vec<BlockInfo>>, TraceFileError> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    if size < 16 {
        return Ok(None);
    }
    file.seek(SeekFrom::End(-16))?;
    let mut tail = [0u8; 16];
    file.read_exact(&mut tail)?;
    if &tail[8..16] != FOOTER_MAGIC {
        return Ok(None);
    }
    let index_offset = u64::from_le_bytes(tail[0..8].try_into().expect("8 bytes"));
    let index_len = size
        .checked_sub(16)
        .and_then(|end| end.checked_sub(index_offset))
        .filter(|&len| len >= 12 && len <= MAX_BLOCK_BYTES as u64)
        .ok_or_else(|| TraceFileError::Corrupt {
            offset: size - 16,
            what: "bad index offset".into(),
        })?;
    file.seek(SeekFrom::Start(index_offset))?;
    let mut index = vec![0u8; index_len as usize];
    file.read_exact(&mut index)?;
    let (body, crc) = index.split_at(index.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes"))
        || &body[0..4] != INDEX_MAGIC
    {
        return Err(TraceFileError::Corrupt {
            offset: index_offset,
            what: "index checksum mismatch".into(),
        });
    }
    let count = u32::from_le_bytes(body[4..8].try_into().expect("4 bytes")) as usize;
    if body.len() != 8 + count * 20 {
        return Err(TraceFileError::Corrupt {
            offset: index_offset,
            what: "index length disagrees".into(),
        });
    }
    Ok(Some(
        body[8..]
            .chunks_exact(20)
            .map(|entry| BlockInfo {
                offset: u64::from_le_bytes(entry[0..8].try_into().expect("8 bytes")),
                first_ns: u64::from_le_bytes(entry[8..16].try_into().expect("8 bytes")),
                events: u32::from_le_bytes(entry[16..20].try_into().expect("4 bytes")),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            e(2_400, 10, 12, EventKind::Signal { signal: 34 }),
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
        let header = Header::now(vec!["server".into(), "--workers".into(), "5".into()]);
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
        let header = Header::now(vec![]);
        let mut writer = TraceWriter::create(&dir, &header).unwrap();
        for i in 0..50_000u64 {
            writer.event(&Event {
                time_ns: i,
                pid: 1,
                tid: 1,
                kind: EventKind::Signal { signal: 10 },
            });
        }
        writer.finish().unwrap();
        let index = read_index(&dir).unwrap().unwrap();
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
mod block_tests {
    use super::*;
    use crate::EventKind;

    #[test]
    fn reading_resumes_at_any_block_seen_before() {
        let mut writer = TraceWriter::new(Vec::new(), &Header::now(vec![])).unwrap();
        let events: Vec<Event> = (0..50_000u64)
            .map(|i| Event {
                time_ns: 1_000 + i * 10,
                pid: 1,
                tid: 1 + (i % 7) as i32,
                kind: EventKind::SyscallEntry {
                    nr: (i % 300) as u32,
                    args: [i, 2, 3, 4, 5, 6],
                    data: vec![],
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
