//! A fake server for the client commands' tests: real gRPC on port 0 (native `Inference`, the
//! Open Inference Protocol and `grpc.health.v1`), with no model, so that what the commands
//! count can be checked exactly.
//!
//! The fake "classifies" an image as its first pixel, sends images whose second pixel is set
//! to the "cloud", and refuses images whose third pixel is set (RESOURCE_EXHAUSTED). Its
//! timing breakdown is a function of the answer (see [`timing`]). It refuses calls whose
//! `authorization` is not `Bearer good-token` (UNAUTHENTICATED) or whose `x-tenant` is not
//! `blue` (PERMISSION_DENIED), and accepts calls with neither, so tests can see which headers
//! arrived.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use edgeinfer::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use edgeinfer::inference::model_infer_response::InferOutputTensor;
use edgeinfer::inference::*;
use edgeinfer::oip;
use edgeinfer::v1::inference_server::{Inference, InferenceServer};
use edgeinfer::v1::{
    InferRequest, InferResponse, ListModelsRequest, ListModelsResponse, Reason, Tier, Timing,
    infer_request::Input,
};
use edgeinfer_model::mnist::Dataset;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use super::request::OIP_OUTPUT;

/// The bearer token the fake accepts.
pub const GOOD_TOKEN: &str = "good-token";
/// A service the fake's health service reports as NOT_SERVING.
pub const SICK_SERVICE: &str = "test.Sick";

#[derive(Clone, Default)]
struct Fake {
    /// Inference calls received, answered or not.
    calls: Arc<AtomicU64>,
}

/// Checks the headers described in the module doc.
fn admit<T>(fake: &Fake, request: &Request<T>) -> Result<(), Status> {
    fake.calls.fetch_add(1, Ordering::Relaxed);
    let metadata = request.metadata();
    if let Some(auth) = metadata.get("authorization")
        && auth != format!("Bearer {GOOD_TOKEN}").as_str()
    {
        return Err(Status::unauthenticated("bad token"));
    }
    if let Some(tenant) = metadata.get("x-tenant")
        && tenant != "blue"
    {
        return Err(Status::permission_denied("wrong tenant"));
    }
    Ok(())
}

/// (class, answered by the cloud) for an image, or its refusal.
fn decide(pixels: &[u8]) -> Result<(usize, bool), Status> {
    if pixels.len() != 784 {
        return Err(Status::invalid_argument("raw: expected 784 bytes"));
    }
    if pixels[2] == 1 {
        return Err(Status::resource_exhausted("queue full"));
    }
    Ok((usize::from(pixels[0]), pixels[1] == 1))
}

/// The fake's timing: queue 10 + class µs and edge compute 20 µs on every answer; the cloud's
/// answers add uplink 1000, cloud 2000 and downlink 500 µs.
pub fn timing(class: usize, cloud: bool) -> Timing {
    let (uplink_us, cloud_us, downlink_us) = if cloud { (1000, 2000, 500) } else { (0, 0, 0) };
    let queue_us = 10 + class as u64;
    Timing {
        queue_us,
        edge_compute_us: 20,
        uplink_us,
        cloud_us,
        downlink_us,
        total_us: queue_us + 20 + uplink_us + cloud_us + downlink_us,
    }
}

#[tonic::async_trait]
impl Inference for Fake {
    async fn infer(&self, r: Request<InferRequest>) -> Result<Response<InferResponse>, Status> {
        admit(self, &r)?;
        let r = r.into_inner();
        let Some(Input::Raw(raw)) = r.input else {
            return Err(Status::invalid_argument("raw expected"));
        };
        let (class, cloud) = decide(&raw)?;
        Ok(Response::new(InferResponse {
            id: r.id,
            label: class.to_string(),
            class_index: class as u32,
            served_by: if cloud { Tier::Cloud } else { Tier::Edge } as i32,
            reason: if cloud {
                Reason::LowConfidence
            } else {
                Reason::Confident
            } as i32,
            timing: Some(timing(class, cloud)),
            ..Default::default()
        }))
    }

    type InferStreamStream = futures::stream::BoxStream<'static, Result<InferResponse, Status>>;

    async fn infer_stream(
        &self,
        _: Request<tonic::Streaming<InferRequest>>,
    ) -> Result<Response<Self::InferStreamStream>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_models(
        &self,
        _: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Fake {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }
    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }
    async fn model_ready(
        &self,
        _: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        Ok(Response::new(ModelReadyResponse { ready: true }))
    }
    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn model_metadata(
        &self,
        _: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn model_infer(
        &self,
        r: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        admit(self, &r)?;
        let r = r.into_inner();
        if r.model_name != "mnist" {
            return Err(Status::not_found(r.model_name));
        }
        let input = &r.inputs[0];
        let raw = &r.raw_input_contents[0];
        let pixels: Vec<u8> = match input.datatype.as_str() {
            "UINT8" => raw.clone(),
            "FP32" => raw
                .chunks_exact(4)
                .map(|b| (f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * 255.0).round() as u8)
                .collect(),
            other => return Err(Status::invalid_argument(other.to_string())),
        };
        let (class, cloud) = decide(&pixels)?;
        let mut probabilities = [0.0f32; 10];
        probabilities[class] = 1.0;
        let mut parameters = HashMap::new();
        let tier = if cloud { "CLOUD" } else { "EDGE" };
        parameters.insert("served_by".to_string(), oip::string_param(tier));
        let reason = if cloud { "LOW_CONFIDENCE" } else { "CONFIDENT" };
        parameters.insert("reason".to_string(), oip::string_param(reason));
        parameters.insert("degraded".to_string(), oip::bool_param(false));
        let t = timing(class, cloud);
        for (name, us) in [
            ("queue_us", t.queue_us),
            ("edge_compute_us", t.edge_compute_us),
            ("uplink_us", t.uplink_us),
            ("cloud_us", t.cloud_us),
            ("downlink_us", t.downlink_us),
            ("total_us", t.total_us),
        ] {
            parameters.insert(name.to_string(), oip::int64_param(us as i64));
        }
        Ok(Response::new(ModelInferResponse {
            model_name: r.model_name,
            id: r.id,
            parameters,
            outputs: vec![InferOutputTensor {
                name: OIP_OUTPUT.to_string(),
                datatype: "FP32".to_string(),
                shape: vec![1, 10],
                ..Default::default()
            }],
            raw_output_contents: vec![probabilities.iter().flat_map(|p| p.to_le_bytes()).collect()],
            ..Default::default()
        }))
    }

    async fn model_config(
        &self,
        _: Request<edgeinfer::inference::ModelConfigRequest>,
    ) -> Result<Response<edgeinfer::inference::ModelConfigResponse>, Status> {
        Err(Status::unimplemented("the fake server has no model"))
    }

    async fn model_statistics(
        &self,
        _: Request<edgeinfer::inference::ModelStatisticsRequest>,
    ) -> Result<Response<edgeinfer::inference::ModelStatisticsResponse>, Status> {
        Err(Status::unimplemented("the fake server has no model"))
    }
}

/// Starts the fake on a free port and returns its address (`127.0.0.1:PORT`). The whole
/// server and `edgeinfer.v1.Inference` report SERVING, [`SICK_SERVICE`] NOT_SERVING.
pub async fn start() -> String {
    serve(true, Fake::default()).await
}

/// [`start`], and the count of inference calls the fake receives.
pub async fn start_counted() -> (String, Arc<AtomicU64>) {
    let fake = Fake::default();
    let calls = fake.calls.clone();
    (serve(true, fake).await, calls)
}

/// The fake without `grpc.health.v1`, as some servers are.
pub async fn start_without_health() -> String {
    serve(false, Fake::default()).await
}

async fn serve(with_health: bool, fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("edgeinfer.v1.Inference", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status(SICK_SERVICE, ServingStatus::NotServing)
        .await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_optional_service(with_health.then_some(health))
            .add_service(InferenceServer::new(fake.clone()))
            .add_service(GrpcInferenceServiceServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr.to_string()
}

/// 100 images: image i is labelled i % 10; every 4th goes to the "cloud"; every 10th is
/// answered wrongly (its first pixel says another class); image 99 is refused.
pub fn dataset() -> Dataset {
    let n = 100;
    let mut images = vec![0u8; n * 784];
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    for i in 0..n {
        let image = &mut images[i * 784..(i + 1) * 784];
        image[0] = if i % 10 == 3 { 4 } else { labels[i] };
        image[1] = u8::from(i % 4 == 0);
        image[2] = u8::from(i == 99);
    }
    Dataset {
        images,
        labels,
        rows: 28,
        cols: 28,
    }
}
