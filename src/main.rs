//! `tracebench`: the command line. This file only wires the crates together;
//! everything it runs lives in them.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tracebench_server::http::ConnectionSettings;
use tracebench_server::{Config, Mode, Server, WhenFull};

#[derive(Parser, Debug)]
#[command(
    name = "tracebench",
    version,
    about = "See a multi-threaded server at the level of its system calls",
    after_help = "Examples:\n  \
        tracebench serve --mode pool-futex --workers 5 --delay 1s\n  \
        tracebench serve --mode sync --addr 127.0.0.1:0\n  \
        tracebench completions bash > /etc/bash_completion.d/tracebench\n\n\
        Without a subcommand, tracebench runs `serve` on its defaults \
        (the live dashboard will take its place)."
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
        requests are served, a summary is printed, and the exit status is 0.")]
    Serve(ServeArgs),
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
    Trace(TraceArgs),
    /// Print a shell completion script to standard output
    #[command(after_help = "Example:\n  tracebench completions zsh > ~/.zfunc/_tracebench")]
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Concurrency model
    #[arg(long, default_value = "pool-futex", value_parser = mode_parser())]
    mode: Mode,
    /// Address to listen on (port 0 picks a free one)
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Worker threads in the pool modes
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=4096))]
    workers: u32,
    /// Capacity of the pool's connection queue
    #[arg(long = "queue", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    queue: u32,
    /// When the queue is full: wait for room, or answer 503
    #[arg(long, value_enum, default_value_t = WhenFullArg::Block)]
    when_full: WhenFullArg,
    /// Listen backlog passed to listen(2)
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(i32).range(1..))]
    backlog: i32,
    /// Accept a connection as soon as it is established, not once its
    /// request has arrived (turns TCP_DEFER_ACCEPT off)
    #[arg(long)]
    no_defer_accept: bool,
    /// Simulated work per request (a nanosleep), e.g. 200ms, 1s
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    delay: Duration,
    /// Serve several requests per connection when the client asks
    #[arg(long)]
    keep_alive: bool,
    /// Drop a connection whose request head has not arrived in this time
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    read_timeout: Duration,
}

#[derive(clap::Args, Debug)]
struct TraceArgs {
    /// Follow forks and threads (always on; accepted for strace users)
    #[arg(short = 'f')]
    follow: bool,
    /// Syscalls to record: trace=NAME,%CLASS,all; futex=wait records only
    /// futex calls that sleep (repeatable)
    #[arg(short = 'e', value_name = "EXPR")]
    expressions: Vec<String>,
    /// Write the trace to FILE instead of standard error
    #[arg(short = 'o', value_name = "FILE")]
    output: Option<std::path::PathBuf>,
    /// Bytes of strings and buffers to show
    #[arg(short = 's', value_name = "N", default_value_t = 32)]
    string_limit: usize,
    /// Attach to a running process (every thread) instead of starting one
    #[arg(short = 'p', value_name = "PID", conflicts_with = "command")]
    pid: Option<i32>,
    /// Stop at every syscall instead of installing a seccomp filter
    #[arg(long)]
    no_seccomp: bool,
    /// Prefix each line with the wall-clock time (-tt: microseconds)
    #[arg(short = 't', action = clap::ArgAction::Count)]
    absolute_time: u8,
    /// Prefix each line with the time since the previous line
    #[arg(short = 'r', conflicts_with = "absolute_time")]
    relative_time: bool,
    /// Show the time spent in each syscall
    #[arg(short = 'T')]
    durations: bool,
    /// The program to start and its arguments
    #[arg(last = true, value_name = "CMD", required_unless_present = "pid")]
    command: Vec<std::ffi::OsString>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum WhenFullArg {
    Block,
    Reject,
}

fn mode_parser() -> impl clap::builder::TypedValueParser<Value = Mode> {
    PossibleValuesParser::new(Mode::ALL.map(Mode::name))
        .map(|name| name.parse::<Mode>().expect("clap only passes listed names"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (try e.g. 250ms, 1s, 2m)"))
}

impl From<ServeArgs> for Config {
    fn from(args: ServeArgs) -> Config {
        Config {
            mode: args.mode,
            addr: args.addr,
            workers: args.workers as usize,
            queue_capacity: args.queue as usize,
            when_full: match args.when_full {
                WhenFullArg::Block => WhenFull::Block,
                WhenFullArg::Reject => WhenFull::Reject,
            },
            backlog: args.backlog,
            defer_accept: !args.no_defer_accept,
            connection: ConnectionSettings {
                delay: args.delay,
                keep_alive: args.keep_alive,
                read_timeout: args.read_timeout,
            },
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::bind(config)?;
    tracebench_server::stop_on_signals(&server.stop_handle())
        .context("installing signal handlers")?;
    let config = server.config();
    let mut details = format!("mode {}", config.mode);
    if config.mode.is_pool() {
        details += &format!(
            ", {} workers, queue {}",
            config.workers, config.queue_capacity
        );
    }
    details += &format!(
        ", delay {}, keep-alive {}",
        humantime::format_duration(config.connection.delay),
        if config.connection.keep_alive {
            "on"
        } else {
            "off"
        }
    );
    let mut stdout = std::io::stdout();
    writeln!(
        stdout,
        "listening on http://{} ({details})",
        server.local_addr()?
    )?;
    stdout.flush()?;
    let summary = server.run()?;
    write!(stdout, "{summary}")?;
    Ok(())
}

/// Runs `tracebench trace`; returns the exit code to leave with (the
/// traced program's, like strace).
fn trace(args: TraceArgs) -> anyhow::Result<u8> {
    use tracebench_tracer::strace::{StraceWriter, TextOptions, Timestamps};
    use tracebench_tracer::{Options, Selection, Target};

    let _ = args.follow;
    let selection = Selection::parse(&args.expressions)?;
    let target = match args.pid {
        Some(pid) => Target::Attach { pid },
        None => {
            let mut command = args.command.into_iter();
            let program = command.next().context("no command to trace")?;
            Target::Spawn {
                program,
                args: command.collect(),
            }
        }
    };
    let attach = matches!(target, Target::Attach { .. });
    let options = Options {
        selection,
        seccomp: !args.no_seccomp && !attach,
        follow_forks: true,
        string_limit: args.string_limit,
    };
    let text = TextOptions {
        timestamps: if args.absolute_time > 0 {
            Timestamps::Absolute
        } else if args.relative_time {
            Timestamps::Relative
        } else {
            Timestamps::None
        },
        durations: args.durations,
    };
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::stderr()),
    };
    tracebench_tracer::stop_on_signals().context("installing signal handlers")?;
    let session = tracebench_tracer::Session::start(&target, &options)?;
    if attach {
        eprintln!(
            "tracebench trace: attached to {} threads; every syscall stops them (no seccomp filter on a running process); Ctrl-C detaches",
            session.thread_count()
        );
    }
    let mut writer = StraceWriter::new(out, text);
    let outcome = session.run(&mut writer)?;
    writer.finish().context("writing the trace")?;
    if outcome.detached {
        eprintln!("tracebench trace: detached; the program runs on");
    }
    Ok(outcome
        .exit
        .map_or(0, |status| status.shell_code().clamp(0, 255) as u8))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Trace(args)) => trace(args).map(ExitCode::from),
        Some(Command::Serve(args)) => serve(args.into()).map(|()| ExitCode::SUCCESS),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "tracebench",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "tracebench: the dashboard is not built yet; running `tracebench serve` on its defaults"
            );
            serve(Config::default()).map(|()| ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
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
