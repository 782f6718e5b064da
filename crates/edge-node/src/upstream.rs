//! The edge's client of the cloud. Every call crosses the simulated link (a tower layer on the
//! channel), so the edge sees the cloud as it would over a real radio: delayed, queued behind
//! other messages, sometimes lost. The cloud's host is re-resolved periodically and requests
//! are spread over every address it has (replicas behind one DNS name), so a scaled-out cloud
//! shares the load and a replica that goes away stops receiving calls.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use edgeinfer::v1::inference_client::InferenceClient;
use edgeinfer::v1::{InferRequest, InferResponse};
use edgeinfer_linksim::{Link, LinkService, Transit};
use http::Uri;
use tokio::sync::mpsc::Sender;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Why a cloud call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer before the deadline (slow or lossy link, handover, overloaded cloud).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The cloud refused or could not be reached.
    #[error("cloud unavailable: {0}")]
    Unavailable(String),
}

/// A bad cloud address.
#[derive(Debug, thiserror::Error)]
#[error("--cloud / EDGE_CLOUD {url:?}: {message}")]
pub struct AddressError {
    url: String,
    message: String,
}

/// A cloud answer and how it crossed the link.
#[derive(Debug)]
pub struct CloudAnswer {
    /// The cloud's response.
    pub response: InferResponse,
    /// The simulated crossing (absent only if the link layer did not report it).
    pub transit: Option<Transit>,
}

type Linked = LinkService<Channel>;

/// The cloud, reached through the link.
#[derive(Clone)]
pub struct Upstream {
    inference: InferenceClient<Linked>,
    health: HealthClient<Linked>,
    token: Option<MetadataValue<Ascii>>,
    address: String,
}

/// The host and port of a cloud URL such as `http://cloud:50052`.
pub fn parse_address(url: &str) -> Result<(String, u16), AddressError> {
    let err = |message: &str| AddressError {
        url: url.to_string(),
        message: message.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|_| err("not a URL; expected http://HOST:PORT"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(err(&format!(
                "scheme {other:?} is not supported; use http://"
            )));
        }
        None => return Err(err("missing scheme; expected http://HOST:PORT")),
    }
    let host = uri
        .host()
        .ok_or_else(|| err("missing host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((host, uri.port_u16().unwrap_or(50052)))
}

impl Upstream {
    /// A client of the cloud at `url` over `link`, re-resolving its host every `resolve_every`.
    /// Must be called inside a tokio runtime (it spawns the resolver).
    pub fn new(
        url: &str,
        link: Link,
        token: &str,
        resolve_every: Duration,
    ) -> Result<Self, AddressError> {
        let (host, port) = parse_address(url)?;
        let token = if token.is_empty() {
            None
        } else {
            Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| AddressError {
                        url: url.to_string(),
                        message: "the cloud token has characters not allowed in a header".into(),
                    })?,
            )
        };
        let (channel, changes) = Channel::balance_channel::<SocketAddr>(16);
        tokio::spawn(resolve_loop(host, port, changes, resolve_every));
        let linked = LinkService::new(channel, link);
        Ok(Self {
            inference: InferenceClient::new(linked.clone()),
            health: HealthClient::new(linked),
            token,
            address: url.to_string(),
        })
    }

    /// The configured address.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request
    }

    /// Asks the cloud, giving up after `timeout` (also sent as the gRPC deadline, so the cloud
    /// drops the work when the answer would come too late).
    pub async fn infer(
        &self,
        message: InferRequest,
        timeout: Duration,
    ) -> Result<CloudAnswer, CallError> {
        let request = self.request(message, timeout);
        let mut client = self.inference.clone();
        match tokio::time::timeout(timeout, client.infer(request)).await {
            Err(_) => Err(CallError::Timeout(timeout)),
            // The deadline passed: reported by the cloud (DEADLINE_EXCEEDED) or by the
            // client side (the link layer enforces grpc-timeout and yields CANCELLED, as a
            // real channel's timeout does).
            Ok(Err(status))
                if matches!(
                    status.code(),
                    tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                ) =>
            {
                Err(CallError::Timeout(timeout))
            }
            Ok(Err(status)) => Err(CallError::Unavailable(format!(
                "{:?}: {}",
                status.code(),
                status.message()
            ))),
            Ok(Ok(response)) => {
                let transit = response.extensions().get::<Transit>().copied();
                Ok(CloudAnswer {
                    response: response.into_inner(),
                    transit,
                })
            }
        }
    }

    /// A health check through the link: its round trip is nearly pure latency. Fails unless
    /// the cloud reports SERVING.
    pub async fn probe(&self, timeout: Duration) -> Result<Duration, CallError> {
        let started = tokio::time::Instant::now();
        let request = self.request(HealthCheckRequest::default(), timeout);
        let mut client = self.health.clone();
        match tokio::time::timeout(timeout, client.check(request)).await {
            Err(_) => Err(CallError::Timeout(timeout)),
            Ok(Err(status)) => Err(CallError::Unavailable(status.message().to_string())),
            Ok(Ok(r)) if r.get_ref().status == 1 => Ok(started.elapsed()),
            Ok(Ok(_)) => Err(CallError::Unavailable("the cloud is not serving".into())),
        }
    }
}

/// Keeps the balanced channel's endpoints equal to the addresses the host resolves to. A
/// failed look-up keeps the last known set: a name that briefly fails to resolve should not
/// empty the pool, and calls to an address that is really gone fail on their own.
async fn resolve_loop(
    host: String,
    port: u16,
    changes: Sender<Change<SocketAddr, Endpoint>>,
    every: Duration,
) {
    let mut current: HashSet<SocketAddr> = HashSet::new();
    loop {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addrs) => {
                let found: HashSet<SocketAddr> = addrs.collect();
                for gone in current.difference(&found) {
                    tracing::info!(%gone, "cloud address removed");
                    if changes.send(Change::Remove(*gone)).await.is_err() {
                        return;
                    }
                }
                for new in found.difference(&current) {
                    let endpoint = Endpoint::from_shared(format!("http://{new}"))
                        .expect("a socket address makes a valid URI")
                        .connect_timeout(Duration::from_secs(1))
                        .tcp_nodelay(true);
                    tracing::info!(%new, "cloud address added");
                    if changes.send(Change::Insert(*new, endpoint)).await.is_err() {
                        return;
                    }
                }
                current = found;
            }
            Err(e) => {
                tracing::debug!(%host, error = %e, "cloud look-up failed; keeping the last addresses")
            }
        }
        if changes.is_closed() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_urls_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_address("http://cloud:50052").unwrap(),
            ("cloud".to_string(), 50052)
        );
        assert_eq!(
            parse_address("http://127.0.0.1:9").unwrap(),
            ("127.0.0.1".to_string(), 9)
        );
        assert_eq!(
            parse_address("http://[::1]:7").unwrap(),
            ("::1".to_string(), 7)
        );
        let e = parse_address("cloud:50052").unwrap_err().to_string();
        assert!(e.contains("EDGE_CLOUD"), "{e}");
        assert!(
            parse_address("https://x:1")
                .unwrap_err()
                .to_string()
                .contains("https")
        );
    }
}
