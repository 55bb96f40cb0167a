//! The server that tracebench traces: a small HTTP/1.1 server whose
//! concurrency model is chosen at start.
//!
//! The models follow the classic progression of a hand-written web server:
//! one request at a time ([`Mode::Sync`]), a process per connection
//! ([`Mode::Fork`]), a thread per connection ([`Mode::Thread`]), and a pool
//! of workers fed by one acceptor through a bounded queue, guarded by a spin
//! lock that never sleeps ([`Mode::PoolSpin`]), by our own futex mutex and
//! condition variable ([`Mode::PoolFutex`], see [`sync`]), or by std's
//! ([`Mode::PoolStd`]). The blocking models serve connections the same
//! way ([`http::serve_connection`]), so what differs under a tracer is only
//! the concurrency. Then the step servers people run took next: event
//! loops, each serving many connections on one thread with non-blocking
//! sockets and timers instead of sleeps ([`Mode::Epoll`]), speaking the
//! same protocol through a state machine that does no I/O of its own, and
//! the same on io_uring ([`Mode::IoUring`]).
//!
//! ```no_run
//! use tracebench_server::{Config, Server};
//! let server = Server::bind(Config::default())?;
//! println!("listening on {}", server.local_addr()?);
//! let summary = server.run()?; // until StopHandle::stop or SIGINT
//! print!("{summary}");
//! # Ok::<(), tracebench_server::ServerError>(())
//! ```
#![warn(missing_docs)]

pub mod futex;
pub mod http;
pub mod idle;
mod listener;
mod models;
mod session;
pub mod sleep;
pub mod stats;
pub mod sync;

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use listener::{StopHandle, stop_on_signals};
pub use stats::{Outcome, ServeSummary};

/// How the server runs connections concurrently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// One connection at a time on the main thread.
    Sync,
    /// fork(2) per connection; the parent reaps every child.
    Fork,
    /// A new thread per connection.
    Thread,
    /// A worker pool whose workers poll the queue without ever sleeping.
    PoolSpin,
    /// A worker pool on our futex mutex and condition variable.
    #[default]
    PoolFutex,
    /// A worker pool on std's Mutex and Condvar.
    PoolStd,
    /// One epoll(7) event loop per worker, many connections each.
    Epoll,
    /// The same on io_uring(7): one ring per worker, no readiness step.
    IoUring,
}

impl Mode {
    /// Every mode, in the order of the classic progression.
    pub const ALL: [Mode; 8] = [
        Mode::Sync,
        Mode::Fork,
        Mode::Thread,
        Mode::PoolSpin,
        Mode::PoolFutex,
        Mode::PoolStd,
        Mode::Epoll,
        Mode::IoUring,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Fork => "fork",
            Mode::Thread => "thread",
            Mode::PoolSpin => "pool-spin",
            Mode::PoolFutex => "pool-futex",
            Mode::PoolStd => "pool-std",
            Mode::Epoll => "epoll",
            Mode::IoUring => "io-uring",
        }
    }

    /// Whether the model has a fixed set of workers fed by a queue.
    pub fn is_pool(self) -> bool {
        matches!(self, Mode::PoolSpin | Mode::PoolFutex | Mode::PoolStd)
    }

    /// Whether the model runs event loops: `--workers` of them, each
    /// serving many connections on one thread.
    pub fn is_event_loop(self) -> bool {
        matches!(self, Mode::Epoll | Mode::IoUring)
    }

    /// Whether `--workers` means anything to the model.
    pub fn has_workers(self) -> bool {
        self.is_pool() || self.is_event_loop()
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = ServerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| ServerError::UnknownMode(s.to_owned()))
    }
}

/// What the acceptor does when a pool's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Wait for room (on the queue's futex, in `pool-futex`); new
    /// connections pile up in the kernel's listen backlog meanwhile.
    #[default]
    Block,
    /// Answer 503 at once and close.
    Reject,
}

/// Everything that shapes a server run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The concurrency model.
    pub mode: Mode,
    /// Where to listen; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Workers in a pool, or event loops (ignored by other modes).
    pub workers: usize,
    /// Connections one event loop holds at once, like nginx's
    /// `worker_connections`; at the limit it first closes an idle
    /// keep-alive connection, then acts as [`Config::when_full`] says.
    pub max_connections: usize,
    /// Connections a pool's queue holds.
    pub queue_capacity: usize,
    /// What happens when the queue is full.
    pub when_full: WhenFull,
    /// The kernel's listen backlog.
    pub backlog: i32,
    /// Let the kernel hand over a connection only once its request has
    /// started to arrive (TCP_DEFER_ACCEPT), waiting at most the read
    /// timeout for it.
    pub defer_accept: bool,
    /// Event loops (epoll): a listening socket per loop with SO_REUSEPORT,
    /// the kernel spreading connections over them by a hash of the
    /// addresses, instead of one socket shared with EPOLLEXCLUSIVE.
    pub reuse_port: bool,
    /// How each connection is served.
    pub connection: http::ConnectionSettings,
}

impl Config {
    pub(crate) fn bind_options(&self) -> listener::BindOptions {
        listener::BindOptions {
            backlog: self.backlog,
            defer_accept: self.defer_accept.then_some(self.connection.read_timeout),
            reuse_port: self.reuse_port,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::default(),
            addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            workers: 5,
            max_connections: 1024,
            queue_capacity: 64,
            when_full: WhenFull::default(),
            backlog: 1024,
            defer_accept: true,
            reuse_port: false,
            connection: http::ConnectionSettings {
                delay: Duration::ZERO,
                keep_alive: false,
                read_timeout: Duration::from_secs(5),
            },
        }
    }
}

/// Why the server could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `--mode` named no model.
    #[error(
        "unknown mode {0:?} (expected one of sync, fork, thread, pool-spin, pool-futex, pool-std, epoll, io-uring)"
    )]
    UnknownMode(String),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    InvalidConfig(String),
    /// bind(2) or listen(2) failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The kernel lacks what the mode needs (io_uring disabled or too old).
    #[error("{0}")]
    Unsupported(String),
    /// accept(2), fork(2), sigaction(2) or thread creation failed.
    #[error("{what}")]
    Os {
        /// What we were doing.
        what: &'static str,
        /// What the kernel said.
        source: std::io::Error,
    },
}

impl ServerError {
    pub(crate) fn os(what: &'static str) -> impl FnOnce(std::io::Error) -> ServerError {
        move |source| ServerError::Os { what, source }
    }
}

/// A bound server, ready to [`Server::run`].
#[derive(Debug)]
pub struct Server {
    config: Config,
    listener: Arc<TcpListener>,
    /// With `--reuseport`, the listening sockets of loops 1 and up, bound
    /// here with the first so that no connection made once the address is
    /// announced lands on the first socket only for want of the others.
    loop_listeners: Vec<TcpListener>,
    stop: StopHandle,
}

impl Server {
    /// Checks `config` and binds its address.
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        if config.mode.has_workers() && config.workers == 0 {
            return Err(ServerError::InvalidConfig(
                "--workers must be at least 1".into(),
            ));
        }
        if config.max_connections == 0 {
            return Err(ServerError::InvalidConfig(
                "--max-connections must be at least 1".into(),
            ));
        }
        if config.queue_capacity == 0 {
            return Err(ServerError::InvalidConfig(
                "--queue must be at least 1".into(),
            ));
        }
        if config.backlog < 1 {
            return Err(ServerError::InvalidConfig(
                "--backlog must be at least 1".into(),
            ));
        }
        if config.connection.delay > http::MAX_URL_DELAY {
            return Err(ServerError::InvalidConfig(format!(
                "--delay must be at most {}s, as for ?delay= in a request",
                http::MAX_URL_DELAY.as_secs()
            )));
        }
        if config.connection.read_timeout.is_zero() {
            return Err(ServerError::InvalidConfig(
                "--read-timeout must be more than 0".into(),
            ));
        }
        if config.reuse_port && !config.mode.is_event_loop() {
            return Err(ServerError::InvalidConfig(
                "--reuseport is for the event loops, epoll and io-uring (a listening socket per loop)"
                    .into(),
            ));
        }
        if config.mode == Mode::IoUring {
            models::probe_io_uring()?;
        }
        let listener = listener::bind(config.addr, &config.bind_options()).map_err(|source| {
            ServerError::Bind {
                addr: config.addr,
                source,
            }
        })?;
        let loop_listeners = if config.reuse_port {
            let addr = listener
                .local_addr()
                .map_err(ServerError::os("getsockname"))?;
            (1..config.workers)
                .map(|_| {
                    listener::bind(addr, &config.bind_options())
                        .map_err(|source| ServerError::Bind { addr, source })
                })
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let listener = Arc::new(listener);
        let stop = StopHandle::new(Arc::clone(&listener));
        Ok(Server {
            config,
            listener,
            loop_listeners,
            stop,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener
            .local_addr()
            .map_err(ServerError::os("getsockname"))
    }

    /// The settings the server runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A handle that stops this server from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Serves until stopped, then drains queued and in-flight connections
    /// and returns what was done.
    pub fn run(self) -> Result<ServeSummary, ServerError> {
        let result = models::run(
            &self.config,
            &self.listener,
            self.loop_listeners,
            &self.stop,
        );
        listener::forget_signal_listener(self.listener.as_raw_fd());
        result
    }
}
