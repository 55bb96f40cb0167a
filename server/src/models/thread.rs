//! A thread per connection: concurrency without a bound.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::http::{Buffers, serve_connection};
use crate::listener::{StopHandle, accept};
use crate::stats::{Lane, Outcome, ServeSummary, Tally};
use crate::{Config, ServerError};

pub(super) fn run(
    config: &Config,
    listener: &TcpListener,
    stop: &StopHandle,
) -> Result<ServeSummary, ServerError> {
    let started = Instant::now();
    let tally = Arc::new(Tally::new());
    let mut live: Vec<JoinHandle<()>> = Vec::new();
    let mut spawned = 0u64;
    let mut peak = 0usize;
    let running = Arc::new(AtomicUsize::new(0));
    let result = loop {
        let stream = match accept(listener, stop) {
            Ok(Some(stream)) => stream,
            Ok(None) => break Ok(()),
            Err(e) => break Err(ServerError::os("accept")(e)),
        };
        // Join the threads that have finished, so neither their handles nor
        // their stacks pile up on a long run.
        let (done, unfinished): (Vec<_>, Vec<_>) = live.into_iter().partition(|t| t.is_finished());
        live = unfinished;
        done.into_iter().for_each(|t| {
            let _ = t.join();
        });
        let settings = config.connection.clone();
        let thread_tally = Arc::clone(&tally);
        let thread_running = Arc::clone(&running);
        let active = stop.active();
        peak = peak.max(running.fetch_add(1, Ordering::Relaxed) + 1);
        let spawn = std::thread::Builder::new()
            .name(format!("conn-{spawned}"))
            .spawn(move || {
                let mut buffers = Buffers::default();
                serve_connection(stream, &settings, &thread_tally, &mut buffers, None);
                thread_running.fetch_sub(1, Ordering::Relaxed);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        match spawn {
            Ok(handle) => {
                live.push(handle);
                spawned += 1;
            }
            Err(e) => {
                running.fetch_sub(1, Ordering::Relaxed);
                stop.done();
                // The closure, and so the connection, is dropped: the client
                // sees a close, and we keep serving the others.
                eprintln!("tracebench serve: cannot start a thread: {e}");
                tally.record(Outcome::Io);
            }
        }
    };
    for handle in live {
        let _ = handle.join();
    }
    result?;
    Ok(ServeSummary {
        mode: config.mode.name().into(),
        elapsed: started.elapsed(),
        lanes: vec![Lane {
            name: "connection threads".into(),
            counts: tally.snapshot(),
        }],
        notes: vec![format!(
            "{spawned} threads started, at most {peak} at once, all joined"
        )],
    })
}
