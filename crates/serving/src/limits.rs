//! The limits of a node's listeners, and the gate that bounds inference requests in progress.
//!
//! Every limit is a setting ([`crate::flags::NodeFlags`]); past one, a request is refused at
//! once with a status that names it, so that nothing a client sends makes the node grow
//! without bound: message and body sizes, requests in progress, HTTP/2 streams per connection,
//! frames in flight per stream, call and connection time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::metrics::Metrics;
use crate::server::DEFAULT_MAX_MESSAGE_BYTES;

/// Limits of a node's gRPC and HTTP listeners.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Largest gRPC message, and HTTP body, accepted.
    pub max_message_bytes: usize,
    /// Most inference requests in progress on the node.
    pub max_concurrent_requests: usize,
    /// Most HTTP/2 streams a client may open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Most frames of one `InferStream` answered at once.
    pub max_stream_frames: usize,
    /// Most time any call may take, whatever its deadline.
    pub request_timeout: Duration,
    /// HTTP/2 keep-alive interval and timeout; TLS handshake and HTTP/1 header timeout.
    pub connection_timeout: Duration,
}

/// Default of [`ServerLimits::max_concurrent_requests`].
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 4096;
/// Default of [`ServerLimits::max_streams_per_connection`].
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 2048;
/// Default of [`ServerLimits::max_stream_frames`].
pub const DEFAULT_MAX_STREAM_FRAMES: usize = 64;
/// Default of [`ServerLimits::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`ServerLimits::connection_timeout`].
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(20);

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            max_stream_frames: DEFAULT_MAX_STREAM_FRAMES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
        }
    }
}

/// Admits at most `limit` inference requests at once, refusing the next at once. Shared by
/// a node's native, OIP and HTTP front ends. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Gate {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl Gate {
    /// A gate admitting `limit` requests at once.
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// A place for one request, held until it is answered; RESOURCE_EXHAUSTED naming the
    /// limit when every place is taken, counted and logged as a refusal in `metrics`.
    pub fn enter(&self, metrics: &Metrics) -> Result<OwnedSemaphorePermit, Status> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            let status = Status::resource_exhausted(format!(
                "{} inference requests are in progress, this node's limit \
                 (--max-concurrent-requests); retry later",
                self.limit
            ));
            metrics.refused(&status);
            status
        })
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new(ServerLimits::default().max_concurrent_requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_refuses_past_its_limit_counts_it_and_reopens() {
        let metrics = Metrics::unregistered(&edgeinfer_model::ModelMetadata {
            name: "m".into(),
            version: "1".into(),
            task: "t".into(),
            architecture: "a".into(),
            input_shape: vec![1],
            labels: vec!["x".into()],
            temperature: 1.0,
            test_accuracy: 0.0,
            quantization: "f32".into(),
        });
        let gate = Gate::new(2);
        let a = gate.enter(&metrics).unwrap();
        let _b = gate.enter(&metrics).unwrap();
        let refused = gate.enter(&metrics).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("--max-concurrent-requests"),
            "{}",
            refused.message()
        );
        let counted = metrics
            .failures
            .get_or_create(&crate::metrics::CodeLabels {
                code: "RESOURCE_EXHAUSTED",
            })
            .get();
        assert_eq!(counted, 1, "the refusal is counted");
        drop(a);
        assert!(gate.enter(&metrics).is_ok(), "a freed place is given again");
    }
}
