//! The Open Inference Protocol (`inference.GRPCInferenceService`) over any [`Node`].
//!
//! Each node serves its task under the task's name (`mnist`, routed on the edge) and each
//! concrete model under its own name. Input `input`: FP32 or UINT8, shape `[-1, N]` or
//! `[-1, ...input_shape]`; output `probabilities`: FP32 `[-1, labels]`, always in
//! `raw_output_contents` (tritonclient reads only those). Routing options come in request
//! parameters (`latency_budget_ms`, `min_confidence`, `placement`); provenance goes back in
//! response parameters (`served_by`, `reason`, `degraded`, `model` and the timing fields;
//! `ood_score` and `out_of_distribution` when the model has an input detector).
//! A batch is answered row by row; for batches, string parameters hold one comma-separated
//! value per row (`ood_score` too, as decimals), `degraded` and `out_of_distribution` are true
//! when any row was, and timings are the slowest row's.

use std::sync::Arc;

use edgeinfer::inference::grpc_inference_service_server::GrpcInferenceService;
use edgeinfer::inference::model_infer_response::InferOutputTensor;
use edgeinfer::inference::model_metadata_response::TensorMetadata;
use edgeinfer::inference::{
    InferParameter, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelMetadataResponse, ModelReadyRequest, ModelReadyResponse, ServerLiveRequest,
    ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest,
    ServerReadyResponse,
};
use edgeinfer::oip;
use edgeinfer_model::ModelMetadata;
use futures::future::join_all;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::answer::{Answer, Placement};
use crate::error::ServeError;
use crate::input::decode_oip;
use crate::limits::Gate;
use crate::node::{Call, Node, fresh_id, input_spec, request_deadline};

/// Name of the input tensor.
pub const INPUT_NAME: &str = "input";
/// Name of the output tensor.
pub const OUTPUT_NAME: &str = "probabilities";
/// The output of attributions, when the request asks for them.
pub const EXPLANATION_NAME: &str = "explanation";

/// The Open Inference Protocol service of a node.
pub struct OipService<N> {
    node: Arc<N>,
    server_name: String,
    gate: Gate,
}

impl<N> OipService<N> {
    /// Serves `node`, calling itself `server_name` in `ServerMetadata`, admitting inference
    /// requests through `gate`.
    pub fn new(node: Arc<N>, server_name: impl Into<String>, gate: Gate) -> Self {
        Self {
            node,
            server_name: server_name.into(),
            gate,
        }
    }

    /// The node served.
    pub fn node(&self) -> &Arc<N> {
        &self.node
    }
}

fn field(field: &str, message: impl Into<String>) -> ServeError {
    ServeError::Field {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The routing options of an OIP request, from its parameters.
struct Options {
    budget_ms: u32,
    min_confidence: Option<f32>,
    placement: Placement,
    /// Return `explanation` too: the `explain` parameter, or the output asked for by name.
    explain: bool,
}

fn options(request: &ModelInferRequest) -> Result<Options, ServeError> {
    let p = &request.parameters;
    let budget_ms = match p.get("latency_budget_ms") {
        None => 0,
        Some(v) => match oip::as_f64(v) {
            Some(ms) if (0.0..=f64::from(u32::MAX)).contains(&ms) => ms.round() as u32,
            _ => {
                return Err(field(
                    "parameters.latency_budget_ms",
                    "expected a non-negative number of milliseconds",
                ));
            }
        },
    };
    let min_confidence = match p.get("min_confidence") {
        None => None,
        Some(v) => match oip::as_f64(v) {
            Some(c) if (0.0..=1.0).contains(&c) => Some(c as f32),
            _ => {
                return Err(field(
                    "parameters.min_confidence",
                    "expected a number in [0, 1]",
                ));
            }
        },
    };
    let placement = match p.get("placement").and_then(oip::as_string) {
        None => Placement::Auto,
        Some(s) => Placement::parse(&s).ok_or_else(|| {
            field(
                "parameters.placement",
                format!("{s:?}: use auto, edge or cloud"),
            )
        })?,
    };
    let explain = match p.get("explain") {
        None => false,
        Some(v) => {
            oip::as_bool(v).ok_or_else(|| field("parameters.explain", "expected true or false"))?
        }
    } || request.outputs.iter().any(|o| o.name == EXPLANATION_NAME);
    Ok(Options {
        budget_ms,
        min_confidence,
        placement,
        explain,
    })
}

fn tensor_metadata(meta: &ModelMetadata) -> (Vec<TensorMetadata>, Vec<TensorMetadata>) {
    let inputs = vec![TensorMetadata {
        name: INPUT_NAME.into(),
        datatype: "FP32".into(),
        shape: vec![-1, meta.input_len() as i64],
    }];
    let outputs = vec![TensorMetadata {
        name: OUTPUT_NAME.into(),
        datatype: "FP32".into(),
        shape: vec![-1, meta.labels.len() as i64],
    }];
    (inputs, outputs)
}

/// Resolves a model name and, when one is given, its version: a version the node does not
/// serve is NOT_FOUND, as an unknown model is.
pub(crate) fn resolve_version<N: Node + ?Sized>(
    node: &N,
    name: &str,
    version: &str,
) -> Result<crate::node::Resolved, ServeError> {
    let resolved = node.resolve(name)?;
    if !version.is_empty() && version != resolved.meta().version {
        return Err(ServeError::UnknownVersion {
            model: resolved.name().to_string(),
            requested: version.to_string(),
            served: resolved.meta().version.clone(),
        });
    }
    Ok(resolved)
}

impl<N: Node> OipService<N> {
    async fn model_infer_inner(
        &self,
        request: ModelInferRequest,
        received: Instant,
        deadline: Option<std::time::Duration>,
    ) -> Result<ModelInferResponse, ServeError> {
        let node = &*self.node;
        let resolved = resolve_version(node, &request.model_name, &request.model_version)?;
        if request.inputs.len() != 1 {
            return Err(field(
                "inputs",
                format!(
                    "{} input tensors; the model takes exactly one, {INPUT_NAME:?}",
                    request.inputs.len()
                ),
            ));
        }
        let tensor = &request.inputs[0];
        if tensor.name != INPUT_NAME {
            return Err(field(
                "inputs[0].name",
                format!("{:?}; the model's input is {INPUT_NAME:?}", tensor.name),
            ));
        }
        if let Some(out) = request
            .outputs
            .iter()
            .find(|o| o.name != OUTPUT_NAME && o.name != EXPLANATION_NAME)
        {
            return Err(field(
                "outputs",
                format!(
                    "{:?} is not an output; the model's outputs are {OUTPUT_NAME:?} and \
                     {EXPLANATION_NAME:?}",
                    out.name
                ),
            ));
        }
        if request.raw_input_contents.len() > 1 {
            return Err(field(
                "raw_input_contents",
                format!("{} entries for one input", request.raw_input_contents.len()),
            ));
        }
        let opts = options(&request)?;
        let rows = decode_oip(
            tensor,
            request.raw_input_contents.first().map(|b| b.as_slice()),
            &input_spec(resolved.meta()),
            &node.limits(),
        )?;
        let id = if request.id.is_empty() {
            fresh_id()
        } else {
            request.id.clone()
        };
        let n = rows.len();
        let inputs: Vec<Option<Vec<f32>>> = rows
            .iter()
            .map(|r| opts.explain.then(|| r.values.clone()))
            .collect();
        let calls = rows.into_iter().enumerate().map(|(i, input)| Call {
            id: if n == 1 {
                id.clone()
            } else {
                format!("{id}/{i}")
            },
            model: resolved.name().to_string(),
            input,
            budget_ms: opts.budget_ms,
            min_confidence: opts.min_confidence,
            placement: opts.placement,
            received,
            deadline,
        });
        let answered = calls.zip(inputs).map(|(c, input)| async move {
            crate::native::explained(node, node.infer(c).await?, input).await
        });
        let (answers, explanations): (Vec<Answer>, Vec<Vec<f32>>) = join_all(answered)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        for a in &answers {
            node.metrics().answered(
                a.served_by,
                a.reason,
                &a.model,
                received.elapsed().as_secs_f64(),
            );
        }
        let mut response = build_response(
            &request.model_name,
            resolved.name(),
            resolved.meta(),
            id,
            &answers,
        );
        if opts.explain {
            let len = resolved.meta().input_len();
            let raw: Vec<u8> = explanations
                .iter()
                .flatten()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            response.outputs.push(InferOutputTensor {
                name: EXPLANATION_NAME.into(),
                datatype: "FP32".into(),
                shape: vec![answers.len() as i64, len as i64],
                parameters: Default::default(),
                contents: None,
            });
            response.raw_output_contents.push(raw);
        }
        Ok(response)
    }
}

fn build_response(
    requested: &str,
    resolved: &str,
    meta: &ModelMetadata,
    id: String,
    answers: &[Answer],
) -> ModelInferResponse {
    let classes = meta.labels.len();
    let mut raw = Vec::with_capacity(answers.len() * classes * 4);
    for a in answers {
        for p in &a.probabilities {
            raw.extend_from_slice(&p.to_le_bytes());
        }
    }
    let joined = |f: &dyn Fn(&Answer) -> &str| answers.iter().map(f).collect::<Vec<_>>().join(",");
    let slowest = |f: &dyn Fn(&crate::answer::Timing) -> std::time::Duration| {
        answers
            .iter()
            .map(|a| f(&a.timing))
            .max()
            .unwrap_or_default()
            .as_micros() as i64
    };
    let mut parameters = std::collections::HashMap::<String, InferParameter>::new();
    parameters.insert(
        "served_by".into(),
        oip::string_param(joined(&|a| a.served_by.name())),
    );
    parameters.insert(
        "reason".into(),
        oip::string_param(joined(&|a| a.reason.name())),
    );
    parameters.insert("model".into(), oip::string_param(joined(&|a| &a.model)));
    parameters.insert("label".into(), oip::string_param(joined(&|a| &a.label)));
    parameters.insert(
        "degraded".into(),
        oip::bool_param(answers.iter().any(|a| a.degraded)),
    );
    if answers.iter().any(|a| a.novelty.is_some()) {
        let scores: Vec<String> = answers
            .iter()
            .map(|a| a.novelty.map_or(String::new(), |n| n.score.to_string()))
            .collect();
        parameters.insert("ood_score".into(), oip::string_param(scores.join(",")));
        parameters.insert(
            "out_of_distribution".into(),
            oip::bool_param(answers.iter().any(|a| a.novelty.is_some_and(|n| n.unusual))),
        );
    }
    parameters.insert("queue_us".into(), oip::int64_param(slowest(&|t| t.queue)));
    parameters.insert(
        "edge_compute_us".into(),
        oip::int64_param(slowest(&|t| t.edge_compute)),
    );
    parameters.insert("uplink_us".into(), oip::int64_param(slowest(&|t| t.uplink)));
    parameters.insert("cloud_us".into(), oip::int64_param(slowest(&|t| t.cloud)));
    parameters.insert(
        "downlink_us".into(),
        oip::int64_param(slowest(&|t| t.downlink)),
    );
    parameters.insert("total_us".into(), oip::int64_param(slowest(&|t| t.total)));
    ModelInferResponse {
        model_name: if requested.is_empty() {
            resolved.to_string()
        } else {
            requested.to_string()
        },
        model_version: meta.version.clone(),
        id,
        parameters,
        outputs: vec![InferOutputTensor {
            name: OUTPUT_NAME.into(),
            datatype: "FP32".into(),
            shape: vec![answers.len() as i64, classes as i64],
            parameters: Default::default(),
            contents: None,
        }],
        raw_output_contents: vec![raw],
    }
}

#[tonic::async_trait]
impl<N: Node> GrpcInferenceService for OipService<N> {
    async fn server_live(
        &self,
        _request: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: !self.node.models().is_empty(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let resolved = self.node.resolve(&r.name).map_err(Status::from)?;
        Ok(Response::new(ModelReadyResponse {
            ready: r.version.is_empty() || r.version == resolved.meta().version,
        }))
    }

    async fn server_metadata(
        &self,
        _request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: self.server_name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let resolved = resolve_version(&*self.node, &r.name, &r.version).map_err(Status::from)?;
        let (inputs, outputs) = tensor_metadata(resolved.meta());
        Ok(Response::new(ModelMetadataResponse {
            name: resolved.name().to_string(),
            versions: vec![resolved.meta().version.clone()],
            platform: "edgeinfer-candle".into(),
            inputs,
            outputs,
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let received = Instant::now();
        let _place = self.gate.enter(self.node.metrics())?;
        let deadline = request_deadline(&request);
        let request = request.into_inner();
        let span =
            tracing::info_span!("model_infer", id = %request.id, model = %request.model_name);
        let result = tracing::Instrument::instrument(
            self.model_infer_inner(request, received, deadline),
            span,
        )
        .await;
        match result {
            Ok(r) => Ok(Response::new(r)),
            Err(e) => {
                let status = Status::from(e);
                self.node.metrics().refused(&status);
                Err(status)
            }
        }
    }

    async fn model_config(
        &self,
        request: Request<edgeinfer::inference::ModelConfigRequest>,
    ) -> Result<Response<edgeinfer::inference::ModelConfigResponse>, Status> {
        crate::oip_models::model_config(&*self.node, request.get_ref()).map(Response::new)
    }

    async fn model_statistics(
        &self,
        request: Request<edgeinfer::inference::ModelStatisticsRequest>,
    ) -> Result<Response<edgeinfer::inference::ModelStatisticsResponse>, Status> {
        crate::oip_models::model_statistics(&*self.node, request.get_ref()).map(Response::new)
    }
}
