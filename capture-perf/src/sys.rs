//! The perf_event_open(2) ABI, as much of it as this backend uses: the
//! attribute struct, the flags and ioctls, and the record types. Written
//! here rather than taken from a crate: no perf crate can route several
//! events into one ring buffer per CPU (PERF_EVENT_IOC_SET_OUTPUT), and
//! their readers allocate per record (docs/design/perf-backend-research.md).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `struct perf_event_attr`, PERF_ATTR_SIZE_VER7 (128 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PerfEventAttr {
    pub kind: u32,
    pub size: u32,
    pub config: u64,
    pub sample_period: u64,
    pub sample_type: u64,
    pub read_format: u64,
    pub flags: u64,
    pub wakeup_watermark: u32,
    pub bp_type: u32,
    pub config1: u64,
    pub config2: u64,
    pub branch_sample_type: u64,
    pub sample_regs_user: u64,
    pub sample_stack_user: u32,
    pub clockid: i32,
    pub sample_regs_intr: u64,
    pub aux_watermark: u32,
    pub sample_max_stack: u16,
    pub reserved_2: u16,
    pub aux_sample_size: u32,
    pub reserved_3: u32,
    pub sig_data: u64,
}

const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == 128);

pub const PERF_TYPE_TRACEPOINT: u32 = 2;

pub const SAMPLE_TID: u64 = 1 << 1;
pub const SAMPLE_TIME: u64 = 1 << 2;
pub const SAMPLE_RAW: u64 = 1 << 10;
pub const SAMPLE_IDENTIFIER: u64 = 1 << 16;

pub const FLAG_DISABLED: u64 = 1 << 0;
pub const FLAG_INHERIT: u64 = 1 << 1;
pub const FLAG_TASK: u64 = 1 << 13;
pub const FLAG_WATERMARK: u64 = 1 << 14;
pub const FLAG_SAMPLE_ID_ALL: u64 = 1 << 18;
pub const FLAG_USE_CLOCKID: u64 = 1 << 25;
pub const FLAG_CONTEXT_SWITCH: u64 = 1 << 26;

const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

pub const IOC_ENABLE: libc::c_ulong = 0x2400;
pub const IOC_SET_OUTPUT: libc::c_ulong = 0x2405;
pub const IOC_SET_FILTER: libc::c_ulong = 0x4008_2406;
const IOC_ID: libc::c_ulong = 0x8008_2407;

pub const RECORD_LOST: u32 = 2;
pub const RECORD_EXIT: u32 = 4;
pub const RECORD_FORK: u32 = 7;
pub const RECORD_SAMPLE: u32 = 9;
pub const RECORD_SWITCH: u32 = 14;
pub const MISC_SWITCH_OUT: u16 = 1 << 13;
pub const MISC_SWITCH_OUT_PREEMPT: u16 = 1 << 14;

/// Opens one event of `attr` on task `pid` (-1: every task) and `cpu`.
pub fn perf_event_open(attr: &PerfEventAttr, pid: i32, cpu: i32) -> io::Result<OwnedFd> {
    // SAFETY: attr points to a whole, initialised 128-byte attribute
    // struct; the other arguments are plain integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            pid,
            cpu,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The id the kernel gave an event: what PERF_SAMPLE_IDENTIFIER puts in
/// its records, and in those of every copy a new task inherits.
pub fn event_id(fd: &OwnedFd) -> io::Result<u64> {
    let mut id = 0u64;
    // SAFETY: PERF_EVENT_IOC_ID writes one u64 to the pointer, our local.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), IOC_ID, &mut id as *mut u64) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(id)
}

/// `ioctl(fd, request, arg)` on a perf event.
pub fn ioctl(fd: &OwnedFd, request: libc::c_ulong, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the requests used here take an integer or a pointer to a
    // NUL-terminated string that outlives the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
