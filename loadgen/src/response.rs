//! An incremental HTTP/1.1 response parser: bytes arrive in pieces, and
//! the parser says when one whole response (head and body) is in.

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length: n`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body ends when the server closes.
    UntilClose,
}

/// A response head, once parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// Bytes of the head.
    pub len: usize,
    /// Whether the server will keep the connection open.
    pub keep_alive: bool,
    framing: Framing,
}

/// What the bytes so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed.
    Incomplete,
    /// A whole response of `len` bytes.
    Complete {
        /// The head.
        head: Head,
        /// Total bytes of the response (head and body).
        len: usize,
    },
    /// Not an HTTP/1.x response.
    Invalid,
    /// A head over [`MAX_HEAD`] or an answer over [`MAX_RESPONSE`]: refused
    /// whatever the bytes are, so the verdict does not depend on how the
    /// answer was split into reads.
    TooLarge,
}

/// Why bytes cannot be a response we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Invalid,
    TooLarge,
}

impl From<Refusal> for Progress {
    fn from(refusal: Refusal) -> Progress {
        match refusal {
            Refusal::Invalid => Progress::Invalid,
            Refusal::TooLarge => Progress::TooLarge,
        }
    }
}

const MAX_HEADERS: usize = 64;
/// A head longer than this is refused ([`Progress::TooLarge`]).
pub const MAX_HEAD: usize = 64 * 1024;
/// A response longer than this is refused ([`Progress::TooLarge`]): the generator keeps
/// each answer in memory until it is complete.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Whether a comma-separated header value lists `token`.
fn lists(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, Refusal> {
    use Refusal::Invalid;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    // The limit applies to the head however it arrived: a head that came
    // in one read is as long as the same head in pieces.
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => return Err(Refusal::TooLarge),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(Refusal::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Invalid),
    };
    let status = response.code.ok_or(Invalid)?;
    let http10 = response.version == Some(0);
    let mut keep_alive = !http10;
    let mut content_length = None;
    let mut chunked = false;
    // Only the headers that frame the answer are read; any other may hold
    // bytes that are not UTF-8 (a Latin-1 cookie) without harm.
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(header.value)
                .map_err(|_| Invalid)?
                .trim();
            // RFC 9112 §6.3: digits only, and two different lengths make
            // the answer's end unknowable: an error, not the last one wins.
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Invalid);
            }
            let value = text.parse::<usize>().map_err(|_| Invalid)?;
            if content_length.is_some_and(|known| known != value) {
                return Err(Invalid);
            }
            content_length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides ("gzip, chunked" is chunked).
            let last = header
                .value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if header.name.eq_ignore_ascii_case("connection") {
            if lists(header.value, "close") {
                keep_alive = false;
            } else if lists(header.value, "keep-alive") {
                keep_alive = true;
            }
        }
    }
    // Chunked wins over a Content-Length (RFC 9112 §6.3).
    let mut framing = match (chunked, content_length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::UntilClose,
    };
    // No body for these, whatever the headers say.
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        framing = Framing::Length(0);
    }
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    Ok(Some(Head {
        status,
        len,
        keep_alive,
        framing,
    }))
}

/// Where a chunked body ends, if all of it is in `body`. `checked` is
/// where the previous call stopped (the start of a chunk's size line whose
/// chunk was not all in yet); it is moved on, so bytes arriving a piece at a
/// time are scanned once, not once per piece.
fn chunked_end(body: &[u8], checked: &mut usize) -> Result<Option<usize>, Refusal> {
    use Refusal::Invalid;
    let mut pos = (*checked).min(body.len());
    loop {
        *checked = pos;
        let Some(line_end) = body[pos..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&body[pos..pos + line_end]).map_err(|_| Invalid)?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| Invalid)?;
        pos += line_end + 2;
        if size == 0 {
            // Trailers end with an empty line.
            loop {
                let Some(end) = body[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                pos += end + 2;
                if end == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        let next = pos
            .checked_add(size)
            .and_then(|p| p.checked_add(2))
            .ok_or(Refusal::TooLarge)?;
        if next > MAX_RESPONSE {
            return Err(Refusal::TooLarge);
        }
        if body.len() < next {
            return Ok(None);
        }
        if &body[next - 2..next] != b"\r\n" {
            return Err(Invalid);
        }
        pos = next;
    }
}

/// Examines the bytes received so far. `closed` says the server has
/// closed its side (which ends a body that has no length); `head_request`
/// that the request was a HEAD (whose answer has no body). Interim `1xx`
/// answers (other than 101) are skipped: the final answer follows them.
pub fn progress(buf: &[u8], closed: bool, head_request: bool) -> Progress {
    progress_resuming(buf, closed, head_request, &mut 0)
}

/// [`progress`] for a buffer that only grows between calls: `checked`
/// (0 for a new response) keeps how much of a chunked body is known good.
pub fn progress_resuming(
    buf: &[u8],
    closed: bool,
    head_request: bool,
    checked: &mut usize,
) -> Progress {
    if buf.len() > MAX_RESPONSE {
        return Progress::TooLarge;
    }
    let mut offset = 0;
    loop {
        let head = match parse_head(&buf[offset..], head_request) {
            Ok(Some(head)) => head,
            Ok(None) => return Progress::Incomplete,
            Err(refusal) => return refusal.into(),
        };
        if (100..200).contains(&head.status) && head.status != 101 {
            offset += head.len;
            continue;
        }
        let body = &buf[offset + head.len..];
        let body_len = match head.framing {
            Framing::Length(n) if n > MAX_RESPONSE => return Progress::TooLarge,
            Framing::Length(n) if body.len() >= n => n,
            Framing::Length(_) => return Progress::Incomplete,
            Framing::Chunked => match chunked_end(body, checked) {
                Ok(Some(n)) => n,
                Ok(None) => return Progress::Incomplete,
                Err(refusal) => return refusal.into(),
            },
            Framing::UntilClose if closed => body.len(),
            Framing::UntilClose => return Progress::Incomplete,
        };
        return Progress::Complete {
            head,
            len: offset + head.len + body_len,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8], closed: bool) -> (u16, usize, bool) {
        match progress(raw, closed, false) {
            Progress::Complete { head, len } => (head.status, len, head.keep_alive),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn content_length_and_connection() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
        assert_eq!(complete(raw, false), (200, raw.len(), false));
        assert_eq!(
            progress(&raw[..raw.len() - 1], false, false),
            Progress::Incomplete
        );
        let raw = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(complete(raw, false), (404, raw.len(), true));
    }

    #[test]
    fn chunked_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        assert_eq!(complete(raw, false), (200, raw.len(), true));
        assert_eq!(
            progress(&raw[..raw.len() - 2], false, false),
            Progress::Incomplete
        );
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(progress(bad, false, false), Progress::Invalid);
    }

    #[test]
    fn until_close_and_garbage() {
        let raw = b"HTTP/1.0 200 OK\r\n\r\nbody";
        assert_eq!(progress(raw, false, false), Progress::Incomplete);
        assert_eq!(complete(raw, true), (200, raw.len(), false));
        assert_eq!(
            progress(b"garbage\r\n\r\n", false, false),
            Progress::Invalid
        );
        assert_eq!(
            progress(
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                false,
                false
            ),
            Progress::Invalid
        );
        // Issue 14: two lengths that disagree, or a signed one.
        for head in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
        ] {
            assert_eq!(progress(head, false, false), Progress::Invalid);
        }
        let same = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(complete(same, false).0, 200);
    }

    #[test]
    fn head_answers_interim_answers_and_header_quirks() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 22\r\n\r\n";
        assert_eq!(progress(head, false, false), Progress::Incomplete);
        assert!(
            matches!(progress(head, false, true), Progress::Complete { len, .. } if len == head.len())
        );
        let interim =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(complete(interim, false), (201, interim.len(), true));
        let both = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 99\r\n\r\n0\r\n\r\n";
        assert_eq!(complete(both, false).1, both.len());
        let latin1 = b"HTTP/1.1 200 OK\r\nSet-Cookie: caf\xe9\r\nConnection: close, upgrade\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(complete(latin1, false), (200, latin1.len(), false));
        let huge = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n";
        assert_eq!(progress(huge, false, false), Progress::TooLarge);
    }

    #[test]
    fn a_chunked_body_arriving_in_pieces_is_scanned_once_and_ends_the_same() {
        let mut raw =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        for i in 0..200 {
            let chunk = vec![b'a' + (i % 26) as u8; 1 + i * 7 % 300];
            raw.extend(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
            raw.extend(&chunk);
            raw.extend(b"\r\n");
        }
        raw.extend(b"0\r\nTrailer: x\r\n\r\n");
        let whole = progress(&raw, false, false);
        assert!(matches!(whole, Progress::Complete { len, .. } if len == raw.len()));
        for piece in [1, 7, 64, 1000] {
            let mut checked = 0;
            let mut seen = None;
            for end in (piece..raw.len()).step_by(piece).chain([raw.len()]) {
                match progress_resuming(&raw[..end], false, false, &mut checked) {
                    Progress::Complete { len, .. } => {
                        seen = Some((end, len));
                        break;
                    }
                    Progress::Incomplete => {}
                    other @ (Progress::Invalid | Progress::TooLarge) => {
                        panic!("{other:?} at {end} (pieces of {piece})")
                    }
                }
            }
            assert_eq!(seen, Some((raw.len(), raw.len())), "pieces of {piece}");
            assert!(checked > raw.len() / 2, "the scan moved on: {checked}");
        }
    }

    #[test]
    fn a_head_over_the_limit_is_refused_however_it_arrives() {
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() <= MAX_HEAD {
            big.extend_from_slice(b"X-Padding: ");
            big.extend(std::iter::repeat_n(b'p', 10_000));
            big.extend_from_slice(b"\r\n");
        }
        big.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        // All at once: the head parses completely, and is still too long.
        assert_eq!(progress(&big, false, false), Progress::TooLarge);
        assert_eq!(progress(&big, true, false), Progress::TooLarge);
        // In pieces: refused as soon as it passes the limit, never accepted.
        for piece in [1000, 4096, 60_000] {
            let mut checked = 0;
            let verdicts: Vec<Progress> = (piece..big.len())
                .step_by(piece)
                .chain([big.len()])
                .map(|end| progress_resuming(&big[..end], false, false, &mut checked))
                .collect();
            assert!(
                verdicts
                    .iter()
                    .all(|v| matches!(v, Progress::Incomplete | Progress::TooLarge)),
                "pieces of {piece}: {verdicts:?}"
            );
            assert_eq!(
                verdicts.last(),
                Some(&Progress::TooLarge),
                "pieces of {piece}"
            );
        }
        // Just under the limit is fine.
        let mut ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Padding: ".to_vec();
        ok.extend(std::iter::repeat_n(b'p', MAX_HEAD - ok.len() - 4));
        ok.extend_from_slice(b"\r\n\r\n");
        assert_eq!(ok.len(), MAX_HEAD);
        assert!(
            matches!(progress(&ok, false, false), Progress::Complete { len, .. } if len == MAX_HEAD)
        );
    }
}
