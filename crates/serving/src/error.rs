//! Serving errors and their one mapping to gRPC status codes. A client's mistake is
//! INVALID_ARGUMENT or NOT_FOUND with a message naming the field; overload is
//! RESOURCE_EXHAUSTED; only the server's own faults are INTERNAL. The OIP HTTP front end
//! answers through the gRPC OIP service, so its HTTP statuses derive from those codes by one
//! table, [`http_status`], and never from the errors directly.

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
    /// The model exists but not in the version asked for.
    #[error(
        "model_version: {model:?} has no version {requested:?}; this node serves version {served:?}"
    )]
    UnknownVersion {
        /// The model.
        model: String,
        /// The version asked for.
        requested: String,
        /// The version served.
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
            ServeError::UnknownModel { .. } | ServeError::UnknownVersion { .. } => {
                Status::not_found(message)
            }
            ServeError::Batch(
                BatchError::QueueFull(_)
                | BatchError::QueueTooLong { .. }
                | BatchError::WouldMiss { .. }
                | BatchError::Expired(_),
            ) => Status::resource_exhausted(message),
            ServeError::Batch(BatchError::Stopped) => Status::unavailable(message),
            ServeError::Batch(BatchError::Model(_)) => Status::internal(message),
            ServeError::Batch(BatchError::Overflow) => Status::invalid_argument(message),
            ServeError::DeadlineExceeded => Status::deadline_exceeded(message),
            ServeError::Unauthenticated(_) => Status::unauthenticated(message),
        }
    }
}

/// The HTTP status that answers a gRPC code on the OIP HTTP listener: 400 for a bad request,
/// 404 for an unknown model, 401 for a missing or wrong token, 429 when the queue is full, 503
/// when the node is stopping, 504 when the budget or deadline passed (the status KServe and
/// Triton clients expect for each case).
pub fn http_status(code: tonic::Code) -> http::StatusCode {
    use http::StatusCode as H;
    use tonic::Code as G;
    match code {
        G::Ok => H::OK,
        G::InvalidArgument | G::OutOfRange | G::FailedPrecondition => H::BAD_REQUEST,
        G::NotFound => H::NOT_FOUND,
        G::AlreadyExists | G::Aborted => H::CONFLICT,
        G::Unauthenticated => H::UNAUTHORIZED,
        G::PermissionDenied => H::FORBIDDEN,
        G::ResourceExhausted => H::TOO_MANY_REQUESTS,
        G::Unavailable => H::SERVICE_UNAVAILABLE,
        G::DeadlineExceeded => H::GATEWAY_TIMEOUT,
        G::Cancelled => H::from_u16(499).unwrap_or(H::BAD_REQUEST),
        G::Unimplemented => H::NOT_IMPLEMENTED,
        G::Unknown | G::Internal | G::DataLoss => H::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn http_statuses_follow_the_grpc_codes() {
        let cases = [
            (ServeError::Input(InputError::Missing), 400),
            (
                ServeError::UnknownModel {
                    requested: "x".into(),
                    served: "mnist".into(),
                },
                404,
            ),
            (ServeError::Batch(BatchError::QueueFull(3)), 429),
            (ServeError::Batch(BatchError::Stopped), 503),
            (ServeError::Batch(BatchError::Overflow), 400),
            (ServeError::DeadlineExceeded, 504),
            (ServeError::Unauthenticated("no".into()), 401),
        ];
        for (e, want) in cases {
            let shown = e.to_string();
            assert_eq!(
                http_status(Status::from(e).code()).as_u16(),
                want,
                "{shown}"
            );
        }
    }

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
