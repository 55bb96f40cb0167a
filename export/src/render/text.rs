//! The pieces every renderer is made of, as strace prints them: numbers,
//! addresses, flag sets, quoted strings and buffers, timespecs.

use std::cell::Cell;
use std::fmt::Write;

/// How strings and buffers are written (strace's -x, -xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strings {
    /// Text, with escapes for what is not printable.
    #[default]
    Escaped,
    /// A string holding any byte that is neither printable nor a
    /// whitespace escape (`\t \n \v \f \r`) is written whole in `\xNN`
    /// (`-x`).
    HexWhenBinary,
    /// Every string in `\xNN` (`-xx`).
    Hex,
}

thread_local! {
    /// The style `quoted` writes in on this thread: set around one event
    /// by [`with_strings`], so a writer's option reaches every renderer
    /// without passing through each.
    static STRINGS: Cell<Strings> = const { Cell::new(Strings::Escaped) };
}

/// What a descriptor of a thread refers to, for strace's `-y`: a path,
/// `socket:[inode]`, `pipe:[inode]`; for `AT_FDCWD`, the working
/// directory. `None` when it cannot be told (the thread is gone).
pub type FdPaths = fn(tid: i32, fd: i32) -> Option<String>;

thread_local! {
    /// Where descriptors are looked up while one event is written, and
    /// for which thread: set by [`with_fd_paths`].
    static FD_PATHS: Cell<Option<(FdPaths, i32)>> = const { Cell::new(None) };
}

/// Runs `f` with the descriptors of thread `tid` shown with what they
/// refer to (`3</etc/hosts>`), looked up through `paths`.
pub fn with_fd_paths<R>(paths: Option<FdPaths>, tid: i32, f: impl FnOnce() -> R) -> R {
    let before = FD_PATHS.with(|p| p.replace(paths.map(|paths| (paths, tid))));
    let result = f();
    FD_PATHS.with(|p| p.set(before));
    result
}

/// `fd` as strace shows it: the number, and with `-y` what it refers to.
pub(super) fn fd(value: u64) -> String {
    let fd = value as i32;
    match FD_PATHS.with(Cell::get) {
        Some((paths, tid)) if fd >= 0 => decorated(fd.to_string(), paths(tid, fd)),
        _ => fd.to_string(),
    }
}

/// `text<what>`, with what the lookup found made safe to print.
fn decorated(text: String, found: Option<String>) -> String {
    match found {
        Some(path) => {
            let quoted = quoted(path.as_bytes(), false);
            format!("{text}<{}>", &quoted[1..quoted.len() - 1])
        }
        None => text,
    }
}

/// Runs `f` with strings written in `style` on this thread.
pub fn with_strings<R>(style: Strings, f: impl FnOnce() -> R) -> R {
    let before = STRINGS.with(|s| s.replace(style));
    let result = f();
    STRINGS.with(|s| s.set(before));
    result
}

pub(super) fn hex(value: u64) -> String {
    if value == 0 {
        "NULL".to_owned()
    } else {
        format!("{value:#x}")
    }
}

pub(super) fn int(value: u64) -> String {
    (value as i32).to_string()
}

/// Flag names with their values; prints `A|B|0x40` for leftovers.
pub(super) fn flags(value: u64, names: &[(u64, &str)], zero: &str) -> String {
    if value == 0 {
        return zero.to_owned();
    }
    let mut rest = value;
    let mut parts = Vec::new();
    for &(bit, name) in names {
        if bit != 0 && rest & bit == bit {
            parts.push(name.to_owned());
            rest &= !bit;
        }
    }
    if rest != 0 {
        parts.push(format!("{rest:#x}"));
    }
    parts.join("|")
}

/// A C string (or buffer) the way strace quotes it: escapes for
/// non-printable bytes, `...` when cut at the limit.
pub fn quoted(bytes: &[u8], truncated: bool) -> String {
    let mut text = String::with_capacity(bytes.len() + 2);
    text.push('"');
    let binary = |b: &u8| !matches!(b, 0x20..=0x7e | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let hex = match STRINGS.with(Cell::get) {
        Strings::Escaped => false,
        Strings::HexWhenBinary => bytes.iter().any(binary),
        Strings::Hex => true,
    };
    if hex {
        for b in bytes {
            let _ = write!(text, "\\x{b:02x}");
        }
        text.push('"');
        if truncated {
            text.push_str("...");
        }
        return text;
    }
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => text.push_str("\\\""),
            b'\\' => text.push_str("\\\\"),
            b'\n' => text.push_str("\\n"),
            b'\r' => text.push_str("\\r"),
            b'\t' => text.push_str("\\t"),
            0x0b => text.push_str("\\v"),
            0x0c => text.push_str("\\f"),
            0x20..=0x7e => text.push(b as char),
            _ => {
                // Octal, as strace writes it (\0, \33, \177): the
                // shortest form, or all three digits when a digit follows
                // and would otherwise be read as part of it.
                let digit_follows = bytes.get(i + 1).is_some_and(|n| (b'0'..=b'7').contains(n));
                if digit_follows {
                    let _ = write!(text, "\\{b:03o}");
                } else {
                    let _ = write!(text, "\\{b:o}");
                }
            }
        }
    }
    text.push('"');
    if truncated {
        text.push_str("...");
    }
    text
}

/// Bytes in `\xNN` whatever they are, as strace shows random bytes.
pub(super) fn quoted_hex(bytes: &[u8], truncated: bool) -> String {
    let mut text = String::with_capacity(bytes.len() * 4 + 5);
    text.push('"');
    for b in bytes {
        let _ = write!(text, "\\x{b:02x}");
    }
    text.push('"');
    if truncated {
        text.push_str("...");
    }
    text
}

pub(super) fn buffer(data: &[u8], length: u64) -> String {
    quoted(data, (data.len() as u64) < length)
}

/// `{tv_sec=1, tv_nsec=500}` from 16 captured bytes, or the pointer.
pub fn timespec(bytes: &[u8], pointer: u64) -> String {
    if pointer == 0 {
        return "NULL".to_owned();
    }
    match (bytes.get(0..8), bytes.get(8..16)) {
        (Some(sec), Some(nsec)) => {
            let sec = i64::from_ne_bytes(sec.try_into().expect("8 bytes"));
            let nsec = i64::from_ne_bytes(nsec.try_into().expect("8 bytes"));
            format!("{{tv_sec={sec}, tv_nsec={nsec}}}")
        }
        _ => hex(pointer),
    }
}

/// A directory descriptor argument: `AT_FDCWD` or the number (with
/// `-y`, and what they refer to, as strace 6 shows them).
pub(super) fn dirfd(value: u64) -> String {
    if value as i32 != libc::AT_FDCWD {
        return fd(value);
    }
    match FD_PATHS.with(Cell::get) {
        Some((paths, tid)) => decorated("AT_FDCWD".to_owned(), paths(tid, libc::AT_FDCWD)),
        None => "AT_FDCWD".to_owned(),
    }
}
