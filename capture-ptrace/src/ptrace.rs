//! Thin, safe wrappers over the ptrace(2) requests and the waitpid(2)
//! statuses the engine uses. Every wrapper returns the raw errno on failure,
//! because ESRCH ("the thread is gone or not stopped") is an everyday event
//! for a tracer, not an error.

use std::io;

/// A thread id (the kernel's task id; equal to the pid for a leader).
pub type Tid = libc::pid_t;

/// What a `waitpid` status says happened to a tracee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The thread exited with this code (for a leader: the process did).
    Exited(i32),
    /// The thread was killed by this signal.
    Killed(i32),
    /// A syscall-entry or syscall-exit stop (`SIGTRAP | 0x80`, thanks to
    /// `PTRACE_O_TRACESYSGOOD`); which one is asked with
    /// [`get_syscall_info`].
    Syscall,
    /// A `PTRACE_EVENT_*` stop, with the signal the status carries.
    Event(i32, i32),
    /// A signal-delivery stop: the signal is about to be delivered.
    Signal(i32),
}

impl Stop {
    /// Decodes a raw `waitpid` status.
    pub fn from_status(status: libc::c_int) -> Option<Stop> {
        if libc::WIFEXITED(status) {
            return Some(Stop::Exited(libc::WEXITSTATUS(status)));
        }
        if libc::WIFSIGNALED(status) {
            return Some(Stop::Killed(libc::WTERMSIG(status)));
        }
        if !libc::WIFSTOPPED(status) {
            return None;
        }
        let signal = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xffff;
        Some(if event != 0 {
            Stop::Event(event, signal)
        } else if signal == libc::SIGTRAP | 0x80 {
            Stop::Syscall
        } else {
            Stop::Signal(signal)
        })
    }
}

/// Waits for any tracee (`-1`, `__WALL`: threads too). `Ok(None)` with
/// `nohang` means nobody has anything to report.
pub fn wait_any(nohang: bool) -> io::Result<Option<(Tid, libc::c_int)>> {
    let mut status = 0;
    let flags = libc::__WALL | if nohang { libc::WNOHANG } else { 0 };
    // SAFETY: waitpid writes only to our local status.
    let tid = unsafe { libc::waitpid(-1, &mut status, flags) };
    match tid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        tid => Ok(Some((tid, status))),
    }
}

/// Waits for one specific task to stop or exit.
pub fn wait_for(tid: Tid) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes only to our local status.
        let ret = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        if ret == tid {
            return Ok(status);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(error);
        }
    }
}

fn request(request: libc::c_uint, tid: Tid, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: every caller passes a request whose `addr` and `data` are
    // plain integers or point to memory sized for that request.
    let ret = unsafe {
        libc::ptrace(
            request,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    if ret == -1 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(0) {
            return Err(error);
        }
    }
    Ok(ret)
}

/// `PTRACE_SEIZE` with `options`: attach without stopping the thread.
pub fn seize(tid: Tid, options: libc::c_int) -> io::Result<()> {
    request(libc::PTRACE_SEIZE, tid, 0, options as usize).map(drop)
}

/// `PTRACE_SETOPTIONS`.
pub fn set_options(tid: Tid, options: libc::c_int) -> io::Result<()> {
    request(libc::PTRACE_SETOPTIONS, tid, 0, options as usize).map(drop)
}

/// Resumes until the next syscall stop, delivering `signal` (0 for none).
pub fn resume_to_syscall(tid: Tid, signal: i32) -> io::Result<()> {
    request(libc::PTRACE_SYSCALL, tid, 0, signal as usize).map(drop)
}

/// Resumes without syscall stops (seccomp stops and events still happen),
/// delivering `signal` (0 for none).
pub fn resume(tid: Tid, signal: i32) -> io::Result<()> {
    request(libc::PTRACE_CONT, tid, 0, signal as usize).map(drop)
}

/// Leaves a thread in group-stop but lets the tracer hear when it ends
/// (`PTRACE_LISTEN`).
pub fn listen(tid: Tid) -> io::Result<()> {
    request(libc::PTRACE_LISTEN, tid, 0, 0).map(drop)
}

/// Stops a running seized thread (`PTRACE_INTERRUPT`).
pub fn interrupt(tid: Tid) -> io::Result<()> {
    request(libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

/// Detaches from a stopped thread, delivering `signal` (0 for none).
pub fn detach(tid: Tid, signal: i32) -> io::Result<()> {
    request(libc::PTRACE_DETACH, tid, 0, signal as usize).map(drop)
}

/// The message of the last `PTRACE_EVENT_*` (new tid, former tid, exit
/// status).
pub fn event_message(tid: Tid) -> io::Result<u64> {
    let mut message: libc::c_ulong = 0;
    request(
        libc::PTRACE_GETEVENTMSG,
        tid,
        0,
        &mut message as *mut libc::c_ulong as usize,
    )?;
    Ok(message as u64)
}

/// The siginfo_t of the signal a thread is stopped to receive, as bytes
/// (strace shows its fields); empty if it cannot be read.
pub fn signal_info(tid: Tid) -> Vec<u8> {
    // siginfo_t is 128 bytes on Linux, on every architecture.
    let mut info = [0u8; 128];
    match request(libc::PTRACE_GETSIGINFO, tid, 0, info.as_mut_ptr() as usize) {
        Ok(_) => info.to_vec(),
        Err(_) => Vec::new(),
    }
}

/// What `PTRACE_GET_SYSCALL_INFO` says about the current stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallInfo {
    /// Syscall-entry stop: number and arguments.
    Entry {
        /// The syscall number.
        nr: u64,
        /// The six argument registers.
        args: [u64; 6],
    },
    /// Syscall-exit stop: the return value (negative errno on failure).
    Exit {
        /// What the syscall returned.
        ret: i64,
    },
    /// A `PTRACE_EVENT_SECCOMP` stop: like an entry.
    Seccomp {
        /// The syscall number.
        nr: u64,
        /// The six argument registers.
        args: [u64; 6],
    },
    /// Not a syscall stop.
    None,
}

/// Asks the kernel which syscall stop this is (Linux 5.3+).
pub fn get_syscall_info(tid: Tid) -> io::Result<SyscallInfo> {
    // SAFETY: an all-zero ptrace_syscall_info is a valid value of this plain
    // C struct.
    let mut info: libc::ptrace_syscall_info = unsafe { std::mem::zeroed() };
    request(
        libc::PTRACE_GET_SYSCALL_INFO,
        tid,
        std::mem::size_of::<libc::ptrace_syscall_info>(),
        &mut info as *mut libc::ptrace_syscall_info as usize,
    )?;
    // SAFETY: the kernel filled the union member that `op` names.
    Ok(unsafe {
        match info.op {
            libc::PTRACE_SYSCALL_INFO_ENTRY => SyscallInfo::Entry {
                nr: info.u.entry.nr,
                args: info.u.entry.args,
            },
            libc::PTRACE_SYSCALL_INFO_EXIT => SyscallInfo::Exit {
                ret: info.u.exit.sval,
            },
            libc::PTRACE_SYSCALL_INFO_SECCOMP => SyscallInfo::Seccomp {
                nr: info.u.seccomp.nr,
                args: info.u.seccomp.args,
            },
            _ => SyscallInfo::None,
        }
    })
}

/// Reads up to `len` bytes of the tracee's memory at `addr`; fewer if the
/// range ends in an unmapped page.
pub fn read_memory(pid: Tid, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    if len == 0 || addr == 0 {
        buf.clear();
        return buf;
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: the local iovec covers exactly our buffer; the remote one is
    // only read by the kernel, in the other process.
    let got = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    buf.truncate(got.max(0) as usize);
    buf
}

/// Reads a NUL-terminated string of at most `limit` bytes from the tracee.
pub fn read_c_string(pid: Tid, addr: u64, limit: usize) -> Vec<u8> {
    let mut bytes = read_memory(pid, addr, limit);
    if let Some(end) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(end);
    } else if bytes.is_empty() {
        // The string may end close to a page boundary: read byte-wise pages.
        let mut short = read_memory(pid, addr, 256.min(limit));
        if let Some(end) = short.iter().position(|&b| b == 0) {
            short.truncate(end);
        }
        return short;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_wait_statuses() {
        assert_eq!(Stop::from_status(3 << 8), Some(Stop::Exited(3)));
        assert_eq!(
            Stop::from_status(libc::SIGKILL),
            Some(Stop::Killed(libc::SIGKILL))
        );
        let stopped = |sig: i32, event: i32| (event << 16) | (sig << 8) | 0x7f;
        assert_eq!(
            Stop::from_status(stopped(libc::SIGTRAP | 0x80, 0)),
            Some(Stop::Syscall)
        );
        assert_eq!(
            Stop::from_status(stopped(libc::SIGUSR1, 0)),
            Some(Stop::Signal(libc::SIGUSR1))
        );
        assert_eq!(
            Stop::from_status(stopped(libc::SIGTRAP, libc::PTRACE_EVENT_CLONE)),
            Some(Stop::Event(libc::PTRACE_EVENT_CLONE, libc::SIGTRAP))
        );
    }

    #[test]
    fn reads_its_own_memory() {
        let text = b"hello\0world";
        let pid = std::process::id() as Tid;
        assert_eq!(read_memory(pid, text.as_ptr() as u64, 5), b"hello");
        assert_eq!(read_c_string(pid, text.as_ptr() as u64, 64), b"hello");
        assert!(read_memory(pid, 0, 8).is_empty());
    }
}
