//! **raw-clone**: threads made the way the assembly material makes them,
//! with the raw clone(2) system call and stacks from mmap(2), with no
//! pthread (and no std::thread) in between.
//!
//! Each thread gets a stack mapped with `MAP_ANONYMOUS | MAP_PRIVATE |
//! MAP_GROWSDOWN` and is created with exactly [`THREAD_FLAGS`]:
//! `CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_PARENT |
//! CLONE_THREAD | CLONE_IO`, plus [`JOIN_FLAG`], `CLONE_CHILD_CLEARTID`,
//! whose word is how the parent joins: the kernel writes 0 into it when
//! the thread exits and wakes a (non-private) futex on it, so the parent
//! sleeps in `FUTEX_WAIT` on that word, then unmaps the stack. Two threads
//! find the smallest and the largest byte of a string.
//!
//! The new thread shares the parent's memory but has no thread-local
//! storage of its own (no `CLONE_SETTLS`: its `fs` register still points at
//! the parent's), so it must not run Rust code that touches TLS, the
//! allocator, a lock, or a panic path. The clone call is therefore written
//! in inline assembly: on the child's side it clears the frame pointer,
//! calls an `extern "C"` function that only reads the string and makes raw
//! system calls (the `syscalls` crate), and ends the thread with
//! `exit(2)`; it never returns into the Rust frames of the parent, whose
//! stack it does not even have.
//!
//! x86_64 only: elsewhere [`run`] returns [`LabError::Unsupported`].

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{LabError, Result};

/// The clone flags of the material's threads: share memory, filesystem
/// information, descriptors, signal handlers, parent and I/O context, and
/// be a thread of the same process.
pub const THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_PARENT
    | libc::CLONE_THREAD
    | libc::CLONE_IO) as u32 as u64; // through u32: CLONE_IO is bit 31, and an i32 would sign-extend

/// Added to [`THREAD_FLAGS`] so the parent can wait for the thread's end:
/// the kernel clears the word passed as `child_tid` and wakes it as a futex.
pub const JOIN_FLAG: u64 = libc::CLONE_CHILD_CLEARTID as u32 as u64;

/// The smallest stack the lab accepts; the thread's function needs far
/// less, but a mistake should fault in the guard gap, not in someone's data.
pub const MIN_STACK: usize = 16 * 1024;

/// The largest stack the lab accepts.
pub const MAX_STACK: usize = 8 * 1024 * 1024;

/// How long the parent waits for a thread before giving up on it.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the raw threads work on.
#[derive(Debug, Clone)]
pub struct Options {
    /// The string whose smallest and largest bytes the threads find (not
    /// empty).
    pub text: String,
    /// Bytes of stack per thread, rounded up to whole pages
    /// ([`MIN_STACK`]..=[`MAX_STACK`]).
    pub stack_size: usize,
    /// How long each thread sleeps (raw nanosleep) before it exits, at most
    /// [`MAX_LINGER`]: long enough that the parent is already asleep in
    /// `FUTEX_WAIT` on the `CLONE_CHILD_CLEARTID` word when the kernel
    /// clears it, so a trace shows the join. Zero lets the threads race the
    /// parent (it often finds them gone and never sleeps).
    pub linger: Duration,
}

/// The longest a thread may linger.
pub const MAX_LINGER: Duration = Duration::from_secs(1);

impl Default for Options {
    fn default() -> Self {
        Options {
            text: "Hello from two raw clone threads!".to_owned(),
            stack_size: 64 * 1024,
            linger: Duration::from_millis(20),
        }
    }
}

/// Which extreme a thread looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// The smallest byte.
    Min,
    /// The largest byte.
    Max,
}

/// What one raw thread did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadReport {
    /// What it looked for.
    pub job: Job,
    /// The thread id clone(2) returned.
    pub tid: i32,
    /// The thread id the thread itself read with gettid(2): the same.
    pub tid_seen_by_thread: i32,
    /// The byte it found.
    pub byte: u8,
    /// Where its stack was: start address and length.
    pub stack: (usize, usize),
    /// The stack mapping's VmFlags in /proc/self/smaps while it was
    /// mapped (`gd` is MAP_GROWSDOWN), if the file was readable.
    pub stack_vm_flags: Option<String>,
}

/// What a raw-clone run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The flags every clone call carried.
    pub flags: u64,
    /// The min thread, then the max thread.
    pub threads: Vec<ThreadReport>,
    /// Stacks no longer found in /proc/self/maps after munmap.
    pub stacks_unmapped: usize,
}

impl Report {
    /// The byte the `job` thread found.
    pub fn byte(&self, job: Job) -> Option<u8> {
        self.threads.iter().find(|t| t.job == job).map(|t| t.byte)
    }
}

/// Creates the two raw threads, waits for them, unmaps their stacks, and
/// prints what each found.
pub fn run(options: &Options, out: &mut impl Write) -> Result<Report> {
    if options.text.is_empty() {
        return Err(LabError::InvalidOption("--text must not be empty".into()));
    }
    if !(MIN_STACK..=MAX_STACK).contains(&options.stack_size) {
        return Err(LabError::InvalidOption(format!(
            "--stack-size must be {MIN_STACK} to {MAX_STACK} bytes"
        )));
    }
    if options.linger > MAX_LINGER {
        return Err(LabError::InvalidOption(
            "--linger must be at most 1s".into(),
        ));
    }
    imp::run(options, out)
}

/// `CLONE_VM|CLONE_FS|…` for the lab's output.
pub fn flag_names(flags: u64) -> String {
    const NAMES: [(i32, &str); 8] = [
        (libc::CLONE_VM, "CLONE_VM"),
        (libc::CLONE_FS, "CLONE_FS"),
        (libc::CLONE_FILES, "CLONE_FILES"),
        (libc::CLONE_SIGHAND, "CLONE_SIGHAND"),
        (libc::CLONE_PARENT, "CLONE_PARENT"),
        (libc::CLONE_THREAD, "CLONE_THREAD"),
        (libc::CLONE_IO, "CLONE_IO"),
        (libc::CLONE_CHILD_CLEARTID, "CLONE_CHILD_CLEARTID"),
    ];
    let mut rest = flags;
    let mut names: Vec<String> = Vec::new();
    for (bit, name) in NAMES {
        let bit = bit as u32 as u64;
        if rest & bit != 0 {
            names.push(name.to_owned());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names.join("|")
}

fn show_byte(byte: u8) -> String {
    if byte.is_ascii_graphic() || byte == b' ' {
        format!("{byte:#04x} {:?}", byte as char)
    } else {
        format!("{byte:#04x}")
    }
}

/// The VmFlags line of the mapping that starts at `start`, from
/// /proc/self/smaps.
fn vm_flags_of(start: usize) -> Option<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let header = format!("{start:x}-");
    let mut in_mapping = false;
    for line in smaps.lines() {
        // A mapping's header starts with its address range; the lines
        // after it are "Key: value" until the next header.
        if parse_range(line).is_some() {
            in_mapping = line.starts_with(&header);
        }
        if in_mapping && let Some(flags) = line.strip_prefix("VmFlags:") {
            return Some(flags.trim().to_owned());
        }
    }
    None
}

/// Whether any mapping in /proc/self/maps overlaps `[start, start + len)`.
fn is_mapped(start: usize, len: usize) -> Option<bool> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let end = start + len;
    Some(
        maps.lines()
            .filter_map(parse_range)
            .any(|(low, high)| low < end && start < high),
    )
}

/// The `start-end` address range at the head of a /proc/PID/maps line.
fn parse_range(line: &str) -> Option<(usize, usize)> {
    let (low, high) = line.split_whitespace().next()?.split_once('-')?;
    Some((
        usize::from_str_radix(low, 16).ok()?,
        usize::from_str_radix(high, 16).ok()?,
    ))
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use super::*;

    pub(super) fn run(_options: &Options, _out: &mut impl Write) -> Result<Report> {
        Err(LabError::Unsupported(
            "raw-clone is written in x86_64 assembly; it does not run on this architecture",
        ))
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::*;
    use std::time::Instant;
    use syscalls::Sysno;
    use tracebench_server::futex;

    /// The `CLONE_CHILD_CLEARTID` word while the thread runs; the kernel
    /// writes 0 at its exit.
    const RUNNING: u32 = 1;

    /// What a raw thread reads and writes. Shared with the thread by
    /// address; lives in the parent's heap until the thread has exited.
    #[repr(C)]
    struct Task {
        text: *const u8,
        len: usize,
        find_max: bool,
        linger: libc::timespec,
        byte: AtomicU32,
        tid: AtomicU32,
        /// The `CLONE_CHILD_CLEARTID` word.
        running: AtomicU32,
    }

    /// A stack from mmap, unmapped on drop unless leaked on purpose.
    struct Stack {
        base: *mut libc::c_void,
        len: usize,
    }

    impl Stack {
        fn map(len: usize) -> Result<Stack> {
            // SAFETY: a fresh anonymous mapping at an address of the kernel's
            // choice overlaps nothing of ours.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_GROWSDOWN,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(LabError::last_os("mmap of a thread stack"));
            }
            Ok(Stack { base, len })
        }

        /// The initial stack pointer: the end of the mapping (stacks grow
        /// down), which is page-aligned and so 16-byte aligned as the ABI
        /// wants before a call.
        fn top(&self) -> *mut u8 {
            // SAFETY: one past the end of our own mapping.
            unsafe { self.base.cast::<u8>().add(self.len) }
        }

        fn unmap(self) -> Result<()> {
            let stack = std::mem::ManuallyDrop::new(self);
            // SAFETY: our mapping, unmapped once (ManuallyDrop skips Drop);
            // the thread that ran on it has exited.
            if unsafe { libc::munmap(stack.base, stack.len) } != 0 {
                return Err(LabError::last_os("munmap of a thread stack"));
            }
            Ok(())
        }
    }

    impl Drop for Stack {
        fn drop(&mut self) {
            // SAFETY: only reached for a stack no thread ever ran on (clone
            // failed or was never called): a thread that may still run is
            // leaked with mem::forget instead.
            unsafe { libc::munmap(self.base, self.len) };
        }
    }

    /// The thread's whole life: only memory reads, atomic stores and raw
    /// system calls. No TLS, no allocation, no panic path (no indexing, no
    /// arithmetic that could overflow-check).
    extern "C" fn thread_main(task: *const Task) -> i32 {
        // SAFETY: the parent passes a pointer to a Task it keeps alive and
        // unmoved until this thread has exited (it waits on `running`).
        let task = unsafe { &*task };
        // SAFETY: gettid takes no arguments and cannot fail.
        let tid = unsafe { syscalls::raw::syscall0(Sysno::gettid as usize) };
        let mut best: u8 = if task.find_max { 0 } else { u8::MAX };
        let mut at = task.text;
        // SAFETY: `text`/`len` describe the parent's string, alive and
        // unchanged until this thread has exited.
        let end = unsafe { task.text.add(task.len) };
        while at != end {
            // SAFETY: `at` is within the string (checked against `end`).
            let byte = unsafe { at.read() };
            if (task.find_max && byte > best) || (!task.find_max && byte < best) {
                best = byte;
            }
            // SAFETY: at most one past the end, which is `end`.
            at = unsafe { at.add(1) };
        }
        task.byte.store(u32::from(best), Ordering::Release);
        task.tid.store(tid as u32, Ordering::Release);
        if task.linger.tv_sec != 0 || task.linger.tv_nsec != 0 {
            // SAFETY: nanosleep reads the timespec in our task; the
            // remainder pointer may be null. Its result does not matter.
            unsafe {
                syscalls::raw::syscall2(
                    Sysno::nanosleep as usize,
                    &task.linger as *const libc::timespec as usize,
                    0,
                )
            };
        }
        0
    }

    /// clone(2) by hand. In the parent, returns the new thread's id (or a
    /// negative errno). The child starts on `stack_top` with no Rust frame
    /// under it: it calls `entry(task)` and passes the result to exit(2).
    ///
    /// # Safety
    ///
    /// `stack_top` must be the 16-byte aligned end of a writable mapping
    /// that stays mapped until the thread has exited; `task` and
    /// `clear_tid` must stay valid until then; `flags` must include
    /// CLONE_VM (the child runs code and data of this address space).
    #[inline(never)]
    unsafe fn clone_thread(
        flags: u64,
        stack_top: *mut u8,
        clear_tid: *const AtomicU32,
        entry: extern "C" fn(*const Task) -> i32,
        task: *const Task,
    ) -> isize {
        let ret: isize;
        // SAFETY: the caller's contract above. clone on x86_64 takes
        // (flags, stack, parent_tid, child_tid, tls) in rdi, rsi, rdx, r10,
        // r8; `syscall` clobbers rcx and r11. The child's registers are the
        // parent's, except rax = 0 and rsp = stack_top, so it finds
        // `entry` in r12 and `task` in r13. Its path ends in exit(2) and
        // never reaches the parent's code after the block.
        unsafe {
            std::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                // The child: a fresh stack, no caller to return to.
                "xor ebp, ebp",
                "mov rdi, r13",
                "call r12",
                "mov edi, eax",
                "mov eax, {exit}",
                "syscall",
                "ud2",
                // The parent (or a failed clone) carries on.
                "2:",
                exit = const Sysno::exit as usize,
                inlateout("rax") Sysno::clone as usize => ret,
                in("rdi") flags,
                in("rsi") stack_top,
                in("rdx") 0usize,
                in("r10") clear_tid,
                in("r8") 0usize,
                in("r12") entry,
                in("r13") task,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// Sleeps on the thread's `CLONE_CHILD_CLEARTID` word until the kernel
    /// has cleared it, that is until the thread is gone.
    fn join(task: &Task, deadline: Instant) -> Result<()> {
        loop {
            let running = task.running.load(Ordering::Acquire);
            if running == 0 {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LabError::TimedOut("a raw clone thread did not exit"));
            }
            // Non-private: the kernel's wake at thread exit is a shared one.
            futex::wait_shared(&task.running, running, Some(left));
        }
    }

    pub(super) fn run(options: &Options, out: &mut impl Write) -> Result<Report> {
        let page = page_size();
        let stack_size = options.stack_size.div_ceil(page) * page;
        let flags = THREAD_FLAGS | JOIN_FLAG;
        print_setup(out, options, stack_size, flags)?;

        let jobs = [Job::Min, Job::Max];
        // Boxed so their addresses stay put while the threads use them.
        let tasks: Vec<Box<Task>> = jobs.iter().map(|&job| task_for(job, options)).collect();
        let mut stacks = Vec::with_capacity(jobs.len());
        for _ in jobs {
            stacks.push(Stack::map(stack_size)?);
        }
        let vm_flags: Vec<Option<String>> = stacks
            .iter()
            .map(|stack| vm_flags_of(stack.base as usize))
            .collect();

        let (tids, failure) = start_threads(flags, &tasks, &stacks);
        if let Err(error) = join_all(&tasks) {
            // A thread may still run on its stack and read its task: leak
            // both rather than free memory in use.
            std::mem::forget(stacks);
            std::mem::forget(tasks);
            return Err(error);
        }
        let ranges = unmap_all(stacks)?;
        if let Some(error) = failure {
            return Err(error);
        }
        let stacks_unmapped = ranges
            .iter()
            .filter(|(start, len)| is_mapped(*start, *len) == Some(false))
            .count();

        let mut threads = Vec::with_capacity(jobs.len());
        for (index, job) in jobs.into_iter().enumerate() {
            let task = &tasks[index];
            let report = ThreadReport {
                job,
                tid: tids[index],
                tid_seen_by_thread: task.tid.load(Ordering::Acquire) as i32,
                byte: task.byte.load(Ordering::Acquire) as u8,
                stack: ranges[index],
                stack_vm_flags: vm_flags[index].clone(),
            };
            print_thread(out, &report)?;
            threads.push(report);
        }
        print_end(out, stacks_unmapped, ranges.len())?;
        Ok(Report {
            flags,
            threads,
            stacks_unmapped,
        })
    }

    /// What the lab does, before it does it: stacks, flags, text.
    fn print_setup(
        out: &mut impl Write,
        options: &Options,
        stack_size: usize,
        flags: u64,
    ) -> Result<()> {
        writeln!(
            out,
            "raw-clone: 2 threads from clone(2) on mmap'd stacks ({} KiB each, MAP_GROWSDOWN)",
            stack_size / 1024
        )?;
        writeln!(out, "  flags {} ({flags:#x})", flag_names(flags))?;
        writeln!(
            out,
            "  text  {:?} ({} bytes)",
            options.text,
            options.text.len()
        )?;
        Ok(())
    }

    /// The task of `job` over `options.text`.
    fn task_for(job: Job, options: &Options) -> Box<Task> {
        let text = options.text.as_bytes();
        Box::new(Task {
            text: text.as_ptr(),
            len: text.len(),
            find_max: job == Job::Max,
            linger: libc::timespec {
                tv_sec: options.linger.as_secs() as libc::time_t,
                tv_nsec: options.linger.subsec_nanos() as libc::c_long,
            },
            byte: AtomicU32::new(0),
            tid: AtomicU32::new(0),
            running: AtomicU32::new(RUNNING),
        })
    }

    /// Clones a thread for each task on its stack: the tids of those
    /// started, and why the next one did not start, if one did not.
    fn start_threads(
        flags: u64,
        tasks: &[Box<Task>],
        stacks: &[Stack],
    ) -> (Vec<i32>, Option<LabError>) {
        let mut tids = Vec::with_capacity(tasks.len());
        for (task, stack) in tasks.iter().zip(stacks) {
            // SAFETY: the stack is ours and stays mapped until the thread
            // is joined (or is leaked if it never is); the task and its
            // `running` word are boxed and outlive the join; THREAD_FLAGS
            // holds CLONE_VM.
            let tid = unsafe {
                clone_thread(
                    flags,
                    stack.top(),
                    &task.running,
                    thread_main,
                    &**task as *const Task,
                )
            };
            if tid < 0 {
                // This task's thread never started: nothing will clear
                // its word.
                task.running.store(0, Ordering::Release);
                let failure = LabError::Os {
                    what: "clone",
                    source: std::io::Error::from_raw_os_error(-tid as i32),
                };
                return (tids, Some(failure));
            }
            tids.push(tid as i32);
        }
        (tids, None)
    }

    /// Joins every task's thread, all under one deadline.
    fn join_all(tasks: &[Box<Task>]) -> Result<()> {
        let deadline = Instant::now() + JOIN_TIMEOUT;
        for task in tasks {
            join(task, deadline)?;
        }
        Ok(())
    }

    /// Unmaps the stacks of joined threads; returns where each was.
    fn unmap_all(stacks: Vec<Stack>) -> Result<Vec<(usize, usize)>> {
        let ranges: Vec<(usize, usize)> = stacks.iter().map(|s| (s.base as usize, s.len)).collect();
        for stack in stacks {
            stack.unmap()?;
        }
        Ok(ranges)
    }

    /// How the threads were joined, and how many stacks are gone.
    fn print_end(out: &mut impl Write, stacks_unmapped: usize, stacks: usize) -> Result<()> {
        writeln!(
            out,
            "  joined: FUTEX_WAIT on each CLONE_CHILD_CLEARTID word until the kernel cleared it at exit"
        )?;
        writeln!(
            out,
            "  stacks unmapped: {stacks_unmapped} of {stacks} (gone from /proc/self/maps)"
        )?;
        Ok(())
    }

    /// What one thread found, and where its stack was.
    fn print_thread(out: &mut impl Write, report: &ThreadReport) -> Result<()> {
        let (name, which) = match report.job {
            Job::Min => ("min", "smallest"),
            Job::Max => ("max", "largest"),
        };
        writeln!(
            out,
            "  thread {} ({name}) found the {which} byte: {}",
            report.tid,
            show_byte(report.byte)
        )?;
        writeln!(
            out,
            "    stack {:#x}-{:#x}{}",
            report.stack.0,
            report.stack.0 + report.stack.1,
            report
                .stack_vm_flags
                .as_deref()
                .map(|flags| format!(", VmFlags: {flags}"))
                .unwrap_or_default()
        )?;
        Ok(())
    }

    fn page_size() -> usize {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 { page as usize } else { 4096 }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn two_raw_threads_find_the_min_and_max_byte() {
        let options = Options {
            text: "tracebench: Zq~ !".to_owned(),
            ..Options::default()
        };
        let report = run(&options, &mut Vec::new()).unwrap();
        assert_eq!(report.byte(Job::Min), Some(b' '));
        assert_eq!(report.byte(Job::Max), Some(b'~'));
        assert_eq!(report.flags, THREAD_FLAGS | JOIN_FLAG);
        for thread in &report.threads {
            assert!(thread.tid > 0);
            assert_eq!(
                thread.tid, thread.tid_seen_by_thread,
                "gettid in the thread"
            );
        }
    }

    #[test]
    fn one_byte_is_both_min_and_max() {
        let options = Options {
            text: "x".to_owned(),
            stack_size: MIN_STACK,
            linger: Duration::ZERO,
        };
        let report = run(&options, &mut Vec::new()).unwrap();
        assert_eq!(report.byte(Job::Min), Some(b'x'));
        assert_eq!(report.byte(Job::Max), Some(b'x'));
    }

    #[test]
    fn the_stacks_are_growsdown_mappings() {
        let report = run(&Options::default(), &mut Vec::new()).unwrap();
        for thread in &report.threads {
            let flags = thread.stack_vm_flags.as_deref().expect("smaps readable");
            assert!(flags.split_whitespace().any(|f| f == "gd"), "{flags}");
        }
    }

    #[test]
    fn bad_options_are_errors() {
        let empty = Options {
            text: String::new(),
            ..Options::default()
        };
        assert!(matches!(
            run(&empty, &mut Vec::new()),
            Err(LabError::InvalidOption(_))
        ));
        let tiny = Options {
            stack_size: 100,
            ..Options::default()
        };
        assert!(run(&tiny, &mut Vec::new()).is_err());
    }

    #[test]
    fn flag_names_read_like_strace() {
        assert_eq!(
            flag_names(THREAD_FLAGS | JOIN_FLAG),
            "CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_PARENT|CLONE_THREAD|CLONE_IO|CLONE_CHILD_CLEARTID"
        );
    }
}
