//! Reading a trace file: the header, then block by block, each checked
//! before a record of it is decoded; and the index, for seeking.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::record::{ThreadTable, decode};
use super::varint::Cursor;
use super::writer::BlockInfo;
use super::{
    BLOCK_BYTES, BLOCK_HEADER_BYTES, BLOCK_MAGIC, FOOTER_MAGIC, Header, INDEX_MAGIC, MAGIC,
    MAX_BLOCK_BYTES, OLDEST_VERSION, TraceFileError, VERSION, decode_header,
};
use crate::event::Event;

/// Reads a trace file block by block.
pub struct TraceReader<R: Read> {
    input: R,
    header: Header,
    /// The file's format version (its block checksums differ).
    version: u16,
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
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
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
        let header = decode_header(&body, version).ok_or_else(|| TraceFileError::Corrupt {
            offset: 14,
            what: "unreadable header".into(),
        })?;
        Ok(TraceReader {
            input,
            header,
            version,
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
            // The end of the blocks, if it really is the index: a block
            // whose magic was damaged into the index's must not end the
            // file quietly.
            return self.check_index(&header[..got]).map(|()| false);
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
        if block_checksum(self.version, count, first_ns, &self.block) != crc {
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
            events.push(upgrade(event, self.version));
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

impl<R: Read> TraceReader<R> {
    /// What follows the index magic at `self.offset` (`start`: the bytes
    /// read so far) must be the whole index and the footer naming this
    /// offset, with its checksum; anything else is damage.
    fn check_index(&mut self, start: &[u8]) -> Result<(), TraceFileError> {
        let mut rest = start.to_vec();
        let limit = (MAX_BLOCK_BYTES + 16) as u64;
        (&mut self.input).take(limit).read_to_end(&mut rest)?;
        let damaged = || TraceFileError::Corrupt {
            offset: self.offset,
            what: "expected a block or the index; found neither".into(),
        };
        if rest.len() < 16 + 12 {
            return Err(damaged());
        }
        let (index, footer) = rest.split_at(rest.len() - 16);
        let names_this =
            u64::from_le_bytes(footer[0..8].try_into().expect("8 bytes")) == self.offset;
        let (body, crc) = index.split_at(index.len() - 4);
        let checks = crc32fast::hash(body) == u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        if &footer[8..16] != FOOTER_MAGIC || !names_this || !checks {
            return Err(damaged());
        }
        Ok(())
    }
}

/// An event of an older file in this version's terms: before version 4,
/// accept and accept4 kept the peer's address raw at exit, where the
/// signature table's calls keep segments (the address, then the length
/// before and after, of which only the after is known).
fn upgrade(mut event: Event, version: u16) -> Event {
    use crate::EventKind;
    use crate::syscall::signature::push_segment;
    if version >= 4 {
        return event;
    }
    if let EventKind::SyscallExit { nr, data, .. } = &mut event.kind {
        let accept = [syscalls::Sysno::accept, syscalls::Sysno::accept4]
            .iter()
            .any(|s| s.id() as u32 == *nr);
        if accept && !data.is_empty() {
            let length = (data.len() as u32).to_ne_bytes();
            let mut segments = Vec::new();
            push_segment(&mut segments, Some(data));
            push_segment(&mut segments, Some(&[length, length].concat()));
            *data = segments;
        }
    }
    event
}

/// A block's checksum: since version 3 over its event count and first
/// timestamp as well as its payload (a damaged timestamp once gave "a
/// trace over 35185.5 s"); before, over the payload alone.
pub(crate) fn block_checksum(version: u16, count: u32, first_ns: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    if version >= 3 {
        hasher.update(&count.to_le_bytes());
        hasher.update(&first_ns.to_le_bytes());
    }
    hasher.update(payload);
    hasher.finalize()
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

/// The index of a finished trace file: its blocks, and what the capture
/// lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    /// Every block, in file order (for seeking by time).
    pub blocks: Vec<BlockInfo>,
    /// Events the kernel dropped while recording, per CPU (version 3; the
    /// perf backend's full ring buffers): non-empty means the trace has
    /// gaps.
    pub lost: Vec<(u32, u64)>,
}

impl Index {
    /// Events in the file, by the index.
    pub fn events(&self) -> u64 {
        self.blocks.iter().map(|b| u64::from(b.events)).sum()
    }

    /// Events lost while recording, over every CPU.
    pub fn lost_events(&self) -> u64 {
        self.lost.iter().map(|(_, count)| count).sum()
    }
}

/// Reads the index of a finished trace file. `Ok(None)` if the file has
/// no index (it was cut short).
pub fn read_index(path: &Path) -> Result<Option<Index>, TraceFileError> {
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
    decode_index(body)
        .ok_or_else(|| TraceFileError::Corrupt {
            offset: index_offset,
            what: "index length disagrees".into(),
        })
        .map(Some)
}

/// The index body after its checksum was checked: the block entries, then
/// (version 3) the lost counts; a version 1 or 2 index ends after the
/// blocks.
pub(super) fn decode_index(body: &[u8]) -> Option<Index> {
    let u32_at = |at: usize| Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?));
    let count = u32_at(4)? as usize;
    let blocks_end = 8usize.checked_add(count.checked_mul(20)?)?;
    let blocks = body
        .get(8..blocks_end)?
        .chunks_exact(20)
        .map(|entry| BlockInfo {
            offset: u64::from_le_bytes(entry[0..8].try_into().expect("8 bytes")),
            first_ns: u64::from_le_bytes(entry[8..16].try_into().expect("8 bytes")),
            events: u32::from_le_bytes(entry[16..20].try_into().expect("4 bytes")),
        })
        .collect();
    let mut lost = Vec::new();
    if body.len() > blocks_end {
        let cpus = u32_at(blocks_end)? as usize;
        let lost_end = (blocks_end + 4).checked_add(cpus.checked_mul(12)?)?;
        if body.len() != lost_end {
            return None;
        }
        lost = body[blocks_end + 4..]
            .chunks_exact(12)
            .map(|entry| {
                (
                    u32::from_le_bytes(entry[0..4].try_into().expect("4 bytes")),
                    u64::from_le_bytes(entry[4..12].try_into().expect("8 bytes")),
                )
            })
            .collect();
    } else if body.len() != blocks_end {
        return None;
    }
    Some(Index { blocks, lost })
}

#[cfg(test)]
mod upgrade_tests {
    use super::*;
    use crate::EventKind;

    #[test]
    fn a_version_3_accept_is_read_as_the_table_keeps_it() {
        let accept4 = syscalls::Sysno::accept4.id() as u32;
        let raw = vec![2, 0, 0x1f, 0x90, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let exit = |data: Vec<u8>| Event {
            time_ns: 1,
            pid: 1,
            tid: 1,
            kind: EventKind::SyscallExit {
                nr: accept4,
                ret: 5,
                data,
                data_capture: crate::DataCapture::Captured,
            },
        };
        let EventKind::SyscallExit { data, .. } = upgrade(exit(raw.clone()), 3).kind else {
            unreachable!()
        };
        let mut segments = crate::syscall::signature::Segments::new(&data);
        assert_eq!(segments.next_segment(), Some(&raw[..]));
        let lengths = segments.next_segment().unwrap();
        assert_eq!(lengths, [16u32.to_ne_bytes(), 16u32.to_ne_bytes()].concat());
        // A version 4 file is left as it is.
        assert_eq!(upgrade(exit(raw.clone()), 4), exit(raw));
    }
}
