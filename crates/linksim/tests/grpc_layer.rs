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

    async fn infer_stream(
        &self,
        _req: Request<tonic::Streaming<InferRequest>>,
    ) -> Result<Response<Self::InferStreamStream>, Status> {
        Err(Status::unimplemented("not in this test"))
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
