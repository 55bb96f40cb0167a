//! The bpf(2) ABI, as much of it as this backend uses: creating its three
//! maps (the followed threads, the ring buffer, the loss counters),
//! loading its programs, attaching them to raw tracepoints, and reading
//! and writing map entries. Written here
//! rather than taken from a crate: aya and libbpf-rs compile programs from
//! Rust or C with a toolchain the user may not have, and ours are a few
//! dozen instructions assembled at run time (see [`crate::probe`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const MAP_CREATE: libc::c_int = 0;
const MAP_LOOKUP_ELEM: libc::c_int = 1;
const PROG_LOAD: libc::c_int = 5;
const OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const RAW_TRACEPOINT_OPEN: libc::c_int = 17;

/// Where `struct bpf_prog_info` holds `recursion_misses`, and its size
/// (kernel 5.12 on; checked with offsetof against linux/bpf.h).
const RECURSION_MISSES_AT: usize = 208;
const PROG_INFO_SIZE: usize = 232;

const MAP_TYPE_ARRAY: u32 = 2;
const MAP_TYPE_RINGBUF: u32 = 27;
/// An array user space may map (`BPF_F_MMAPABLE`).
const MAP_FLAG_MMAPABLE: u32 = 1 << 10;

/// The kinds of program we load (`enum bpf_prog_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramType {
    /// Run through a perf event on a tracepoint: its context is the
    /// tracepoint's formatted record.
    Tracepoint = 5,
    /// Run by the tracepoint itself: its context is the tracepoint's
    /// arguments, and only its own recursion stops it (not another
    /// program running on the CPU, which stops a perf-event program).
    RawTracepoint = 17,
}

/// Helper functions our programs call (`enum bpf_func_id`).
pub mod helper {
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    pub const KTIME_GET_NS: i32 = 5;
    pub const GET_SMP_PROCESSOR_ID: i32 = 8;
    pub const GET_CURRENT_PID_TGID: i32 = 14;
    pub const PROBE_READ_KERNEL: i32 = 113;
    pub const RINGBUF_RESERVE: i32 = 131;
    pub const RINGBUF_SUBMIT: i32 = 132;
    pub const RINGBUF_QUERY: i32 = 134;
}

/// `bpf_ringbuf_submit` flags and `bpf_ringbuf_query`'s question.
pub const RB_NO_WAKEUP: i32 = 1;
pub const RB_FORCE_WAKEUP: i32 = 2;
pub const RB_AVAIL_DATA: i32 = 0;

/// The map-creating part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// The program-loading part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// The raw-tracepoint part of `union bpf_attr`.
#[repr(C)]
struct RawTracepointOpen {
    name: u64,
    prog_fd: u32,
    pad: u32,
    cookie: u64,
}

/// The map-element part of `union bpf_attr`.
#[repr(C)]
struct MapElem {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `bpf(cmd, attr)`, returning its (non-negative) result.
fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a whole, initialised part of `union bpf_attr` of the
    // size passed; any pointers in it point to live memory of ours.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: bpf(2) just returned this descriptor, owned by no one else.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn name(text: &str) -> [u8; 16] {
    let mut name = [0u8; 16];
    let len = text.len().min(15);
    name[..len].copy_from_slice(&text.as_bytes()[..len]);
    name
}

/// A map, closed (and freed, once no program holds it) when dropped.
pub struct Map {
    fd: OwnedFd,
}

impl Map {
    fn create(map_type: u32, key: u32, value: u32, entries: u32, label: &str) -> io::Result<Map> {
        Map::create_with(map_type, key, value, entries, 0, label)
    }

    fn create_with(
        map_type: u32,
        key: u32,
        value: u32,
        entries: u32,
        flags: u32,
        label: &str,
    ) -> io::Result<Map> {
        let mut attr = MapCreate {
            map_type,
            key_size: key,
            value_size: value,
            max_entries: entries,
            map_flags: flags,
            map_name: name(label),
            ..MapCreate::default()
        };
        Ok(Map {
            fd: owned(bpf(MAP_CREATE, &mut attr)?),
        })
    }

    /// An array of `words` u64 bit sets indexed by u32, which user space
    /// may map (see [`TidSet`]).
    pub fn bits(words: u32) -> io::Result<Map> {
        Map::create_with(
            MAP_TYPE_ARRAY,
            4,
            8,
            words,
            MAP_FLAG_MMAPABLE,
            "tracebench_tids",
        )
    }

    /// A ring buffer of `bytes` (a power-of-two number of pages).
    pub fn ring(bytes: u32) -> io::Result<Map> {
        Map::create(MAP_TYPE_RINGBUF, 0, 0, bytes, "tracebench_ring")
    }

    /// An array of `entries` u64 counters, indexed by u32.
    pub fn counters(entries: u32) -> io::Result<Map> {
        Map::create(MAP_TYPE_ARRAY, 4, 8, entries, "tracebench_lost")
    }

    /// The map's descriptor, for a program to name (or to mmap a ring).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    fn elem(&self, cmd: libc::c_int, key: &u32, value: u64) -> io::Result<()> {
        let mut attr = MapElem {
            map_fd: self.fd.as_raw_fd() as u32,
            pad: 0,
            key: key as *const u32 as u64,
            value,
            flags: 0,
        };
        bpf(cmd, &mut attr).map(drop)
    }

    /// The u64 at `key` (counter maps).
    pub fn counter(&self, key: u32) -> io::Result<u64> {
        let mut value = 0u64;
        self.elem(MAP_LOOKUP_ELEM, &key, &mut value as *mut u64 as u64)?;
        Ok(value)
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Insn {
    pub code: u8,
    /// The destination register in the low nibble, the source in the high.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// The info-by-descriptor part of `union bpf_attr`.
#[repr(C)]
struct ObjInfo {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// How many times the kernel skipped program `prog` because another eBPF
/// program was running on the CPU (its `recursion_misses`).
pub fn recursion_misses(prog: &OwnedFd) -> io::Result<u64> {
    let mut info = [0u8; PROG_INFO_SIZE];
    let mut attr = ObjInfo {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: PROG_INFO_SIZE as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf(OBJ_GET_INFO_BY_FD, &mut attr)?;
    let at = RECURSION_MISSES_AT;
    Ok(u64::from_ne_bytes(
        info[at..at + 8].try_into().expect("8 bytes"),
    ))
}

/// Attaches `program` (a raw-tracepoint one) to the tracepoint `name`
/// until the descriptor returned is closed.
pub fn attach_raw_tracepoint(name: &std::ffi::CStr, program: &OwnedFd) -> io::Result<OwnedFd> {
    let mut attr = RawTracepointOpen {
        name: name.as_ptr() as u64,
        prog_fd: program.as_raw_fd() as u32,
        pad: 0,
        cookie: 0,
    };
    Ok(owned(bpf(RAW_TRACEPOINT_OPEN, &mut attr)?))
}

/// Loads `insns` as a program of `kind`; a rejection says the verifier's
/// last words.
pub fn load_program(kind: ProgramType, insns: &[Insn], label: &str) -> io::Result<OwnedFd> {
    // GPL-compatible: bpf_probe_read_kernel is offered to such only.
    let license = c"Dual MIT/GPL";
    let mut attr = ProgLoad {
        prog_type: kind as u32,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name(label),
        ..ProgLoad::default()
    };
    match bpf(PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(error) if matches!(error.raw_os_error(), Some(libc::EINVAL | libc::EACCES)) => {
            // Again with the verifier's log, to say why.
            let mut log = vec![0u8; 1 << 16];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            // A load that passes the second time (the first failure was
            // passing) is closed, not leaked; the first error stands.
            if let Ok(fd) = bpf(PROG_LOAD, &mut attr) {
                drop(owned(fd));
            }
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            let last = text.lines().rev().take(3).collect::<Vec<_>>();
            if last.is_empty() {
                return Err(error);
            }
            Err(io::Error::new(
                error.kind(),
                format!("{error}: the verifier said: {}", last.join(" / ")),
            ))
        }
        Err(error) => Err(error),
    }
}
