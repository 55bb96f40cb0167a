//! Starting a program under the tracer: fork, let the child stop itself,
//! seize it, and let it install the seccomp filter and exec.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tracebench_trace::{CaptureError, ProgramStdio};

use super::{Engine, Thread, ptrace_options};
use crate::{ptrace, seccomp};

/// Everything the child needs between fork and exec, prepared before the
/// fork: after it, the child may only make system calls (no allocation,
/// no lock).
struct ExecImage {
    path: CString,
    /// Owners of the pointers in `argv` and `envp`.
    _strings: (Vec<CString>, Vec<CString>),
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    filter: Option<seccompiler::BpfProgram>,
    /// stdin, stdout and stderr from /dev/null…
    null_stdio: bool,
    /// …then this descriptor (if any) onto stdout and stderr.
    output: Option<libc::c_int>,
}

impl ExecImage {
    fn new(
        program: &OsStr,
        args: &[OsString],
        options: &crate::PtraceOptions,
    ) -> Result<ExecImage, CaptureError> {
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
        let pointers = |strings: &[CString]| {
            let mut pointers: Vec<*const libc::c_char> =
                strings.iter().map(|s| s.as_ptr()).collect();
            pointers.push(std::ptr::null());
            pointers
        };
        let (null_stdio, output) = match &options.stdio {
            ProgramStdio::Inherit => (false, None),
            ProgramStdio::Null => (true, None),
            ProgramStdio::Capture(fd) => (true, Some(fd.as_raw_fd())),
        };
        Ok(ExecImage {
            path,
            argv: pointers(&argv_owned),
            envp: pointers(&envp_owned),
            _strings: (argv_owned, envp_owned),
            filter: match options.seccomp {
                true => Some(seccomp::filter(&options.selection)?),
                false => None,
            },
            null_stdio,
            output,
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
            if self.null_stdio {
                let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if fd >= 0 {
                    for target in 0..3 {
                        libc::dup2(fd, target);
                    }
                }
            }
            // dup2 clears close-on-exec on the copies, so the program
            // keeps them and nothing else.
            if let Some(fd) = self.output {
                libc::dup2(fd, 1);
                libc::dup2(fd, 2);
            }
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
            libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
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

/// Finds `program` the way execvp would, so "not found" is reported by us,
/// clearly, before anything is forked.
fn resolve_program(program: &OsStr) -> Result<PathBuf, CaptureError> {
    let is_executable = |path: &Path| {
        CString::new(path.as_os_str().as_bytes())
            // SAFETY: access(2) reads the NUL-terminated path.
            .map(|c| unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 && path.is_file())
            .unwrap_or(false)
    };
    let not_found = || CaptureError::Spawn {
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
        return Err(CaptureError::Spawn {
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

fn c_string(text: &OsStr) -> Result<CString, CaptureError> {
    CString::new(text.as_bytes())
        .map_err(|_| CaptureError::BadArgument(format!("{text:?} contains a NUL byte")))
}
