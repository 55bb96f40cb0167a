//! strace-compatible text output.
//!
//! Lines look like `strace -f`'s: `[pid  1234] futex(0x7f…,
//! FUTEX_WAIT_PRIVATE, 0, NULL) = 0`. A call that blocks while another
//! thread does something is split as strace splits it, into
//! `… <unfinished ...>` and `[pid 1234] <... futex resumed>) = 0`.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use tracebench_trace::clock::{monotonic_ns, realtime_ns};

use crate::render::{
    FdPaths, Strings, entry_args_of, exit_args_of, return_value_of, siginfo, signal_name,
    syscall_name, with_fd_paths, with_strings,
};
use tracebench_trace::{DataCapture, Event, EventKind, EventSink, ExitStatus};

/// When to print a timestamp before each line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timestamps {
    /// No timestamp.
    #[default]
    None,
    /// Wall-clock time of day, to the second (`-t`).
    Seconds,
    /// Wall-clock time with microseconds (`-tt`).
    Absolute,
    /// Seconds since the epoch, with microseconds (`-ttt`).
    Epoch,
    /// Seconds since the previous line (`-r`).
    Relative,
}

/// How a line names its thread, as strace -f does it on a terminal and in
/// a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThreadPrefix {
    /// `[pid  1234] ` once more than one thread was seen (on screen).
    #[default]
    Screen,
    /// `1234  ` on every line (strace -f -o FILE): what strace-process-tree
    /// and stracetools parse.
    File,
    /// Never: a file of one thread (strace -ff -o FILE writes FILE.TID).
    Never,
}

/// Which calls the text shows, by how they returned (strace's -z, -Z).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Results {
    /// Every call.
    #[default]
    All,
    /// Only those that did not return an error (`-z`).
    Successful,
    /// Only those that returned an error (`-Z`).
    Failed,
}

impl Results {
    /// strace's `-e status=SET`: `successful`, `failed`, `all`, comma
    /// separated (`!` before the set: all but it).
    pub fn parse_status(set: &str) -> Result<Results, String> {
        let (negated, set) = match set.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, set),
        };
        let (mut successful, mut failed) = (false, false);
        for word in set.split(',') {
            match word.trim() {
                "successful" => successful = true,
                "failed" => failed = true,
                "all" => (successful, failed) = (true, true),
                "none" => {}
                other @ ("unfinished" | "unavailable" | "detached") => {
                    return Err(format!(
                        "status={other} is not supported: a call is shown whole when it \
                         returns, successful or failed"
                    ));
                }
                other => return Err(format!("status={other}: unknown status")),
            }
        }
        if negated {
            (successful, failed) = (!successful, !failed);
        }
        match (successful, failed) {
            (true, true) => Ok(Results::All),
            (true, false) => Ok(Results::Successful),
            (false, true) => Ok(Results::Failed),
            (false, false) => Err("status=: no call would be shown".into()),
        }
    }
}

/// Which delivered signals the text shows (strace's `-e signal=SET`), as
/// a bit per signal number 1 to 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalFilter(u64);

impl Default for SignalFilter {
    fn default() -> Self {
        SignalFilter(u64::MAX)
    }
}

impl SignalFilter {
    /// `all`, `none`, or names (`SIGINT` or `INT`) and numbers, comma
    /// separated; `!` before the set shows every other signal.
    pub fn parse(set: &str) -> Result<SignalFilter, String> {
        let (negated, set) = match set.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, set),
        };
        let mut bits = 0u64;
        for word in set.split(',').map(str::trim) {
            bits |= match word {
                "all" => u64::MAX,
                "none" => 0,
                _ => 1 << (signal_number(word)? - 1),
            };
        }
        Ok(SignalFilter(if negated { !bits } else { bits }))
    }

    /// Whether `signal`'s deliveries are shown.
    pub fn shows(self, signal: i32) -> bool {
        (1..=64).contains(&signal) && self.0 & (1 << (signal - 1)) != 0
    }
}

/// A signal's number from its name (`SIGTERM`, `TERM`, `SIGRT_2`) or its
/// number.
fn signal_number(word: &str) -> Result<u32, String> {
    if let Ok(number) = word.parse::<u32>() {
        return match number {
            1..=64 => Ok(number),
            _ => Err(format!("signal={word}: not a signal number (1 to 64)")),
        };
    }
    let name = word.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    (1..=64)
        .find(|&n| signal_name(n) == name)
        .map(|n| n as u32)
        .ok_or_else(|| format!("signal={word}: unknown signal"))
}

/// Options of the text format.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextOptions {
    /// Timestamps before each line.
    pub timestamps: Timestamps,
    /// Time spent in each syscall, `<0.000123>` at the end (`-T`).
    pub durations: bool,
    /// How each line names its thread.
    pub prefix: ThreadPrefix,
    /// How strings and buffers are written (`-x`, `-xx`).
    pub strings: Strings,
    /// Which calls to show.
    pub results: Results,
    /// Which delivered signals to show.
    pub signals: SignalFilter,
    /// With `-y`: how to look up what a descriptor refers to, while the
    /// thread is stopped at the event being written (live tracing only:
    /// a recording's descriptors are gone).
    pub fd_paths: Option<FdPaths>,
}

struct Pending {
    nr: u32,
    args: [u64; 6],
    entry_ns: u64,
    /// The entry's text, held back until the return says whether the call
    /// is shown (`-z`, `-Z`).
    held: Option<String>,
}

/// Writes events as strace would print them.
pub struct StraceWriter<W: Write> {
    out: W,
    options: TextOptions,
    /// The thread whose entry line is still open (no newline yet).
    open_line: Option<i32>,
    pending: HashMap<i32, Pending>,
    threads_seen: HashSet<i32>,
    /// Several threads were traced from the first line on (an attach).
    several_from_start: bool,
    last_ns: Option<u64>,
    realtime_offset_ns: i128,
    /// Bytes written since the last newline: where `= result` aligns.
    column: usize,
    error: Option<io::Error>,
}

/// The column strace aligns results at (its `-a` default).
const RESULT_COLUMN: usize = 40;

impl<W: Write> StraceWriter<W> {
    /// A writer to `out`.
    pub fn new(out: W, options: TextOptions) -> Self {
        StraceWriter {
            out,
            options,
            open_line: None,
            pending: HashMap::new(),
            threads_seen: HashSet::new(),
            several_from_start: false,
            last_ns: None,
            realtime_offset_ns: i128::from(realtime_ns()) - i128::from(monotonic_ns()),
            column: 0,
            error: None,
        }
    }

    /// Shows times as wall-clock times of the recording, whose clocks read
    /// `monotonic_ns` and `realtime_ns` at the same moment (a trace file's
    /// header). Without this, the clocks of now are used: right while
    /// tracing, not for a file recorded before a clock step or a reboot.
    pub fn recorded_at(&mut self, monotonic_ns: u64, realtime_ns: i64) {
        self.realtime_offset_ns = i128::from(realtime_ns) - i128::from(monotonic_ns);
    }

    /// Says that `threads` threads are traced before the first event (an
    /// attach to a running program): with more than one, every line
    /// carries its `[pid N]`, the first ones too, as strace's do.
    pub fn threads_at_start(&mut self, threads: usize) {
        self.several_from_start = threads > 1;
    }

    /// Flushes and returns the first write error, if any happened.
    pub fn finish(mut self) -> io::Result<W> {
        if self.open_line.take().is_some() {
            self.write(" <unfinished ...>\n".to_owned());
        }
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn write(&mut self, text: String) {
        self.column = match text.rfind('\n') {
            Some(end) => text.len() - end - 1,
            None => self.column + text.len(),
        };
        if self.error.is_none()
            && let Err(e) = self.out.write_all(text.as_bytes())
        {
            self.error = Some(e);
        }
    }

    /// Ends the call on the current line with `= result`, aligned as
    /// strace aligns it: at column 40, or one space after the call.
    fn write_result(&mut self, result: &str) {
        let pad = RESULT_COLUMN.saturating_sub(self.column).max(1);
        self.write(format!("{:pad$}= {result}\n", ""));
    }

    fn prefix(&mut self, event: &Event) -> String {
        let mut text = String::new();
        match self.options.prefix {
            ThreadPrefix::File => text += &format!("{:<5} ", event.tid),
            ThreadPrefix::Screen if self.threads_seen.len() > 1 || self.several_from_start => {
                text += &format!("[pid {:>5}] ", event.tid);
            }
            ThreadPrefix::Screen | ThreadPrefix::Never => {}
        }
        match self.options.timestamps {
            Timestamps::None => {}
            Timestamps::Epoch => {
                let wall = event.time_ns as i128 + self.realtime_offset_ns;
                text += &format!(
                    "{}.{:06} ",
                    wall / 1_000_000_000,
                    (wall % 1_000_000_000) / 1000
                );
            }
            Timestamps::Seconds | Timestamps::Absolute => {
                let wall = event.time_ns as i128 + self.realtime_offset_ns;
                let seconds = (wall / 1_000_000_000) as libc::time_t;
                let micros = (wall % 1_000_000_000) / 1000;
                // SAFETY: localtime_r fills our local tm from our local time_t.
                let tm = unsafe {
                    let mut tm: libc::tm = std::mem::zeroed();
                    libc::localtime_r(&seconds, &mut tm);
                    tm
                };
                text += &format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec);
                if self.options.timestamps == Timestamps::Absolute {
                    text += &format!(".{micros:06}");
                }
                text.push(' ');
            }
            Timestamps::Relative => {
                let since = event
                    .time_ns
                    .saturating_sub(self.last_ns.unwrap_or(event.time_ns));
                text += &format!(
                    "{:>3}.{:06} ",
                    since / 1_000_000_000,
                    (since % 1_000_000_000) / 1000
                );
            }
        }
        self.last_ns = Some(event.time_ns);
        text
    }

    /// Ends another thread's open entry line before printing for `tid`.
    fn interrupt_open_line(&mut self, tid: i32) {
        if let Some(open) = self.open_line
            && open != tid
        {
            self.write(" <unfinished ...>\n".to_owned());
            self.open_line = None;
        }
    }

    fn duration(&self, pending: Option<&Pending>, now: u64) -> String {
        match (self.options.durations, pending) {
            (true, Some(p)) => {
                let spent = now.saturating_sub(p.entry_ns);
                format!(
                    " <{}.{:06}>",
                    spent / 1_000_000_000,
                    (spent % 1_000_000_000) / 1000
                )
            }
            _ => String::new(),
        }
    }
}

impl<W: Write> StraceWriter<W> {
    /// A thread's end: the call it died in, then `+++ exited with N +++`.
    fn exited(&mut self, event: &Event, status: ExitStatus) {
        let tid = event.tid;
        if let Some(pending) = self.pending.remove(&tid) {
            // exit, exit_group, or a call the thread died in.
            if let Some(entry) = pending.held {
                // Never returned: neither a success nor a failure, but
                // strace shows how a thread ended.
                self.interrupt_open_line(tid);
                self.write(entry + ")");
            } else if self.open_line == Some(tid) {
                self.write(")".to_owned());
                self.open_line = None;
            } else {
                self.interrupt_open_line(tid);
                let prefix = self.prefix(event);
                self.write(format!(
                    "{prefix}<... {} resumed>)",
                    syscall_name(pending.nr)
                ));
            }
            self.write_result("?");
        }
        self.interrupt_open_line(tid);
        let prefix = self.prefix(event);
        let text = match status {
            ExitStatus::Code(code) => format!("{prefix}+++ exited with {code} +++\n"),
            ExitStatus::Unknown => format!("{prefix}+++ exited (status not captured) +++\n"),
            // strace leaves out the death by a signal it does not show.
            ExitStatus::Signal(signal) if !self.options.signals.shows(signal) => return,
            ExitStatus::Signal(signal) => {
                format!("{prefix}+++ killed by {} +++\n", signal_name(signal))
            }
        };
        self.write(text);
    }

    /// A non-leader exec'ed: the old leader is gone (its last call never
    /// returns) and the execing thread, still inside execve, now answers
    /// to the leader's tid.
    fn superseded(&mut self, event: &Event, former_tid: i32) {
        let tid = event.tid;
        if self.open_line.take().is_some() {
            self.write(" <unfinished ...>\n".to_owned());
        }
        if let Some(gone) = self.pending.remove(&tid) {
            let prefix = self.prefix(event);
            self.write(format!("{prefix}<... {} resumed>)", syscall_name(gone.nr)));
            self.write_result("?");
        }
        let prefix = self.prefix(event);
        self.write(format!(
            "{prefix}+++ superseded by execve in pid {former_tid} +++\n"
        ));
        if let Some(execve) = self.pending.remove(&former_tid) {
            self.pending.insert(tid, execve);
        }
    }
}

impl<W: Write> StraceWriter<W> {
    /// A call's entry: its line starts (or is held back for -z, -Z).
    fn entered(
        &mut self,
        event: &Event,
        nr: u32,
        args: &[u64; 6],
        data: &[u8],
        data_capture: DataCapture,
    ) {
        let tid = event.tid;
        let filtered = self.options.results != Results::All;
        if !filtered {
            self.interrupt_open_line(tid);
        }
        let prefix = self.prefix(event);
        let text = format!(
            "{prefix}{}({}",
            syscall_name(nr),
            entry_args_of(nr, args, data, data_capture)
        );
        let held = if filtered {
            Some(text)
        } else {
            self.write(text);
            self.open_line = Some(tid);
            None
        };
        self.pending.insert(
            tid,
            Pending {
                nr,
                args: *args,
                entry_ns: event.time_ns,
                held,
            },
        );
    }

    /// A call's return: its line ends, or comes whole when held back.
    fn returned(
        &mut self,
        event: &Event,
        nr: u32,
        ret: i64,
        data: &[u8],
        data_capture: DataCapture,
    ) {
        let tid = event.tid;
        let mut pending = self.pending.remove(&tid);
        let args = pending.as_ref().map_or([0; 6], |p| p.args);
        if self.options.results != Results::All {
            // strace's test of an error return: -4095 to -1.
            let failed = (-4095..0).contains(&ret);
            if failed != (self.options.results == Results::Failed) {
                return;
            }
        }
        let held = pending.as_mut().and_then(|p| p.held.take());
        let tail = format!("{})", exit_args_of(nr, &args, ret, data, data_capture));
        let result = format!(
            "{}{}",
            return_value_of(nr, &args, ret, data),
            self.duration(pending.as_ref(), event.time_ns)
        );
        if let Some(entry) = held {
            self.interrupt_open_line(tid);
            self.write(entry + &tail);
        } else if self.open_line == Some(tid) {
            self.open_line = None;
            self.write(tail);
        } else {
            self.interrupt_open_line(tid);
            let prefix = self.prefix(event);
            self.write(format!("{prefix}<... {} resumed>{tail}", syscall_name(nr)));
        }
        self.write_result(&result);
    }
}

impl<W: Write> EventSink for StraceWriter<W> {
    fn event(&mut self, event: &Event) {
        let (strings, fd_paths) = (self.options.strings, self.options.fd_paths);
        with_strings(strings, || {
            with_fd_paths(fd_paths, event.tid, || self.write_event(event));
        });
    }
}

impl<W: Write> StraceWriter<W> {
    fn write_event(&mut self, event: &Event) {
        self.threads_seen.insert(event.tid);
        let tid = event.tid;
        match &event.kind {
            EventKind::SyscallEntry {
                nr,
                args,
                data,
                data_capture,
            } => self.entered(event, *nr, args, data, *data_capture),
            EventKind::SyscallExit {
                nr,
                ret,
                data,
                data_capture,
            } => self.returned(event, *nr, *ret, data, *data_capture),
            EventKind::Exited { status } => self.exited(event, *status),
            EventKind::Signal { signal, .. } if !self.options.signals.shows(*signal) => {}
            EventKind::Signal { signal, info } => {
                self.interrupt_open_line(tid);
                let prefix = self.prefix(event);
                let name = signal_name(*signal);
                self.write(match siginfo(info) {
                    Some(info) => format!("{prefix}--- {name} {info} ---\n"),
                    None => format!("{prefix}--- {name} ---\n"),
                });
            }
            EventKind::GroupStop { signal } => {
                self.interrupt_open_line(tid);
                let prefix = self.prefix(event);
                self.write(format!(
                    "{prefix}--- stopped by {} ---\n",
                    signal_name(*signal)
                ));
            }
            EventKind::Spawned { child_tid, .. } => {
                self.threads_seen.insert(*child_tid);
            }
            EventKind::Exec { former_tid } if *former_tid != tid => {
                self.superseded(event, *former_tid)
            }
            EventKind::Exec { .. } => {}
            // strace has no line for a sample or the scheduler's view;
            // -c and the dashboard show them.
            EventKind::Sampled { .. }
            | EventKind::OffCpu { .. }
            | EventKind::OnCpu { .. }
            | EventKind::Woken { .. } => {}
            EventKind::Lost { cpu, count } => {
                // A gap in every thread's story: said where it happened.
                self.interrupt_open_line(tid);
                self.write(format!(
                    "--- {count} events lost: the ring buffer of CPU {cpu} was full ---\n"
                ));
            }
        }
    }
}

/// strace's `-ff -o BASE`: each thread's calls in a file of its own,
/// `BASE.TID`, opened when the thread is first seen and closed when it
/// ends (a server making a thread per request never holds thousands
/// open).
pub struct PerThreadFiles<W: Write, F: FnMut(i32) -> io::Result<W>> {
    open: F,
    options: TextOptions,
    writers: HashMap<i32, StraceWriter<W>>,
    error: Option<io::Error>,
}

impl<W: Write, F: FnMut(i32) -> io::Result<W>> PerThreadFiles<W, F> {
    /// Writes thread `tid`'s calls to what `open(tid)` gives, as `options`
    /// say (without a thread prefix: the file names the thread).
    pub fn new(open: F, options: TextOptions) -> Self {
        PerThreadFiles {
            open,
            options: TextOptions {
                prefix: ThreadPrefix::Never,
                ..options
            },
            writers: HashMap::new(),
            error: None,
        }
    }

    /// Ends every file still open; the first error of any, if one failed.
    pub fn finish(mut self) -> io::Result<()> {
        for (_, writer) in self.writers.drain() {
            if let Err(e) = writer.finish() {
                self.error.get_or_insert(e);
            }
        }
        self.error.map_or(Ok(()), Err)
    }
}

impl<W: Write, F: FnMut(i32) -> io::Result<W>> EventSink for PerThreadFiles<W, F> {
    fn event(&mut self, event: &Event) {
        if self.error.is_some() {
            return;
        }
        let tid = event.tid;
        if !self.writers.contains_key(&tid) {
            match (self.open)(tid) {
                Ok(out) => {
                    self.writers
                        .insert(tid, StraceWriter::new(out, self.options));
                }
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        }
        if let Some(writer) = self.writers.get_mut(&tid) {
            writer.event(event);
        }
        if matches!(event.kind, EventKind::Exited { .. })
            && let Some(writer) = self.writers.remove(&tid)
            && let Err(e) = writer.finish()
        {
            self.error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syscalls::Sysno;
    use tracebench_trace::DataCapture;

    fn event(tid: i32, time_ns: u64, kind: EventKind) -> Event {
        Event {
            time_ns,
            pid: 100,
            tid,
            kind,
        }
    }

    /// One `close(3) = 0` by thread 101, as written with `options` after
    /// an attach to `threads` threads.
    fn a_close(options: TextOptions, threads: usize) -> String {
        let close = Sysno::close.id() as u32;
        let mut writer = StraceWriter::new(Vec::new(), options);
        writer.threads_at_start(threads);
        let args = [3, 0, 0, 0, 0, 0];
        let data = vec![];
        writer.event(&event(
            101,
            1,
            EventKind::SyscallEntry {
                nr: close,
                args,
                data,
                data_capture: DataCapture::Captured,
            },
        ));
        let data = vec![];
        writer.event(&event(
            101,
            2,
            EventKind::SyscallExit {
                nr: close,
                ret: 0,
                data,
                data_capture: DataCapture::Captured,
            },
        ));
        String::from_utf8(writer.finish().unwrap()).unwrap()
    }

    #[test]
    fn t_tt_and_ttt_stamp_lines_as_strace_does() {
        let stamp = |timestamps: Timestamps| {
            let options = TextOptions {
                timestamps,
                ..TextOptions::default()
            };
            a_close(options, 1).split_once(' ').unwrap().0.to_owned()
        };
        let shape = |text: &str| -> String {
            text.chars()
                .map(|c| if c.is_ascii_digit() { '9' } else { c })
                .collect()
        };
        assert_eq!(shape(&stamp(Timestamps::Seconds)), "99:99:99");
        assert_eq!(shape(&stamp(Timestamps::Absolute)), "99:99:99.999999");
        let epoch = stamp(Timestamps::Epoch);
        let (seconds, micros) = epoch.split_once('.').unwrap();
        assert!(seconds.parse::<u64>().unwrap() > 1_600_000_000, "{epoch}");
        assert_eq!(micros.len(), 6, "{epoch}");
    }

    #[test]
    fn a_recording_shows_its_own_wall_clock_time() {
        // Export printed the recording's events at today's offset between
        // the clocks: microseconds off, or days after a reboot.
        let options = TextOptions {
            timestamps: Timestamps::Epoch,
            ..TextOptions::default()
        };
        let mut writer = StraceWriter::new(Vec::new(), options);
        writer.recorded_at(0, 1_700_000_000_250_000_000);
        let exit_group = Sysno::exit_group.id() as u32;
        writer.event(&event(
            7,
            3_000_000,
            EventKind::SyscallEntry {
                nr: exit_group,
                args: [0; 6],
                data: vec![],
                data_capture: DataCapture::Captured,
            },
        ));
        let text = String::from_utf8(writer.finish().unwrap()).unwrap();
        assert!(text.starts_with("1700000000.253000 exit_group(0"), "{text}");
    }

    #[test]
    fn after_an_attach_to_several_threads_the_first_line_names_its_thread() {
        assert_eq!(
            a_close(TextOptions::default(), 6),
            "[pid   101] close(3)                    = 0\n"
        );
        assert_eq!(
            a_close(TextOptions::default(), 1),
            "close(3)                                = 0\n"
        );
    }

    #[test]
    fn in_a_file_every_line_starts_with_its_thread_as_strace_f_o_writes() {
        // Issue 15: strace-process-tree and stracetools read `N ` on every
        // line of a file, not the terminal's `[pid N]`.
        let file = TextOptions {
            prefix: ThreadPrefix::File,
            ..TextOptions::default()
        };
        assert_eq!(
            a_close(file, 1),
            "101   close(3)                          = 0\n"
        );
        assert_eq!(
            a_close(file, 6),
            "101   close(3)                          = 0\n"
        );
    }

    #[test]
    fn interleaved_calls_split_like_strace() {
        let futex = Sysno::futex.id() as u32;
        let close = Sysno::close.id() as u32;
        let wait = [
            0x10,
            (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as u64,
            0,
            0,
            0,
            0,
        ];
        let mut writer = StraceWriter::new(Vec::new(), TextOptions::default());
        for e in [
            event(
                100,
                1,
                EventKind::Spawned {
                    child_tid: 101,
                    child_pid: 100,
                    creation: tracebench_trace::Creation::Thread,
                },
            ),
            event(
                101,
                2,
                EventKind::SyscallEntry {
                    nr: futex,
                    args: wait,
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            ),
            event(
                100,
                3,
                EventKind::SyscallEntry {
                    nr: close,
                    args: [4, 0, 0, 0, 0, 0],
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            ),
            event(
                100,
                4,
                EventKind::SyscallExit {
                    nr: close,
                    ret: 0,
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            ),
            event(
                101,
                5,
                EventKind::SyscallExit {
                    nr: futex,
                    ret: 0,
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            ),
            event(
                101,
                6,
                EventKind::Exited {
                    status: ExitStatus::Code(0),
                },
            ),
        ] {
            writer.event(&e);
        }
        let text = String::from_utf8(writer.finish().unwrap()).unwrap();
        assert_eq!(
            text,
            "[pid   101] futex(0x10, FUTEX_WAIT_PRIVATE, 0, NULL <unfinished ...>\n\
             [pid   100] close(4)                    = 0\n\
             [pid   101] <... futex resumed>)        = 0\n\
             [pid   101] +++ exited with 0 +++\n"
        );
    }

    #[test]
    fn durations_and_exit_group() {
        let exit_group = Sysno::exit_group.id() as u32;
        let read = Sysno::read.id() as u32;
        let options = TextOptions {
            timestamps: Timestamps::Relative,
            durations: true,
            ..TextOptions::default()
        };
        let mut writer = StraceWriter::new(Vec::new(), options);
        writer.event(&event(
            7,
            1_000,
            EventKind::SyscallEntry {
                nr: read,
                args: [0, 1, 10, 0, 0, 0],
                data: vec![],
                data_capture: DataCapture::Captured,
            },
        ));
        writer.event(&event(
            7,
            2_501_000,
            EventKind::SyscallExit {
                nr: read,
                ret: 2,
                data: b"hi".to_vec(),
                data_capture: DataCapture::Captured,
            },
        ));
        writer.event(&event(
            7,
            3_000_000,
            EventKind::SyscallEntry {
                nr: exit_group,
                args: [3; 6],
                data: vec![],
                data_capture: DataCapture::Captured,
            },
        ));
        writer.event(&event(
            7,
            3_000_100,
            EventKind::Exited {
                status: ExitStatus::Code(3),
            },
        ));
        let text = String::from_utf8(writer.finish().unwrap()).unwrap();
        assert_eq!(
            text,
            "  0.000000 read(0, \"hi\", 10)            = 2 <0.002500>\n  \
             0.002999 exit_group(3)                = ?\n  \
             0.000000 +++ exited with 3 +++\n"
        );
    }
}
