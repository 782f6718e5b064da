//! [`LinkLayer`]: a [`Link`] on a gRPC client channel.
//!
//! Each request is buffered whole (to know its encoded size), carried by the link's uplink,
//! passed to the inner service (tonic's `Channel` in production), and its response is buffered
//! whole and carried by the downlink. The response carries a [`Transit`] in its extensions,
//! which tonic hands on in `tonic::Response::extensions()`, so the caller can report where the
//! time went.
//!
//! The request reaches the inner service only after the uplink, possibly never, so readiness is
//! asked of the inner service then (`ServiceExt::ready` on a clone), not in `poll_ready`: a
//! reservation taken there (a slot in tonic's channel buffer) would be held for as long as the
//! message is on the link, and for ever by a lost one, until callers could not send at all.
//! The inner service's errors, readiness ones included, come back from the call.
//!
//! What the caller sees, as on a real network:
//! - a lost message is never delivered: the call stays pending until the caller's deadline.
//!   When the request has a `grpc-timeout` (tonic's `Request::set_timeout`), this layer enforces
//!   it over the whole exchange, link included, and fails with tonic's own `TimeoutExpired`,
//!   which the client turns into the same status as a deadline passing on a real channel;
//! - gRPC trailers (`grpc-status`) travel with the buffered response body.
//!
//! Callers should put a deadline on every call: a lost message otherwise leaves its call pending
//! for ever (it holds nothing of the channel's while it does).
//!
//! Sizes are the HTTP/2 body bytes (the gRPC length-prefixed messages); headers are left out.
//! Because bodies are buffered whole, this layer suits unary calls; a streaming call would be
//! delayed until its request stream ends.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::link::Link;
use crate::sim::Direction;

/// How one exchange crossed the link, in the response's `http::Extensions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transit {
    /// Simulated one-way time of the request, queueing included.
    pub uplink: Duration,
    /// Simulated one-way time of the response, queueing included.
    pub downlink: Duration,
    /// Body bytes of the request.
    pub uplink_bytes: usize,
    /// Body bytes of the response.
    pub downlink_bytes: usize,
}

/// Puts a [`Link`] between a client and its inner service.
#[derive(Debug, Clone)]
pub struct LinkLayer {
    link: Link,
}

impl LinkLayer {
    /// A layer over `link` (a handle: the same link can be switched or watched elsewhere).
    pub fn new(link: Link) -> Self {
        LinkLayer { link }
    }
}

impl<S> Layer<S> for LinkLayer {
    type Service = LinkService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LinkService {
            inner,
            link: self.link.clone(),
        }
    }
}

/// The service [`LinkLayer`] makes.
#[derive(Debug, Clone)]
pub struct LinkService<S> {
    inner: S,
    link: Link,
}

impl<S> LinkService<S> {
    /// `inner` behind `link`.
    pub fn new(inner: S, link: Link) -> Self {
        LinkService { inner, link }
    }

    /// The link, to watch or switch it.
    pub fn link(&self) -> &Link {
        &self.link
    }
}

// === impl LinkService ===

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for LinkService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The link takes every message (it has its own queue); whether the inner service can
        // take it is asked when the message reaches it, after the uplink.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let inner = self.inner.clone();
        let link = self.link.clone();
        let deadline = grpc_timeout(req.headers());
        let exchange = exchange(inner, link, req);
        Box::pin(async move {
            match deadline {
                Some(limit) => tokio::time::timeout(limit, exchange)
                    .await
                    .map_err(|_| BoxError::from(tonic::TimeoutExpired(())))?,
                None => exchange.await,
            }
        })
    }
}

async fn exchange<S, ReqBody, ResBody>(
    mut inner: S,
    link: Link,
    req: http::Request<ReqBody>,
) -> Result<http::Response<tonic::body::Body>, BoxError>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let body = Buffered::collect(body).await?;
    let uplink_bytes = body.len();
    let uplink = carry(&link, Direction::Uplink, uplink_bytes).await;

    let req = http::Request::from_parts(parts, tonic::body::Body::new(body));
    let res = inner
        .ready()
        .await
        .map_err(Into::into)?
        .call(req)
        .await
        .map_err(Into::into)?;

    let (mut parts, body) = res.into_parts();
    let body = Buffered::collect(body).await?;
    let downlink_bytes = body.len();
    let downlink = carry(&link, Direction::Downlink, downlink_bytes).await;

    parts.extensions.insert(Transit {
        uplink,
        downlink,
        uplink_bytes,
        downlink_bytes,
    });
    Ok(http::Response::from_parts(
        parts,
        tonic::body::Body::new(body),
    ))
}

/// Carries `bytes` over the link; a lost message never arrives, so neither does the future.
async fn carry(link: &Link, dir: Direction, bytes: usize) -> Duration {
    match link.transmit(dir, bytes).await {
        Ok(one_way) => one_way,
        Err(lost) => {
            tracing::debug!(%lost, "message lost on the simulated link");
            std::future::pending().await
        }
    }
}

/// The `grpc-timeout` header as a duration (gRPC over HTTP/2: at most 8 digits and a unit).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A body held whole in memory: its data, then its trailers. (`http_body_util::Full` would drop
/// the trailers, and gRPC's status lives there.)
#[derive(Debug, Default)]
struct Buffered {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Buffered {
    async fn collect<B>(body: B) -> Result<Buffered, BoxError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let collected = body.collect().await.map_err(Into::into)?;
        let trailers = collected.trailers().cloned();
        let data = collected.to_bytes();
        Ok(Buffered {
            data: (!data.is_empty()).then_some(data),
            trailers,
        })
    }

    fn len(&self) -> usize {
        self.data.as_ref().map_or(0, Bytes::len)
    }
}

impl Body for Buffered {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = if let Some(data) = self.data.take() {
            Frame::data(data)
        } else if let Some(trailers) = self.trailers.take() {
            Frame::trailers(trailers)
        } else {
            return Poll::Ready(None);
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeout() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_timeout(&h), None);
        h.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_millis(250)));
        h.insert("grpc-timeout", "3S".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_secs(3)));
        h.insert("grpc-timeout", "123456789m".parse().unwrap());
        assert_eq!(grpc_timeout(&h), None);
        h.insert("grpc-timeout", "5x".parse().unwrap());
        assert_eq!(grpc_timeout(&h), None);
    }

    #[tokio::test]
    async fn buffered_body_keeps_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "5".parse().unwrap());
        let body = Buffered {
            data: Some(Bytes::from_static(b"abc")),
            trailers: Some(trailers.clone()),
        };
        let again = Buffered::collect(body).await.unwrap();
        assert_eq!(again.len(), 3);
        assert_eq!(again.trailers, Some(trailers.clone()));
        // Trailers only (a trailers-only error answer): not an empty body.
        let only = Buffered {
            data: None,
            trailers: Some(trailers),
        };
        assert!(!only.is_end_stream());
    }
}
