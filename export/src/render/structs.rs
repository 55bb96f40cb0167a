//! Structures and arrays passed by pointer, as strace abbreviates them by
//! default (`{st_mode=S_IFREG|0644, st_size=832, ...}`).

use std::fmt::Write;

use tracebench_trace::syscall::signature::Layout;

use super::names::{STATX_MASK, file_mode};
use super::process::signal_name;
use super::text::{fd, flags, hex, quoted};

/// Little readers over captured bytes; a short buffer reads as `None`.
pub(super) struct Fields<'a>(pub(super) &'a [u8]);

impl Fields<'_> {
    pub(super) fn u64(&self, at: usize) -> Option<u64> {
        let bytes = self.0.get(at..at + 8)?;
        Some(u64::from_ne_bytes(bytes.try_into().ok()?))
    }

    pub(super) fn i64(&self, at: usize) -> Option<i64> {
        self.u64(at).map(|v| v as i64)
    }

    pub(super) fn u32(&self, at: usize) -> Option<u32> {
        let bytes = self.0.get(at..at + 4)?;
        Some(u32::from_ne_bytes(bytes.try_into().ok()?))
    }

    pub(super) fn i32(&self, at: usize) -> Option<i32> {
        self.u32(at).map(|v| v as i32)
    }

    fn u16(&self, at: usize) -> Option<u16> {
        let bytes = self.0.get(at..at + 2)?;
        Some(u16::from_ne_bytes(bytes.try_into().ok()?))
    }

    /// A NUL-padded char array.
    fn chars(&self, at: usize, len: usize) -> Option<String> {
        let bytes = self.0.get(at..at + len)?;
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(len);
        Some(quoted(&bytes[..end], false))
    }
}

/// A structure of `layout` from its bytes (`None` if they are short).
pub(super) fn structure(layout: Layout, bytes: &[u8]) -> Option<String> {
    let f = Fields(bytes);
    Some(match layout {
        Layout::Stat => stat(&f)?,
        Layout::Statx => statx(&f)?,
        Layout::Timespec => format!("{{tv_sec={}, tv_nsec={}}}", f.i64(0)?, f.i64(8)?),
        Layout::Timeval => timeval(&f, 0)?,
        Layout::Itimerval => format!(
            "{{it_interval={}, it_value={}}}",
            timeval(&f, 0)?,
            timeval(&f, 16)?
        ),
        Layout::Rlimit => format!(
            "{{rlim_cur={}, rlim_max={}}}",
            rlim(f.u64(0)?),
            rlim(f.u64(8)?)
        ),
        Layout::Sigaction => sigaction(&f)?,
        Layout::Utsname => format!(
            "{{sysname={}, nodename={}, ...}}",
            f.chars(0, 65)?,
            f.chars(65, 65)?
        ),
        Layout::Rusage => format!(
            "{{ru_utime={}, ru_stime={}, ...}}",
            timeval(&f, 0)?,
            timeval(&f, 16)?
        ),
        Layout::Sysinfo => sysinfo(&f)?,
        Layout::Int => format!("[{}]", f.i32(0)?),
        Layout::FdPair => format!(
            "[{}, {}]",
            fd(u64::from(f.u32(0)?)),
            fd(u64::from(f.u32(4)?))
        ),
        Layout::EpollEvent => epoll_event(&f, 0)?,
        Layout::WaitStatus => format!("[{}]", wait_status(f.i32(0)?)),
    })
}

fn stat(f: &Fields) -> Option<String> {
    let mode = f.u32(24)?;
    let kind = mode & libc::S_IFMT;
    if kind == libc::S_IFCHR || kind == libc::S_IFBLK {
        let rdev = f.u64(40)?;
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        return Some(format!(
            "{{st_mode={}, st_rdev=makedev({major:#x}, {minor:#x}), ...}}",
            file_mode(mode)
        ));
    }
    Some(format!(
        "{{st_mode={}, st_size={}, ...}}",
        file_mode(mode),
        f.i64(48)?
    ))
}

const STATX_ATTRIBUTES: &[(u64, &str)] = &[
    (0x4, "STATX_ATTR_COMPRESSED"),
    (0x10, "STATX_ATTR_IMMUTABLE"),
    (0x20, "STATX_ATTR_APPEND"),
    (0x40, "STATX_ATTR_NODUMP"),
    (0x800, "STATX_ATTR_ENCRYPTED"),
    (0x1000, "STATX_ATTR_AUTOMOUNT"),
    (0x2000, "STATX_ATTR_MOUNT_ROOT"),
    (0x10_0000, "STATX_ATTR_VERITY"),
    (0x20_0000, "STATX_ATTR_DAX"),
];

fn statx(f: &Fields) -> Option<String> {
    let mask = u64::from(f.u32(0)?);
    let attributes = f.u64(8)?;
    let mode = u32::from(f.u16(28)?);
    let mask_text = flags(mask, STATX_MASK, "0");
    let attributes = flags(attributes, STATX_ATTRIBUTES, "0");
    Some(format!(
        "{{stx_mask={mask_text}, stx_attributes={attributes}, stx_mode={}, stx_size={}, ...}}",
        file_mode(mode),
        f.u64(40)?
    ))
}

fn timeval(f: &Fields, at: usize) -> Option<String> {
    Some(format!(
        "{{tv_sec={}, tv_usec={}}}",
        f.i64(at)?,
        f.i64(at + 8)?
    ))
}

/// strace's rlimit values: `RLIM64_INFINITY`, `8192*1024`, `1024`.
fn rlim(value: u64) -> String {
    if value == u64::MAX {
        "RLIM64_INFINITY".to_owned()
    } else if value > 1024 && value.is_multiple_of(1024) {
        format!("{}*1024", value / 1024)
    } else {
        value.to_string()
    }
}

const SA_FLAGS: &[(u64, &str)] = &[
    (0x0400_0000, "SA_RESTORER"),
    (libc::SA_ONSTACK as u64, "SA_ONSTACK"),
    (libc::SA_RESTART as u64, "SA_RESTART"),
    (libc::SA_NODEFER as u64, "SA_NODEFER"),
    (libc::SA_RESETHAND as u32 as u64, "SA_RESETHAND"),
    (libc::SA_SIGINFO as u64, "SA_SIGINFO"),
    (libc::SA_NOCLDSTOP as u64, "SA_NOCLDSTOP"),
    (libc::SA_NOCLDWAIT as u64, "SA_NOCLDWAIT"),
];

/// The kernel's `struct sigaction`: handler, flags, restorer, mask.
fn sigaction(f: &Fields) -> Option<String> {
    let handler = match f.u64(0)? {
        0 => "SIG_DFL".to_owned(),
        1 => "SIG_IGN".to_owned(),
        other => format!("{other:#x}"),
    };
    let sa_flags = f.u64(8)?;
    let mut text = format!(
        "{{sa_handler={handler}, sa_mask={}, sa_flags={}",
        sigset(f.0.get(24..32)?),
        flags(sa_flags, SA_FLAGS, "0")
    );
    if sa_flags & 0x0400_0000 != 0 {
        let _ = write!(text, ", sa_restorer={}", hex(f.u64(16)?));
    }
    text.push('}');
    Some(text)
}

/// A signal's name in a set: `INT`, `RTMIN`, `RT_1`.
fn set_member(signal: u32) -> String {
    signal_name(signal as i32)
        .trim_start_matches("SIG")
        .to_owned()
}

/// `[INT TERM]`, or `~[…]` listing those missing when more than half
/// are in the set, as strace writes it.
pub(super) fn sigset(bytes: &[u8]) -> String {
    let bits = bytes.len() * 8;
    let is_set = |signal: usize| bytes[(signal - 1) / 8] & (1 << ((signal - 1) % 8)) != 0;
    let count = (1..=bits).filter(|&s| is_set(s)).count();
    let inverted = count * 2 > bits;
    let members: Vec<String> = (1..=bits)
        .filter(|&s| is_set(s) != inverted)
        .map(|s| set_member(s as u32))
        .collect();
    format!("{}[{}]", if inverted { "~" } else { "" }, members.join(" "))
}

/// `[0 1]`: the CPUs in a CPU set.
pub(super) fn cpu_set(bytes: &[u8]) -> String {
    let cpus: Vec<String> = (0..bytes.len() * 8)
        .filter(|&c| bytes[c / 8] & (1 << (c % 8)) != 0)
        .map(|c| c.to_string())
        .collect();
    format!("[{}]", cpus.join(" "))
}

fn sysinfo(f: &Fields) -> Option<String> {
    Some(format!(
        "{{uptime={}, loads=[{}, {}, {}], totalram={}, freeram={}, sharedram={}, \
         bufferram={}, totalswap={}, freeswap={}, procs={}, totalhigh={}, freehigh={}, \
         mem_unit={}}}",
        f.i64(0)?,
        f.u64(8)?,
        f.u64(16)?,
        f.u64(24)?,
        f.u64(32)?,
        f.u64(40)?,
        f.u64(48)?,
        f.u64(56)?,
        f.u64(64)?,
        f.u64(72)?,
        f.u16(80)?,
        f.u64(88)?,
        f.u64(96)?,
        f.u32(104)?
    ))
}

/// A wait status with the W… macros strace shows it in.
pub(super) fn wait_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!(
            "{{WIFEXITED(s) && WEXITSTATUS(s) == {}}}",
            libc::WEXITSTATUS(status)
        )
    } else if libc::WIFSIGNALED(status) {
        let core = if libc::WCOREDUMP(status) {
            " && WCOREDUMP(s)"
        } else {
            ""
        };
        format!(
            "{{WIFSIGNALED(s) && WTERMSIG(s) == {}{core}}}",
            signal_name(libc::WTERMSIG(status))
        )
    } else if libc::WIFSTOPPED(status) {
        format!(
            "{{WIFSTOPPED(s) && WSTOPSIG(s) == {}}}",
            signal_name(libc::WSTOPSIG(status))
        )
    } else {
        format!("{status:#x}")
    }
}

const EPOLL_EVENTS: &[(u64, &str)] = &[
    (libc::EPOLLIN as u64, "EPOLLIN"),
    (libc::EPOLLPRI as u64, "EPOLLPRI"),
    (libc::EPOLLOUT as u64, "EPOLLOUT"),
    (libc::EPOLLERR as u64, "EPOLLERR"),
    (libc::EPOLLHUP as u64, "EPOLLHUP"),
    (libc::EPOLLRDNORM as u64, "EPOLLRDNORM"),
    (libc::EPOLLRDBAND as u64, "EPOLLRDBAND"),
    (libc::EPOLLWRNORM as u64, "EPOLLWRNORM"),
    (libc::EPOLLWRBAND as u64, "EPOLLWRBAND"),
    (libc::EPOLLMSG as u64, "EPOLLMSG"),
    (libc::EPOLLRDHUP as u64, "EPOLLRDHUP"),
    (libc::EPOLLEXCLUSIVE as u64, "EPOLLEXCLUSIVE"),
    (libc::EPOLLWAKEUP as u64, "EPOLLWAKEUP"),
    (libc::EPOLLONESHOT as u64, "EPOLLONESHOT"),
    (libc::EPOLLET as u32 as u64, "EPOLLET"),
];

/// A packed `struct epoll_event` at `at`.
pub(super) fn epoll_event(f: &Fields, at: usize) -> Option<String> {
    let events = u64::from(f.u32(at)?);
    let data = f.u64(at + 4)?;
    Some(format!(
        "{{events={}, data={{u32={}, u64={data}}}}}",
        flags(events, EPOLL_EVENTS, "0"),
        data as u32
    ))
}

/// The events epoll_wait filled in.
pub(super) fn epoll_events(bytes: &[u8]) -> String {
    let f = Fields(bytes);
    let events: Vec<String> = (0..bytes.len() / 12)
        .filter_map(|i| epoll_event(&f, i * 12))
        .collect();
    format!("[{}]", events.join(", "))
}

const POLL_EVENTS: &[(u64, &str)] = &[
    (libc::POLLIN as u64, "POLLIN"),
    (libc::POLLPRI as u64, "POLLPRI"),
    (libc::POLLOUT as u64, "POLLOUT"),
    (libc::POLLERR as u64, "POLLERR"),
    (libc::POLLHUP as u64, "POLLHUP"),
    (libc::POLLNVAL as u64, "POLLNVAL"),
    (libc::POLLRDNORM as u64, "POLLRDNORM"),
    (libc::POLLRDBAND as u64, "POLLRDBAND"),
    (libc::POLLWRNORM as u64, "POLLWRNORM"),
    (libc::POLLWRBAND as u64, "POLLWRBAND"),
    (libc::POLLRDHUP as u64, "POLLRDHUP"),
];

/// A pollfd's descriptor, which may be negative (ignored by poll).
fn fd_text(value: i32) -> String {
    fd(value as u32 as u64)
}

/// `[{fd=3, events=POLLIN}]`, or with `returned` the fds with events
/// (`[{fd=3, revents=POLLIN}]`).
pub(super) fn pollfds(bytes: &[u8], returned: bool) -> String {
    let f = Fields(bytes);
    let mut shown = Vec::new();
    for i in 0..bytes.len() / 8 {
        let (Some(fd), Some(events), Some(revents)) =
            (f.i32(i * 8), f.u16(i * 8 + 4), f.u16(i * 8 + 6))
        else {
            break;
        };
        if !returned {
            let events = flags(u64::from(events), POLL_EVENTS, "0");
            shown.push(format!("{{fd={}, events={events}}}", fd_text(fd)));
        } else if revents != 0 {
            let revents = flags(u64::from(revents), POLL_EVENTS, "0");
            // strace names the descriptors once, in the request.
            shown.push(format!("{{fd={fd}, revents={revents}}}"));
        }
    }
    format!("[{}]", shown.join(", "))
}

/// `[{iov_base="…", iov_len=5}, …]` from what capture kept of each.
pub(super) fn iovecs(bytes: &[u8]) -> String {
    let mut rest = bytes;
    let mut shown = Vec::new();
    while let Some((len, after)) = rest.split_first_chunk::<8>() {
        let Some((filled, after)) = after.split_first_chunk::<8>() else {
            break;
        };
        let Some((kept, after)) = after.split_first_chunk::<4>() else {
            break;
        };
        let len = u64::from_le_bytes(*len);
        let filled = u64::from_le_bytes(*filled);
        let kept = u32::from_le_bytes(*kept) as usize;
        let Some((data, after)) = after.split_at_checked(kept) else {
            break;
        };
        shown.push(format!(
            "{{iov_base={}, iov_len={len}}}",
            quoted(data, (kept as u64) < filled)
        ));
        rest = after;
    }
    format!("[{}]", shown.join(", "))
}

/// `[0, 65534]`: an array of ids.
pub(super) fn ids(bytes: &[u8]) -> String {
    let f = Fields(bytes);
    let ids: Vec<String> = (0..bytes.len() / 4)
        .filter_map(|i| f.u32(i * 4).map(|v| v.to_string()))
        .collect();
    format!("[{}]", ids.join(", "))
}
