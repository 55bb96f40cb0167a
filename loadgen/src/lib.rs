//! The load generator of tracebench: like wrk or oha, a few threads each
//! running an event loop over many connections, recording every latency in
//! an HdrHistogram (so memory stays bounded), and exporting histograms in
//! the formats HdrHistogram's tools read.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::sync::atomic::AtomicBool;
//! use tracebench_loadgen::{LoadConfig, StopAfter, Target, run};
//! let mut config = LoadConfig::new(Target::parse("http://127.0.0.1:3000/")?);
//! config.stop = StopAfter::Requests(1000);
//! let report = run(&config, Arc::new(AtomicBool::new(false)))?;
//! println!("p99 = {} ns", report.stats.latency.value_at_quantile(0.99));
//! # Ok::<(), tracebench_loadgen::LoadError>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
mod engine;
pub mod export;
pub mod hlog;
pub mod outcomes;
pub mod report;
pub mod response;
pub mod stats;
pub mod tls;

pub use config::{LoadConfig, StopAfter, Target};
pub use engine::{Report, SNAPSHOT_INTERVAL, Snapshot, run, run_observed};

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The URL is not one we can load.
    #[error("bad URL {0}")]
    BadUrl(String),
    /// A setting is out of range.
    #[error("{0}")]
    BadConfig(String),
    /// A system call the engine needs failed.
    #[error("{0}")]
    Io(&'static str, #[source] std::io::Error),
    /// https cannot be set up (no trusted certificates, a bad --cacert).
    #[error("{0}")]
    Tls(String),
    /// A worker thread panicked (a bug).
    #[error("a load thread panicked")]
    WorkerPanicked,
}
