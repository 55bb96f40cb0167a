//! Why the dashboard or a replay could not run: one variant per thing that
//! failed, each a one-line message (the binary prints it after
//! `tracebench: `).
//!
//! The underlying errors are kept in fields named `error`, not `source`:
//! their text is already part of the message, and the binary prints an
//! error's whole chain, so exposing them as sources would say it twice.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use tracebench_loadgen::LoadError;
use tracebench_loadgen::hlog::LogError;
use tracebench_trace::format::TraceFileError;

/// Why the dashboard (live or replayed) could not run.
#[derive(Debug, thiserror::Error)]
pub enum DashError {
    /// SIGINT, SIGTERM and SIGHUP could not be watched.
    #[error("cannot catch signals: {0}")]
    Signals(io::Error),
    /// The terminal could not be taken over (raw mode, alternate screen).
    #[error("cannot set up the terminal: {0}")]
    TerminalSetup(io::Error),
    /// Drawing or reading the terminal failed.
    #[error("terminal: {0}")]
    Terminal(io::Error),
    /// The recording's directory already holds files.
    #[error(
        "{} already holds files, and a recording is never written over: choose another directory",
        .0.display()
    )]
    RecordingNotEmpty(PathBuf),
    /// The recording's directory or one of its files could not be made
    /// (or the directory is not safe to write into).
    #[error(transparent)]
    Files(#[from] tracebench_files::FileError),
    /// The recording's directory could not be read.
    #[error("cannot read {}: {error}", path.display())]
    ReadRecording {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A directory or file of the recording could not be created.
    #[error("cannot create {}: {error}", path.display())]
    CreateRecording {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The recording's trace file could not be created.
    #[error("cannot create {}: {error}", path.display())]
    CreateTrace {
        /// The trace file.
        path: PathBuf,
        /// Why.
        error: TraceFileError,
    },
    /// The recording's settings.json could not be written.
    #[error("cannot write {}: {error}", path.display())]
    WriteSettings {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// No port was free for our server.
    #[error("no free port on 127.0.0.1: {0}")]
    NoFreePort(io::Error),
    /// A thread of the dashboard could not be started.
    #[error("cannot start the {name}: {error}")]
    Thread {
        /// Which thread: `tracer thread`, `load thread`, `output reader`.
        name: &'static str,
        /// Why.
        error: io::Error,
    },
    /// The capture could not start (spawn or attach).
    #[error("cannot trace the server: {0}")]
    TracerStart(String),
    /// The tracer thread ended before saying whether the capture started.
    #[error("the tracer thread died")]
    TracerDied,
    /// The load's URL is not one the load generator can use.
    #[error("--url: {0}")]
    Url(LoadError),
    /// The traced server exited before it listened.
    #[error("the server exited before listening on {addr}{said}")]
    ExitedBeforeListening {
        /// Where it was to listen.
        addr: SocketAddr,
        /// Its last line of output as `: line`, or nothing.
        said: String,
    },
    /// The traced server did not listen in time.
    #[error("the server did not listen on {addr} within 10 s{said}")]
    DidNotListen {
        /// Where it was to listen.
        addr: SocketAddr,
        /// Its last line of output as `: line`, or nothing.
        said: String,
    },
    /// The pipe for the program's output could not be made.
    #[error("cannot make a pipe for the program's output: {0}")]
    OutputPipe(io::Error),
    /// A replay's trace file could not be opened.
    #[error("cannot read {}: {error}", path.display())]
    OpenTrace {
        /// The trace file.
        path: PathBuf,
        /// Why.
        error: TraceFileError,
    },
    /// A replay's trace file could not be read through.
    #[error("reading {}: {error}", path.display())]
    ReadTrace {
        /// The trace file.
        path: PathBuf,
        /// Why.
        error: TraceFileError,
    },
    /// A replay's latency log could not be read.
    #[error("cannot read {}: {error}", path.display())]
    OpenLatencyLog {
        /// The latency log.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A replay's latency log is no interval log.
    #[error("reading {}: {error}", path.display())]
    ReadLatencyLog {
        /// The latency log.
        path: PathBuf,
        /// Why.
        error: LogError,
    },
}
