//! The backend's ring buffer (a `BPF_MAP_TYPE_RINGBUF`, one for all
//! CPUs): our programs reserve and commit records at the producer
//! position, we read committed ones up to there and hand the space back by
//! moving the consumer position.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Set in a record's length while its program is still writing it.
const BUSY: u32 = 1 << 31;
/// Set in a record's length when its program threw it away.
const DISCARDED: u32 = 1 << 30;
/// Each record's header: its length (with the two bits above), then the
/// kernel's page offset.
const HEADER: usize = 8;

/// A mapped ring buffer. Unmapped when dropped.
pub struct Ring {
    /// The consumer page (ours to write).
    consumer: *mut u8,
    /// The producer page, then the data area mapped twice in a row, so a
    /// record that wraps past the end reads as one piece.
    producer: *mut u8,
    page: usize,
    size: usize,
}

// SAFETY: the mappings are ours alone; the kernel's side is synchronised
// through the two positions as the ABI says.
unsafe impl Send for Ring {}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

fn map(fd: &OwnedFd, len: usize, prot: libc::c_int, offset: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh shared mapping of a ring buffer map, of a length and
    // offset its ABI allows; checked for failure below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(base as *mut u8)
}

impl Ring {
    /// Maps the ring of `size` bytes (a power-of-two number of pages)
    /// behind map descriptor `fd`.
    pub fn map(fd: &OwnedFd, size: usize) -> io::Result<Ring> {
        let page = page_size();
        let consumer = map(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = match map(fd, page + 2 * size, libc::PROT_READ, page) {
            Ok(producer) => producer,
            Err(error) => {
                // SAFETY: the mapping just made, unused.
                unsafe { libc::munmap(consumer.cast(), page) };
                return Err(error);
            }
        };
        Ok(Ring {
            consumer,
            producer,
            page,
            size,
        })
    }

    fn position(&self, page: *mut u8) -> &AtomicU64 {
        // SAFETY: each position is the first, 8-byte aligned word of its
        // mapped page, which lives as long as self.
        unsafe { AtomicU64::from_ptr(page as *mut u64) }
    }

    /// Hands every committed record to `each` (up to the first one still
    /// being written), then gives their space back to the kernel; whether
    /// it stopped at one still being written.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8])) -> bool {
        let mut busy = false;
        // Acquire: the records up to it are reserved before we look.
        let end = self.position(self.producer).load(Ordering::Acquire);
        let mut at = self.position(self.consumer).load(Ordering::Relaxed);
        let mask = self.size as u64 - 1;
        while at < end {
            // SAFETY: the data area starts a page into the producer
            // mapping; the offset is within its first copy, the header
            // 8-aligned inside it.
            let header = unsafe { self.producer.add(self.page + (at & mask) as usize) };
            // SAFETY: as above; the kernel commits by writing this word.
            let len = unsafe { AtomicU32::from_ptr(header as *mut u32) }.load(Ordering::Acquire);
            if len & BUSY != 0 {
                busy = true;
                break;
            }
            let bytes = (len & !(BUSY | DISCARDED)) as usize;
            if bytes > self.size {
                break; // never written by the kernel: stop rather than read wild
            }
            if len & DISCARDED == 0 {
                // SAFETY: the record lies within the data area's two copies.
                each(unsafe { std::slice::from_raw_parts(header.add(HEADER), bytes) });
            }
            at += ((HEADER + bytes + 7) & !7) as u64;
        }
        // Release: we are done reading before the kernel may write again.
        self.position(self.consumer).store(at, Ordering::Release);
        busy
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: our own mappings, of these lengths, unused from here on.
        unsafe {
            libc::munmap(self.consumer.cast(), self.page);
            libc::munmap(self.producer.cast(), self.page + 2 * self.size);
        }
    }
}
