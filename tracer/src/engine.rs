//! The ptrace loop. One thread (the caller of [`trace`]) owns every ptrace
//! call: it blocks in `waitpid(-1, __WALL)`, handles the stop, then drains
//! every other ready stop with `WNOHANG` before blocking again, so a busy
//! thread cannot starve the others.
//!
//! Every ptrace call may fail with ESRCH at any moment: the thread was
//! killed (say, by another thread's exit_group). That is not an error; the
//! thread's exit status arrives through waitpid soon after.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cpu_latency::CpuLatencyRequest;
use crate::event::{Creation, Event, EventKind, EventSink, ExitStatus};
use crate::ptrace::{self, Stop, SyscallInfo, Tid};
use crate::selection::Selection;
use crate::{TraceError, seccomp};

/// What to trace.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start this program (searched in PATH) with these arguments.
    Spawn {
        /// The program.
        program: OsString,
        /// Its arguments, without the program name.
        args: Vec<OsString>,
    },
    /// Seize every thread of this running process.
    Attach {
        /// Its process id.
        pid: i32,
    },
}

/// How to trace.
#[derive(Debug, Clone)]
pub struct Options {
    /// The syscalls to record.
    pub selection: Selection,
    /// Install a seccomp filter so only selected syscalls stop (spawn only).
    pub seccomp: bool,
    /// Follow forked and cloned processes (threads are always followed).
    pub follow_forks: bool,
    /// How many bytes of strings and buffers to capture.
    pub string_limit: usize,
    /// Run the tracer (and a spawned program) on this CPU only. A ptrace
    /// stop that crosses CPUs needs an inter-processor wake-up, which on
    /// virtual machines costs several times the stop itself.
    pub cpu: Option<usize>,
    /// Where a spawned program's standard input, output and error go.
    pub stdio: ProgramStdio,
    /// While tracing, ask that idle CPUs poll instead of halting (a CPU
    /// latency QoS request of 0 µs, see [`crate::cpu_latency`]), so the two
    /// wake-ups of every ptrace stop need no interrupt and no idle exit.
    /// Best effort: without write access to /dev/cpu_dma_latency (root's)
    /// the trace runs without it.
    pub poll_idle: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            selection: Selection::default(),
            seccomp: true,
            follow_forks: true,
            string_limit: 32,
            cpu: None,
            stdio: ProgramStdio::Inherit,
            poll_idle: true,
        }
    }
}

/// Where a spawned program's standard streams go.
#[derive(Debug, Clone, Default)]
pub enum ProgramStdio {
    /// Ours: the program shares the tracer's terminal or files.
    #[default]
    Inherit,
    /// /dev/null for all three (a dashboard owns the terminal).
    Null,
    /// /dev/null for input; output and error both to this file descriptor,
    /// typically a pipe's write end whose read end the caller drains.
    /// The tracer's copy closes when the session ends, so the reader sees
    /// end-of-file once the program and every child holding it are gone.
    Capture(Arc<OwnedFd>),
}

/// How a trace ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The traced program's exit, when it ended while traced.
    pub exit: Option<ExitStatus>,
    /// Whether the tracer let go of a still-running program (attach mode,
    /// interrupted).
    pub detached: bool,
    /// Whether the seccomp fast path was used.
    pub seccomp: bool,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The first SIGINT, SIGTERM or SIGHUP from outside (0: none yet).
static SIGNALLED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
/// How many of those came from outside (not our own kicks).
static EXTERNAL_SIGNALS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// [`request_stop`] was called: a spawned program is killed at once, not
/// left to handle a signal.
static FORCE_STOP: AtomicBool = AtomicBool::new(false);
/// Whether such a signal ends the trace at once ([`stop_on_signals`]) or
/// is only noted for the caller to act on ([`notice_signals`]).
static STOP_ON_SIGNAL: AtomicBool = AtomicBool::new(true);
/// The thread running the ptrace loop (its pthread_t), so another thread's
/// [`request_stop`] can interrupt its waitpid; 0 when none runs.
static TRACER_THREAD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static HANDLERS_INSTALLED: AtomicBool = AtomicBool::new(false);

/// A POSIX timer (its `timer_t`, -1 when none: glibc's first timer is 0)
/// that sends SIGINT to the
/// thread running the ptrace loop. An interrupt landing after the loop
/// checked the flag but before its blocking waitpid would otherwise wait
/// for the tracee's next event (for ever, if the tracee is idle): the
/// handler arms the timer, so the loop's thread is interrupted again 50 ms
/// later, and again, until the loop has acted and removes the timer.
static KICK_TIMER: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(-1);

extern "C" fn on_interrupt(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Our own kicks come from pthread_kill (request_stop) and the timer;
    // anything else (kill(2), the terminal's Ctrl-C) is from outside.
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t.
    let code = unsafe { (*info).si_code };
    if code != libc::SI_TKILL && code != libc::SI_TIMER {
        EXTERNAL_SIGNALS.fetch_add(1, Ordering::SeqCst);
        let _ = SIGNALLED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        if !STOP_ON_SIGNAL.load(Ordering::SeqCst) {
            // The caller stops the trace when it is ready, with
            // request_stop, which kicks the loop again.
            return;
        }
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
    if !INTERRUPTED.load(Ordering::SeqCst) {
        return;
    }
    let timer = KICK_TIMER.load(Ordering::SeqCst);
    if timer != -1 {
        // The interrupted code may be about to read errno: keep it (a
        // timer deleted meanwhile makes timer_settime fail with EINVAL).
        // SAFETY: __errno_location returns this thread's errno.
        let errno = unsafe { *libc::__errno_location() };
        let again = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: 50_000_000,
            },
        };
        // SAFETY: timer_settime is async-signal-safe; the timer lives
        // until the loop that created it clears KICK_TIMER first.
        unsafe { libc::timer_settime(timer as libc::timer_t, 0, &again, std::ptr::null_mut()) };
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = errno };
    }
}

/// Creates the [`KICK_TIMER`] aimed at the calling thread (only where our
/// handler catches SIGINT: elsewhere SIGINT would kill the process).
fn create_kick_timer() {
    if !HANDLERS_INSTALLED.load(Ordering::SeqCst) {
        return;
    }
    // SAFETY: a zeroed sigevent is valid; we fill in a thread-directed
    // notification of SIGINT to this thread, and timer_create writes only
    // to our local timer_t.
    unsafe {
        let mut event: libc::sigevent = std::mem::zeroed();
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = libc::SIGINT;
        event.sigev_notify_thread_id = libc::gettid();
        let mut timer: libc::timer_t = std::ptr::null_mut();
        if libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) == 0 {
            KICK_TIMER.store(timer as i64, Ordering::SeqCst);
        }
    }
}

/// Removes the [`KICK_TIMER`], if any.
fn delete_kick_timer() {
    let timer = KICK_TIMER.swap(-1, Ordering::SeqCst);
    if timer != -1 {
        // SAFETY: the timer was created by create_kick_timer and is no
        // longer reachable from the handler.
        unsafe { libc::timer_delete(timer as libc::timer_t) };
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP end the trace cleanly: a spawned
/// program gets the signal to handle, as under strace (passed on if it did
/// not get it itself; a second signal kills it), and the trace ends when it
/// does; an attached one is detached and runs on. The handler is installed
/// without SA_RESTART so a blocked waitpid returns at once.
pub fn stop_on_signals() -> io::Result<()> {
    STOP_ON_SIGNAL.store(true, Ordering::SeqCst);
    install_handlers()
}

/// Catches SIGINT, SIGTERM and SIGHUP but only notes them
/// ([`signalled`]): the trace goes on until the caller, which has its own
/// things to stop first (a dashboard's load generator, say), calls
/// [`request_stop`]. Without any handler those signals would kill the
/// process and, through EXITKILL, the traced program with it, with nothing
/// put away.
pub fn notice_signals() -> io::Result<()> {
    STOP_ON_SIGNAL.store(false, Ordering::SeqCst);
    install_handlers()
}

/// The first SIGINT, SIGTERM or SIGHUP that arrived from outside since
/// [`stop_on_signals`] or [`notice_signals`], if any.
pub fn signalled() -> Option<i32> {
    match SIGNALLED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

fn install_handlers() -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with our handler and an empty mask.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_interrupt as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    HANDLERS_INSTALLED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Whether SIGINT, SIGTERM or SIGHUP arrived since [`stop_on_signals`] (or
/// [`request_stop`] was called): for loops other than the ptrace loop,
/// such as sampling.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Asks a running [`trace`] (on another thread) to end as if interrupted.
/// With [`stop_on_signals`] installed, the tracer's blocked waitpid is
/// interrupted at once; otherwise the trace ends at its next stop.
pub fn request_stop() {
    FORCE_STOP.store(true, Ordering::SeqCst);
    INTERRUPTED.store(true, Ordering::SeqCst);
    let thread = TRACER_THREAD.load(Ordering::SeqCst);
    if thread != 0 && HANDLERS_INSTALLED.load(Ordering::SeqCst) {
        // SAFETY: the id was stored by the running loop's own thread and is
        // cleared before that loop returns; SIGINT runs our flag handler.
        unsafe { libc::pthread_kill(thread as libc::pthread_t, libc::SIGINT) };
    }
}

/// Traces `target` until it exits (or the trace is interrupted), sending
/// every event to `sink`.
pub fn trace(
    target: &Target,
    options: &Options,
    sink: &mut dyn EventSink,
) -> Result<Outcome, TraceError> {
    Session::start(target, options)?.run(sink)
}

/// A trace that has started (the program is spawned or every thread
/// seized) but whose events have not been read yet.
pub struct Session {
    engine: Engine,
    /// Held for as long as the session lives, through [`Session::run`].
    idle_request: Option<CpuLatencyRequest>,
}

impl Session {
    /// Spawns or attaches. Must be called on the thread that will call
    /// [`Session::run`]: ptrace binds a tracee to the tracing thread.
    pub fn start(target: &Target, options: &Options) -> Result<Session, TraceError> {
        INTERRUPTED.store(false, Ordering::SeqCst);
        FORCE_STOP.store(false, Ordering::SeqCst);
        if let Some(cpu) = options.cpu {
            // Before forking, so a spawned program inherits the mask.
            pin_to_cpu(cpu)?;
        }
        // Before the program starts, so its start-up is traced at the same
        // cost as the rest.
        let idle_request = if options.poll_idle {
            CpuLatencyRequest::poll_idle().ok()
        } else {
            None
        };
        let mut engine = Engine::new(options.clone());
        engine.spin_before_block = idle_request.is_none().then_some(SPIN_BEFORE_BLOCK);
        match target {
            Target::Spawn { program, args } => engine.spawn(program, args)?,
            Target::Attach { pid } => engine.attach(*pid)?,
        }
        Ok(Session {
            engine,
            idle_request,
        })
    }

    /// Whether idle CPUs are held polling for this session
    /// ([`Options::poll_idle`] asked, and the request was granted).
    pub fn polls_idle(&self) -> bool {
        self.idle_request.is_some()
    }

    /// Whether the seccomp fast path is in use.
    pub fn uses_seccomp(&self) -> bool {
        self.engine.seccomp
    }

    /// How many threads are traced now.
    pub fn thread_count(&self) -> usize {
        self.engine.threads.len()
    }

    /// Runs the ptrace loop until the program is gone or the trace is
    /// interrupted, sending every event to `sink`.
    pub fn run(mut self, sink: &mut dyn EventSink) -> Result<Outcome, TraceError> {
        self.engine.run(sink)
    }
}

/// What the engine knows about one traced thread.
#[derive(Debug, Clone)]
struct Thread {
    /// The thread group (process) it belongs to.
    pid: Tid,
    /// Whether its first ptrace-stop (the attach stop) has been seen.
    started: bool,
    /// The syscall it is in, if its entry was seen: number, arguments,
    /// and whether it is recorded.
    current: Option<(u64, [u64; 6], bool)>,
    /// Seccomp mode: the entry was seen at a seccomp stop, so resume with
    /// PTRACE_SYSCALL to see the exit.
    awaiting_exit: bool,
    /// Past PTRACE_EVENT_EXIT: it will never stop again (a leader that
    /// exited before its threads lingers as a zombie until they do).
    exiting: bool,
}

impl Thread {
    fn new(pid: Tid) -> Thread {
        Thread {
            pid,
            started: false,
            current: None,
            awaiting_exit: false,
            exiting: false,
        }
    }
}

struct Engine {
    options: Options,
    threads: HashMap<Tid, Thread>,
    /// The process we started or attached to.
    root: Tid,
    seccomp: bool,
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
    spin_before_block: Option<std::time::Duration>,
}

/// How long the tracer polls for a next stop before it sleeps, when idle
/// CPUs halt. Under load the next stop usually comes within tens of µs, and
/// a tracer that is already running takes it without the wake-up of a
/// halted CPU: measured here with idle CPUs halting, 50 µs took the traced
/// pool server from a median 7.1 k to 9.7 k req/s (docs/benchmarks.md).
/// With idle CPUs polling it costs instead (21 k → 13 k: the spinning
/// tracer holds a CPU the program needs), so it is off then.
const SPIN_BEFORE_BLOCK: std::time::Duration = std::time::Duration::from_micros(50);

/// A spawned program given the chance to end by itself on the signal that
/// interrupted us. A terminal's Ctrl-C reaches the whole foreground process
/// group, the program included, so it usually has the signal already; one
/// sent to the tracer alone (kill -INT, a closing terminal's SIGHUP to a
/// backgrounded tracer) is passed on to it. A second signal, or
/// [`request_stop`], kills it.
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

/// Restricts the calling thread to one CPU.
fn pin_to_cpu(cpu: usize) -> Result<(), TraceError> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(TraceError::BadArgument(format!("no CPU {cpu}")));
    }
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it
    // (cpu is below CPU_SETSIZE), and sched_setaffinity reads it.
    let ret = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if ret != 0 {
        return Err(TraceError::BadArgument(format!(
            "cannot run on CPU {cpu}: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only to our local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// A field of /proc/TID/status.
fn status_field(tid: Tid, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_owned())
}

/// The state letter of a task (R, S, D, T, t, Z…).
fn task_state(tid: Tid) -> Option<char> {
    status_field(tid, "State:")?.chars().next()
}

/// Who traces `tid` (0: nobody).
fn tracer_of(tid: Tid) -> Option<Tid> {
    status_field(tid, "TracerPid:")?.parse().ok()
}

fn our_pid() -> Tid {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// The thread group id of `tid`, from /proc (the tid itself if unknown).
fn tgid_of(tid: Tid) -> Tid {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(tid)
}

/// Finds `program` the way execvp would, so "not found" is reported by us,
/// clearly, before anything is forked.
fn resolve_program(program: &OsStr) -> Result<PathBuf, TraceError> {
    let is_executable = |path: &Path| {
        CString::new(path.as_os_str().as_bytes())
            // SAFETY: access(2) reads the NUL-terminated path.
            .map(|c| unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 && path.is_file())
            .unwrap_or(false)
    };
    let not_found = || TraceError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source: io::Error::new(io::ErrorKind::NotFound, "no such program in PATH"),
    };
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        if is_executable(&path) {
            return Ok(path);
        }
        // Say why, as execve would: a directory, no execute permission, or
        // nothing there.
        let source = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => io::Error::from_raw_os_error(libc::EISDIR),
            Ok(_) => io::Error::from_raw_os_error(libc::EACCES),
            Err(e) => e,
        };
        return Err(TraceError::Spawn {
            program: program.to_string_lossy().into_owned(),
            source,
        });
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(not_found)
}

fn c_string(text: &OsStr) -> Result<CString, TraceError> {
    CString::new(text.as_bytes())
        .map_err(|_| TraceError::BadArgument(format!("{text:?} contains a NUL byte")))
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
    fn new(options: Options) -> Self {
        Engine {
            options,
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

    /// Forks, lets the child stop itself, seizes it, and lets it install
    /// the seccomp filter and exec. Stopping first matters: a filter that
    /// returns SECCOMP_RET_TRACE with no tracer attached fails the syscall
    /// with ENOSYS.
    fn spawn(&mut self, program: &OsStr, args: &[OsString]) -> Result<(), TraceError> {
        let path = c_string(resolve_program(program)?.as_os_str())?;
        let argv_owned: Vec<CString> = std::iter::once(program)
            .chain(args.iter().map(OsString::as_os_str))
            .map(c_string)
            .collect::<Result<_, _>>()?;
        let envp_owned: Vec<CString> = std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut pair = k;
                pair.push("=");
                pair.push(v);
                CString::new(pair.as_bytes()).ok()
            })
            .collect();
        let mut argv: Vec<*const libc::c_char> = argv_owned.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = envp_owned.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        let filter = if self.options.seccomp {
            Some(seccomp::filter(&self.options.selection)?)
        } else {
            None
        };

        let dev_null = c"/dev/null";
        // (stdin, stdout and stderr) from /dev/null, then this descriptor
        // (if any) onto stdout and stderr.
        let (null_stdio, capture) = match &self.options.stdio {
            ProgramStdio::Inherit => (false, None),
            ProgramStdio::Null => (true, None),
            ProgramStdio::Capture(fd) => (true, Some(fd.as_raw_fd())),
        };
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the child runs only async-signal-safe system calls on
        // memory prepared above (kill, prctl, seccomp, execve, _exit).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(TraceError::Os {
                what: "fork",
                source: io::Error::last_os_error(),
            });
        }
        if pid == 0 {
            // SAFETY: see above; nothing here allocates or takes a lock.
            unsafe {
                // Until PTRACE_O_EXITKILL covers us, die with the tracer
                // rather than stay stopped forever if it is killed.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                if libc::getppid() != parent {
                    libc::_exit(125);
                }
                if null_stdio {
                    let fd = libc::open(dev_null.as_ptr(), libc::O_RDWR);
                    if fd >= 0 {
                        for target in 0..3 {
                            libc::dup2(fd, target);
                        }
                    }
                }
                // dup2 clears close-on-exec on the copies, so the program
                // keeps them and nothing else.
                if let Some(fd) = capture {
                    libc::dup2(fd, 1);
                    libc::dup2(fd, 2);
                }
                libc::kill(libc::getpid(), libc::SIGSTOP);
                // Continued: we are seized, and PTRACE_O_EXITKILL now kills
                // us with the tracer. The program must not inherit a
                // parent-death signal it never asked for (execve keeps it).
                libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0);
                if let Some(program) = &filter
                    && seccomp::install(program).is_err()
                {
                    libc::_exit(126);
                }
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        self.spawned = true;
        self.starting = true;
        self.root = pid;
        // Wait until the child has stopped itself, then seize it.
        let mut status = 0;
        let waited = loop {
            // SAFETY: waitpid writes only to our local status.
            let ret = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
            if ret != -1 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break ret;
            }
        };
        if waited != pid || !libc::WIFSTOPPED(status) {
            return Err(TraceError::Os {
                what: "waiting for the child to stop",
                source: io::Error::last_os_error(),
            });
        }
        // Children inherit the filter, and a SECCOMP_RET_TRACE with no
        // tracer fails the syscall with ENOSYS: with seccomp, follow them.
        let options = ptrace_options(
            filter.is_some(),
            self.options.follow_forks || filter.is_some(),
            true,
        );
        if let Err(source) = ptrace::seize(pid, options) {
            // SAFETY: our own child; do not leave it stopped forever, nor
            // a zombie.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(TraceError::Os {
                what: "PTRACE_SEIZE",
                source,
            });
        }
        self.seccomp = filter.is_some();
        self.threads.insert(pid, Thread::new(pid));
        // SAFETY: continue our own stopped child.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        Ok(())
    }

    /// Seizes every thread of `pid`, re-reading /proc/PID/task until a
    /// pass finds no new thread (threads may be created while we attach),
    /// then interrupts each so the loop can start tracing it.
    fn attach(&mut self, pid: i32) -> Result<(), TraceError> {
        if pid <= 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(TraceError::NoSuchProcess(pid));
        }
        if tgid_of(pid) != pid {
            return Err(TraceError::BadArgument(format!(
                "{pid} is a thread, not a process; use its process id"
            )));
        }
        self.root = pid;
        let options = ptrace_options(false, self.options.follow_forks, false);
        loop {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map_err(|_| TraceError::NoSuchProcess(pid))?;
            let mut new = 0;
            for task in tasks.flatten() {
                let Some(tid) = task
                    .file_name()
                    .to_str()
                    .and_then(|t| t.parse::<Tid>().ok())
                else {
                    continue;
                };
                if self.threads.contains_key(&tid) {
                    continue;
                }
                if task_state(tid) == Some('Z') {
                    // A leader that exited before its threads: nothing to
                    // trace, and it cannot be seized.
                    continue;
                }
                match ptrace::seize(tid, options) {
                    Ok(()) => {
                        new += 1;
                        self.threads.insert(tid, Thread::new(pid));
                        let _ = ptrace::interrupt(tid);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    // A thread created by one we already seized is traced
                    // through PTRACE_O_TRACECLONE: ours already, and its
                    // first stop is on its way.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EPERM)
                            && tracer_of(tid) == Some(our_pid()) =>
                    {
                        new += 1;
                        self.threads.insert(tid, Thread::new(pid));
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) && self.threads.is_empty() => {
                        return Err(TraceError::NotPermitted(pid));
                    }
                    // Exiting as we looked: gone.
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                    Err(source) => {
                        return Err(TraceError::Os {
                            what: "PTRACE_SEIZE",
                            source,
                        });
                    }
                }
            }
            if new == 0 {
                break;
            }
        }
        if self.threads.is_empty() {
            return Err(TraceError::NoSuchProcess(pid));
        }
        Ok(())
    }

    fn run(&mut self, sink: &mut dyn EventSink) -> Result<Outcome, TraceError> {
        // SAFETY: pthread_self has no preconditions.
        TRACER_THREAD.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
        create_kick_timer();
        // Whatever way the loop ends (a sink may panic), nothing may keep
        // aiming signals at this thread afterwards.
        struct LoopRunning;
        impl Drop for LoopRunning {
            fn drop(&mut self) {
                delete_kick_timer();
                TRACER_THREAD.store(0, Ordering::SeqCst);
            }
        }
        let _running = LoopRunning;
        self.run_loop(sink)
    }

    fn run_loop(&mut self, sink: &mut dyn EventSink) -> Result<Outcome, TraceError> {
        let mut interrupt_handled = false;
        // Only for tests of the interrupt race: the first wait, once the
        // program runs, is entered this many ms after the flag was checked.
        let mut test_interrupt_window = std::env::var("TRACEBENCH_TEST_INTERRUPT_WINDOW_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(std::time::Duration::from_millis);
        loop {
            if INTERRUPTED.load(Ordering::SeqCst) && !interrupt_handled {
                interrupt_handled = true;
                if !self.spawned {
                    self.detach_all(sink);
                    break;
                }
                match signalled() {
                    Some(signal) if !FORCE_STOP.load(Ordering::SeqCst) => {
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
            sink.idle(monotonic_ns());
            // Checked again after the sinks' work, to keep the window in
            // which a signal can slip in before the blocking wait small
            // (one that does is caught by the kick timer).
            if INTERRUPTED.load(Ordering::SeqCst) && !interrupt_handled {
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
                let asleep = std::fs::read_to_string(format!("/proc/{}/stat", self.root))
                    .is_ok_and(|stat| stat.rsplit(") ").next().is_some_and(|s| s.starts_with('S')));
                if !asleep {
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
                    return Err(TraceError::Os {
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
        Ok(Outcome {
            exit: self.exit,
            detached: self.detached,
            seccomp: self.seccomp,
        })
    }

    /// While a spawned program handles the signal that interrupted us:
    /// pass it on if the program did not get it, and kill on a second one.
    /// The loop is kicked every 50 ms meanwhile (the handler's timer).
    fn follow_graceful_stop(&mut self) {
        let Some(mut stop) = self.graceful else {
            return;
        };
        if FORCE_STOP.load(Ordering::SeqCst) || EXTERNAL_SIGNALS.load(Ordering::SeqCst) >= 2 {
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

    /// Lets go of every thread so the program runs on as if never traced.
    /// A thread must be in a ptrace-stop to be detached: interrupt each,
    /// wait for its stop, and pass on a signal it was about to receive.
    fn detach_all(&mut self, sink: &mut dyn EventSink) {
        // Threads past PTRACE_EVENT_EXIT never stop again: do not wait for
        // them (a zombie leader would hold the loop forever).
        self.threads.retain(|_, t| !t.exiting);
        for &tid in self.threads.keys() {
            let _ = ptrace::interrupt(tid);
        }
        while !self.threads.is_empty() {
            let (tid, status) = match ptrace::wait_any(false) {
                Ok(Some(stop)) => stop,
                Ok(None) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(_) => break,
            };
            match Stop::from_status(status) {
                Some(Stop::Exited(_) | Stop::Killed(_)) | None => self.handle(tid, status, sink),
                Some(Stop::Signal(signal)) => {
                    let _ = ptrace::detach(tid, signal);
                    self.threads.remove(&tid);
                }
                Some(Stop::Event(
                    libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK,
                    _,
                )) => {
                    // A task born while we let go is ours too: wait for its
                    // first stop and detach it as well.
                    if let Ok(child) = ptrace::event_message(tid) {
                        self.threads
                            .entry(child as Tid)
                            .or_insert_with(|| Thread::new(child as Tid));
                    }
                    let _ = ptrace::detach(tid, 0);
                    self.threads.remove(&tid);
                }
                Some(_) => {
                    let _ = ptrace::detach(tid, 0);
                    self.threads.remove(&tid);
                }
            }
            self.threads.retain(|_, t| !t.exiting);
        }
        self.detached = true;
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
                    self.emit(sink, tid, pid, now, EventKind::Signal { signal });
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
        let args = crate::capture::used_args(nr, args);
        let recorded = self.options.selection.matches(nr, &args);
        if let Some(thread) = self.threads.get_mut(&tid) {
            thread.current = Some((nr, args, recorded));
        }
        if recorded {
            // Memory is read through the thread, not the process: a leader that
            // exited early leaves a process id whose memory cannot be read.
            let data = crate::capture::at_entry(tid, nr, &args, self.options.string_limit);
            self.emit(
                sink,
                tid,
                pid,
                now,
                EventKind::SyscallEntry {
                    nr: nr as u32,
                    args,
                    data,
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
            let data = crate::capture::at_exit(tid, nr, &args, ret, self.options.string_limit);
            self.emit(
                sink,
                tid,
                pid,
                now,
                EventKind::SyscallExit {
                    nr: nr as u32,
                    ret,
                    data,
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
