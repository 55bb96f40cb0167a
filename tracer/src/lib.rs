//! The ptrace engine of tracebench.
//!
//! This crate will hold the tracer described in `docs/ARCHITECTURE.md`: one
//! thread that owns every ptrace call, syscall decoding, the event model and
//! the trace file. It is empty on purpose until that work lands (issue 3);
//! nothing here pretends to trace.
#![warn(missing_docs)]
