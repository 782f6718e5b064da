//! The floor: a gRPC server that does no work, so that every serving figure can be given as a
//! ratio to what tonic, hyper and the loopback cost on the same machine in the same run.
//!
//! It serves the same methods as a node where a load generator calls them (native `Infer`, OIP
//! `ModelInfer` and the OIP readiness calls, `grpc.health.v1`) and answers each inference call
//! with a response built once at start: ten probabilities, served by the edge, CONFIDENT. The
//! request is decoded by prost, as any gRPC server must, and then not looked at. `edgeinfer
//! floor` serves it; `benches/` starts it in process.

use std::collections::HashMap;
use std::net::SocketAddr;

use edgeinfer::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use edgeinfer::inference::model_infer_response::InferOutputTensor;
use edgeinfer::inference::*;
use edgeinfer::oip;
use edgeinfer::v1::inference_server::{Inference, InferenceServer};
use edgeinfer::v1::{
    InferRequest, InferResponse, ListModelsRequest, ListModelsResponse, Reason, Tier, Timing,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

/// How many classes the floor's answers have, as MNIST's.
const CLASSES: usize = 10;

/// The answers, built once.
#[derive(Clone)]
struct Floor {
    native: InferResponse,
    oip: ModelInferResponse,
}

impl Floor {
    fn new() -> Self {
        let probabilities = vec![1.0 / CLASSES as f32; CLASSES];
        let native = InferResponse {
            label: "0".into(),
            class_index: 0,
            confidence: probabilities[0],
            probabilities: probabilities.clone(),
            served_by: Tier::Edge as i32,
            reason: Reason::Confident as i32,
            model: "floor".into(),
            timing: Some(Timing::default()),
            ..Default::default()
        };
        let mut parameters = HashMap::new();
        parameters.insert("served_by".to_string(), oip::string_param("EDGE"));
        parameters.insert("reason".to_string(), oip::string_param("CONFIDENT"));
        let oip = ModelInferResponse {
            model_name: "floor".into(),
            model_version: "1".into(),
            parameters,
            outputs: vec![InferOutputTensor {
                name: "probabilities".into(),
                datatype: "FP32".into(),
                shape: vec![1, CLASSES as i64],
                ..Default::default()
            }],
            raw_output_contents: vec![probabilities.iter().flat_map(|p| p.to_le_bytes()).collect()],
            ..Default::default()
        };
        Self { native, oip }
    }
}

#[tonic::async_trait]
impl Inference for Floor {
    async fn infer(&self, r: Request<InferRequest>) -> Result<Response<InferResponse>, Status> {
        let mut answer = self.native.clone();
        answer.id = r.into_inner().id;
        Ok(Response::new(answer))
    }

    type InferStreamStream = futures::stream::BoxStream<'static, Result<InferResponse, Status>>;

    async fn infer_stream(
        &self,
        _: Request<tonic::Streaming<InferRequest>>,
    ) -> Result<Response<Self::InferStreamStream>, Status> {
        Err(Status::unimplemented("the floor serves unary calls only"))
    }

    async fn list_models(
        &self,
        _: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        Ok(Response::new(ListModelsResponse::default()))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Floor {
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
        Ok(Response::new(ServerMetadataResponse {
            name: "edgeinfer-floor".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![],
        }))
    }
    async fn model_metadata(
        &self,
        r: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        use model_metadata_response::TensorMetadata;
        Ok(Response::new(ModelMetadataResponse {
            name: r.into_inner().name,
            versions: vec!["1".into()],
            platform: "edgeinfer-floor".into(),
            inputs: vec![TensorMetadata {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![-1, 784],
            }],
            outputs: vec![TensorMetadata {
                name: "probabilities".into(),
                datatype: "FP32".into(),
                shape: vec![-1, CLASSES as i64],
            }],
        }))
    }
    async fn model_config(
        &self,
        r: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        Ok(Response::new(ModelConfigResponse {
            config: Some(ModelConfig {
                name: r.into_inner().name,
                platform: "edgeinfer-floor".into(),
                max_batch_size: 0,
                input: vec![ModelInput {
                    name: "input".into(),
                    data_type: DataType::TypeFp32 as i32,
                    dims: vec![1, 784],
                }],
                output: vec![ModelOutput {
                    name: "probabilities".into(),
                    data_type: DataType::TypeFp32 as i32,
                    dims: vec![1, CLASSES as i64],
                }],
            }),
        }))
    }
    async fn model_statistics(
        &self,
        _: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        Err(Status::unimplemented("the floor keeps no statistics"))
    }
    async fn model_infer(
        &self,
        r: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let mut answer = self.oip.clone();
        answer.id = r.into_inner().id;
        Ok(Response::new(answer))
    }
}

/// Serves the floor on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in [
        "",
        edgeinfer::service_names::INFERENCE,
        edgeinfer::service_names::OIP,
    ] {
        reporter
            .set_service_status(service, ServingStatus::Serving)
            .await;
    }
    let floor = Floor::new();
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(InferenceServer::new(floor.clone()))
        .add_service(GrpcInferenceServiceServer::new(floor))
        // TCP_NODELAY as the nodes set it: with Nagle, a small write behind an unacknowledged
        // one waits for the peer's delayed ACK (40 ms on Linux), which the floor must not pay.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

/// Binds `addr` and serves the floor on it in the background; returns the bound address.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = serve(listener, std::future::pending()).await {
            tracing::error!("floor server failed: {e}");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeinfer::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
    use edgeinfer::v1::inference_client::InferenceClient;

    #[tokio::test]
    async fn the_floor_answers_both_apis_with_its_fixed_answer_and_echoes_the_id() {
        let addr = spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let url = format!("http://{addr}");
        let mut native = InferenceClient::connect(url.clone()).await.unwrap();
        let answer = native
            .infer(InferRequest {
                id: "n-1".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.id, "n-1");
        assert_eq!(answer.probabilities.len(), CLASSES);
        assert_eq!(answer.served_by, Tier::Edge as i32);
        let mut oip = GrpcInferenceServiceClient::connect(url).await.unwrap();
        let answer = oip
            .model_infer(ModelInferRequest {
                id: "o-1".into(),
                model_name: "mnist".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.id, "o-1");
        assert_eq!(answer.raw_output_contents[0].len(), CLASSES * 4);
    }
}
