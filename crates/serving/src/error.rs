//! Serving errors and their one mapping to gRPC status codes. A client's mistake is
//! INVALID_ARGUMENT or NOT_FOUND with a message naming the field; overload is
//! RESOURCE_EXHAUSTED; only the server's own faults are INTERNAL.

use tonic::Status;

use crate::batcher::BatchError;
use crate::input::InputError;

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The input is malformed.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A request field other than the input is malformed.
    #[error("{field}: {message}")]
    Field {
        /// The field.
        field: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// No such model on this node.
    #[error("model: unknown model {requested:?}; this node serves: {served}")]
    UnknownModel {
        /// The name asked for.
        requested: String,
        /// Names this node serves.
        served: String,
    },
    /// The model's queue is full, or the model failed.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The request's budget or deadline passed before it could be answered.
    #[error("the request's deadline passed before an answer was ready")]
    DeadlineExceeded,
    /// The upstream refused the caller's credentials.
    #[error("{0}")]
    Unauthenticated(String),
}

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Self {
        let message = e.to_string();
        match e {
            ServeError::Input(_) | ServeError::Field { .. } => Status::invalid_argument(message),
            ServeError::UnknownModel { .. } => Status::not_found(message),
            ServeError::Batch(BatchError::QueueFull(_)) => Status::resource_exhausted(message),
            ServeError::Batch(BatchError::Stopped) => Status::unavailable(message),
            ServeError::Batch(BatchError::Model(_)) => Status::internal(message),
            ServeError::DeadlineExceeded => Status::deadline_exceeded(message),
            ServeError::Unauthenticated(_) => Status::unauthenticated(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn user_mistakes_map_to_client_codes() {
        let s: Status = ServeError::Input(InputError::Missing).into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().starts_with("input:"));
        let s: Status = ServeError::UnknownModel {
            requested: "x".into(),
            served: "mnist".into(),
        }
        .into();
        assert_eq!(s.code(), Code::NotFound);
        let s: Status = ServeError::Batch(BatchError::QueueFull(3)).into();
        assert_eq!(s.code(), Code::ResourceExhausted);
    }
}
