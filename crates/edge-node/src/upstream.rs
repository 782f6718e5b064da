//! The edge's client of the cloud. Every call crosses the simulated link (a tower layer on the
//! channel), so the edge sees the cloud as it would over a real radio: delayed, queued behind
//! other messages, sometimes lost. The cloud's host is re-resolved periodically and requests
//! are spread over every address it has (replicas behind one DNS name), so a scaled-out cloud
//! shares the load and a replica that goes away stops receiving calls.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;
use tracing::Instrument;

use edgeinfer::v1::infer_request::Input;
use edgeinfer::v1::inference_client::InferenceClient;
use edgeinfer::v1::{InferRequest, InferResponse, Pixels, Values};
use edgeinfer_linksim::{Link, LinkService, Transit};
use edgeinfer_model::ood::Novelty;
use edgeinfer_serving::answer::{Answer, Placement, Reason, Tier, Timing};
use edgeinfer_serving::node::Call;

use crate::router::{CallError, Cloud, CloudAnswer};
use http::Uri;
use tokio::sync::mpsc::Sender;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::channel::Change;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A bad cloud address.
#[derive(Debug, thiserror::Error)]
#[error("--cloud / EDGE_CLOUD {url:?}: {message}")]
pub struct AddressError {
    url: String,
    message: String,
}

type Linked = LinkService<Channel>;

/// The cloud, reached through the link.
#[derive(Clone)]
pub struct Upstream {
    inference: InferenceClient<Linked>,
    health: HealthClient<Linked>,
    token: Option<MetadataValue<Ascii>>,
    address: String,
    /// The link the calls cross, for its backlog.
    link: Link,
}

/// Where the cloud is: a URL such as `http://cloud:50052` or `https://cloud:50052`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudAddress {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// Port (50052 when the URL has none).
    pub port: u16,
    /// True for `https://`.
    pub tls: bool,
}

/// Parses a cloud URL, naming the setting and what is wrong.
pub fn parse_address(url: &str) -> Result<CloudAddress, AddressError> {
    let err = |message: &str| AddressError {
        url: url.to_string(),
        message: message.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|_| err("not a URL; expected http://HOST:PORT or https://HOST:PORT"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => {
            return Err(err(&format!(
                "scheme {other:?} is not supported; use http:// or https://"
            )));
        }
        None => {
            return Err(err(
                "missing scheme; expected http://HOST:PORT or https://HOST:PORT",
            ));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| err("missing host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(CloudAddress {
        host,
        port: uri.port_u16().unwrap_or(50052),
        tls,
    })
}

impl Upstream {
    /// A client of the cloud at `url` over `link`, re-resolving its host every `resolve_every`;
    /// over TLS with `tls` (which an https:// URL needs). Must be called inside a tokio
    /// runtime (it spawns the resolver).
    pub fn new(
        url: &str,
        link: Link,
        token: Option<&str>,
        resolve_every: Duration,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Self, AddressError> {
        let address = parse_address(url)?;
        if address.tls != tls.is_some() {
            return Err(AddressError {
                url: url.to_string(),
                message:
                    "an https:// URL needs TLS settings, and only an https:// URL can use them"
                        .into(),
            });
        }
        let token = match token {
            None => None,
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| AddressError {
                url: url.to_string(),
                message: "the cloud token has characters not allowed in a header".into(),
            })?),
        };
        if tls.is_none() {
            tracing::warn!(
                cloud = url,
                "the link to the cloud is plaintext: requests and the cloud token cross it \
                 unencrypted (use an https:// cloud URL with --cloud-ca)"
            );
        }
        let (channel, changes) = Channel::balance_channel::<SocketAddr>(16);
        tokio::spawn(resolve_loop(address, tls, changes, resolve_every));
        let linked = LinkService::new(channel, link.clone());
        Ok(Self {
            inference: InferenceClient::new(linked.clone()),
            health: HealthClient::new(linked),
            token,
            address: url.to_string(),
            link,
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
        // The cloud's spans join the caller's trace (a no-op unless spans are exported).
        edgeinfer_serving::telemetry::inject_trace_context(request.metadata_mut());
        request
    }

    /// Asks the cloud, giving up after `timeout` (also sent as the gRPC deadline, so the cloud
    /// drops the work when the answer would come too late).
    pub async fn infer(
        &self,
        message: InferRequest,
        timeout: Duration,
    ) -> Result<CloudAnswer, CallError> {
        // The call's own span: the link's uplink and downlink spans and the cloud's server
        // span are its children.
        let span = tracing::info_span!("cloud_call", otel.kind = "client");
        let request = span.in_scope(|| self.request(message, timeout));
        let mut client = self.inference.clone();
        let call = tokio::time::timeout(timeout, client.infer(request)).instrument(span);
        match call.await {
            Err(_) => Err(CallError::Timeout(timeout)),
            Ok(Err(status)) => Err(call_error(&status, timeout)),
            Ok(Ok(response)) => {
                let transit = response.extensions().get::<Transit>().copied();
                Ok(CloudAnswer {
                    answer: from_wire(response.into_inner()),
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
            Ok(Err(status)) => Err(call_error(&status, timeout)),
            Ok(Ok(r)) if r.get_ref().status == 1 => Ok(started.elapsed()),
            Ok(Ok(_)) => Err(CallError::Unavailable("the cloud is not serving".into())),
        }
    }
}

/// The message sent to the cloud for `call`: 8-bit pixels when exact (a quarter of the bytes),
/// float pixels when in [0, 1], else `values` (an Open Inference Protocol FP32 input may hold
/// any finite number, which the native `pixels` refuse).
fn cloud_request(call: &Call, timeout: Duration) -> InferRequest {
    let values = &call.input.values;
    let input = if call.input.exact_u8 {
        Input::Raw(call.input.to_u8())
    } else if values.iter().all(|v| (0.0..=1.0).contains(v)) {
        Input::Pixels(Pixels {
            values: values.clone(),
        })
    } else {
        Input::Values(Values {
            values: values.clone(),
        })
    };
    InferRequest {
        id: call.id.clone(),
        input: Some(input),
        latency_budget_ms: timeout.as_millis().clamp(1, u128::from(u32::MAX)) as u32,
        min_confidence: None,
        placement: edgeinfer::v1::Placement::from(Placement::Auto) as i32,
        model: String::new(),
        // The edge explains with its own model; the cloud is not asked to.
        explain: false,
    }
}

/// What a refused or failed call means to the router.
fn call_error(status: &tonic::Status, timeout: Duration) -> CallError {
    match status.code() {
        // The deadline passed: reported by the cloud (DEADLINE_EXCEEDED) or by the client side
        // (the link layer enforces grpc-timeout and yields CANCELLED, as a real channel's
        // timeout does).
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => CallError::Timeout(timeout),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            CallError::Refused(status.message().to_string())
        }
        code => CallError::Unavailable(format!("{code:?}: {}", status.message())),
    }
}

/// The cloud's wire answer as the router's domain answer. The cloud's own provenance (it
/// always says CLOUD) is replaced by the router; its time is what matters.
fn from_wire(r: InferResponse) -> Answer {
    let timing = r.timing.unwrap_or_default();
    Answer {
        id: r.id,
        label: r.label,
        class_index: r.class_index as usize,
        confidence: r.confidence,
        probabilities: r.probabilities,
        served_by: Tier::Cloud,
        reason: Reason::Confident,
        degraded: false,
        model: r.model,
        timing: Timing {
            cloud: Duration::from_micros(timing.cloud_us),
            ..Timing::default()
        },
        edge_confidence: 0.0,
        novelty: r.ood_score.map(|score| Novelty {
            score,
            unusual: r.out_of_distribution,
        }),
    }
}

impl Cloud for Upstream {
    async fn infer(&self, call: &Call, timeout: Duration) -> Result<CloudAnswer, CallError> {
        Upstream::infer(self, cloud_request(call, timeout), timeout).await
    }

    fn backlog(&self) -> [u64; 2] {
        self.link.queued_bytes()
    }

    fn message_bytes(&self, call: &Call) -> usize {
        // The encoded size without building the message: what `cloud_request` would send.
        let input = if call.input.exact_u8 {
            call.input.values.len()
        } else {
            call.input.values.len() * 4
        };
        input + prost::length_delimiter_len(input) + call.id.len() + 16
    }
}

/// Keeps the balanced channel's endpoints equal to the addresses the host resolves to. A
/// failed look-up keeps the last known set: a name that briefly fails to resolve should not
/// empty the pool, and calls to an address that is really gone fail on their own.
async fn resolve_loop(
    address: CloudAddress,
    tls: Option<ClientTlsConfig>,
    changes: Sender<Change<SocketAddr, Endpoint>>,
    every: Duration,
) {
    let CloudAddress { host, port, .. } = address;
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
                    // Connect to the address; with TLS, verify the certificate against the
                    // configured host name (the config carries it), not the address.
                    let scheme = if tls.is_some() { "https" } else { "http" };
                    let endpoint = Endpoint::from_shared(format!("{scheme}://{new}"))
                        .expect("a socket address makes a valid URI")
                        .connect_timeout(Duration::from_secs(1))
                        .tcp_nodelay(true);
                    let endpoint = match &tls {
                        Some(tls) => match endpoint.tls_config(tls.clone()) {
                            Ok(e) => e,
                            Err(e) => {
                                tracing::error!(%new, error = %e, "cannot set up TLS to the cloud");
                                continue;
                            }
                        },
                        None => endpoint,
                    };
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
        let at = |host: &str, port, tls| CloudAddress {
            host: host.into(),
            port,
            tls,
        };
        assert_eq!(
            parse_address("http://cloud:50052").unwrap(),
            at("cloud", 50052, false)
        );
        assert_eq!(
            parse_address("http://127.0.0.1:9").unwrap(),
            at("127.0.0.1", 9, false)
        );
        assert_eq!(
            parse_address("http://[::1]:7").unwrap(),
            at("::1", 7, false)
        );
        assert_eq!(
            parse_address("https://cloud.example").unwrap(),
            at("cloud.example", 50052, true)
        );
        let e = parse_address("cloud:50052").unwrap_err().to_string();
        assert!(e.contains("EDGE_CLOUD"), "{e}");
        assert!(
            parse_address("ftp://x:1")
                .unwrap_err()
                .to_string()
                .contains("\"ftp\" is not supported")
        );
    }

    #[test]
    fn cloud_requests_carry_each_input_in_the_smallest_faithful_form() {
        use edgeinfer_serving::input::Decoded;
        let call = |values: Vec<f32>, exact_u8| Call {
            id: "r".into(),
            model: "mnist".into(),
            input: Decoded { values, exact_u8 },
            budget_ms: 0,
            min_confidence: None,
            placement: Placement::Auto,
            received: tokio::time::Instant::now(),
            deadline: None,
        };
        let timeout = Duration::from_millis(50);
        let r = cloud_request(&call(vec![0.0, 1.0], true), timeout);
        assert_eq!(r.input, Some(Input::Raw(vec![0, 255])));
        let r = cloud_request(&call(vec![0.5, 0.25], false), timeout);
        assert!(matches!(r.input, Some(Input::Pixels(_))));
        // An OIP FP32 input may leave [0, 1]; the cloud's `pixels` would refuse it.
        let r = cloud_request(&call(vec![0.5, -3.0], false), timeout);
        assert_eq!(
            r.input,
            Some(Input::Values(Values {
                values: vec![0.5, -3.0]
            }))
        );
    }
}
