//! Processes and threads: clone flags and clone_args, signals, execve's
//! path, arguments and environment.

use std::fmt::Write;

use super::text::{flags, hex, quoted};

pub(super) const CLONE_FLAGS: &[(u64, &str)] = &[
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

/// clone's arguments known at entry: the stack and the flags, then those
/// the flags use (strace omits the others), except a parent tid, which
/// is known at exit.
pub(super) fn clone_entry(a: &[u64; 6]) -> String {
    let mut text = format!("child_stack={}, flags={}", hex(a[1]), clone_flags(a[0]));
    if a[0] & libc::CLONE_PARENT_SETTID as u64 != 0 {
        text.push_str(", ");
    } else {
        text.push_str(&clone_rest(a));
    }
    text
}

/// clone's arguments known at exit: the tid written to the parent's
/// memory (the new thread's, which the call returns), then the rest.
pub(super) fn clone_exit(a: &[u64; 6], ret: i64) -> String {
    if a[0] & libc::CLONE_PARENT_SETTID as u64 == 0 {
        return String::new();
    }
    let parent_tid = if ret > 0 {
        format!("[{ret}]")
    } else {
        hex(a[2])
    };
    format!("parent_tid={parent_tid}{}", clone_rest(a))
}

/// `, tls=…, child_tidptr=…` as the flags use them (x86_64 order).
fn clone_rest(a: &[u64; 6]) -> String {
    let mut text = String::new();
    if a[0] & libc::CLONE_SETTLS as u64 != 0 {
        let _ = write!(text, ", tls={}", hex(a[4]));
    }
    if a[0] & (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64 != 0 {
        let _ = write!(text, ", child_tidptr={}", hex(a[3]));
    }
    text
}

/// The `struct clone_args` of clone3, from captured bytes, with the
/// fields its flags use, as strace shows it.
pub(super) fn clone_args(bytes: &[u8], pointer: u64) -> String {
    let fields = super::structs::Fields(bytes);
    let field = |i: usize| fields.u64(i * 8);
    let (Some(flags), Some(exit_signal), Some(stack), Some(stack_size)) =
        (field(0), field(4), field(5), field(6))
    else {
        return hex(pointer);
    };
    let uses = |bits: i32| flags & bits as u64 != 0;
    let mut text = format!("{{flags={}", flags_or_zero(flags));
    if uses(libc::CLONE_PIDFD) {
        let _ = write!(text, ", pidfd={}", hex(field(1).unwrap_or(0)));
    }
    if uses(libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) {
        let _ = write!(text, ", child_tid={}", hex(field(2).unwrap_or(0)));
    }
    if uses(libc::CLONE_PARENT_SETTID) {
        let _ = write!(text, ", parent_tid={}", hex(field(3).unwrap_or(0)));
    }
    let _ = write!(
        text,
        ", exit_signal={}, stack={}, stack_size={stack_size:#x}",
        signal_or_zero(exit_signal),
        hex(stack)
    );
    if uses(libc::CLONE_SETTLS) {
        let _ = write!(text, ", tls={}", hex(field(7).unwrap_or(0)));
    }
    text.push('}');
    text
}

/// The end of clone3's line: what the kernel wrote back (the new tid in
/// the parent's memory, which is what the call returns), then the size.
/// `flags` is clone_args' first field, read again at exit (absent in
/// older traces).
pub(super) fn clone3_exit(flags: &[u8], size: u64, ret: i64) -> String {
    let flags = <[u8; 8]>::try_from(flags).map_or(0, u64::from_ne_bytes);
    if flags & libc::CLONE_PARENT_SETTID as u64 != 0 && ret > 0 {
        format!(" => {{parent_tid=[{ret}]}}, {size}")
    } else {
        format!(", {size}")
    }
}

pub(super) fn flags_or_zero(flags: u64) -> String {
    if flags == 0 {
        "0".to_owned()
    } else {
        flags_clone_only(flags)
    }
}

pub(super) fn flags_clone_only(value: u64) -> String {
    flags(value, CLONE_FLAGS, "0")
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

/// A signal argument: its name, or 0 (a probe for existence).
pub(super) fn signal_or_zero(value: u64) -> String {
    match value as i32 {
        0 => "0".to_owned(),
        signal => signal_name(signal),
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

/// A siginfo_t as strace shows it after the signal's name:
/// `{si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=42, …}`; `None` for
/// bytes too short to be one.
pub fn siginfo(bytes: &[u8]) -> Option<String> {
    let f = super::structs::Fields(bytes);
    let (signal, errno, code) = (f.i32(0)?, f.i32(4)?, f.i32(8)?);
    let mut text = format!("{{si_signo={}", signal_name(signal));
    if errno != 0 {
        let _ = write!(text, ", si_errno={errno}");
    }
    let _ = write!(text, ", si_code={}", signal_code(signal, code));
    let fault = matches!(
        signal,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP
    );
    let sender = format!(", si_pid={}, si_uid={}", f.i32(16)?, f.u32(20)?);
    match code {
        // Sent by a process (kill, tkill, sigqueue): who.
        libc::SI_USER | libc::SI_TKILL => text.push_str(&sender),
        libc::SI_QUEUE | libc::SI_MESGQ => {
            let value = f.u64(24)?;
            let _ = write!(
                text,
                "{sender}, si_int={}, si_ptr={}",
                value as i32,
                hex(value)
            );
        }
        _ if code > 0 && signal == libc::SIGCHLD => {
            let status = f.i32(24)?;
            let status = if code == libc::CLD_EXITED {
                status.to_string()
            } else {
                signal_name(status)
            };
            let _ = write!(
                text,
                "{sender}, si_status={status}, si_utime={}, si_stime={}",
                clock_ticks(f.i64(32)?),
                clock_ticks(f.i64(40)?)
            );
        }
        _ if fault && (code > 0 || code == libc::SI_KERNEL) => {
            let _ = write!(text, ", si_addr={}", hex(f.u64(16)?));
        }
        _ if code > 0 && (signal == libc::SIGIO) => {
            let _ = write!(text, ", si_band={}, si_fd={}", f.i64(16)?, f.i32(24)?);
        }
        _ => {}
    }
    text.push('}');
    Some(text)
}

/// CPU time in clock ticks (100 a second on Linux), with strace's
/// seconds beside a value that is not 0.
fn clock_ticks(ticks: i64) -> String {
    match ticks {
        0 => "0".to_owned(),
        ticks => format!("{ticks} /* {:.2} s */", ticks as f64 / 100.0),
    }
}

/// si_code's name: the generic ones, then those of the signal.
fn signal_code(signal: i32, code: i32) -> String {
    let generic = match code {
        libc::SI_USER => Some("SI_USER"),
        libc::SI_KERNEL => Some("SI_KERNEL"),
        libc::SI_QUEUE => Some("SI_QUEUE"),
        libc::SI_TIMER => Some("SI_TIMER"),
        libc::SI_MESGQ => Some("SI_MESGQ"),
        libc::SI_ASYNCIO => Some("SI_ASYNCIO"),
        libc::SI_SIGIO => Some("SI_SIGIO"),
        libc::SI_TKILL => Some("SI_TKILL"),
        _ => None,
    };
    let specific: &[&str] = match signal {
        libc::SIGCHLD => &[
            "CLD_EXITED",
            "CLD_KILLED",
            "CLD_DUMPED",
            "CLD_TRAPPED",
            "CLD_STOPPED",
            "CLD_CONTINUED",
        ],
        libc::SIGSEGV => &["SEGV_MAPERR", "SEGV_ACCERR", "SEGV_BNDERR", "SEGV_PKUERR"],
        libc::SIGBUS => &["BUS_ADRALN", "BUS_ADRERR", "BUS_OBJERR"],
        libc::SIGILL => &[
            "ILL_ILLOPC",
            "ILL_ILLOPN",
            "ILL_ILLADR",
            "ILL_ILLTRP",
            "ILL_PRVOPC",
            "ILL_PRVREG",
            "ILL_COPROC",
            "ILL_BADSTK",
        ],
        libc::SIGFPE => &[
            "FPE_INTDIV",
            "FPE_INTOVF",
            "FPE_FLTDIV",
            "FPE_FLTOVF",
            "FPE_FLTUND",
            "FPE_FLTRES",
            "FPE_FLTINV",
            "FPE_FLTSUB",
        ],
        libc::SIGTRAP => &["TRAP_BRKPT", "TRAP_TRACE"],
        libc::SIGIO => &[
            "POLL_IN", "POLL_OUT", "POLL_MSG", "POLL_ERR", "POLL_PRI", "POLL_HUP",
        ],
        _ => &[],
    };
    match (generic, usize::try_from(code)) {
        (Some(name), _) => name.to_owned(),
        (None, Ok(n)) if (1..=specific.len()).contains(&n) => specific[n - 1].to_owned(),
        _ => code.to_string(),
    }
}
