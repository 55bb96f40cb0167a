//! HTTP/1.1 on one connection: read a whole request head (httparse) within
//! the read timeout, answer with an exact Content-Length, and close without
//! turning unread bytes into a reset.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::idle::IdleSlot;
use crate::stats::{Outcome, Tally};

/// The largest request head we read; a longer one is answered 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// The largest request body we read and discard; a longer one is answered
/// 413.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;
/// The longest delay a client may ask for in the URL, and the longest
/// `--delay` (a server whose every request outlives any client is a typo).
pub const MAX_URL_DELAY: Duration = Duration::from_secs(60);
/// The page every successful request gets.
pub const HELLO_BODY: &[u8] = b"<h1>Hello, World!</h1>";

const MAX_HEADERS: usize = 64;
/// How long a closing connection waits for the client to stop sending
/// before the socket is closed anyway.
const LINGER: Duration = Duration::from_millis(500);

/// How every connection is served; the same for all concurrency models.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Sleep (nanosleep(2)) this long before answering each request.
    pub delay: Duration,
    /// Serve several requests per connection when the client agrees.
    pub keep_alive: bool,
    /// Give up on a request head (or an idle keep-alive connection) after
    /// this long without it.
    pub read_timeout: Duration,
}

/// A request head, reduced to what the server acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head, including the blank line.
    pub len: usize,
    /// The method as sent.
    pub method: String,
    /// The request target (path and query) as sent.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Whether the client wants the connection kept open afterwards.
    pub wants_keep_alive: bool,
    /// The declared body length, if any.
    pub content_length: Option<u64>,
    /// Whether the body is chunked.
    pub chunked: bool,
}

/// Why a request head could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP (400).
    Malformed,
    /// More than [`MAX_HEAD_BYTES`] or too many headers (431).
    TooLarge,
}

/// Parses a request head from the start of `buf`. `Ok(None)` means more
/// bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let minor_version = request.version.ok_or(HeadError::Malformed)?;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut content_length = None;
    let mut chunked = false;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("connection") {
            for token in String::from_utf8_lossy(header.value).split(',') {
                let token = token.trim();
                connection_close |= token.eq_ignore_ascii_case("close");
                connection_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if header.name.eq_ignore_ascii_case("content-length") {
            // RFC 9112 §6.3: 1*DIGIT only; Rust's parse would take "+5".
            let value = std::str::from_utf8(header.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(HeadError::Malformed)?;
            // Two different lengths is a request-smuggling classic.
            if content_length.is_some_and(|known| known != value) {
                return Err(HeadError::Malformed);
            }
            content_length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        }
    }
    Ok(Some(RequestHead {
        len,
        method: request.method.ok_or(HeadError::Malformed)?.to_owned(),
        target: request.path.ok_or(HeadError::Malformed)?.to_owned(),
        minor_version,
        wants_keep_alive: if minor_version == 0 {
            connection_keep_alive
        } else {
            !connection_close
        },
        content_length,
        chunked,
    }))
}

/// What to do with a parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The status line's reason for being.
    pub outcome: Outcome,
    /// How long to sleep before answering.
    pub delay: Duration,
    /// HEAD: send the headers only.
    pub head_only: bool,
}

/// Routes a request: `GET /` (or `HEAD /`) is the only page, and its query
/// may carry `delay=DURATION` (e.g. `250ms`, `1s`; a bare number is
/// milliseconds) to override `default_delay`.
pub fn plan(head: &RequestHead, default_delay: Duration) -> Plan {
    let head_only = head.method == "HEAD";
    let refuse = |outcome| Plan {
        outcome,
        delay: Duration::ZERO,
        head_only,
    };
    if head.chunked {
        return refuse(Outcome::NotImplemented);
    }
    if head.content_length.unwrap_or(0) > MAX_BODY_BYTES {
        return refuse(Outcome::BodyTooLarge);
    }
    if head.method != "GET" && !head_only {
        return refuse(Outcome::MethodNotAllowed);
    }
    let (path, query) = head.target.split_once('?').unwrap_or((&head.target, ""));
    if path != "/" {
        return refuse(Outcome::NotFound);
    }
    let mut delay = default_delay;
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("delay=") {
            match parse_delay(value) {
                Some(d) if d <= MAX_URL_DELAY => delay = d,
                _ => return refuse(Outcome::BadRequest),
            }
        }
    }
    Plan {
        outcome: Outcome::Ok,
        delay,
        head_only,
    }
}

fn parse_delay(value: &str) -> Option<Duration> {
    if let Ok(ms) = value.parse::<u64>() {
        return Some(Duration::from_millis(ms));
    }
    humantime::parse_duration(value).ok()
}

fn status_line(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "200 OK",
        Outcome::NotFound => "404 Not Found",
        Outcome::MethodNotAllowed => "405 Method Not Allowed",
        Outcome::BodyTooLarge => "413 Content Too Large",
        Outcome::HeadTooLarge => "431 Request Header Fields Too Large",
        Outcome::NotImplemented => "501 Not Implemented",
        Outcome::Rejected => "503 Service Unavailable",
        Outcome::ReadTimeout => "408 Request Timeout",
        _ => "400 Bad Request",
    }
}

/// Writes a complete response for `outcome` into `out`. The body length is
/// the length of the bytes sent, so Content-Length cannot disagree.
pub fn render_response(outcome: Outcome, keep_alive: bool, head_only: bool, out: &mut Vec<u8>) {
    out.clear();
    append_response(outcome, keep_alive, head_only, out);
}

/// [`render_response`] after what `out` already holds: pipelined answers
/// sent together.
pub(crate) fn append_response(
    outcome: Outcome,
    keep_alive: bool,
    head_only: bool,
    out: &mut Vec<u8>,
) {
    let body: &[u8] = match outcome {
        Outcome::Ok => HELLO_BODY,
        Outcome::NotFound => b"<h1>404 Not Found</h1>",
        Outcome::MethodNotAllowed => b"<h1>405 Method Not Allowed</h1>",
        Outcome::Rejected => b"<h1>503 Service Unavailable</h1>",
        _ => b"",
    };
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {}\r\nServer: tracebench\r\n",
        status_line(outcome),
    );
    append_date(out);
    let _ = write!(
        out,
        "Content-Type: text/html\r\nContent-Length: {}\r\nConnection: {}\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    match outcome {
        Outcome::MethodNotAllowed => out.extend_from_slice(b"Allow: GET, HEAD\r\n"),
        Outcome::Rejected => out.extend_from_slice(b"Retry-After: 1\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Appends the `Date` header line for now. RFC 9110 (6.6.1) requires it of
/// an origin server with a clock; the text changes once a second, so each
/// thread formats it once a second (as nginx and hyper do) rather than per
/// response.
fn append_date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(cached_second, line)| {
        if *cached_second != second {
            *cached_second = second;
            line.clear();
            line.push_str("Date: ");
            line.push_str(&httpdate::fmt_http_date(now));
            line.push_str("\r\n");
        }
        out.extend_from_slice(line.as_bytes());
    });
}

/// The memory one connection needs, kept by a worker from one connection
/// to the next so the hot path allocates nothing.
#[derive(Debug)]
pub struct Buffers {
    head: Box<[u8]>,
    response: Vec<u8>,
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers {
            head: vec![0u8; MAX_HEAD_BYTES].into_boxed_slice(),
            response: Vec::with_capacity(256),
        }
    }
}

/// Serves every request on `stream` until the connection ends, counting
/// each in `tally`. Never panics on anything the peer does.
pub fn serve_connection(
    mut stream: TcpStream,
    settings: &ConnectionSettings,
    tally: &Tally,
    buffers: &mut Buffers,
    idle: Option<&IdleSlot>,
) {
    // Set here, by whoever serves, so the acceptor's hot loop stays at one
    // accept4 per connection.
    if let Err(e) = stream.set_read_timeout(Some(settings.read_timeout)) {
        tally.record(io_outcome(&e));
        return;
    }
    let Buffers {
        head: buf,
        response,
    } = buffers;
    let mut filled = 0;
    let mut first_request = true;
    let mut answered = Instant::now();
    loop {
        // Between two requests, a pool's worker says it waits, so that the
        // acceptor may end the wait when the queue is full (crate::idle).
        let parked = idle.filter(|_| !first_request && filled == 0);
        if let Some(slot) = parked {
            slot.park(stream.as_raw_fd(), answered);
        }
        let head = read_head(&mut stream, buf, &mut filled, settings.read_timeout);
        if let Some(slot) = parked {
            slot.unpark();
        }
        let head = match head {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(ReadError::Idle) => {
                // A keep-alive connection that went quiet is not an error,
                // but a fresh one that never spoke is.
                if first_request {
                    tally.record(Outcome::ReadTimeout);
                }
                return;
            }
            Err(ReadError::Refuse(outcome)) => {
                tally.record(outcome);
                render_response(outcome, false, false, response);
                if stream.write_all(response).is_ok() {
                    linger_close(stream);
                }
                return;
            }
            Err(ReadError::Io(outcome)) => {
                tally.record(outcome);
                return;
            }
        };
        first_request = false;
        let plan = plan(&head, settings.delay);
        let mut keep_alive = settings.keep_alive && head.wants_keep_alive;
        if plan.outcome == Outcome::Ok || plan.outcome == Outcome::NotFound {
            // Read the body before answering, so the next request (or the
            // close) starts on a clean stream.
            if let Err(outcome) = discard_body(&mut stream, buf, &mut filled, &head) {
                tally.record(outcome);
                return;
            }
        } else {
            keep_alive = false;
        }
        if !plan.delay.is_zero() {
            crate::sleep::nanosleep(plan.delay);
        }
        render_response(plan.outcome, keep_alive, plan.head_only, response);
        if idle.is_some() {
            // Before the write: its client may act on the answer (and
            // another connection go quiet) before this thread runs again.
            answered = Instant::now();
        }
        if let Err(e) = stream.write_all(response) {
            tally.record(io_outcome(&e));
            return;
        }
        tally.record(plan.outcome);
        consume(buf, &mut filled, head.len);
        if !keep_alive {
            if filled > 0 || plan.outcome != Outcome::Ok {
                // The client sent more than we read: closing now would send
                // a reset that can destroy the response in flight.
                linger_close(stream);
            }
            return;
        }
    }
}

/// Answers 503 without reading the request, for an acceptor that must not
/// block. What the client already sent is drained first so the close is a
/// FIN, not a reset.
pub fn reject(stream: TcpStream, tally: &Tally) {
    tally.record(Outcome::Rejected);
    let mut scratch = [0u8; 4096];
    let _ = stream.set_nonblocking(true);
    while matches!((&stream).read(&mut scratch), Ok(n) if n > 0) {}
    let _ = stream.set_nonblocking(false);
    let mut response = Vec::with_capacity(256);
    render_response(Outcome::Rejected, false, false, &mut response);
    if (&stream).write_all(&response).is_ok() {
        let _ = stream.shutdown(Shutdown::Write);
        let _ = stream.set_nonblocking(true);
        while matches!((&stream).read(&mut scratch), Ok(n) if n > 0) {}
    }
}

enum ReadError {
    /// Nothing arrived within the read timeout.
    Idle,
    /// Answer with this outcome's status, then close.
    Refuse(Outcome),
    /// The connection is broken; close without answering.
    Io(Outcome),
}

fn read_head(
    stream: &mut TcpStream,
    buf: &mut [u8],
    filled: &mut usize,
    read_timeout: Duration,
) -> Result<Option<RequestHead>, ReadError> {
    // The whole head is due within the read timeout of the wait's start,
    // not each read: a client trickling a byte at a time (slowloris) holds
    // a worker one timeout at most. SO_RCVTIMEO is shortened to what is
    // left only once a head arrives in pieces, so a whole head costs no
    // extra setsockopt.
    let deadline = Instant::now() + read_timeout;
    let mut shortened = false;
    let result = loop {
        if *filled > 0 {
            match parse_head(&buf[..*filled]) {
                Ok(Some(head)) => break Ok(Some(head)),
                Ok(None) => {}
                Err(HeadError::Malformed) => break Err(ReadError::Refuse(Outcome::BadRequest)),
                Err(HeadError::TooLarge) => break Err(ReadError::Refuse(Outcome::HeadTooLarge)),
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(ReadError::Refuse(Outcome::ReadTimeout));
            }
            shortened = true;
            if let Err(e) = stream.set_read_timeout(Some(deadline - now)) {
                break Err(ReadError::Io(io_outcome(&e)));
            }
        }
        match stream.read(&mut buf[*filled..]) {
            Ok(0) if *filled == 0 => break Ok(None),
            Ok(0) => break Err(ReadError::Io(Outcome::PeerGone)),
            Ok(n) => *filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) && *filled == 0 => break Err(ReadError::Idle),
            Err(e) if is_timeout(&e) => break Err(ReadError::Refuse(Outcome::ReadTimeout)),
            Err(e) => break Err(ReadError::Io(io_outcome(&e))),
        }
    };
    if shortened && result.as_ref().is_ok_and(Option::is_some) {
        // The body and the next request get the whole timeout again.
        let _ = stream.set_read_timeout(Some(read_timeout));
    }
    result
}

fn discard_body(
    stream: &mut TcpStream,
    buf: &mut [u8],
    filled: &mut usize,
    head: &RequestHead,
) -> Result<(), Outcome> {
    let mut remaining = head.content_length.unwrap_or(0);
    let buffered = (*filled - head.len) as u64;
    let from_buffer = remaining.min(buffered) as usize;
    buf.copy_within(head.len + from_buffer..*filled, head.len);
    *filled -= from_buffer;
    remaining -= from_buffer as u64;
    let mut scratch = [0u8; 4096];
    while remaining > 0 {
        let want = remaining.min(scratch.len() as u64) as usize;
        match stream.read(&mut scratch[..want]) {
            Ok(0) => return Err(Outcome::PeerGone),
            Ok(n) => remaining -= n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(Outcome::ReadTimeout),
            Err(e) => return Err(io_outcome(&e)),
        }
    }
    Ok(())
}

/// Drops the first `len` bytes of the buffer, keeping a pipelined next
/// request.
fn consume(buf: &mut [u8], filled: &mut usize, len: usize) {
    buf.copy_within(len..*filled, 0);
    *filled -= len;
}

/// Half-closes and reads until the client closes too (or [`LINGER`]
/// passes), so unread data cannot turn the close into a reset that destroys
/// the response on its way.
fn linger_close(stream: TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let _ = stream.set_read_timeout(Some(LINGER));
    let until = Instant::now() + LINGER;
    let mut scratch = [0u8; 4096];
    while Instant::now() < until {
        match (&stream).read(&mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub(crate) fn io_outcome(e: &io::Error) -> Outcome {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::UnexpectedEof => Outcome::PeerGone,
        _ => Outcome::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> RequestHead {
        parse_head(raw.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn parses_a_get_and_its_connection_wishes() {
        let h = head("GET /?delay=5ms HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            (h.method.as_str(), h.target.as_str()),
            ("GET", "/?delay=5ms")
        );
        assert!(h.wants_keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").wants_keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").wants_keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").wants_keep_alive);
    }

    #[test]
    fn partial_malformed_and_oversized_heads() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost"), Ok(None));
        assert_eq!(parse_head(b"HELLO\r\n\r\n"), Err(HeadError::Malformed));
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HeadError::Malformed)
        );
        // Issue 14: a sign is no digit (Rust's parse takes "+5").
        for value in ["+5", "-5", "5a", ""] {
            let head = format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(
                parse_head(head.as_bytes()),
                Err(HeadError::Malformed),
                "{value:?}"
            );
        }
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD_BYTES, b'a');
        assert_eq!(parse_head(&big), Err(HeadError::TooLarge));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("H{i}: v\r\n"))
            .collect();
        assert_eq!(
            parse_head(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn routes_and_url_delays() {
        let d = Duration::from_millis(7);
        let p = |raw: &str| plan(&head(raw), d);
        assert_eq!(p("GET / HTTP/1.1\r\n\r\n").outcome, Outcome::Ok);
        assert_eq!(p("GET / HTTP/1.1\r\n\r\n").delay, d);
        assert_eq!(
            p("GET /?delay=250ms HTTP/1.1\r\n\r\n").delay,
            Duration::from_millis(250)
        );
        assert_eq!(
            p("GET /?a=b&delay=40 HTTP/1.1\r\n\r\n").delay,
            Duration::from_millis(40)
        );
        assert_eq!(
            p("GET /?delay=soon HTTP/1.1\r\n\r\n").outcome,
            Outcome::BadRequest
        );
        assert_eq!(
            p("GET /?delay=2h HTTP/1.1\r\n\r\n").outcome,
            Outcome::BadRequest
        );
        assert_eq!(p("GET /nope HTTP/1.1\r\n\r\n").outcome, Outcome::NotFound);
        assert_eq!(
            p("POST / HTTP/1.1\r\n\r\n").outcome,
            Outcome::MethodNotAllowed
        );
        assert!(p("HEAD / HTTP/1.1\r\n\r\n").head_only);
        assert_eq!(
            p("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").outcome,
            Outcome::NotImplemented
        );
    }

    #[test]
    fn content_length_is_exact() {
        let mut out = Vec::new();
        for outcome in Outcome::ALL {
            render_response(outcome, false, false, &mut out);
            let text = String::from_utf8(out.clone()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let declared: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(declared, body.len(), "{outcome:?}");
        }
        render_response(Outcome::Ok, true, false, &mut out);
        assert!(out.ends_with(b"\r\n\r\n<h1>Hello, World!</h1>"));
        assert_eq!(HELLO_BODY.len(), 22);
    }

    #[test]
    fn every_answer_carries_the_date_of_now() {
        let mut out = Vec::new();
        for outcome in Outcome::ALL {
            let before = SystemTime::now() - Duration::from_secs(1);
            render_response(outcome, true, false, &mut out);
            let text = String::from_utf8(out.clone()).unwrap();
            let date = text
                .lines()
                .find_map(|l| l.strip_prefix("Date: "))
                .unwrap_or_else(|| panic!("{outcome:?}: no Date in {text:?}"));
            let date = httpdate::parse_http_date(date).unwrap();
            assert!(
                date >= before && date <= SystemTime::now(),
                "{outcome:?}: {date:?}"
            );
        }
    }
}
