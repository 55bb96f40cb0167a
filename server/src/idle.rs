//! Keep-alive connections idle in a blocking pool's workers: a worker
//! waiting for a client's next request is held by a client that may never
//! send one, while new clients queue. When the queue is full the acceptor
//! closes the reading side of the connection idle the longest, so its
//! worker returns to the queue, as nginx closes idle keep-alive
//! connections first when it runs out of connections. A request that
//! raced the close is still answered (only reading is shut); an idle
//! client sees its connection end, which HTTP/1.1 allows at any time.

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// A connection a worker waits on between two requests.
#[derive(Debug, Clone, Copy)]
struct Idle {
    fd: RawFd,
    since: Instant,
}

/// One slot per worker: the connection it waits on, if it waits.
#[derive(Debug)]
pub struct IdleConnections {
    slots: Vec<Mutex<Option<Idle>>>,
}

/// A worker's slot, handed to the code that serves its connections.
#[derive(Debug, Clone)]
pub struct IdleSlot {
    shared: Arc<IdleConnections>,
    worker: usize,
}

impl IdleConnections {
    /// Slots for `workers` workers.
    pub fn new(workers: usize) -> Arc<IdleConnections> {
        Arc::new(IdleConnections {
            slots: (0..workers).map(|_| Mutex::new(None)).collect(),
        })
    }

    /// Worker `worker`'s slot.
    pub fn slot(self: &Arc<Self>, worker: usize) -> IdleSlot {
        IdleSlot {
            shared: Arc::clone(self),
            worker,
        }
    }

    fn lock(&self, worker: usize) -> MutexGuard<'_, Option<Idle>> {
        self.slots[worker]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Shuts the reading side of the connection idle the longest, so its
    /// worker's wait ends; false if no worker waits on one.
    pub fn close_longest_idle(&self) -> bool {
        // A worker may stop waiting between the look and the close: look
        // again, a few times at most.
        for _ in 0..3 {
            let oldest = (0..self.slots.len())
                .filter_map(|worker| self.lock(worker).map(|idle| (idle.since, worker)))
                .min();
            let Some((since, worker)) = oldest else {
                return false;
            };
            let mut slot = self.lock(worker);
            if let Some(idle) = slot.filter(|idle| idle.since == since) {
                // Held under the slot's lock: the worker closes the
                // descriptor only after it has emptied its slot, so the
                // number is still this connection's.
                // SAFETY: the descriptor is open for as long as the lock
                // is held (see above).
                let fd = unsafe { BorrowedFd::borrow_raw(idle.fd) };
                let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Read);
                *slot = None;
                return true;
            }
        }
        false
    }
}

impl IdleSlot {
    /// The worker is about to wait for the next request on `fd`, idle
    /// since `since`: the moment its last answer was handed to the kernel,
    /// not the moment the worker got here, which a preempted worker may
    /// reach after a client served later has gone quiet.
    pub fn park(&self, fd: RawFd, since: Instant) {
        *self.shared.lock(self.worker) = Some(Idle { fd, since });
    }

    /// The wait is over (a request came, the client left, or the acceptor
    /// shut it): the descriptor may be closed after this.
    pub fn unpark(&self) {
        *self.shared.lock(self.worker) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn the_longest_idle_connection_is_closed_first_and_only_while_parked() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _clients: Vec<_> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut served: Vec<_> = (0..2).map(|_| listener.accept().unwrap().0).collect();
        let idle = IdleConnections::new(2);
        let (first, second) = (idle.slot(0), idle.slot(1));
        // Parked in the other order: what counts is when each went quiet.
        let since = Instant::now();
        second.park(
            served[1].as_raw_fd(),
            since + std::time::Duration::from_millis(5),
        );
        first.park(served[0].as_raw_fd(), since);
        assert!(idle.close_longest_idle());
        // The first one's read ends (end of stream); the second still waits.
        assert_eq!(served[0].read(&mut [0; 8]).unwrap(), 0);
        served[1].set_nonblocking(true).unwrap();
        assert!(served[1].read(&mut [0; 8]).is_err(), "still open");
        first.unpark();
        second.unpark();
        assert!(!idle.close_longest_idle(), "nobody waits");
    }
}
