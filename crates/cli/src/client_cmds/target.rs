//! The server a client command talks to: its address, TLS, the headers every data-plane call
//! carries, and a few HTTP/2 connections used round-robin.
//!
//! Requests are spread over several connections so that one connection's flow control and
//! single reader task are not what a load run measures.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use edgeinfer::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use edgeinfer::v1::GetStatusRequest;
use edgeinfer::v1::edge_admin_client::EdgeAdminClient;
use edgeinfer::v1::inference_client::InferenceClient;
use edgeinfer_serving::tls::ClientFiles;
use thiserror::Error;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;

use super::{DEFAULT_ADDR, ENV_ADDR};

/// How long connecting may take unless a command says otherwise.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS settings of a client command, for https:// addresses.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM CA certificate(s) the server's certificate must chain to, for an https:// address
    /// [default: the system's roots].
    #[arg(long, env = "EDGEINFER_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// PEM certificate chain to present to the server (mutual TLS).
    #[arg(long, env = "EDGEINFER_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, env = "EDGEINFER_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl TlsArgs {
    fn files(&self) -> ClientFiles<'_> {
        ClientFiles {
            ca: self.ca.as_deref().map(|p| ("--ca / EDGEINFER_CA", p)),
            cert: self.cert.as_deref().map(|p| ("--cert / EDGEINFER_CERT", p)),
            key: self.key.as_deref().map(|p| ("--key / EDGEINFER_KEY", p)),
        }
    }
}

/// The server of a data-plane command (`infer`, `bench`) and how to reach it.
#[derive(Clone, Debug, clap::Args)]
pub struct ServerArgs {
    /// Server address: an edge or a cloud node, or any server of the same API.
    #[arg(long, env = ENV_ADDR, default_value = DEFAULT_ADDR)]
    pub addr: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub headers: HeaderArgs,
}

impl ServerArgs {
    /// Connects `connections` connections whose inference calls carry the headers.
    pub async fn connect(&self, connections: usize) -> Result<Target> {
        let headers = CallHeaders::parse(&self.headers)?;
        Ok(Target::connect(&self.addr, connections, &self.tls)
            .await?
            .with_headers(headers))
    }
}

/// Credentials and headers sent with every inference call (`Infer`, `ModelInfer`). Health
/// and admin calls go without them: health stays open on our servers, and the admin port has
/// a token of its own.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct HeaderArgs {
    /// Bearer token for the data plane, sent as `authorization: Bearer TOKEN`.
    #[arg(
        long,
        env = "EDGEINFER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Extra gRPC metadata `NAME:VALUE` on every inference call (repeatable); names are
    /// lower-cased, values must be printable ASCII.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
}

/// A `--header` or `--token` that cannot go on the wire.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("--header {0:?} has no `:`; write it as NAME:VALUE")]
    NoColon(String),
    #[error(
        "--header {0:?}: {1:?} is not a valid gRPC metadata name (lower-case letters, digits, `-`, `_` and `.`; binary `-bin` headers are not supported)"
    )]
    BadName(String, String),
    #[error("--header {0:?}: the value must be printable ASCII")]
    BadValue(String),
    #[error("--token must be printable ASCII with no spaces")]
    BadToken,
    #[error("--header {0:?} sets `authorization`, which --token sets too; give one of them")]
    TwoAuthorizations(String),
}

/// The parsed metadata of [`HeaderArgs`], added to each call by a tonic interceptor.
#[derive(Clone, Debug, Default)]
pub struct CallHeaders(Arc<[(AsciiMetadataKey, AsciiMetadataValue)]>);

impl CallHeaders {
    /// Checks every header once, up front, so that a typo stops the command before any load.
    pub fn parse(args: &HeaderArgs) -> Result<Self, HeaderError> {
        let mut headers = Vec::with_capacity(args.headers.len() + 1);
        for raw in &args.headers {
            let (name, value) = raw
                .split_once(':')
                .ok_or_else(|| HeaderError::NoColon(raw.clone()))?;
            let name = name.trim().to_ascii_lowercase();
            let key = name
                .parse::<AsciiMetadataKey>()
                .map_err(|_| HeaderError::BadName(raw.clone(), name.clone()))?;
            if key.as_str() == "authorization" && args.token.is_some() {
                return Err(HeaderError::TwoAuthorizations(raw.clone()));
            }
            let value = value.trim();
            // `http` lets bytes above 127 through, which gRPC implementations read differently.
            if !value.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
                return Err(HeaderError::BadValue(raw.clone()));
            }
            let value = value
                .parse::<AsciiMetadataValue>()
                .map_err(|_| HeaderError::BadValue(raw.clone()))?;
            headers.push((key, value));
        }
        if let Some(token) = &args.token {
            if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
                return Err(HeaderError::BadToken);
            }
            let value = format!("Bearer {token}")
                .parse::<AsciiMetadataValue>()
                .map_err(|_| HeaderError::BadToken)?;
            headers.push((AsciiMetadataKey::from_static("authorization"), value));
        }
        Ok(Self(headers.into()))
    }
}

impl Interceptor for CallHeaders {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let metadata = request.metadata_mut();
        for (key, value) in self.0.iter() {
            metadata.insert(key.clone(), value.clone());
        }
        Ok(request)
    }
}

/// A data-plane connection that carries the command's [`CallHeaders`].
pub type DataChannel = InterceptedService<Channel, CallHeaders>;

/// Why connecting failed: the address or TLS files were wrong (nothing was tried), or the
/// server could not be reached. `health` tells them apart in its exit code.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("{0:#}")]
    Setup(anyhow::Error),
    #[error("cannot connect to {url}: is the server running?")]
    Unreachable {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
}

// === impl Target ===

/// A server reached over a few HTTP/2 connections, used round-robin.
pub struct Target {
    channels: Vec<Channel>,
    next: AtomicUsize,
    /// Sent with every inference call; empty unless `--token` or `--header` was given.
    headers: CallHeaders,
}

impl Target {
    /// Connects `connections` HTTP/2 connections to `addr` (`http://` is assumed when the
    /// address has no scheme; `https://` uses TLS with `tls`), failing with a clear message
    /// when nothing listens there.
    pub async fn connect(addr: &str, connections: usize, tls: &TlsArgs) -> Result<Self> {
        Ok(Self::connect_with_timeout(addr, connections, tls, DEFAULT_CONNECT_TIMEOUT).await?)
    }

    pub async fn connect_with_timeout(
        addr: &str,
        connections: usize,
        tls: &TlsArgs,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let (url, endpoint) = endpoint(addr, tls, timeout).map_err(ConnectError::Setup)?;
        let mut channels = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            let channel = endpoint
                .connect()
                .await
                .map_err(|source| ConnectError::Unreachable {
                    url: url.clone(),
                    source,
                })?;
            channels.push(channel);
        }
        Ok(Self {
            channels,
            next: AtomicUsize::new(0),
            headers: CallHeaders::default(),
        })
    }

    /// The same connections, with `headers` on every inference call from now on.
    pub fn with_headers(mut self, headers: CallHeaders) -> Self {
        self.headers = headers;
        self
    }

    fn channel(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }

    pub fn native(&self) -> InferenceClient<DataChannel> {
        InferenceClient::with_interceptor(self.channel(), self.headers.clone())
    }

    pub fn oip(&self) -> GrpcInferenceServiceClient<DataChannel> {
        GrpcInferenceServiceClient::with_interceptor(self.channel(), self.headers.clone())
    }

    pub fn admin(&self) -> EdgeAdminClient<Channel> {
        EdgeAdminClient::new(self.channel())
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
    }

    /// The default budget the server reports through `EdgeAdmin/GetStatus`, when it is an
    /// edge that answers quickly; None for a cloud or any other server.
    pub async fn default_budget_ms(&self) -> Option<u32> {
        let mut request = tonic::Request::new(GetStatusRequest {});
        request.set_timeout(Duration::from_secs(2));
        let mut admin = self.admin();
        let status = tokio::time::timeout(Duration::from_secs(2), admin.get_status(request))
            .await
            .ok()?
            .ok()?;
        status
            .into_inner()
            .policy
            .map(|p| p.default_budget_ms)
            .filter(|&ms| ms > 0)
    }
}

/// The endpoint for `addr` with TLS set up for https://, and the URL it names.
fn endpoint(addr: &str, tls: &TlsArgs, timeout: Duration) -> Result<(String, Endpoint)> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("{addr:?} is not a valid server address (try http://HOST:PORT)"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    let files = tls.files();
    let uri = endpoint.uri().clone();
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(host)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            endpoint = endpoint
                .tls_config(files.config(host)?)
                .with_context(|| format!("cannot set up TLS to {url}"))?;
        }
        _ if files.any() => {
            bail!("--ca, --cert and --key need an https:// address; the address is {url:?}")
        }
        _ => {}
    }
    Ok((url, endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(token: Option<&str>, headers: &[&str]) -> HeaderArgs {
        HeaderArgs {
            token: token.map(str::to_string),
            headers: headers.iter().map(|h| h.to_string()).collect(),
        }
    }

    fn sent(headers: CallHeaders) -> tonic::metadata::MetadataMap {
        let mut interceptor = headers;
        interceptor
            .call(tonic::Request::new(()))
            .unwrap()
            .metadata()
            .clone()
    }

    #[test]
    fn token_and_headers_go_on_the_call() {
        let headers =
            CallHeaders::parse(&args(Some("s3cret"), &["X-Tenant: blue", "trace:a:b"])).unwrap();
        let metadata = sent(headers);
        assert_eq!(metadata.get("authorization").unwrap(), "Bearer s3cret");
        assert_eq!(metadata.get("x-tenant").unwrap(), "blue");
        assert_eq!(
            metadata.get("trace").unwrap(),
            "a:b",
            "only the first `:` splits"
        );
    }

    #[test]
    fn bad_headers_are_named() {
        let cases = [
            (
                args(None, &["novalue"]),
                HeaderError::NoColon("novalue".into()),
            ),
            (
                args(None, &["bad name:1"]),
                HeaderError::BadName("bad name:1".into(), "bad name".into()),
            ),
            (
                args(None, &["blob-bin:AAAA"]),
                HeaderError::BadName("blob-bin:AAAA".into(), "blob-bin".into()),
            ),
            (
                args(None, &["x-a:caf\u{e9}"]),
                HeaderError::BadValue("x-a:caf\u{e9}".into()),
            ),
            (args(Some("two words"), &[]), HeaderError::BadToken),
            (
                args(Some("t"), &["Authorization: Bearer u"]),
                HeaderError::TwoAuthorizations("Authorization: Bearer u".into()),
            ),
        ];
        for (args, want) in cases {
            assert_eq!(CallHeaders::parse(&args).unwrap_err(), want, "{args:?}");
        }
    }

    #[tokio::test]
    async fn a_bad_address_is_a_setup_error_and_nothing_listening_is_unreachable() {
        let bad = Target::connect_with_timeout(
            "http://[::1",
            1,
            &TlsArgs::default(),
            Duration::from_secs(1),
        )
        .await
        .err()
        .expect("not an address");
        assert!(matches!(bad, ConnectError::Setup(_)), "{bad:?}");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = Target::connect(&addr.to_string(), 1, &TlsArgs::default())
            .await
            .err()
            .expect("nothing listens");
        assert!(
            format!("{err:#}").contains("is the server running"),
            "{err:#}"
        );
        assert!(matches!(
            err.downcast_ref::<ConnectError>(),
            Some(ConnectError::Unreachable { .. })
        ));
    }
}
