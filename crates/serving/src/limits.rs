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

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_concurrent_requests: 4096,
            max_streams_per_connection: 2048,
            max_stream_frames: 64,
            request_timeout: Duration::from_secs(30),
            connection_timeout: Duration::from_secs(20),
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
    /// limit when every place is taken.
    pub fn enter(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} inference requests are in progress, this node's limit \
                 (--max-concurrent-requests); retry later",
                self.limit
            ))
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
    fn the_gate_refuses_past_its_limit_and_reopens() {
        let gate = Gate::new(2);
        let a = gate.enter().unwrap();
        let _b = gate.enter().unwrap();
        let refused = gate.enter().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("--max-concurrent-requests"),
            "{}",
            refused.message()
        );
        drop(a);
        assert!(gate.enter().is_ok(), "a freed place is given again");
    }
}
