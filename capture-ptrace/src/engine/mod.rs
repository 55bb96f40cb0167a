//! The ptrace loop. One thread (the caller of [`crate::PtraceCapture::run`]) owns every ptrace
//! call: it blocks in `waitpid(-1, __WALL)`, handles the stop, then drains
//! every other ready stop with `WNOHANG` before blocking again, so a busy
//! thread cannot starve the others.
//!
//! Every ptrace call may fail with ESRCH at any moment: the thread was
//! killed (say, by another thread's exit_group). That is not an error; the
//! thread's exit status arrives through waitpid soon after.

mod attach;
mod spawn;

use foldhash::{HashMap, HashMapExt};
use tracebench_trace::DataCapture;

use tracebench_trace::clock::monotonic_ns;
use tracebench_trace::syscall::used_args;
use tracebench_trace::{
    CaptureEnd, CaptureError, Creation, Event, EventKind, EventSink, ExitStatus, Sampled,
    StopHandle,
};

pub(crate) use spawn::pin_to_cpu;

use crate::PtraceOptions;
use crate::pointers;
use crate::proc::{self, is_asleep, tgid_of};
use crate::ptrace::{self, Stop, SyscallInfo, Tid};
use crate::wake;

/// What the engine knows about one traced thread.
#[derive(Debug, Clone)]
pub(crate) struct Thread {
    /// The thread group (process) it belongs to.
    pid: Tid,
    /// Whether its first ptrace-stop (the attach stop) has been seen.
    started: bool,
    /// The syscall it is in, if its entry was seen: number, arguments,
    /// and whether it is recorded.
    current: Option<(u64, [u64; 6], bool)>,
    /// What the recorded call's in/out arguments held at entry (the
    /// kernel rewrites them before the exit can read them).
    before: Vec<u8>,
    /// Seccomp mode: the entry was seen at a seccomp stop, so resume with
    /// PTRACE_SYSCALL to see the exit.
    awaiting_exit: bool,
    /// Past PTRACE_EVENT_EXIT: it will never stop again (a leader that
    /// exited before its threads lingers as a zombie until they do).
    exiting: bool,
    /// When it last stopped (trace clock, ns).
    last_stop_ns: u64,
    /// What the last look at it found while it was quiet outside any
    /// recorded call ([`Engine::look_at_quiet_threads`]); cleared by its
    /// next stop.
    sampled: Option<Sampled>,
}

impl Thread {
    fn new(pid: Tid) -> Thread {
        Thread {
            pid,
            started: false,
            current: None,
            before: Vec::new(),
            awaiting_exit: false,
            exiting: false,
            last_stop_ns: 0,
            sampled: None,
        }
    }
}

/// A thread quiet this long outside any recorded call is looked at in
/// /proc: what the trace cannot prove (it is blocked in a call not
/// selected, or runs in user space) is then shown as sampled, not guessed.
const QUIET_NS: u64 = 250_000_000;

pub(crate) struct Engine {
    options: PtraceOptions,
    /// How the capture is asked to end.
    stop: StopHandle,
    pub(crate) threads: HashMap<Tid, Thread>,
    /// The process we started or attached to.
    root: Tid,
    pub(crate) seccomp: bool,
    spawned: bool,
    /// Spawn mode, until the program's first exec: the SIGSTOP/SIGCONT of
    /// our start-up handshake are ours, not the program's, and not shown.
    starting: bool,
    exit: Option<ExitStatus>,
    detached: bool,
    /// Interrupted from outside with a spawned program: the signal is the
    /// program's to handle, as under strace (see [`GracefulStop`]).
    graceful: Option<GracefulStop>,
    /// The last signal a traced process was about to receive, and when.
    last_signal: Option<(i32, std::time::Instant)>,
    /// Poll for the next stop this long before blocking in waitpid: set
    /// when idle CPUs halt (no CPU latency request held).
    pub(crate) spin_before_block: Option<std::time::Duration>,
    /// When quiet threads are next looked at ([`Engine::look_at_quiet_threads`]):
    /// at most twice per [`QUIET_NS`], not at every stop.
    next_look_ns: u64,
}

/// How long the tracer polls for a next stop before it sleeps, when idle
/// CPUs halt. Under load the next stop usually comes within tens of µs, and
/// a tracer that is already running takes it without the wake-up of a
/// halted CPU: measured here with idle CPUs halting, 50 µs took the traced
/// pool server from a median 7.1 k to 9.7 k req/s (docs/benchmarks.md).
/// With idle CPUs polling it costs instead (21 k → 13 k: the spinning
/// tracer holds a CPU the program needs), so it is off then.
pub(crate) const SPIN_BEFORE_BLOCK: std::time::Duration = std::time::Duration::from_micros(50);

/// A spawned program given the chance to end by itself on the signal that
/// interrupted us. A terminal's Ctrl-C reaches the whole foreground process
/// group, the program included, so it usually has the signal already; one
/// sent to the tracer alone (kill -INT, a closing terminal's SIGHUP to a
/// backgrounded tracer) is passed on to it. A second signal, or
/// [`StopHandle::stop`], kills it.
#[derive(Debug, Clone, Copy)]
struct GracefulStop {
    signal: i32,
    since: std::time::Instant,
    /// The program was seen receiving it, or we passed it on.
    delivered: bool,
}

/// How long the program may take to show it got the signal itself before
/// we pass it on.
const SIGNAL_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

fn ptrace_options(seccomp: bool, follow_forks: bool, exit_kill: bool) -> libc::c_int {
    let mut options = libc::PTRACE_O_TRACESYSGOOD
        | libc::PTRACE_O_TRACECLONE
        | libc::PTRACE_O_TRACEEXEC
        | libc::PTRACE_O_TRACEEXIT;
    if follow_forks {
        options |= libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACEVFORK;
    }
    if seccomp {
        options |= libc::PTRACE_O_TRACESECCOMP;
    }
    if exit_kill {
        options |= libc::PTRACE_O_EXITKILL;
    }
    options
}

/// A session dropped before its program ended (an error, or a library user
/// giving up) must not leave threads stopped: a spawned program is killed,
/// an attached one detached.
impl Drop for Engine {
    fn drop(&mut self) {
        if self.threads.is_empty() || self.detached {
            return;
        }
        if self.spawned {
            self.kill_all();
            while matches!(ptrace::wait_any(false), Ok(Some(_))) {}
        } else {
            self.detach_all(&mut |_: &Event| {});
        }
    }
}

impl Engine {
    pub(crate) fn new(options: PtraceOptions, stop: StopHandle) -> Self {
        Engine {
            options,
            stop,
            threads: HashMap::new(),
            root: 0,
            seccomp: false,
            spawned: false,
            starting: false,
            exit: None,
            detached: false,
            graceful: None,
            last_signal: None,
            spin_before_block: None,
            next_look_ns: 0,
        }
    }

    /// Polls for a ptrace stop for [`Engine::spin_before_block`], if set.
    fn spin_for_a_stop(&self) -> Option<(Tid, libc::c_int)> {
        let spin = self.spin_before_block?;
        let until = std::time::Instant::now() + spin;
        while std::time::Instant::now() < until {
            if let Ok(Some(stop)) = ptrace::wait_any(true) {
                return Some(stop);
            }
            std::hint::spin_loop();
        }
        None
    }

    pub(crate) fn run(&mut self, sink: &mut dyn EventSink) -> Result<CaptureEnd, CaptureError> {
        // A stop asked for from another thread interrupts our waitpid.
        let thread = wake::this_thread();
        self.stop.set_waker(move || wake::interrupt(thread));
        // Whatever way the loop ends (a sink may panic), nothing may keep
        // aiming signals at this thread afterwards.
        struct LoopRunning(StopHandle);
        impl Drop for LoopRunning {
            fn drop(&mut self) {
                self.0.clear_waker();
            }
        }
        let _running = LoopRunning(self.stop.clone());
        // Dropped before the loop's thread moves on: no tick after it.
        let _ticks = wake::Ticker::start(thread, std::time::Duration::from_nanos(QUIET_NS / 2));
        self.run_loop(sink)
    }

    fn run_loop(&mut self, sink: &mut dyn EventSink) -> Result<CaptureEnd, CaptureError> {
        let mut interrupt_handled = false;
        // Only for tests of the interrupt race: the first wait, once the
        // program runs, is entered this many ms after the flag was checked.
        let mut test_interrupt_window = std::env::var("TRACEBENCH_TEST_INTERRUPT_WINDOW_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(std::time::Duration::from_millis);
        loop {
            if self.stop.requested() && !interrupt_handled {
                interrupt_handled = true;
                if !self.spawned {
                    self.detach_all(sink);
                    break;
                }
                match self.stop.signal() {
                    Some(signal) if !self.stop.forced() => {
                        let delivered = self.last_signal.is_some_and(|(seen, at)| {
                            seen == signal && at.elapsed() < SIGNAL_GRACE
                        });
                        self.graceful = Some(GracefulStop {
                            signal,
                            since: std::time::Instant::now(),
                            delivered,
                        });
                    }
                    _ => self.kill_all(),
                }
            }
            self.follow_graceful_stop();
            self.look_at_quiet_threads(sink);
            sink.idle(monotonic_ns());
            // Checked again after the sinks' work, to keep the window in
            // which a signal can slip in before the blocking wait small
            // (one that does is caught by the kick timer).
            if self.stop.requested() && !interrupt_handled {
                continue;
            }
            if test_interrupt_window.is_some() {
                // Test hook: once the program is idle, hold the window
                // open, and say so.
                match ptrace::wait_any(true) {
                    Ok(Some((tid, status))) => {
                        self.handle(tid, status, sink);
                        continue;
                    }
                    Ok(None) => {}
                    // Nothing left to trace: no window to hold open.
                    Err(_) => test_interrupt_window = None,
                }
                if !is_asleep(self.root) {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
                if let Some(window) = test_interrupt_window.take() {
                    eprintln!("tracebench: test: interrupt window open");
                    std::thread::sleep(window);
                }
            }
            if let Some((tid, status)) = self.spin_for_a_stop() {
                self.handle(tid, status, sink);
                continue;
            }
            match ptrace::wait_any(false) {
                Ok(Some((tid, status))) => self.handle(tid, status, sink),
                Ok(None) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => break,
                Err(source) => {
                    return Err(CaptureError::Os {
                        what: "waitpid",
                        source,
                    });
                }
            }
            while let Ok(Some((tid, status))) = ptrace::wait_any(true) {
                self.handle(tid, status, sink);
            }
            if self.threads.is_empty() && !self.spawned {
                break;
            }
        }
        Ok(CaptureEnd {
            exit: self.exit,
            detached: self.detached,
            lost_events: 0,
            skipped_probes: 0,
            caveats: Vec::new(),
        })
    }

    /// While a spawned program handles the signal that interrupted us:
    /// pass it on if the program did not get it, and kill on a second one.
    /// The loop is kicked every 50 ms meanwhile (the handler's timer).
    fn follow_graceful_stop(&mut self) {
        let Some(mut stop) = self.graceful else {
            return;
        };
        if self.stop.forced() || self.stop.signals() >= 2 {
            self.graceful = None;
            self.kill_all();
            return;
        }
        if !stop.delivered && stop.since.elapsed() >= SIGNAL_GRACE {
            // SAFETY: kill(2) on the process we started.
            unsafe { libc::kill(self.root, stop.signal) };
            stop.delivered = true;
        }
        self.graceful = Some(stop);
    }

    fn kill_all(&mut self) {
        let mut pids: Vec<Tid> = self.threads.values().map(|t| t.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            // SAFETY: kill(2) on a process we traced (and so are allowed to).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Threads quiet for [`QUIET_NS`] outside any recorded call: what
    /// they are doing, from /proc/TID/syscall (or, with every syscall
    /// stopping, from the call they are in), as a [`Sampled`] event when it
    /// changed since the last look.
    fn look_at_quiet_threads(&mut self, sink: &mut dyn EventSink) {
        let now = monotonic_ns();
        // The loop comes here after every stop: walk the threads only once
        // a tick, not thousands of times a second under load.
        if now < self.next_look_ns {
            return;
        }
        self.next_look_ns = now + QUIET_NS / 2;
        let mut seen = Vec::new();
        for (&tid, thread) in &mut self.threads {
            if !thread.started
                || thread.exiting
                || now.saturating_sub(thread.last_stop_ns) < QUIET_NS
                || matches!(thread.current, Some((_, _, true)))
            {
                continue;
            }
            let sampled = match thread.current {
                Some((nr, args, false)) => Some(Sampled::Blocked {
                    nr: nr as u32,
                    args,
                }),
                _ => proc::syscall_of(tid),
            };
            // Running is news only after a look found it blocked.
            let news = match (&sampled, &thread.sampled) {
                (Some(Sampled::Running), None) => false,
                (Some(now_seen), before) => before.as_ref() != Some(now_seen),
                (None, _) => false,
            };
            if news {
                thread.sampled = sampled;
                seen.push((tid, thread.pid, sampled.expect("news is a sample")));
            }
        }
        for (tid, pid, sampled) in seen {
            self.emit(sink, tid, pid, now, EventKind::Sampled { seen: sampled });
        }
    }

    fn emit(&self, sink: &mut dyn EventSink, tid: Tid, pid: Tid, time_ns: u64, kind: EventKind) {
        sink.event(&Event {
            time_ns,
            pid,
            tid,
            kind,
        });
    }

    /// Resumes `tid`: to the next syscall stop when every syscall stops
    /// (no seccomp) or when the exit of a seccomp-trapped syscall is due;
    /// otherwise to the next seccomp stop or event.
    fn resume(&self, tid: Tid, signal: i32) {
        let to_syscall = !self.seccomp || self.threads.get(&tid).is_some_and(|t| t.awaiting_exit);
        let _ = if to_syscall {
            ptrace::resume_to_syscall(tid, signal)
        } else {
            ptrace::resume(tid, signal)
        };
    }

    fn handle(&mut self, tid: Tid, status: libc::c_int, sink: &mut dyn EventSink) {
        let now = monotonic_ns();
        let Some(stop) = Stop::from_status(status) else {
            return;
        };
        // A new thread may stop before its creator's clone event arrives.
        let thread = self
            .threads
            .entry(tid)
            .or_insert_with(|| Thread::new(tgid_of(tid)));
        let pid = thread.pid;
        let first_stop = !thread.started;
        thread.started = true;
        thread.last_stop_ns = now;
        thread.sampled = None;
        match stop {
            Stop::Exited(code) => self.on_exit(tid, pid, now, ExitStatus::Code(code), sink),
            Stop::Killed(signal) => self.on_exit(tid, pid, now, ExitStatus::Signal(signal), sink),
            Stop::Syscall => {
                match ptrace::get_syscall_info(tid) {
                    Ok(SyscallInfo::Entry { nr, args }) => {
                        self.on_entry(tid, pid, now, nr, args, sink)
                    }
                    Ok(SyscallInfo::Exit { ret }) => self.on_syscall_exit(tid, pid, now, ret, sink),
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return,
                    // Never leave a thread stopped because we could not
                    // decode its stop.
                    Err(_) => {}
                }
                self.resume(tid, 0);
            }
            Stop::Event(event, signal) => {
                self.on_event(tid, pid, now, event, signal, first_stop, sink)
            }
            Stop::Signal(signal) => {
                self.last_signal = Some((signal, std::time::Instant::now()));
                if let Some(stop) = self.graceful.as_mut()
                    && stop.signal == signal
                {
                    stop.delivered = true;
                }
                if !(self.starting && tid == self.root && signal == libc::SIGCONT) {
                    let info = ptrace::signal_info(tid);
                    self.emit(sink, tid, pid, now, EventKind::Signal { signal, info });
                }
                self.resume(tid, signal);
            }
        }
    }

    fn on_exit(
        &mut self,
        tid: Tid,
        pid: Tid,
        now: u64,
        status: ExitStatus,
        sink: &mut dyn EventSink,
    ) {
        self.threads.remove(&tid);
        self.emit(sink, tid, pid, now, EventKind::Exited { status });
        if tid == self.root {
            self.exit = Some(status);
        }
    }

    fn on_entry(
        &mut self,
        tid: Tid,
        pid: Tid,
        now: u64,
        nr: u64,
        args: [u64; 6],
        sink: &mut dyn EventSink,
    ) {
        let args = used_args(nr, args);
        let recorded = self.options.selection.matches(nr, &args);
        if let Some(thread) = self.threads.get_mut(&tid) {
            thread.current = Some((nr, args, recorded));
            thread.before = if recorded {
                pointers::before_exit(tid, nr, &args)
            } else {
                Vec::new()
            };
        }
        if recorded {
            // Memory is read through the thread, not the process: a leader that
            // exited early leaves a process id whose memory cannot be read.
            let data = pointers::at_entry(tid, nr, &args, self.options.string_limit);
            self.emit(
                sink,
                tid,
                pid,
                now,
                EventKind::SyscallEntry {
                    nr: nr as u32,
                    args,
                    data,
                    data_capture: DataCapture::Captured,
                },
            );
        }
    }

    fn on_syscall_exit(
        &mut self,
        tid: Tid,
        pid: Tid,
        now: u64,
        ret: i64,
        sink: &mut dyn EventSink,
    ) {
        let Some(thread) = self.threads.get_mut(&tid) else {
            return;
        };
        thread.awaiting_exit = false;
        if let Some((nr, args, true)) = thread.current.take() {
            let before = std::mem::take(&mut thread.before);
            let limit = self.options.string_limit;
            let data = pointers::at_exit(tid, nr, &args, ret, &before, limit);
            self.emit(
                sink,
                tid,
                pid,
                now,
                EventKind::SyscallExit {
                    nr: nr as u32,
                    ret,
                    data,
                    data_capture: DataCapture::Captured,
                },
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_event(
        &mut self,
        tid: Tid,
        pid: Tid,
        now: u64,
        event: i32,
        signal: i32,
        first_stop: bool,
        sink: &mut dyn EventSink,
    ) {
        match event {
            libc::PTRACE_EVENT_SECCOMP => {
                if let Ok(SyscallInfo::Seccomp { nr, args }) = ptrace::get_syscall_info(tid) {
                    self.on_entry(tid, pid, now, nr, args, sink);
                    if let Some(thread) = self.threads.get_mut(&tid) {
                        thread.awaiting_exit = true;
                    }
                }
                self.resume(tid, 0);
            }
            libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK => {
                if let Ok(child) = ptrace::event_message(tid) {
                    let child = child as Tid;
                    let child_pid = if event == libc::PTRACE_EVENT_CLONE {
                        tgid_of(child)
                    } else {
                        child
                    };
                    let creation = match event {
                        libc::PTRACE_EVENT_VFORK => Creation::Vfork,
                        _ if child_pid == pid => Creation::Thread,
                        _ => Creation::Process,
                    };
                    let entry = self.threads.entry(child).or_insert(Thread::new(child_pid));
                    entry.pid = child_pid;
                    self.emit(
                        sink,
                        tid,
                        pid,
                        now,
                        EventKind::Spawned {
                            child_tid: child,
                            child_pid,
                            creation,
                        },
                    );
                }
                self.resume(tid, 0);
            }
            libc::PTRACE_EVENT_EXEC => {
                let former = ptrace::event_message(tid).map(|f| f as Tid).unwrap_or(tid);
                if former != tid {
                    // A non-leader exec'ed: it takes over the leader's tid,
                    // and its syscall state (inside execve) comes along.
                    if let Some(mut state) = self.threads.remove(&former) {
                        state.pid = tid;
                        self.threads.insert(tid, state);
                    }
                }
                if tid == self.root {
                    self.starting = false;
                }
                self.emit(sink, tid, tid, now, EventKind::Exec { former_tid: former });
                self.resume(tid, 0);
            }
            libc::PTRACE_EVENT_STOP => {
                let stopping = matches!(
                    signal,
                    libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                );
                // The spawned child's own SIGSTOP (our handshake, already
                // answered with SIGCONT) is the one stop not to keep.
                let handshake = first_stop && self.starting && tid == self.root;
                if stopping && !handshake {
                    // A group-stop: stay stopped, but let us hear SIGCONT.
                    self.emit(sink, tid, pid, now, EventKind::GroupStop { signal });
                    let _ = ptrace::listen(tid);
                } else {
                    // The attach stop, an interrupt, or the end of a
                    // group-stop.
                    self.resume(tid, 0);
                }
            }
            libc::PTRACE_EVENT_EXIT => {
                // About to exit; its status arrives through waitpid.
                if let Some(thread) = self.threads.get_mut(&tid) {
                    thread.exiting = true;
                }
                self.resume(tid, 0);
            }
            _ => self.resume(tid, 0),
        }
    }
}
