//! One CPU's ring buffer: the kernel writes records at `data_head`, we
//! read them up to there and hand the space back by moving `data_tail`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// Offsets in the first (metadata) page of the mapping.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;
const DATA_OFFSET: usize = 1040;
const DATA_SIZE: usize = 1048;

/// A mapped ring buffer. Unmapped when dropped: a mapping keeps its event
/// alive (and recording) even after the event's descriptor is closed.
pub struct Ring {
    base: *mut u8,
    len: usize,
    data: *const u8,
    size: usize,
    /// A record that wraps past the end is copied here whole.
    scratch: Vec<u8>,
}

// SAFETY: the mapping is ours alone; the kernel's side is synchronised
// through data_head and data_tail as the ABI says.
unsafe impl Send for Ring {}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

impl Ring {
    /// Maps `data_pages` (a power of two) pages of ring for event `fd`.
    pub fn map(fd: &OwnedFd, data_pages: usize) -> io::Result<Ring> {
        let len = (data_pages + 1) * page_size();
        // SAFETY: a fresh shared mapping of a perf event descriptor, of the
        // size the ABI wants (1 + 2^n pages); checked for failure below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = base as *mut u8;
        // SAFETY: the metadata page is mapped and the kernel filled in
        // data_offset and data_size.
        let (offset, size) = unsafe {
            (
                (base.add(DATA_OFFSET) as *const u64).read_volatile() as usize,
                (base.add(DATA_SIZE) as *const u64).read_volatile() as usize,
            )
        };
        Ok(Ring {
            base,
            len,
            // SAFETY: data_offset lies inside the mapping.
            data: unsafe { base.add(offset) },
            size,
            scratch: Vec::new(),
        })
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        // SAFETY: `at` is data_head's or data_tail's offset in the mapped,
        // 8-byte aligned metadata page, which lives as long as self.
        unsafe { AtomicU64::from_ptr(self.base.add(at) as *mut u64) }
    }

    /// Hands every whole record written so far to `each`, then gives its
    /// space back to the kernel.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8])) {
        // Acquire: the records up to head are written before we read them.
        let head = self.word(DATA_HEAD).load(Ordering::Acquire);
        let mut tail = self.word(DATA_TAIL).load(Ordering::Relaxed);
        while tail < head {
            let at = (tail % self.size as u64) as usize;
            // A header never straddles the end: records are 8-byte aligned
            // and the size is a power of two.
            // SAFETY: `at` + 8 is within the data area.
            let header = unsafe { std::slice::from_raw_parts(self.data.add(at), 8) };
            let len = u16::from_ne_bytes([header[6], header[7]]) as usize;
            if len < 8 || tail + len as u64 > head {
                break;
            }
            if at + len <= self.size {
                // SAFETY: the whole record lies inside the data area.
                each(unsafe { std::slice::from_raw_parts(self.data.add(at), len) });
            } else {
                let first = self.size - at;
                self.scratch.clear();
                // SAFETY: the record's two pieces, at the end and at the
                // start of the data area.
                unsafe {
                    self.scratch
                        .extend_from_slice(std::slice::from_raw_parts(self.data.add(at), first));
                    self.scratch
                        .extend_from_slice(std::slice::from_raw_parts(self.data, len - first));
                }
                each(&self.scratch);
            }
            tail += len as u64;
        }
        // Release: we are done reading before the kernel may write again.
        self.word(DATA_TAIL).store(tail, Ordering::Release);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: our own mapping, of this length, unused from here on.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}
