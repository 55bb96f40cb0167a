//! Starting a program for the perf backend: forked, held on a pipe until
//! it is followed (and so everything it starts), then let go to exec. Rust's `Command` cannot do
//! this: its spawn waits for the exec, which waits for us.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tracebench_trace::program::{ExecStrings, StdioPlan};
use tracebench_trace::{CaptureError, ProgramStdio};

/// A forked child waiting for [`Held::release`] to exec.
pub struct Held {
    pub pid: libc::pid_t,
    go: Option<OwnedFd>,
}

fn os_error(what: &'static str) -> CaptureError {
    CaptureError::Os {
        what,
        source: io::Error::last_os_error(),
    }
}

/// Forks a child that will exec `program` once released.
pub fn fork_held(
    program: &OsStr,
    args: &[OsString],
    stdio: &ProgramStdio,
) -> Result<Held, CaptureError> {
    let strings = ExecStrings::new(program, args)?;
    let (argv, envp) = (strings.argv_pointers(), strings.envp_pointers());
    let stdio = StdioPlan::new(stdio);
    let mut pipe = [0; 2];
    // SAFETY: pipe2 writes two descriptors into our array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_error("pipe2"));
    }
    // SAFETY: the descriptors are fresh and ours.
    let (wait_end, go) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child only makes system calls on memory prepared above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_error("fork"));
    }
    if pid == 0 {
        // SAFETY: we are the child of that fork; nothing here allocates.
        unsafe {
            libc::close(go.as_raw_fd());
            // Die with the tracer rather than wait for ever.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != parent {
                libc::_exit(125);
            }
            stdio.apply_in_child();
            tracebench_trace::program::restore_default_signals();
            let mut byte = 0u8;
            let got = libc::read(wait_end.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
            if got != 1 {
                libc::_exit(125);
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0);
            libc::execve(strings.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    Ok(Held { pid, go: Some(go) })
}

impl Held {
    /// Lets the child exec.
    pub fn release(&mut self) -> Result<(), CaptureError> {
        let Some(go) = self.go.take() else {
            return Ok(());
        };
        // SAFETY: one byte from a local, to the pipe we own.
        let wrote = unsafe { libc::write(go.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        if wrote != 1 {
            return Err(os_error("releasing the program"));
        }
        Ok(())
    }
}

impl Drop for Held {
    /// A child never released (setting up failed) is killed and reaped.
    fn drop(&mut self) {
        if self.go.is_some() {
            // SAFETY: our own child, which has not exec'ed.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}
