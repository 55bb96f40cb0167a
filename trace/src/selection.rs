//! Which syscalls to record: `-e trace=SET` as strace spells it, plus
//! argument filters that strace does not have (`futex=wait`).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use syscalls::Sysno;

use crate::syscall::is_futex_wait;

/// `-e` named something that is not a syscall or class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad syscall selection: {0}")]
pub struct SelectionError(pub String);

/// The syscalls a tracer records by default: enough to tell, at any
/// moment, what each thread of a server is doing (creating threads,
/// waiting on a futex, accepting, sleeping, waiting for a signal or a
/// child, doing I/O), whatever calls the server's runtime prefers: nginx
/// and node answer with writev, the JVM and python read with recvmsg or
/// read, event loops wait in epoll_pwait, ppoll or io_uring_enter.
pub const DEFAULT_SET: &[&str] = &[
    "clone",
    "clone3",
    "fork",
    "vfork",
    "execve",
    "exit",
    "exit_group",
    "futex",
    "accept",
    "accept4",
    "read",
    "readv",
    "write",
    "writev",
    "recvfrom",
    "recvmsg",
    "sendto",
    "sendmsg",
    "sendfile",
    "close",
    "nanosleep",
    "clock_nanosleep",
    "rt_sigsuspend",
    "pause",
    "wait4",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "io_uring_enter",
];

/// The classes `%NAME` stands for.
pub const CLASSES: &[(&str, &[&str])] = &[
    (
        "process",
        &[
            "clone",
            "clone3",
            "fork",
            "vfork",
            "execve",
            "execveat",
            "exit",
            "exit_group",
            "wait4",
            "waitid",
            "kill",
            "tkill",
            "tgkill",
        ],
    ),
    (
        "network",
        &[
            "socket",
            "socketpair",
            "bind",
            "listen",
            "accept",
            "accept4",
            "connect",
            "getsockname",
            "getpeername",
            "setsockopt",
            "getsockopt",
            "sendto",
            "recvfrom",
            "sendmsg",
            "recvmsg",
            "sendmmsg",
            "recvmmsg",
            "shutdown",
        ],
    ),
    (
        "futex",
        &["futex", "futex_waitv", "set_robust_list", "get_robust_list"],
    ),
    (
        "io",
        &[
            "read",
            "write",
            "readv",
            "writev",
            "pread64",
            "pwrite64",
            "sendfile",
            "splice",
            "close",
            "poll",
            "ppoll",
            "select",
            "pselect6",
            "epoll_wait",
            "epoll_pwait",
            "epoll_pwait2",
            "epoll_ctl",
        ],
    ),
    ("sleep", &["nanosleep", "clock_nanosleep"]),
];

/// A set of syscalls to record, with optional argument filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    syscalls: BTreeSet<Sysno>,
    futex_wait_only: bool,
}

impl Default for Selection {
    fn default() -> Self {
        let syscalls = DEFAULT_SET
            .iter()
            .map(|name| Sysno::from_str(name).expect("the default set names real syscalls"))
            .collect();
        Selection {
            syscalls,
            futex_wait_only: false,
        }
    }
}

impl Selection {
    /// Every syscall of this architecture.
    pub fn all() -> Self {
        Selection {
            syscalls: Sysno::iter().collect(),
            futex_wait_only: false,
        }
    }

    /// Parses one or more `-e` expressions: `trace=SET` (or just `SET`),
    /// where SET is a comma list of syscall names, `%CLASS`es and `all`;
    /// and `futex=wait` (record only the FUTEX_WAIT family of futex
    /// calls). Later expressions add to earlier ones; without any `trace=`
    /// the default set is used.
    pub fn parse<S: AsRef<str>>(expressions: &[S]) -> Result<Selection, SelectionError> {
        let mut syscalls = BTreeSet::new();
        let mut explicit = false;
        let mut futex_wait_only = false;
        for expression in expressions {
            let expression = expression.as_ref().trim();
            if let Some(filter) = expression.strip_prefix("futex=") {
                if filter != "wait" {
                    return Err(SelectionError(format!(
                        "futex={filter}: only futex=wait is supported"
                    )));
                }
                futex_wait_only = true;
                continue;
            }
            let set = expression.strip_prefix("trace=").unwrap_or(expression);
            explicit = true;
            for item in set.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if item == "all" {
                    syscalls.extend(Sysno::iter());
                } else if let Some(class) = item.strip_prefix('%') {
                    let (_, names) =
                        CLASSES
                            .iter()
                            .find(|(name, _)| *name == class)
                            .ok_or_else(|| {
                                let known: Vec<_> =
                                    CLASSES.iter().map(|(n, _)| format!("%{n}")).collect();
                                SelectionError(format!(
                                    "unknown class %{class} (known: {})",
                                    known.join(", ")
                                ))
                            })?;
                    // A class may name syscalls this architecture lacks.
                    syscalls.extend(names.iter().filter_map(|n| Sysno::from_str(n).ok()));
                } else {
                    let sysno = Sysno::from_str(item)
                        .map_err(|()| SelectionError(format!("unknown syscall {item:?}")))?;
                    syscalls.insert(sysno);
                }
            }
        }
        let mut selection = if explicit {
            Selection {
                syscalls,
                futex_wait_only: false,
            }
        } else {
            Selection::default()
        };
        if futex_wait_only {
            selection.syscalls.insert(Sysno::futex);
            selection.futex_wait_only = true;
        }
        if selection.syscalls.is_empty() {
            return Err(SelectionError("the syscall set is empty".into()));
        }
        Ok(selection)
    }

    /// Whether syscall `nr` with `args` is to be recorded.
    pub fn matches(&self, nr: u64, args: &[u64; 6]) -> bool {
        let Some(sysno) = Sysno::new(nr as usize) else {
            return false;
        };
        if !self.syscalls.contains(&sysno) {
            return false;
        }
        if sysno == Sysno::futex && self.futex_wait_only {
            return is_futex_wait(args[1]);
        }
        true
    }

    /// The syscalls in the set.
    pub fn syscalls(&self) -> impl Iterator<Item = Sysno> + '_ {
        self.syscalls.iter().copied()
    }

    /// Whether only the FUTEX_WAIT family of futex calls is recorded.
    pub fn futex_wait_only(&self) -> bool {
        self.futex_wait_only
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.syscalls.iter().map(|s| s.name()).collect();
        write!(f, "trace={}", names.join(","))?;
        if self.futex_wait_only {
            write!(f, " futex=wait")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_covers_a_servers_states() {
        let selection = Selection::parse::<&str>(&[]).unwrap();
        for name in [
            "clone3",
            "futex",
            "accept4",
            "nanosleep",
            "exit",
            // Real servers' answers and waits (issue 16).
            "writev",
            "sendmsg",
            "sendfile",
            "recvmsg",
            "readv",
            "epoll_pwait",
            "epoll_pwait2",
            "ppoll",
            "pselect6",
            "io_uring_enter",
            "rt_sigsuspend",
        ] {
            assert!(selection.syscalls().any(|s| s.name() == name), "{name}");
        }
        assert!(!selection.syscalls().any(|s| s.name() == "mmap"));
    }

    #[test]
    fn names_classes_and_all() {
        let s = Selection::parse(&["trace=futex,%network"]).unwrap();
        assert!(s.syscalls().any(|x| x == Sysno::accept4));
        assert!(s.syscalls().any(|x| x == Sysno::futex));
        assert!(!s.syscalls().any(|x| x == Sysno::read));
        let s = Selection::parse(&["clone3", "trace=write"]).unwrap();
        assert_eq!(s.syscalls().count(), 2);
        assert!(Selection::parse(&["all"]).unwrap().syscalls().count() > 300);
    }

    #[test]
    fn bad_names_are_one_line_errors() {
        let err = Selection::parse(&["trace=futex,frobnicate"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown syscall \"frobnicate\""), "{err}");
        let err = Selection::parse(&["%nope"]).unwrap_err().to_string();
        assert!(err.contains("unknown class %nope"), "{err}");
        assert!(Selection::parse(&["futex=wake"]).is_err());
        assert!(Selection::parse(&["trace="]).is_err());
    }

    #[test]
    fn futex_wait_filters_by_operation() {
        let s = Selection::parse(&["trace=accept4", "futex=wait"]).unwrap();
        let futex = Sysno::futex.id() as u64;
        let op = |op: i32| [0, (op | libc::FUTEX_PRIVATE_FLAG) as u64, 0, 0, 0, 0];
        assert!(s.matches(futex, &op(libc::FUTEX_WAIT)));
        assert!(s.matches(
            futex,
            &op(libc::FUTEX_WAIT_BITSET | libc::FUTEX_CLOCK_REALTIME)
        ));
        assert!(!s.matches(futex, &op(libc::FUTEX_WAKE)));
        assert!(s.matches(Sysno::accept4.id() as u64, &[0; 6]));
        assert!(!s.matches(Sysno::read.id() as u64, &[0; 6]));
    }
}
