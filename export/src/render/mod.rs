//! Turning raw syscall numbers, arguments and captured bytes into the text
//! strace prints: futex operations, clone flags, socket flags and
//! addresses, timespecs, strings, errno names.
//!
//! A syscall is printed in two halves, as strace does for calls that block:
//! [`entry_args`] is known at entry; [`exit_args`] is only known when the
//! call returns (the bytes a read filled in, the address accept4 wrote).

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use syscalls::{Errno, Sysno};
use tracebench_trace::DataCapture;

use tracebench_trace::syscall::is_futex_wait;

/// The syscall's name, or `syscall_N` for a number this build does not
/// know.
pub fn syscall_name(nr: u32) -> String {
    Sysno::new(nr as usize).map_or_else(|| format!("syscall_{nr}"), |s| s.name().to_owned())
}

fn hex(value: u64) -> String {
    if value == 0 {
        "NULL".to_owned()
    } else {
        format!("{value:#x}")
    }
}

fn int(value: u64) -> String {
    (value as i32).to_string()
}

/// Flag names with their values; prints `A|B|0x40` for leftovers.
fn flags(value: u64, names: &[(u64, &str)], zero: &str) -> String {
    if value == 0 {
        return zero.to_owned();
    }
    let mut rest = value;
    let mut parts = Vec::new();
    for &(bit, name) in names {
        if bit != 0 && rest & bit == bit {
            parts.push(name.to_owned());
            rest &= !bit;
        }
    }
    if rest != 0 {
        parts.push(format!("{rest:#x}"));
    }
    parts.join("|")
}

const CLONE_FLAGS: &[(u64, &str)] = &[
    (libc::CLONE_VM as u64, "CLONE_VM"),
    (libc::CLONE_FS as u64, "CLONE_FS"),
    (libc::CLONE_FILES as u64, "CLONE_FILES"),
    (libc::CLONE_SIGHAND as u64, "CLONE_SIGHAND"),
    (libc::CLONE_PIDFD as u64, "CLONE_PIDFD"),
    (libc::CLONE_PTRACE as u64, "CLONE_PTRACE"),
    (libc::CLONE_VFORK as u64, "CLONE_VFORK"),
    (libc::CLONE_PARENT as u64, "CLONE_PARENT"),
    (libc::CLONE_THREAD as u64, "CLONE_THREAD"),
    (libc::CLONE_NEWNS as u64, "CLONE_NEWNS"),
    (libc::CLONE_SYSVSEM as u64, "CLONE_SYSVSEM"),
    (libc::CLONE_SETTLS as u64, "CLONE_SETTLS"),
    (libc::CLONE_PARENT_SETTID as u64, "CLONE_PARENT_SETTID"),
    (libc::CLONE_CHILD_CLEARTID as u64, "CLONE_CHILD_CLEARTID"),
    (libc::CLONE_DETACHED as u64, "CLONE_DETACHED"),
    (libc::CLONE_UNTRACED as u64, "CLONE_UNTRACED"),
    (libc::CLONE_CHILD_SETTID as u64, "CLONE_CHILD_SETTID"),
    (libc::CLONE_NEWCGROUP as u64, "CLONE_NEWCGROUP"),
    (libc::CLONE_NEWUTS as u64, "CLONE_NEWUTS"),
    (libc::CLONE_NEWIPC as u64, "CLONE_NEWIPC"),
    (libc::CLONE_NEWUSER as u64, "CLONE_NEWUSER"),
    (libc::CLONE_NEWPID as u64, "CLONE_NEWPID"),
    (libc::CLONE_NEWNET as u64, "CLONE_NEWNET"),
    // Bit 31: through u32, or the i32 constant would sign-extend and
    // never match.
    (libc::CLONE_IO as u32 as u64, "CLONE_IO"),
];

/// `CLONE_VM|CLONE_THREAD|…`, with the exit signal (the low byte of
/// clone's flags) named at the end as strace does.
pub fn clone_flags(value: u64) -> String {
    let signal = value & 0xff;
    let mut text = flags(value & !0xff, CLONE_FLAGS, "");
    if signal != 0 {
        if !text.is_empty() {
            text.push('|');
        }
        text += &signal_name(signal as i32);
    }
    if text.is_empty() {
        "0".to_owned()
    } else {
        text
    }
}

const SOCK_FLAGS: &[(u64, &str)] = &[
    (libc::SOCK_CLOEXEC as u64, "SOCK_CLOEXEC"),
    (libc::SOCK_NONBLOCK as u64, "SOCK_NONBLOCK"),
];

const MSG_FLAGS: &[(u64, &str)] = &[
    (libc::MSG_OOB as u64, "MSG_OOB"),
    (libc::MSG_PEEK as u64, "MSG_PEEK"),
    (libc::MSG_DONTWAIT as u64, "MSG_DONTWAIT"),
    (libc::MSG_WAITALL as u64, "MSG_WAITALL"),
    (libc::MSG_NOSIGNAL as u64, "MSG_NOSIGNAL"),
    (libc::MSG_MORE as u64, "MSG_MORE"),
];

/// `FUTEX_WAIT_PRIVATE`, `FUTEX_WAIT_BITSET|FUTEX_CLOCK_REALTIME`, …
pub fn futex_op(op: u64) -> String {
    let op = op as u32 as i32;
    let command = op & libc::FUTEX_CMD_MASK;
    let name = match command {
        libc::FUTEX_WAIT => "FUTEX_WAIT",
        libc::FUTEX_WAKE => "FUTEX_WAKE",
        libc::FUTEX_FD => "FUTEX_FD",
        libc::FUTEX_REQUEUE => "FUTEX_REQUEUE",
        libc::FUTEX_CMP_REQUEUE => "FUTEX_CMP_REQUEUE",
        libc::FUTEX_WAKE_OP => "FUTEX_WAKE_OP",
        libc::FUTEX_LOCK_PI => "FUTEX_LOCK_PI",
        libc::FUTEX_UNLOCK_PI => "FUTEX_UNLOCK_PI",
        libc::FUTEX_TRYLOCK_PI => "FUTEX_TRYLOCK_PI",
        libc::FUTEX_WAIT_BITSET => "FUTEX_WAIT_BITSET",
        libc::FUTEX_WAKE_BITSET => "FUTEX_WAKE_BITSET",
        libc::FUTEX_WAIT_REQUEUE_PI => "FUTEX_WAIT_REQUEUE_PI",
        libc::FUTEX_CMP_REQUEUE_PI => "FUTEX_CMP_REQUEUE_PI",
        13 => "FUTEX_LOCK_PI2",
        _ => return format!("{op:#x}"),
    };
    let mut text = name.to_owned();
    if op & libc::FUTEX_PRIVATE_FLAG != 0 {
        text += "_PRIVATE";
    }
    if op & libc::FUTEX_CLOCK_REALTIME != 0 {
        text += "|FUTEX_CLOCK_REALTIME";
    }
    text
}

/// `SIGINT`, `SIGRTMIN+3`, or the number.
pub fn signal_name(signal: i32) -> String {
    let names = [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGSTKFLT, "SIGSTKFLT"),
        (libc::SIGCHLD, "SIGCHLD"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
        (libc::SIGURG, "SIGURG"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGIO, "SIGIO"),
        (libc::SIGPWR, "SIGPWR"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    if let Some((_, name)) = names.iter().find(|(n, _)| *n == signal) {
        return (*name).to_owned();
    }
    // Real-time signals are named as strace names them, from the kernel's
    // SIGRTMIN (32); glibc's SIGRTMIN is higher, as it keeps two or three.
    const KERNEL_SIGRTMIN: i32 = 32;
    if signal == KERNEL_SIGRTMIN {
        return "SIGRTMIN".to_owned();
    }
    if (KERNEL_SIGRTMIN + 1..=64).contains(&signal) {
        return format!("SIGRT_{}", signal - KERNEL_SIGRTMIN);
    }
    signal.to_string()
}

/// A C string (or buffer) the way strace quotes it: escapes for
/// non-printable bytes, `...` when cut at the limit.
pub fn quoted(bytes: &[u8], truncated: bool) -> String {
    let mut text = String::with_capacity(bytes.len() + 2);
    text.push('"');
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => text.push_str("\\\""),
            b'\\' => text.push_str("\\\\"),
            b'\n' => text.push_str("\\n"),
            b'\r' => text.push_str("\\r"),
            b'\t' => text.push_str("\\t"),
            0x0b => text.push_str("\\v"),
            0x0c => text.push_str("\\f"),
            0x20..=0x7e => text.push(b as char),
            _ => {
                // Octal, as strace writes it (\0, \33, \177): the
                // shortest form, or all three digits when a digit follows
                // and would otherwise be read as part of it.
                let digit_follows = bytes.get(i + 1).is_some_and(|n| (b'0'..=b'7').contains(n));
                if digit_follows {
                    let _ = write!(text, "\\{b:03o}");
                } else {
                    let _ = write!(text, "\\{b:o}");
                }
            }
        }
    }
    text.push('"');
    if truncated {
        text.push_str("...");
    }
    text
}

/// `{tv_sec=1, tv_nsec=500}` from 16 captured bytes, or the pointer.
pub fn timespec(bytes: &[u8], pointer: u64) -> String {
    if pointer == 0 {
        return "NULL".to_owned();
    }
    match (bytes.get(0..8), bytes.get(8..16)) {
        (Some(sec), Some(nsec)) => {
            let sec = i64::from_ne_bytes(sec.try_into().expect("8 bytes"));
            let nsec = i64::from_ne_bytes(nsec.try_into().expect("8 bytes"));
            format!("{{tv_sec={sec}, tv_nsec={nsec}}}")
        }
        _ => hex(pointer),
    }
}

/// A socket address as strace prints it.
pub fn sockaddr(bytes: &[u8]) -> String {
    let Some(family) = bytes.get(0..2).map(|f| u16::from_ne_bytes([f[0], f[1]])) else {
        return "{...}".to_owned();
    };
    match family as i32 {
        libc::AF_INET if bytes.len() >= 8 => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let addr = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            format!("{{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr(\"{addr}\")}}")
        }
        libc::AF_INET6 if bytes.len() >= 24 => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let octets: [u8; 16] = bytes[8..24].try_into().expect("16 bytes");
            format!(
                "{{sa_family=AF_INET6, sin6_port=htons({port}), sin6_addr=\"{}\"}}",
                Ipv6Addr::from(octets)
            )
        }
        libc::AF_UNIX => {
            let path = &bytes[2..];
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            format!(
                "{{sa_family=AF_UNIX, sun_path={}}}",
                quoted(&path[..end], false)
            )
        }
        other => format!("{{sa_family={other}, ...}}"),
    }
}

/// The `struct clone_args` of clone3, from captured bytes.
fn clone_args(bytes: &[u8], pointer: u64) -> String {
    let field = |i: usize| {
        bytes
            .get(i * 8..i * 8 + 8)
            .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
    };
    match (field(0), field(4), field(5), field(6)) {
        (Some(flags), Some(exit_signal), Some(stack), Some(stack_size)) => {
            let mut text = format!("{{flags={}", flags_or_zero(flags));
            if exit_signal != 0 {
                let _ = write!(text, ", exit_signal={}", signal_name(exit_signal as i32));
            }
            let _ = write!(text, ", stack={}, stack_size={stack_size:#x}", hex(stack));
            if let Some(tls) = field(7).filter(|&t| t != 0) {
                let _ = write!(text, ", tls={tls:#x}");
            }
            text.push('}');
            text
        }
        _ => hex(pointer),
    }
}

fn flags_or_zero(flags: u64) -> String {
    if flags == 0 {
        "0".to_owned()
    } else {
        flags_clone_only(flags)
    }
}

fn flags_clone_only(value: u64) -> String {
    flags(value, CLONE_FLAGS, "0")
}

fn buffer(data: &[u8], length: u64) -> String {
    quoted(data, (data.len() as u64) < length)
}

/// The arguments known at entry, joined with ", ". For syscalls that
/// complete their arguments at exit, ends with ", " and [`exit_args`]
/// continues.
pub fn entry_args(nr: u32, args: &[u64; 6], data: &[u8]) -> String {
    let Some(sysno) = Sysno::new(nr as usize) else {
        return args.iter().map(|&a| hex(a)).collect::<Vec<_>>().join(", ");
    };
    let a = args;
    match sysno {
        Sysno::read | Sysno::recvfrom => format!("{}, ", int(a[0])),
        Sysno::accept | Sysno::accept4 => format!("{}, ", int(a[0])),
        Sysno::write => format!("{}, {}, {}", int(a[0]), buffer(data, a[2]), a[2]),
        Sysno::sendto => format!(
            "{}, {}, {}, {}, {}, {}",
            int(a[0]),
            buffer(data, a[2]),
            a[2],
            flags(a[3], MSG_FLAGS, "0"),
            hex(a[4]),
            a[5]
        ),
        Sysno::close | Sysno::exit | Sysno::exit_group => int(a[0]),
        Sysno::listen => format!("{}, {}", int(a[0]), int(a[1])),
        Sysno::futex => {
            let command = (a[1] as i32) & libc::FUTEX_CMD_MASK;
            let op = futex_op(a[1]);
            if is_futex_wait(a[1]) && command != libc::FUTEX_WAIT_BITSET {
                format!(
                    "{}, {op}, {}, {}",
                    hex(a[0]),
                    int(a[2]),
                    timespec(data, a[3])
                )
            } else if command == libc::FUTEX_WAIT_BITSET {
                let bitset = if a[5] as u32 == u32::MAX {
                    "FUTEX_BITSET_MATCH_ANY".to_owned()
                } else {
                    hex(a[5])
                };
                format!(
                    "{}, {op}, {}, {}, {bitset}",
                    hex(a[0]),
                    int(a[2]),
                    timespec(data, a[3])
                )
            } else {
                // As strace shows each command: only the arguments it
                // reads, val2 (in the timeout register) and val3 as the
                // 32-bit numbers they are.
                let (uaddr, val, val2, uaddr2, val3) =
                    (hex(a[0]), int(a[2]), a[3] as u32, hex(a[4]), a[5] as u32);
                match command {
                    libc::FUTEX_WAKE | libc::FUTEX_FD => format!("{uaddr}, {op}, {val}"),
                    libc::FUTEX_UNLOCK_PI | libc::FUTEX_TRYLOCK_PI => format!("{uaddr}, {op}"),
                    libc::FUTEX_LOCK_PI | 13 => {
                        format!("{uaddr}, {op}, {}", timespec(data, a[3]))
                    }
                    libc::FUTEX_WAKE_BITSET => {
                        let bitset = if val3 == u32::MAX {
                            "FUTEX_BITSET_MATCH_ANY".to_owned()
                        } else {
                            format!("{val3:#x}")
                        };
                        format!("{uaddr}, {op}, {val}, NULL, NULL, {bitset}")
                    }
                    libc::FUTEX_REQUEUE => format!("{uaddr}, {op}, {val}, {val2}, {uaddr2}"),
                    libc::FUTEX_CMP_REQUEUE | libc::FUTEX_CMP_REQUEUE_PI => {
                        format!("{uaddr}, {op}, {val}, {val2}, {uaddr2}, {val3}")
                    }
                    libc::FUTEX_WAKE_OP => format!(
                        "{uaddr}, {op}, {val}, {val2}, {uaddr2}, {}",
                        futex_wake_op(val3)
                    ),
                    libc::FUTEX_WAIT_REQUEUE_PI => {
                        format!("{uaddr}, {op}, {val}, {}, {uaddr2}", timespec(data, a[3]))
                    }
                    _ => format!("{uaddr}, {op}, {val}, {val2}, {uaddr2}, {val3}"),
                }
            }
        }
        Sysno::socket => format!(
            "{}, {}, {}",
            socket_domain(a[0]),
            socket_type(a[1]),
            int(a[2])
        ),
        Sysno::kill | Sysno::tkill => format!("{}, {}", int(a[0]), signal_or_zero(a[1])),
        Sysno::tgkill => format!("{}, {}, {}", int(a[0]), int(a[1]), signal_or_zero(a[2])),
        Sysno::wait4 => format!("{}, {}, {}, {}", int(a[0]), hex(a[1]), a[2], hex(a[3])),
        Sysno::clone => format!(
            "child_stack={}, flags={}, parent_tid={}, child_tidptr={}, tls={}",
            hex(a[1]),
            clone_flags(a[0]),
            hex(a[2]),
            hex(a[3]),
            hex(a[4])
        ),
        Sysno::clone3 => format!("{}, {}", clone_args(data, a[0]), a[1]),
        Sysno::fork | Sysno::vfork => String::new(),
        Sysno::execve => exec_args(data, a[1], a[2]),
        Sysno::execveat => format!(
            "{}, {}, {}",
            dirfd(a[0]),
            exec_args(data, a[2], a[3]),
            match a[4] {
                0 => "0".to_owned(),
                flags => hex(flags),
            }
        ),
        Sysno::nanosleep => format!("{}, {}", timespec(data, a[0]), hex(a[1])),
        Sysno::clock_nanosleep => {
            let clock = match a[0] as i32 {
                libc::CLOCK_REALTIME => "CLOCK_REALTIME".to_owned(),
                libc::CLOCK_MONOTONIC => "CLOCK_MONOTONIC".to_owned(),
                libc::CLOCK_BOOTTIME => "CLOCK_BOOTTIME".to_owned(),
                other => other.to_string(),
            };
            let flag = if a[1] as i32 == libc::TIMER_ABSTIME {
                "TIMER_ABSTIME"
            } else {
                "0"
            };
            format!("{clock}, {flag}, {}, {}", timespec(data, a[2]), hex(a[3]))
        }
        Sysno::connect | Sysno::bind => format!("{}, {}, {}", int(a[0]), sockaddr(data), a[2]),
        Sysno::poll => format!("{}, {}, {}", hex(a[0]), a[1], int(a[2])),
        Sysno::epoll_wait => format!("{}, {}, {}, {}", int(a[0]), hex(a[1]), int(a[2]), int(a[3])),
        Sysno::shutdown => format!(
            "{}, {}",
            int(a[0]),
            match a[1] as i32 {
                libc::SHUT_RD => "SHUT_RD",
                libc::SHUT_WR => "SHUT_WR",
                libc::SHUT_RDWR => "SHUT_RDWR",
                _ => "?",
            }
        ),
        // No decoder: the registers the call reads (what capture keeps),
        // small values as numbers (descriptors, pids, sizes, flags) and
        // the rest as addresses.
        _ => a[..tracebench_trace::syscall::arity(sysno, a)]
            .iter()
            .map(|&v| match v {
                0 => "0".to_owned(),
                v if v < 1 << 20 => v.to_string(),
                v if (v as i64) < 0 && (v as i64) > -4096 => (v as i64).to_string(),
                v => hex(v),
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// [`entry_args`] for an event whose pointer data may not have been
/// captured: with none (the perf backend), the calls that would show
/// memory (a buffer, a path, an address) show the raw pointer instead,
/// as strace does for memory it cannot read; nothing is invented.
pub fn entry_args_of(nr: u32, args: &[u64; 6], data: &[u8], capture: DataCapture) -> String {
    if capture != DataCapture::NotCaptured {
        return entry_args(nr, args, data);
    }
    let a = args;
    match Sysno::new(nr as usize) {
        Some(Sysno::write | Sysno::connect | Sysno::bind) => {
            format!("{}, {}, {}", int(a[0]), hex(a[1]), a[2])
        }
        Some(Sysno::sendto) => format!(
            "{}, {}, {}, {}, {}, {}",
            int(a[0]),
            hex(a[1]),
            a[2],
            flags(a[3], MSG_FLAGS, "0"),
            hex(a[4]),
            a[5]
        ),
        Some(Sysno::execve) => format!("{}, {}, {}", hex(a[0]), hex(a[1]), hex(a[2])),
        Some(Sysno::execveat) => format!(
            "{}, {}, {}, {}, {}",
            dirfd(a[0]),
            hex(a[1]),
            hex(a[2]),
            hex(a[3]),
            hex(a[4])
        ),
        // The rest show pointers as such already when no bytes came.
        _ => entry_args(nr, args, &[]),
    }
}

/// [`exit_args`] for an event whose pointer data may not have been
/// captured (see [`entry_args_of`]).
pub fn exit_args_of(
    nr: u32,
    args: &[u64; 6],
    ret: i64,
    data: &[u8],
    capture: DataCapture,
) -> String {
    if capture != DataCapture::NotCaptured {
        return exit_args(nr, args, ret, data);
    }
    let a = args;
    match Sysno::new(nr as usize) {
        Some(Sysno::read) => format!("{}, {}", hex(a[1]), a[2]),
        Some(Sysno::recvfrom) => format!(
            "{}, {}, {}, {}, {}",
            hex(a[1]),
            a[2],
            flags(a[3], MSG_FLAGS, "0"),
            hex(a[4]),
            hex(a[5])
        ),
        Some(sysno @ (Sysno::accept | Sysno::accept4)) => {
            let (address, length) = (hex(a[1]), hex(a[2]));
            if sysno == Sysno::accept4 {
                format!("{address}, {length}, {}", flags(a[3], SOCK_FLAGS, "0"))
            } else {
                format!("{address}, {length}")
            }
        }
        _ => exit_args(nr, args, ret, &[]),
    }
}

/// FUTEX_WAKE_OP's encoded operation, as strace writes it:
/// `FUTEX_OP_SET<<28|0<<12|FUTEX_OP_CMP_GT<<24|0x1`.
fn futex_wake_op(encoded: u32) -> String {
    const OPS: [&str; 5] = [
        "FUTEX_OP_SET",
        "FUTEX_OP_ADD",
        "FUTEX_OP_OR",
        "FUTEX_OP_ANDN",
        "FUTEX_OP_XOR",
    ];
    const CMPS: [&str; 6] = [
        "FUTEX_OP_CMP_EQ",
        "FUTEX_OP_CMP_NE",
        "FUTEX_OP_CMP_LT",
        "FUTEX_OP_CMP_LE",
        "FUTEX_OP_CMP_GT",
        "FUTEX_OP_CMP_GE",
    ];
    let op = (encoded >> 28) & 0x7;
    let shift_flag = if encoded & (8 << 28) != 0 {
        "FUTEX_OP_OPARG_SHIFT<<28|"
    } else {
        ""
    };
    let cmp = (encoded >> 24) & 0xf;
    let oparg = (encoded >> 12) & 0xfff;
    let cmparg = encoded & 0xfff;
    let op = OPS
        .get(op as usize)
        .map_or_else(|| op.to_string(), |s| (*s).to_owned());
    let cmp = CMPS
        .get(cmp as usize)
        .map_or_else(|| cmp.to_string(), |s| (*s).to_owned());
    // C's %#x, as strace prints them: 0 has no 0x.
    let c_hex = |v: u32| match v {
        0 => "0".to_owned(),
        v => format!("{v:#x}"),
    };
    format!(
        "{shift_flag}{op}<<28|{}<<12|{cmp}<<24|{}",
        c_hex(oparg),
        c_hex(cmparg)
    )
}

/// A signal argument: its name, or 0 (a probe for existence).
fn signal_or_zero(value: u64) -> String {
    match value as i32 {
        0 => "0".to_owned(),
        signal => signal_name(signal),
    }
}

/// socket(2)'s domain: `AF_INET`, `AF_UNIX`…
fn socket_domain(value: u64) -> String {
    match value as i32 {
        libc::AF_UNIX => "AF_UNIX".to_owned(),
        libc::AF_INET => "AF_INET".to_owned(),
        libc::AF_INET6 => "AF_INET6".to_owned(),
        libc::AF_NETLINK => "AF_NETLINK".to_owned(),
        libc::AF_PACKET => "AF_PACKET".to_owned(),
        other => other.to_string(),
    }
}

/// socket(2)'s type with its flags: `SOCK_STREAM|SOCK_CLOEXEC`.
fn socket_type(value: u64) -> String {
    let flag_bits = (libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as u64;
    let base = match (value & !flag_bits) as i32 {
        libc::SOCK_STREAM => "SOCK_STREAM".to_owned(),
        libc::SOCK_DGRAM => "SOCK_DGRAM".to_owned(),
        libc::SOCK_RAW => "SOCK_RAW".to_owned(),
        libc::SOCK_SEQPACKET => "SOCK_SEQPACKET".to_owned(),
        other => other.to_string(),
    };
    match flags(value & flag_bits, SOCK_FLAGS, "") {
        extra if extra.is_empty() => base,
        extra => format!("{base}|{extra}"),
    }
}

/// A directory descriptor argument: `AT_FDCWD` or the number.
fn dirfd(value: u64) -> String {
    if value as i32 == libc::AT_FDCWD {
        "AT_FDCWD".to_owned()
    } else {
        int(value)
    }
}

/// An execve's path and arrays as strace shows them:
/// `"/bin/ls", ["ls", "-l"], 0x7ffd… /* 21 vars */`, from the layout the
/// tracer captures (path NUL, argc, flagged args, envc); a bare path (the
/// layout of older trace files) shows the arrays as pointers.
pub fn exec_args(data: &[u8], argv: u64, envp: u64) -> String {
    let parsed = (|| {
        let end = data.iter().position(|&b| b == 0)?;
        let (path, mut rest) = (&data[..end], &data[end + 1..]);
        let take_u32 = |rest: &mut &[u8]| -> Option<u32> {
            let (head, tail) = rest.split_at_checked(4)?;
            *rest = tail;
            Some(u32::from_le_bytes(head.try_into().ok()?))
        };
        let argc = take_u32(&mut rest)? as usize;
        let mut args = Vec::new();
        while args.len() < argc.min(64) && rest.len() > 4 {
            let (&cut, tail) = rest.split_first()?;
            let end = tail.iter().position(|&b| b == 0)?;
            args.push(quoted(&tail[..end], cut == 1));
            rest = &tail[end + 1..];
        }
        let envc = take_u32(&mut rest)?;
        Some((path, argc, args, envc))
    })();
    match parsed {
        Some((path, argc, args, envc)) => {
            let more = if argc > args.len() { ", ..." } else { "" };
            let argv = if argv == 0 {
                "NULL".to_owned()
            } else if argc == u32::MAX as usize {
                // The tracer could not read the array: its address.
                hex(argv)
            } else {
                format!("[{}{more}]", args.join(", "))
            };
            format!(
                "{}, {argv}, {} /* {envc} vars */",
                quoted(path, false),
                hex(envp)
            )
        }
        None => format!("{}, {}, {}", quoted(data, false), hex(argv), hex(envp)),
    }
}

/// The arguments only known at exit (see [`entry_args`]).
pub fn exit_args(nr: u32, args: &[u64; 6], ret: i64, data: &[u8]) -> String {
    let Some(sysno) = Sysno::new(nr as usize) else {
        return String::new();
    };
    let a = args;
    // What the call wrote into the buffer: its bytes, "" at end of file,
    // the address when it failed (nothing was written), as strace.
    let filled = |len: i64| {
        if len >= 0 {
            buffer(data, len as u64)
        } else {
            hex(a[1])
        }
    };
    match sysno {
        Sysno::read => format!("{}, {}", filled(ret), a[2]),
        Sysno::recvfrom => format!(
            "{}, {}, {}, {}, {}",
            filled(ret),
            a[2],
            flags(a[3], MSG_FLAGS, "0"),
            hex(a[4]),
            hex(a[5])
        ),
        Sysno::accept | Sysno::accept4 => {
            let address = if a[1] == 0 {
                "NULL".to_owned()
            } else if data.is_empty() {
                hex(a[1])
            } else {
                sockaddr(data)
            };
            let length = if a[2] == 0 {
                "NULL".to_owned()
            } else {
                format!("[{}]", data.len())
            };
            if sysno == Sysno::accept4 {
                format!("{address}, {length}, {}", flags(a[3], SOCK_FLAGS, "0"))
            } else {
                format!("{address}, {length}")
            }
        }
        _ => String::new(),
    }
}

/// Kernel-internal restart codes, seen by tracers when a signal
/// interrupts a syscall.
const RESTART_CODES: &[(i64, &str, &str)] = &[
    (512, "ERESTARTSYS", "To be restarted if SA_RESTART is set"),
    (513, "ERESTARTNOINTR", "To be restarted"),
    (514, "ERESTARTNOHAND", "To be restarted if no handler"),
    (516, "ERESTART_RESTARTBLOCK", "Interrupted by signal"),
];

/// The C library's text for an errno, as strace prints it (the kernel's
/// own comments, which the syscalls crate carries, differ).
fn strerror(code: i32) -> String {
    let text = std::io::Error::from_raw_os_error(code).to_string();
    match text.rfind(" (os error") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

/// `0`, `79`, `0x7f…` or `-1 EAGAIN (Resource temporarily unavailable)`.
pub fn return_value(nr: u32, ret: i64) -> String {
    if (-4095..0).contains(&ret) {
        let code = -ret;
        if let Some((_, name, text)) = RESTART_CODES.iter().find(|(c, _, _)| *c == code) {
            return format!("? {name} ({text})");
        }
        return match Errno::new(code as i32).name() {
            Some(name) => format!("-1 {name} ({})", strerror(code as i32)),
            None => format!("-1 errno {code}"),
        };
    }
    match Sysno::new(nr as usize) {
        Some(Sysno::mmap | Sysno::brk | Sysno::mremap) => format!("{ret:#x}"),
        _ => ret.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nr(s: Sysno) -> u32 {
        s.id() as u32
    }

    #[test]
    fn futex_operations_read_like_strace() {
        let private_wait = (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as u64;
        assert_eq!(futex_op(private_wait), "FUTEX_WAIT_PRIVATE");
        assert_eq!(
            futex_op((libc::FUTEX_WAIT_BITSET | libc::FUTEX_CLOCK_REALTIME) as u64),
            "FUTEX_WAIT_BITSET|FUTEX_CLOCK_REALTIME"
        );
        let args = [0x55aa, private_wait, 1, 0, 0, 0];
        assert_eq!(
            entry_args(nr(Sysno::futex), &args, &[]),
            "0x55aa, FUTEX_WAIT_PRIVATE, 1, NULL"
        );
        let wake = [
            0x55aa,
            (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as u64,
            1,
            0,
            0,
            0,
        ];
        assert_eq!(
            entry_args(nr(Sysno::futex), &wake, &[]),
            "0x55aa, FUTEX_WAKE_PRIVATE, 1"
        );
    }

    #[test]
    fn every_futex_command_shows_the_arguments_it_reads_as_strace_does() {
        let futex = |command: i32, args: [u64; 4]| {
            let op = (command | libc::FUTEX_PRIVATE_FLAG) as u64;
            entry_args(
                nr(Sysno::futex),
                &[0x55aa, op, args[0], args[1], args[2], args[3]],
                &[],
            )
        };
        // val3 is 32 bits: a sign-extended register must not leak into it.
        // glibc's condvar: FUTEX_OP(FUTEX_OP_SET, 0, FUTEX_OP_CMP_GT, 1).
        let wake_op = 0x0400_0001u64 | 0xffff_ffff_0000_0000;
        assert_eq!(
            futex(libc::FUTEX_WAKE_OP, [1, 1, 0x66bb, wake_op]),
            "0x55aa, FUTEX_WAKE_OP_PRIVATE, 1, 1, 0x66bb, \
             FUTEX_OP_SET<<28|0<<12|FUTEX_OP_CMP_GT<<24|0x1"
        );
        assert_eq!(
            futex(
                libc::FUTEX_CMP_REQUEUE,
                [1, 0x7fff_ffff, 0x66bb, 0xffff_ffff_0000_0000]
            ),
            "0x55aa, FUTEX_CMP_REQUEUE_PRIVATE, 1, 2147483647, 0x66bb, 0"
        );
        assert_eq!(
            futex(libc::FUTEX_REQUEUE, [1, 5, 0x66bb, 0]),
            "0x55aa, FUTEX_REQUEUE_PRIVATE, 1, 5, 0x66bb"
        );
        assert_eq!(
            futex(libc::FUTEX_UNLOCK_PI, [0, 0, 0, 0]),
            "0x55aa, FUTEX_UNLOCK_PI_PRIVATE"
        );
    }

    #[test]
    fn a_read_at_end_of_file_shows_an_empty_string() {
        let read = [0, 0x7ffe_0000_1000, 8, 0, 0, 0];
        assert_eq!(exit_args(nr(Sysno::read), &read, 0, &[]), "\"\", 8");
        // Failed: nothing was written, the buffer is only an address.
        assert_eq!(
            exit_args(nr(Sysno::read), &read, -11, &[]),
            "0x7ffe00001000, 8"
        );
    }

    #[test]
    fn calls_without_a_decoder_show_only_their_arguments_numbers_as_numbers() {
        let wait4 = [0x4831, 0x7ffe_1234_5678, 0, 0, 0x55, 0x66];
        assert_eq!(
            entry_args(nr(Sysno::wait4), &wait4, &[]),
            "18481, 0x7ffe12345678, 0, NULL"
        );
        let socket = [
            2,
            (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64,
            6,
            9,
            9,
            9,
        ];
        assert_eq!(
            entry_args(nr(Sysno::socket), &socket, &[]),
            "AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 6"
        );
        let tgkill = [0x4830, 0x4830, libc::SIGSEGV as u64, 7, 7, 7];
        assert_eq!(
            entry_args(nr(Sysno::tgkill), &tgkill, &[]),
            "18480, 18480, SIGSEGV"
        );
        // pread64(fd, buf, count, offset): four registers, not six.
        let pread = [3, 0x7f00_0000_1000, 4096, 0, 0xdead, 0xbeef];
        assert_eq!(
            entry_args(nr(Sysno::pread64), &pread, &[]),
            "3, 0x7f0000001000, 4096, 0"
        );
    }

    #[test]
    fn clone_flags_name_the_thread_flags_and_the_signal() {
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(clone_flags(thread), "CLONE_VM|CLONE_SIGHAND|CLONE_THREAD");
        assert_eq!(clone_flags(libc::SIGCHLD as u64), "SIGCHLD");
        assert_eq!(
            clone_flags((libc::CLONE_VFORK | libc::SIGCHLD) as u64),
            "CLONE_VFORK|SIGCHLD"
        );
    }

    #[test]
    fn clone_io_the_top_bit_is_named() {
        // The kernel sees clone's flags as 32 bits: CLONE_IO is 0x80000000.
        assert_eq!(
            clone_flags(0x8000_0000 | libc::CLONE_VM as u64),
            "CLONE_VM|CLONE_IO"
        );
    }

    #[test]
    fn returns_and_errors() {
        assert_eq!(return_value(nr(Sysno::read), 79), "79");
        assert_eq!(
            return_value(nr(Sysno::futex), -11),
            "-1 EAGAIN (Resource temporarily unavailable)"
        );
        assert_eq!(
            return_value(nr(Sysno::futex), -512),
            "? ERESTARTSYS (To be restarted if SA_RESTART is set)"
        );
        assert_eq!(return_value(nr(Sysno::mmap), 0x7f00), "0x7f00");
    }

    #[test]
    fn buffers_addresses_and_times() {
        assert_eq!(quoted(b"GET /\r\n\x01", true), "\"GET /\\r\\n\\1\"...");
        // Octal as strace: shortest, three digits before a digit.
        assert_eq!(
            quoted(b"\x1b[H\x7f\x00\x001", false),
            "\"\\33[H\\177\\0\\0001\""
        );
        let mut addr = vec![0u8; 16];
        addr[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        addr[2..4].copy_from_slice(&8080u16.to_be_bytes());
        addr[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            sockaddr(&addr),
            "{sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr(\"127.0.0.1\")}"
        );
        let mut ts = 1i64.to_ne_bytes().to_vec();
        ts.extend_from_slice(&500i64.to_ne_bytes());
        assert_eq!(timespec(&ts, 0x10), "{tv_sec=1, tv_nsec=500}");
        assert_eq!(timespec(&[], 0), "NULL");
        assert_eq!(signal_name(34), "SIGRT_2");
        let write = [1, 0x1000, 5, 0, 0, 0];
        assert_eq!(
            entry_args(nr(Sysno::write), &write, b"hello"),
            "1, \"hello\", 5"
        );
        assert_eq!(
            exit_args(nr(Sysno::read), &[3, 0x1000, 8192, 0, 0, 0], 3, b"GET"),
            "\"GET\", 8192"
        );
    }

    #[test]
    fn execve_arrays_read_like_strace_and_old_traces_still_decode() {
        let mut data = b"/bin/echo\0".to_vec();
        data.extend(3u32.to_le_bytes());
        for (cut, arg) in [(0u8, &b"echo"[..]), (0, b"hi"), (1, b"a very l")] {
            data.push(cut);
            data.extend(arg);
            data.push(0);
        }
        data.extend(35u32.to_le_bytes());
        assert_eq!(
            exec_args(&data, 0x1000, 0x2000),
            r#""/bin/echo", ["echo", "hi", "a very l"...], 0x2000 /* 35 vars */"#
        );
        // More arguments than were kept.
        let mut many = b"/x\0".to_vec();
        many.extend(40u32.to_le_bytes());
        many.extend([0, b'a', 0]);
        many.extend(0u32.to_le_bytes());
        assert_eq!(
            exec_args(&many, 0x1000, 0x2000),
            r#""/x", ["a", ...], 0x2000 /* 0 vars */"#
        );
        // A trace written before arrays were captured: the path alone.
        assert_eq!(
            exec_args(b"/bin/ls", 0x1000, 0x2000),
            r#""/bin/ls", 0x1000, 0x2000"#
        );
        // Damaged data never panics.
        for cut in 0..data.len() {
            let _ = exec_args(&data[..cut], 1, 2);
        }
        // An argv the tracer could not read shows as its address.
        let mut bad = b"/x\0".to_vec();
        bad.extend(u32::MAX.to_le_bytes());
        bad.extend(3u32.to_le_bytes());
        assert_eq!(
            exec_args(&bad, 0xdead, 0x2000),
            r#""/x", 0xdead, 0x2000 /* 3 vars */"#
        );
        let execveat = syscalls::Sysno::execveat.id() as u32;
        assert_eq!(
            entry_args(
                execveat,
                &[(-100i64) as u64, 0, 0x1000, 0x2000, 0, 0],
                &data
            ),
            r#"AT_FDCWD, "/bin/echo", ["echo", "hi", "a very l"...], 0x2000 /* 35 vars */, 0"#
        );
    }
}
