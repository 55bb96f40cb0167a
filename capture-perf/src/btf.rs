//! What the kernel's own type information (BTF, `/sys/kernel/btf/vmlinux`)
//! tells the raw-tracepoint programs: where a `task_struct` keeps its
//! thread id. Raw tracepoints hand a program the tracepoint's arguments
//! (pointers to tasks) rather than a formatted record, so the program
//! reads the id itself, at the offset this kernel was built with.

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;

use btf_rs::{Backend, Btf, Type};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// The kernel's BTF, mapped rather than parsed whole (~200 ms for the
/// whole of it; a lookup of one struct takes about a millisecond).
fn vmlinux() -> io::Result<Btf> {
    let mapped = |file: &str| Btf::from_file_with_backend(file, Backend::Mmap);
    if let Ok(btf) = mapped(VMLINUX) {
        return Ok(btf);
    }
    // Kernels before 6.15 cannot map the sysfs file: a copy in memory.
    let bytes = std::fs::read(VMLINUX)?;
    // SAFETY: memfd_create takes a NUL-terminated name and flags.
    let fd = unsafe { libc::memfd_create(c"tracebench-btf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create just returned this descriptor, ours alone.
    let mut copy = unsafe { File::from_raw_fd(fd) };
    io::Write::write_all(&mut copy, &bytes)?;
    let path = format!("/proc/self/fd/{fd}");
    mapped(&path).map_err(|error| io::Error::other(error.to_string()))
}

/// What the raw-tracepoint programs need to know of this kernel.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// The byte offset of `task_struct`'s `pid` (the thread id).
    pub task_pid_at: u32,
}

/// This kernel's layout, or why it could not be read.
pub fn layout() -> Result<Layout, String> {
    let btf = vmlinux().map_err(|error| format!("reading {VMLINUX}: {error}"))?;
    Ok(Layout {
        task_pid_at: task_pid_offset(&btf)?,
    })
}

/// The byte offset of `task_struct`'s `pid` (the thread id), or why it
/// could not be found.
fn task_pid_offset(btf: &Btf) -> Result<u32, String> {
    let types = btf
        .resolve_types_by_name("task_struct")
        .map_err(|error| format!("{VMLINUX} has no task_struct: {error}"))?;
    for ty in types {
        let Type::Struct(task) = ty else { continue };
        for member in &task.members {
            if btf.resolve_name(member).is_ok_and(|name| name == "pid")
                && member.bitfield_size().unwrap_or(0) == 0
            {
                return Ok(member.bit_offset() / 8);
            }
        }
    }
    Err(format!("{VMLINUX}: task_struct has no pid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found, and plausible (whether it is right, the integration tests
    /// tell: every wake-up names the thread woken).
    #[test]
    fn finds_the_thread_id_in_task_struct() {
        let at = layout().expect("this kernel has BTF").task_pid_at;
        assert!(at > 0 && at < 16 * 1024 && at % 4 == 0, "{at}");
    }
}
