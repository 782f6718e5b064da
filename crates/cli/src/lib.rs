//! The library half of the `edgeinfer` command line: what the binary's commands share with the
//! end-to-end tests.
//!
//! - [`local`]: cloud and edge in one process on the shipped models (`up`, `sweep`, tests).
#![forbid(unsafe_code)]

pub mod local;
