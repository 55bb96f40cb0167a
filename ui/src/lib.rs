//! The terminal dashboard of tracebench: a live picture of our server at
//! work — which thread waits on which futex, who is in accept4, who sleeps —
//! next to the load generator's throughput and latency.
//!
//! Built like gitui and bottom: a model updated by actions
//! ([`model::App::update`], no I/O), widgets that only draw it
//! ([`view::draw`]), one key map that also draws the help ([`keys`]), and
//! two sources behind one interface ([`source::Source`], driven by one
//! terminal loop, [`terminal::drive`]): the live run ([`live`]), which turns the tracer's and the
//! load generator's feeds into actions, and a recording ([`replay`]).
//! Errors are [`DashError`]s; `e` writes files through [`export`].
#![warn(missing_docs)]

pub mod error;
pub mod export;
pub mod history;
pub mod keys;
pub mod live;
pub mod model;
pub mod replay;
pub mod source;
pub mod terminal;
pub mod view;

pub use error::DashError;
pub use live::{DashConfig, run};
pub use model::{Action, App};
