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
}

const MAX_HEADERS: usize = 64;
/// A head longer than this is refused as invalid.
const MAX_HEAD: usize = 64 * 1024;

fn parse_head(buf: &[u8]) -> Result<Option<Head>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let status = response.code.ok_or(())?;
    let http10 = response.version == Some(0);
    let mut keep_alive = !http10;
    let mut framing = Framing::UntilClose;
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| ())?.trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            framing = Framing::Length(value.parse().map_err(|_| ())?);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            framing = Framing::Chunked;
        } else if header.name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        }
    }
    // No body for these, whatever the headers say.
    if status == 204 || status == 304 || (100..200).contains(&status) {
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

/// Where a chunked body ends, if all of it is in `body`.
fn chunked_end(body: &[u8]) -> Result<Option<usize>, ()> {
    let mut pos = 0;
    loop {
        let Some(line_end) = body[pos..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&body[pos..pos + line_end]).map_err(|_| ())?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| ())?;
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
            .ok_or(())?;
        if body.len() < next {
            return Ok(None);
        }
        if &body[next - 2..next] != b"\r\n" {
            return Err(());
        }
        pos = next;
    }
}

/// Examines the bytes received so far. `closed` says the server has
/// closed its side (which ends a body that has no length).
pub fn progress(buf: &[u8], closed: bool) -> Progress {
    let head = match parse_head(buf) {
        Ok(Some(head)) => head,
        Ok(None) => return Progress::Incomplete,
        Err(()) => return Progress::Invalid,
    };
    let body = &buf[head.len..];
    let body_len = match head.framing {
        Framing::Length(n) if body.len() >= n => n,
        Framing::Length(_) => return Progress::Incomplete,
        Framing::Chunked => match chunked_end(body) {
            Ok(Some(n)) => n,
            Ok(None) => return Progress::Incomplete,
            Err(()) => return Progress::Invalid,
        },
        Framing::UntilClose if closed => body.len(),
        Framing::UntilClose => return Progress::Incomplete,
    };
    Progress::Complete {
        head,
        len: head.len + body_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8], closed: bool) -> (u16, usize, bool) {
        match progress(raw, closed) {
            Progress::Complete { head, len } => (head.status, len, head.keep_alive),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn content_length_and_connection() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
        assert_eq!(complete(raw, false), (200, raw.len(), false));
        assert_eq!(progress(&raw[..raw.len() - 1], false), Progress::Incomplete);
        let raw = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(complete(raw, false), (404, raw.len(), true));
    }

    #[test]
    fn chunked_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        assert_eq!(complete(raw, false), (200, raw.len(), true));
        assert_eq!(progress(&raw[..raw.len() - 2], false), Progress::Incomplete);
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(progress(bad, false), Progress::Invalid);
    }

    #[test]
    fn until_close_and_garbage() {
        let raw = b"HTTP/1.0 200 OK\r\n\r\nbody";
        assert_eq!(progress(raw, false), Progress::Incomplete);
        assert_eq!(complete(raw, true), (200, raw.len(), false));
        assert_eq!(progress(b"garbage\r\n\r\n", false), Progress::Invalid);
        assert_eq!(
            progress(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            Progress::Invalid
        );
    }
}
