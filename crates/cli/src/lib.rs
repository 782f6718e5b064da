//! The library half of the `edgeinfer` command line: what the binary's commands share with the
//! end-to-end tests.
//!
//! - [`local`]: cloud and edge in one process on the shipped models (`up`, `sweep`, tests).
//! - [`floor`]: a gRPC server that does no work, the floor every serving figure is a ratio to.
#![forbid(unsafe_code)]

pub mod floor;
pub mod local;
