//! What the kernel says about the traced server: CPU time and context
//! switches from `getrusage(RUSAGE_CHILDREN)`, peak memory from
//! `/proc/PID/status`, and which port a process listens on from
//! `/proc/PID/fd` and `/proc/net/tcp`; /proc is read through the procfs
//! crate, which parses all three.

use std::time::Duration;

use procfs::net::{TcpNetEntry, TcpState};
use procfs::process::{FDTarget, Process};

/// CPU time and context switches of this process's waited-for children
/// and their waited-for descendants, as `getrusage(RUSAGE_CHILDREN)`
/// counts them; [`ChildrenUsage::since`] turns two readings into what one
/// server used.
///
/// Why this and not /proc: the traced server is our child (the tracer
/// forks it), and once it is reaped the kernel has added to our
/// children's totals everything it ever used: every thread, also those
/// that exited long before (their times are folded into the process when
/// they exit, and vanish from /proc/PID/task), and every child process it
/// reaped itself (fork mode's per-connection children, whose /proc
/// entries are gone by the time we could look). A /proc sample taken
/// before stopping sees only the threads still alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChildrenUsage {
    /// User-mode CPU time.
    pub user: Duration,
    /// Kernel-mode CPU time.
    pub system: Duration,
    /// Voluntary context switches (the task slept: a blocking syscall, a
    /// futex wait, a sleep, and every ptrace stop).
    pub voluntary_switches: u64,
    /// Involuntary context switches (preempted while runnable).
    pub involuntary_switches: u64,
}

impl ChildrenUsage {
    /// The totals now.
    pub fn now() -> ChildrenUsage {
        // SAFETY: getrusage writes one struct rusage into memory we own;
        // all zeroes is a valid value of it.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            if libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) != 0 {
                // Only EFAULT/EINVAL are possible, neither with these
                // arguments; zeroes make the difference 0, not garbage.
                return ChildrenUsage::default();
            }
            usage
        };
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        ChildrenUsage {
            user: time(usage.ru_utime),
            system: time(usage.ru_stime),
            voluntary_switches: usage.ru_nvcsw.max(0) as u64,
            involuntary_switches: usage.ru_nivcsw.max(0) as u64,
        }
    }

    /// What was added between `earlier` and `self`.
    pub fn since(&self, earlier: &ChildrenUsage) -> ChildrenUsage {
        ChildrenUsage {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            voluntary_switches: self
                .voluntary_switches
                .saturating_sub(earlier.voluntary_switches),
            involuntary_switches: self
                .involuntary_switches
                .saturating_sub(earlier.involuntary_switches),
        }
    }

    /// User + system time.
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }

    /// Voluntary + involuntary switches.
    pub fn context_switches(&self) -> u64 {
        self.voluntary_switches + self.involuntary_switches
    }
}

/// The peak resident set of process `pid` (VmHWM), KiB.
pub fn peak_rss_kib(pid: i32) -> Option<u64> {
    Process::new(pid).ok()?.status().ok()?.vmhwm
}

/// The TCP port process `pid` listens on, if it does: its socket
/// descriptors' inodes (from /proc/PID/fd) matched against the listening
/// sockets of /proc/net/tcp{,6}. Asking the process itself, not the port,
/// means another program's listener can never pass for our server's.
pub fn listening_port_of(pid: i32) -> Option<u16> {
    let inodes: Vec<u64> = Process::new(pid)
        .ok()?
        .fd()
        .ok()?
        .flatten()
        .filter_map(|fd| match fd.target {
            FDTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect();
    let tables: [fn() -> procfs::ProcResult<Vec<TcpNetEntry>>; 2] =
        [procfs::net::tcp, procfs::net::tcp6];
    tables.iter().find_map(|table| {
        table()
            .ok()?
            .into_iter()
            .find(|entry| entry.state == TcpState::Listen && inodes.contains(&entry.inode))
            .map(|entry| entry.local_address.port())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_status_has_a_peak() {
        let pid = std::process::id() as i32;
        assert!(peak_rss_kib(pid).is_some_and(|kib| kib > 0));
    }

    #[test]
    fn usage_differences_never_underflow() {
        let later = ChildrenUsage {
            user: Duration::from_millis(30),
            system: Duration::from_millis(20),
            voluntary_switches: 10,
            involuntary_switches: 2,
        };
        let earlier = ChildrenUsage {
            user: Duration::from_millis(10),
            ..Default::default()
        };
        let used = later.since(&earlier);
        assert_eq!(used.cpu(), Duration::from_millis(40));
        assert_eq!(used.context_switches(), 12);
        assert_eq!(earlier.since(&later), ChildrenUsage::default());
    }

    #[test]
    fn finds_the_port_a_process_listens_on_by_its_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(listening_port_of(std::process::id() as i32), Some(port));
        drop(listener);
        assert_eq!(listening_port_of(std::process::id() as i32), None);
    }
}
