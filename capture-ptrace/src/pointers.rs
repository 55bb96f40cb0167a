//! Which bytes of the tracee's memory an event carries: the arguments
//! passed by pointer that the decoders need, read while the tracee is
//! stopped (after the stop they may change or vanish).

use syscalls::Sysno;

use crate::ptrace::{Tid, read_c_string, read_memory};
use tracebench_trace::syscall::is_futex_wait;
use tracebench_trace::syscall::signature::{
    Arg, Length, Memory, captured, push_segment, signature,
};

/// Longest path read for execve and friends.
const PATH_LIMIT: usize = 4096;
/// Largest socket address read (sockaddr_storage).
const SOCKADDR_LIMIT: usize = 128;
/// A struct timespec on 64-bit Linux.
const TIMESPEC_BYTES: usize = 16;
/// struct clone_args as of Linux 5.7 (with set_tid and cgroup).
const CLONE_ARGS_BYTES: usize = 88;

fn sysno(nr: u64) -> Option<Sysno> {
    Sysno::new(nr as usize)
}

/// Bytes to keep with a syscall entry of thread `tid`.
pub fn at_entry(tid: Tid, nr: u64, args: &[u64; 6], limit: usize) -> Vec<u8> {
    let Some(sysno) = sysno(nr) else {
        return Vec::new();
    };
    if let Some(signature) = signature(sysno) {
        let memory = MemoryReader::new(tid, args, None, limit);
        return memory.segments(captured(signature, false));
    }
    match sysno {
        Sysno::execve => exec_data(tid, args[0], args[1], args[2], limit),
        Sysno::execveat => exec_data(tid, args[1], args[2], args[3], limit),
        Sysno::write | Sysno::sendto => read_memory(tid, args[1], (args[2] as usize).min(limit)),
        Sysno::nanosleep => read_memory(tid, args[0], TIMESPEC_BYTES),
        Sysno::clock_nanosleep => read_memory(tid, args[2], TIMESPEC_BYTES),
        Sysno::futex if is_futex_wait(args[1]) && args[3] != 0 => {
            read_memory(tid, args[3], TIMESPEC_BYTES)
        }
        Sysno::connect | Sysno::bind => {
            read_memory(tid, args[1], (args[2] as usize).min(SOCKADDR_LIMIT))
        }
        Sysno::clone3 => read_memory(tid, args[0], (args[1] as usize).min(CLONE_ARGS_BYTES)),
        _ => Vec::new(),
    }
}

/// Most argv strings kept for an execve; the count of all is kept too.
const EXEC_ARGS: usize = 32;
/// Most argv or envp pointers counted.
const EXEC_POINTERS: usize = 65_536;

/// The pointers of a NULL-terminated array (argv, envp), at most `max`;
/// `None` if the array cannot be read at all (a bad pointer).
fn read_pointers(tid: Tid, addr: u64, max: usize) -> Option<Vec<u64>> {
    let mut pointers = Vec::new();
    if addr == 0 {
        return Some(pointers);
    }
    if read_memory(tid, addr, 8).len() < 8 {
        return None;
    }
    // 64 pointers a read; a read that crosses into an unmapped page comes
    // back short, and the next one starts where it stopped.
    let mut at = addr;
    while pointers.len() < max {
        let chunk = read_memory(tid, at, 512);
        if chunk.len() < 8 {
            break;
        }
        for word in chunk.chunks_exact(8) {
            let pointer = u64::from_ne_bytes(word.try_into().expect("8 bytes"));
            if pointer == 0 || pointers.len() == max {
                return Some(pointers);
            }
            pointers.push(pointer);
        }
        at += (chunk.len() / 8 * 8) as u64;
    }
    Some(pointers)
}

/// The argc of [`exec_data`] when argv could not be read.
pub const UNREADABLE_ARGV: u32 = u32::MAX;

/// What an execve carries, as the strace exporter reads it: the path and a
/// NUL; the number of arguments (u32, little-endian; [`UNREADABLE_ARGV`]
/// for a bad pointer); the first [`EXEC_ARGS`] of them, each a flag byte
/// (1: cut at `limit`), its bytes and a NUL; the number of environment
/// variables (u32).
fn exec_data(tid: Tid, path: u64, argv: u64, envp: u64, limit: usize) -> Vec<u8> {
    let mut data = read_c_string(tid, path, PATH_LIMIT);
    data.push(0);
    let args = read_pointers(tid, argv, EXEC_POINTERS);
    let argc = args.as_ref().map_or(UNREADABLE_ARGV, |a| a.len() as u32);
    data.extend(argc.to_le_bytes());
    // What is kept of each argument: -s bytes, at most a path's length.
    let keep = limit.min(PATH_LIMIT);
    for &arg in args.iter().flatten().take(EXEC_ARGS) {
        let mut text = read_c_string(tid, arg, keep + 1);
        let cut = text.len() > keep;
        text.truncate(keep);
        data.push(u8::from(cut));
        data.extend(text);
        data.push(0);
    }
    let vars = read_pointers(tid, envp, EXEC_POINTERS).map_or(0, |v| v.len());
    data.extend((vars as u32).to_le_bytes());
    data
}

/// What the exit will need of memory the kernel rewrites: the socklen_t
/// values of in/out lengths, as they were at entry (4 bytes each).
pub fn before_exit(tid: Tid, nr: u64, args: &[u64; 6]) -> Vec<u8> {
    let Some(signature) = sysno(nr).and_then(signature) else {
        return Vec::new();
    };
    let mut before = Vec::new();
    for (index, arg) in captured(signature, true) {
        if arg.memory() == Some(Memory::SocklenInOut) {
            let value = read_memory(tid, args[index], 4);
            before.extend(if value.len() == 4 { value } else { vec![0; 4] });
        }
    }
    before
}

/// Bytes to keep with a syscall exit (what the kernel wrote back);
/// `before` is what [`before_exit`] read at entry.
pub fn at_exit(
    tid: Tid,
    nr: u64,
    args: &[u64; 6],
    ret: i64,
    before: &[u8],
    limit: usize,
) -> Vec<u8> {
    let Some(sysno) = sysno(nr) else {
        return Vec::new();
    };
    if let Some(signature) = signature(sysno) {
        let mut memory = MemoryReader::new(tid, args, Some(ret), limit);
        memory.before = before;
        return memory.segments(captured(signature, true));
    }
    match sysno {
        Sysno::read | Sysno::recvfrom if ret > 0 => {
            read_memory(tid, args[1], (ret as usize).min(limit))
        }
        // Its flags again: the line's end depends on them.
        Sysno::clone3 => read_memory(tid, args[0], 8),
        _ => Vec::new(),
    }
}

/// Most array elements kept (pollfds, epoll events, iovecs, gids).
const ARRAY_LIMIT: usize = 64;
/// Most bytes of linux_dirent64 records walked to count them.
const DIRENTS_LIMIT: usize = 1 << 20;

/// Reads the memory a table call's arguments point to, as
/// [`tracebench_trace::syscall::signature`] describes it.
struct MemoryReader<'a> {
    tid: Tid,
    args: &'a [u64; 6],
    /// At exit: the return value; memory the kernel writes is read only
    /// when it is not an error.
    ret: Option<i64>,
    limit: usize,
    /// In/out values read at entry, 4 bytes each, in argument order.
    before: &'a [u8],
}

impl<'a> MemoryReader<'a> {
    fn new(tid: Tid, args: &'a [u64; 6], ret: Option<i64>, limit: usize) -> Self {
        MemoryReader {
            tid,
            args,
            ret,
            limit,
            before: &[],
        }
    }

    fn segments(&self, wanted: impl Iterator<Item = (usize, Arg)>) -> Vec<u8> {
        let mut data = Vec::new();
        let mut before = self.before.chunks_exact(4);
        for (index, arg) in wanted {
            let Some(memory) = arg.memory() else { continue };
            // What the kernel writes is there only if the call succeeded;
            // what it reads is there either way (an interrupted poll).
            let written = matches!(arg, Arg::Out(_));
            let failed = self.ret.is_some_and(|r| r < 0);
            let mut bytes = if written && failed {
                None
            } else {
                self.read(self.args[index], memory)
            };
            // An in/out length: the value at entry, then the one at exit.
            if memory == Memory::SocklenInOut {
                let entry = before.next().unwrap_or(&[0; 4]);
                bytes = bytes.map(|exit| [entry, &exit].concat());
            }
            push_segment(&mut data, bytes.as_deref());
        }
        data
    }

    /// A count argument, which the kernel reads as a C int: the upper
    /// half of the register is the caller's leftovers.
    fn count(&self, index: u8) -> usize {
        self.args[usize::from(index)] as u32 as usize
    }

    fn length(&self, length: Length) -> usize {
        match length {
            Length::Arg(i) => self.args[usize::from(i)] as usize,
            Length::Return => self.ret.map_or(0, |r| r.max(0) as usize),
            // What the kernel says it wrote, within what the caller gave
            // (its value at entry, kept in `before`): the rest is not ours.
            Length::PointedBy(i) => {
                let value = read_memory(self.tid, self.args[usize::from(i)], 4);
                let written = <[u8; 4]>::try_from(value.as_slice()).map_or(0, u32::from_ne_bytes);
                let given = self
                    .before
                    .first_chunk::<4>()
                    .map_or(u32::MAX, |v| u32::from_ne_bytes(*v));
                written.min(given) as usize
            }
        }
    }

    /// `len` bytes at `addr`, or `None` if they cannot all be read.
    fn exactly(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let bytes = read_memory(self.tid, addr, len);
        (bytes.len() == len).then_some(bytes)
    }

    fn read(&self, addr: u64, memory: Memory) -> Option<Vec<u8>> {
        if addr == 0 {
            return None;
        }
        match memory {
            // An empty read is a bad pointer; an empty string read its NUL.
            Memory::Path | Memory::Text if read_memory(self.tid, addr, 1).is_empty() => None,
            Memory::Path => Some(read_c_string(self.tid, addr, PATH_LIMIT)),
            // A flag byte (1: cut at the limit), then the text.
            Memory::Text => {
                let keep = self.limit.min(PATH_LIMIT);
                let mut text = read_c_string(self.tid, addr, keep + 1);
                let cut = text.len() > keep;
                text.truncate(keep);
                text.insert(0, u8::from(cut));
                Some(text)
            }
            Memory::Bytes(length) | Memory::HexBytes(length) => {
                let len = self.length(length).min(self.limit);
                self.exactly(addr, len)
            }
            Memory::Sigset(length) | Memory::CpuSet(length) => {
                self.exactly(addr, self.length(length).min(128))
            }
            Memory::Dirents(length) => self.count_dirents(addr, self.length(length)),
            Memory::Pollfds(count) => {
                let count = self.count(count).min(ARRAY_LIMIT);
                self.exactly(addr, count * 8)
            }
            Memory::EpollEvents => {
                let count = self.length(Length::Return).min(ARRAY_LIMIT);
                self.exactly(addr, count * 12)
            }
            Memory::Iovecs(count) => self.iovecs(addr, self.count(count)),
            Memory::Gids(count) => {
                let count = self.count(count).min(ARRAY_LIMIT);
                self.exactly(addr, count * 4)
            }
            Memory::SocklenInOut => self.exactly(addr, 4),
            Memory::Sockaddr(length) => self.exactly(addr, self.length(length).min(SOCKADDR_LIMIT)),
            Memory::Struct(layout) => self.exactly(addr, layout.size()),
        }
    }

    /// The number of linux_dirent64 records in the `len` bytes filled in,
    /// as 4 bytes: strace shows the count, not the names.
    fn count_dirents(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let bytes = self.exactly(addr, len.min(DIRENTS_LIMIT))?;
        let mut count = 0u32;
        let mut at = 0usize;
        // d_ino (8), d_off (8), d_reclen (2): each record says its length.
        while let Some(reclen) = bytes.get(at + 16..at + 18) {
            let reclen = usize::from(u16::from_ne_bytes([reclen[0], reclen[1]]));
            if reclen == 0 {
                break;
            }
            count += 1;
            at += reclen;
        }
        Some(count.to_le_bytes().to_vec())
    }

    /// Each iovec as its length (u64), the bytes the call filled or sent
    /// (u64: at exit no more than it returned), the bytes kept (u32) and
    /// those bytes: the first `limit` of what was filled.
    fn iovecs(&self, addr: u64, count: usize) -> Option<Vec<u8>> {
        let count = count.min(ARRAY_LIMIT);
        let vectors = self.exactly(addr, count * 16)?;
        let mut budget = self.ret.map_or(usize::MAX, |r| r.max(0) as usize);
        let mut out = Vec::new();
        for vector in vectors.chunks_exact(16) {
            let base = u64::from_ne_bytes(vector[..8].try_into().expect("8 bytes"));
            let len = u64::from_ne_bytes(vector[8..].try_into().expect("8 bytes"));
            // What the call put in this buffer (a short read fills less).
            let filled = (len as usize).min(budget);
            budget -= filled;
            let bytes = read_memory(self.tid, base, filled.min(self.limit));
            out.extend(len.to_le_bytes());
            out.extend((filled as u64).to_le_bytes());
            out.extend((bytes.len() as u32).to_le_bytes());
            out.extend(bytes);
        }
        Some(out)
    }
}
