//! Models for edgeinfer: loading MNIST from IDX files, the edge MLP and cloud CNN, training,
//! temperature calibration, quantization to GGUF, model files with their metadata, and the
//! `Classifier` interface the servers call.
//!
//! Invariant: this crate knows nothing of gRPC, routing or links. The servers see a model only
//! through its metadata (input shape, labels) and a batch-in, probabilities-out interface.
#![forbid(unsafe_code)]

pub mod calibrate;
mod classifier;
mod error;
pub mod eval;
mod files;
mod metadata;
pub mod mnist;
pub mod nets;
pub mod threading;
pub mod train;

pub use classifier::{Classifier, Model, load_classifier, load_classifier_bytes, softmax_in_place};
pub use error::ModelError;
pub use files::ModelFormat;
pub use metadata::ModelMetadata;
pub use nets::Architecture;
