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

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::event::epoll;

use super::{EventLoop, Loop, Shared, Slab, Timers, Token, earliest};
use crate::http::reject;
use crate::listener::{Accepted, try_accept};
use crate::session::{Session, Step};
use crate::stats::Tally;
use crate::{ServerError, WhenFull};

/// How the summary names the engine.
pub(super) fn description(reuse_port: bool) -> &'static str {
    if reuse_port {
        "epoll, a listener per loop (SO_REUSEPORT)"
    } else {
        "epoll, one shared listener (EPOLLEXCLUSIVE)"
    }
}

/// The listening socket's token; connections use their slot's.
const LISTENER: u64 = u64::MAX;
/// The token of the eventfd that wakes every loop when the server stops.
const WAKER: u64 = u64::MAX - 1;
/// At most this many accepts per readiness event, so one loop cannot take
/// a whole burst while the others idle.
const ACCEPT_BATCH: usize = 32;
/// How long to leave the listener alone after EMFILE and the like.
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(10);

struct Conn {
    stream: TcpStream,
    session: Session,
    /// Whether a read (a write) may find something (room) without waiting
    /// for the next edge.
    readable: bool,
    writable: bool,
    /// The peer's FIN was reported (RDHUP, HUP): a short read no longer
    /// means the socket is empty, as TCP stops a read at the FIN with
    /// the EOF still to come, and no new edge will announce it.
    peer_closed: bool,
    registered: bool,
    /// The time of this connection's live entry in the timer heap.
    scheduled: Option<Instant>,
}

/// One epoll loop.
pub(super) struct Epoll {
    epoll: OwnedFd,
    /// This loop's own listening socket (`--reuseport`), else the server's
    /// shared one is used.
    own: Option<TcpListener>,
    conns: Slab<Conn>,
    /// Deadlines of the connections.
    timers: Timers,
    /// Whether the listener is in the interest list.
    listening: bool,
    /// When to take the listener back after [`Accepted::Exhausted`].
    listen_again: Option<Instant>,
    draining: bool,
}

impl EventLoop for Epoll {
    fn new(shared: &Shared<'_>, index: usize, _tally: &Tally) -> Result<Self, ServerError> {
        let os = |what| move |e: rustix::io::Errno| ServerError::os(what)(e.into());
        let own = shared.own_listener(index);
        own.as_ref()
            .unwrap_or(shared.listener)
            .set_nonblocking(true)
            .map_err(ServerError::os("making the listener non-blocking"))?;
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(os("epoll_create1"))?;
        epoll::add(
            &epoll,
            &shared.waker,
            epoll::EventData::new_u64(WAKER),
            epoll::EventFlags::IN,
        )
        .map_err(os("epoll_ctl (eventfd)"))?;
        let mut event_loop = Epoll {
            epoll,
            own,
            conns: Slab::new(),
            timers: Timers::default(),
            listening: false,
            listen_again: None,
            draining: false,
        };
        event_loop
            .listen(shared, true)
            .map_err(ServerError::os("epoll_ctl (listener)"))?;
        Ok(event_loop)
    }

    fn run(mut self, shared: &Shared<'_>, tally: &Tally) -> Result<usize, ServerError> {
        let mut events = Vec::with_capacity(256);
        let at = Loop { shared, tally };
        loop {
            if self.draining && self.conns.live == 0 {
                return Ok(self.conns.peak);
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
            for event in &events {
                match event.data.u64() {
                    LISTENER => self.accept_ready(at, now)?,
                    WAKER => {}
                    token => self.ready(at, Token(token), event.flags, now),
                }
            }
            // After this batch's reads: a keep-alive connection whose next
            // request came with the stop is served, not closed as idle.
            if !self.draining && shared.stop.is_stopping() {
                self.begin_drain(at, now);
            }
            self.fire_timers(at, now);
        }
    }
}

impl Epoll {
    /// How long epoll_wait may sleep: until the earliest deadline, if any.
    fn timeout(&self, now: Instant) -> Option<rustix::event::Timespec> {
        let next = earliest(self.timers.next(), self.listen_again)?;
        let wait = next.saturating_duration_since(now);
        Some(rustix::event::Timespec {
            tv_sec: wait.as_secs() as _,
            tv_nsec: wait.subsec_nanos() as _,
        })
    }

    /// The socket this loop accepts from.
    fn listener<'s>(&'s self, shared: &'s Shared<'_>) -> &'s TcpListener {
        self.own.as_ref().unwrap_or(shared.listener)
    }

    /// Adds the listener to the interest list, or takes it out.
    fn listen(&mut self, shared: &Shared<'_>, on: bool) -> io::Result<()> {
        if on == self.listening {
            return Ok(());
        }
        let listener = self.listener(shared);
        if on {
            // A shared socket wakes one loop per connection, not all.
            let exclusive = if self.own.is_some() {
                epoll::EventFlags::empty()
            } else {
                epoll::EventFlags::EXCLUSIVE
            };
            epoll::add(
                &self.epoll,
                listener,
                epoll::EventData::new_u64(LISTENER),
                epoll::EventFlags::IN | exclusive,
            )?;
        } else {
            epoll::delete(&self.epoll, listener)?;
        }
        self.listening = on;
        Ok(())
    }

    fn accept_ready(&mut self, at: Loop<'_, '_>, now: Instant) -> Result<(), ServerError> {
        let config = at.shared.config;
        for _ in 0..ACCEPT_BATCH {
            let full = self.conns.live >= config.max_connections;
            if full && config.when_full == WhenFull::Block && self.longest_idle().is_none() {
                // The backlog holds the rest until a connection ends.
                let _ = self.listen(at.shared, false);
                return Ok(());
            }
            let stream = match try_accept(self.listener(at.shared), at.shared.stop) {
                Ok(Accepted::Connection(stream)) => stream,
                Ok(Accepted::Empty) => return Ok(()),
                Ok(Accepted::Stopping) => {
                    self.begin_drain(at, now);
                    return Ok(());
                }
                Ok(Accepted::Exhausted) => {
                    let _ = self.listen(at.shared, false);
                    self.listen_again = Some(now + EXHAUSTED_BACKOFF);
                    return Ok(());
                }
                Err(e) => return Err(ServerError::os("accept")(e)),
            };
            // Someone is here: only now is an idle connection closed for
            // them, never on a wake-up that brings nobody.
            if full && !self.make_room(at) {
                reject(stream, at.tally);
                at.shared.stop.done();
                continue;
            }
            self.admit(at, stream, now);
        }
        Ok(())
    }

    /// At the connection limit: closes the longest-idle keep-alive
    /// connection, as nginx reuses its idle ones first. False if none is
    /// idle.
    fn make_room(&mut self, at: Loop<'_, '_>) -> bool {
        let Some(token) = self.longest_idle() else {
            return false;
        };
        self.close(at, token);
        true
    }

    /// The keep-alive connection idle the longest, if any.
    fn longest_idle(&self) -> Option<Token> {
        self.conns.min_by_key(|conn| conn.session.idle_deadline())
    }

    fn admit(&mut self, at: Loop<'_, '_>, stream: TcpStream, now: Instant) {
        let token = self.conns.insert(Conn {
            stream,
            session: Session::new(&at.shared.config.connection, now),
            // Served at once: with TCP_DEFER_ACCEPT the request is there.
            readable: true,
            writable: true,
            peer_closed: false,
            registered: false,
            scheduled: None,
        });
        self.drive(at, token, now);
    }

    /// An event for the connection behind `token`.
    fn ready(&mut self, at: Loop<'_, '_>, token: Token, flags: epoll::EventFlags, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        use epoll::EventFlags as F;
        conn.readable |= flags.intersects(F::IN | F::RDHUP | F::HUP | F::ERR);
        conn.peer_closed |= flags.intersects(F::RDHUP | F::HUP | F::ERR);
        conn.writable |= flags.intersects(F::OUT | F::HUP | F::ERR);
        self.drive(at, token, now);
    }

    /// Moves the connection behind `token` on as far as it goes without
    /// waiting, then registers it or schedules its deadline as it needs.
    fn drive(&mut self, at: Loop<'_, '_>, token: Token, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let step = advance(conn, at.tally, now);
        if step == Step::Close {
            self.close(at, token);
            return;
        }
        if !conn.registered && step != Step::Wait {
            use epoll::EventFlags as F;
            let registered = epoll::add(
                &self.epoll,
                &conn.stream,
                epoll::EventData::new_u64(token.0),
                F::IN | F::OUT | F::RDHUP | F::ET,
            );
            if let Err(e) = registered {
                conn.session.on_error(&e.into(), at.tally);
                self.close(at, token);
                return;
            }
            conn.registered = true;
        }
        self.timers
            .schedule(&mut conn.scheduled, conn.session.deadline(), token);
    }

    fn close(&mut self, at: Loop<'_, '_>, token: Token) {
        // Closing the descriptor also takes it out of the interest list.
        if self.conns.remove(token).is_none() {
            return;
        }
        at.shared.stop.done();
        if !self.draining && !self.listening && self.listen_again.is_none() {
            // Room again after a full house.
            let _ = self.listen(at.shared, true);
        }
    }

    fn fire_timers(&mut self, at: Loop<'_, '_>, now: Instant) {
        if self.listen_again.is_some_and(|when| when <= now) {
            self.listen_again = None;
            if !self.draining {
                let _ = self.listen(at.shared, true);
            }
        }
        while let Some((when, token)) = self.timers.pop_due(now) {
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            if !Timers::claim(&mut conn.scheduled, when) {
                continue;
            }
            conn.session.on_deadline(now, at.tally);
            self.drive(at, token, now);
        }
    }

    /// Stops accepting, wakes the other loops, serves what the stopper took
    /// from the backlog, and ends idle keep-alive connections.
    fn begin_drain(&mut self, at: Loop<'_, '_>, now: Instant) {
        if self.draining {
            return;
        }
        self.draining = true;
        let _ = self.listen(at.shared, false);
        self.listen_again = None;
        if let Some(own) = self.own.take() {
            // What waits in this loop's own backlog is served, as the
            // stopper does for the shared one; closing it then takes it out
            // of the port's group.
            while let Some(stream) = accept_now(&own) {
                at.shared.stop.admitted();
                self.admit(at, stream, now);
            }
        }
        let _ = epoll::delete(&self.epoll, &at.shared.waker);
        at.shared.wake_all();
        while let Some(stream) = at.shared.stop.take_stashed(at.shared.listener) {
            if stream.set_nonblocking(true).is_ok() {
                self.admit(at, stream, now);
            } else {
                at.shared.stop.done();
            }
        }
        for token in self.conns.tokens() {
            if let Some(conn) = self.conns.get_mut(token) {
                conn.session.drain();
                self.drive(at, token, now);
            }
        }
    }
}

/// The next connection waiting on a non-blocking `listener`, if any.
fn accept_now(listener: &TcpListener) -> Option<TcpStream> {
    use rustix::io::Errno;
    use rustix::net::SocketFlags;
    loop {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
            Ok(fd) => return Some(TcpStream::from(fd)),
            Err(Errno::INTR | Errno::CONNABORTED | Errno::PROTO) => {}
            Err(_) => return None,
        }
    }
}

/// Reads, writes and half-closes for `conn` until it must wait for the
/// kernel (the next edge) or the clock, or is done; returns that step.
fn advance(conn: &mut Conn, tally: &Tally, now: Instant) -> Step {
    loop {
        match conn.session.step() {
            Step::Read if conn.readable => {
                let buf = conn.session.read_buf();
                let want = buf.len();
                match (&conn.stream).read(buf) {
                    Ok(0) => conn.session.on_eof(tally),
                    Ok(n) => {
                        conn.readable = n == want || conn.peer_closed;
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
            step => return step,
        }
    }
}
