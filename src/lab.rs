//! `tracebench lab NAME`: the seed labs, on the command line.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use tracebench_labs::{LabError, handshake, mutex, pipe, race, raw_clone, semaphore};

use crate::parse_duration;

#[derive(clap::Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    lab: Lab,
}

#[derive(clap::Subcommand, Debug)]
enum Lab {
    /// Threads racing on a shared counter lose updates; a lock or an atomic does not
    #[command(
        long_about = "Threads racing on a shared counter lose updates; a lock or an atomic does not.\n\n\
        N threads add 1 to a shared counter until it should reach --target. With --sync none each \
        increment reads the counter, calls sched_yield (as the classic demo does; --no-yield to \
        skip it), and writes the value + 1: whatever other threads wrote in between is overwritten. \
        The lab prints the expected and final counts and the updates lost. With futex-mutex (our \
        futex lock around read-yield-write) or atomic (one lock xadd) none are lost.",
        after_help = "Examples:\n  \
        tracebench lab race                              # 2 threads, 100000, no sync: updates lost\n  \
        tracebench lab race --sync futex-mutex           # none lost\n  \
        tracebench trace -e trace=futex -- tracebench lab race --sync futex-mutex"
    )]
    Race(RaceArgs),
    /// Threads made with the raw clone syscall on mmap'd stacks, joined with a futex
    #[command(
        name = "raw-clone",
        long_about = "Threads made with the raw clone syscall on mmap'd stacks, joined with a futex.\n\n\
        Two threads are created as the assembly material creates them: clone(2) called directly \
        with CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_PARENT|CLONE_THREAD|CLONE_IO \
        (plus CLONE_CHILD_CLEARTID, to join them), each on a stack from mmap(MAP_ANONYMOUS|\
        MAP_PRIVATE|MAP_GROWSDOWN). The threads have no TLS of their own and run only raw \
        system calls; one finds the smallest byte of --text, the other the largest. The parent \
        sleeps in FUTEX_WAIT on each thread's CLONE_CHILD_CLEARTID word, which the kernel clears \
        at thread exit, then unmaps the stacks. Compare its clone calls with std::thread's \
        clone3 under tracebench trace. x86_64 only.",
        after_help = "Examples:\n  \
        tracebench lab raw-clone --text 'any string'\n  \
        tracebench trace -e trace=clone,clone3,futex,exit,munmap -- tracebench lab raw-clone"
    )]
    RawClone(RawCloneArgs),
    /// Two processes ping-pong through a shared page with non-private futexes
    #[command(
        long_about = "Two processes ping-pong through a shared page with non-private futexes.\n\n\
        The parent forks; both map the same MAP_SHARED page and pass the turn back and forth \
        --rounds times through one word: store the other's value, FUTEX_WAKE, FUTEX_WAIT while \
        the word says it is the other's turn. The futexes cannot be private: the processes have \
        different address spaces. Prints the round-trip distribution (HdrHistogram: p50, p90, \
        p99, max) and the futex calls per round trip (exactly 2 FUTEX_WAKE, plus the waits).",
        after_help = "Examples:\n  \
        tracebench lab handshake --rounds 100000\n  \
        tracebench trace -e trace=futex -- tracebench lab handshake --rounds 100"
    )]
    Handshake(HandshakeArgs),
    /// A parent and child echo messages through two pipes; closing the writer makes read return 0
    #[command(
        long_about = "A parent and child echo messages through two pipes; closing the writer makes read return 0.\n\n\
        The parent writes --messages messages into a pipe; the forked child reads each and writes \
        it back through a second pipe, and the parent checks every echo. Then the parent closes \
        its write end: the child's read(2) returns 0 (end of file), it reports how many bytes it \
        echoed, closes its own end and exits, and the parent's read(2) returns 0 in turn.",
        after_help = "Example:\n  tracebench trace -e trace=read,write,close -- tracebench lab pipe --messages 3"
    )]
    Pipe(PipeArgs),
    /// A parent and child alternate through System V semaphores, removed on every exit path
    #[command(
        long_about = "A parent and child alternate through System V semaphores, removed on every exit path.\n\n\
        semget makes a set of two semaphores (the parent's turn = 1, the child's turn = 0); \
        semctl SETVAL sets them; each side takes its own with semop -1 (SEM_UNDO) and gives the \
        other's with +1, so they strictly alternate for --rounds rounds. The set is removed \
        (IPC_RMID) at the end, on an error, and on Ctrl-C or SIGTERM (then the exit status is \
        130 or 143): `ipcs -s` lists nothing left. --delay slows each turn down to watch it.",
        after_help = "Examples:\n  \
        tracebench lab semaphore --rounds 10 --delay 200ms     # Ctrl-C it, then ipcs -s\n  \
        tracebench trace -e trace=semget,semctl,semtimedop -- tracebench lab semaphore --rounds 3"
    )]
    Semaphore(SemaphoreArgs),
    /// Our futex mutex, std's Mutex and a spinlock under 1 to N threads: ops/s and futex calls per op
    #[command(
        long_about = "Our futex mutex, std's Mutex and a spinlock under 1 to N threads: ops/s and futex calls per op.\n\n\
        For each lock and each thread count from 1 to --threads, the threads lock, add 1 to a \
        shared integer and unlock for --duration, counting their operations; the integer must \
        equal the sum of the counts. The table shows operations per second, futex system calls \
        per operation (our mutex; the test-and-set spinlock never makes one; std's are not \
        countable from inside), and sleeps and preemptions per operation. With more threads \
        than CPUs the spinlock collapses: a preempted holder leaves the others spinning.",
        after_help = "Examples:\n  \
        tracebench lab mutex --threads 8 --duration 500ms\n  \
        tracebench trace -c -e trace=futex -- tracebench lab mutex"
    )]
    Mutex(MutexArgs),
}

#[derive(clap::Args, Debug)]
struct RaceArgs {
    /// Threads incrementing the counter
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=race::MAX_THREADS as i64))]
    threads: u32,
    /// What the counter should reach (the increments of all threads together)
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=race::MAX_TARGET))]
    target: u64,
    /// How the counter is protected
    #[arg(long, default_value = "none", value_parser = sync_parser())]
    sync: race::SyncMode,
    /// Do not call sched_yield between reading and writing the counter
    #[arg(long)]
    no_yield: bool,
}

fn sync_parser() -> impl TypedValueParser<Value = race::SyncMode> {
    PossibleValuesParser::new(race::SyncMode::ALL.map(race::SyncMode::name)).map(|name| {
        name.parse::<race::SyncMode>()
            .expect("clap only passes listed names")
    })
}

#[derive(clap::Args, Debug)]
struct RawCloneArgs {
    /// The string whose smallest and largest bytes the threads find
    #[arg(long, default_value = "Hello from two raw clone threads!")]
    text: String,
    /// Stack per thread in KiB (16 to 8192)
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(16..=8192))]
    stack_kib: u32,
    /// How long each thread sleeps before exiting (at most 1s), so the
    /// parent is already in FUTEX_WAIT when the kernel clears the word
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    linger: Duration,
}

#[derive(clap::Args, Debug)]
struct HandshakeArgs {
    /// Round trips
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=handshake::MAX_ROUNDS))]
    rounds: u64,
}

#[derive(clap::Args, Debug)]
struct PipeArgs {
    /// Messages to send and have echoed
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=pipe::MAX_MESSAGES))]
    messages: u64,
}

#[derive(clap::Args, Debug)]
struct SemaphoreArgs {
    /// Rounds (a parent turn, then a child turn); at most 32000, under the
    /// kernel's cap on SEM_UNDO adjustments
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=semaphore::MAX_ROUNDS as i64))]
    rounds: u32,
    /// Pause in each turn (at most 1s), e.g. 100ms
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    delay: Duration,
}

#[derive(clap::Args, Debug)]
struct MutexArgs {
    /// Thread counts from 1 to this
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=mutex::MAX_THREADS as i64))]
    threads: u32,
    /// Time per cell of the table (10ms to 10s)
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    duration: Duration,
}

/// Runs the lab; the exit status is 0, or 128 + the signal when SIGINT or
/// SIGTERM ended it (after cleaning up).
pub fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match args.lab {
        Lab::Race(args) => race::run(
            &race::Options {
                threads: args.threads as usize,
                target: args.target,
                sync: args.sync,
                yield_between: !args.no_yield,
            },
            &mut out,
        )
        .map(drop),
        Lab::RawClone(args) => raw_clone::run(
            &raw_clone::Options {
                text: args.text,
                stack_size: args.stack_kib as usize * 1024,
                linger: args.linger,
            },
            &mut out,
        )
        .map(drop),
        Lab::Handshake(args) => handshake::run(
            &handshake::Options {
                rounds: args.rounds,
            },
            &mut out,
        )
        .map(drop),
        Lab::Pipe(args) => pipe::run(
            &pipe::Options {
                messages: args.messages,
            },
            &mut out,
        )
        .map(drop),
        Lab::Semaphore(args) => semaphore::run(
            &semaphore::Options {
                rounds: args.rounds,
                delay: args.delay,
            },
            &mut out,
        )
        .map(drop),
        Lab::Mutex(args) => mutex::run(
            &mutex::Options {
                max_threads: args.threads as usize,
                duration: args.duration,
                ..mutex::Options::default()
            },
            &mut out,
        )
        .map(drop),
    };
    out.flush()?;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(LabError::Interrupted(signal)) => {
            eprintln!("tracebench: {}", LabError::Interrupted(signal));
            Ok(ExitCode::from(128u8.saturating_add(signal as u8)))
        }
        Err(error) => Err(error.into()),
    }
}
