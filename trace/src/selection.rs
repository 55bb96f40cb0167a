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
    // strace's classes (strace(1), "-e trace=%file" and the rest), as its
    // syscall table marks them on x86_64; checked against strace's own
    // output in tests/trace.rs.
    (
        "file",
        &[
            "access",
            "acct",
            "chdir",
            "chmod",
            "chown",
            "chroot",
            "creat",
            "execve",
            "execveat",
            "faccessat",
            "faccessat2",
            "fanotify_mark",
            "fchmodat",
            "fchmodat2",
            "fchownat",
            "futimesat",
            "getcwd",
            "getxattr",
            "inotify_add_watch",
            "lchown",
            "lgetxattr",
            "link",
            "linkat",
            "listxattr",
            "llistxattr",
            "lremovexattr",
            "lsetxattr",
            "lstat",
            "mkdir",
            "mkdirat",
            "mknod",
            "mknodat",
            "mount",
            "name_to_handle_at",
            "newfstatat",
            "open",
            "openat",
            "openat2",
            "pivot_root",
            "quotactl",
            "readlink",
            "readlinkat",
            "removexattr",
            "rename",
            "renameat",
            "renameat2",
            "rmdir",
            "setxattr",
            "stat",
            "statfs",
            "statx",
            "swapoff",
            "swapon",
            "symlink",
            "symlinkat",
            "truncate",
            "umount2",
            "unlink",
            "unlinkat",
            "uselib",
            "utime",
            "utimensat",
            "utimes",
        ],
    ),
    (
        "desc",
        &[
            "read",
            "write",
            "open",
            "close",
            "fstat",
            "newfstatat",
            "poll",
            "lseek",
            "mmap",
            "ioctl",
            "pread64",
            "pwrite64",
            "readv",
            "writev",
            "pipe",
            "select",
            "dup",
            "dup2",
            "sendfile",
            "fcntl",
            "flock",
            "fsync",
            "fdatasync",
            "ftruncate",
            "getdents",
            "getdents64",
            "fchdir",
            "fchmod",
            "fchown",
            "fstatfs",
            "readahead",
            "fsetxattr",
            "fgetxattr",
            "flistxattr",
            "fremovexattr",
            "epoll_create",
            "epoll_create1",
            "epoll_ctl",
            "epoll_wait",
            "epoll_pwait",
            "epoll_pwait2",
            "fadvise64",
            "openat",
            "mkdirat",
            "mknodat",
            "fchownat",
            "futimesat",
            "unlinkat",
            "renameat",
            "linkat",
            "symlinkat",
            "readlinkat",
            "fchmodat",
            "faccessat",
            "faccessat2",
            "fchmodat2",
            "pselect6",
            "ppoll",
            "splice",
            "tee",
            "sync_file_range",
            "vmsplice",
            "utimensat",
            "signalfd",
            "signalfd4",
            "timerfd_create",
            "timerfd_settime",
            "timerfd_gettime",
            "eventfd",
            "eventfd2",
            "fallocate",
            "dup3",
            "pipe2",
            "inotify_init",
            "inotify_init1",
            "inotify_add_watch",
            "inotify_rm_watch",
            "preadv",
            "pwritev",
            "preadv2",
            "pwritev2",
            "perf_event_open",
            "fanotify_init",
            "fanotify_mark",
            "name_to_handle_at",
            "open_by_handle_at",
            "syncfs",
            "setns",
            "finit_module",
            "renameat2",
            "memfd_create",
            "bpf",
            "execveat",
            "userfaultfd",
            "copy_file_range",
            "statx",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "open_tree",
            "move_mount",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "pidfd_open",
            "pidfd_getfd",
            "openat2",
            "close_range",
            "epoll_pwait2",
            "mount_setattr",
            "pidfd_send_signal",
            "process_madvise",
            "landlock_create_ruleset",
            "landlock_add_rule",
            "landlock_restrict_self",
            "memfd_secret",
            "creat",
        ],
    ),
    (
        "memory",
        &[
            "mmap",
            "mprotect",
            "munmap",
            "brk",
            "mremap",
            "msync",
            "mincore",
            "madvise",
            "shmat",
            "shmdt",
            "mlock",
            "munlock",
            "mlockall",
            "munlockall",
            "io_setup",
            "io_destroy",
            "remap_file_pages",
            "mbind",
            "set_mempolicy",
            "get_mempolicy",
            "migrate_pages",
            "move_pages",
            "mlock2",
            "pkey_mprotect",
            "process_madvise",
            "set_mempolicy_home_node",
            "map_shadow_stack",
            "mseal",
            "io_uring_register",
        ],
    ),
    (
        "signal",
        &[
            "rt_sigaction",
            "rt_sigprocmask",
            "rt_sigreturn",
            "pause",
            "kill",
            "rt_sigpending",
            "rt_sigtimedwait",
            "rt_sigqueueinfo",
            "rt_sigsuspend",
            "sigaltstack",
            "tkill",
            "tgkill",
            "rt_tgsigqueueinfo",
            "signalfd",
            "signalfd4",
            "pidfd_send_signal",
            "io_uring_enter",
            "epoll_pwait",
            "epoll_pwait2",
            "ppoll",
            "pselect6",
        ],
    ),
    (
        "ipc",
        &[
            "shmget",
            "shmat",
            "shmctl",
            "semget",
            "semop",
            "semctl",
            "shmdt",
            "msgget",
            "msgsnd",
            "msgrcv",
            "msgctl",
            "semtimedop",
            "mq_open",
            "mq_unlink",
            "mq_timedsend",
            "mq_timedreceive",
            "mq_notify",
            "mq_getsetattr",
        ],
    ),
    (
        "creds",
        &[
            "getuid",
            "getgid",
            "setuid",
            "setgid",
            "geteuid",
            "getegid",
            "setreuid",
            "setregid",
            "getgroups",
            "setgroups",
            "setresuid",
            "getresuid",
            "setresgid",
            "getresgid",
            "setfsuid",
            "setfsgid",
            "capget",
            "capset",
            "prctl",
        ],
    ),
    (
        "clock",
        &[
            "gettimeofday",
            "settimeofday",
            "adjtimex",
            "time",
            "clock_settime",
            "clock_gettime",
            "clock_getres",
            "clock_adjtime",
        ],
    ),
];

/// Other names strace accepts for a class.
const CLASS_ALIASES: &[(&str, &str)] = &[("net", "network")];

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

/// One `trace=` set as strace reads it: names, `%class`es, `/regex`es
/// (matched against names), `all`, `none`, `?` before an item to let it match
/// nothing on this architecture, and `!` before the whole set for every
/// syscall but those.
fn parse_set(set: &str) -> Result<BTreeSet<Sysno>, SelectionError> {
    let (negated, set) = match set.trim().strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, set),
    };
    let mut chosen = BTreeSet::new();
    if set.split(',').all(|item| item.trim().is_empty()) {
        return Err(SelectionError(
            "an empty syscall set (trace=none traces none)".into(),
        ));
    }
    for item in set.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (optional, item) = match item.strip_prefix('?') {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        if item == "none" {
            continue; // no syscall: signals and exits only
        }
        let found = parse_item(item)?;
        if found.is_empty() && !optional {
            return Err(SelectionError(match item.strip_prefix('/') {
                Some(regex) => format!("/{regex} matches no syscall"),
                None => format!("unknown syscall {item:?}"),
            }));
        }
        chosen.extend(found);
    }
    if negated {
        chosen = Sysno::iter().filter(|s| !chosen.contains(s)).collect();
    }
    Ok(chosen)
}

/// The syscalls one item of a set names (none: an unknown name).
fn parse_item(item: &str) -> Result<BTreeSet<Sysno>, SelectionError> {
    if item == "all" {
        return Ok(Sysno::iter().collect());
    }
    if let Some(pattern) = item.strip_prefix('/') {
        let regex =
            regex::Regex::new(pattern).map_err(|e| SelectionError(format!("/{pattern}: {e}")))?;
        return Ok(Sysno::iter().filter(|s| regex.is_match(s.name())).collect());
    }
    if let Some(class) = item.strip_prefix('%') {
        let class = CLASS_ALIASES
            .iter()
            .find(|(alias, _)| *alias == class)
            .map_or(class, |(_, name)| name);
        let (_, names) = CLASSES
            .iter()
            .find(|(name, _)| *name == class)
            .ok_or_else(|| {
                let known: Vec<_> = CLASSES.iter().map(|(n, _)| format!("%{n}")).collect();
                SelectionError(format!(
                    "unknown class %{class} (known: {})",
                    known.join(", ")
                ))
            })?;
        // A class may name syscalls this architecture lacks.
        return Ok(names
            .iter()
            .filter_map(|n| Sysno::from_str(n).ok())
            .collect());
    }
    Ok(Sysno::from_str(item).into_iter().collect())
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
            syscalls.extend(parse_set(set)?);
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
        // Empty, as `trace=none` or `!all` ask: signals and exits only,
        // as strace gives them.
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
        assert_eq!(Selection::parse(&["none"]).unwrap().syscalls().count(), 0);
        assert!(Selection::parse(&["!none"]).unwrap().syscalls().count() > 300);
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
    fn negation_regexes_optional_names_and_straces_classes() {
        let all = Sysno::iter().count();
        let s = Selection::parse(&["trace=!futex,read"]).unwrap();
        assert_eq!(s.syscalls().count(), all - 2);
        assert!(!s.syscalls().any(|x| x == Sysno::futex || x == Sysno::read));
        let s = Selection::parse(&["trace=/^epoll_p"]).unwrap();
        let names: Vec<_> = s.syscalls().map(|x| x.name()).collect();
        assert_eq!(names, ["epoll_pwait", "epoll_pwait2"]);
        let s = Selection::parse(&["trace=?no_such_call,futex"]).unwrap();
        assert_eq!(s.syscalls().count(), 1);
        let err = Selection::parse(&["trace=/^zzz"]).unwrap_err().to_string();
        assert!(err.contains("/^zzz matches no syscall"), "{err}");
        assert!(Selection::parse(&["trace=/("]).is_err());
        for class in [
            "%file", "%desc", "%memory", "%signal", "%ipc", "%net", "%creds", "%clock",
        ] {
            let s = Selection::parse(&[class]).unwrap();
            assert!(s.syscalls().count() >= 8, "{class}");
        }
        let file = Selection::parse(&["%file"]).unwrap();
        assert!(file.syscalls().any(|x| x == Sysno::openat));
        assert!(!file.syscalls().any(|x| x == Sysno::read));
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
