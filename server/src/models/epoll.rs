//! `epoll`: one event loop per worker, each serving many connections on one
//! thread, as nginx and node do. Nothing blocks but epoll_wait(2): sockets
//! are non-blocking, and the simulated work is a deadline in the loop's
//! timer heap, so ten requests of 1 s each finish together after 1 s.
//!
//! Choices, each visible in a trace:
//!
//! * One listening socket shared by every loop, registered with
//!   EPOLLEXCLUSIVE so a new connection wakes one loop, not all (nginx's
//!   default since 1.11.3 without `reuseport`); stopping shuts that one
//!   socket down as in every other mode.
//! * Connections edge-triggered, registered once for input and output:
//!   no epoll_ctl(2) per request.
//! * A connection is first served straight from accept4(2), before it is
//!   registered: with TCP_DEFER_ACCEPT its request is already there, so a
//!   one-request connection costs accept4, read, write and close, and
//!   never an epoll_ctl.
//! * A read shorter than its buffer means the socket is empty, so the loop
//!   waits for the next edge instead of reading again to see EAGAIN.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, epoll};

use crate::http::reject;
use crate::listener::{Accepted, StopHandle, try_accept};
use crate::session::{Session, Step};
use crate::stats::{Lane, ServeSummary, Tally};
use crate::{Config, ServerError, WhenFull};

/// The listening socket's token; connections use their slot's.
const LISTENER: u64 = u64::MAX;
/// The token of the eventfd that wakes every loop when the server stops.
const WAKER: u64 = u64::MAX - 1;
/// At most this many accepts per readiness event, so one loop cannot take
/// a whole burst while the others idle.
const ACCEPT_BATCH: usize = 32;
/// How long to leave the listener alone after EMFILE and the like.
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(10);

pub(super) fn run(
    config: &Config,
    listener: &TcpListener,
    stop: &StopHandle,
) -> Result<ServeSummary, ServerError> {
    let started = Instant::now();
    listener
        .set_nonblocking(true)
        .map_err(ServerError::os("making the listener non-blocking"))?;
    let waker = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
        .map_err(|e| ServerError::os("eventfd")(e.into()))?;
    let shared = Shared {
        config,
        listener,
        stop,
        waker,
    };
    let tallies: Vec<Tally> = (0..config.workers).map(|_| Tally::new()).collect();
    let peaks = std::thread::scope(|scope| {
        let mut others = Vec::new();
        for (index, tally) in tallies.iter().enumerate().skip(1) {
            let shared = &shared;
            let spawned = std::thread::Builder::new()
                .name(format!("loop-{index}"))
                .spawn_scoped(scope, move || EventLoop::new(shared, tally)?.run());
            match spawned {
                Ok(handle) => others.push(handle),
                Err(e) => {
                    // Those already running must not be left behind.
                    stop.stop();
                    return Err(ServerError::os("spawning an event-loop thread")(e));
                }
            }
        }
        // The main thread is loop 0: with one worker, one thread in all.
        let first = EventLoop::new(&shared, &tallies[0]).and_then(EventLoop::run);
        if first.is_err() {
            stop.stop();
        }
        let mut peaks = vec![first?];
        for handle in others {
            peaks.push(
                handle
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))?,
            );
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
    Ok(ServeSummary {
        mode: config.mode.name().into(),
        elapsed: started.elapsed(),
        lanes,
        notes: vec![format!(
            "{} on epoll, one shared listener (EPOLLEXCLUSIVE), up to {} connections each; at most {} at once",
            loops(config.workers),
            config.max_connections,
            peaks.iter().max().copied().unwrap_or(0)
        )],
    })
}

/// "1 event loop", "2 event loops".
pub(crate) fn loops(n: usize) -> String {
    format!("{n} event loop{}", if n == 1 { "" } else { "s" })
}

/// What every loop of the server shares.
struct Shared<'a> {
    config: &'a Config,
    listener: &'a TcpListener,
    stop: &'a StopHandle,
    waker: OwnedFd,
}

struct Conn {
    stream: TcpStream,
    session: Session,
    /// Whether a read (a write) may find something (room) without waiting
    /// for the next edge.
    readable: bool,
    writable: bool,
    registered: bool,
    /// The time of this connection's live entry in the timer heap.
    scheduled: Option<Instant>,
}

struct Slot {
    /// Bumped on every reuse, so an event for a closed connection cannot
    /// reach the next one in its slot.
    generation: u32,
    conn: Option<Conn>,
}

fn token(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

struct EventLoop<'a> {
    shared: &'a Shared<'a>,
    tally: &'a Tally,
    epoll: OwnedFd,
    slots: Vec<Slot>,
    free: Vec<usize>,
    live: usize,
    peak: usize,
    /// Deadlines, earliest first; an entry is live only while it equals its
    /// connection's `scheduled` (see [`EventLoop::schedule`]).
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Whether the listener is in the interest list.
    listening: bool,
    /// When to take the listener back after [`Accepted::Exhausted`] or a
    /// full house.
    listen_again: Option<Instant>,
    draining: bool,
}

impl<'a> EventLoop<'a> {
    fn new(shared: &'a Shared<'a>, tally: &'a Tally) -> Result<Self, ServerError> {
        let os = |what| move |e: rustix::io::Errno| ServerError::os(what)(e.into());
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(os("epoll_create1"))?;
        epoll::add(
            &epoll,
            &shared.waker,
            epoll::EventData::new_u64(WAKER),
            epoll::EventFlags::IN,
        )
        .map_err(os("epoll_ctl (eventfd)"))?;
        let mut event_loop = EventLoop {
            shared,
            tally,
            epoll,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            peak: 0,
            timers: BinaryHeap::new(),
            listening: false,
            listen_again: None,
            draining: false,
        };
        event_loop
            .listen(true)
            .map_err(ServerError::os("epoll_ctl (listener)"))?;
        Ok(event_loop)
    }

    /// Serves until the server stops and every connection of this loop is
    /// done; returns the most connections it held at once.
    fn run(mut self) -> Result<usize, ServerError> {
        let mut events = Vec::with_capacity(256);
        loop {
            if self.draining && self.live == 0 {
                return Ok(self.peak);
            }
            let timeout = self.timeout(Instant::now());
            events.clear();
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                timeout.as_ref(),
            ) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(ServerError::os("epoll_wait")(e.into())),
            }
            let now = Instant::now();
            if !self.draining && self.shared.stop.is_stopping() {
                self.begin_drain(now);
            }
            for event in &events {
                match event.data.u64() {
                    LISTENER => self.accept_ready(now)?,
                    WAKER => {}
                    token => self.ready(token, event.flags, now),
                }
            }
            self.fire_timers(now);
        }
    }

    /// How long epoll_wait may sleep: until the earliest deadline, if any.
    fn timeout(&self, now: Instant) -> Option<rustix::event::Timespec> {
        let next = self.timers.peek().map(|Reverse((at, _))| *at);
        let next = match (next, self.listen_again) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        let wait = next.saturating_duration_since(now);
        Some(rustix::event::Timespec {
            tv_sec: wait.as_secs() as _,
            tv_nsec: wait.subsec_nanos() as _,
        })
    }

    /// Adds the listener to the interest list, or takes it out.
    fn listen(&mut self, on: bool) -> io::Result<()> {
        if on == self.listening {
            return Ok(());
        }
        if on {
            epoll::add(
                &self.epoll,
                self.shared.listener,
                epoll::EventData::new_u64(LISTENER),
                epoll::EventFlags::IN | epoll::EventFlags::EXCLUSIVE,
            )?;
        } else {
            epoll::delete(&self.epoll, self.shared.listener)?;
        }
        self.listening = on;
        Ok(())
    }

    fn accept_ready(&mut self, now: Instant) -> Result<(), ServerError> {
        let shared = self.shared;
        for _ in 0..ACCEPT_BATCH {
            if self.live >= shared.config.max_connections
                && !self.make_room()
                && shared.config.when_full == WhenFull::Block
            {
                // The backlog holds the rest until a connection ends.
                let _ = self.listen(false);
                return Ok(());
            }
            let stream = match try_accept(shared.listener, shared.stop) {
                Ok(Accepted::Connection(stream)) => stream,
                Ok(Accepted::Empty) => return Ok(()),
                Ok(Accepted::Stopping) => {
                    self.begin_drain(now);
                    return Ok(());
                }
                Ok(Accepted::Exhausted) => {
                    let _ = self.listen(false);
                    self.listen_again = Some(now + EXHAUSTED_BACKOFF);
                    return Ok(());
                }
                Err(e) => return Err(ServerError::os("accept")(e)),
            };
            if self.live >= shared.config.max_connections {
                reject(stream, self.tally);
                shared.stop.done();
                continue;
            }
            self.admit(stream, now);
        }
        Ok(())
    }

    /// At the connection limit: closes the longest-idle keep-alive
    /// connection, as nginx reuses its idle ones first. False if none is
    /// idle.
    fn make_room(&mut self) -> bool {
        let idle = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| Some((i, slot.conn.as_ref()?)))
            .filter(|(_, conn)| conn.session.is_idle())
            .min_by_key(|(_, conn)| conn.session.deadline());
        let Some((index, _)) = idle else {
            return false;
        };
        self.close(index);
        true
    }

    fn admit(&mut self, stream: TcpStream, now: Instant) {
        let conn = Conn {
            stream,
            session: Session::new(&self.shared.config.connection, now),
            // Served at once: with TCP_DEFER_ACCEPT the request is there.
            readable: true,
            writable: true,
            registered: false,
            scheduled: None,
        };
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                generation: 0,
                conn: None,
            });
            self.slots.len() - 1
        });
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.conn = Some(conn);
        self.live += 1;
        self.peak = self.peak.max(self.live);
        self.drive(index, now);
    }

    /// An event for the connection behind `token`.
    fn ready(&mut self, token: u64, flags: epoll::EventFlags, now: Instant) {
        let index = (token & u64::from(u32::MAX)) as usize;
        let generation = (token >> 32) as u32;
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let Some(conn) = slot.conn.as_mut().filter(|_| slot.generation == generation) else {
            return;
        };
        use epoll::EventFlags as F;
        conn.readable |= flags.intersects(F::IN | F::RDHUP | F::HUP | F::ERR);
        conn.writable |= flags.intersects(F::OUT | F::HUP | F::ERR);
        self.drive(index, now);
    }

    /// Moves the connection in `index` on as far as it goes without
    /// waiting, then registers it or schedules its deadline as it needs.
    fn drive(&mut self, index: usize, now: Instant) {
        let tally = self.tally;
        let slot = &mut self.slots[index];
        let generation = slot.generation;
        let Some(conn) = slot.conn.as_mut() else {
            return;
        };
        let step = loop {
            match conn.session.step() {
                Step::Read if conn.readable => {
                    let buf = conn.session.read_buf();
                    let want = buf.len();
                    match (&conn.stream).read(buf) {
                        Ok(0) => conn.session.on_eof(tally),
                        Ok(n) => {
                            conn.readable = n == want;
                            conn.session.on_read(n, now);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.readable = false,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => conn.session.on_error(&e, tally),
                    }
                }
                Step::Send if conn.writable => {
                    let out = conn.session.to_send();
                    let want = out.len();
                    match (&conn.stream).write(out) {
                        Ok(n) => {
                            conn.writable = n == want;
                            conn.session.on_sent(n, now, tally);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => conn.session.on_error(&e, tally),
                    }
                }
                Step::Shutdown => {
                    let _ = conn.stream.shutdown(Shutdown::Write);
                    conn.session.on_shutdown(now);
                }
                step => break step,
            }
        };
        if step == Step::Close {
            self.close(index);
            return;
        }
        if !conn.registered && step != Step::Wait {
            use epoll::EventFlags as F;
            let registered = epoll::add(
                &self.epoll,
                &conn.stream,
                epoll::EventData::new_u64(token(index, generation)),
                F::IN | F::OUT | F::RDHUP | F::ET,
            );
            if let Err(e) = registered {
                conn.session.on_error(&e.into(), tally);
                self.close(index);
                return;
            }
            conn.registered = true;
        }
        if let Some(deadline) = conn.session.deadline()
            && conn.scheduled.is_none_or(|s| deadline < s)
        {
            conn.scheduled = Some(deadline);
            self.timers
                .push(Reverse((deadline, token(index, generation))));
        }
    }

    fn close(&mut self, index: usize) {
        // Closing the descriptor also takes it out of the interest list.
        if self.slots[index].conn.take().is_none() {
            return;
        }
        self.free.push(index);
        self.live -= 1;
        self.shared.stop.done();
        if !self.draining && !self.listening && self.listen_again.is_none() {
            // Room again after a full house.
            let _ = self.listen(true);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        if self.listen_again.is_some_and(|at| at <= now) {
            self.listen_again = None;
            if !self.draining {
                let _ = self.listen(true);
            }
        }
        while let Some(&Reverse((at, token))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let index = (token & u64::from(u32::MAX)) as usize;
            let slot = &mut self.slots[index];
            let Some(conn) = slot.conn.as_mut() else {
                continue;
            };
            if slot.generation != (token >> 32) as u32 || conn.scheduled != Some(at) {
                continue;
            }
            conn.scheduled = None;
            conn.session.on_deadline(now, self.tally);
            self.drive(index, now);
        }
    }

    /// Stops accepting, wakes the other loops, serves what the stopper took
    /// from the backlog, and ends idle keep-alive connections.
    fn begin_drain(&mut self, now: Instant) {
        if self.draining {
            return;
        }
        self.draining = true;
        let _ = self.listen(false);
        self.listen_again = None;
        let _ = epoll::delete(&self.epoll, &self.shared.waker);
        let _ = rustix::io::write(&self.shared.waker, &1u64.to_ne_bytes());
        while let Some(stream) = self.shared.stop.take_stashed(self.shared.listener) {
            if stream.set_nonblocking(true).is_ok() {
                self.admit(stream, now);
            } else {
                self.shared.stop.done();
            }
        }
        for index in 0..self.slots.len() {
            if let Some(conn) = self.slots[index].conn.as_mut() {
                conn.session.drain();
                self.drive(index, now);
            }
        }
    }
}
