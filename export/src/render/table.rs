//! The calls of the signature table, printed argument by argument from
//! their kinds and captured [`Segments`], with the few per-call rules
//! strace follows (open's mode only with O_CREAT, fcntl's third argument
//! by command, prctl by option).

use syscalls::Sysno;
use tracebench_trace::syscall::signature::{
    Arg, Layout, Length, Memory, Names, Segments, captured, split,
};

use super::names::{flag_set, mode, named, open_flags, statx_at_flags};
use super::net::{socket_domain, socket_protocol, socket_type};
use super::structs::{Fields, cpu_set, epoll_events, ids, iovecs, pollfds, sigset, structure};
use super::text::{dirfd, fd, flags, hex, int, quoted, quoted_hex};

/// One call being printed: its registers and its return (at exit).
struct Call<'a> {
    sysno: Sysno,
    signature: &'static [Arg],
    args: &'a [u64; 6],
    ret: Option<i64>,
}

/// The arguments known at entry, ending in ", " when the line goes on at
/// exit; `None` for a call not in the table.
pub(super) fn entry(sysno: Sysno, args: &[u64; 6], data: Option<&[u8]>) -> Option<String> {
    let signature = tracebench_trace::syscall::signature::signature(sysno)?;
    let call = Call {
        sysno,
        signature,
        args,
        ret: None,
    };
    let split = split(signature);
    let mut text = call.render(0..split.min(call.shown()), data, false);
    if split > 0 && split < call.shown() {
        text.push_str(", ");
    }
    Some(text)
}

/// The arguments known at exit; `None` for a call not in the table.
pub(super) fn exit(sysno: Sysno, args: &[u64; 6], ret: i64, data: Option<&[u8]>) -> Option<String> {
    let signature = tracebench_trace::syscall::signature::signature(sysno)?;
    let call = Call {
        sysno,
        signature,
        args,
        ret: Some(ret),
    };
    let split = split(signature);
    Some(call.render(split..call.shown(), data, true))
}

/// What strace prints after the return value of some calls: `(Timeout)`,
/// the fds poll found ready, the flags fcntl returned.
pub(super) fn return_value(sysno: Sysno, args: &[u64; 6], ret: i64, data: &[u8]) -> Option<String> {
    if ret < 0 {
        return None;
    }
    match sysno {
        Sysno::fcntl => {
            let shown = match args[1] as i32 {
                libc::F_GETFD => flags(ret as u64, &[(1, "FD_CLOEXEC")], "0"),
                libc::F_GETFL => open_flags(ret as u64),
                _ => return None,
            };
            Some(if ret == 0 {
                "0".to_owned()
            } else {
                format!("{ret:#x} (flags {shown})")
            })
        }
        Sysno::poll => {
            let mut segments = Segments::new(data);
            let fds = segments.next_segment();
            Some(match (ret, fds) {
                (0, _) => "0 (Timeout)".to_owned(),
                (n, Some(fds)) => format!("{n} ({})", pollfds(fds, true)),
                (n, None) => n.to_string(),
            })
        }
        _ => None,
    }
}

impl Call<'_> {
    /// How many arguments strace shows: fewer than the table's for open
    /// without O_CREAT, fcntl commands without an argument, prctl.
    fn shown(&self) -> usize {
        let a = self.args;
        match self.sysno {
            Sysno::open | Sysno::openat => {
                let flags_at = usize::from(self.sysno == Sysno::openat) + 1;
                let tmpfile = libc::O_TMPFILE as u64;
                let creates =
                    a[flags_at] & libc::O_CREAT as u64 != 0 || a[flags_at] & tmpfile == tmpfile;
                if !creates { flags_at + 1 } else { flags_at + 2 }
            }
            Sysno::fcntl => match a[1] as i32 {
                libc::F_GETFD
                | libc::F_GETFL
                | libc::F_GETOWN
                | libc::F_GETLEASE
                | libc::F_GETPIPE_SZ
                | libc::F_GET_SEALS => 2,
                _ => 3,
            },
            Sysno::prctl => match a[0] as i32 {
                libc::PR_SET_NAME
                | libc::PR_GET_NAME
                | libc::PR_SET_PDEATHSIG
                | libc::PR_CAPBSET_READ => 2,
                libc::PR_GET_DUMPABLE | libc::PR_GET_NO_NEW_PRIVS => 1,
                _ => self.signature.len(),
            },
            _ => self.signature.len(),
        }
    }

    fn render(&self, range: std::ops::Range<usize>, data: Option<&[u8]>, at_exit: bool) -> String {
        // The segments of this side, matched to their arguments in order.
        let mut segments = data.map(Segments::new);
        let mut memory_of = [None; 6];
        for (index, _) in captured(self.signature, at_exit) {
            memory_of[index] = segments.as_mut().and_then(Segments::next_segment);
        }
        range
            .filter(|&i| i < self.signature.len())
            .map(|i| self.argument(i, memory_of[i]))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Argument `i`; `memory` is what capture read of it (none: a NULL
    /// or bad pointer, a failed call, or a backend that reads no memory,
    /// and the pointer is shown).
    fn argument(&self, i: usize, memory: Option<&[u8]>) -> String {
        let value = self.args[i];
        if let Some(special) = self.special(i, memory) {
            return special;
        }
        match self.signature[i] {
            Arg::Int => int(value),
            Arg::Fd => fd(value),
            Arg::DirFd => dirfd(value),
            Arg::Unsigned => value.to_string(),
            Arg::Long => (value as i64).to_string(),
            Arg::Count => (value as u32).to_string(),
            Arg::Hex => match value {
                0 => "0".to_owned(),
                v => format!("{v:#x}"),
            },
            Arg::Address => hex(value),
            Arg::Mode => mode(value),
            Arg::Named(names) => named(names, value),
            Arg::Flags(names) => flag_set(names, value),
            Arg::In(m) | Arg::Out(m) | Arg::InOut(m) => match memory {
                Some(bytes) if value != 0 => self.memory(m, bytes).unwrap_or_else(|| hex(value)),
                _ => hex(value),
            },
        }
    }

    /// The length a buffer was meant to have.
    fn length(&self, length: Length) -> u64 {
        match length {
            Length::Arg(i) => self.args[usize::from(i)],
            Length::Return => self.ret.unwrap_or(0).max(0) as u64,
            Length::PointedBy(_) => 0,
        }
    }

    fn memory(&self, memory: Memory, bytes: &[u8]) -> Option<String> {
        Some(match memory {
            Memory::Path => quoted(bytes, false),
            // A flag byte (1: cut at the string limit), then the text.
            Memory::Text => {
                let (cut, text) = bytes.split_first()?;
                quoted(text, *cut == 1)
            }
            Memory::Bytes(length) => quoted(bytes, (bytes.len() as u64) < self.length(length)),
            Memory::HexBytes(length) => {
                quoted_hex(bytes, (bytes.len() as u64) < self.length(length))
            }
            Memory::Sigset(_) => sigset(bytes),
            Memory::CpuSet(_) => cpu_set(bytes),
            Memory::Dirents(_) => {
                let count = Fields(bytes).u32(0)?;
                let address = hex(self.args[1]);
                format!("{address} /* {count} entries */")
            }
            Memory::Pollfds(_) => pollfds(bytes, false),
            Memory::EpollEvents => epoll_events(bytes),
            Memory::Iovecs(_) => iovecs(bytes),
            Memory::Gids(_) => ids(bytes),
            Memory::SocklenInOut => {
                let f = Fields(bytes);
                match (f.u32(0)?, f.u32(4)) {
                    (before, Some(after)) if before != after => format!("[{before} => {after}]"),
                    (_, Some(after)) => format!("[{after}]"),
                    (only, None) => format!("[{only}]"),
                }
            }
            Memory::Sockaddr(_) => super::net::sockaddr(bytes),
            Memory::Struct(layout) => structure(layout, bytes)?,
        })
    }

    /// The per-call rules: arguments whose meaning depends on another.
    fn special(&self, i: usize, memory: Option<&[u8]>) -> Option<String> {
        let a = self.args;
        match (self.sysno, i) {
            (Sysno::statx, 2) => Some(statx_at_flags(a[2])),
            (Sysno::socket | Sysno::socketpair, 0) => Some(socket_domain(a[0])),
            (Sysno::socket | Sysno::socketpair, 1) => Some(socket_type(a[1])),
            (Sysno::socket | Sysno::socketpair, 2) => Some(socket_protocol(a[0], a[2])),
            (Sysno::fcntl, 2) => Some(match a[1] as i32 {
                libc::F_SETFD => flags(a[2], &[(1, "FD_CLOEXEC")], "0"),
                libc::F_SETFL => open_flags(a[2]),
                libc::F_DUPFD | libc::F_DUPFD_CLOEXEC | libc::F_SETOWN | libc::F_SETPIPE_SZ => {
                    int(a[2])
                }
                _ => hex(a[2]),
            }),
            (Sysno::ioctl, 2) => Some(match (a[1] as u32 as u64, memory) {
                (libc::FIONBIO | libc::FIOASYNC, Some(bytes)) => {
                    structure(Layout::Int, bytes).unwrap_or_else(|| hex(a[2]))
                }
                _ => hex(a[2]),
            }),
            (Sysno::prctl, 0) => Some(prctl_option(a[0])),
            (Sysno::prctl, 1) => match a[0] as i32 {
                libc::PR_SET_NAME => None,
                libc::PR_SET_PDEATHSIG => Some(named(Names::Signal, a[1])),
                libc::PR_CAPBSET_READ => Some(format!("{:#x} /* CAP_??? */", a[1])),
                _ => Some(hex(a[1])),
            },
            (Sysno::prctl, _) => Some(hex(a[i])),
            (Sysno::setsockopt | Sysno::getsockopt, 2) => Some(socket_option(a[1], a[2])),
            (Sysno::setsockopt, 3) if a[4] == 4 => {
                memory.and_then(|bytes| structure(Layout::Int, bytes))
            }
            (Sysno::wait4, 1) if self.ret.is_some_and(|r| r <= 0) => Some(hex(a[1])),
            (Sysno::getxattr | Sysno::lgetxattr | Sysno::fgetxattr, 2)
                if self.ret.is_some_and(|r| r >= 0) && a[3] == 0 =>
            {
                Some(hex(a[2]))
            }
            _ => None,
        }
    }
}

const PRCTL: &[(i32, &str)] = &[
    (libc::PR_SET_PDEATHSIG, "PR_SET_PDEATHSIG"),
    (libc::PR_GET_PDEATHSIG, "PR_GET_PDEATHSIG"),
    (libc::PR_GET_DUMPABLE, "PR_GET_DUMPABLE"),
    (libc::PR_SET_DUMPABLE, "PR_SET_DUMPABLE"),
    (libc::PR_SET_NAME, "PR_SET_NAME"),
    (libc::PR_GET_NAME, "PR_GET_NAME"),
    (libc::PR_CAPBSET_READ, "PR_CAPBSET_READ"),
    (libc::PR_CAPBSET_DROP, "PR_CAPBSET_DROP"),
    (libc::PR_SET_SECCOMP, "PR_SET_SECCOMP"),
    (libc::PR_SET_NO_NEW_PRIVS, "PR_SET_NO_NEW_PRIVS"),
    (libc::PR_GET_NO_NEW_PRIVS, "PR_GET_NO_NEW_PRIVS"),
    (libc::PR_SET_CHILD_SUBREAPER, "PR_SET_CHILD_SUBREAPER"),
    (libc::PR_SET_TIMERSLACK, "PR_SET_TIMERSLACK"),
    (libc::PR_SET_MM, "PR_SET_MM"),
    (libc::PR_SET_VMA, "PR_SET_VMA"),
];

fn prctl_option(value: u64) -> String {
    PRCTL
        .iter()
        .find(|(v, _)| *v == value as i32)
        .map_or_else(|| int(value), |(_, name)| (*name).to_owned())
}

const SOCKET_OPTIONS: &[(i32, i32, &str)] = &[
    (libc::SOL_SOCKET, libc::SO_REUSEADDR, "SO_REUSEADDR"),
    (libc::SOL_SOCKET, libc::SO_TYPE, "SO_TYPE"),
    (libc::SOL_SOCKET, libc::SO_ERROR, "SO_ERROR"),
    (libc::SOL_SOCKET, libc::SO_BROADCAST, "SO_BROADCAST"),
    (libc::SOL_SOCKET, libc::SO_SNDBUF, "SO_SNDBUF"),
    (libc::SOL_SOCKET, libc::SO_RCVBUF, "SO_RCVBUF"),
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE, "SO_KEEPALIVE"),
    (libc::SOL_SOCKET, libc::SO_LINGER, "SO_LINGER"),
    (libc::SOL_SOCKET, libc::SO_REUSEPORT, "SO_REUSEPORT"),
    (libc::SOL_SOCKET, libc::SO_PRIORITY, "SO_PRIORITY"),
    (libc::SOL_SOCKET, libc::SO_ACCEPTCONN, "SO_ACCEPTCONN"),
    (libc::SOL_SOCKET, libc::SO_RCVTIMEO, "SO_RCVTIMEO_OLD"),
    (libc::SOL_SOCKET, libc::SO_SNDTIMEO, "SO_SNDTIMEO_OLD"),
    (libc::SOL_TCP, libc::TCP_NODELAY, "TCP_NODELAY"),
    (libc::SOL_TCP, libc::TCP_MAXSEG, "TCP_MAXSEG"),
    (libc::SOL_TCP, libc::TCP_CORK, "TCP_CORK"),
    (libc::SOL_TCP, libc::TCP_KEEPIDLE, "TCP_KEEPIDLE"),
    (libc::SOL_TCP, libc::TCP_KEEPINTVL, "TCP_KEEPINTVL"),
    (libc::SOL_TCP, libc::TCP_KEEPCNT, "TCP_KEEPCNT"),
    (libc::SOL_TCP, libc::TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT"),
    (libc::SOL_TCP, libc::TCP_INFO, "TCP_INFO"),
    (libc::SOL_TCP, libc::TCP_QUICKACK, "TCP_QUICKACK"),
    (libc::SOL_TCP, libc::TCP_CONGESTION, "TCP_CONGESTION"),
    (libc::SOL_TCP, libc::TCP_FASTOPEN, "TCP_FASTOPEN"),
    (libc::SOL_TCP, libc::TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT"),
    (libc::SOL_IP, libc::IP_TOS, "IP_TOS"),
    (libc::SOL_IP, libc::IP_TTL, "IP_TTL"),
    (libc::SOL_IPV6, libc::IPV6_V6ONLY, "IPV6_V6ONLY"),
];

/// A socket option's name, which depends on its level.
fn socket_option(level: u64, option: u64) -> String {
    SOCKET_OPTIONS
        .iter()
        .find(|(l, o, _)| *l == level as i32 && *o == option as i32)
        .map_or_else(|| int(option), |(_, _, name)| (*name).to_owned())
}
