//! Turning raw syscall numbers, arguments and captured bytes into the text
//! strace prints: futex operations, clone flags, socket flags and
//! addresses, timespecs, strings, errno names.
//!
//! A syscall is printed in two halves, as strace does for calls that block:
//! [`entry_args`] is known at entry; [`exit_args`] is only known when the
//! call returns (the bytes a read filled in, the address accept4 wrote).

use syscalls::{Errno, Sysno};
use tracebench_trace::DataCapture;

mod futex;
mod names;
mod net;
mod process;
mod structs;
mod table;
mod text;

pub use futex::futex_op;
pub use net::sockaddr;
pub use process::{clone_flags, exec_args, siginfo, signal_name};
pub use text::{FdPaths, Strings, quoted, timespec, with_fd_paths, with_strings};

use net::MSG_FLAGS;
use process::clone_args;
use text::{buffer, dirfd, fd, flags, hex};

/// The syscall's name, or `syscall_N` for a number this build does not
/// know.
pub fn syscall_name(nr: u32) -> String {
    Sysno::new(nr as usize).map_or_else(|| format!("syscall_{nr}"), |s| s.name().to_owned())
}

/// The arguments known at entry, joined with ", ". For syscalls that
/// complete their arguments at exit, ends with ", " and [`exit_args`]
/// continues.
pub fn entry_args(nr: u32, args: &[u64; 6], data: &[u8]) -> String {
    let Some(sysno) = Sysno::new(nr as usize) else {
        return args.iter().map(|&a| hex(a)).collect::<Vec<_>>().join(", ");
    };
    if let Some(text) = table::entry(sysno, args, Some(data)) {
        return text;
    }
    let a = args;
    match sysno {
        Sysno::read | Sysno::recvfrom => format!("{}, ", fd(a[0])),
        Sysno::write => format!("{}, {}, {}", fd(a[0]), buffer(data, a[2]), a[2]),
        Sysno::sendto => format!(
            "{}, {}, {}, {}, {}, {}",
            fd(a[0]),
            buffer(data, a[2]),
            a[2],
            flags(a[3], MSG_FLAGS, "0"),
            hex(a[4]),
            a[5]
        ),
        Sysno::futex => futex::entry_args(a, data),
        Sysno::clone => process::clone_entry(a),
        Sysno::clone3 => clone_args(data, a[0]),
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
        Sysno::connect | Sysno::bind => format!("{}, {}, {}", fd(a[0]), sockaddr(data), a[2]),
        Sysno::shutdown => format!(
            "{}, {}",
            fd(a[0]),
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
    if let Some(text) = Sysno::new(nr as usize).and_then(|s| table::entry(s, args, None)) {
        return text;
    }
    match Sysno::new(nr as usize) {
        Some(Sysno::write | Sysno::connect | Sysno::bind) => {
            format!("{}, {}, {}", fd(a[0]), hex(a[1]), a[2])
        }
        Some(Sysno::sendto) => format!(
            "{}, {}, {}, {}, {}, {}",
            fd(a[0]),
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
    if let Some(text) = Sysno::new(nr as usize).and_then(|s| table::exit(s, args, ret, None)) {
        return text;
    }
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
        _ => exit_args(nr, args, ret, &[]),
    }
}

/// The arguments only known at exit (see [`entry_args`]).
pub fn exit_args(nr: u32, args: &[u64; 6], ret: i64, data: &[u8]) -> String {
    let Some(sysno) = Sysno::new(nr as usize) else {
        return String::new();
    };
    if let Some(text) = table::exit(sysno, args, ret, Some(data)) {
        return text;
    }
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
        Sysno::clone => process::clone_exit(a, ret),
        Sysno::clone3 => process::clone3_exit(data, a[1], ret),
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

/// [`return_value`] with what strace adds for some calls, which needs
/// their arguments and the bytes captured at exit: `0 (Timeout)`, poll's
/// ready fds, `0x1 (flags FD_CLOEXEC)`.
pub fn return_value_of(nr: u32, args: &[u64; 6], ret: i64, data: &[u8]) -> String {
    let Some(sysno) = Sysno::new(nr as usize) else {
        return return_value(nr, ret);
    };
    if let Some(text) = table::return_value(sysno, args, ret, data) {
        return text;
    }
    if ret >= 0 && returns_fd(sysno, args) {
        return fd(ret as u64);
    }
    return_value(nr, ret)
}

/// The calls whose result is a new descriptor (shown with `-y` as strace
/// shows it: `= 3</etc/hosts>`).
fn returns_fd(sysno: Sysno, args: &[u64; 6]) -> bool {
    match sysno {
        Sysno::fcntl => matches!(args[1] as i32, libc::F_DUPFD | libc::F_DUPFD_CLOEXEC),
        Sysno::open
        | Sysno::openat
        | Sysno::openat2
        | Sysno::creat
        | Sysno::socket
        | Sysno::accept
        | Sysno::accept4
        | Sysno::dup
        | Sysno::dup2
        | Sysno::dup3
        | Sysno::epoll_create
        | Sysno::epoll_create1
        | Sysno::eventfd
        | Sysno::eventfd2
        | Sysno::timerfd_create
        | Sysno::signalfd4
        | Sysno::memfd_create
        | Sysno::pidfd_open
        | Sysno::inotify_init1
        | Sysno::io_uring_setup
        | Sysno::perf_event_open => true,
        _ => false,
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
        // ppoll(fds, nfds, timeout, sigmask, size): five registers.
        let ppoll = [0x7ffe_1234_5678, 1, 0, 0, 8, 0xbeef];
        assert_eq!(
            entry_args(nr(Sysno::ppoll), &ppoll, &[]),
            "0x7ffe12345678, 1, 0, 0, 8"
        );
    }

    /// Segments as the ptrace backend captures them for table calls.
    fn segments(parts: &[Option<&[u8]>]) -> Vec<u8> {
        let mut data = Vec::new();
        for part in parts {
            tracebench_trace::syscall::signature::push_segment(&mut data, *part);
        }
        data
    }

    #[test]
    fn table_calls_read_like_strace() {
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
            "AF_INET, SOCK_STREAM|SOCK_CLOEXEC, IPPROTO_TCP"
        );
        let tgkill = [0x4830, 0x4830, libc::SIGSEGV as u64, 7, 7, 7];
        assert_eq!(
            entry_args(nr(Sysno::tgkill), &tgkill, &[]),
            "18480, 18480, SIGSEGV"
        );
        let openat = [
            (-100i64) as u64,
            0x1000,
            (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
            0,
            0,
            0,
        ];
        let path = segments(&[Some(b"/etc/ld.so.cache")]);
        assert_eq!(
            entry_args(nr(Sysno::openat), &openat, &path),
            r#"AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC"#
        );
        let create = [
            3,
            0x1000,
            (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u64,
            0o644,
            0,
            0,
        ];
        assert_eq!(
            entry_args(nr(Sysno::openat), &create, &segments(&[Some(b"x")])),
            r#"3, "x", O_WRONLY|O_CREAT|O_TRUNC, 0644"#
        );
        // The mode as C's %#03o writes it.
        for (mode, shown) in [(0, "000"), (5, "005"), (0o644, "0644")] {
            let creat = [3, 0x1000, libc::O_CREAT as u64, mode, 0, 0];
            let text = entry_args(nr(Sysno::openat), &creat, &segments(&[Some(b"x")]));
            assert!(text.ends_with(&format!(", {shown}")), "{text}");
        }
        let mmap = [0, 8192, 3, 0x22, u64::MAX, 0];
        assert_eq!(
            entry_args(nr(Sysno::mmap), &mmap, &[]),
            "NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0"
        );
        // wait4's status is known at exit; a child that exited 0.
        let wait4 = [u64::MAX, 0x7ffe_0000_0010, 1, 0, 0, 0];
        assert_eq!(entry_args(nr(Sysno::wait4), &wait4, &[]), "-1, ");
        let status = segments(&[Some(&0i32.to_ne_bytes())]);
        assert_eq!(
            exit_args(nr(Sysno::wait4), &wait4, 42, &status),
            "[{WIFEXITED(s) && WEXITSTATUS(s) == 0}], WNOHANG, NULL"
        );
        // A failed call's output is its address.
        assert_eq!(
            exit_args(nr(Sysno::wait4), &wait4, -10, &segments(&[None])),
            "0x7ffe00000010, WNOHANG, NULL"
        );
    }

    #[test]
    fn signal_sets_and_actions_read_like_strace() {
        // Everything but RTMIN and RT_1 is blocked: strace shows what is not.
        let all_but = !(3u64 << 31);
        let mask = [libc::SIG_BLOCK as u64, 0x1000, 0x2000, 8, 0, 0];
        let data = segments(&[Some(&all_but.to_ne_bytes())]);
        assert_eq!(
            entry_args(nr(Sysno::rt_sigprocmask), &mask, &data),
            "SIG_BLOCK, ~[RTMIN RT_1], "
        );
        let old = segments(&[Some(&(1u64 << (libc::SIGQUIT - 1)).to_ne_bytes())]);
        assert_eq!(
            exit_args(nr(Sysno::rt_sigprocmask), &mask, 0, &old),
            "[QUIT], 8"
        );
        let mut action = 1u64.to_ne_bytes().to_vec(); // SIG_IGN
        action.extend((0x0400_0000u64 | libc::SA_RESTART as u64).to_ne_bytes());
        action.extend(0x7f00_0000_1000u64.to_ne_bytes());
        action.extend((1u64 << (libc::SIGPIPE - 1)).to_ne_bytes());
        let sigaction = [libc::SIGPIPE as u64, 0x1000, 0, 8, 0, 0];
        assert_eq!(
            entry_args(
                nr(Sysno::rt_sigaction),
                &sigaction,
                &segments(&[Some(&action)])
            ),
            "SIGPIPE, {sa_handler=SIG_IGN, sa_mask=[PIPE], sa_flags=SA_RESTORER|SA_RESTART, \
             sa_restorer=0x7f0000001000}, "
        );
        assert_eq!(
            exit_args(nr(Sysno::rt_sigaction), &sigaction, 0, &segments(&[None])),
            "NULL, 8"
        );
    }

    #[test]
    fn review_findings_offsets_counts_short_reads_and_failed_calls() {
        // Offsets are 64 bits (they were cut to an int).
        let lseek = [5, 3_000_000_000, 0, 0, 0, 0];
        assert_eq!(
            entry_args(nr(Sysno::lseek), &lseek, &[]),
            "5, 3000000000, SEEK_SET"
        );
        // poll's count is an unsigned int to the kernel.
        let poll = [0x1000, 1 << 40, 0, 0, 0, 0];
        assert_eq!(
            exit_args(nr(Sysno::poll), &poll, 0, &segments(&[Some(&[])])),
            "[], 0, 0"
        );
        // An interrupted poll still shows what it was asked.
        let mut fds = 3i32.to_ne_bytes().to_vec();
        fds.extend((libc::POLLIN as u16).to_ne_bytes());
        fds.extend(0u16.to_ne_bytes());
        let poll = [0x1000, 1, 3000, 0, 0, 0];
        assert_eq!(
            exit_args(nr(Sysno::poll), &poll, -514, &segments(&[Some(&fds)])),
            "[{fd=3, events=POLLIN}], 1, 3000"
        );
        // A short readv: the buffer holds what was read, not cut.
        let mut vector = 4096u64.to_le_bytes().to_vec();
        vector.extend(3u64.to_le_bytes());
        vector.extend(3u32.to_le_bytes());
        vector.extend(b"hi\n");
        let readv = [3, 0x1000, 1, 0, 0, 0];
        assert_eq!(
            exit_args(nr(Sysno::readv), &readv, 3, &segments(&[Some(&vector)])),
            "[{iov_base=\"hi\\n\", iov_len=4096}], 1"
        );
        // An abstract unix socket name.
        let mut abstract_name = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        abstract_name.extend(b"\0abstract");
        assert_eq!(
            sockaddr(&abstract_name),
            "{sa_family=AF_UNIX, sun_path=@\"abstract\"}"
        );
    }

    #[test]
    fn accept4_shows_the_address_and_its_length_before_and_after() {
        let mut addr = vec![0u8; 16];
        addr[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        addr[2..4].copy_from_slice(&60350u16.to_be_bytes());
        addr[4..8].copy_from_slice(&[127, 0, 0, 1]);
        let lengths = [112u32.to_ne_bytes(), 16u32.to_ne_bytes()].concat();
        let accept4 = [4, 0x1000, 0x2000, libc::SOCK_NONBLOCK as u64, 0, 0];
        assert_eq!(entry_args(nr(Sysno::accept4), &accept4, &[]), "4, ");
        assert_eq!(
            exit_args(
                nr(Sysno::accept4),
                &accept4,
                5,
                &segments(&[Some(&addr), Some(&lengths)])
            ),
            "{sa_family=AF_INET, sin_port=htons(60350), sin_addr=inet_addr(\"127.0.0.1\")}, \
             [112 => 16], SOCK_NONBLOCK"
        );
        // Our server passes no address: NULL, NULL, as strace shows it.
        let bare = [3, 0, 0, libc::SOCK_CLOEXEC as u64, 0, 0];
        assert_eq!(
            exit_args(nr(Sysno::accept4), &bare, 5, &segments(&[None, None])),
            "NULL, NULL, SOCK_CLOEXEC"
        );
    }

    #[test]
    fn with_y_descriptors_show_what_they_refer_to() {
        fn paths(tid: i32, fd: i32) -> Option<String> {
            assert_eq!(tid, 7);
            match fd {
                3 => Some("/etc/hosts".to_owned()),
                libc::AT_FDCWD => Some("/tmp".to_owned()),
                4 => Some("socket:[123]".to_owned()),
                _ => None,
            }
        }
        let read = [3, 0x1000, 10, 0, 0, 0];
        let openat = [(-100i64) as u64, 0x1000, 0, 0, 0, 0];
        with_fd_paths(Some(paths), 7, || {
            assert_eq!(entry_args(nr(Sysno::read), &read, &[]), "3</etc/hosts>, ");
            assert_eq!(
                entry_args(nr(Sysno::openat), &openat, &segments(&[Some(b"x")])),
                "AT_FDCWD</tmp>, \"x\", O_RDONLY"
            );
            assert_eq!(
                return_value_of(nr(Sysno::openat), &openat, 3, &[]),
                "3</etc/hosts>"
            );
            assert_eq!(
                entry_args(nr(Sysno::close), &[4, 0, 0, 0, 0, 0], &[]),
                "4<socket:[123]>"
            );
            // A descriptor that cannot be looked up, and -1, stay numbers.
            assert_eq!(entry_args(nr(Sysno::close), &[9, 0, 0, 0, 0, 0], &[]), "9");
            let mmap = [0, 4096, 1, 0x22, u64::MAX, 0];
            assert!(entry_args(nr(Sysno::mmap), &mmap, &[]).ends_with(", -1, 0"));
        });
        // Without -y: numbers.
        assert_eq!(entry_args(nr(Sysno::read), &read, &[]), "3, ");
    }

    #[test]
    fn without_captured_memory_pointers_show_as_pointers() {
        // The perf backend reads no memory: nothing is invented.
        let openat = [(-100i64) as u64, 0x1000, 0, 0, 0, 0];
        assert_eq!(
            entry_args_of(nr(Sysno::openat), &openat, &[], DataCapture::NotCaptured),
            "AT_FDCWD, 0x1000, O_RDONLY"
        );
        let fstat = [3, 0x2000, 0, 0, 0, 0];
        assert_eq!(
            exit_args_of(nr(Sysno::fstat), &fstat, 0, &[], DataCapture::NotCaptured),
            "0x2000"
        );
        // Damaged segments never panic.
        let data = segments(&[Some(&[1, 2, 3])]);
        for cut in 0..data.len() {
            let _ = exit_args(nr(Sysno::fstat), &fstat, 0, &data[..cut]);
            let _ = exit_args(
                nr(Sysno::rt_sigaction),
                &[2, 1, 1, 8, 0, 0],
                0,
                &data[..cut],
            );
        }
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
