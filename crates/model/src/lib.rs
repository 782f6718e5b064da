//! Models for edgeinfer: loading MNIST from IDX files, the edge MLP and cloud CNN, training,
//! temperature calibration, quantization to GGUF, model files with their metadata, and the
//! `Classifier` interface the servers call.
//!
//! Invariant: this crate knows nothing of gRPC, routing or links. The servers see a model only
//! through its metadata (input shape, labels) and a batch-in, probabilities-out interface.
#![forbid(unsafe_code)]
