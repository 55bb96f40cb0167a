//! The threads a capture follows: one bit per possible thread id, in an
//! eBPF array map that the kernel's programs and this process both update
//! in place, atomically.
//!
//! A bit set rather than a hash of ids: a program tests a bit with an
//! array lookup the verifier inlines (a hash lookup hashes the key and
//! walks a bucket, at every tracepoint hit on the machine for the
//! scheduler's), it never fills up (every id the kernel can hand out,
//! `PID_MAX_LIMIT`, has its bit: 512 KiB), and nothing is allocated as
//! threads come and go. The fork program sets a child's bit with an atomic
//! OR and the exit program clears it with an atomic AND; we set and clear
//! bits through a shared mapping of the same words, with the same atomic
//! operations, so no update of ours undoes one of the kernel's in the
//! same word.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::bpf::Map;

/// The largest number of thread ids a 64-bit kernel hands out
/// (`PID_MAX_LIMIT`, whatever `kernel.pid_max` says now).
pub const MAX_TIDS: u32 = 4 << 20;
/// Words of 64 bits, one bit per id.
pub const WORDS: u32 = MAX_TIDS / 64;

/// The followed threads' bits, in the kernel and mapped here.
pub struct TidSet {
    map: Map,
    words: *mut AtomicU64,
}

// SAFETY: the mapping is only touched through atomics; the pointer stays
// valid until drop.
unsafe impl Send for TidSet {}

impl TidSet {
    /// An empty set.
    pub fn new() -> io::Result<TidSet> {
        let map = Map::bits(WORDS)?;
        let bytes = WORDS as usize * 8;
        // SAFETY: maps the array's values (page-aligned, `bytes` long) of
        // a descriptor we own, shared with the kernel.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(TidSet {
            map,
            words: address.cast(),
        })
    }

    /// The map, for programs to name.
    pub fn map(&self) -> &Map {
        &self.map
    }

    fn word(&self, tid: u32) -> Option<&AtomicU64> {
        (tid < MAX_TIDS).then(|| {
            // SAFETY: in bounds of the mapping, which lives as long as self.
            unsafe { &*self.words.add((tid / 64) as usize) }
        })
    }

    /// Follows `tid`; false if it is beyond any id the kernel hands out.
    pub fn insert(&self, tid: u32) -> bool {
        self.word(tid)
            .map(|word| word.fetch_or(1 << (tid % 64), Ordering::SeqCst))
            .is_some()
    }

    /// Stops following `tid`.
    pub fn remove(&self, tid: u32) {
        if let Some(word) = self.word(tid) {
            word.fetch_and(!(1 << (tid % 64)), Ordering::SeqCst);
        }
    }

    /// Whether `tid` is followed.
    #[cfg(test)]
    pub fn contains(&self, tid: u32) -> bool {
        self.word(tid)
            .is_some_and(|word| word.load(Ordering::SeqCst) & (1 << (tid % 64)) != 0)
    }
}

impl Drop for TidSet {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what new() mapped; no reference to it
        // outlives self.
        unsafe { libc::munmap(self.words.cast(), WORDS as usize * 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root (or CAP_BPF): the set lives in a kernel map.
    #[test]
    fn bits_set_and_cleared_through_the_mapping() {
        let set = TidSet::new().expect("bpf map (root)");
        assert!(!set.contains(4242));
        assert!(set.insert(4242) && set.insert(4243) && set.insert(MAX_TIDS - 1));
        set.remove(4242);
        assert!(!set.contains(4242) && set.contains(4243) && set.contains(MAX_TIDS - 1));
        assert!(!set.insert(MAX_TIDS));
        assert!(!set.contains(MAX_TIDS));
    }
}
