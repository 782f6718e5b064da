//! Models for edgeinfer: loading MNIST from IDX files, the edge MLP and cloud CNN, training,
//! temperature calibration, quantization to GGUF, model files with their metadata, and the
//! `Classifier` interface the servers call.
//!
//! Invariant: this crate knows nothing of gRPC, routing or links. The servers see a model only
//! through its metadata (input shape, labels) and a batch-in, probabilities-out interface.
//!
//! # Layout
//!
//! - [`classifier`](Classifier): the `Classifier` trait the servers use, [`load_classifier`]
//!   (by extension) and [`load_classifier_bytes`] (untrusted bytes, for uploads and fuzzing),
//!   and [`Model`], the implementation over candle.
//! - [`metadata`](ModelMetadata): what a model file says about itself and the rules it obeys.
//! - `files`: the `.safetensors` (f32, int8) and `.gguf` (q8_0 / q4_0) formats, every check
//!   that can name a problem, deterministic writing.
//! - [`nets`]: the two networks (`EdgeMlp`, `CloudCnn`), their parameter lists, and the
//!   quantized MLPs (candle's q8_0 / q4_0 kernels, and the int8 one).
//! - [`cnn_gemm`]: the cloud CNN's serving forward pass, each convolution one GEMM over the
//!   whole batch.
//! - [`int8`]: int8 linear layers as a candle custom op, over SIMD kernels chosen at run time
//!   (`int8::kernels`, the crate's only `unsafe` code).
//! - [`mnist`]: the IDX loader and the validation split.
//! - [`train`]: seeded training with candle-nn, [`augment`] its random image distortions;
//!   [`calibrate`]: temperature scaling, ECE, NLL;
//!   [`eval`]: accuracy, calibration and latency of a model, and the calibration step.
//! - [`ood`]: how unlike the training inputs an input is (a probabilistic PCA of them, fitted
//!   at training and carried in the model file), with a threshold from the validation split.
//! - [`threading`]: why and how each forward pass stays on its caller's thread, and the two
//!   environment settings a serving process needs.
//!
//! # Serving notes
//!
//! `classify` is correct for any batch size of at least 1 and costs one allocation-light
//! candle pass; on one thread here, the edge MLP takes ~7.5 us at batch 1 in f32, ~2.3 us in
//! int8, ~14 us in q8_0 (candle's quantized kernel), and cloud-cnn ~105-120 us per image at
//! either batch size (models/MODELS.md, BENCHMARKS.md). Set the environment of
//! [`threading::env_defaults`] before the first thread starts, or passes are several times
//! slower.
// `deny`, not `forbid`: the int8 kernels (`int8::kernels`, one module) need SIMD intrinsics.
#![deny(unsafe_code)]

pub mod augment;
pub mod calibrate;
mod classifier;
pub mod cnn_gemm;
mod error;
pub mod eval;
mod files;
pub mod int8;
mod metadata;
pub mod mnist;
pub mod nets;
pub mod ood;
pub mod threading;
pub mod train;

pub use classifier::{Classifier, Model, load_classifier, load_classifier_bytes, softmax_in_place};
pub use error::ModelError;
pub use files::ModelFormat;
pub use metadata::ModelMetadata;
pub use nets::Architecture;
