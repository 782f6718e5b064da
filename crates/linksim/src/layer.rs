//! [`LinkLayer`]: a [`Link`] on a gRPC client channel.
//!
//! Bodies cross the link message by message: each gRPC length-prefixed message of the request
//! body is handed to the uplink as soon as it is read, and passed on to the inner service
//! (tonic's `Channel` in production) when it arrives; the response body's messages cross the
//! downlink the same way. So a unary call pays one uplink and one downlink, and each frame of an
//! `InferStream` pays its own as it goes, instead of waiting for the whole stream. Within one
//! body messages come out in order (an HTTP/2 stream is ordered): one that arrives early waits
//! for the one before it, and a lost one stalls the rest, as a lost segment stalls a TCP stream.
//!
//! A crossing is a body wrapper with no task of its own, driven by whoever polls it: the
//! exchange until the first message has crossed, then the HTTP/2 connection (request) or the
//! caller (response). A message already due, as on `ideal`, is passed on in the same poll, so
//! the layer adds no thread hand-off to a call: an earlier design with a task per crossing cost
//! 0.07 ms per unary call at the median on loopback, this one about 0.01
//! (`edgeinfer link live --profiles ideal`).
//!
//! The inner call starts when the first request message has crossed (headers travel with it),
//! and the response is handed back when its first message has crossed, carrying a [`Transit`]
//! of those first messages in its extensions, which tonic hands on in
//! `tonic::Response::extensions()`, so the caller can report where the time went. A body with
//! no message (a trailers-only error answer, an empty request stream) crosses as one empty
//! message. Trailers follow the last message without a draw of their own, so that a unary
//! call's round trip is exactly one uplink and one downlink, as `link sample` simulates.
//!
//! The request reaches the inner service only after its first message, possibly never, so
//! readiness is asked of the inner service then (`ServiceExt::ready` on a clone), not in
//! `poll_ready`: a reservation taken there (a slot in tonic's channel buffer) would be held for
//! as long as the message is on the link, and for ever by a lost one, until callers could not
//! send at all. The inner service's errors, readiness ones included, come back from the call.
//!
//! What the caller sees, as on a real network:
//! - a lost message is never delivered: the call stays pending until the caller's deadline.
//!   When the request has a `grpc-timeout` (tonic's `Request::set_timeout`), this layer enforces
//!   it until the response's first message, link included, and fails with tonic's own
//!   `TimeoutExpired`, which the client turns into the same status as a deadline passing on a
//!   real channel;
//! - gRPC trailers (`grpc-status`) travel after the last message.
//!
//! Callers should put a deadline on every call: a lost message otherwise leaves its call pending
//! for ever (it holds nothing of the channel's while it does).
//!
//! Sizes are the HTTP/2 body bytes (the gRPC length-prefixed messages, prefix included); headers
//! are left out.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt};
use tracing::Instrument;
use tracing::field::Empty;

use crate::link::{Link, Sent};
use crate::sim::Direction;

/// How one exchange crossed the link, in the response's `http::Extensions`: its first request
/// message and its first response message (for a unary call, the request and the response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transit {
    /// Simulated one-way time of the request, queueing included.
    pub uplink: Duration,
    /// Simulated one-way time of the response, queueing included.
    pub downlink: Duration,
    /// Bytes of the request message (gRPC prefix included).
    pub uplink_bytes: usize,
    /// Bytes of the response message (gRPC prefix included).
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
    let mut request = Crossing::new(link.clone(), Direction::Uplink, body);
    // Each direction's crossing is a span of its own, child of the caller's (the cloud call),
    // from handing the first message to the link to its arrival. Calls made outside any span
    // (the edge's health probes) get none: they would be traces of their own.
    let traced = !tracing::Span::current().is_none();
    let span = |dir: Direction| match (traced, dir) {
        (false, _) => tracing::Span::none(),
        (true, Direction::Uplink) => {
            tracing::info_span!("uplink", bytes = Empty, one_way_us = Empty)
        }
        (true, Direction::Downlink) => {
            tracing::info_span!("downlink", bytes = Empty, one_way_us = Empty)
        }
    };
    let uplink = span(Direction::Uplink);
    let up = std::future::poll_fn(|cx| request.poll_first(cx))
        .instrument(uplink.clone())
        .await?;
    record(&uplink, up);
    drop(uplink);

    let req = http::Request::from_parts(parts, tonic::body::Body::new(request));
    let res = inner
        .ready()
        .await
        .map_err(Into::into)?
        .call(req)
        .await
        .map_err(Into::into)?;

    let (mut parts, body) = res.into_parts();
    let downlink = span(Direction::Downlink);
    let mut response = Crossing::new(link, Direction::Downlink, body);
    let down = std::future::poll_fn(|cx| response.poll_first(cx))
        .instrument(downlink.clone())
        .await?;
    record(&downlink, down);
    drop(downlink);
    parts.extensions.insert(Transit {
        uplink: up.one_way,
        downlink: down.one_way,
        uplink_bytes: up.bytes,
        downlink_bytes: down.bytes,
    });
    Ok(http::Response::from_parts(
        parts,
        tonic::body::Body::new(response),
    ))
}

/// Writes how a crossing went into its span.
fn record(span: &tracing::Span, arrived: Arrived) {
    span.record("bytes", arrived.bytes);
    span.record(
        "one_way_us",
        u64::try_from(arrived.one_way.as_micros()).unwrap_or(u64::MAX),
    );
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

// === Crossing: one body over one direction ===

/// How the first message of a body crossed.
#[derive(Debug, Clone, Copy)]
struct Arrived {
    one_way: Duration,
    bytes: usize,
}

/// One body crossing one direction of the link. It has no task of its own: whoever polls it
/// (the exchange until the first message has crossed, then the HTTP/2 connection for a request
/// body, the caller for a response body) drives it. Each poll first reads whatever the body has
/// ready and hands every complete message to the link at once, then passes on the head of the
/// queue if it has arrived. So a message waits only for the link, and a unary call costs no
/// task, channel or wake-up beyond its link's delays.
struct Crossing<B> {
    link: Link,
    dir: Direction,
    /// The body being read; `None` once it has ended or failed.
    body: Option<Pin<Box<B>>>,
    framer: Framer,
    /// Messages handed to the link so far.
    messages: u64,
    /// What is on the link or waits behind it, in order.
    queue: VecDeque<Item>,
    /// The wait for the head message, made when the head first has to wait.
    waiting: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Passed the link while the exchange waited for the first message; the body's first frames.
    ready: VecDeque<Result<Frame<Bytes>, BoxError>>,
    /// How the first message arrived, once it has.
    first: Option<Arrived>,
    /// A message was lost: nothing behind it is ever passed on, as a lost segment stalls a TCP
    /// stream (the caller's deadline ends the call).
    stalled: bool,
}

/// What a crossing passes on, in order.
enum Item {
    /// A message (or, at the end of a body, its last incomplete bytes) and its fate.
    Message { data: Bytes, sent: Sent },
    /// Trailers: they follow the message before them.
    Trailers(HeaderMap),
    /// The body failed: passed on when everything before it has been.
    Failed(BoxError),
}

/// Largest piece held while waiting for the rest of a message: a larger message crosses in
/// pieces of this size, so that a declared length cannot make the layer buffer without bound.
const MAX_PIECE: usize = 4 << 20;

/// Splits a byte stream into gRPC length-prefixed messages (1-byte flag, 4-byte length).
#[derive(Debug, Default)]
struct Framer {
    buf: BytesMut,
}

impl Framer {
    fn push(&mut self, mut data: impl Buf) {
        while data.has_remaining() {
            self.buf.extend_from_slice(data.chunk());
            let n = data.chunk().len();
            data.advance(n);
        }
    }

    /// The next complete message, prefix included.
    fn next(&mut self) -> Option<Bytes> {
        if self.buf.len() < 5 {
            return None;
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let whole = 5usize.saturating_add(len as usize);
        if self.buf.len() >= whole {
            Some(self.buf.split_to(whole).freeze())
        } else if self.buf.len() >= MAX_PIECE {
            Some(self.buf.split_to(MAX_PIECE).freeze())
        } else {
            None
        }
    }

    /// What is left at the end of the body.
    fn rest(&mut self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

impl<B> Crossing<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn new(link: Link, dir: Direction, body: B) -> Crossing<B> {
        Crossing {
            link,
            dir,
            body: Some(Box::pin(body)),
            framer: Framer::default(),
            messages: 0,
            queue: VecDeque::new(),
            waiting: None,
            ready: VecDeque::new(),
            first: None,
            stalled: false,
        }
    }

    /// Waits for the first message to arrive (or the body to fail first); what came with it
    /// stays for the body. A lost first message never arrives, so neither does this.
    fn poll_first(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arrived, BoxError>> {
        loop {
            match self.poll_next(cx) {
                Poll::Ready(Some(Err(e))) if self.first.is_none() => return Poll::Ready(Err(e)),
                Poll::Ready(Some(frame)) => self.ready.push_back(frame),
                // The body cannot end before a first message has crossed (an empty body
                // crosses as one empty message): without one, this waits for the head.
                Poll::Ready(None) | Poll::Pending => {
                    return self.first.map_or(Poll::Pending, |a| Poll::Ready(Ok(a)));
                }
            }
            if let Some(arrived) = self.first {
                return Poll::Ready(Ok(arrived));
            }
        }
    }

    /// Hands a message to the link now.
    fn send(&mut self, data: Bytes) -> Item {
        self.messages += 1;
        let sent = self.link.send(self.dir, data.len());
        Item::Message { data, sent }
    }

    /// Reads what the body has ready, handing each complete message to the link.
    fn read_ready(&mut self, cx: &mut Context<'_>) {
        while let Some(body) = self.body.as_mut() {
            match body.as_mut().poll_frame(cx) {
                Poll::Pending => return,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.framer.push(data);
                        while let Some(message) = self.framer.next() {
                            let item = self.send(message);
                            self.queue.push_back(item);
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.queue.push_back(Item::Trailers(trailers));
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    self.body = None;
                    self.queue.push_back(Item::Failed(e.into()));
                }
                Poll::Ready(None) => {
                    self.body = None;
                    let rest = self.framer.rest();
                    if rest.is_some() || self.messages == 0 {
                        // Trailers already queued stay after the last bytes of the body.
                        let at = self
                            .queue
                            .iter()
                            .position(|i| matches!(i, Item::Trailers(_)))
                            .unwrap_or(self.queue.len());
                        let item = self.send(rest.unwrap_or_default());
                        self.queue.insert(at, item);
                    }
                }
            }
        }
    }

    /// The next frame that has crossed, in order.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.stalled {
            return Poll::Pending;
        }
        self.read_ready(cx);
        loop {
            let sent = match self.queue.front() {
                None if self.body.is_none() => return Poll::Ready(None),
                None => return Poll::Pending,
                Some(Item::Message { sent, .. }) => *sent,
                Some(Item::Trailers(_) | Item::Failed(_)) => {
                    return Poll::Ready(match self.queue.pop_front() {
                        Some(Item::Trailers(t)) => Some(Ok(Frame::trailers(t))),
                        Some(Item::Failed(e)) => Some(Err(e)),
                        _ => unreachable!("matched above"),
                    });
                }
            };
            if sent.due() > Instant::now() {
                let wait = self.waiting.get_or_insert_with(|| Box::pin(sent.wait()));
                std::task::ready!(wait.as_mut().poll(cx));
            }
            self.waiting = None;
            let Some(Item::Message { data, .. }) = self.queue.pop_front() else {
                unreachable!("the head was a message")
            };
            let Ok(one_way) = sent.outcome() else {
                tracing::debug!(dir = %self.dir, "message lost on the simulated link: the stream stalls");
                self.stalled = true;
                self.queue.clear();
                self.body = None;
                return Poll::Pending;
            };
            if self.first.is_none() {
                self.first = Some(Arrived {
                    one_way,
                    bytes: data.len(),
                });
            }
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
        }
    }
}

impl<B> Body for Crossing<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.ready.pop_front() {
            Some(frame) => Poll::Ready(Some(frame)),
            None => self.poll_next(cx),
        }
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

    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(7, len));
        m
    }

    #[test]
    fn framer_splits_messages_across_and_within_chunks() {
        let stream: Vec<u8> = [message(3), message(0), message(10)].concat();
        for cut in [1, 4, 5, 7, 8, 13, stream.len()] {
            let mut f = Framer::default();
            let mut got = Vec::new();
            for chunk in stream.chunks(cut) {
                f.push(Bytes::copy_from_slice(chunk));
                while let Some(m) = f.next() {
                    got.push(m.len());
                }
            }
            assert_eq!(got, [8, 5, 15], "chunks of {cut}");
            assert_eq!(f.rest(), None);
        }
        let mut f = Framer::default();
        f.push(Bytes::from_static(b"\0\0\0"));
        assert_eq!(f.next(), None);
        assert_eq!(f.rest().map(|r| r.len()), Some(3));
    }

    #[test]
    fn framer_bounds_what_it_holds() {
        let mut f = Framer::default();
        let mut huge = vec![0u8, 0xff, 0xff, 0xff, 0xff];
        huge.resize(MAX_PIECE + 10, 1);
        f.push(Bytes::from(huge));
        assert_eq!(f.next().map(|m| m.len()), Some(MAX_PIECE));
        assert_eq!(f.next(), None);
    }
}
