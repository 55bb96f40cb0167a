//! The ways a tracebench trace is written out: strace's text
//! ([`strace`], with the argument renderers of [`render`]), one JSON object
//! per line ([`jsonl`]), Chrome's trace-event JSON for Perfetto
//! ([`chrome`]), and the `-c` tables ([`summary`]).

pub mod chrome;
pub mod jsonl;
pub mod render;
pub mod strace;
pub mod summary;
