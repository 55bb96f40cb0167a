//! A process per connection, as in the classic pre-fork-less server: the
//! parent accepts and forks; the child serves one connection and exits.
//!
//! Children count their outcomes in a page shared with the parent
//! (`MAP_SHARED`), so the summary is exact without pipes. A SIGCHLD handler
//! reaps every child the moment it exits, so no zombie outlives its
//! connection; at stop the parent waits for the rest.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crate::http::{Buffers, serve_connection};
use crate::listener::{StopHandle, accept, set_handler};
use crate::stats::{Lane, Outcome, ServeSummary, Tally};
use crate::{Config, ServerError};

/// One fork-mode server per process: the SIGCHLD handler reports through
/// these statics.
static IN_USE: AtomicBool = AtomicBool::new(false);
static REAPED: AtomicU64 = AtomicU64::new(0);
static CRASHED: AtomicU64 = AtomicU64::new(0);
/// The server's count of active connections, which a reaped child leaves.
static ACTIVE: AtomicPtr<AtomicUsize> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_sigchld(_: libc::c_int) {
    // SAFETY: errno is saved and restored around waitpid, which is
    // async-signal-safe, as are the atomics in `reap`.
    unsafe {
        let errno = *libc::__errno_location();
        while reap(libc::WNOHANG) > 0 {}
        *libc::__errno_location() = errno;
    }
}

/// Reaps one child; returns its pid, 0 if none has exited (with WNOHANG),
/// or -1 (ECHILD: none left; EINTR).
fn reap(flags: libc::c_int) -> libc::pid_t {
    let mut status = 0;
    // SAFETY: waitpid writes the status into our local.
    let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
    if pid > 0 {
        REAPED.fetch_add(1, Ordering::SeqCst);
        // SAFETY: set, from a live Arc, only while `serve` runs and holds it.
        if let Some(active) = unsafe { ACTIVE.load(Ordering::SeqCst).as_ref() } {
            active.fetch_sub(1, Ordering::SeqCst);
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            CRASHED.fetch_add(1, Ordering::SeqCst);
        }
    }
    pid
}

/// A [`Tally`] in an anonymous shared mapping: atomics in it are atomic
/// across fork.
struct SharedTally(NonNull<Tally>);

impl SharedTally {
    fn new() -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping, zero-filled by the kernel, and
        // all-zero bytes are a valid Tally (every AtomicU64 at 0).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<Tally>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(ptr.cast::<Tally>())
            .map(SharedTally)
            .ok_or_else(|| io::Error::other("mmap returned null"))
    }

    fn get(&self) -> &Tally {
        // SAFETY: the mapping lives as long as self and holds a valid Tally.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for SharedTally {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range and hand out no references
        // that outlive self.
        unsafe {
            libc::munmap(self.0.as_ptr().cast(), std::mem::size_of::<Tally>());
        }
    }
}

pub(super) fn run(
    config: &Config,
    listener: &TcpListener,
    stop: &StopHandle,
) -> Result<ServeSummary, ServerError> {
    if IN_USE.swap(true, Ordering::SeqCst) {
        return Err(ServerError::InvalidConfig(
            "only one fork-mode server can run in a process".into(),
        ));
    }
    let result = serve(config, listener, stop);
    let _ = set_handler(libc::SIGCHLD, libc::SIG_DFL, 0);
    IN_USE.store(false, Ordering::SeqCst);
    result
}

fn serve(
    config: &Config,
    listener: &TcpListener,
    stop: &StopHandle,
) -> Result<ServeSummary, ServerError> {
    let started = Instant::now();
    let tally = SharedTally::new().map_err(ServerError::os("mmap"))?;
    let parent_tally = Tally::new();
    REAPED.store(0, Ordering::SeqCst);
    CRASHED.store(0, Ordering::SeqCst);
    let active = stop.active();
    ACTIVE.store(Arc::as_ptr(&active).cast_mut(), Ordering::SeqCst);
    // SA_RESTART: accept4 resumes after the handler instead of failing
    // with EINTR; SA_NOCLDSTOP: a stopped child (say, under a debugger) is
    // not an exit.
    set_handler(
        libc::SIGCHLD,
        on_sigchld as *const () as usize,
        libc::SA_RESTART | libc::SA_NOCLDSTOP,
    )
    .map_err(ServerError::os("sigaction"))?;

    let mut forked = 0u64;
    let result = loop {
        let stream = match accept(listener, stop) {
            Ok(Some(stream)) => stream,
            Ok(None) => break Ok(()),
            Err(e) => break Err(ServerError::os("accept")(e)),
        };
        // SAFETY: fork is what this mode is about. The child only serves
        // the connection and leaves with _exit, running no destructor and no
        // atexit handler of the parent's.
        match unsafe { libc::fork() } {
            -1 => {
                eprintln!("tracebench serve: fork: {}", io::Error::last_os_error());
                parent_tally.record(Outcome::Io);
                stop.done();
            }
            0 => {
                // The child ignores Ctrl-C and SIGTERM: the parent decides
                // when to stop, and a child always finishes its connection.
                let _ = set_handler(libc::SIGINT, libc::SIG_IGN, 0);
                let _ = set_handler(libc::SIGTERM, libc::SIG_IGN, 0);
                let _ = set_handler(libc::SIGCHLD, libc::SIG_DFL, 0);
                // A second signal makes the parent exit at once; its
                // children must not go on serving behind its back.
                // SAFETY: prctl on ourselves; getppid checks the parent did
                // not exit before the request was made.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if libc::getppid() == 1 {
                        libc::_exit(1);
                    }
                }
                // Copies of connections taken from the backlog at a stop
                // would keep them open until this child exits.
                stop.close_stashed_in_child();
                // SAFETY: the child's copy of the listener; closing it leaves
                // the parent's untouched, and nothing in the child uses it.
                unsafe { libc::close(listener.as_raw_fd()) };
                serve_connection(
                    stream,
                    &config.connection,
                    tally.get(),
                    &mut Buffers::default(),
                    None,
                );
                // SAFETY: leave without unwinding into the parent's code.
                unsafe { libc::_exit(0) };
            }
            _child => forked += 1,
        }
        // The parent's copy of the connection closes here; the child's stays.
    };

    // Wait for every child. The handler may reap some of them under our
    // feet; ECHILD means none is left either way.
    loop {
        if reap(0) < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            break;
        }
    }
    ACTIVE.store(std::ptr::null_mut(), Ordering::SeqCst);
    result?;

    let mut counts = tally.get().snapshot();
    counts += parent_tally.snapshot();
    counts.add(Outcome::ChildCrashed, CRASHED.load(Ordering::SeqCst));
    let reaped = REAPED.load(Ordering::SeqCst);
    Ok(ServeSummary {
        mode: config.mode.name().into(),
        elapsed: started.elapsed(),
        lanes: vec![Lane {
            name: "children".into(),
            counts,
        }],
        notes: vec![format!("{forked} children forked, {reaped} reaped")],
    })
}
