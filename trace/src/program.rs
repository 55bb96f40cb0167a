//! Starting a program the way execvp would, for the backends that spawn
//! one: found in PATH before anything forks (so "not found" is said
//! clearly), and its argument and environment strings made ready before
//! the fork (after it, the child may only make system calls).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::capture::{CaptureError, ProgramStdio};

/// Finds `program` the way execvp would, so "not found" is reported by us,
/// clearly, before anything is forked.
pub fn resolve_program(program: &OsStr) -> Result<PathBuf, CaptureError> {
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

/// `text` as a C string; one holding a NUL byte is refused.
pub fn c_string(text: &OsStr) -> Result<CString, CaptureError> {
    CString::new(text.as_bytes())
        .map_err(|_| CaptureError::BadArgument(format!("{text:?} contains a NUL byte")))
}

/// A program's path, arguments and environment as C strings, ready for
/// execve in a forked child.
#[derive(Debug)]
pub struct ExecStrings {
    /// The program's path, as found in PATH.
    pub path: CString,
    /// argv, the program's name first.
    pub argv: Vec<CString>,
    /// The environment, `NAME=value`, ours.
    pub envp: Vec<CString>,
}

impl ExecStrings {
    /// Finds `program` and prepares its strings.
    pub fn new(program: &OsStr, args: &[OsString]) -> Result<ExecStrings, CaptureError> {
        let path = c_string(resolve_program(program)?.as_os_str())?;
        let argv = std::iter::once(program)
            .chain(args.iter().map(OsString::as_os_str))
            .map(c_string)
            .collect::<Result<_, _>>()?;
        let envp = std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut pair = k;
                pair.push("=");
                pair.push(v);
                CString::new(pair.as_bytes()).ok()
            })
            .collect();
        Ok(ExecStrings { path, argv, envp })
    }

    /// argv as execve takes it: pointers into `self`, then NULL.
    pub fn argv_pointers(&self) -> Vec<*const libc::c_char> {
        null_terminated(&self.argv)
    }

    /// envp as execve takes it.
    pub fn envp_pointers(&self) -> Vec<*const libc::c_char> {
        null_terminated(&self.envp)
    }
}

/// What a forked child does with its standard streams, decided before the
/// Gives a program the signal dispositions and mask it would start with
/// outside tracebench. Rust's runtime ignores SIGPIPE, and an ignored
/// signal stays ignored across execve: a traced `yes | head` would get
/// EPIPE ("Broken pipe") instead of dying of SIGPIPE as it does untraced,
/// or under strace. Handlers need nothing: execve resets them.
///
/// # Safety
/// Only in a forked child before exec: it makes only system calls on a
/// local signal set.
pub unsafe fn restore_default_signals() {
    // SAFETY: signal(2) and sigprocmask(2) on a zeroed local set.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// fork from a [`ProgramStdio`].
#[derive(Debug, Clone, Copy)]
pub struct StdioPlan {
    /// stdin, stdout and stderr from /dev/null…
    null: bool,
    /// …then this descriptor (if any) onto stdout and stderr.
    output: Option<libc::c_int>,
}

impl StdioPlan {
    /// The plan for `stdio`.
    pub fn new(stdio: &ProgramStdio) -> StdioPlan {
        let (null, output) = match stdio {
            ProgramStdio::Inherit => (false, None),
            ProgramStdio::Null => (true, None),
            ProgramStdio::Capture(fd) => (true, Some(fd.as_raw_fd())),
        };
        StdioPlan { null, output }
    }

    /// Carries the plan out.
    ///
    /// # Safety
    /// Only in a forked child before exec: it makes only system calls
    /// (open, dup2) and allocates nothing.
    pub unsafe fn apply_in_child(&self) {
        // SAFETY: system calls on constant strings and plain descriptors.
        unsafe {
            if self.null {
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
        }
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_found_in_path_or_refused_with_the_reason() {
        let found = ExecStrings::new(OsStr::new("sh"), &["-c".into(), "true".into()]).unwrap();
        assert!(found.path.to_bytes().ends_with(b"/sh"));
        assert_eq!(found.argv_pointers().len(), 4);
        assert!(found.argv_pointers().last().unwrap().is_null());
        let missing = resolve_program(OsStr::new("no-such-program-tracebench")).unwrap_err();
        assert!(missing.to_string().contains("cannot run"));
        let directory = resolve_program(OsStr::new("/tmp")).unwrap_err();
        assert!(
            matches!(directory, CaptureError::Spawn { source, .. } if source.raw_os_error() == Some(libc::EISDIR))
        );
    }
}
