//! Writing a trace file: the header, blocks of records as they fill, and
//! the index and footer at the end.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::record::{ThreadTable, encode};
use super::{
    BLOCK_BYTES, BLOCK_HEADER_BYTES, BLOCK_MAGIC, FOOTER_MAGIC, Header, INDEX_MAGIC, MAGIC,
    TraceFileError, VERSION, encode_header,
};
use crate::event::{Event, EventKind, EventSink};

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
    /// Events the capture reported lost, per CPU, for the index.
    lost: BTreeMap<u32, u64>,
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
            lost: BTreeMap::new(),
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
            let crc = super::reader::block_checksum(
                VERSION,
                self.block_events,
                self.block_first_ns,
                &self.block,
            );
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
        if let EventKind::Lost { cpu, count } = event.kind {
            *self.lost.entry(cpu).or_default() += count;
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
        let mut index = Vec::with_capacity(4 + 4 + self.index.len() * 20 + 4);
        index.extend_from_slice(INDEX_MAGIC);
        index.extend_from_slice(&(self.index.len() as u32).to_le_bytes());
        for block in &self.index {
            index.extend_from_slice(&block.offset.to_le_bytes());
            index.extend_from_slice(&block.first_ns.to_le_bytes());
            index.extend_from_slice(&block.events.to_le_bytes());
        }
        index.extend_from_slice(&(self.lost.len() as u32).to_le_bytes());
        for (cpu, count) in &self.lost {
            index.extend_from_slice(&cpu.to_le_bytes());
            index.extend_from_slice(&count.to_le_bytes());
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
