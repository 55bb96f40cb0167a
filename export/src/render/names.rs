//! The named constants of the calls in the signature table, spelled as
//! strace spells them.

use tracebench_trace::syscall::signature::Names;

use super::process::signal_or_zero;
use super::text::{flags, int};

/// A table of values and names.
type Table = &'static [(u64, &'static str)];

macro_rules! table {
    ($($name:ident),* $(,)?) => {
        &[$((libc::$name as u64, stringify!($name))),*]
    };
}

const ACCESS: Table = table![R_OK, W_OK, X_OK];
const AT_FLAGS: Table = table![
    AT_SYMLINK_NOFOLLOW,
    AT_REMOVEDIR,
    AT_SYMLINK_FOLLOW,
    AT_NO_AUTOMOUNT,
    AT_EMPTY_PATH,
    AT_STATX_FORCE_SYNC,
    AT_STATX_DONT_SYNC,
    AT_EACCESS,
];
/// In strace's order; O_LARGEFILE by its kernel value (libc's is 0 on
/// 64-bit targets, where the kernel still reports the bit).
const OPEN_FLAGS: Table = &[
    (libc::O_CREAT as u64, "O_CREAT"),
    (libc::O_EXCL as u64, "O_EXCL"),
    (libc::O_NOCTTY as u64, "O_NOCTTY"),
    (libc::O_TRUNC as u64, "O_TRUNC"),
    (libc::O_APPEND as u64, "O_APPEND"),
    (libc::O_NONBLOCK as u64, "O_NONBLOCK"),
    (libc::O_SYNC as u64, "O_SYNC"),
    (libc::O_DSYNC as u64, "O_DSYNC"),
    (libc::O_ASYNC as u64, "O_ASYNC"),
    (libc::O_DIRECT as u64, "O_DIRECT"),
    (0o100_000, "O_LARGEFILE"),
    (libc::O_NOFOLLOW as u64, "O_NOFOLLOW"),
    (libc::O_NOATIME as u64, "O_NOATIME"),
    (libc::O_CLOEXEC as u64, "O_CLOEXEC"),
    (libc::O_PATH as u64, "O_PATH"),
    (libc::O_DIRECTORY as u64, "O_DIRECTORY"),
];
const PIPE_FLAGS: Table = table![O_NONBLOCK, O_CLOEXEC];
const PROT: Table = table![
    PROT_READ,
    PROT_WRITE,
    PROT_EXEC,
    PROT_GROWSDOWN,
    PROT_GROWSUP
];
const MAP_FLAGS: Table = table![
    MAP_FIXED,
    MAP_ANONYMOUS,
    MAP_32BIT,
    MAP_GROWSDOWN,
    MAP_DENYWRITE,
    MAP_EXECUTABLE,
    MAP_LOCKED,
    MAP_NORESERVE,
    MAP_POPULATE,
    MAP_NONBLOCK,
    MAP_STACK,
    MAP_HUGETLB,
    MAP_SYNC,
    MAP_FIXED_NOREPLACE,
];
const MREMAP_FLAGS: Table = table![MREMAP_MAYMOVE, MREMAP_FIXED];
const MADVISE: Table = table![
    MADV_NORMAL,
    MADV_RANDOM,
    MADV_SEQUENTIAL,
    MADV_WILLNEED,
    MADV_DONTNEED,
    MADV_FREE,
    MADV_REMOVE,
    MADV_DONTFORK,
    MADV_DOFORK,
    MADV_MERGEABLE,
    MADV_UNMERGEABLE,
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    MADV_DONTDUMP,
    MADV_DODUMP,
    MADV_WIPEONFORK,
    MADV_KEEPONFORK,
    MADV_COLD,
    MADV_PAGEOUT,
    MADV_HWPOISON,
];
const WHENCE: Table = table![SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE];
const RESOURCE: Table = table![
    RLIMIT_CPU,
    RLIMIT_FSIZE,
    RLIMIT_DATA,
    RLIMIT_STACK,
    RLIMIT_CORE,
    RLIMIT_RSS,
    RLIMIT_NPROC,
    RLIMIT_NOFILE,
    RLIMIT_MEMLOCK,
    RLIMIT_AS,
    RLIMIT_LOCKS,
    RLIMIT_SIGPENDING,
    RLIMIT_MSGQUEUE,
    RLIMIT_NICE,
    RLIMIT_RTPRIO,
    RLIMIT_RTTIME,
];
const ARCH_PRCTL: Table = &[
    (0x1001, "ARCH_SET_GS"),
    (0x1002, "ARCH_SET_FS"),
    (0x1003, "ARCH_GET_FS"),
    (0x1004, "ARCH_GET_GS"),
    (0x1011, "ARCH_GET_CPUID"),
    (0x1012, "ARCH_SET_CPUID"),
];
const HOW: Table = table![SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK];
pub(super) const STATX_MASK: Table = &[
    (libc::STATX_BASIC_STATS as u64, "STATX_BASIC_STATS"),
    (libc::STATX_TYPE as u64, "STATX_TYPE"),
    (libc::STATX_MODE as u64, "STATX_MODE"),
    (libc::STATX_NLINK as u64, "STATX_NLINK"),
    (libc::STATX_UID as u64, "STATX_UID"),
    (libc::STATX_GID as u64, "STATX_GID"),
    (libc::STATX_ATIME as u64, "STATX_ATIME"),
    (libc::STATX_MTIME as u64, "STATX_MTIME"),
    (libc::STATX_CTIME as u64, "STATX_CTIME"),
    (libc::STATX_INO as u64, "STATX_INO"),
    (libc::STATX_SIZE as u64, "STATX_SIZE"),
    (libc::STATX_BLOCKS as u64, "STATX_BLOCKS"),
    (libc::STATX_BTIME as u64, "STATX_BTIME"),
    (libc::STATX_MNT_ID as u64, "STATX_MNT_ID"),
    (libc::STATX_DIOALIGN as u64, "STATX_DIOALIGN"),
];
const CLOCK: Table = table![
    CLOCK_REALTIME,
    CLOCK_MONOTONIC,
    CLOCK_PROCESS_CPUTIME_ID,
    CLOCK_THREAD_CPUTIME_ID,
    CLOCK_MONOTONIC_RAW,
    CLOCK_REALTIME_COARSE,
    CLOCK_MONOTONIC_COARSE,
    CLOCK_BOOTTIME,
    CLOCK_REALTIME_ALARM,
    CLOCK_BOOTTIME_ALARM,
    CLOCK_TAI,
];
const FADVISE: Table = table![
    POSIX_FADV_NORMAL,
    POSIX_FADV_RANDOM,
    POSIX_FADV_SEQUENTIAL,
    POSIX_FADV_WILLNEED,
    POSIX_FADV_DONTNEED,
    POSIX_FADV_NOREUSE,
];
const FLOCK: Table = table![LOCK_SH, LOCK_EX, LOCK_NB, LOCK_UN];
const GRND: Table = table![GRND_NONBLOCK, GRND_RANDOM, GRND_INSECURE];
const RUSAGE: Table = &[
    (libc::RUSAGE_SELF as u64, "RUSAGE_SELF"),
    (libc::RUSAGE_CHILDREN as u64, "RUSAGE_CHILDREN"),
    (libc::RUSAGE_THREAD as u64, "RUSAGE_THREAD"),
];
const EPOLL_CREATE: Table = table![EPOLL_CLOEXEC];
const EPOLL_CTL: Table = table![EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD];
const WAIT: Table = table![
    WNOHANG,
    WUNTRACED,
    WCONTINUED,
    __WNOTHREAD,
    __WALL,
    __WCLONE
];
const ITIMER: Table = table![ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF];
const XATTR: Table = table![XATTR_CREATE, XATTR_REPLACE];
const SOCKET_LEVEL: Table = table![SOL_SOCKET, SOL_IP, SOL_TCP, SOL_UDP, SOL_IPV6];
const IOCTL: Table = table![
    TCGETS, TCSETS, TCSETSW, TCSETSF, TIOCGWINSZ, TIOCSWINSZ, TIOCGPGRP, TIOCSPGRP, FIONREAD,
    FIONBIO, FIOASYNC, FIOCLEX, FIONCLEX, TIOCSCTTY, TIOCNOTTY,
];
const FCNTL: Table = table![
    F_DUPFD,
    F_GETFD,
    F_SETFD,
    F_GETFL,
    F_SETFL,
    F_GETLK,
    F_SETLK,
    F_SETLKW,
    F_SETOWN,
    F_GETOWN,
    F_SETLEASE,
    F_GETLEASE,
    F_NOTIFY,
    F_DUPFD_CLOEXEC,
    F_SETPIPE_SZ,
    F_GETPIPE_SZ,
    F_ADD_SEALS,
    F_GET_SEALS,
    F_OFD_GETLK,
    F_OFD_SETLK,
    F_OFD_SETLKW,
];

fn table_of(names: Names) -> Table {
    match names {
        Names::AccessMode => ACCESS,
        Names::ArchPrctl => ARCH_PRCTL,
        Names::AtFlags => AT_FLAGS,
        Names::Clock => CLOCK,
        Names::EpollCreateFlags => EPOLL_CREATE,
        Names::EpollCtl => EPOLL_CTL,
        Names::Fcntl => FCNTL,
        Names::Flock => FLOCK,
        Names::GetrandomFlags => GRND,
        Names::Ioctl => IOCTL,
        Names::Fadvise => FADVISE,
        Names::SockFlags => super::net::SOCK_FLAGS,
        Names::Madvise => MADVISE,
        Names::MapFlags => MAP_FLAGS,
        Names::MremapFlags => MREMAP_FLAGS,
        Names::OpenFlags => OPEN_FLAGS,
        Names::PipeFlags => PIPE_FLAGS,
        Names::Prot => PROT,
        Names::Resource => RESOURCE,
        Names::Rusage => RUSAGE,
        Names::SigprocmaskHow => HOW,
        Names::SocketLevel => SOCKET_LEVEL,
        Names::StatxMask => STATX_MASK,
        Names::Whence => WHENCE,
        Names::WaitOptions => WAIT,
        Names::Itimer => ITIMER,
        Names::XattrFlags => XATTR,
        Names::Signal => &[],
    }
}

/// One constant of `names`: its name, or the number (with strace's
/// comment for what it cannot name).
pub(super) fn named(names: Names, value: u64) -> String {
    match names {
        Names::Signal => return signal_or_zero(value),
        Names::Clock if (value as i32) < 0 => {
            return format!("{:#x} /* CLOCK_??? */", value as u32);
        }
        _ => {}
    }
    // Most named arguments are C ints: the upper half of the register is
    // whatever the caller left there.
    let key = if names == Names::Ioctl {
        value & 0xffff_ffff
    } else {
        u64::from(value as u32)
    };
    match table_of(names).iter().find(|(v, _)| *v == key) {
        Some((_, name)) => (*name).to_owned(),
        None if names == Names::Ioctl => format!("{key:#x}"),
        None => int(value),
    }
}

/// A set of flags of `names`, as strace writes each kind.
pub(super) fn flag_set(names: Names, value: u64) -> String {
    let value = u64::from(value as u32);
    match names {
        Names::OpenFlags => open_flags(value),
        Names::MapFlags => {
            let kind = match value & 0x3 {
                1 => "MAP_SHARED",
                2 => "MAP_PRIVATE",
                3 => "MAP_SHARED_VALIDATE",
                _ => "0",
            };
            match flags(value & !0x3, MAP_FLAGS, "") {
                rest if rest.is_empty() => kind.to_owned(),
                rest => format!("{kind}|{rest}"),
            }
        }
        Names::Prot => flags(value, PROT, "PROT_NONE"),
        Names::AccessMode => flags(value, ACCESS, "F_OK"),
        Names::StatxMask => flags(value, STATX_MASK, "0"),
        other => flags(value, table_of(other), "0"),
    }
}

/// `O_RDONLY|O_CLOEXEC`: the access mode always named, then the flags.
pub(super) fn open_flags(value: u64) -> String {
    let mode = match value & 0x3 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        2 => "O_RDWR",
        _ => "O_ACCMODE",
    };
    // O_TMPFILE includes O_DIRECTORY's bit.
    let mut rest = value & !0x3;
    let mut parts = vec![mode.to_owned()];
    let tmpfile = libc::O_TMPFILE as u64;
    if rest & tmpfile == tmpfile {
        rest &= !tmpfile;
        let named = flags(rest, OPEN_FLAGS, "");
        if !named.is_empty() {
            parts.push(named);
        }
        parts.push("O_TMPFILE".to_owned());
        return parts.join("|");
    }
    let named = flags(rest, OPEN_FLAGS, "");
    if !named.is_empty() {
        parts.push(named);
    }
    parts.join("|")
}

/// statx's flags: the sync type is named even when it is the default (0).
pub(super) fn statx_at_flags(value: u64) -> String {
    let value = u64::from(value as u32);
    let sync = value & libc::AT_STATX_SYNC_TYPE as u64;
    let mut text = match sync {
        0 => "AT_STATX_SYNC_AS_STAT".to_owned(),
        _ => flags(sync, AT_FLAGS, ""),
    };
    let rest = flags(value & !(libc::AT_STATX_SYNC_TYPE as u64), AT_FLAGS, "");
    if !rest.is_empty() {
        text.push('|');
        text.push_str(&rest);
    }
    text
}

/// A file mode as strace writes it: octal with a leading 0.
pub(super) fn mode(value: u64) -> String {
    // C's "%#03o": 0 as 000, 5 as 005, 0644 as 0644.
    let octal = match value as u32 {
        0 => "0".to_owned(),
        mode => format!("0{mode:o}"),
    };
    format!("{octal:0>3}")
}

/// The file type and permission bits of a stat's mode: `S_IFREG|0644`.
pub(super) fn file_mode(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFREG => "S_IFREG",
        libc::S_IFDIR => "S_IFDIR",
        libc::S_IFLNK => "S_IFLNK",
        libc::S_IFCHR => "S_IFCHR",
        libc::S_IFBLK => "S_IFBLK",
        libc::S_IFIFO => "S_IFIFO",
        libc::S_IFSOCK => "S_IFSOCK",
        _ => return format!("{:#o}", mode).replacen("0o", "0", 1),
    };
    format!("{kind}|{}", self::mode(u64::from(mode & 0o7777)))
}
