//! Which bytes of the tracee's memory an event carries: the arguments
//! passed by pointer that the decoders need, read while the tracee is
//! stopped (after the stop they may change or vanish).

use syscalls::Sysno;

use crate::ptrace::{Tid, read_c_string, read_memory};
use tracebench_trace::syscall::is_futex_wait;

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

/// Bytes to keep with a syscall exit (what the kernel wrote back).
pub fn at_exit(tid: Tid, nr: u64, args: &[u64; 6], ret: i64, limit: usize) -> Vec<u8> {
    let Some(sysno) = sysno(nr) else {
        return Vec::new();
    };
    match sysno {
        Sysno::read | Sysno::recvfrom if ret > 0 => {
            read_memory(tid, args[1], (ret as usize).min(limit))
        }
        Sysno::accept | Sysno::accept4 | Sysno::getsockname | Sysno::getpeername
            if ret >= 0 && args[1] != 0 && args[2] != 0 =>
        {
            let len = read_memory(tid, args[2], 4);
            let Ok(len) = <[u8; 4]>::try_from(len.as_slice()) else {
                return Vec::new();
            };
            read_memory(
                tid,
                args[1],
                (u32::from_ne_bytes(len) as usize).min(SOCKADDR_LIMIT),
            )
        }
        _ => Vec::new(),
    }
}
