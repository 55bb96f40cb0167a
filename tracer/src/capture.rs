//! Which bytes of the tracee's memory an event carries: the arguments
//! passed by pointer that the decoders need, read while the tracee is
//! stopped (after the stop they may change or vanish).

use syscalls::Sysno;

use crate::ptrace::{Tid, read_c_string, read_memory};
use crate::selection::is_futex_wait;

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

/// Bytes to keep with a syscall entry.
pub fn at_entry(pid: Tid, nr: u64, args: &[u64; 6], limit: usize) -> Vec<u8> {
    let Some(sysno) = sysno(nr) else {
        return Vec::new();
    };
    match sysno {
        Sysno::execve => read_c_string(pid, args[0], PATH_LIMIT),
        Sysno::execveat => read_c_string(pid, args[1], PATH_LIMIT),
        Sysno::write | Sysno::sendto => read_memory(pid, args[1], (args[2] as usize).min(limit)),
        Sysno::nanosleep => read_memory(pid, args[0], TIMESPEC_BYTES),
        Sysno::clock_nanosleep => read_memory(pid, args[2], TIMESPEC_BYTES),
        Sysno::futex if is_futex_wait(args[1]) && args[3] != 0 => {
            read_memory(pid, args[3], TIMESPEC_BYTES)
        }
        Sysno::connect | Sysno::bind => {
            read_memory(pid, args[1], (args[2] as usize).min(SOCKADDR_LIMIT))
        }
        Sysno::clone3 => read_memory(pid, args[0], (args[1] as usize).min(CLONE_ARGS_BYTES)),
        _ => Vec::new(),
    }
}

/// Bytes to keep with a syscall exit (what the kernel wrote back).
pub fn at_exit(pid: Tid, nr: u64, args: &[u64; 6], ret: i64, limit: usize) -> Vec<u8> {
    let Some(sysno) = sysno(nr) else {
        return Vec::new();
    };
    match sysno {
        Sysno::read | Sysno::recvfrom if ret > 0 => {
            read_memory(pid, args[1], (ret as usize).min(limit))
        }
        Sysno::accept | Sysno::accept4 | Sysno::getsockname | Sysno::getpeername
            if ret >= 0 && args[1] != 0 && args[2] != 0 =>
        {
            let len = read_memory(pid, args[2], 4);
            let Ok(len) = <[u8; 4]>::try_from(len.as_slice()) else {
                return Vec::new();
            };
            read_memory(
                pid,
                args[1],
                (u32::from_ne_bytes(len) as usize).min(SOCKADDR_LIMIT),
            )
        }
        _ => Vec::new(),
    }
}
