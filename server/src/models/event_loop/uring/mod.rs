//! `io-uring`: the event loop on io_uring(7). Where epoll says "this socket
//! is ready, now call read", a ring takes the read itself and says when it
//! is done, so a trace shows almost nothing but io_uring_enter(2): the
//! accepts, receives, sends, closes and delays are operations inside it.
//!
//! * One ring: one multishot accept on the listener, one submission and a
//!   completion per connection (Linux 5.19). Several rings on one shared
//!   listener: each keeps one plain accept armed instead, taken again after
//!   each connection. An accept waits in the listener's queue as an
//!   exclusive, one-shot waiter: a connection wakes the ring at the head,
//!   which leaves the queue and comes back at its tail, so rings take
//!   connections in turn. A multishot accept stays at the head and took
//!   every connection (1600 to 0, measured). With `--reuseport`, each ring
//!   has a socket of its own and a multishot accept on it, and the kernel
//!   splits connections by their addresses' hash instead.
//! * Per connection, at most one operation at a time: a receive, a send,
//!   or the delay as an IORING_OP_TIMEOUT. While it is in the kernel, its
//!   buffer is the kernel's: the connection is neither touched nor freed
//!   until the completion arrives.
//! * Read and send deadlines are kept in the loop's own timer heap, as in
//!   epoll, and the wait for completions is bounded by the earliest one; an
//!   operation still pending at its deadline is cancelled
//!   (IORING_OP_ASYNC_CANCEL). Linking a timeout to every receive and send
//!   instead cost two more entries, two more completions and a kernel timer
//!   per operation: measured, about 10 % more server CPU per keep-alive
//!   request (medians of 3 on 2 cores: 8.2 against 7.4 µs).
//! * A connection's first receive is a plain one into the session's
//!   buffer, tried at once (with TCP_DEFER_ACCEPT its request is there).
//!   Once a keep-alive connection has had an answer, it gets a multishot
//!   receive instead (Linux 6.0), into a ring of provided buffers
//!   ([`buffers`]): it stays armed from request to request, so a keep-alive
//!   request costs one submission (its send) instead of two, and no poll
//!   armed and disarmed. This is the one exception to "one operation at a
//!   time": the receive stays in the kernel while the answer is sent or
//!   delayed, and what it brings early waits in the connection's inbox
//!   (bounded: past [`INBOX_LIMIT`] the receive is cancelled, and TCP's
//!   window holds the rest). A connection is closed only once its
//!   multishot receive has ended. Without buffer rings, every receive is a
//!   plain one, and one that follows an answer waits for data before it
//!   tries (IORING_RECVSEND_POLL_FIRST).
//! * Closes are IORING_OP_CLOSE; half-closes, rare, are shutdown(2).
//! * The ring is set up single-issuer with deferred task work, so
//!   completions are run only when the loop asks for them, in one
//!   io_uring_enter that also submits the next batch.

use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

mod buffers;

use buffers::Buffers;

use super::{EventLoop, Loop, Shared, Slab, Timers, Token, earliest};
use crate::http::reject;
use crate::listener::say_accept_error;
use crate::session::{Session, Step};
use crate::stats::Tally;
use crate::{ServerError, WhenFull};

/// How the summary names the engine.
pub(super) const DESCRIPTION: &str = "io_uring (multishot accept, multishot recv into provided buffers, send, close; delays as IORING_OP_TIMEOUT)";
/// The same, several rings taking turns at one shared listener.
pub(super) const DESCRIPTION_SHARED: &str = "io_uring (accept, multishot recv into provided buffers, send, close; delays as IORING_OP_TIMEOUT), rings taking turns at a shared listener";
/// The same, each ring with a listening socket of its own.
pub(super) const DESCRIPTION_REUSEPORT: &str = "io_uring (multishot accept, multishot recv into provided buffers, send, close; delays as IORING_OP_TIMEOUT), a listener per ring (SO_REUSEPORT)";

/// Submission queue entries; completions get twice as many, and the kernel
/// keeps any overflow (IORING_FEAT_NODROP), so this bounds batches only.
const ENTRIES: u32 = 256;
/// How long a stopping ring waits at most for its cancelled accept to
/// let go of the listening socket.
const ACCEPT_RELEASE_LIMIT: Duration = Duration::from_secs(1);
/// How long to leave the listener alone after EMFILE and the like.
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(10);
/// Bytes a connection's inbox may hold before its multishot receive is
/// cancelled: a client that pipelines faster than it reads its answers is
/// held back by TCP, not by our memory. The completions of the batch in
/// which the limit is passed still add theirs: what the kernel had already
/// taken from the socket for us, at most the 256 provided buffers' 512 KiB
/// (measured: 120-300 KiB a connection under a flood).
const INBOX_LIMIT: usize = 32 * 1024;
/// An emptied inbox with more room than this gives it back.
const INBOX_KEPT: usize = 4 * 1024;

/// What a completion is for, in the top byte of its user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Accept = 1,
    Wake,
    Recv,
    /// A multishot receive: a completion per arrival.
    RecvMulti,
    Send,
    Delay,
    Close,
    Cancel,
    /// The backoff after the listener ran out of descriptors.
    Rearm,
}

impl Op {
    const ALL: [Op; 9] = [
        Op::Accept,
        Op::Wake,
        Op::Recv,
        Op::RecvMulti,
        Op::Send,
        Op::Delay,
        Op::Close,
        Op::Cancel,
        Op::Rearm,
    ];

    fn tag(self, token: Token) -> u64 {
        ((self as u64) << 56) | token.0
    }

    fn untag(data: u64) -> Option<(Op, Token)> {
        let op = Op::ALL.into_iter().find(|op| *op as u64 == data >> 56)?;
        Some((op, Token(data & ((1 << 56) - 1))))
    }
}

/// The token of the loop's own operations (accept, wake, rearm).
const LOOP: Token = Token(0);

struct Conn {
    /// Taken when the close is submitted.
    fd: OwnedFd,
    session: Session,
    /// The operation of this connection in the kernel, if any: its buffer
    /// is not ours to touch, nor the connection to free, until it
    /// completes.
    pending: Option<Op>,
    /// The delay's relative time, which the kernel reads when the entry is
    /// submitted; boxed so it never moves before then.
    timespec: Box<types::Timespec>,
    /// The time of this connection's live entry in the timer heap.
    scheduled: Option<Instant>,
    /// The last operation to complete was a send: a keep-alive client
    /// sends its next request only once it has the answer, so the next
    /// receive would find nothing yet.
    answered: bool,
    /// The connection's multishot receive, if it has one.
    multishot: Multishot,
    /// Bytes the multishot receive brought before the session asked for
    /// them, oldest first.
    inbox: VecDeque<u8>,
    /// How the peer's side ended, as the multishot receive saw it ahead of
    /// the session: 0 for an end of stream, else the error number.
    peer_end: Option<i32>,
}

/// A connection's multishot receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Multishot {
    Off,
    Armed,
    /// Cancelled, its last completion still to come.
    Cancelling,
}

impl Conn {
    /// Hands the session as much of the inbox as it takes; false if the
    /// inbox is empty.
    fn feed(&mut self, now: Instant) -> bool {
        if self.inbox.is_empty() {
            return false;
        }
        let buf = self.session.read_buf();
        let n = buf.len().min(self.inbox.len());
        let (front, back) = self.inbox.as_slices();
        let from_front = n.min(front.len());
        buf[..from_front].copy_from_slice(&front[..from_front]);
        buf[from_front..n].copy_from_slice(&back[..n - from_front]);
        self.inbox.drain(..n);
        self.session.on_read(n, now);
        if self.inbox.is_empty() && self.inbox.capacity() > INBOX_KEPT {
            // A burst's room is not kept for the connection's life.
            self.inbox = VecDeque::new();
        }
        true
    }

    /// Tells the session how the peer's side ended, once it asks for
    /// bytes and the inbox is empty; false if nothing is to tell.
    fn deliver_end(&mut self, tally: &Tally) -> bool {
        match self.peer_end.take() {
            None => false,
            Some(0) => {
                self.session.on_eof(tally);
                true
            }
            Some(errno) => {
                let error = io::Error::from_raw_os_error(errno);
                self.session.on_error(&error, tally);
                true
            }
        }
    }
}

/// One io_uring loop.
pub(super) struct Ring {
    ring: IoUring,
    /// This loop's own listening socket (SO_REUSEPORT), else the server's.
    own: Option<std::net::TcpListener>,
    conns: Slab<Conn>,
    /// Deadlines of the connections.
    timers: Timers,
    /// An accept is armed.
    accepting: bool,
    /// Rings share the listener: one plain accept at a time, so that each
    /// goes back to the end of the listener's queue (see the module's doc).
    accept_in_turn: bool,
    /// A cancel of the accept is on its way (the connection limit).
    cancelling_accept: bool,
    /// Accepted connections waiting for room (`--when-full block`), first
    /// come first served.
    parked: VecDeque<OwnedFd>,
    rearm_pending: bool,
    backoff: Box<types::Timespec>,
    draining: bool,
    /// When the stop stops waiting for the cancelled accept's last
    /// completion (see [`Ring::listener_released`]).
    accept_given_up: Option<Instant>,
    /// A connection was ever accepted: an EINVAL after that is the stop, not
    /// a kernel without multishot accept.
    accepted_any: bool,
    /// The provided buffers of the multishot receives; none where the
    /// kernel refused them (or multishot receives).
    buffers: Option<Buffers>,
    /// Multishot receives in the kernel (armed or cancelling).
    receivers: usize,
    /// The kernel refused a multishot receive.
    multishot_refused: bool,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Connections still here mean an error ended the loop with their
        // operations in the kernel, which the ring's teardown (after this,
        // in a kernel worker) cancels: until then, what their receives
        // write to (the provided buffers, a session's buffer) is kept.
        if self.conns.live > 0 || self.receivers > 0 {
            if let Some(buffers) = self.buffers.take() {
                buffers.leak();
            }
            for token in self.conns.tokens() {
                if let Some(conn) = self.conns.remove(token) {
                    // The socket is closed (its client is not left waiting);
                    // the session's buffer is kept.
                    std::mem::forget(conn.session);
                }
            }
        }
    }
}

impl EventLoop for Ring {
    fn new(shared: &Shared<'_>, index: usize, _tally: &Tally) -> Result<Self, ServerError> {
        let own = shared.own_listener(index);
        let accept_in_turn = own.is_none() && shared.config.workers > 1;
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(ENTRIES)
            .or_else(|_| IoUring::new(ENTRIES))
            .map_err(|e| match e.raw_os_error() {
                // Out of descriptors or memory is not a kernel without
                // io_uring.
                Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM) => {
                    ServerError::os("io_uring_setup")(e)
                }
                _ => ServerError::Unsupported(unavailable(&e)),
            })?;
        let buffers = Buffers::register(&ring.submitter()).ok();
        Ok(Ring {
            ring,
            own,
            conns: Slab::new(),
            timers: Timers::default(),
            accepting: false,
            accept_in_turn,
            cancelling_accept: false,
            parked: VecDeque::new(),
            rearm_pending: false,
            backoff: Box::new(timespec(EXHAUSTED_BACKOFF)),
            draining: false,
            accept_given_up: None,
            accepted_any: false,
            buffers,
            receivers: 0,
            multishot_refused: false,
        })
    }

    fn run(mut self, shared: &Shared<'_>, tally: &Tally) -> Result<usize, ServerError> {
        let at = Loop { shared, tally };
        self.arm_accept(shared);
        let wake = opcode::PollAdd::new(types::Fd(shared.waker.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(Op::Wake.tag(LOOP));
        self.push(&[wake]);
        let mut completions = Vec::with_capacity(ENTRIES as usize * 2);
        loop {
            if self.draining && self.conns.live == 0 && self.listener_released(Instant::now()) {
                // The closes just queued must reach the kernel.
                let _ = self.ring.submit();
                return Ok(self.conns.peak);
            }
            match self.wait(Instant::now()) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EBUSY | libc::ETIME)
                    ) => {}
                Err(e) => return Err(ServerError::os("io_uring_enter")(e)),
            }
            let now = Instant::now();
            completions.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for (data, result, flags) in completions.drain(..) {
                self.complete(at, data, result, flags, now)?;
            }
            // After this batch's receives: a request that came with the
            // stop is served, not dropped with an "idle" connection.
            if !self.draining && shared.stop.is_stopping() {
                self.begin_drain(at, now);
            }
            self.fire_timers(at, now);
        }
    }
}

/// Whether the kernel gives us a ring at all, checked before the server
/// says it listens.
pub(crate) fn probe() -> Result<(), ServerError> {
    IoUring::new(2)
        .map(drop)
        .map_err(|e| ServerError::Unsupported(unavailable(&e)))
}

/// The one line said when the kernel refuses a ring.
fn unavailable(error: &io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| v != "0")
        .map(|v| format!("; sysctl kernel.io_uring_disabled is {v} (0 allows it)"))
        .unwrap_or_default();
    format!("io_uring is not available: {error}{disabled}; --mode epoll needs nothing more")
}

fn timespec(duration: Duration) -> types::Timespec {
    types::Timespec::new()
        .sec(duration.as_secs())
        .nsec(duration.subsec_nanos())
}

impl Ring {
    /// Whether the accept no longer holds the listening socket, or we gave
    /// up waiting for its last completion. An operation in the kernel holds
    /// its file until it completes, and a ring torn down at exit completes
    /// it later, in a kernel worker: exiting before then left the port
    /// taken for milliseconds after the exit, and a restart at once failed.
    fn listener_released(&self, now: Instant) -> bool {
        self.awaiting_accept(now).is_none()
    }

    /// Until when a stopping ring still waits for its accept's last
    /// completion: only while the accept is out and the limit not past
    /// (a deadline already past would make every wait return at once).
    fn awaiting_accept(&self, now: Instant) -> Option<Instant> {
        self.accept_given_up
            .filter(|&by| self.accepting && by > now)
    }

    /// Submits what is queued and waits for a completion, or for the
    /// earliest deadline.
    fn wait(&mut self, now: Instant) -> io::Result<usize> {
        let Some(next) = earliest(self.timers.next(), self.awaiting_accept(now)) else {
            return self.ring.submit_and_wait(1);
        };
        let timeout = timespec(next.saturating_duration_since(now));
        let args = types::SubmitArgs::new().timespec(&timeout);
        self.ring.submitter().submit_with_args(1, &args)
    }

    /// Cancels the operations of connections whose deadline has come; the
    /// cancelled completion then runs the deadline.
    fn fire_timers(&mut self, at: Loop<'_, '_>, now: Instant) {
        while let Some((when, token)) = self.timers.pop_due(now) {
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            if !Timers::claim(&mut conn.scheduled, when) {
                continue;
            }
            match conn.pending {
                Some(op @ (Op::Recv | Op::Send))
                    if conn.session.deadline().is_some_and(|d| d <= now) =>
                {
                    let cancel = opcode::AsyncCancel::new(op.tag(token))
                        .build()
                        .user_data(Op::Cancel.tag(token));
                    self.push(&[cancel]);
                }
                // Not yet due: the deadline moved on since.
                Some(Op::Recv | Op::Send) => self.schedule(token),
                // The kernel times the delay itself.
                Some(_) => {}
                None => self.drive(at, token, now),
            }
        }
    }

    /// Puts the deadline of the connection behind `token` in the heap,
    /// unless an entry as early is there already.
    fn schedule(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        self.timers
            .schedule(&mut conn.scheduled, conn.session.deadline(), token);
    }

    /// Queues `entries`, submitting what is queued first if they do not
    /// fit.
    fn push(&mut self, entries: &[squeue::Entry]) {
        loop {
            let mut queue = self.ring.submission();
            // SAFETY: every buffer and timespec an entry points to is owned
            // by a connection (or the loop), heap-allocated, and neither
            // moved nor freed until the entry's completion is reaped (see
            // `Conn::busy`); the entries were built from live descriptors.
            if unsafe { queue.push_multiple(entries) }.is_ok() {
                return;
            }
            drop(queue);
            // Full: hand the queued entries to the kernel, then retry.
            if let Err(e) = self.ring.submit()
                && e.raw_os_error() != Some(libc::EINTR)
            {
                eprintln!("tracebench serve: io_uring_enter: {e}");
                std::thread::sleep(EXHAUSTED_BACKOFF);
            }
        }
    }

    fn arm_accept(&mut self, shared: &Shared<'_>) {
        let listener = types::Fd(self.own.as_ref().unwrap_or(shared.listener).as_raw_fd());
        let accept = if self.accept_in_turn {
            opcode::Accept::new(listener, std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build()
        } else {
            opcode::AcceptMulti::new(listener)
                .flags(libc::SOCK_CLOEXEC)
                .build()
        }
        .user_data(Op::Accept.tag(LOOP));
        self.push(&[accept]);
        self.accepting = true;
    }

    /// Arms the accept again if nothing stands in the way.
    fn resume_accepting(&mut self, shared: &Shared<'_>) {
        let full = shared.config.when_full == WhenFull::Block
            && self.conns.live >= shared.config.max_connections;
        let waiting = !self.parked.is_empty();
        if !self.accepting && !self.draining && !self.rearm_pending && !full && !waiting {
            self.arm_accept(shared);
        }
    }

    fn complete(
        &mut self,
        at: Loop<'_, '_>,
        data: u64,
        result: i32,
        flags: u32,
        now: Instant,
    ) -> Result<(), ServerError> {
        let Some((op, token)) = Op::untag(data) else {
            return Ok(());
        };
        match op {
            Op::Accept => self.accepted(at, result, flags, now)?,
            Op::Wake if at.shared.stop.is_stopping() => self.begin_drain(at, now),
            Op::Rearm => {
                self.rearm_pending = false;
                self.resume_accepting(at.shared);
            }
            Op::Recv | Op::Send | Op::Delay => self.finished(at, op, token, result, now),
            Op::RecvMulti => self.received(at, token, result, flags, now),
            Op::Wake | Op::Close | Op::Cancel => {}
        }
        Ok(())
    }

    fn accepted(
        &mut self,
        at: Loop<'_, '_>,
        result: i32,
        flags: u32,
        now: Instant,
    ) -> Result<(), ServerError> {
        if !cqueue::more(flags) {
            self.accepting = false;
            self.cancelling_accept = false;
        }
        if result >= 0 {
            // SAFETY: the kernel just made this descriptor for us.
            let fd = unsafe { OwnedFd::from_raw_fd(result) };
            self.accepted_any = true;
            at.shared.stop.admitted();
            self.take(at, fd, now);
        } else {
            let errno = -result;
            let stopping = at.shared.stop.is_stopping();
            match errno {
                _ if stopping => self.begin_drain(at, now),
                libc::EINVAL if !self.accepted_any => {
                    return Err(ServerError::Unsupported(
                        "io_uring refused a multishot accept (it needs Linux 5.19 or later); --mode epoll works here"
                            .into(),
                    ));
                }
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                    say_accept_error(&io::Error::from_raw_os_error(errno));
                    if !self.accepting && !self.rearm_pending {
                        self.rearm_pending = true;
                        let wait = opcode::Timeout::new(&*self.backoff)
                            .build()
                            .user_data(Op::Rearm.tag(LOOP));
                        self.push(&[wait]);
                    }
                }
                _ => {}
            }
        }
        self.resume_accepting(at.shared);
        Ok(())
    }

    /// A new connection, within the limit or not.
    fn take(&mut self, at: Loop<'_, '_>, fd: OwnedFd, now: Instant) {
        let config = at.shared.config;
        let full = self.conns.live >= config.max_connections;
        if self.draining || !full || self.make_room(at, now) {
            return self.admit(at, fd, now);
        }
        match config.when_full {
            WhenFull::Reject => {
                reject(TcpStream::from(fd), at.tally);
                at.shared.stop.done();
            }
            WhenFull::Block => {
                // A multishot accept empties the whole backlog at once:
                // what there is no room for waits here, in order, as it
                // would have in the backlog, and the accept stops.
                self.parked.push_back(fd);
                if self.accepting && !self.cancelling_accept {
                    self.cancelling_accept = true;
                    let cancel = opcode::AsyncCancel::new(Op::Accept.tag(LOOP))
                        .build()
                        .user_data(Op::Cancel.tag(LOOP));
                    self.push(&[cancel]);
                }
            }
        }
    }

    /// At the connection limit: ends the longest-idle keep-alive
    /// connection (its receive is cancelled; the slot frees when that
    /// completes). False if none is idle.
    fn make_room(&mut self, at: Loop<'_, '_>, now: Instant) -> bool {
        let idle = self.conns.min_by_key(|conn| conn.session.idle_deadline());
        let Some(token) = idle else {
            return false;
        };
        self.end(at, token, now);
        true
    }

    /// Ends an idle connection, or the next answer of a busy one.
    fn end(&mut self, at: Loop<'_, '_>, token: Token, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        conn.session.drain();
        if conn.pending == Some(Op::Recv) && conn.session.step() == Step::Close {
            // (A multishot receive is cancelled by `drive`, at the close.)
            let cancel = opcode::AsyncCancel::new(Op::Recv.tag(token))
                .build()
                .user_data(Op::Cancel.tag(token));
            self.push(&[cancel]);
        } else {
            self.drive(at, token, now);
        }
    }

    fn admit(&mut self, at: Loop<'_, '_>, fd: OwnedFd, now: Instant) {
        let token = self.conns.insert(Conn {
            fd,
            session: Session::new(&at.shared.config.connection, now),
            pending: None,
            timespec: Box::new(types::Timespec::new()),
            scheduled: None,
            answered: false,
            multishot: Multishot::Off,
            inbox: VecDeque::new(),
            peer_end: None,
        });
        self.drive(at, token, now);
    }

    /// The operation of the connection behind `token` completed.
    fn finished(&mut self, at: Loop<'_, '_>, op: Op, token: Token, result: i32, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        conn.pending = None;
        conn.answered = op == Op::Send;
        let session = &mut conn.session;
        match (op, result) {
            (Op::Recv, 0) => session.on_eof(at.tally),
            (Op::Recv, n) if n > 0 => session.on_read(n as usize, now),
            (Op::Send, n) if n >= 0 => session.on_sent(n as usize, now, at.tally),
            // Cancelled at the deadline, or by a drain.
            (Op::Delay, _) => session.on_deadline(now, at.tally),
            (_, errno) if errno == -libc::ECANCELED => session.on_deadline(now, at.tally),
            (_, errno) if errno == -libc::EINTR || errno == -libc::EAGAIN => {}
            (_, errno) => session.on_error(&io::Error::from_raw_os_error(-errno), at.tally),
        }
        self.drive(at, token, now);
    }

    /// A multishot receive's completion: bytes (in a provided buffer,
    /// given back at once), the end of the peer's stream, or the end of
    /// the receive itself (no "more" flag).
    fn received(&mut self, at: Loop<'_, '_>, token: Token, result: i32, flags: u32, now: Instant) {
        let buffer = cqueue::buffer_select(flags);
        let conn = self.conns.get_mut(token);
        if let (Some(id), Some(buffers)) = (buffer, self.buffers.as_mut()) {
            if let (Some(conn), Ok(n @ 1..)) = (conn, usize::try_from(result)) {
                conn.inbox.extend(buffers.get(id, n));
            }
            buffers.give_back(id);
        }
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if !cqueue::more(flags) {
            conn.multishot = Multishot::Off;
            self.receivers -= 1;
        }
        match result {
            0 => conn.peer_end = Some(0),
            // Ours, or the buffers ran out: armed again when wanted.
            _ if result == -libc::ECANCELED || result == -libc::ENOBUFS => {}
            // A kernel with buffer rings but no multishot receive (5.19):
            // plain receives from now on.
            _ if result == -libc::EINVAL => self.multishot_refused = true,
            errno if errno < 0 => conn.peer_end = Some(-errno),
            _ => {}
        }
        if conn.multishot == Multishot::Armed && conn.inbox.len() > INBOX_LIMIT {
            self.cancel_multishot(token);
        }
        self.drive(at, token, now);
    }

    /// Cancels the multishot receive of the connection behind `token`.
    fn cancel_multishot(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.multishot == Multishot::Armed {
            conn.multishot = Multishot::Cancelling;
            let cancel = opcode::AsyncCancel::new(Op::RecvMulti.tag(token))
                .build()
                .user_data(Op::Cancel.tag(token));
            self.push(&[cancel]);
        }
    }

    /// Submits the next operation the connection behind `token` needs,
    /// unless one is in the kernel already.
    fn drive(&mut self, at: Loop<'_, '_>, token: Token, now: Instant) {
        let multishot_ok = self.buffers.is_some() && !self.multishot_refused;
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.pending.is_some() {
            return;
        }
        let entry = loop {
            let step = conn.session.step();
            if matches!(step, Step::Read | Step::Send | Step::Wait)
                && conn.session.deadline().is_some_and(|d| d <= now)
            {
                conn.session.on_deadline(now, at.tally);
                continue;
            }
            match step {
                Step::Read if conn.feed(now) || conn.deliver_end(at.tally) => {}
                Step::Read if conn.multishot != Multishot::Off => {
                    // Data is on its way through the armed receive.
                    return self.schedule(token);
                }
                Step::Read if conn.answered && multishot_ok => {
                    self.receivers += 1;
                    break multishot_entry(conn, token);
                }
                Step::Read | Step::Send => break io_entry(conn, step, token),
                Step::Wait => {
                    let until = conn.session.deadline().unwrap_or(now);
                    *conn.timespec = timespec(until - now);
                    conn.pending = Some(Op::Delay);
                    break opcode::Timeout::new(&*conn.timespec)
                        .build()
                        .user_data(Op::Delay.tag(token));
                }
                Step::Shutdown => {
                    let _ = rustix::net::shutdown(&conn.fd, rustix::net::Shutdown::Write);
                    conn.session.on_shutdown(now);
                }
                Step::Close if conn.multishot != Multishot::Off => {
                    // Closed once the receive has let go of the socket.
                    return self.cancel_multishot(token);
                }
                Step::Close => return self.close(at, token, now),
            }
        };
        // Receives and sends; the kernel times a delay itself.
        let timed_by_us = conn.pending != Some(Op::Delay);
        self.push(&[entry]);
        if timed_by_us {
            self.schedule(token);
        }
    }

    fn close(&mut self, at: Loop<'_, '_>, token: Token, now: Instant) {
        let Some(conn) = self.conns.remove(token) else {
            return;
        };
        let close = opcode::Close::new(types::Fd(conn.fd.into_raw_fd()))
            .build()
            .user_data(Op::Close.tag(token));
        self.push(&[close]);
        at.shared.stop.done();
        match self.parked.pop_front() {
            Some(fd) => self.admit(at, fd, now),
            None => self.resume_accepting(at.shared),
        }
    }

    /// Stops accepting, wakes the other loops, serves what the stopper took
    /// from the backlog, and ends idle keep-alive connections.
    fn begin_drain(&mut self, at: Loop<'_, '_>, now: Instant) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.accept_given_up = Some(now + ACCEPT_RELEASE_LIMIT);
        if self.accepting {
            let cancel = opcode::AsyncCancel::new(Op::Accept.tag(LOOP))
                .build()
                .user_data(Op::Cancel.tag(LOOP));
            self.push(&[cancel]);
        }
        at.shared.wake_all();
        while let Some(stream) = at.shared.stop.take_stashed(at.shared.listener) {
            self.admit(at, OwnedFd::from(stream), now);
        }
        for fd in std::mem::take(&mut self.parked) {
            self.admit(at, fd, now);
        }
        if let Some(own) = self.own.take() {
            // What waits in this loop's own backlog is served, as the
            // stopper does for the shared one; closing the socket then
            // takes it out of the port's group (the ring holds its own
            // reference until the cancelled accept completes).
            let _ = own.set_nonblocking(true);
            while let Ok((stream, _)) = own.accept() {
                at.shared.stop.admitted();
                self.admit(at, OwnedFd::from(stream), now);
            }
        }
        for token in self.conns.tokens() {
            self.end(at, token, now);
        }
    }
}

/// IORING_RECVSEND_POLL_FIRST (Linux 5.19, as multishot accept): wait for
/// data before trying to receive.
const RECV_POLL_FIRST: u16 = 1;

/// A multishot receive into the provided buffers, armed from now on.
fn multishot_entry(conn: &mut Conn, token: Token) -> squeue::Entry {
    conn.multishot = Multishot::Armed;
    opcode::RecvMulti::new(types::Fd(conn.fd.as_raw_fd()), buffers::GROUP)
        .build()
        .user_data(Op::RecvMulti.tag(token))
}

/// A receive into the session's buffer, or a send of its answer. A receive
/// right after an answer waits for data before it tries (the client has
/// not had the answer yet, so a first try would find nothing and cost a
/// failed receive before the wait); a new connection's first receive tries
/// at once, as with TCP_DEFER_ACCEPT its request is there.
fn io_entry(conn: &mut Conn, step: Step, token: Token) -> squeue::Entry {
    let fd = types::Fd(conn.fd.as_raw_fd());
    if step == Step::Read {
        conn.pending = Some(Op::Recv);
        let buf = conn.session.read_buf();
        let poll_first = if conn.answered { RECV_POLL_FIRST } else { 0 };
        opcode::Recv::new(fd, buf.as_mut_ptr(), buf.len() as u32)
            .ioprio(poll_first)
            .build()
            .user_data(Op::Recv.tag(token))
    } else {
        conn.pending = Some(Op::Send);
        let out = conn.session.to_send();
        opcode::Send::new(fd, out.as_ptr(), out.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(Op::Send.tag(token))
    }
}
