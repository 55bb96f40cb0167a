//! **pipe**: the parent writes messages into a pipe, a forked child reads
//! them and writes each back through a second pipe, and the parent checks
//! every echo. Then the parent closes its write end: the child's read(2)
//! returns 0 (end of file: no writer is left), the child reports how many
//! bytes it echoed, closes its own write end and exits, and the parent's
//! read(2) on the return pipe returns 0 in turn.
//!
//! End of file needs *every* write end closed: each process closes the
//! ends it does not use right after the fork, or the child would wait
//! forever on a writer it holds itself.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::process::{ChildExit, ForkedChild};
use crate::{LabError, Result};

/// The most messages the lab sends.
pub const MAX_MESSAGES: u64 = 1_000_000;

/// How long the parent waits for the child to exit after end of file.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the pipe lab runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Messages to send (1..=[`MAX_MESSAGES`]).
    pub messages: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { messages: 1000 }
    }
}

/// What a pipe run saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Messages written.
    pub sent: u64,
    /// Echoes that came back byte for byte.
    pub echoed: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Bytes the child had echoed when its read(2) returned 0.
    pub child_bytes_at_eof: u64,
    /// Whether the parent's read(2) on the return pipe returned 0 after
    /// the child's report.
    pub parent_saw_eof: bool,
    /// The child's exit code.
    pub child_exit_code: i32,
}

/// Runs the echo and the close, and prints what each side saw.
pub fn run(options: &Options, out: &mut impl Write) -> Result<Report> {
    if !(1..=MAX_MESSAGES).contains(&options.messages) {
        return Err(LabError::InvalidOption(format!(
            "--messages must be 1 to {MAX_MESSAGES}"
        )));
    }
    writeln!(
        out,
        "pipe: the parent writes {} messages into a pipe; the child echoes each one back through a second pipe",
        options.messages
    )?;
    out.flush()?;
    let (to_child_read, to_child_write) = pipe()?;
    let (from_child_read, from_child_write) = pipe()?;

    let child = {
        let (input, output) = (to_child_read.as_raw_fd(), from_child_write.as_raw_fd());
        let unused = [to_child_write.as_raw_fd(), from_child_read.as_raw_fd()];
        ForkedChild::spawn(move || echo(input, output, unused))?
    };
    writeln!(
        out,
        "  child {} forked; each side closes the ends it does not use",
        child.pid()
    )?;
    // The child's ends: if the parent kept them, it would hold a writer of
    // the return pipe and never see its end of file.
    drop(to_child_read);
    drop(from_child_write);
    let mut to_child = File::from(to_child_write);
    let mut from_child = File::from(from_child_read);

    let mut echoed = 0;
    let mut bytes = 0;
    let mut echo = Vec::new();
    for index in 0..options.messages {
        let message = format!("message {index}\n");
        to_child
            .write_all(message.as_bytes())
            .map_err(LabError::os("write to the child"))?;
        echo.resize(message.len(), 0);
        from_child
            .read_exact(&mut echo)
            .map_err(LabError::os("read the echo"))?;
        bytes += message.len() as u64;
        if echo == message.as_bytes() {
            echoed += 1;
        }
    }
    writeln!(
        out,
        "  sent {} messages ({bytes} bytes); {echoed} came back identical",
        options.messages
    )?;

    // The only write end of the first pipe: now the child's read returns 0.
    drop(to_child);
    let mut trailer = [0u8; 8];
    from_child
        .read_exact(&mut trailer)
        .map_err(LabError::os("read the child's report"))?;
    let child_bytes_at_eof = u64::from_le_bytes(trailer);
    writeln!(
        out,
        "  the parent closed its write end: the child's read(2) returned 0 (end of file) after {child_bytes_at_eof} bytes"
    )?;
    let mut rest = [0u8; 1];
    let parent_saw_eof = from_child
        .read(&mut rest)
        .map_err(LabError::os("read after the child closed"))?
        == 0;
    let exit = child.wait(EXIT_TIMEOUT)?;
    let child_exit_code = match exit {
        ChildExit::Code(code) => code,
        ChildExit::Signal(signal) => {
            return Err(LabError::Failed(format!(
                "the child was killed by signal {signal}"
            )));
        }
    };
    writeln!(
        out,
        "  the child closed its end and exited {child_exit_code}: the parent's read(2) returned {}",
        if parent_saw_eof {
            "0 (end of file) too"
        } else {
            "more data (unexpected)"
        }
    )?;
    Ok(Report {
        sent: options.messages,
        echoed,
        bytes,
        child_bytes_at_eof,
        parent_saw_eof,
        child_exit_code,
    })
}

/// pipe2(O_CLOEXEC): (read end, write end).
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(LabError::last_os("pipe2"));
    }
    // SAFETY: both descriptors were just created and are owned by nobody
    // else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The child: echo until end of file, then send the byte count and exit.
/// Raw reads and writes only (a forked child of a possibly multi-threaded
/// process).
fn echo(input: i32, output: i32, unused: [i32; 2]) -> i32 {
    for fd in unused {
        // SAFETY: closing the child's copies of the parent's ends.
        unsafe { libc::close(fd) };
    }
    let mut buffer = [0u8; 4096];
    let mut echoed: u64 = 0;
    loop {
        // SAFETY: reading into our own stack buffer, at most its length.
        let got = unsafe { libc::read(input, buffer.as_mut_ptr().cast(), buffer.len()) };
        if got == 0 {
            break;
        }
        if got < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return 3;
        }
        let got = got as usize;
        if !write_all(output, &buffer[..got]) {
            return 4;
        }
        echoed += got as u64;
    }
    if !write_all(output, &echoed.to_le_bytes()) {
        return 5;
    }
    // SAFETY: closing our own descriptors before exit, so the parent's
    // read sees end of file even if exit were delayed.
    unsafe {
        libc::close(output);
        libc::close(input);
    }
    0
}

fn write_all(fd: i32, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: writing from a slice we borrow, at most its length.
        let put = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if put < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return false;
        }
        bytes = &bytes[put as usize..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_comes_back_and_both_sides_see_end_of_file() {
        let report = run(&Options { messages: 500 }, &mut Vec::new()).unwrap();
        assert_eq!(report.sent, 500);
        assert_eq!(report.echoed, 500);
        assert_eq!(report.child_bytes_at_eof, report.bytes);
        assert!(report.parent_saw_eof);
        assert_eq!(report.child_exit_code, 0);
    }

    #[test]
    fn the_output_says_read_returned_0() {
        let mut out = Vec::new();
        run(&Options { messages: 3 }, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("3 came back identical"), "{text}");
        assert!(text.contains("read(2) returned 0 (end of file)"), "{text}");
    }

    #[test]
    fn zero_messages_is_an_error() {
        assert!(run(&Options { messages: 0 }, &mut Vec::new()).is_err());
    }
}
