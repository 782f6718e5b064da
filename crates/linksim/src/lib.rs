//! A simulated 5G / LTE link between the edge and the cloud: per-direction FIFO serialization at
//! a bandwidth, heavy-tailed one-way delay, Gilbert-Elliott bursty loss with link-layer
//! retransmission, handover interruptions and Mahimahi trace replay; deterministic for a seed,
//! on tokio time, and usable as a tower layer on a gRPC client channel.
//!
//! Invariant: this crate knows nothing of models, MNIST or the edgeinfer API; it sees messages
//! only as sizes in bytes.
#![forbid(unsafe_code)]
