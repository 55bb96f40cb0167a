//! A fixed pool of workers fed by the accepting thread through a bounded
//! queue. Three queues, one interface, so the only difference a tracer sees
//! is how waiting is done:
//!
//! * `pool-futex`: [`BoundedQueue`], our futex mutex and condition
//!   variables: idle workers sleep in FUTEX_WAIT.
//! * `pool-std`: std's `Mutex` and `Condvar` (themselves futex-based on
//!   Linux): the baseline to compare with.
//! * `pool-spin`: the lock is only ever tried, never slept on; idle workers
//!   poll the queue in a loop, yielding between polls, and burn every idle
//!   core.

use std::collections::VecDeque;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use crate::http::{Buffers, reject, serve_connection};
use crate::idle::IdleConnections;
use crate::listener::{StopHandle, accept};
use crate::stats::{Lane, ServeSummary, Tally};
use crate::sync::{BoundedQueue, FutexMutex, FutexMutexGuard, TryPushError};
use crate::{Config, Mode, ServerError, WhenFull};

/// The hand-off between the acceptor and the workers.
trait Handoff: Send + Sync + 'static {
    /// Waits for room; gives the connection back if the queue is closed.
    fn push(&self, stream: TcpStream) -> Result<(), TcpStream>;
    /// Never waits.
    fn try_push(&self, stream: TcpStream) -> Result<(), TryPushError<TcpStream>>;
    /// Waits for a connection; `None` once closed and drained.
    fn pop(&self) -> Option<TcpStream>;
    /// No more pushes; wake everyone.
    fn close(&self);
}

impl Handoff for BoundedQueue<TcpStream> {
    fn push(&self, stream: TcpStream) -> Result<(), TcpStream> {
        BoundedQueue::push(self, stream)
    }
    fn try_push(&self, stream: TcpStream) -> Result<(), TryPushError<TcpStream>> {
        BoundedQueue::try_push(self, stream)
    }
    fn pop(&self) -> Option<TcpStream> {
        BoundedQueue::pop(self)
    }
    fn close(&self) {
        BoundedQueue::close(self)
    }
}

#[derive(Default)]
struct Slots {
    items: VecDeque<TcpStream>,
    closed: bool,
}

/// The same monitor as [`BoundedQueue`], on std's primitives.
struct StdQueue {
    slots: Mutex<Slots>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
}

impl StdQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // A worker that panicked while holding the lock left the queue in a
        // consistent state (every operation is a single push or pop).
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Handoff for StdQueue {
    fn push(&self, stream: TcpStream) -> Result<(), TcpStream> {
        let mut slots = self.lock();
        while slots.items.len() >= self.capacity && !slots.closed {
            slots = self
                .not_full
                .wait(slots)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if slots.closed {
            return Err(stream);
        }
        slots.items.push_back(stream);
        drop(slots);
        self.not_empty.notify_one();
        Ok(())
    }
    fn try_push(&self, stream: TcpStream) -> Result<(), TryPushError<TcpStream>> {
        let mut slots = self.lock();
        if slots.closed {
            return Err(TryPushError::Closed(stream));
        }
        if slots.items.len() >= self.capacity {
            return Err(TryPushError::Full(stream));
        }
        slots.items.push_back(stream);
        drop(slots);
        self.not_empty.notify_one();
        Ok(())
    }
    fn pop(&self) -> Option<TcpStream> {
        let mut slots = self.lock();
        loop {
            if let Some(stream) = slots.items.pop_front() {
                drop(slots);
                self.not_full.notify_one();
                return Some(stream);
            }
            if slots.closed {
                return None;
            }
            slots = self
                .not_empty
                .wait(slots)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
    fn close(&self) {
        self.lock().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}

/// A queue whose lock is only ever tried: nobody sleeps, everybody polls.
struct SpinQueue {
    slots: FutexMutex<Slots>,
    capacity: usize,
}

impl SpinQueue {
    fn lock(&self) -> FutexMutexGuard<'_, Slots> {
        loop {
            if let Some(guard) = self.slots.try_lock() {
                return guard;
            }
            std::hint::spin_loop();
        }
    }
}

impl Handoff for SpinQueue {
    fn push(&self, mut stream: TcpStream) -> Result<(), TcpStream> {
        loop {
            match self.try_push(stream) {
                Ok(()) => return Ok(()),
                Err(TryPushError::Closed(s)) => return Err(s),
                Err(TryPushError::Full(s)) => stream = s,
            }
            std::hint::spin_loop();
        }
    }
    fn try_push(&self, stream: TcpStream) -> Result<(), TryPushError<TcpStream>> {
        let mut slots = self.lock();
        if slots.closed {
            return Err(TryPushError::Closed(stream));
        }
        if slots.items.len() >= self.capacity {
            return Err(TryPushError::Full(stream));
        }
        slots.items.push_back(stream);
        Ok(())
    }
    fn pop(&self) -> Option<TcpStream> {
        loop {
            let mut slots = self.lock();
            if let Some(stream) = slots.items.pop_front() {
                return Some(stream);
            }
            if slots.closed {
                return None;
            }
            drop(slots);
            // Still a busy poll (an idle worker never leaves the run queue and
            // burns its core), but it steps aside for any runnable thread: five
            // spinners on two cores would otherwise make the acceptor, which
            // feeds them, wait a scheduler slice for a core after every wake-up.
            std::thread::yield_now();
        }
    }
    fn close(&self) {
        self.lock().closed = true;
    }
}

pub(super) fn run(
    config: &Config,
    listener: &TcpListener,
    stop: &StopHandle,
) -> Result<ServeSummary, ServerError> {
    let capacity = config.queue_capacity;
    match config.mode {
        Mode::PoolFutex => run_with(
            Arc::new(BoundedQueue::new(capacity)),
            config,
            listener,
            stop,
        ),
        Mode::PoolStd => run_with(
            Arc::new(StdQueue {
                slots: Mutex::default(),
                not_empty: Condvar::new(),
                not_full: Condvar::new(),
                capacity,
            }),
            config,
            listener,
            stop,
        ),
        _ => run_with(
            Arc::new(SpinQueue {
                slots: FutexMutex::default(),
                capacity,
            }),
            config,
            listener,
            stop,
        ),
    }
}

fn run_with<Q: Handoff>(
    queue: Arc<Q>,
    config: &Config,
    listener: &TcpListener,
    stop: &StopHandle,
) -> Result<ServeSummary, ServerError> {
    let started = Instant::now();
    // Slot 0 is the acceptor (its rejects); slot i + 1 is worker i.
    let tallies: Arc<Vec<Tally>> = Arc::new((0..=config.workers).map(|_| Tally::new()).collect());
    let mut workers = Vec::with_capacity(config.workers);
    let mut result = Ok(());
    let idle = IdleConnections::new(config.workers);
    for index in 0..config.workers {
        let queue = Arc::clone(&queue);
        let tallies = Arc::clone(&tallies);
        let settings = config.connection.clone();
        let active = stop.active();
        let slot = idle.slot(index);
        let spawned = std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                let mut buffers = Buffers::default();
                while let Some(stream) = queue.pop() {
                    let tally = &tallies[index + 1];
                    serve_connection(stream, &settings, tally, &mut buffers, Some(&slot));
                    active.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(e) => {
                result = Err(ServerError::os("spawning a worker thread")(e));
                break;
            }
        }
    }

    if result.is_ok() {
        result = accept_loop(
            &*queue,
            &idle,
            config.when_full,
            listener,
            stop,
            &tallies[0],
        );
    }
    // Stop: what is queued is still served, then the workers see the queue
    // closed and empty and return.
    queue.close();
    for worker in workers {
        let _ = worker.join();
    }
    result?;

    let mut lanes = vec![Lane {
        name: "acceptor".into(),
        counts: tallies[0].snapshot(),
    }];
    lanes.extend((0..config.workers).map(|i| Lane {
        name: format!("worker-{i}"),
        counts: tallies[i + 1].snapshot(),
    }));
    Ok(ServeSummary {
        mode: config.mode.name().into(),
        elapsed: started.elapsed(),
        lanes,
        notes: vec![format!(
            "{} workers, queue of {} ({})",
            config.workers,
            config.queue_capacity,
            match config.when_full {
                WhenFull::Block => "acceptor waits when full",
                WhenFull::Reject => "503 when full",
            }
        )],
    })
}

/// Hands each accepted connection to the queue. When it is full, the
/// keep-alive connection idle the longest is closed first (its worker then
/// takes the next one), then the acceptor waits, or answers 503.
fn accept_loop<Q: Handoff>(
    queue: &Q,
    idle: &IdleConnections,
    when_full: WhenFull,
    listener: &TcpListener,
    stop: &StopHandle,
    acceptor_tally: &Tally,
) -> Result<(), ServerError> {
    while let Some(stream) = accept(listener, stop).map_err(ServerError::os("accept"))? {
        let refused = match queue.try_push(stream) {
            Ok(()) => None,
            Err(TryPushError::Closed(s)) => Some(s),
            Err(TryPushError::Full(s)) => {
                // A worker freed from an idle client takes one soon.
                let freed = idle.close_longest_idle();
                match when_full {
                    WhenFull::Reject if !freed => Some(s),
                    _ => queue.push(s).err(),
                }
            }
        };
        if let Some(stream) = refused {
            reject(stream, acceptor_tally);
            stop.done();
        }
    }
    Ok(())
}
