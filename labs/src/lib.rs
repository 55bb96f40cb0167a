//! The seed labs: the small programs tracebench's material teaches with,
//! each runnable (`tracebench lab NAME`) and traceable (`tracebench trace --
//! tracebench lab NAME`).
//!
//! | lab | what it shows |
//! |---|---|
//! | [`race`] | threads that read, yield and write a shared counter lose updates; a lock or an atomic does not |
//! | [`raw_clone`] | threads made with the raw clone(2) system call on mmap'd stacks, joined with a futex on the `CLONE_CHILD_CLEARTID` word |
//! | [`handshake`] | two processes ping-pong through a shared page with non-private futexes |
//! | [`pipe`] | a parent and child echo messages through two pipes; closing the writer makes read(2) return 0 |
//! | [`semaphore`] | a parent and child alternate on System V semaphores, removed on every exit path |
//! | [`mutex`] | our futex mutex, std's Mutex and a test-and-set spinlock under 1 to N contending threads |
//!
//! Every lab has an options struct, a `run(&Options, &mut impl Write)`
//! that does the work and prints what it shows, and a report the tests
//! assert on. Every lab's run time is bounded: processes and threads it
//! starts wait with timeouts, and a child process is never left behind.
#![warn(missing_docs)]

mod process;

pub mod handshake;
pub mod mutex;
pub mod pipe;
pub mod race;
pub mod raw_clone;
pub mod semaphore;

use std::io;

/// Why a lab could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// An option is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A system call failed.
    #[error("{what}")]
    Os {
        /// What we were doing.
        what: &'static str,
        /// What the kernel said.
        source: io::Error,
    },
    /// Writing the lab's output failed.
    #[error("writing the output")]
    Output(#[from] io::Error),
    /// A child process or thread did not do its part.
    #[error("{0}")]
    Failed(String),
    /// The other side did not answer in time.
    #[error("timed out: {0}")]
    TimedOut(&'static str),
    /// SIGINT or SIGTERM (the number) arrived; everything the lab created
    /// was removed.
    #[error("interrupted by signal {0}; everything the lab created was removed")]
    Interrupted(i32),
    /// The lab cannot run on this machine.
    #[error("{0}")]
    Unsupported(&'static str),
}

impl LabError {
    /// The error of a failed system call, from `errno`.
    pub(crate) fn last_os(what: &'static str) -> LabError {
        LabError::Os {
            what,
            source: io::Error::last_os_error(),
        }
    }

    /// Turns an `io::Error` into [`LabError::Os`] with context.
    pub(crate) fn os(what: &'static str) -> impl FnOnce(io::Error) -> LabError {
        move |source| LabError::Os { what, source }
    }
}

/// The result of a lab.
pub type Result<T> = std::result::Result<T, LabError>;
