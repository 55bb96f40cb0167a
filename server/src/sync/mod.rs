//! Synchronisation primitives written from futex(2): the point of the
//! `pool-futex` model, and the only thing it uses to hand connections from
//! the acceptor to the workers.

mod condvar;
mod mutex;
mod queue;

pub use condvar::FutexCondvar;
pub use mutex::{FutexMutex, FutexMutexGuard};
pub use queue::{BoundedQueue, TryPushError};
