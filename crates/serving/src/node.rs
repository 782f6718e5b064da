//! What a node is to the gRPC front ends: the models it serves and one `infer` call. The
//! native and Open Inference Protocol services both decode their requests into a [`Call`] and
//! hand it to the node, so validation, tracing and metrics are written once for both.

use std::sync::Arc;
use std::time::Duration;

use edgeinfer::v1::ModelInfo;
use edgeinfer_model::ModelMetadata;
use tokio::time::Instant;

use crate::answer::{Answer, Placement};
use crate::error::ServeError;
use crate::input::{Decoded, InputLimits, InputSpec};
use crate::metrics::Metrics;

/// One decoded, validated request.
#[derive(Clone, Debug)]
pub struct Call {
    /// The request's id (assigned by the server when the client sent none).
    pub id: String,
    /// The model name the request resolved to: the node's task name or a concrete model.
    pub model: String,
    /// The input, validated against the model's input shape.
    pub input: Decoded,
    /// The request's own latency budget in milliseconds; 0 means none.
    pub budget_ms: u32,
    /// Confidence the edge model must reach, when the request sets one.
    pub min_confidence: Option<f32>,
    /// Where the request may be answered.
    pub placement: Placement,
    /// When the request arrived (tokio's clock, so tests can pause it).
    pub received: Instant,
    /// Time the client allowed (its gRPC deadline), measured from `received`.
    pub deadline: Option<Duration>,
}

impl Call {
    /// When the call's time ends: the earlier of its own budget and its gRPC deadline; `None`
    /// when it set neither.
    pub fn ends(&self) -> Option<Instant> {
        let budget = (self.budget_ms > 0).then(|| Duration::from_millis(self.budget_ms.into()));
        [budget, self.deadline]
            .into_iter()
            .flatten()
            .min()
            .map(|d| self.received + d)
    }
}

/// A server node: its models and how it answers a call.
#[tonic::async_trait]
pub trait Node: Send + Sync + 'static {
    /// The concrete models this node serves now (a swap may change them between calls). The
    /// first one is the one the task name (its `task` field) resolves to.
    fn models(&self) -> Arc<[ModelMetadata]>;

    /// Answers one call.
    async fn infer(&self, call: Call) -> Result<Answer, ServeError>;

    /// The node's metrics.
    fn metrics(&self) -> &Metrics;

    /// Input limits.
    fn limits(&self) -> InputLimits {
        InputLimits::default()
    }

    /// The model version in service with its statistics, for OIP `ModelConfig` and
    /// `ModelStatistics`; `None` for a node without one.
    fn served(&self) -> Option<Arc<crate::models::Served>> {
        None
    }

    /// Resolves a requested model name: empty or the task name means the task (answered by the
    /// first model, routed on the edge); a concrete model's name selects it. Shares the
    /// node's list: nothing is copied per request.
    fn resolve(&self, requested: &str) -> Result<Resolved, ServeError> {
        let models = self.models();
        let Some(primary) = models.first() else {
            return Err(ServeError::UnknownModel {
                requested: requested.to_string(),
                served: String::new(),
            });
        };
        if requested.is_empty() || requested == primary.task {
            return Ok(Resolved {
                models,
                index: 0,
                task: true,
            });
        }
        if let Some(index) = models.iter().position(|m| m.name == requested) {
            return Ok(Resolved {
                models,
                index,
                task: false,
            });
        }
        let mut served = vec![primary.task.clone()];
        served.extend(models.iter().map(|m| m.name.clone()));
        Err(ServeError::UnknownModel {
            requested: requested.to_string(),
            served: served.join(", "),
        })
    }
}

/// A requested model name resolved on a node.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The node's models when the name was resolved.
    models: Arc<[ModelMetadata]>,
    /// Which of them answers.
    index: usize,
    /// Whether the name was the task's rather than a concrete model's.
    task: bool,
}

impl Resolved {
    /// The name the request resolved to: the task's or a concrete model's.
    pub fn name(&self) -> &str {
        let meta = self.meta();
        if self.task { &meta.task } else { &meta.name }
    }

    /// The model that answers.
    pub fn meta(&self) -> &ModelMetadata {
        &self.models[self.index]
    }
}

/// The input a model takes.
pub fn input_spec(meta: &ModelMetadata) -> InputSpec {
    InputSpec {
        shape: meta.input_shape.clone(),
    }
}

/// A model's metadata as the API describes it.
pub fn model_info(meta: &ModelMetadata) -> ModelInfo {
    ModelInfo {
        name: meta.name.clone(),
        version: meta.version.clone(),
        task: meta.task.clone(),
        architecture: meta.architecture.clone(),
        input_shape: meta.input_shape.iter().map(|&d| d as i64).collect(),
        labels: meta.labels.clone(),
        quantization: meta.quantization.clone(),
        test_accuracy: meta.test_accuracy,
        temperature: f64::from(meta.temperature),
    }
}

/// "name@version", as responses name the model that answered.
pub fn model_ref(meta: &ModelMetadata) -> String {
    format!("{}@{}", meta.name, meta.version)
}

/// Index and value of the largest probability.
pub fn argmax(probabilities: &[f32]) -> (usize, f32) {
    probabilities
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, p)| {
            if p > best.1 { (i, p) } else { best }
        })
}

/// Parses a `grpc-timeout` header value ("100m", "2S", ...): digits and a unit.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC deadline of a request, if the client set one.
pub fn request_deadline<T>(request: &tonic::Request<T>) -> Option<Duration> {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// A fresh request id for requests that came without one.
pub fn fresh_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("1234567890S"), None);
    }

    #[test]
    fn argmax_takes_the_first_largest() {
        assert_eq!(argmax(&[0.1, 0.7, 0.2]), (1, 0.7));
        assert_eq!(argmax(&[0.5, 0.5]), (0, 0.5));
    }
}
