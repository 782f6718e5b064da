//! The library half of the `edgeinfer` command line: what the binary's commands share with the
//! end-to-end tests.
//!
//! - [`local`]: cloud and edge in one process on the shipped models (`up`, `sweep`, tests).
//! - [`floor`]: a gRPC server that does no work, the floor every serving figure is a ratio to.
//! - [`hard_examples`]: the edge's hard-example store as a training data set (`hard-examples
//!   export`, `train --hard-examples`).
//! - [`adapt`]: one turn of adaptation against a running edge (`edgeinfer adapt`), and its
//!   seeded distribution shift.
#![forbid(unsafe_code)]

pub mod adapt;
pub mod floor;
pub mod hard_examples;
pub mod local;
