//! `tracebench serve`: the HTTP server, on the command line.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use tracebench_server::http::ConnectionSettings;
use tracebench_server::{Config, Mode, Server, WhenFull};

use crate::parse_duration;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Concurrency model
    #[arg(long, default_value = "pool-futex", value_parser = mode_parser())]
    mode: Mode,
    /// Address to listen on (port 0 picks a free one)
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Worker threads in the pool modes (default 5), or event loops in
    /// epoll (default one per CPU)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    workers: Option<u32>,
    /// Connections one event loop holds at once (epoll), like nginx's
    /// worker_connections; at the limit an idle keep-alive connection is
    /// closed first, then --when-full applies
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Capacity of the pool's connection queue; when it is full, the
    /// keep-alive connection idle the longest is closed first (its worker
    /// takes the next), then --when-full applies
    #[arg(long = "queue", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    queue: u32,
    /// When the queue (epoll: the connection limit) is full: wait for
    /// room, or answer 503
    #[arg(long, value_enum, default_value_t = WhenFullArg::Block)]
    when_full: WhenFullArg,
    /// Listen backlog passed to listen(2)
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(i32).range(1..))]
    backlog: i32,
    /// Accept a connection as soon as it is established, not once its
    /// request has arrived (turns TCP_DEFER_ACCEPT off)
    #[arg(long)]
    no_defer_accept: bool,
    /// Simulated work per request (a nanosleep), e.g. 200ms, 1s; at most 60s
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    delay: Duration,
    /// Event loops: a listening socket per loop (SO_REUSEPORT, the kernel
    /// spreads connections by address hash) instead of one shared (epoll:
    /// with EPOLLEXCLUSIVE; io-uring: the rings take turns)
    #[arg(long)]
    reuseport: bool,
    /// Serve several requests per connection when the client asks
    #[arg(long)]
    keep_alive: bool,
    /// Drop a connection whose request head has not arrived in this time
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    read_timeout: Duration,
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

impl From<ServeArgs> for Config {
    fn from(args: ServeArgs) -> Config {
        Config {
            mode: args.mode,
            addr: args.addr,
            workers: args
                .workers
                .map_or_else(|| default_workers(args.mode), |workers| workers as usize),
            max_connections: args.max_connections as usize,
            queue_capacity: args.queue as usize,
            when_full: match args.when_full {
                WhenFullArg::Block => WhenFull::Block,
                WhenFullArg::Reject => WhenFull::Reject,
            },
            backlog: args.backlog,
            defer_accept: !args.no_defer_accept,
            reuse_port: args.reuseport,
            connection: ConnectionSettings {
                delay: args.delay,
                keep_alive: args.keep_alive,
                read_timeout: args.read_timeout,
            },
        }
    }
}

/// Five workers for a pool (the classic experiment's); one event loop per
/// CPU, as nginx's `worker_processes auto`.
pub fn default_workers(mode: Mode) -> usize {
    if mode.is_event_loop() {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        5
    }
}

/// Binds, prints the address, serves until SIGINT/SIGTERM, prints the
/// summary.
pub fn run(config: Config) -> anyhow::Result<()> {
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
    if config.mode.is_event_loop() {
        details += &format!(
            ", {} event loop{}, up to {} connections each",
            config.workers,
            if config.workers == 1 { "" } else { "s" },
            config.max_connections
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
