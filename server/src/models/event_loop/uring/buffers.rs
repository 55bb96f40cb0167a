//! A ring of provided buffers (IORING_REGISTER_PBUF_RING, Linux 5.19): the
//! receive buffers a multishot receive picks from. The kernel takes the
//! next free buffer when data arrives and names it in the completion; the
//! loop copies the bytes out to the connection and gives the buffer back
//! at once, so a few hundred buffers serve any number of connections.
//!
//! Written here rather than taken from a crate: the io-uring crate has the
//! entry layout and the registration, not the ring's bookkeeping, and the
//! crates that do (tokio-uring, monoio) are runtimes we do not use.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

/// The group id our receives name.
pub(super) const GROUP: u16 = 0;
/// Buffers in the ring (a power of two, at most 32 768).
const COUNT: u16 = 256;
/// Bytes per buffer: a request head of a usual size fits in one.
const SIZE: usize = 2048;

/// The ring's entries, then its buffers, in one private mapping.
pub(super) struct Buffers {
    base: NonNull<u8>,
    /// Our copy of the tail the kernel reads.
    tail: u16,
}

impl Buffers {
    /// Maps the ring, puts every buffer in it and registers it with the
    /// ring behind `submitter`. An error means this kernel has no buffer
    /// rings: receives then bring their own buffers.
    pub(super) fn register(submitter: &Submitter<'_>) -> io::Result<Buffers> {
        // SAFETY: a fresh anonymous private mapping; no address is given,
        // so nothing of ours is replaced.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Buffers::bytes(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut buffers = Buffers {
            base: NonNull::new(base.cast()).expect("mmap returned an address"),
            tail: 0,
        };
        for id in 0..COUNT {
            buffers.put(id);
        }
        buffers.publish();
        // SAFETY: the mapping is page-aligned, holds COUNT entries, and
        // lives until the ring is gone (see `Drop`).
        let registered =
            unsafe { submitter.register_buf_ring_with_flags(buffers.ring_addr(), COUNT, GROUP, 0) };
        registered.map(|()| buffers)
    }

    fn entries_bytes() -> usize {
        usize::from(COUNT) * std::mem::size_of::<BufRingEntry>()
    }

    fn bytes() -> usize {
        Buffers::entries_bytes() + usize::from(COUNT) * SIZE
    }

    fn ring_addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    fn buffer_ptr(&self, id: u16) -> *mut u8 {
        // SAFETY: id < COUNT, so the offset stays within the mapping.
        unsafe {
            self.base
                .as_ptr()
                .add(Buffers::entries_bytes() + usize::from(id) * SIZE)
        }
    }

    /// The first `len` bytes of buffer `id`, which a completion just
    /// handed us (the kernel no longer writes to it).
    pub(super) fn get(&self, id: u16, len: usize) -> &[u8] {
        let id = id % COUNT;
        // SAFETY: the buffer lies within the mapping, the kernel wrote
        // `len` (at most SIZE) bytes to it and is done with it until it is
        // given back.
        unsafe { std::slice::from_raw_parts(self.buffer_ptr(id), len.min(SIZE)) }
    }

    /// Gives buffer `id` back to the kernel.
    pub(super) fn give_back(&mut self, id: u16) {
        self.put(id % COUNT);
        self.publish();
    }

    /// Writes the entry for buffer `id` at our tail.
    fn put(&mut self, id: u16) {
        let slot = usize::from(self.tail & (COUNT - 1));
        let entries = self.base.as_ptr().cast::<BufRingEntry>();
        // SAFETY: slot < COUNT entries of the mapping; the kernel reads only
        // the entries between its head and the published tail, and this one
        // is past the tail until `publish`.
        let entry = unsafe { &mut *entries.add(slot) };
        entry.set_addr(self.buffer_ptr(id) as u64);
        entry.set_len(SIZE as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Lets the kernel see the entries written so far.
    fn publish(&self) {
        let entries = self.base.as_ptr().cast::<BufRingEntry>();
        // SAFETY: the tail is the first entry's last u16, aligned, and the
        // kernel only reads it; release orders the entries before it.
        let tail = unsafe { &*BufRingEntry::tail(entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// Keeps the mapping for good: a receive may still be in the kernel
    /// (an error ended the loop), and the kernel may write into a buffer
    /// until the ring is torn down, which happens after we are gone.
    pub(super) fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        // SAFETY: our own mapping, of this size; dropped only when no
        // receive that could write to it is left (see `leak`).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), Buffers::bytes());
        }
    }
}
