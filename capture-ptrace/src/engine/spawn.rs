//! Starting a program under the tracer: fork, let the child stop itself,
//! seize it, and let it install the seccomp filter and exec.

use std::ffi::{OsStr, OsString};
use std::io;

use tracebench_trace::CaptureError;
use tracebench_trace::program::{ExecStrings, StdioPlan};

use super::{Engine, Thread, ptrace_options};
use crate::{ptrace, seccomp};

/// Everything the child needs between fork and exec, prepared before the
/// fork: after it, the child may only make system calls (no allocation,
/// no lock).
struct ExecImage {
    /// Owner of the pointers in `argv` and `envp`.
    strings: ExecStrings,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    filter: Option<seccompiler::BpfProgram>,
    stdio: StdioPlan,
}

impl ExecImage {
    fn new(
        program: &OsStr,
        args: &[OsString],
        options: &crate::PtraceOptions,
    ) -> Result<ExecImage, CaptureError> {
        let strings = ExecStrings::new(program, args)?;
        Ok(ExecImage {
            argv: strings.argv_pointers(),
            envp: strings.envp_pointers(),
            strings,
            filter: match options.seccomp {
                true => Some(seccomp::filter(&options.selection)?),
                false => None,
            },
            stdio: StdioPlan::new(&options.stdio),
        })
    }

    /// The child's side of the fork: set up its streams, stop itself until
    /// seized, install the filter, exec. Never returns.
    ///
    /// # Safety
    /// Only in the child of a fork, which runs nothing else.
    unsafe fn exec_in_child(&self, parent: libc::pid_t) -> ! {
        // SAFETY: only system calls on memory prepared before the fork;
        // nothing here allocates or takes a lock.
        unsafe {
            // Until PTRACE_O_EXITKILL covers us, die with the tracer
            // rather than stay stopped forever if it is killed.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != parent {
                libc::_exit(125);
            }
            self.stdio.apply_in_child();
            tracebench_trace::program::restore_default_signals();
            libc::kill(libc::getpid(), libc::SIGSTOP);
            // Continued: we are seized, and PTRACE_O_EXITKILL now kills
            // us with the tracer. The program must not inherit a
            // parent-death signal it never asked for (execve keeps it).
            libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0);
            if let Some(program) = &self.filter
                && seccomp::install(program).is_err()
            {
                libc::_exit(126);
            }
            libc::execve(
                self.strings.path.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            );
            libc::_exit(127);
        }
    }
}

impl Engine {
    /// Forks, lets the child stop itself, seizes it, and lets it install
    /// the seccomp filter and exec. Stopping first matters: a filter that
    /// returns SECCOMP_RET_TRACE with no tracer attached fails the syscall
    /// with ENOSYS.
    pub(crate) fn spawn(&mut self, program: &OsStr, args: &[OsString]) -> Result<(), CaptureError> {
        let image = ExecImage::new(program, args, &self.options)?;
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the child runs only exec_in_child, which makes
        // async-signal-safe system calls on memory prepared above.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(CaptureError::Os {
                what: "fork",
                source: io::Error::last_os_error(),
            });
        }
        if pid == 0 {
            // SAFETY: we are the child of that fork.
            unsafe { image.exec_in_child(parent) }
        }
        self.spawned = true;
        self.starting = true;
        self.root = pid;
        let seccomp = image.filter.is_some();
        self.seize_stopped_child(pid, seccomp)?;
        self.seccomp = seccomp;
        self.threads.insert(pid, Thread::new(pid));
        // SAFETY: continue our own stopped child.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        Ok(())
    }

    /// Waits until our child `pid` has stopped itself, then seizes it (or
    /// kills and reaps it, never leaving it stopped).
    fn seize_stopped_child(&mut self, pid: libc::pid_t, seccomp: bool) -> Result<(), CaptureError> {
        let mut status = 0;
        let waited = loop {
            // SAFETY: waitpid writes only to our local status.
            let ret = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
            if ret != -1 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break ret;
            }
        };
        if waited != pid || !libc::WIFSTOPPED(status) {
            return Err(CaptureError::Os {
                what: "waiting for the child to stop",
                source: io::Error::last_os_error(),
            });
        }
        // Children inherit the filter, and a SECCOMP_RET_TRACE with no
        // tracer fails the syscall with ENOSYS: with seccomp, follow them.
        let options = ptrace_options(seccomp, self.options.follow_forks || seccomp, true);
        if let Err(source) = ptrace::seize(pid, options) {
            // SAFETY: our own child; do not leave it stopped forever, nor
            // a zombie.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(CaptureError::Os {
                what: "PTRACE_SEIZE",
                source,
            });
        }
        Ok(())
    }
}

/// Restricts the calling thread to one CPU.
pub(crate) fn pin_to_cpu(cpu: usize) -> Result<(), CaptureError> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(CaptureError::BadArgument(format!("no CPU {cpu}")));
    }
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it
    // (cpu is below CPU_SETSIZE), and sched_setaffinity reads it.
    let ret = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if ret != 0 {
        return Err(CaptureError::BadArgument(format!(
            "cannot run on CPU {cpu}: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}
