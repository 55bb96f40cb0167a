//! `tracebench`: the command line. This file only wires the crates together;
//! everything it runs lives in them.
// The doc comments of the argument structs are clap's --help text, where
// runs/<time>/ is meant literally, not as HTML.
#![allow(rustdoc::invalid_html_tags)]
// The binary only wires crates: any unsafe code belongs in the crate that
// needs it.
#![forbid(unsafe_code)]

mod capture;
mod dash;
mod experiment;
mod export;
mod lab;
mod load;
mod man;
mod serve;
mod trace;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "tracebench",
    version,
    about = "See a multi-threaded server at the level of its system calls",
    after_help = "Examples:\n  \
        tracebench serve --mode pool-futex --workers 5 --delay 1s\n  \
        tracebench serve --mode sync --addr 127.0.0.1:0\n  \
        tracebench trace --write run.tbt -- tracebench serve\n  \
        tracebench export run.tbt --chrome run.json\n  \
        tracebench lab raw-clone\n  \
        tracebench experiment --quick\n  \
        tracebench completions bash > /etc/bash_completion.d/tracebench\n\n\
        Without a subcommand, tracebench opens the live dashboard on its defaults."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP/1.1 server with the chosen concurrency model
    #[command(after_help = "Examples:\n  \
        tracebench serve                                  # pool-futex, 5 workers, 127.0.0.1:3000\n  \
        tracebench serve --mode sync --delay 1s           # one request at a time, 1 s each\n  \
        tracebench serve --mode pool-std --queue 10 --when-full reject\n  \
        curl 'http://127.0.0.1:3000/?delay=250ms'         # a per-request delay\n\n\
        Stop with Ctrl-C (or SIGTERM): accepting stops, queued and in-flight \
        requests (those waiting in the listen backlog too) are served, a line on stderr \
        says how many, a summary is printed, and the exit status is 0. A second Ctrl-C \
        or SIGTERM while it drains exits at once, with status 128 + the signal.")]
    Serve(serve::ServeArgs),
    /// The live dashboard: our server, traced, under load (the default)
    #[command(after_help = "Examples:\n  \
        tracebench                                   # pool-futex, 5 workers, 50 ms per request, 10 connections\n  \
        tracebench dash --mode pool-spin --workers 3\n  \
        tracebench dash --rate 150 -c 50               # open-loop load\n\n\
        Keys: q quit, space pause, arrows/tab select a thread (its events), ? help.")]
    Dash(dash::DashArgs),
    /// Replay a recorded run in the dashboard: play, pause, speed, step, seek
    #[command(
        after_help = "Example:\n  tracebench replay runs/2026-11-22T15-57-21Z\n\n\
        Keys: space play/pause, < > speed, arrows seek 1 s, PgUp/PgDn 10 s, Home/End, \
        n next event (of the selected thread), tab select, q quit, ? help."
    )]
    Replay(dash::ReplayArgs),
    /// Trace a program's syscalls, following every thread and child (like strace -f)
    #[command(after_help = "Examples:\n  \
        tracebench trace -- tracebench serve --workers 5      # the default set, to stderr\n  \
        tracebench trace -e trace=clone3,accept4 -e futex=wait -o trace.txt -- ./server\n  \
        tracebench trace -tt -T -p 1234                         # attach; Ctrl-C detaches\n\n\
        The default set shows what every thread of a server is doing: \
        clone, clone3, fork, vfork, execve, exit, exit_group, futex, accept, accept4, \
        read, write, recvfrom, sendto, close, nanosleep, clock_nanosleep, poll, epoll_wait. \
        Classes: %process %network %futex %io %sleep, or all.\n\
        A spawned program gets a seccomp filter so that only the selected syscalls stop it \
        (--no-seccomp turns that off); an attached one stops at every syscall.")]
    Trace(trace::TraceArgs),
    /// Export a recorded run or trace file: latency CSV/.hgrm, Chrome/Perfetto JSON, JSONL, strace text, requests
    #[command(after_help = "Examples:\n  \
        tracebench export run.tbt --chrome run.json      # open in ui.perfetto.dev\n  \
        tracebench export run.tbt --strace - | less\n  \
                tracebench export run.tbt -c                      # per-syscall and per-thread summary\n  \
        tracebench export runs/2026-11-22T15-57-21Z --csv latency.csv   # a dashboard run's latencies\n  \
        tracebench export run.tbt --requests req.csv --queue-csv queue.csv   # who served each request, and when")]
    Export(export::ExportArgs),
    /// Send HTTP load and measure every latency (like wrk, oha, or xargs -P curl)
    #[command(after_help = "Examples:\n  \
        tracebench load http://127.0.0.1:3000/ -c 10 -n 1000          # a new connection per request\n  \
        tracebench load http://127.0.0.1:3000/ -c 50 -z 30s --keep-alive --hgrm run.hgrm\n  \
        tracebench load 'http://127.0.0.1:3000/?delay=1s' -c 10 -n 10  # the classic experiment\n\n\
        Exit status: 0 when at least one request was answered and every request succeeded \
        (an answer of 2xx or 3xx); 1 when more than --max-errors requests failed (an error, \
        a timeout, or another status), when no request was answered at all, or on bad input. \
        Requests the end of a -z run catches in flight are neither: the summary counts them. \
        A run stopped by Ctrl-C is judged on what it measured until then.")]
    Load(load::LoadArgs),
    /// Add HdrHistogram interval logs (.hlog) interval by interval
    #[command(after_help = "Example:\n  tracebench merge gen1.hlog gen2.hlog -o all.hlog")]
    Merge(load::MergeArgs),
    /// The classic experiment: every server mode, traced, under N concurrent requests, against theory
    #[command(after_help = "Examples:\n  \
        tracebench experiment                            # N=10 requests of 1 s, pools of 5, every mode (~20 s)\n  \
        tracebench experiment --quick --out /tmp/exp     # 200 ms per request, for a quick check\n  \
        tracebench experiment --modes sync,pool-futex -c 20 --workers 4 --delay 500ms\n\n\
        Writes table.md (also printed), table.csv, latency.svg, and per mode its trace \
        (<mode>.tbt, for tracebench replay) and timeline-<mode>.svg. \
        Theory: sync N·d, pools ⌈N/W⌉·d, thread and fork d. docs/experiments.md explains the results.")]
    Experiment(experiment::ExperimentArgs),
    /// The seed labs: small programs (race, raw clone, futex handshake, pipe, semaphore, locks) to run and trace
    #[command(after_help = "Examples:\n  \
        tracebench lab race --sync none                 # lost updates\n  \
        tracebench lab raw-clone                        # threads from the raw clone syscall\n  \
        tracebench trace -e trace=futex -- tracebench lab handshake --rounds 100\n  \
        tracebench lab mutex --threads 8                # the spinlock past the CPU count\n\n\
        Each lab's --help says what it teaches. docs/labs.md has traced excerpts and figures.")]
    Lab(lab::LabArgs),
    /// Write a manual page per command into DIR (tracebench.1,
    /// tracebench-serve.1, …), for `man -l` or MANPATH
    #[command(
        after_help = "Example:\n  tracebench man ~/.local/share/man/man1 && man tracebench-serve"
    )]
    Man {
        /// Where to write the pages (created if missing)
        dir: std::path::PathBuf,
    },
    /// Print a shell completion script to standard output
    #[command(after_help = "Example:\n  tracebench completions zsh > ~/.zfunc/_tracebench")]
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (try e.g. 250ms, 1s, 2m)"))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Trace(args)) => trace::run(args).map(ExitCode::from),
        Some(Command::Export(args)) => export::run(args).map(|()| ExitCode::SUCCESS),
        Some(Command::Load(args)) => load::run(args).map(ExitCode::from),
        Some(Command::Merge(args)) => load::merge(args).map(|()| ExitCode::SUCCESS),
        Some(Command::Serve(args)) => serve::run(args.into()).map(|()| ExitCode::SUCCESS),
        Some(Command::Lab(args)) => lab::run(args),
        Some(Command::Experiment(args)) => experiment::run(args).map(|()| ExitCode::SUCCESS),
        Some(Command::Completions { shell }) => {
            // clap_complete panics when its writer fails; into a buffer it
            // cannot, and a reader that went away (`| head`) is then an
            // ordinary BrokenPipe error, which main treats as success.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tracebench", &mut script);
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&script)?;
            stdout.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Man { dir }) => {
            let mut stdout = std::io::stdout().lock();
            for page in man::write_pages(&dir, Cli::command())? {
                writeln!(stdout, "{}", page.display())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Dash(args)) => dash::run(args).map(ExitCode::from),
        Some(Command::Replay(args)) => dash::replay(args).map(ExitCode::from),
        None => dash::run(dash::DashArgs::default()).map(ExitCode::from),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            // Output piped into `head` that closed early is not a failure.
            let broken_pipe = error.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("tracebench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
