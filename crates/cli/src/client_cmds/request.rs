//! One classification request by either protocol, and what its answer says: the class, who
//! answered and why, and the server's timing breakdown.
//!
//! The native API carries the timing as a `Timing` message; the Open Inference Protocol
//! carries the same numbers as response parameters (`queue_us`, ...). Both become one
//! [`Answer`], so what a load run counts does not depend on the protocol.

use std::collections::HashMap;
use std::time::Duration;

use edgeinfer::inference::model_infer_request::InferInputTensor;
use edgeinfer::inference::{InferParameter, ModelInferRequest, ModelInferResponse};
use edgeinfer::oip;
use edgeinfer::v1::{InferRequest, InferResponse, Placement, Tier, infer_request::Input};
use edgeinfer_model::calibrate::argmax;

use super::target::Target;

/// Name of the OIP input tensor of the MNIST task (design.md section 4).
pub const OIP_INPUT: &str = "input";
/// Name of the OIP output tensor holding the probabilities.
pub const OIP_OUTPUT: &str = "probabilities";
/// The task's OIP model name; on the edge it goes through the router.
pub const OIP_DEFAULT_MODEL: &str = "mnist";

/// Which API a load uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// `edgeinfer.v1.Inference/Infer`.
    Native,
    /// `inference.GRPCInferenceService/ModelInfer` (Open Inference Protocol v2).
    Oip,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Oip => "oip",
        }
    }
}

/// `--placement` on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlacementArg {
    /// The edge decides.
    Auto,
    /// The edge model only.
    Edge,
    /// The cloud model (the edge answers, degraded, if the cloud cannot).
    Cloud,
}

impl From<PlacementArg> for Placement {
    fn from(p: PlacementArg) -> Self {
        match p {
            PlacementArg::Auto => Placement::Auto,
            PlacementArg::Edge => Placement::EdgeOnly,
            PlacementArg::Cloud => Placement::CloudOnly,
        }
    }
}

/// Datatype of the OIP `input` tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OipDtype {
    /// Pixels 0 to 255, one byte each.
    Uint8,
    /// Pixels scaled to [0, 1], little-endian f32.
    Fp32,
}

/// How a command's requests ask to be answered: the routing options of both protocols.
#[derive(Clone, Debug, clap::Args)]
pub struct RoutingArgs {
    /// Latency budget in milliseconds sent with each request [default: the server's].
    #[arg(long)]
    pub budget_ms: Option<u32>,
    /// Where requests may be answered.
    #[arg(long, value_enum, default_value_t = PlacementArg::Auto)]
    pub placement: PlacementArg,
    /// Confidence the edge must reach to answer by itself [default: the server's threshold].
    #[arg(long)]
    pub min_confidence: Option<f32>,
    /// Model or task to ask for [default: the node's task natively, `mnist` over OIP].
    #[arg(long)]
    pub model: Option<String>,
}

impl RoutingArgs {
    /// The options of every request of a run.
    pub fn options(&self, oip_dtype: OipDtype, timeout: Duration) -> RequestOptions {
        RequestOptions {
            budget_ms: self.budget_ms,
            placement: self.placement,
            min_confidence: self.min_confidence,
            model: self.model.clone(),
            oip_dtype,
            timeout,
        }
    }
}

/// What goes with every request of a run, whatever the protocol.
#[derive(Clone, Debug)]
pub struct RequestOptions {
    /// Sent as the request's latency budget; None leaves the server's default.
    pub budget_ms: Option<u32>,
    pub placement: PlacementArg,
    pub min_confidence: Option<f32>,
    /// Task or model name; None means the node's task (native) or `mnist` (OIP).
    pub model: Option<String>,
    pub oip_dtype: OipDtype,
    /// Client-side limit per request, also sent as the gRPC deadline.
    pub timeout: Duration,
}

/// The stages of the server's timing breakdown, in the order a request passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Queue,
    EdgeCompute,
    Uplink,
    Cloud,
    Downlink,
    Total,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Queue,
        Stage::EdgeCompute,
        Stage::Uplink,
        Stage::Cloud,
        Stage::Downlink,
        Stage::Total,
    ];

    /// The name in `--json`'s `timing_us` and in the CSV columns.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Queue => "queue",
            Stage::EdgeCompute => "edge_compute",
            Stage::Uplink => "uplink",
            Stage::Cloud => "cloud",
            Stage::Downlink => "downlink",
            Stage::Total => "total",
        }
    }

    /// The OIP response parameter carrying this stage (grpc_service.proto).
    fn oip_parameter(self) -> &'static str {
        match self {
            Stage::Queue => "queue_us",
            Stage::EdgeCompute => "edge_compute_us",
            Stage::Uplink => "uplink_us",
            Stage::Cloud => "cloud_us",
            Stage::Downlink => "downlink_us",
            Stage::Total => "total_us",
        }
    }
}

/// Where the server says one request's time went, in microseconds per [`Stage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageTimes([u64; 6]);

impl StageTimes {
    pub fn get(&self, stage: Stage) -> u64 {
        self.0[stage as usize]
    }

    pub fn set(&mut self, stage: Stage, us: u64) {
        self.0[stage as usize] = us;
    }
}

impl From<&edgeinfer::v1::Timing> for StageTimes {
    fn from(t: &edgeinfer::v1::Timing) -> Self {
        Self([
            t.queue_us,
            t.edge_compute_us,
            t.uplink_us,
            t.cloud_us,
            t.downlink_us,
            t.total_us,
        ])
    }
}

/// What one answer said, whichever protocol carried it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    pub class_index: usize,
    /// "edge" or "cloud" when the server said.
    pub served_by: Option<&'static str>,
    /// The reason's name, for example "CONFIDENT", when the server said.
    pub reason: Option<String>,
    pub degraded: bool,
    /// The server's timing breakdown, when it sent one (any edgeinfer node does).
    pub timing: Option<StageTimes>,
    /// The model that produced the answer ("name@version"), when the server said.
    pub model: Option<String>,
}

// === impl Target ===

impl Target {
    /// Sends one classification request for `pixels` (u8, row-major) by `protocol`.
    pub async fn classify(
        &self,
        protocol: Protocol,
        options: &RequestOptions,
        id: String,
        pixels: &[u8],
    ) -> Result<Answer, tonic::Status> {
        let call = async {
            match protocol {
                Protocol::Native => {
                    let mut request = tonic::Request::new(native_request(options, id, pixels));
                    request.set_timeout(options.timeout);
                    let response = self.native().infer(request).await?.into_inner();
                    Ok(native_answer(&response))
                }
                Protocol::Oip => {
                    let mut request = tonic::Request::new(oip_request(options, id, pixels));
                    request.set_timeout(options.timeout);
                    let response = self.oip().model_infer(request).await?.into_inner();
                    oip_answer(&response)
                }
            }
        };
        // The gRPC deadline is only a header: a server that ignores it would hang the run.
        tokio::time::timeout(options.timeout + Duration::from_millis(100), call)
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(
                    "no answer within the client's timeout",
                ))
            })
    }
}

/// A native `Infer` request with the image as raw bytes (the server converts them).
pub fn native_request(options: &RequestOptions, id: String, pixels: &[u8]) -> InferRequest {
    InferRequest {
        id,
        input: Some(Input::Raw(pixels.to_vec())),
        latency_budget_ms: options.budget_ms.unwrap_or(0),
        min_confidence: options.min_confidence,
        placement: Placement::from(options.placement) as i32,
        model: options.model.clone().unwrap_or_default(),
        explain: false,
    }
}

/// Reads the class, provenance and timing of a native answer.
pub fn native_answer(response: &InferResponse) -> Answer {
    Answer {
        class_index: response.class_index as usize,
        served_by: match response.served_by() {
            Tier::Unspecified => None,
            tier => Some(tier_name(tier)),
        },
        reason: Some(response.reason().as_str_name().to_string())
            .filter(|r| r != "REASON_UNSPECIFIED"),
        degraded: response.degraded,
        timing: response.timing.as_ref().map(StageTimes::from),
        model: Some(response.model.clone()).filter(|m| !m.is_empty()),
    }
}

/// Builds an OIP `ModelInfer` request the way tritonclient does: one input tensor, its bytes in
/// `raw_input_contents`, routing options as request parameters.
pub fn oip_request(options: &RequestOptions, id: String, pixels: &[u8]) -> ModelInferRequest {
    let (datatype, raw) = match options.oip_dtype {
        OipDtype::Uint8 => ("UINT8", pixels.to_vec()),
        OipDtype::Fp32 => (
            "FP32",
            pixels
                .iter()
                .flat_map(|&p| (f32::from(p) / 255.0).to_le_bytes())
                .collect(),
        ),
    };
    let mut parameters = HashMap::new();
    if let Some(ms) = options.budget_ms {
        parameters.insert("latency_budget_ms".to_string(), oip::int64_param(ms.into()));
    }
    if let Some(c) = options.min_confidence {
        parameters.insert("min_confidence".to_string(), oip::double_param(c.into()));
    }
    let placement = match options.placement {
        PlacementArg::Auto => None,
        PlacementArg::Edge => Some("edge"),
        PlacementArg::Cloud => Some("cloud"),
    };
    if let Some(placement) = placement {
        parameters.insert("placement".to_string(), oip::string_param(placement));
    }
    ModelInferRequest {
        model_name: options
            .model
            .clone()
            .unwrap_or_else(|| OIP_DEFAULT_MODEL.to_string()),
        model_version: String::new(),
        id,
        parameters,
        inputs: vec![InferInputTensor {
            name: OIP_INPUT.to_string(),
            datatype: datatype.to_string(),
            shape: vec![1, pixels.len() as i64],
            parameters: Default::default(),
            contents: None,
        }],
        outputs: vec![],
        raw_input_contents: vec![raw],
    }
}

/// Reads the predicted class, the provenance and the timing parameters from an OIP answer.
/// Probabilities are read from `raw_output_contents` (as tritonclient does), else from typed
/// `fp32_contents`.
pub fn oip_answer(response: &ModelInferResponse) -> Result<Answer, tonic::Status> {
    let bad = |what: &str| tonic::Status::internal(format!("bad ModelInfer answer: {what}"));
    let position = response
        .outputs
        .iter()
        .position(|o| o.name == OIP_OUTPUT)
        .ok_or_else(|| bad("no `probabilities` output"))?;
    let probabilities: Vec<f32> = match response.raw_output_contents.get(position) {
        Some(raw) => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        None => response.outputs[position]
            .contents
            .as_ref()
            .map(|c| c.fp32_contents.clone())
            .unwrap_or_default(),
    };
    if probabilities.is_empty() {
        return Err(bad("empty `probabilities`"));
    }
    let param = |name: &str| response.parameters.get(name);
    Ok(Answer {
        class_index: argmax(&probabilities),
        served_by: param("served_by").and_then(oip::as_string).and_then(|s| {
            match s.to_ascii_lowercase().as_str() {
                "edge" => Some("edge"),
                "cloud" => Some("cloud"),
                _ => None,
            }
        }),
        reason: param("reason")
            .and_then(oip::as_string)
            .map(|r| r.to_ascii_uppercase()),
        degraded: param("degraded").and_then(oip::as_bool).unwrap_or(false),
        timing: oip_timing(&response.parameters),
        model: param("model")
            .and_then(oip::as_string)
            .filter(|m| !m.is_empty()),
    })
}

/// The timing parameters of an OIP answer; None when the server sent none of them (another
/// OIP server), so that its answers are not counted as taking zero time.
fn oip_timing(parameters: &HashMap<String, InferParameter>) -> Option<StageTimes> {
    let mut times = StageTimes::default();
    let mut any = false;
    for stage in Stage::ALL {
        if let Some(us) = parameters.get(stage.oip_parameter()).and_then(oip::as_f64) {
            times.set(stage, us.max(0.0) as u64);
            any = true;
        }
    }
    any.then_some(times)
}

/// "edge" or "cloud", the names the JSON outputs use.
pub fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Edge => "edge",
        Tier::Cloud => "cloud",
        Tier::Unspecified => "unspecified",
    }
}

pub use edgeinfer::code_name;

/// A gRPC error as a message for a person: the address, the code's name and the server's words.
pub fn status_error(addr: &str, status: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{addr}: {}: {}", code_name(status.code()), status.message())
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeinfer::inference::InferTensorContents;
    use edgeinfer::inference::model_infer_response::InferOutputTensor;

    #[test]
    fn oip_answers_read_raw_or_typed_outputs_provenance_and_timing() {
        let mut response = ModelInferResponse {
            outputs: vec![InferOutputTensor {
                name: OIP_OUTPUT.into(),
                contents: Some(InferTensorContents {
                    fp32_contents: vec![0.1, 0.7, 0.2],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        response
            .parameters
            .insert("served_by".into(), oip::string_param("cloud"));
        response
            .parameters
            .insert("degraded".into(), oip::bool_param(true));
        let answer = oip_answer(&response).unwrap();
        assert_eq!(answer.class_index, 1);
        assert_eq!(answer.served_by, Some("cloud"));
        assert!(answer.degraded);
        assert_eq!(answer.timing, None, "no timing parameters, no timing");

        response
            .parameters
            .insert("uplink_us".into(), oip::int64_param(1200));
        response
            .parameters
            .insert("total_us".into(), oip::int64_param(5000));
        let timing = oip_answer(&response).unwrap().timing.unwrap();
        assert_eq!(timing.get(Stage::Uplink), 1200);
        assert_eq!(timing.get(Stage::Total), 5000);
        assert_eq!(timing.get(Stage::Queue), 0);

        response.raw_output_contents =
            vec![[0.9f32, 0.1].iter().flat_map(|p| p.to_le_bytes()).collect()];
        assert_eq!(oip_answer(&response).unwrap().class_index, 0);
        response.raw_output_contents = vec![vec![]];
        assert_eq!(
            oip_answer(&response).unwrap_err().code(),
            tonic::Code::Internal
        );
        response.outputs.clear();
        assert!(oip_answer(&response).is_err());
    }

    #[test]
    fn native_timing_keeps_every_stage() {
        let response = InferResponse {
            served_by: Tier::Cloud as i32,
            timing: Some(edgeinfer::v1::Timing {
                queue_us: 1,
                edge_compute_us: 2,
                uplink_us: 3,
                cloud_us: 4,
                downlink_us: 5,
                total_us: 6,
            }),
            ..Default::default()
        };
        let timing = native_answer(&response).timing.unwrap();
        let got: Vec<u64> = Stage::ALL.iter().map(|&s| timing.get(s)).collect();
        assert_eq!(got, [1, 2, 3, 4, 5, 6]);
    }
}
