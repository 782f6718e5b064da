//! The one error type of loading and running models.

use std::path::PathBuf;

/// Why a model could not be loaded, saved, trained or run. Messages name the file, key or
/// tensor at fault, because they end up in front of an operator deploying a model file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The cause is in the message rather than `source()`, so that logging the error alone
    /// says why.
    #[error("cannot {action} {path}: {cause}")]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: unknown model file extension (expected .safetensors or .gguf)")]
    UnknownExtension { path: PathBuf },
    #[error("not a valid {format} model file: {detail}")]
    Format {
        format: &'static str,
        detail: String,
    },
    #[error("{format} model file is truncated: {detail}")]
    Truncated {
        format: &'static str,
        detail: String,
    },
    #[error("model metadata {0} is missing")]
    MissingMetadata(String),
    #[error("unknown model metadata key {0} (written by a newer edgeinfer?)")]
    UnknownMetadata(String),
    #[error("model metadata {key} is invalid: {detail}")]
    InvalidMetadata { key: String, detail: String },
    #[error("unknown architecture {0:?} (known: {known})", known = crate::Architecture::known_ids())]
    UnknownArchitecture(String),
    #[error("tensor {0} is missing from the model file")]
    MissingTensor(String),
    #[error("unexpected tensor {name} in a {architecture} model file")]
    UnexpectedTensor { name: String, architecture: String },
    #[error("tensor {name} has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("tensor {name} has dtype {actual}, expected {expected}")]
    TensorDtype {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("tensor {name} is invalid: {detail}")]
    InvalidTensor { name: String, detail: String },
    #[error("the model computes non-finite outputs ({0}): its weights are unusable")]
    NonFiniteOutput(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Data(#[from] crate::mnist::MnistError),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}
