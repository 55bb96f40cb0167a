//! The load generator of tracebench.
//!
//! This crate will hold the closed- and open-loop HTTP load engine and its
//! HdrHistogram recording (issue 4). It is empty on purpose until then;
//! nothing here pretends to send load.
#![warn(missing_docs)]
