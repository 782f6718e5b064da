//! The tower layer on a real tonic client and server, connected in memory (`tokio::io::duplex`)
//! so that the paused clock only moves when every task waits on a timer: the round trip the
//! client sees is then exactly the simulated one, with no socket in between.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use edgeinfer::v1::inference_client::InferenceClient;
use edgeinfer::v1::inference_server::{Inference, InferenceServer};
use edgeinfer::v1::{
    InferRequest, InferResponse, ListModelsRequest, ListModelsResponse, infer_request,
};
use edgeinfer_linksim::{
    DelayProfile, DirectionProfile, Link, LinkLayer, LinkProfile, LinkService, Transit,
};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tonic::{Code, Request, Response, Status};

/// Answers `Infer` with a label as long as the request's raw input, so that the response's
/// size follows the request's; fails for model "missing".
#[derive(Clone, Default)]
struct Echo {
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Inference for Echo {
    async fn infer(&self, req: Request<InferRequest>) -> Result<Response<InferResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let req = req.into_inner();
        if req.model == "missing" {
            return Err(Status::not_found("model `missing` is not served here"));
        }
        let len = match req.input {
            Some(infer_request::Input::Raw(raw)) => raw.len(),
            _ => 0,
        };
        Ok(Response::new(InferResponse {
            id: req.id,
            label: "x".repeat(len),
            ..InferResponse::default()
        }))
    }

    type InferStreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<InferResponse, Status>> + Send + 'static>,
    >;

    /// Answers each request as it comes, with its id.
    async fn infer_stream(
        &self,
        req: Request<tonic::Streaming<InferRequest>>,
    ) -> Result<Response<Self::InferStreamStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(Ok(r)) = inbound.next().await {
                let answer = InferResponse {
                    id: r.id,
                    ..InferResponse::default()
                };
                if tx.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_models(
        &self,
        _req: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        Ok(Response::new(ListModelsResponse::default()))
    }
}

/// An `Echo` server and a client reaching it through `link`, over an in-memory pipe.
async fn connect(link: Link) -> (InferenceClient<LinkService<Channel>>, Echo) {
    let echo = Echo::default();
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let service = InferenceServer::new(echo.clone());
    tokio::spawn(async move {
        Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::once(Ok::<_, std::io::Error>(server_io)))
            .await
            .unwrap();
    });
    let mut client_io = Some(client_io);
    let channel = Endpoint::from_static("http://in-memory")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let io = client_io.take();
            async move {
                io.map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the in-memory pipe connects once"))
            }
        }))
        .await
        .unwrap();
    let channel = tower::ServiceBuilder::new()
        .layer(LinkLayer::new(link))
        .service(channel);
    (InferenceClient::new(channel), echo)
}

fn request(id: &str, raw: usize) -> InferRequest {
    InferRequest {
        id: id.to_owned(),
        input: Some(infer_request::Input::Raw(vec![7; raw])),
        ..InferRequest::default()
    }
}

fn fixed(up_ms: f64, down_ms: f64) -> LinkProfile {
    let dir = |ms| DirectionProfile {
        delay: DelayProfile {
            base_ms: ms,
            ..DelayProfile::default()
        },
        ..DirectionProfile::default()
    };
    LinkProfile {
        name: "fixed".into(),
        description: String::new(),
        uplink: dir(up_ms),
        downlink: dir(down_ms),
        handover: None,
    }
}

#[tokio::test(start_paused = true)]
async fn round_trip_is_the_simulated_uplink_plus_downlink() {
    let (mut client, _) = connect(Link::new(fixed(12.0, 30.0), 1)).await;
    let req = request("a", 300);
    let request_bytes = 5 + req.encoded_len(); // gRPC frame prefix + message
    let start = Instant::now();
    let res = client.infer(req).await.unwrap();
    let elapsed = start.elapsed();
    let transit = *res
        .extensions()
        .get::<Transit>()
        .expect("transit in the extensions");
    assert_eq!(transit.uplink, Duration::from_millis(12));
    assert_eq!(transit.downlink, Duration::from_millis(30));
    assert_eq!(elapsed, transit.uplink + transit.downlink);
    assert_eq!(transit.uplink_bytes, request_bytes);
    assert_eq!(transit.downlink_bytes, 5 + res.get_ref().encoded_len());
    assert_eq!(res.get_ref().label.len(), 300);
}

#[tokio::test(start_paused = true)]
async fn jittery_round_trips_match_the_simulation() {
    let link = Link::new(LinkProfile::builtin("embb-midband").unwrap(), 7);
    let (mut client, _) = connect(link.clone()).await;
    for i in 0..50 {
        let start = Instant::now();
        let res = client.infer(request(&i.to_string(), 2000)).await.unwrap();
        let elapsed = start.elapsed();
        let t = *res.extensions().get::<Transit>().unwrap();
        let simulated = t.uplink + t.downlink;
        // tokio's timers fire on whole milliseconds: each direction may end up to 1 ms late.
        assert!(
            elapsed >= simulated && elapsed - simulated <= Duration::from_millis(2),
            "elapsed {elapsed:?}, simulated {simulated:?}"
        );
    }
    assert_eq!(link.stats().delivered, 100);
}

#[tokio::test(start_paused = true)]
async fn error_status_crosses_the_link() {
    let (mut client, _) = connect(Link::new(fixed(5.0, 5.0), 1)).await;
    let mut req = request("e", 10);
    req.model = "missing".into();
    let err = client.infer(req).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("missing"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn lost_request_is_never_answered_and_the_deadline_passes() {
    let (mut client, echo) = connect(Link::new(LinkProfile::builtin("offline").unwrap(), 1)).await;
    let mut req = Request::new(request("lost", 10));
    req.set_timeout(Duration::from_millis(250));
    let start = Instant::now();
    let err = client.infer(req).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    // What tonic's own channel reports when a deadline passes.
    assert_eq!(err.code(), Code::Cancelled, "{err}");
    assert_eq!(
        echo.calls.load(Ordering::SeqCst),
        0,
        "the server never saw it"
    );

    // Without a deadline the call just never completes.
    let pending = tokio::time::timeout(Duration::from_secs(60), client.infer(request("x", 1)));
    assert!(pending.await.is_err());
}

/// Lost calls without a deadline stay pending, but hold nothing of the channel's: more of them
/// than tonic's channel buffers (1024) do not stop the next call.
#[tokio::test(start_paused = true)]
async fn lost_calls_do_not_hold_the_channel() {
    let link = Link::new(LinkProfile::builtin("offline").unwrap(), 1);
    let (client, echo) = connect(link.clone()).await;
    let lost: Vec<_> = (0..1100)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move { client.infer(request(&i.to_string(), 1)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    link.set_profile(fixed(1.0, 1.0), None);
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        client.clone().infer(request("after", 1)),
    )
    .await
    .expect("the channel is not blocked");
    assert_eq!(answer.unwrap().get_ref().id, "after");
    assert_eq!(echo.calls.load(Ordering::SeqCst), 1);
    assert_eq!(link.stats().lost, 1100);
    for task in lost {
        assert!(!task.is_finished());
        task.abort();
    }
}

/// A stream's frames cross one by one: each answer comes one uplink and one downlink after its
/// request was sent, not when the request stream ends (it never does here, until the end).
#[tokio::test(start_paused = true)]
async fn stream_frames_cross_the_link_one_by_one() {
    let link = Link::new(fixed(10.0, 30.0), 1);
    let (mut client, _) = connect(link.clone()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        for i in 0..4u64 {
            tokio::time::sleep_until(start + Duration::from_millis(100 * i)).await;
            tx.send(request(&i.to_string(), 100)).await.unwrap();
        }
        // Keep the request stream open past the last answer.
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let response = client.infer_stream(ReceiverStream::new(rx)).await.unwrap();
    let transit = *response.extensions().get::<Transit>().unwrap();
    assert_eq!(transit.uplink, Duration::from_millis(10));
    assert_eq!(transit.downlink, Duration::from_millis(30));
    let mut answers = response.into_inner();
    for i in 0..4u64 {
        let answer = answers.next().await.unwrap().unwrap();
        assert_eq!(answer.id, i.to_string());
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(100 * i + 40),
            "answer {i}"
        );
    }
    let stats = link.stats();
    assert_eq!((stats.uplink.delivered, stats.downlink.delivered), (4, 4));
    sender.abort();
}

/// Messages of one stream keep their order even when a later one draws a shorter delay.
#[tokio::test(start_paused = true)]
async fn stream_frames_keep_their_order() {
    let link = Link::new(LinkProfile::builtin("cell-edge").unwrap(), 3);
    let (mut client, _) = connect(link).await;
    let requests = tokio_stream::iter((0..40).map(|i| request(&i.to_string(), 10)));
    let mut answers = client.infer_stream(requests).await.unwrap().into_inner();
    let mut ids = Vec::new();
    while let Some(answer) = tokio::time::timeout(Duration::from_secs(30), answers.next())
        .await
        .ok()
        .flatten()
    {
        ids.push(answer.unwrap().id.parse::<u32>().unwrap());
    }
    // cell-edge loses about 1.5 % of messages each way, and a loss stalls the rest of the
    // stream: what came is a prefix, in order.
    assert!(!ids.is_empty());
    assert_eq!(ids, (0..ids.len() as u32).collect::<Vec<_>>());
}

/// Records every closed span: its name, its parent's name and its `one_way_us`.
#[derive(Clone, Default)]
struct SpanLog(Arc<std::sync::Mutex<Vec<Closed>>>);

/// A closed span: its name, its parent's name, its `one_way_us`.
type Closed = (String, Option<String>, Option<u64>);

#[derive(Default)]
struct OneWay(Option<u64>);

impl tracing::field::Visit for OneWay {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "one_way_us" {
            self.0 = Some(value);
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S> tracing_subscriber::Layer<S> for SpanLog
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut one_way = OneWay::default();
        values.record(&mut one_way);
        if let (Some(v), Some(span)) = (one_way.0, ctx.span(id)) {
            span.extensions_mut().insert(OneWay(Some(v)));
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let span = ctx.span(&id).expect("a closed span exists");
        let one_way = span.extensions().get::<OneWay>().and_then(|o| o.0);
        let parent = span.parent().map(|p| p.name().to_string());
        self.0
            .lock()
            .unwrap()
            .push((span.name().to_string(), parent, one_way));
    }
}

#[tokio::test(start_paused = true)]
async fn each_crossing_is_a_span_under_the_callers_and_calls_outside_spans_get_none() {
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;
    let log = SpanLog::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(log.clone()));
    let (mut client, _) = connect(Link::new(fixed(12.0, 30.0), 1)).await;

    client.infer(request("untraced", 10)).await.unwrap();
    let crossings = |log: &SpanLog| {
        log.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _, _)| n == "uplink" || n == "downlink")
            .count()
    };
    assert_eq!(crossings(&log), 0, "a call outside any span got link spans");

    client
        .infer(request("traced", 10))
        .instrument(tracing::info_span!("call"))
        .await
        .unwrap();
    assert_eq!(crossings(&log), 2);
    let spans = log.0.lock().unwrap().clone();
    let find = |name: &str| {
        spans
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:?}"))
            .clone()
    };
    assert_eq!(
        find("uplink"),
        ("uplink".into(), Some("call".into()), Some(12_000))
    );
    assert_eq!(
        find("downlink"),
        ("downlink".into(), Some("call".into()), Some(30_000))
    );
}
