//! Talking to a server: connections, one request by either protocol, and the load generator
//! behind `edgeinfer bench` and `edgeinfer sweep`.
//!
//! Two ways to pace load:
//! - closed loop: `concurrency` workers, each sending its next request when its previous answer
//!   arrives; latency is measured from the actual send.
//! - open loop: requests are scheduled at a fixed rate by a dedicated OS thread (its sleep is
//!   precise to tens of microseconds, where tokio's timer rounds up to whole milliseconds), and
//!   latency is measured from each request's *scheduled* time, so a slow server cannot make the
//!   generator send less and hide its own slowness (coordinated omission).
//!
//! Requests are spread round-robin over several HTTP/2 connections so that one connection's
//! flow control and single reader task are not what is measured.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use edgeinfer::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use edgeinfer::inference::model_infer_request::InferInputTensor;
use edgeinfer::inference::{ModelInferRequest, ModelInferResponse};
use edgeinfer::oip;
use edgeinfer::v1::edge_admin_client::EdgeAdminClient;
use edgeinfer::v1::inference_client::InferenceClient;
use edgeinfer::v1::{GetStatusRequest, InferRequest, Placement, Tier, infer_request::Input};
use edgeinfer_model::mnist::{self, Dataset};
use edgeinfer_serving::tls::ClientFiles;
use futures::StreamExt;
use indicatif::ProgressBar;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;

use super::tally::Tally;

/// Name of the OIP input tensor of the MNIST task (design.md section 4).
pub const OIP_INPUT: &str = "input";
/// Name of the OIP output tensor holding the probabilities.
pub const OIP_OUTPUT: &str = "probabilities";
/// The task's OIP model name; on the edge it goes through the router.
pub const OIP_DEFAULT_MODEL: &str = "mnist";

/// Loads the MNIST test set from the project's data directory (or `EDGEINFER_DATA_DIR`).
pub fn mnist_test_set() -> Result<Dataset> {
    let dir = mnist::default_data_dir();
    let data = mnist::load_test(&dir).with_context(|| {
        format!(
            "cannot load the MNIST test set from {} (set {} to the directory holding t10k-*.gz)",
            dir.display(),
            mnist::ENV_DATA_DIR
        )
    })?;
    anyhow::ensure!(
        !data.is_empty(),
        "the MNIST test set in {} is empty",
        dir.display()
    );
    Ok(data)
}

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

/// When a run stops sending.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    Requests(u64),
    Duration(Duration),
}

/// How a run paces its requests.
#[derive(Clone, Copy, Debug)]
pub enum Pacing {
    Closed { concurrency: usize },
    Open { rate: f64, max_in_flight: usize },
}

/// One run of load.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub protocol: Protocol,
    pub stop: Stop,
    pub pacing: Pacing,
    pub options: RequestOptions,
    /// Answers within this time count as within budget.
    pub within_budget: Duration,
    /// Index of the first test image; later requests take the following ones, cycling.
    pub first_index: usize,
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
}

/// TLS settings of a client command, for https:// addresses.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM CA certificate(s) the server's certificate must chain to, for an https:// address
    /// [default: the system's roots].
    #[arg(long, env = "EDGEINFER_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// PEM certificate chain to present to the server (mutual TLS).
    #[arg(long, env = "EDGEINFER_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, env = "EDGEINFER_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl TlsArgs {
    fn files(&self) -> ClientFiles<'_> {
        ClientFiles {
            ca: self.ca.as_deref().map(|p| ("--ca / EDGEINFER_CA", p)),
            cert: self.cert.as_deref().map(|p| ("--cert / EDGEINFER_CERT", p)),
            key: self.key.as_deref().map(|p| ("--key / EDGEINFER_KEY", p)),
        }
    }
}

// === impl Target ===

/// A server reached over a few HTTP/2 connections, used round-robin.
pub struct Target {
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl Target {
    /// Connects `connections` HTTP/2 connections to `addr` (`http://` is assumed when the
    /// address has no scheme; `https://` uses TLS with `tls`), failing with a clear message
    /// when nothing listens there.
    pub async fn connect(addr: &str, connections: usize, tls: &TlsArgs) -> Result<Self> {
        Self::connect_with_timeout(addr, connections, tls, Duration::from_secs(5)).await
    }

    pub async fn connect_with_timeout(
        addr: &str,
        connections: usize,
        tls: &TlsArgs,
        timeout: Duration,
    ) -> Result<Self> {
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| {
                format!("{addr:?} is not a valid server address (try http://HOST:PORT)")
            })?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        let files = tls.files();
        let uri = endpoint.uri().clone();
        match (uri.scheme_str(), uri.host()) {
            (Some("https"), Some(host)) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                endpoint = endpoint
                    .tls_config(files.config(host)?)
                    .with_context(|| format!("cannot set up TLS to {url}"))?;
            }
            _ if files.any() => {
                bail!("--ca, --cert and --key need an https:// address; the address is {url:?}")
            }
            _ => {}
        }
        let mut channels = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            let channel = endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to {url}: is the server running?"))?;
            channels.push(channel);
        }
        Ok(Self {
            channels,
            next: AtomicUsize::new(0),
        })
    }

    fn channel(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }

    pub fn native(&self) -> InferenceClient<Channel> {
        InferenceClient::new(self.channel())
    }

    pub fn oip(&self) -> GrpcInferenceServiceClient<Channel> {
        GrpcInferenceServiceClient::new(self.channel())
    }

    pub fn admin(&self) -> EdgeAdminClient<Channel> {
        EdgeAdminClient::new(self.channel())
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
    }

    /// The default budget the server reports through `EdgeAdmin/GetStatus`, when it is an
    /// edge that answers quickly; None for a cloud or any other server.
    pub async fn default_budget_ms(&self) -> Option<u32> {
        let mut request = tonic::Request::new(GetStatusRequest {});
        request.set_timeout(Duration::from_secs(2));
        let mut admin = self.admin();
        let status = tokio::time::timeout(Duration::from_secs(2), admin.get_status(request))
            .await
            .ok()?
            .ok()?;
        status
            .into_inner()
            .policy
            .map(|p| p.default_budget_ms)
            .filter(|&ms| ms > 0)
    }

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
                Protocol::Native => self.classify_native(options, id, pixels).await,
                Protocol::Oip => self.classify_oip(options, id, pixels).await,
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

    async fn classify_native(
        &self,
        options: &RequestOptions,
        id: String,
        pixels: &[u8],
    ) -> Result<Answer, tonic::Status> {
        let mut request = tonic::Request::new(InferRequest {
            id,
            input: Some(Input::Raw(pixels.to_vec())),
            latency_budget_ms: options.budget_ms.unwrap_or(0),
            min_confidence: options.min_confidence,
            placement: Placement::from(options.placement) as i32,
            model: options.model.clone().unwrap_or_default(),
        });
        request.set_timeout(options.timeout);
        let response = self.native().infer(request).await?.into_inner();
        Ok(Answer {
            class_index: response.class_index as usize,
            served_by: match response.served_by() {
                Tier::Unspecified => None,
                tier => Some(tier_name(tier)),
            },
            reason: Some(response.reason().as_str_name().to_string())
                .filter(|r| r != "REASON_UNSPECIFIED"),
            degraded: response.degraded,
        })
    }

    async fn classify_oip(
        &self,
        options: &RequestOptions,
        id: String,
        pixels: &[u8],
    ) -> Result<Answer, tonic::Status> {
        let mut request = tonic::Request::new(oip_request(options, id, pixels));
        request.set_timeout(options.timeout);
        let response = self.oip().model_infer(request).await?.into_inner();
        oip_answer(&response)
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
    let mut parameters = std::collections::HashMap::new();
    if let Some(ms) = options.budget_ms {
        parameters.insert("latency_budget_ms".to_string(), oip::int64_param(ms.into()));
    }
    if let Some(c) = options.min_confidence {
        parameters.insert("min_confidence".to_string(), oip::double_param(c.into()));
    }
    match options.placement {
        PlacementArg::Auto => {}
        PlacementArg::Edge => {
            parameters.insert("placement".to_string(), oip::string_param("edge"));
        }
        PlacementArg::Cloud => {
            parameters.insert("placement".to_string(), oip::string_param("cloud"));
        }
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

/// Reads the predicted class and the provenance parameters from an OIP answer. Probabilities
/// are read from `raw_output_contents` (as tritonclient does), else from typed `fp32_contents`.
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
    let class_index = argmax(&probabilities).ok_or_else(|| bad("empty `probabilities`"))?;
    let param = |name: &str| response.parameters.get(name);
    Ok(Answer {
        class_index,
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
    })
}

fn argmax(values: &[f32]) -> Option<usize> {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

/// "edge" or "cloud", the names the JSON outputs use.
pub fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Edge => "edge",
        Tier::Cloud => "cloud",
        Tier::Unspecified => "unspecified",
    }
}

/// The canonical upper-case name of a gRPC status code, as other gRPC tools print it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A gRPC error as a message for a person: the address, the code's name and the server's words.
pub fn status_error(addr: &str, status: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{addr}: {}: {}", code_name(status.code()), status.message())
}

// === the load generator ===

/// Runs `spec` against `target` with `inputs` and counts what happened.
pub async fn run(
    target: &Target,
    inputs: &Dataset,
    spec: &LoadSpec,
    progress: &ProgressBar,
) -> Result<Tally> {
    let tally = Arc::new(Mutex::new(Tally::new()));
    let started = Instant::now();
    match spec.pacing {
        Pacing::Closed { concurrency } => {
            closed_loop(target, inputs, spec, concurrency, &tally, progress).await
        }
        Pacing::Open {
            rate,
            max_in_flight,
        } => open_loop(target, inputs, spec, rate, max_in_flight, &tally, progress).await?,
    }
    let mut tally = Arc::try_unwrap(tally)
        .map_err(|_| anyhow::anyhow!("a request task outlived its run"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a request task panicked"))?;
    tally.elapsed = started.elapsed();
    Ok(tally)
}

/// Sends request number `i` (cycling over the inputs) and records its outcome, with latency
/// counted from `since`.
async fn send_and_record(
    target: &Target,
    inputs: &Dataset,
    spec: &LoadSpec,
    i: u64,
    since: Instant,
    tally: &Mutex<Tally>,
) {
    let index = (spec.first_index + i as usize) % inputs.len();
    let result = target
        .classify(
            spec.protocol,
            &spec.options,
            format!("bench-{i}"),
            inputs.image(index),
        )
        .await;
    let latency = since.elapsed();
    tally.lock().expect("tally lock").record(
        latency,
        result,
        inputs.labels[index],
        spec.within_budget,
    );
}

async fn closed_loop(
    target: &Target,
    inputs: &Dataset,
    spec: &LoadSpec,
    concurrency: usize,
    tally: &Mutex<Tally>,
    progress: &ProgressBar,
) {
    let issued = AtomicU64::new(0);
    let deadline = match spec.stop {
        Stop::Duration(d) => Some(Instant::now() + d),
        Stop::Requests(_) => None,
    };
    let worker = || async {
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let i = issued.fetch_add(1, Ordering::Relaxed);
            if let Stop::Requests(n) = spec.stop
                && i >= n
            {
                break;
            }
            send_and_record(target, inputs, spec, i, Instant::now(), tally).await;
            progress.inc(1);
        }
    };
    futures::future::join_all((0..concurrency).map(|_| worker())).await;
}

async fn open_loop(
    target: &Target,
    inputs: &Dataset,
    spec: &LoadSpec,
    rate: f64,
    max_in_flight: usize,
    tally: &Mutex<Tally>,
    progress: &ProgressBar,
) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let stop = spec.stop;
    let start = Instant::now();
    let start_std = start.into_std();
    // The schedule runs on its own thread: std's sleep wakes within tens of microseconds of
    // the scheduled time, where tokio's timer would add up to a millisecond to every latency.
    let scheduler = std::thread::Builder::new()
        .name("bench-schedule".into())
        .spawn(move || {
            let period = 1.0 / rate;
            for i in 0u64.. {
                let offset = Duration::from_secs_f64(period * i as f64);
                match stop {
                    Stop::Requests(n) if i >= n => break,
                    Stop::Duration(d) if offset >= d => break,
                    _ => {}
                }
                let scheduled = start_std + offset;
                let now = std::time::Instant::now();
                if scheduled > now {
                    std::thread::sleep(scheduled - now);
                }
                if tx.send((i, Instant::from_std(scheduled))).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the scheduling thread")?;

    let lag = Mutex::new(hdrhistogram::Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?);
    // Requests run concurrently within this task (no spawn), so they may borrow the target,
    // the inputs and the tally; the FuturesUnordered keeps them polled, and its length is the
    // number in flight. At the cap, scheduled requests wait in the channel, their latency
    // clock already running.
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = running.next(), if !running.is_empty() => {}
            next = rx.recv(), if running.len() < max_in_flight => {
                let Some((i, scheduled)) = next else { break };
                lag.lock()
                    .expect("lag lock")
                    .saturating_record(scheduled.elapsed().as_micros() as u64);
                running.push(async move {
                    send_and_record(target, inputs, spec, i, scheduled, tally).await;
                    progress.inc(1);
                });
            }
        }
    }
    while running.next().await.is_some() {}
    scheduler
        .join()
        .map_err(|_| anyhow::anyhow!("the scheduling thread panicked"))?;
    tally.lock().expect("tally lock").schedule_lag = Some(lag.into_inner().expect("lag lock"));
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The load generator against a fake server on port 0, so its counting is tested with no
    //! model: the fake "classifies" an image as its first pixel, sends images whose second
    //! pixel is set to the "cloud", and refuses images whose third pixel is set.

    use super::*;
    use edgeinfer::inference::grpc_inference_service_server::{
        GrpcInferenceService, GrpcInferenceServiceServer,
    };
    use edgeinfer::inference::model_infer_response::InferOutputTensor;
    use edgeinfer::inference::*;
    use edgeinfer::v1::inference_server::{Inference, InferenceServer};
    use edgeinfer::v1::{InferResponse, ListModelsRequest, ListModelsResponse, Reason};
    use tonic::{Request, Response, Status};

    #[derive(Default)]
    struct Fake;

    fn decide(pixels: &[u8]) -> Result<(usize, bool), Status> {
        if pixels.len() != 784 {
            return Err(Status::invalid_argument("raw: expected 784 bytes"));
        }
        if pixels[2] == 1 {
            return Err(Status::resource_exhausted("queue full"));
        }
        Ok((usize::from(pixels[0]), pixels[1] == 1))
    }

    #[tonic::async_trait]
    impl Inference for Fake {
        async fn infer(&self, r: Request<InferRequest>) -> Result<Response<InferResponse>, Status> {
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
            let mut parameters = std::collections::HashMap::new();
            let tier = if cloud { "CLOUD" } else { "EDGE" };
            parameters.insert("served_by".to_string(), oip::string_param(tier));
            let reason = if cloud { "LOW_CONFIDENCE" } else { "CONFIDENT" };
            parameters.insert("reason".to_string(), oip::string_param(reason));
            parameters.insert("degraded".to_string(), oip::bool_param(false));
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
                raw_output_contents: vec![
                    probabilities.iter().flat_map(|p| p.to_le_bytes()).collect(),
                ],
                ..Default::default()
            }))
        }
    }

    async fn fake_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(InferenceServer::new(Fake))
                .add_service(GrpcInferenceServiceServer::new(Fake))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr.to_string()
    }

    /// 100 images: image i is labelled i % 10; every 4th goes to the "cloud"; every 10th is
    /// answered wrongly (its first pixel says another class); image 99 is refused.
    fn dataset() -> Dataset {
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

    fn spec(protocol: Protocol, stop: Stop, pacing: Pacing) -> LoadSpec {
        LoadSpec {
            protocol,
            stop,
            pacing,
            options: RequestOptions {
                budget_ms: Some(100),
                placement: PlacementArg::Auto,
                min_confidence: None,
                model: None,
                oip_dtype: OipDtype::Uint8,
                timeout: Duration::from_secs(5),
            },
            within_budget: Duration::from_secs(5),
            first_index: 0,
        }
    }

    fn check_counts(tally: &Tally, requests: u64) {
        // Per 100 requests: one refused, ten answered wrongly, 25 by the "cloud".
        let rounds = requests / 100;
        assert_eq!(tally.requests, requests);
        assert_eq!(tally.errors.get("RESOURCE_EXHAUSTED"), Some(&rounds));
        assert_eq!(tally.ok, requests - rounds);
        assert_eq!(tally.correct, tally.ok - 10 * rounds);
        assert_eq!(tally.served_cloud, 25 * rounds);
        assert_eq!(tally.served_edge, tally.ok - 25 * rounds);
        assert_eq!(tally.reasons.get("LOW_CONFIDENCE"), Some(&(25 * rounds)));
        assert_eq!(tally.within_budget, tally.ok);
        assert_eq!(tally.latency.len(), tally.ok);
    }

    #[tokio::test]
    async fn closed_loop_counts_every_outcome_in_both_protocols() {
        let addr = fake_server().await;
        let target = Target::connect(&addr, 3, &TlsArgs::default())
            .await
            .unwrap();
        let data = dataset();
        for protocol in [Protocol::Native, Protocol::Oip] {
            let s = spec(
                protocol,
                Stop::Requests(300),
                Pacing::Closed { concurrency: 8 },
            );
            let tally = run(&target, &data, &s, &ProgressBar::hidden())
                .await
                .unwrap();
            check_counts(&tally, 300);
        }
    }

    #[tokio::test]
    async fn oip_fp32_inputs_are_scaled_pixels() {
        let addr = fake_server().await;
        let target = Target::connect(&addr, 1, &TlsArgs::default())
            .await
            .unwrap();
        let mut s = spec(
            Protocol::Oip,
            Stop::Requests(100),
            Pacing::Closed { concurrency: 2 },
        );
        s.options.oip_dtype = OipDtype::Fp32;
        let tally = run(&target, &dataset(), &s, &ProgressBar::hidden())
            .await
            .unwrap();
        check_counts(&tally, 100);
    }

    #[tokio::test]
    async fn open_loop_sends_at_the_rate_and_counts_from_the_schedule() {
        let addr = fake_server().await;
        let target = Target::connect(&addr, 2, &TlsArgs::default())
            .await
            .unwrap();
        let s = spec(
            Protocol::Native,
            Stop::Requests(200),
            Pacing::Open {
                rate: 2000.0,
                max_in_flight: 64,
            },
        );
        let tally = run(&target, &dataset(), &s, &ProgressBar::hidden())
            .await
            .unwrap();
        check_counts(&tally, 200);
        let lag = tally.schedule_lag.expect("open loop records its lag");
        assert_eq!(lag.len(), 200);
        // 200 requests at 2000/s take at least 0.1 s whatever the server does.
        assert!(
            tally.elapsed >= Duration::from_millis(99),
            "{:?}",
            tally.elapsed
        );
    }

    #[tokio::test]
    async fn duration_stops_a_closed_loop() {
        let addr = fake_server().await;
        let target = Target::connect(&addr, 1, &TlsArgs::default())
            .await
            .unwrap();
        let s = spec(
            Protocol::Native,
            Stop::Duration(Duration::from_millis(200)),
            Pacing::Closed { concurrency: 2 },
        );
        let tally = run(&target, &dataset(), &s, &ProgressBar::hidden())
            .await
            .unwrap();
        assert!(tally.requests > 0);
        assert!(
            tally.elapsed < Duration::from_secs(5),
            "{:?}",
            tally.elapsed
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_a_clear_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = Target::connect(&addr.to_string(), 1, &TlsArgs::default())
            .await
            .err()
            .expect("nothing listens");
        assert!(
            format!("{err:#}").contains("is the server running"),
            "{err:#}"
        );
    }

    #[test]
    fn oip_answers_read_raw_or_typed_outputs_and_provenance() {
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
        response.raw_output_contents =
            vec![[0.9f32, 0.1].iter().flat_map(|p| p.to_le_bytes()).collect()];
        assert_eq!(oip_answer(&response).unwrap().class_index, 0);
        response.outputs.clear();
        assert!(oip_answer(&response).is_err());
    }
}
