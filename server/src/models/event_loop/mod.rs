//! The event-loop models: `--workers` loops, each serving many connections
//! on one thread, with the simulated work as a timer instead of a sleep.
//! What the two engines share lives here: starting the loops (the main
//! thread is loop 0, so one worker means one thread in all), the summary,
//! and the slab of connections; each engine is its own module.

mod epoll;
mod uring;

pub(crate) use uring::probe as probe_io_uring;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::Instant;

use rustix::event::EventfdFlags;

use crate::listener::StopHandle;
use crate::stats::{Lane, ServeSummary, Tally};
use crate::{Config, Mode, ServerError};

/// One engine's loop, started on its own thread.
trait EventLoop: Sized {
    /// Sets loop `index` up (its epoll instance or ring) for `shared`.
    fn new(shared: &Shared<'_>, index: usize, tally: &Tally) -> Result<Self, ServerError>;
    /// Serves until the server stops and this loop's connections are done;
    /// returns the most connections it held at once.
    fn run(self, shared: &Shared<'_>, tally: &Tally) -> Result<usize, ServerError>;
}

pub(super) fn run(
    config: &Config,
    listener: &TcpListener,
    loop_listeners: Vec<TcpListener>,
    stop: &StopHandle,
) -> Result<ServeSummary, ServerError> {
    match config.mode {
        Mode::IoUring => run_loops::<uring::Ring>(
            config,
            listener,
            loop_listeners,
            stop,
            if config.reuse_port {
                uring::DESCRIPTION_REUSEPORT
            } else if config.workers > 1 {
                uring::DESCRIPTION_SHARED
            } else {
                uring::DESCRIPTION
            },
        ),
        _ => run_loops::<epoll::Epoll>(
            config,
            listener,
            loop_listeners,
            stop,
            epoll::description(config.reuse_port),
        ),
    }
}

/// What every loop of the server shares.
struct Shared<'a> {
    config: &'a Config,
    listener: &'a TcpListener,
    /// Loops 1 and up's own listening sockets, with `--reuseport`.
    per_loop: Mutex<Vec<Option<TcpListener>>>,
    stop: &'a StopHandle,
    /// An eventfd the first loop to see the stop writes to, waking the
    /// others (the listener's shutdown wakes only some waiters).
    waker: OwnedFd,
}

/// What a loop's methods need besides the loop itself: the server's
/// shared parts and this loop's tally.
#[derive(Clone, Copy)]
struct Loop<'s, 'a> {
    shared: &'s Shared<'a>,
    tally: &'s Tally,
}

impl Shared<'_> {
    /// Wakes every loop: the eventfd stays readable, as nobody reads it.
    fn wake_all(&self) {
        let _ = rustix::io::write(&self.waker, &1u64.to_ne_bytes());
    }

    /// Loop `index`'s own listening socket when each loop has one
    /// (`--reuseport`), bound when the server was; loop 0 keeps the
    /// server's own, which the stop drains and shuts down.
    fn own_listener(&self, index: usize) -> Option<TcpListener> {
        let mut per_loop = self
            .per_loop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        per_loop.get_mut(index.checked_sub(1)?)?.take()
    }
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    a.into_iter().chain(b).min()
}

fn run_loops<L: EventLoop>(
    config: &Config,
    listener: &TcpListener,
    loop_listeners: Vec<TcpListener>,
    stop: &StopHandle,
    description: &str,
) -> Result<ServeSummary, ServerError> {
    let started = Instant::now();
    let waker = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
        .map_err(|e| ServerError::os("eventfd")(e.into()))?;
    let shared = Shared {
        config,
        listener,
        per_loop: Mutex::new(loop_listeners.into_iter().map(Some).collect()),
        stop,
        waker,
    };
    let tallies: Vec<Tally> = (0..config.workers).map(|_| Tally::new()).collect();
    // A loop that fails stops the server: the others drain and end, and
    // the error is what `run` returns, not a server serving on with a
    // loop fewer than it says.
    let run_one = |index: usize, tally: &Tally| {
        let result = L::new(&shared, index, tally).and_then(|l| l.run(&shared, tally));
        if result.is_err() {
            stop.stop();
            shared.wake_all();
        }
        result
    };
    let peaks = std::thread::scope(|scope| {
        let mut others = Vec::new();
        for (index, tally) in tallies.iter().enumerate().skip(1) {
            let spawned = std::thread::Builder::new()
                .name(format!("loop-{index}"))
                .spawn_scoped(scope, move || run_one(index, tally));
            match spawned {
                Ok(handle) => others.push(handle),
                Err(e) => {
                    // Those already running must not be left behind.
                    stop.stop();
                    return Err(ServerError::os("spawning an event-loop thread")(e));
                }
            }
        }
        let first = run_one(0, &tallies[0]);
        let mut peaks = vec![first?];
        for handle in others {
            let peak = handle
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            peaks.push(peak);
        }
        Ok(peaks)
    })?;
    let lanes = tallies
        .iter()
        .enumerate()
        .map(|(i, tally)| Lane {
            name: format!("loop-{i}"),
            counts: tally.snapshot(),
        })
        .collect();
    let loops = config.workers;
    Ok(ServeSummary {
        mode: config.mode.name().into(),
        elapsed: started.elapsed(),
        lanes,
        notes: vec![format!(
            "{loops} event loop{} on {description}, up to {} connections each; at most {} at once",
            if loops == 1 { "" } else { "s" },
            config.max_connections,
            peaks.iter().max().copied().unwrap_or(0)
        )],
    })
}

/// A loop's deadlines, earliest first. A connection has at most one live
/// entry, the one equal to its `scheduled` time: a later deadline is found
/// when that entry comes due (most deadlines only move later, so most
/// requests push nothing), an earlier one pushes a new entry and leaves the
/// old one stale, to be skipped.
#[derive(Default)]
struct Timers(BinaryHeap<Reverse<(Instant, Token)>>);

impl Timers {
    /// Schedules `deadline` for `token` unless its live entry (`scheduled`)
    /// is as early.
    fn schedule(
        &mut self,
        scheduled: &mut Option<Instant>,
        deadline: Option<Instant>,
        token: Token,
    ) {
        if let Some(deadline) = deadline
            && scheduled.is_none_or(|s| deadline < s)
        {
            *scheduled = Some(deadline);
            self.0.push(Reverse((deadline, token)));
        }
    }

    /// The earliest entry's time, live or stale.
    fn next(&self) -> Option<Instant> {
        self.0.peek().map(|Reverse((at, _))| *at)
    }

    /// The next entry due by `now`, live or stale: see [`Timers::claim`].
    fn pop_due(&mut self, now: Instant) -> Option<(Instant, Token)> {
        let &Reverse((when, token)) = self.0.peek()?;
        if when > now {
            return None;
        }
        self.0.pop();
        Some((when, token))
    }

    /// Whether the entry for `when` is its connection's live one (then it
    /// is live no more), given the connection's `scheduled`.
    fn claim(scheduled: &mut Option<Instant>, when: Instant) -> bool {
        if *scheduled != Some(when) {
            return false;
        }
        *scheduled = None;
        true
    }
}

/// The connections of one loop, each named by a token that also carries
/// its slot's generation, so an event for a closed connection can never
/// reach the next one in its slot.
struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<usize>,
    live: usize,
    peak: usize,
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// A slot's index and generation, packed in 56 bits (an engine may use the
/// top byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Token(u64);

impl Token {
    const GENERATION_BITS: u32 = 24;

    fn new(index: usize, generation: u32) -> Token {
        let generation = u64::from(generation) & ((1 << Self::GENERATION_BITS) - 1);
        Token((generation << 32) | index as u64)
    }

    fn index(self) -> usize {
        (self.0 & u64::from(u32::MAX)) as usize
    }
}

impl<T> Slab<T> {
    fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            peak: 0,
        }
    }

    fn insert(&mut self, value: T) -> Token {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                generation: 0,
                value: None,
            });
            self.slots.len() - 1
        });
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.value = Some(value);
        self.live += 1;
        self.peak = self.peak.max(self.live);
        Token::new(index, slot.generation)
    }

    /// The value behind `token`, if it is still the one the token named.
    fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let slot = self.slots.get_mut(token.index())?;
        let current = Token::new(token.index(), slot.generation);
        slot.value.as_mut().filter(|_| current == token)
    }

    fn remove(&mut self, token: Token) -> Option<T> {
        self.get_mut(token)?;
        let value = self.slots[token.index()].value.take();
        self.free.push(token.index());
        self.live -= 1;
        value
    }

    /// Every live value with its token.
    fn tokens(&self) -> Vec<Token> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.value.is_some())
            .map(|(i, slot)| Token::new(i, slot.generation))
            .collect()
    }

    /// The live value `key` rates lowest, with its token.
    fn min_by_key<K: Ord>(&self, mut key: impl FnMut(&T) -> Option<K>) -> Option<Token> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                Some((Token::new(i, slot.generation), key(slot.value.as_ref()?)?))
            })
            .min_by(|a, b| a.1.cmp(&b.1))
            .map(|(token, _)| token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_live_timer_entry_per_connection() {
        let t0 = Instant::now();
        let at = |ms| t0 + std::time::Duration::from_millis(ms);
        let (mut timers, mut scheduled, token) = (Timers::default(), None, Token(7));
        timers.schedule(&mut scheduled, Some(at(100)), token);
        // Later: nothing pushed, found when the earlier entry comes due.
        timers.schedule(&mut scheduled, Some(at(300)), token);
        assert_eq!(timers.0.len(), 1);
        // Earlier: a new entry, the old one left stale.
        timers.schedule(&mut scheduled, Some(at(50)), token);
        assert_eq!((timers.0.len(), timers.next()), (2, Some(at(50))));
        assert_eq!(timers.pop_due(at(10)), None, "nothing due yet");
        let (when, _) = timers.pop_due(at(60)).unwrap();
        assert!(Timers::claim(&mut scheduled, when), "the live entry");
        let (stale, _) = timers.pop_due(at(200)).unwrap();
        assert!(
            !Timers::claim(&mut scheduled, stale),
            "the stale one is skipped"
        );
    }

    #[test]
    fn a_stale_token_never_reaches_the_slots_next_value() {
        let mut slab = Slab::new();
        let first = slab.insert("first");
        assert_eq!(slab.remove(first), Some("first"));
        let second = slab.insert("second");
        assert_eq!(second.index(), first.index(), "the slot is reused");
        assert_eq!(slab.get_mut(first), None);
        assert_eq!(slab.get_mut(second), Some(&mut "second"));
        assert_eq!((slab.live, slab.peak), (1, 1));
        assert_eq!(slab.tokens(), vec![second]);
    }
}
