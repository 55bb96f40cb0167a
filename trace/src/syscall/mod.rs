//! Facts about syscalls that every part of tracebench agrees on, whatever
//! captured them: which argument registers a call reads, and which futex
//! operations sleep.

use syscalls::Sysno;

pub mod signature;

fn sysno(nr: u64) -> Option<Sysno> {
    Sysno::new(nr as usize)
}

/// The futex operations that sleep: `FUTEX_WAIT`, `FUTEX_WAIT_BITSET`,
/// `FUTEX_WAIT_REQUEUE_PI`, `FUTEX_LOCK_PI`, `FUTEX_LOCK_PI2`.
pub const FUTEX_WAIT_OPS: &[u32] = &[
    libc::FUTEX_WAIT as u32,
    libc::FUTEX_WAIT_BITSET as u32,
    libc::FUTEX_WAIT_REQUEUE_PI as u32,
    libc::FUTEX_LOCK_PI as u32,
    13, // FUTEX_LOCK_PI2 (Linux 5.14)
];

/// Whether a futex `op` argument is one that may sleep.
pub fn is_futex_wait(op: u64) -> bool {
    FUTEX_WAIT_OPS.contains(&((op as u32) & libc::FUTEX_CMD_MASK as u32))
}

/// How many argument registers syscall `nr` reads, for the syscalls a
/// server trace is made of (6 for the rest). The other registers hold
/// leftovers of earlier calls: meaningless, and costly to store.
pub fn arity(sysno: Sysno, args: &[u64; 6]) -> usize {
    if let Some(arity) = signature::table_arity(sysno) {
        return arity;
    }
    match sysno {
        Sysno::fork | Sysno::vfork | Sysno::getpid | Sysno::gettid | Sysno::sched_yield => 0,
        Sysno::close | Sysno::exit | Sysno::exit_group | Sysno::brk | Sysno::dup => 1,
        Sysno::listen
        | Sysno::shutdown
        | Sysno::nanosleep
        | Sysno::munmap
        | Sysno::clone3
        | Sysno::dup2
        | Sysno::kill
        | Sysno::tkill => 2,
        Sysno::read
        | Sysno::write
        | Sysno::readv
        | Sysno::writev
        | Sysno::accept
        | Sysno::connect
        | Sysno::bind
        | Sysno::socket
        | Sysno::getsockname
        | Sysno::getpeername
        | Sysno::execve
        | Sysno::poll
        | Sysno::open
        | Sysno::lseek
        | Sysno::mprotect
        | Sysno::tgkill
        | Sysno::ioctl
        | Sysno::fcntl
        | Sysno::madvise => 3,
        Sysno::accept4
        | Sysno::clock_nanosleep
        | Sysno::epoll_wait
        | Sysno::epoll_ctl
        | Sysno::openat
        | Sysno::wait4
        | Sysno::pread64
        | Sysno::pwrite64
        | Sysno::rt_sigaction
        | Sysno::rt_sigprocmask
        | Sysno::socketpair => 4,
        Sysno::clone
        | Sysno::setsockopt
        | Sysno::getsockopt
        | Sysno::execveat
        | Sysno::waitid
        | Sysno::ppoll => 5,
        Sysno::futex => {
            let command = (args[1] as i32) & libc::FUTEX_CMD_MASK;
            match command {
                libc::FUTEX_WAKE
                | libc::FUTEX_FD
                | libc::FUTEX_UNLOCK_PI
                | libc::FUTEX_TRYLOCK_PI => 3,
                libc::FUTEX_WAIT | libc::FUTEX_LOCK_PI => 4,
                13 => 4, // FUTEX_LOCK_PI2
                libc::FUTEX_REQUEUE => 5,
                libc::FUTEX_WAIT_REQUEUE_PI => 5,
                _ => 6,
            }
        }
        _ => 6,
    }
}

/// `args` with the registers `nr` does not read set to zero.
pub fn used_args(nr: u64, args: [u64; 6]) -> [u64; 6] {
    let Some(sysno) = sysno(nr) else { return args };
    let used = arity(sysno, &args);
    let mut kept = [0u64; 6];
    kept[..used].copy_from_slice(&args[..used]);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_registers_are_cleared() {
        let futex = Sysno::futex.id() as u64;
        let wake = [0x10, libc::FUTEX_WAKE as u64, 1, 0xdead, 0xbeef, 7];
        assert_eq!(
            used_args(futex, wake),
            [0x10, libc::FUTEX_WAKE as u64, 1, 0, 0, 0]
        );
        let bitset = [
            0x10,
            libc::FUTEX_WAIT_BITSET as u64,
            1,
            0,
            0,
            u32::MAX as u64,
        ];
        assert_eq!(used_args(futex, bitset), bitset);
        let accept4 = Sysno::accept4.id() as u64;
        assert_eq!(
            used_args(accept4, [3, 0, 0, 0x80000, 9, 9]),
            [3, 0, 0, 0x80000, 0, 0]
        );
        assert_eq!(
            used_args(Sysno::mmap.id() as u64, [1, 2, 3, 4, 5, 6]),
            [1, 2, 3, 4, 5, 6]
        );
    }
}
