//! One HTTP/1.1 connection as a state machine that does no I/O of its own,
//! for the event loops: they read and write for it, tell it what happened,
//! and ask it what it needs next (bytes, room to send, a moment in time, a
//! half-close, or the end). The blocking models serve the same protocol
//! with [`crate::http::serve_connection`]; the outcomes counted, the
//! answers sent and the way a connection ends are the same.
//!
//! One difference is chosen on purpose: the read timeout bounds the whole
//! wait for a request head, from the moment the connection is ready for one,
//! not each read, so a client trickling a byte a second holds a slot for
//! one timeout at most (slowloris).

use std::io;
use std::time::{Duration, Instant};

use crate::http::{
    ConnectionSettings, HeadError, MAX_HEAD_BYTES, append_response, io_outcome, parse_head, plan,
    render_response,
};
use crate::stats::{Outcome, Tally};

/// How long a closing connection reads and discards what the client still
/// sends, so that its unread bytes do not turn the close into a reset.
const LINGER: Duration = Duration::from_millis(500);

/// At most this many bytes of pipelined answers go out in one send.
const GATHER_BYTES: usize = 16 * 1024;

/// What a connection needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Bytes from the peer, into [`Session::read_buf`].
    Read,
    /// [`Session::to_send`] sent.
    Send,
    /// Nothing until [`Session::deadline`].
    Wait,
    /// Shut the sending side down, then report [`Session::on_shutdown`].
    Shutdown,
    /// Close the connection.
    Close,
}

/// The answer decided for the request being served.
#[derive(Debug, Clone, Copy)]
struct Reply {
    outcome: Outcome,
    keep_alive: bool,
    head_only: bool,
    /// Linger after sending instead of closing at once.
    linger: bool,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a whole request head until `deadline`.
    Head { deadline: Instant },
    /// Discarding `remaining` body bytes before answering.
    Body {
        remaining: u64,
        deadline: Instant,
        reply: Reply,
        delay: Duration,
    },
    /// The simulated work: a timer, not a sleep.
    Delay { until: Instant, reply: Reply },
    /// Sending the rendered answer; a client that reads nothing of it
    /// until `deadline` is dropped.
    Send { reply: Reply, deadline: Instant },
    /// Shutting the sending side down.
    Shutdown,
    /// Half-closed: reading and discarding until EOF or `until`.
    Linger { until: Instant },
    /// Done.
    Closed,
}

/// One connection's progress through its requests.
#[derive(Debug)]
pub(crate) struct Session {
    buf: Box<[u8]>,
    /// Bytes of `buf` holding received, unconsumed request data.
    filled: usize,
    phase: Phase,
    out: Vec<u8>,
    sent: usize,
    /// Answers in `out` before the current one (pipelined requests that
    /// were already buffered, sent together): where each ends, and its
    /// outcome, counted once its last byte is sent.
    gathered: Vec<(usize, Outcome)>,
    /// How many of `gathered` were counted.
    gathered_counted: usize,
    answered: u64,
    /// Cleared when the server drains: the next answer closes.
    keep_alive: bool,
    read_timeout: Duration,
    default_delay: Duration,
}

impl Session {
    /// A connection just accepted at `now`.
    pub(crate) fn new(settings: &ConnectionSettings, now: Instant) -> Session {
        Session {
            buf: vec![0u8; MAX_HEAD_BYTES].into_boxed_slice(),
            filled: 0,
            phase: Phase::Head {
                deadline: now + settings.read_timeout,
            },
            out: Vec::new(),
            sent: 0,
            gathered: Vec::new(),
            gathered_counted: 0,
            answered: 0,
            keep_alive: settings.keep_alive,
            read_timeout: settings.read_timeout,
            default_delay: settings.delay,
        }
    }

    /// What the connection needs next.
    pub(crate) fn step(&self) -> Step {
        match self.phase {
            Phase::Head { .. } | Phase::Body { .. } | Phase::Linger { .. } => Step::Read,
            Phase::Delay { .. } => Step::Wait,
            Phase::Send { .. } => Step::Send,
            Phase::Shutdown => Step::Shutdown,
            Phase::Closed => Step::Close,
        }
    }

    /// When [`Session::on_deadline`] is due, if anything is timed.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Head { deadline }
            | Phase::Body { deadline, .. }
            | Phase::Send { deadline, .. } => Some(deadline),
            Phase::Delay { until, .. } | Phase::Linger { until } => Some(until),
            Phase::Shutdown | Phase::Closed => None,
        }
    }

    /// Whether the connection sits between requests with nothing received:
    /// the one a full server may close first, as nginx does.
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Head { .. }) && self.filled == 0 && self.answered > 0
    }

    /// When an idle connection ([`Session::is_idle`]) times out; none for
    /// one that is not idle. The longest idle goes first at the limit.
    pub(crate) fn idle_deadline(&self) -> Option<Instant> {
        self.is_idle().then(|| self.deadline()).flatten()
    }

    /// Where the next read goes; never empty when [`Session::step`] is
    /// [`Step::Read`].
    pub(crate) fn read_buf(&mut self) -> &mut [u8] {
        match self.phase {
            Phase::Body { remaining, .. } => {
                // Body bytes are read into the free space and forgotten.
                let want = remaining.min((self.buf.len() - self.filled) as u64) as usize;
                &mut self.buf[self.filled..self.filled + want]
            }
            Phase::Linger { .. } => &mut self.buf[..],
            _ => &mut self.buf[self.filled..],
        }
    }

    /// `n` bytes arrived in [`Session::read_buf`].
    pub(crate) fn on_read(&mut self, n: usize, now: Instant) {
        match &mut self.phase {
            Phase::Body { remaining, .. } => *remaining -= n as u64,
            Phase::Linger { .. } => return,
            _ => self.filled += n,
        }
        self.advance(now);
    }

    /// The peer closed its sending side.
    pub(crate) fn on_eof(&mut self, tally: &Tally) {
        match self.phase {
            // Between requests: the normal end of a connection.
            Phase::Head { .. } if self.filled == 0 => {}
            Phase::Head { .. } | Phase::Body { .. } => tally.record(Outcome::PeerGone),
            _ => {}
        }
        self.phase = Phase::Closed;
    }

    /// A read or write failed.
    pub(crate) fn on_error(&mut self, error: &io::Error, tally: &Tally) {
        if !matches!(self.phase, Phase::Linger { .. } | Phase::Closed) {
            // One error, however many gathered answers were still unsent:
            // as in the blocking models, whose next pipelined requests are
            // never read once a write fails.
            tally.record(io_outcome(error));
        }
        self.phase = Phase::Closed;
    }

    /// The bytes still to send when [`Session::step`] is [`Step::Send`].
    pub(crate) fn to_send(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// `n` bytes of [`Session::to_send`] went out.
    pub(crate) fn on_sent(&mut self, n: usize, now: Instant, tally: &Tally) {
        self.sent += n;
        let Phase::Send { reply, .. } = self.phase else {
            return;
        };
        while let Some(&(end, outcome)) = self.gathered.get(self.gathered_counted) {
            if end > self.sent {
                break;
            }
            tally.record(outcome);
            self.answered += 1;
            self.gathered_counted += 1;
        }
        if self.sent < self.out.len() {
            return;
        }
        tally.record(reply.outcome);
        self.answered += 1;
        // A drain that began while the answer was on its way ends the
        // connection here, though the answer said keep-alive.
        if reply.keep_alive && self.keep_alive {
            self.phase = Phase::Head {
                deadline: now + self.read_timeout,
            };
            // A pipelined next request may already be here.
            self.advance(now);
        } else if reply.linger || self.filled > 0 {
            // The client sent more than we read: closing now would send a
            // reset that can destroy the answer in flight.
            self.phase = Phase::Shutdown;
        } else {
            self.phase = Phase::Closed;
        }
    }

    /// The sending side is shut down.
    pub(crate) fn on_shutdown(&mut self, now: Instant) {
        self.phase = Phase::Linger {
            until: now + LINGER,
        };
    }

    /// Time has reached [`Session::deadline`].
    pub(crate) fn on_deadline(&mut self, now: Instant, tally: &Tally) {
        if self.deadline().is_none_or(|d| d > now) {
            return;
        }
        match self.phase {
            Phase::Head { .. } if self.filled == 0 => {
                // A keep-alive connection that went quiet is not an error,
                // but a fresh one that never spoke is.
                if self.answered == 0 {
                    tally.record(Outcome::ReadTimeout);
                }
                self.phase = Phase::Closed;
            }
            Phase::Head { .. } => self.refuse(Outcome::ReadTimeout, now),
            Phase::Body { .. } => {
                tally.record(Outcome::ReadTimeout);
                self.phase = Phase::Closed;
            }
            Phase::Delay { reply, .. } => self.answer(reply, now),
            Phase::Send { .. } => {
                // A client that takes nothing of its answer for a whole
                // read timeout is treated as gone.
                tally.record(Outcome::PeerGone);
                self.phase = Phase::Closed;
            }
            Phase::Linger { .. } => self.phase = Phase::Closed,
            Phase::Shutdown | Phase::Closed => {}
        }
    }

    /// The server is draining: close if idle between requests, and end the
    /// connection after the answer in progress.
    pub(crate) fn drain(&mut self) {
        self.keep_alive = false;
        if self.is_idle() {
            self.phase = Phase::Closed;
        }
    }

    /// Parses what is buffered and moves on as far as it can without I/O.
    fn advance(&mut self, now: Instant) {
        match self.phase {
            Phase::Head { .. } if self.filled > 0 => self.parse(now),
            Phase::Body {
                remaining: 0,
                reply,
                delay,
                ..
            } => self.after_body(reply, delay, now),
            _ => {}
        }
    }

    fn parse(&mut self, now: Instant) {
        let head = match parse_head(&self.buf[..self.filled]) {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(HeadError::Malformed) => return self.refuse(Outcome::BadRequest, now),
            Err(HeadError::TooLarge) => return self.refuse(Outcome::HeadTooLarge, now),
        };
        let plan = plan(&head, self.default_delay);
        self.consume(head.len);
        let mut reply = Reply {
            outcome: plan.outcome,
            keep_alive: self.keep_alive && head.wants_keep_alive,
            head_only: plan.head_only,
            linger: false,
        };
        if !matches!(plan.outcome, Outcome::Ok | Outcome::NotFound) {
            // Its body, if any, is not read: the answer closes.
            reply.keep_alive = false;
            reply.linger = true;
            return self.answer(reply, now);
        }
        // Read the body before answering, so the next request (or the close)
        // starts on a clean stream.
        let mut remaining = head.content_length.unwrap_or(0);
        let buffered = remaining.min(self.filled as u64) as usize;
        self.consume(buffered);
        remaining -= buffered as u64;
        if remaining > 0 {
            self.phase = Phase::Body {
                remaining,
                deadline: now + self.read_timeout,
                reply,
                delay: plan.delay,
            };
        } else {
            self.after_body(reply, plan.delay, now);
        }
    }

    fn after_body(&mut self, reply: Reply, delay: Duration, now: Instant) {
        if delay.is_zero() {
            self.answer(reply, now);
        } else {
            self.phase = Phase::Delay {
                until: now + delay,
                reply,
            };
        }
    }

    fn refuse(&mut self, outcome: Outcome, now: Instant) {
        let reply = Reply {
            outcome,
            keep_alive: false,
            head_only: false,
            linger: true,
        };
        self.answer(reply, now);
    }

    fn answer(&mut self, mut reply: Reply, now: Instant) {
        // Drain may have begun during the delay.
        reply.keep_alive &= self.keep_alive;
        render_response(
            reply.outcome,
            reply.keep_alive,
            reply.head_only,
            &mut self.out,
        );
        self.sent = 0;
        self.gathered.clear();
        self.gathered_counted = 0;
        self.phase = Phase::Send {
            reply,
            deadline: now + self.read_timeout,
        };
        self.gather();
    }

    /// Answers the pipelined requests already buffered behind the one just
    /// answered, into the same send: one send for a client's whole batch,
    /// where one per answer cost a syscall each. Only plain keep-alive
    /// requests are gathered (no body, no delay, no error); anything else
    /// waits its turn as before.
    fn gather(&mut self) {
        while let Phase::Send { reply, deadline } = self.phase {
            if !(reply.keep_alive && self.keep_alive)
                || self.filled == 0
                || self.out.len() >= GATHER_BYTES
            {
                return;
            }
            let Ok(Some(head)) = parse_head(&self.buf[..self.filled]) else {
                return;
            };
            let plan = plan(&head, self.default_delay);
            let plain = matches!(plan.outcome, Outcome::Ok | Outcome::NotFound)
                && plan.delay.is_zero()
                && head.content_length.unwrap_or(0) == 0
                && head.wants_keep_alive;
            if !plain {
                return;
            }
            self.consume(head.len);
            self.gathered.push((self.out.len(), reply.outcome));
            let next = Reply {
                outcome: plan.outcome,
                keep_alive: true,
                head_only: plan.head_only,
                linger: false,
            };
            append_response(next.outcome, true, next.head_only, &mut self.out);
            self.phase = Phase::Send {
                reply: next,
                deadline,
            };
        }
    }

    /// Drops the first `len` buffered bytes, keeping what follows.
    fn consume(&mut self, len: usize) {
        self.buf.copy_within(len..self.filled, 0);
        self.filled -= len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(keep_alive: bool, delay: Duration) -> ConnectionSettings {
        ConnectionSettings {
            delay,
            keep_alive,
            read_timeout: Duration::from_secs(5),
        }
    }

    /// Feeds `input` and collects what the session sends, until it waits for
    /// more or ends.
    fn feed(session: &mut Session, input: &[u8], now: Instant, tally: &Tally) -> Vec<u8> {
        let buf = session.read_buf();
        buf[..input.len()].copy_from_slice(input);
        session.on_read(input.len(), now);
        let mut sent = Vec::new();
        while session.step() == Step::Send {
            sent.extend_from_slice(session.to_send());
            let n = session.to_send().len();
            session.on_sent(n, now, tally);
        }
        sent
    }

    #[test]
    fn keep_alive_serves_pipelined_requests_then_waits() {
        let tally = Tally::new();
        let now = Instant::now();
        let mut s = Session::new(&settings(true, Duration::ZERO), now);
        let two = b"GET / HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n";
        let sent = String::from_utf8(feed(&mut s, two, now, &tally)).unwrap();
        assert_eq!(sent.matches("HTTP/1.1 200 OK").count(), 1, "{sent}");
        assert_eq!(sent.matches("HTTP/1.1 404").count(), 1, "{sent}");
        assert_eq!(s.step(), Step::Read);
        assert!(s.is_idle());
        s.drain();
        assert_eq!(s.step(), Step::Close);
        assert_eq!(tally.snapshot().ok(), 1);
    }

    #[test]
    fn buffered_pipelined_requests_are_answered_in_one_send_and_counted_as_sent() {
        let tally = Tally::new();
        let now = Instant::now();
        let mut s = Session::new(&settings(true, Duration::ZERO), now);
        let three = b"GET / HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\nHEAD / HTTP/1.1\r\n\r\n";
        let buf = s.read_buf();
        buf[..three.len()].copy_from_slice(three);
        s.on_read(three.len(), now);
        assert_eq!(s.step(), Step::Send);
        let all = String::from_utf8(s.to_send().to_vec()).unwrap();
        assert_eq!(all.matches("HTTP/1.1 ").count(), 3, "one send: {all}");
        // Counted as their last bytes go out, not before.
        let first = all.find("HTTP/1.1 404").unwrap();
        s.on_sent(first - 1, now, &tally);
        assert_eq!(tally.snapshot().ok(), 0);
        s.on_sent(1, now, &tally);
        assert_eq!(tally.snapshot().ok(), 1);
        let rest = s.to_send().len();
        s.on_sent(rest, now, &tally);
        assert_eq!(tally.snapshot().ok(), 2, "the 200 and the HEAD");
        assert_eq!(tally.snapshot().get(Outcome::NotFound), 1);
        assert_eq!(s.step(), Step::Read);
        // A request with a body, or one that closes, is not gathered.
        let mixed = b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
        let sent = String::from_utf8(feed(&mut s, mixed, now, &tally)).unwrap();
        assert_eq!(sent.matches("HTTP/1.1 200").count(), 1, "{sent}");
        assert_eq!(sent.matches("HTTP/1.1 405").count(), 1, "{sent}");
        assert_eq!(tally.snapshot().ok(), 3);
        // A connection that fails with gathered answers unsent is one
        // error, as a failed write is in the blocking models.
        let tally = Tally::new();
        let mut s = Session::new(&settings(true, Duration::ZERO), now);
        let buf = s.read_buf();
        buf[..three.len()].copy_from_slice(three);
        s.on_read(three.len(), now);
        s.on_error(&io::Error::from(io::ErrorKind::ConnectionReset), &tally);
        assert_eq!(tally.snapshot().errors(), 1);
        assert_eq!(s.step(), Step::Close);
    }

    #[test]
    fn a_drain_during_a_send_ends_the_connection_after_it() {
        // Review of issue 17: the answer said keep-alive before the drain,
        // and the connection went back to waiting for a request.
        let tally = Tally::new();
        let now = Instant::now();
        let mut s = Session::new(&settings(true, Duration::ZERO), now);
        let buf = s.read_buf();
        let request = b"GET / HTTP/1.1\r\n\r\n";
        buf[..request.len()].copy_from_slice(request);
        s.on_read(request.len(), now);
        assert_eq!(s.step(), Step::Send);
        s.drain();
        let n = s.to_send().len();
        s.on_sent(n, now, &tally);
        assert_eq!(s.step(), Step::Close);
    }

    #[test]
    fn a_delay_is_a_deadline_not_a_sleep() {
        let tally = Tally::new();
        let now = Instant::now();
        let mut s = Session::new(&settings(false, Duration::ZERO), now);
        assert!(feed(&mut s, b"GET /?delay=200ms HTTP/1.1\r\n\r\n", now, &tally).is_empty());
        assert_eq!(s.step(), Step::Wait);
        assert_eq!(s.deadline(), Some(now + Duration::from_millis(200)));
        s.on_deadline(now + Duration::from_millis(100), &tally);
        assert_eq!(s.step(), Step::Wait, "not before its time");
        s.on_deadline(now + Duration::from_millis(200), &tally);
        assert_eq!(s.step(), Step::Send);
        let n = s.to_send().len();
        s.on_sent(n, now, &tally);
        assert_eq!(s.step(), Step::Close);
        assert_eq!(tally.snapshot().ok(), 1);
    }

    #[test]
    fn a_body_is_read_before_the_answer_and_bad_requests_linger() {
        let tally = Tally::new();
        let now = Instant::now();
        let mut s = Session::new(&settings(true, Duration::ZERO), now);
        let sent = feed(
            &mut s,
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
            now,
            &tally,
        );
        assert!(sent.is_empty());
        assert_eq!(s.read_buf().len(), 3, "only the body's rest is read");
        let sent = feed(&mut s, b"cde", now, &tally);
        assert!(sent.starts_with(b"HTTP/1.1 200 OK"));

        let mut s = Session::new(&settings(true, Duration::ZERO), now);
        let sent = feed(&mut s, b"NOT HTTP\r\n\r\n", now, &tally);
        assert!(sent.starts_with(b"HTTP/1.1 400"));
        assert_eq!(s.step(), Step::Shutdown);
        s.on_shutdown(now);
        assert_eq!(s.step(), Step::Read);
        s.on_deadline(now + LINGER, &tally);
        assert_eq!(s.step(), Step::Close);
    }

    #[test]
    fn the_read_timeout_bounds_the_whole_head() {
        let tally = Tally::new();
        let now = Instant::now();
        let mut s = Session::new(&settings(false, Duration::ZERO), now);
        // One byte a second does not push the deadline back.
        for i in 0..4 {
            feed(&mut s, b"G", now + Duration::from_secs(i), &tally);
        }
        s.on_deadline(now + Duration::from_secs(5), &tally);
        assert!(s.to_send().starts_with(b"HTTP/1.1 408"));

        let silent = Tally::new();
        let mut s = Session::new(&settings(false, Duration::ZERO), now);
        s.on_deadline(now + Duration::from_secs(5), &silent);
        assert_eq!(s.step(), Step::Close);
        assert_eq!(silent.snapshot().get(Outcome::ReadTimeout), 1);
    }
}
