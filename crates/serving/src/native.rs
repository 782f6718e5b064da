//! The native `edgeinfer.v1.Inference` service over any [`Node`]: decoding, the request span,
//! metrics, and `InferStream`'s fan-out.

use std::pin::Pin;
use std::sync::Arc;

use edgeinfer::v1::inference_server::Inference;
use edgeinfer::v1::{InferRequest, InferResponse, ListModelsRequest, ListModelsResponse};
use futures::Stream;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::answer::{Answer, Placement};
use crate::error::ServeError;
use crate::input::decode_native;
use crate::limits::Gate;
use crate::node::{Call, Node, fresh_id, input_spec, model_info, request_deadline};

/// The native inference service of a node.
pub struct NativeService<N> {
    node: Arc<N>,
    gate: Gate,
    /// Frames of one `InferStream` worked on at once; more wait for a slot, which pushes back
    /// on the client through HTTP/2 flow control instead of queueing without bound.
    stream_frames: usize,
}

impl<N> NativeService<N> {
    /// Serves `node`, admitting requests through `gate`, answering at most `stream_frames`
    /// frames of one stream at once.
    pub fn new(node: Arc<N>, gate: Gate, stream_frames: usize) -> Self {
        Self {
            node,
            gate,
            stream_frames: stream_frames.max(1),
        }
    }
}

/// Decodes a native request into a call.
pub fn decode_call<N: Node + ?Sized>(
    node: &N,
    request: InferRequest,
    received: Instant,
    deadline: Option<std::time::Duration>,
) -> Result<Call, ServeError> {
    let resolved = node.resolve(&request.model)?;
    let input = decode_native(
        request.input.as_ref(),
        &input_spec(resolved.meta()),
        &node.limits(),
    )?;
    if let Some(c) = request.min_confidence
        && !(0.0..=1.0).contains(&c)
    {
        return Err(ServeError::Field {
            field: "min_confidence".into(),
            message: format!("{c} is outside [0, 1]"),
        });
    }
    let placement = Placement::try_from(request.placement).map_err(|_| ServeError::Field {
        field: "placement".into(),
        message: format!(
            "{} is not a placement; use AUTO, EDGE_ONLY or CLOUD_ONLY",
            request.placement
        ),
    })?;
    Ok(Call {
        id: if request.id.is_empty() {
            fresh_id()
        } else {
            request.id
        },
        model: resolved.name().to_string(),
        input,
        budget_ms: request.latency_budget_ms,
        min_confidence: request.min_confidence,
        placement,
        received,
        deadline,
    })
}

/// The answer and, when `input` is given, its explanation by the node's own model.
pub(crate) async fn explained<N: Node + ?Sized>(
    node: &N,
    answer: Answer,
    input: Option<Vec<f32>>,
) -> Result<(Answer, Vec<f32>), ServeError> {
    let Some(input) = input else {
        return Ok((answer, Vec::new()));
    };
    let Some(served) = node.served() else {
        return Err(ServeError::Field {
            field: "explain".into(),
            message: "this node has no model of its own to explain with".into(),
        });
    };
    let explanation = served.explain(input, answer.class_index).await?;
    Ok((answer, explanation))
}

/// Decodes and answers one native request, recording its span and metrics.
pub async fn answer<N: Node + ?Sized>(
    node: &N,
    request: InferRequest,
    received: Instant,
    deadline: Option<std::time::Duration>,
) -> Result<InferResponse, Status> {
    let span = tracing::info_span!("infer", id = %request.id, model = %request.model);
    async move {
        let explain = request.explain;
        let result = match decode_call(node, request, received, deadline) {
            Ok(call) => {
                tracing::Span::current().record("id", call.id.as_str());
                // The input is kept only when the answer is to be explained.
                let input = explain.then(|| call.input.values.clone());
                match node.infer(call).await {
                    Ok(answer) => explained(node, answer, input).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok((answer, explanation)) => {
                node.metrics().answered(
                    answer.served_by,
                    answer.reason,
                    &answer.model,
                    received.elapsed().as_secs_f64(),
                );
                tracing::debug!(
                    served_by = answer.served_by.name(),
                    reason = answer.reason.name(),
                    total_us = answer.timing.total.as_micros() as u64,
                    "answered"
                );
                let mut response = InferResponse::from(answer);
                response.explanation = explanation;
                Ok(response)
            }
            Err(e) => {
                let status = Status::from(e);
                node.metrics().refused(&status);
                Err(status)
            }
        }
    }
    .instrument(span)
    .await
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<InferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<N: Node> Inference for NativeService<N> {
    async fn infer(
        &self,
        request: Request<InferRequest>,
    ) -> Result<Response<InferResponse>, Status> {
        let received = Instant::now();
        let _place = self.gate.enter(self.node.metrics())?;
        let deadline = request_deadline(&request);
        answer(&*self.node, request.into_inner(), received, deadline)
            .await
            .map(Response::new)
    }

    type InferStreamStream = ResponseStream;

    async fn infer_stream(
        &self,
        request: Request<Streaming<InferRequest>>,
    ) -> Result<Response<Self::InferStreamStream>, Status> {
        // An open stream takes one place at the gate, for as long as it is open.
        let place = self.gate.enter(self.node.metrics())?;
        let mut frames = request.into_inner();
        let (tx, rx) = mpsc::channel(self.stream_frames);
        let node = self.node.clone();
        let stream_frames = self.stream_frames;
        tokio::spawn(async move {
            let _place = place;
            let slots = Arc::new(Semaphore::new(stream_frames));
            while let Some(frame) = frames.next().await {
                let frame = match frame {
                    Ok(f) => f,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (node, tx) = (node.clone(), tx.clone());
                tokio::spawn(async move {
                    let id = frame.id.clone();
                    let result = answer(&*node, frame, Instant::now(), None)
                        .await
                        .map_err(|s| {
                            Status::new(s.code(), format!("frame {id:?}: {}", s.message()))
                        });
                    // A refused frame ends the stream with its status, as gRPC streams do.
                    let _ = tx.send(result).await;
                    drop(permit);
                });
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_models(
        &self,
        _request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        Ok(Response::new(ListModelsResponse {
            models: self.node.models().iter().map(model_info).collect(),
        }))
    }
}
