//! The cloud node: serves the larger full-precision model behind the edge, with the same native
//! and Open Inference Protocol services.
//!
//! Invariant: the cloud knows nothing of the edge, its router or the link; to it the edge is
//! just another client.
#![forbid(unsafe_code)]
