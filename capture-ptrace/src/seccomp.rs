//! The seccomp fast path: a BPF filter, installed in the child before exec,
//! that returns `SECCOMP_RET_TRACE` for the selected syscalls and
//! `SECCOMP_RET_ALLOW` for the rest. With `PTRACE_O_TRACESECCOMP` only the
//! selected syscalls stop the tracee; everything else runs at full speed.
//!
//! The filter can test arguments too: with `futex=wait` it traps only the
//! futex operations that sleep, so the FUTEX_WAKE of every hand-off runs
//! free.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use syscalls::Sysno;

use tracebench_trace::syscall::FUTEX_WAIT_OPS;
use tracebench_trace::{CaptureError, Selection};

fn seccomp_error(error: impl std::fmt::Display) -> CaptureError {
    CaptureError::BadArgument(format!("seccomp filter: {error}"))
}

/// Compiles `selection` into a BPF program for seccomp(2).
///
/// A syscall made under another architecture's calling convention (int
/// 0x80 from a 64-bit program) fails the filter's architecture check and
/// kills the process, as with every seccompiler filter.
pub fn filter(selection: &Selection) -> Result<BpfProgram, CaptureError> {
    let arch = if cfg!(target_arch = "x86_64") {
        TargetArch::x86_64
    } else if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        return Err(CaptureError::BadArgument(
            "seccomp filter: no seccomp filter for this architecture".into(),
        ));
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for sysno in selection.syscalls() {
        let syscall_rules = if sysno == Sysno::futex && selection.futex_wait_only() {
            FUTEX_WAIT_OPS
                .iter()
                .map(|&op| {
                    let condition = SeccompCondition::new(
                        1,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::MaskedEq(libc::FUTEX_CMD_MASK as u64),
                        op as u64,
                    )
                    .map_err(seccomp_error)?;
                    SeccompRule::new(vec![condition]).map_err(seccomp_error)
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            // No rule: the syscall matches whatever its arguments.
            Vec::new()
        };
        rules.insert(sysno.id() as i64, syscall_rules);
    }
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Trace(0), arch)
        .map_err(seccomp_error)?;
    BpfProgram::try_from(filter).map_err(seccomp_error)
}

/// Installs `program` on the calling thread (and its future children).
/// Called in the forked child between fork and exec, so it only makes
/// system calls: no allocation, no locks.
pub(crate) fn install(program: &BpfProgram) -> Result<(), i32> {
    let fprog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl and seccomp take plain integers and a pointer to a
    // sock_fprog that lives on our stack and points into `program`.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(*libc::__errno_location());
        }
        if libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        ) != 0
        {
            return Err(*libc::__errno_location());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_sets_and_argument_filters() {
        let plain = filter(&Selection::default()).unwrap();
        let waits = filter(&Selection::parse(&["trace=futex", "futex=wait"]).unwrap()).unwrap();
        assert!(!plain.is_empty());
        // The argument tests make the program longer than a bare match.
        let bare = filter(&Selection::parse(&["trace=futex"]).unwrap()).unwrap();
        assert!(waits.len() > bare.len());
    }
}
