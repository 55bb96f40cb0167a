//! The terminal dashboard of tracebench.
//!
//! This crate will hold the ratatui application: a model updated by actions,
//! widgets that only draw it, and live and replay sources behind one
//! interface (issue 5). It is empty on purpose until then; nothing here
//! pretends to draw.
#![warn(missing_docs)]
