//! What each argument of a syscall is: a number, a descriptor, a named
//! constant, or a pointer to memory the kernel reads (captured at entry)
//! or writes (captured at exit). Capture backends read the memory this
//! table names; renderers print each argument by its kind, so both agree
//! on what the captured bytes are.
//!
//! The calls that had hand-written capture before this table existed
//! (read, write, sendto, recvfrom, connect, bind, nanosleep, clock_nanosleep, futex, clone,
//! clone3, execve, execveat) keep it, so older trace files decode as they
//! did: they are not in the table.
//!
//! The captured bytes of a call in the table are [`Segments`]: one per
//! pointer argument captured at that side, in argument order. Memory the
//! kernel reads is captured at entry when it comes before the first
//! argument known only at exit ([`split`]), and at exit otherwise, since
//! the line is printed from there on when the call returns.

use syscalls::Sysno;

/// A set of named constants an argument takes its value from (the
/// renderer holds the names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Names {
    AccessMode,
    ArchPrctl,
    AtFlags,
    Clock,
    EpollCreateFlags,
    EpollCtl,
    Fcntl,
    Flock,
    GetrandomFlags,
    Ioctl,
    Fadvise,
    SockFlags,
    Madvise,
    MapFlags,
    MremapFlags,
    OpenFlags,
    PipeFlags,
    Prot,
    Resource,
    Rusage,
    Signal,
    SigprocmaskHow,
    SocketLevel,
    StatxMask,
    Whence,
    WaitOptions,
    Itimer,
    XattrFlags,
}

/// How long a buffer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// The value of argument N.
    Arg(u8),
    /// The call's return value (what it filled in).
    Return,
    /// The `socklen_t` argument N points to.
    PointedBy(u8),
}

/// A structure passed by pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Layout {
    Stat,
    Statx,
    Timespec,
    Timeval,
    Itimerval,
    Rlimit,
    Sigaction,
    Utsname,
    Rusage,
    Sysinfo,
    /// One C int, shown `[N]`.
    Int,
    /// Two descriptors, shown `[N, M]` (pipe, socketpair).
    FdPair,
    EpollEvent,
    /// A wait status, shown with the W… macros.
    WaitStatus,
}

/// Memory an argument points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// A NUL-terminated path, whole.
    Path,
    /// A NUL-terminated string, cut at the string limit (-s).
    Text,
    /// Bytes, cut at the string limit.
    Bytes(Length),
    /// Bytes shown in hex whatever they are (getrandom).
    HexBytes(Length),
    /// A signal set of the given size in bytes.
    Sigset(Length),
    /// A CPU set (sched_getaffinity), of the given size in bytes.
    CpuSet(Length),
    /// linux_dirent64 records, shown as their count.
    Dirents(Length),
    /// An array of `struct pollfd`, with the count in an argument.
    Pollfds(u8),
    /// An array of `struct epoll_event`, filled in up to the return.
    EpollEvents,
    /// An array of `struct iovec` (count in an argument) with the first
    /// bytes of each buffer.
    Iovecs(u8),
    /// An array of `gid_t` (count in an argument).
    Gids(u8),
    /// A `socklen_t` the kernel reads and rewrites: shown `[in => out]`
    /// (captured as both values, 4 bytes each).
    SocklenInOut,
    /// A socket address.
    Sockaddr(Length),
    /// A fixed-size structure.
    Struct(Layout),
}

/// What one argument is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// A signed int: a pid, a count.
    Int,
    /// A file descriptor (with `-y`, shown with what it refers to).
    Fd,
    /// A directory descriptor: `AT_FDCWD` or a number.
    DirFd,
    /// An unsigned long: a size, a length.
    Unsigned,
    /// A signed 64-bit number: a file offset or length (`loff_t`).
    Long,
    /// An unsigned int count the kernel reads as 32 bits (poll's nfds).
    Count,
    /// A number strace prints in hex, but 0 as `0` (an offset).
    Hex,
    /// An address, never read: `NULL` or `0x…`.
    Address,
    /// A file mode, in octal.
    Mode,
    /// One of a set of named constants.
    Named(Names),
    /// An OR of flags from a set.
    Flags(Names),
    /// Memory the kernel reads: captured at entry.
    In(Memory),
    /// Memory the kernel writes: captured at exit, shown only if the call
    /// succeeded.
    Out(Memory),
    /// Memory the kernel reads and rewrites: captured at exit.
    InOut(Memory),
}

impl Arg {
    /// The memory this argument points to, if any.
    pub fn memory(self) -> Option<Memory> {
        match self {
            Arg::In(m) | Arg::Out(m) | Arg::InOut(m) => Some(m),
            _ => None,
        }
    }

    /// Whether this argument is only known when the call returns.
    pub fn at_exit(self) -> bool {
        matches!(self, Arg::Out(_) | Arg::InOut(_))
    }
}

use Arg::{
    Address, Count, DirFd, Fd, Flags, Hex, In, InOut, Int, Long, Mode, Named, Out, Unsigned,
};
use Memory::{Path, Struct, Text};

const PATH: Arg = In(Path);
const STAT_OUT: Arg = Out(Struct(Layout::Stat));
const SIGSET_IN: Arg = In(Memory::Sigset(Length::Arg(3)));
const SIGSET_OUT: Arg = Out(Memory::Sigset(Length::Arg(3)));

/// The arguments of `sysno`, for the calls the table knows.
pub fn signature(sysno: Sysno) -> Option<&'static [Arg]> {
    files(sysno)
        .or_else(|| memory_and_process(sysno))
        .or_else(|| descriptors_and_net(sysno))
}

fn files(sysno: Sysno) -> Option<&'static [Arg]> {
    Some(match sysno {
        Sysno::open => &[PATH, Flags(Names::OpenFlags), Mode],
        Sysno::openat => &[DirFd, PATH, Flags(Names::OpenFlags), Mode],
        Sysno::creat | Sysno::mkdir | Sysno::chmod => &[PATH, Mode],
        Sysno::mkdirat | Sysno::fchmodat => &[DirFd, PATH, Mode],
        Sysno::access => &[PATH, Flags(Names::AccessMode)],
        Sysno::faccessat => &[DirFd, PATH, Flags(Names::AccessMode)],
        Sysno::faccessat2 => &[DirFd, PATH, Flags(Names::AccessMode), Flags(Names::AtFlags)],
        Sysno::stat | Sysno::lstat => &[PATH, STAT_OUT],
        Sysno::fstat => &[Fd, STAT_OUT],
        Sysno::newfstatat => &[DirFd, PATH, STAT_OUT, Flags(Names::AtFlags)],
        Sysno::statx => &[
            DirFd,
            PATH,
            Flags(Names::AtFlags),
            Flags(Names::StatxMask),
            Out(Struct(Layout::Statx)),
        ],
        // strace shows a struct statfs whole; its figures change as the
        // disk fills, so it is left as the pointer.
        Sysno::statfs => &[PATH, Address],
        Sysno::fstatfs => &[Fd, Address],
        Sysno::readlink => &[PATH, Out(Memory::Bytes(Length::Return)), Unsigned],
        Sysno::readlinkat => &[DirFd, PATH, Out(Memory::Bytes(Length::Return)), Unsigned],
        Sysno::unlink | Sysno::rmdir | Sysno::chdir | Sysno::chroot => &[PATH],
        Sysno::unlinkat => &[DirFd, PATH, Flags(Names::AtFlags)],
        Sysno::rename | Sysno::link | Sysno::symlink => &[PATH, PATH],
        Sysno::renameat => &[DirFd, PATH, DirFd, PATH],
        Sysno::chown | Sysno::lchown => &[PATH, Int, Int],
        Sysno::fchown => &[Fd, Int, Int],
        Sysno::getcwd => &[Out(Path), Unsigned],
        Sysno::getxattr | Sysno::lgetxattr => {
            &[PATH, In(Text), Out(Memory::Bytes(Length::Return)), Unsigned]
        }
        Sysno::fgetxattr => &[Fd, In(Text), Out(Memory::Bytes(Length::Return)), Unsigned],
        Sysno::getdents64 | Sysno::getdents => {
            &[Fd, Out(Memory::Dirents(Length::Return)), Unsigned]
        }
        Sysno::lseek => &[Fd, Long, Named(Names::Whence)],
        Sysno::pread64 => &[Fd, Out(Memory::Bytes(Length::Return)), Unsigned, Long],
        Sysno::pwrite64 => &[Fd, In(Memory::Bytes(Length::Arg(2))), Unsigned, Long],
        Sysno::readv => &[Fd, Out(Memory::Iovecs(2)), Int],
        Sysno::writev => &[Fd, In(Memory::Iovecs(2)), Int],
        Sysno::ftruncate => &[Fd, Long],
        Sysno::truncate => &[PATH, Long],
        Sysno::fsync | Sysno::fdatasync | Sysno::fchdir | Sysno::dup => &[Fd],
        Sysno::fchmod => &[Fd, Mode],
        Sysno::dup2 => &[Fd, Fd],
        Sysno::dup3 => &[Fd, Fd, Flags(Names::PipeFlags)],
        Sysno::flock => &[Fd, Flags(Names::Flock)],
        Sysno::fadvise64 => &[Fd, Long, Unsigned, Named(Names::Fadvise)],
        Sysno::umask => &[Mode],
        _ => return None,
    })
}

fn memory_and_process(sysno: Sysno) -> Option<&'static [Arg]> {
    Some(match sysno {
        Sysno::mmap => &[
            Address,
            Unsigned,
            Flags(Names::Prot),
            Flags(Names::MapFlags),
            Fd,
            Hex,
        ],
        Sysno::mprotect => &[Address, Unsigned, Flags(Names::Prot)],
        Sysno::munmap => &[Address, Unsigned],
        Sysno::madvise => &[Address, Unsigned, Named(Names::Madvise)],
        Sysno::mremap => &[
            Address,
            Unsigned,
            Unsigned,
            Flags(Names::MremapFlags),
            Address,
        ],
        Sysno::brk => &[Address],
        Sysno::arch_prctl => &[Named(Names::ArchPrctl), Address],
        Sysno::set_tid_address => &[Address],
        Sysno::set_robust_list => &[Address, Unsigned],
        Sysno::rseq => &[Address, Hex, Int, Hex],
        Sysno::prlimit64 => &[
            Int,
            Named(Names::Resource),
            In(Struct(Layout::Rlimit)),
            Out(Struct(Layout::Rlimit)),
        ],
        Sysno::getrlimit => &[Named(Names::Resource), Out(Struct(Layout::Rlimit))],
        Sysno::setrlimit => &[Named(Names::Resource), In(Struct(Layout::Rlimit))],
        Sysno::getrandom => &[
            Out(Memory::HexBytes(Length::Return)),
            Unsigned,
            Flags(Names::GetrandomFlags),
        ],
        Sysno::rt_sigaction => &[
            Named(Names::Signal),
            In(Struct(Layout::Sigaction)),
            Out(Struct(Layout::Sigaction)),
            Unsigned,
        ],
        Sysno::rt_sigprocmask => &[
            Named(Names::SigprocmaskHow),
            SIGSET_IN,
            SIGSET_OUT,
            Unsigned,
        ],
        Sysno::rt_sigsuspend => &[In(Memory::Sigset(Length::Arg(1))), Unsigned],
        Sysno::sigaltstack => &[Address, Address],
        Sysno::getpid
        | Sysno::getppid
        | Sysno::gettid
        | Sysno::getuid
        | Sysno::geteuid
        | Sysno::getgid
        | Sysno::getegid
        | Sysno::getpgrp
        | Sysno::setsid
        | Sysno::sched_yield
        | Sysno::fork
        | Sysno::vfork
        | Sysno::pause
        | Sysno::rt_sigreturn
        | Sysno::restart_syscall => &[],
        Sysno::setuid | Sysno::setgid | Sysno::getpgid | Sysno::getsid => &[Int],
        Sysno::setpgid => &[Int, Int],
        Sysno::setgroups => &[Int, In(Memory::Gids(0))],
        Sysno::getgroups => &[Int, Out(Memory::Gids(0))],
        Sysno::uname => &[Out(Struct(Layout::Utsname))],
        Sysno::sysinfo => &[Out(Struct(Layout::Sysinfo))],
        Sysno::getrusage => &[Named(Names::Rusage), Out(Struct(Layout::Rusage))],
        Sysno::sched_getaffinity => &[Int, Unsigned, Out(Memory::CpuSet(Length::Return))],
        Sysno::clock_gettime | Sysno::clock_getres => {
            &[Named(Names::Clock), Out(Struct(Layout::Timespec))]
        }
        Sysno::gettimeofday => &[Out(Struct(Layout::Timeval)), Address],
        Sysno::setitimer => &[
            Named(Names::Itimer),
            In(Struct(Layout::Itimerval)),
            Out(Struct(Layout::Itimerval)),
        ],
        Sysno::wait4 => &[
            Int,
            Out(Struct(Layout::WaitStatus)),
            Flags(Names::WaitOptions),
            Address,
        ],
        Sysno::kill | Sysno::tkill => &[Int, Named(Names::Signal)],
        Sysno::tgkill => &[Int, Int, Named(Names::Signal)],
        Sysno::exit | Sysno::exit_group => &[Int],
        Sysno::prctl => &[Int, In(Text), Unsigned, Unsigned, Unsigned],
        Sysno::fchownat => &[DirFd, PATH, Int, Int, Flags(Names::AtFlags)],
        _ => return None,
    })
}

fn descriptors_and_net(sysno: Sysno) -> Option<&'static [Arg]> {
    Some(match sysno {
        Sysno::close => &[Fd],
        Sysno::pipe => &[Out(Struct(Layout::FdPair))],
        Sysno::pipe2 => &[Out(Struct(Layout::FdPair)), Flags(Names::PipeFlags)],
        // The int FIONBIO and FIOASYNC read; other requests show the pointer.
        Sysno::ioctl => &[Fd, Named(Names::Ioctl), In(Struct(Layout::Int))],
        Sysno::fcntl => &[Fd, Named(Names::Fcntl), Unsigned],
        Sysno::eventfd2 => &[Unsigned, Flags(Names::PipeFlags)],
        Sysno::epoll_create => &[Int],
        Sysno::epoll_create1 => &[Flags(Names::EpollCreateFlags)],
        Sysno::epoll_ctl => &[
            Fd,
            Named(Names::EpollCtl),
            Fd,
            In(Struct(Layout::EpollEvent)),
        ],
        Sysno::epoll_wait => &[Fd, Out(Memory::EpollEvents), Int, Int],
        Sysno::epoll_pwait => &[
            Fd,
            Out(Memory::EpollEvents),
            Int,
            Int,
            In(Memory::Sigset(Length::Arg(5))),
            Unsigned,
        ],
        Sysno::poll => &[InOut(Memory::Pollfds(1)), Count, Int],
        Sysno::socketpair => &[Int, Int, Int, Out(Struct(Layout::FdPair))],
        Sysno::setsockopt => &[
            Fd,
            Named(Names::SocketLevel),
            Int,
            In(Memory::Bytes(Length::Arg(4))),
            Unsigned,
        ],
        Sysno::getsockopt => &[
            Fd,
            Named(Names::SocketLevel),
            Int,
            Out(Struct(Layout::Int)),
            InOut(Memory::SocklenInOut),
        ],
        Sysno::listen => &[Fd, Int],
        Sysno::socket => &[Int, Int, Int],
        // Version 3 files kept the address raw: the reader converts them.
        Sysno::accept => &[
            Fd,
            Out(Memory::Sockaddr(Length::PointedBy(2))),
            InOut(Memory::SocklenInOut),
        ],
        Sysno::accept4 => &[
            Fd,
            Out(Memory::Sockaddr(Length::PointedBy(2))),
            InOut(Memory::SocklenInOut),
            Flags(Names::SockFlags),
        ],
        Sysno::getsockname | Sysno::getpeername => &[
            Fd,
            Out(Memory::Sockaddr(Length::PointedBy(2))),
            InOut(Memory::SocklenInOut),
        ],
        _ => return None,
    })
}

/// How many argument registers the table says `sysno` reads.
pub(super) fn table_arity(sysno: Sysno) -> Option<usize> {
    signature(sysno).map(<[Arg]>::len)
}

/// Where the line of a call is split: the index of its first argument
/// known only at exit (the length when none is).
pub fn split(signature: &[Arg]) -> usize {
    signature
        .iter()
        .position(|a| a.at_exit())
        .unwrap_or(signature.len())
}

/// The pointer arguments captured at entry (`at_exit` false) or at exit:
/// their indexes and kinds.
pub fn captured(signature: &[Arg], at_exit: bool) -> impl Iterator<Item = (usize, Arg)> + '_ {
    let split = split(signature);
    signature
        .iter()
        .enumerate()
        .filter(move |(i, a)| (*i >= split) == at_exit && a.memory().is_some())
        .map(|(i, a)| (i, *a))
}

impl Layout {
    /// Its size in bytes on x86_64.
    pub fn size(self) -> usize {
        match self {
            Layout::Stat | Layout::Rusage => 144,
            Layout::Statx => 256,
            Layout::Timespec | Layout::Timeval | Layout::Rlimit => 16,
            Layout::Itimerval | Layout::Sigaction => 32,
            Layout::Utsname => 390,
            Layout::Sysinfo => 112,
            Layout::Int | Layout::WaitStatus => 4,
            Layout::FdPair => 8,
            Layout::EpollEvent => 12,
        }
    }
}

/// The length marking a segment whose memory was not read (a NULL or bad
/// pointer, or a call that failed).
const UNREAD: u32 = u32::MAX;

/// Appends one segment: the bytes read, or `None` for memory not read.
pub fn push_segment(data: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            data.extend((bytes.len() as u32).to_le_bytes());
            data.extend_from_slice(bytes);
        }
        None => data.extend(UNREAD.to_le_bytes()),
    }
}

/// The segments of a call's captured bytes, in order: `Some(bytes)` for
/// memory read, `None` for memory not read, and `None` past the end (a
/// trace with no bytes for the call: the perf backend, an old file).
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    rest: &'a [u8],
}

impl<'a> Segments<'a> {
    /// Reads the segments of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Segments { rest: data }
    }

    /// The next segment.
    pub fn next_segment(&mut self) -> Option<&'a [u8]> {
        let (length, rest) = self.rest.split_first_chunk::<4>()?;
        let length = u32::from_le_bytes(*length);
        if length == UNREAD {
            self.rest = rest;
            return None;
        }
        let Some((bytes, rest)) = rest.split_at_checked(length as usize) else {
            self.rest = &[];
            return None;
        };
        self.rest = rest;
        Some(bytes)
    }
}
