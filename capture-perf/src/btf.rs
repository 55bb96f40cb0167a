//! What the kernel's own type information (BTF, `/sys/kernel/btf/vmlinux`)
//! tells the raw-tracepoint programs: where a `task_struct` keeps its
//! thread id. Raw tracepoints hand a program the tracepoint's arguments
//! (pointers to tasks) rather than a formatted record, so the program
//! reads the id itself, at the offset this kernel was built with.
//!
//! `TRACEBENCH_BTF` names another file to read instead (as
//! `BPFTRACE_BTF` does for bpftrace): a kernel's BTF shipped apart from
//! it, or none at all to trace without raw tracepoints.

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

use btf_rs::{Backend, Btf, Struct, Type};

/// Where the running kernel publishes its BTF.
const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// The BTF file to read: `TRACEBENCH_BTF`, else the kernel's own.
fn vmlinux_path() -> PathBuf {
    std::env::var_os("TRACEBENCH_BTF").map_or_else(|| PathBuf::from(VMLINUX), PathBuf::from)
}

/// The kernel's BTF at `path`, mapped rather than parsed whole (~200 ms
/// for the whole of it; a lookup of one struct takes about a millisecond).
fn vmlinux(path: &std::path::Path) -> io::Result<Btf> {
    let mapped = |file: &std::path::Path| Btf::from_file_with_backend(file, Backend::Mmap);
    if let Ok(btf) = mapped(path) {
        return Ok(btf);
    }
    // Older kernels cannot map the sysfs file: a copy in memory.
    let bytes = std::fs::read(path)?;
    // SAFETY: memfd_create takes a NUL-terminated name and flags.
    let fd = unsafe { libc::memfd_create(c"tracebench-btf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create just returned this descriptor, ours alone.
    let mut copy = unsafe { File::from_raw_fd(fd) };
    io::Write::write_all(&mut copy, &bytes)?;
    let copy_path = PathBuf::from(format!("/proc/self/fd/{fd}"));
    mapped(&copy_path).map_err(|error| io::Error::other(error.to_string()))
}

/// What the raw-tracepoint programs need to know of this kernel.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// The byte offset of `task_struct`'s `pid` (the thread id).
    pub task_pid_at: u32,
}

/// This kernel's layout, or why it could not be read.
pub fn layout() -> Result<Layout, String> {
    let path = vmlinux_path();
    let btf = vmlinux(&path).map_err(|error| format!("reading {}: {error}", path.display()))?;
    Ok(Layout {
        task_pid_at: task_pid_offset(&btf).map_err(|why| format!("{}: {why}", path.display()))?,
    })
}

/// The byte offset of `task_struct`'s `pid` (the thread id), or why it
/// could not be found.
fn task_pid_offset(btf: &Btf) -> Result<u32, String> {
    let types = btf
        .resolve_types_by_name("task_struct")
        .map_err(|error| format!("no task_struct: {error}"))?;
    types
        .iter()
        .find_map(|ty| match ty {
            Type::Struct(task) => member_bits(btf, task, "pid", 4),
            _ => None,
        })
        .map(|bits| bits / 8)
        .ok_or_else(|| "task_struct has no pid".to_owned())
}

/// The bit offset of member `name` of `fields`, looking into unnamed
/// structs and unions `depth` levels down (a kernel built with
/// `CONFIG_RANDSTRUCT` keeps task_struct's fields in one).
fn member_bits(btf: &Btf, fields: &Struct, name: &str, depth: u32) -> Option<u32> {
    for member in &fields.members {
        let member_name = btf.resolve_name(member).unwrap_or_default();
        if member_name == name && member.bitfield_size().unwrap_or(0) == 0 {
            return Some(member.bit_offset());
        }
        if member_name.is_empty()
            && depth > 0
            && let Ok(Type::Struct(inner) | Type::Union(inner)) = btf.resolve_chained_type(member)
            && let Some(bits) = member_bits(btf, &inner, name, depth - 1)
        {
            return Some(member.bit_offset() + bits);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found, and plausible (whether it is right, the integration tests
    /// tell: every wake-up names the thread woken).
    #[test]
    fn finds_the_thread_id_in_task_struct() {
        let at = layout().expect("this kernel has BTF").task_pid_at;
        assert!(at > 0 && at < 16 * 1024 && at.is_multiple_of(4), "{at}");
    }

    /// A BTF blob of one `int`, an unnamed struct `{ int x; int pid; }`
    /// and `struct task_struct { int state; <that struct>; }`, as a
    /// kernel with CONFIG_RANDSTRUCT lays it out.
    fn randomized_task_struct() -> Vec<u8> {
        let strings = b"\0int\0x\0pid\0task_struct\0state\0";
        #[rustfmt::skip]
        let words: [u32; 22] = [
            // [1] int: name "int", kind INT (1), size 4; 32 bits, signed.
            1, 1 << 24, 4, 0x0100_0020,
            // [2] unnamed, kind STRUCT (4), 2 members, size 8: x at bit
            // 0 and pid at bit 32, both [1].
            0, (4 << 24) | 2, 8, 5, 1, 0, 7, 1, 32,
            // [3] task_struct, 2 members, size 12: state ([1]) at bit 0,
            // an unnamed [2] at bit 32.
            11, (4 << 24) | 2, 12, 23, 1, 0, 0, 2, 32,
        ];
        let types: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut blob = Vec::new();
        blob.extend(0xeb9f_u16.to_le_bytes());
        blob.extend([1, 0]);
        for word in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend(word.to_le_bytes());
        }
        blob.extend(&types);
        blob.extend(strings);
        blob
    }

    #[test]
    fn finds_the_thread_id_inside_an_unnamed_struct() {
        let btf = Btf::from_bytes(&randomized_task_struct()).expect("a valid blob");
        // Bit 32 of task_struct, then bit 32 of the unnamed struct.
        assert_eq!(task_pid_offset(&btf), Ok(8));
    }
}
