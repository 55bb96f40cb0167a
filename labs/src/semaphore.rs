//! **semaphore**: a parent and a forked child take turns through a System V
//! semaphore set (semget, semctl SETVAL, semop with `SEM_UNDO`), and the
//! set is removed with `IPC_RMID` on every way out: the end of the run, an
//! error, and SIGINT or SIGTERM (Ctrl-C). `ipcs -s` shows no set left.
//!
//! The set holds two semaphores, "the parent's turn" (starting at 1) and
//! "the child's turn" (starting at 0). Each side takes its own (semop −1,
//! sleeping while it is 0), does its turn, and gives the other's (+1), so
//! they strictly alternate. A System V set outlives the processes that
//! made it — it is a kernel object with an id, like a file — which is why
//! removal matters: a crashed program leaks it until reboot or `ipcrm`.
//!
//! `SEM_UNDO` makes the kernel keep, per process, the adjustment that
//! undoes its operations at exit, so a process killed between taking and
//! giving does not leave the other waiting forever. Here each process
//! takes one semaphore and gives the other, so its adjustments grow by one
//! per round; the kernel caps them at 32767 (`SEMAEM`: semop would fail
//! with `ERANGE`), hence [`MAX_ROUNDS`]. And the undo at exit hands back
//! what a process took and takes back what it gave: a child that exited
//! right after its last turn could take away the parent's last turn, so
//! the child waits for the parent's "done" before it exits.

use std::io::Write;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::process::{ChildExit, ForkedChild, SharedMap};
use crate::{LabError, Result};

/// The most rounds: under the kernel's cap on a `SEM_UNDO` adjustment
/// (32767; each side takes its semaphore once per round and once more at
/// the end).
pub const MAX_ROUNDS: u32 = 32_000;

/// The longest pause per turn.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// The parent's semaphore in the set.
const PARENT_SEM: u16 = 0;
/// The child's semaphore in the set.
const CHILD_SEM: u16 = 1;

/// How long a side waits for its turn before giving up (plus the delay).
const TURN_TIMEOUT: Duration = Duration::from_secs(10);

/// The signal that interrupted the run, 0 while none has. Set by the
/// handler, read by the parent's loop after semop or nanosleep returns
/// EINTR.
static INTERRUPTED_BY: AtomicI32 = AtomicI32::new(0);

/// How the semaphore lab runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rounds: each is one parent turn then one child turn
    /// (1..=[`MAX_ROUNDS`]).
    pub rounds: u32,
    /// Pause during each turn (at most [`MAX_DELAY`]); makes a run long
    /// enough to press Ctrl-C in, or to watch.
    pub delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rounds: 1000,
            delay: Duration::ZERO,
        }
    }
}

/// What a semaphore run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The set's id (as `ipcs -s` lists it while it exists).
    pub set_id: i32,
    /// Turns the parent took.
    pub parent_turns: u64,
    /// Turns the child took.
    pub child_turns: u64,
    /// Turns taken out of order (a side found the turn count saying it was
    /// the other's turn): 0 when the semaphores work.
    pub out_of_turn: u64,
    /// Whether the set was gone after IPC_RMID (IPC_STAT then fails).
    pub removed: bool,
}

/// The page both processes count turns in.
#[repr(C)]
struct Turns {
    taken: AtomicU64,
    parent: AtomicU64,
    child: AtomicU64,
    out_of_turn: AtomicU64,
}

/// Creates the set, alternates, removes the set, and prints what happened.
/// SIGINT and SIGTERM during the run end it with
/// [`LabError::Interrupted`], after the set is removed.
pub fn run(options: &Options, out: &mut impl Write) -> Result<Report> {
    if !(1..=MAX_ROUNDS).contains(&options.rounds) {
        return Err(LabError::InvalidOption(format!(
            "--rounds must be 1 to {MAX_ROUNDS} (the kernel's cap on a SEM_UNDO adjustment)"
        )));
    }
    if options.delay > MAX_DELAY {
        return Err(LabError::InvalidOption("--delay must be at most 1s".into()));
    }
    let _handlers = SignalHandlers::install()?;
    let set = SemaphoreSet::create()?;
    let result = alternate(options, &set, out);
    let set_id = set.id;
    let removed = set.remove();
    let (parent_turns, child_turns, out_of_turn) = result?;
    let removed = removed?;
    writeln!(
        out,
        "  IPC_RMID: set {set_id} removed{}",
        if removed {
            " (IPC_STAT now fails: ipcs -s no longer lists it)"
        } else {
            ", but it is still there"
        }
    )?;
    Ok(Report {
        set_id,
        parent_turns,
        child_turns,
        out_of_turn,
        removed,
    })
}

/// The run proper, between creating and removing the set.
fn alternate(
    options: &Options,
    set: &SemaphoreSet,
    out: &mut impl Write,
) -> Result<(u64, u64, u64)> {
    writeln!(
        out,
        "semaphore: System V set {} (2 semaphores: the parent's turn = 1, the child's turn = 0), {} rounds with SEM_UNDO",
        set.id, options.rounds
    )?;
    out.flush()?;
    set.set_value(PARENT_SEM, 1)?;
    set.set_value(CHILD_SEM, 0)?;
    let turns = SharedMap::new(Turns {
        taken: AtomicU64::new(0),
        parent: AtomicU64::new(0),
        child: AtomicU64::new(0),
        out_of_turn: AtomicU64::new(0),
    })?;
    let wait_limit = TURN_TIMEOUT + options.delay;

    let child = ForkedChild::spawn(|| {
        for _ in 0..options.rounds {
            if set.operate(CHILD_SEM, -1, wait_limit).is_err() {
                // Removed under us (EIDRM), interrupted, or timed out.
                return 2;
            }
            take_turn(&turns, 1, &turns.child, options.delay);
            if set.operate(PARENT_SEM, 1, wait_limit).is_err() {
                return 3;
            }
        }
        // Wait for the parent's "done" before exiting: see below.
        if set.operate(CHILD_SEM, -1, wait_limit).is_err() {
            return 4;
        }
        0
    })?;
    for _ in 0..options.rounds {
        set.operate(PARENT_SEM, -1, wait_limit)?;
        take_turn(&turns, 0, &turns.parent, options.delay);
        check_signal()?;
        set.operate(CHILD_SEM, 1, wait_limit)?;
    }
    // The child's last turn gives the parent's semaphore back once more.
    set.operate(PARENT_SEM, -1, wait_limit)?;
    // Only now may the child exit. Its exit applies its SEM_UNDO
    // adjustments: −rounds to the parent's semaphore (it gave it that many
    // times). Had it exited right after its last turn, that undo could
    // zero the semaphore before the parent took it, and the parent would
    // wait forever — the trap of SEM_UNDO on semaphores that one process
    // takes and another gives.
    set.operate(CHILD_SEM, 1, wait_limit)?;
    let exit = child.wait(wait_limit)?;
    if exit != ChildExit::Code(0) {
        return Err(LabError::Failed(format!("the child ended with {exit:?}")));
    }
    let parent = turns.parent.load(Ordering::Acquire);
    let child = turns.child.load(Ordering::Acquire);
    let out_of_turn = turns.out_of_turn.load(Ordering::Acquire);
    writeln!(
        out,
        "  parent turns {parent}, child turns {child}, out of turn {out_of_turn}: they alternated strictly"
    )?;
    Ok((parent, child, out_of_turn))
}

/// One turn: check it is ours by the count's parity, count it, pause.
fn take_turn(turns: &Turns, parity: u64, mine: &AtomicU64, delay: Duration) {
    let taken = turns.taken.fetch_add(1, Ordering::AcqRel);
    if taken % 2 != parity {
        turns.out_of_turn.fetch_add(1, Ordering::Relaxed);
    }
    mine.fetch_add(1, Ordering::Relaxed);
    if !delay.is_zero() {
        pause(delay);
    }
}

/// One nanosleep(2); a signal cuts it short (std's sleep would resume it).
fn pause(delay: Duration) {
    let request = libc::timespec {
        tv_sec: delay.as_secs() as libc::time_t,
        tv_nsec: delay.subsec_nanos() as libc::c_long,
    };
    // SAFETY: nanosleep reads our timespec; the remainder pointer may be
    // null.
    unsafe { libc::nanosleep(&request, std::ptr::null_mut()) };
}

fn check_signal() -> Result<()> {
    match INTERRUPTED_BY.load(Ordering::Relaxed) {
        0 => Ok(()),
        signal => Err(LabError::Interrupted(signal)),
    }
}

/// A System V semaphore set of two, owned by the process that created it.
struct SemaphoreSet {
    id: i32,
    owner: libc::pid_t,
    removed: bool,
}

impl SemaphoreSet {
    fn create() -> Result<SemaphoreSet> {
        // SAFETY: semget with IPC_PRIVATE always makes a new set; no
        // pointers are involved.
        let id = unsafe { libc::semget(libc::IPC_PRIVATE, 2, libc::IPC_CREAT | 0o600) };
        if id < 0 {
            return Err(LabError::last_os("semget"));
        }
        Ok(SemaphoreSet {
            id,
            // SAFETY: getpid has no preconditions.
            owner: unsafe { libc::getpid() },
            removed: false,
        })
    }

    fn set_value(&self, semaphore: u16, value: i32) -> Result<()> {
        // SAFETY: SETVAL reads the union semun's `val`, an int, from the
        // variadic argument.
        let ret = unsafe { libc::semctl(self.id, i32::from(semaphore), libc::SETVAL, value) };
        if ret < 0 {
            return Err(LabError::last_os("semctl SETVAL"));
        }
        Ok(())
    }

    /// semtimedop(2) of `delta` on one semaphore, with SEM_UNDO. EINTR
    /// becomes [`LabError::Interrupted`] if our handler saw a signal, and
    /// is retried otherwise.
    fn operate(&self, semaphore: u16, delta: i16, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let mut operation = libc::sembuf {
                sem_num: semaphore,
                sem_op: delta,
                sem_flg: libc::SEM_UNDO as i16,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LabError::TimedOut("the other side never gave the turn"));
            }
            let timeout = libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            };
            // SAFETY: one sembuf and a timespec of our own, both alive for
            // the call. (libc has no wrapper for semtimedop: by number.)
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_semtimedop,
                    self.id,
                    &mut operation as *mut libc::sembuf,
                    1usize,
                    &timeout as *const libc::timespec,
                )
            };
            if ret == 0 {
                return Ok(());
            }
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR) => check_signal()?,
                Some(libc::EAGAIN) => {
                    return Err(LabError::TimedOut("the other side never gave the turn"));
                }
                _ => {
                    return Err(LabError::Os {
                        what: "semop",
                        source: error,
                    });
                }
            }
        }
    }

    /// IPC_RMID, then IPC_STAT to confirm the set is gone.
    fn remove(mut self) -> Result<bool> {
        self.removed = true;
        // SAFETY: IPC_RMID takes no argument beyond the id.
        if unsafe { libc::semctl(self.id, 0, libc::IPC_RMID) } < 0 {
            return Err(LabError::last_os("semctl IPC_RMID"));
        }
        let mut stat: libc::semid_ds = zeroed_semid_ds();
        // SAFETY: IPC_STAT writes a semid_ds into the buffer we pass.
        let ret = unsafe { libc::semctl(self.id, 0, libc::IPC_STAT, &mut stat) };
        Ok(ret < 0)
    }
}

/// A zeroed `semid_ds` (plain integers, for IPC_STAT to fill).
fn zeroed_semid_ds() -> libc::semid_ds {
    // SAFETY: semid_ds is a C struct of integers, for which all zeros is a
    // valid value.
    unsafe { std::mem::zeroed() }
}

impl Drop for SemaphoreSet {
    fn drop(&mut self) {
        // Only the creator removes the set, and only once. A forked child
        // never gets here (it leaves through _exit), but the check keeps it
        // so should that change.
        // SAFETY: getpid has no preconditions; IPC_RMID takes only the id.
        if !self.removed && unsafe { libc::getpid() } == self.owner {
            // SAFETY: semctl(IPC_RMID) on the set we created.
            unsafe { libc::semctl(self.id, 0, libc::IPC_RMID) };
        }
    }
}

/// SIGINT and SIGTERM handlers for the length of a run: they only record
/// the signal, and without SA_RESTART, so a blocked semop or nanosleep
/// returns EINTR and the run ends through the ordinary error path, which
/// removes the set. The previous handlers come back on drop.
struct SignalHandlers {
    previous: [(i32, libc::sigaction); 2],
}

extern "C" fn record_signal(signal: libc::c_int) {
    INTERRUPTED_BY.store(signal, Ordering::Relaxed);
}

impl SignalHandlers {
    fn install() -> Result<SignalHandlers> {
        INTERRUPTED_BY.store(0, Ordering::Relaxed);
        let mut previous = [
            (libc::SIGINT, zeroed_sigaction()),
            (libc::SIGTERM, zeroed_sigaction()),
        ];
        for (signal, old) in &mut previous {
            let mut action = zeroed_sigaction();
            action.sa_sigaction = record_signal as *const () as libc::sighandler_t;
            action.sa_flags = 0;
            // SAFETY: sigemptyset on our own sigaction's mask; sigaction
            // with valid pointers; the handler only stores to an atomic,
            // which is async-signal-safe.
            let ret = unsafe {
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(*signal, &action, old)
            };
            if ret != 0 {
                return Err(LabError::last_os("sigaction"));
            }
        }
        Ok(SignalHandlers { previous })
    }
}

impl Drop for SignalHandlers {
    fn drop(&mut self) {
        for (signal, old) in &self.previous {
            // SAFETY: restoring the action sigaction gave us.
            unsafe { libc::sigaction(*signal, old, std::ptr::null_mut()) };
        }
    }
}

fn zeroed_sigaction() -> libc::sigaction {
    // SAFETY: sigaction is a C struct for which all zeros is valid
    // (SIG_DFL, empty mask, no flags).
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_exists(id: i32) -> bool {
        let mut stat = zeroed_semid_ds();
        // SAFETY: IPC_STAT into our own buffer.
        unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut stat) >= 0 }
    }

    #[test]
    fn parent_and_child_alternate_and_the_set_is_removed() {
        let report = run(
            &Options {
                rounds: 300,
                delay: Duration::ZERO,
            },
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(report.parent_turns, 300);
        assert_eq!(report.child_turns, 300);
        assert_eq!(report.out_of_turn, 0);
        assert!(report.removed);
        assert!(!set_exists(report.set_id));
    }

    #[test]
    fn an_error_path_removes_the_set_too() {
        // Dropping a set without remove() is what every error path does.
        let set = SemaphoreSet::create().unwrap();
        let id = set.id;
        assert!(set_exists(id));
        drop(set);
        assert!(!set_exists(id));
    }

    #[test]
    fn bad_options_are_errors() {
        for options in [
            Options {
                rounds: 0,
                ..Options::default()
            },
            Options {
                rounds: MAX_ROUNDS + 1,
                ..Options::default()
            },
            Options {
                delay: Duration::from_secs(2),
                ..Options::default()
            },
        ] {
            assert!(matches!(
                run(&options, &mut Vec::new()),
                Err(LabError::InvalidOption(_))
            ));
        }
    }
}
