//! The concurrency models. Each blocking one accepts with
//! [`crate::listener::accept`] until stopped and serves with
//! [`crate::http::serve_connection`]; they differ only in who runs that
//! function and how a connection gets there. The event loop accepts with
//! [`crate::listener::try_accept`] and serves [`crate::session::Session`]s.

mod event_loop;

pub(crate) use event_loop::probe_io_uring;
mod fork;
mod pool;
mod thread;

use std::net::TcpListener;
use std::time::Instant;

use crate::http::{Buffers, serve_connection};
use crate::listener::{StopHandle, accept};
use crate::stats::{Lane, ServeSummary, Tally};
use crate::{Config, Mode, ServerError};

/// Serves on `listener` (and, for event loops with `--reuseport`, on
/// `loop_listeners`: those of loops 1 and up) until `stop`.
pub(crate) fn run(
    config: &Config,
    listener: &TcpListener,
    loop_listeners: Vec<TcpListener>,
    stop: &StopHandle,
) -> Result<ServeSummary, ServerError> {
    match config.mode {
        Mode::Sync => run_sync(config, listener, stop),
        Mode::Fork => fork::run(config, listener, stop),
        Mode::Thread => thread::run(config, listener, stop),
        Mode::PoolSpin | Mode::PoolFutex | Mode::PoolStd => pool::run(config, listener, stop),
        Mode::Epoll | Mode::IoUring => event_loop::run(config, listener, loop_listeners, stop),
    }
}

/// One connection at a time, on the thread that accepts: the baseline that
/// serialises every delay.
fn run_sync(
    config: &Config,
    listener: &TcpListener,
    stop: &StopHandle,
) -> Result<ServeSummary, ServerError> {
    let started = Instant::now();
    let tally = Tally::new();
    let mut buffers = Buffers::default();
    while let Some(stream) = accept(listener, stop).map_err(ServerError::os("accept"))? {
        serve_connection(stream, &config.connection, &tally, &mut buffers, None);
        stop.done();
    }
    Ok(ServeSummary {
        mode: config.mode.name().into(),
        elapsed: started.elapsed(),
        lanes: vec![Lane {
            name: "main".into(),
            counts: tally.snapshot(),
        }],
        notes: vec![],
    })
}
