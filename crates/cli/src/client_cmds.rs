//! The client commands: `infer` (one request, explained), `bench` (load from the MNIST test set,
//! with latency percentiles from an HDR histogram) and `health` (a `grpc.health.v1` check for
//! container health checks).
//!
//! # Layout
//!
//! - this file: the commands' arguments and what they print.
//! - [`load`]: connecting, sending one request by either protocol, and the load generator
//!   (closed and open loop) shared with `edgeinfer sweep`.
//! - [`tally`]: what a run counts (latency histogram, errors by code, provenance, accuracy) and
//!   the `bench` report built from it.
//!
//! These commands know the service only through `proto/`: they must work against any server
//! speaking the native API or the Open Inference Protocol, not just ours.

pub(crate) mod load;
pub(crate) mod tally;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use edgeinfer::v1::{InferRequest, Placement, infer_request::Input};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use load::{
    LoadSpec, OipDtype, Pacing, PlacementArg, Protocol, RequestOptions, Stop, Target, TlsArgs,
};

/// Address of the edge under `edgeinfer up`.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:50051";
/// Environment variable that replaces [`DEFAULT_ADDR`] for `infer`, `bench` and `health`, so a
/// shell session or a script can point every command at another server once.
pub const ENV_ADDR: &str = "EDGEINFER_ADDR";
/// The servers' default latency budget (design.md section 3), assumed for `within_budget` when
/// neither `--budget-ms` nor the server's own policy says otherwise.
pub const DEFAULT_BUDGET_MS: u32 = 100;
/// How long a client waits for any one answer before counting it as DEADLINE_EXCEEDED. Long on
/// purpose: the gRPC deadline also caps the server's budget, and the budget is the experiment.
const DEFAULT_TIMEOUT_MS: u64 = 10_000;

// === infer ===

/// Arguments of `edgeinfer infer`.
#[derive(Debug, clap::Args)]
pub struct InferArgs {
    /// Server address (an edge or a cloud node).
    #[arg(long, env = ENV_ADDR, default_value = DEFAULT_ADDR)]
    pub addr: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Image file to classify (PNG or JPEG, any size; the server converts it).
    #[arg(
        long,
        conflicts_with = "mnist_test",
        required_unless_present = "mnist_test"
    )]
    pub image: Option<PathBuf>,
    /// Index of an MNIST test image (0 to 9999) to classify; its true label is shown too.
    #[arg(long, value_name = "INDEX")]
    pub mnist_test: Option<usize>,
    /// Latency budget in milliseconds (default: the server's).
    #[arg(long)]
    pub budget_ms: Option<u32>,
    /// Where the request may be answered.
    #[arg(long, value_enum, default_value_t = PlacementArg::Auto)]
    pub placement: PlacementArg,
    /// Confidence the edge must reach to answer by itself (default: the server's threshold).
    #[arg(long)]
    pub min_confidence: Option<f32>,
    /// Model or task to ask for (default: the node's task).
    #[arg(long)]
    pub model: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Sends one native `Infer` and prints the answer with its provenance and timing.
pub async fn run_infer(args: &InferArgs) -> Result<()> {
    let (input, truth) = match (&args.image, args.mnist_test) {
        (Some(path), _) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            (Input::Image(bytes), None)
        }
        (None, Some(index)) => {
            let data = load::mnist_test_set()?;
            if index >= data.len() {
                bail!(
                    "--mnist-test {index} is out of range: the test set has {} images (0 to {})",
                    data.len(),
                    data.len() - 1
                );
            }
            (
                Input::Raw(data.image(index).to_vec()),
                Some(data.labels[index]),
            )
        }
        (None, None) => bail!("give --image FILE or --mnist-test INDEX"),
    };

    let target = Target::connect(&args.addr, 1, &args.tls).await?;
    let mut request = tonic::Request::new(InferRequest {
        id: String::new(),
        input: Some(input),
        latency_budget_ms: args.budget_ms.unwrap_or(0),
        min_confidence: args.min_confidence,
        placement: Placement::from(args.placement) as i32,
        model: args.model.clone().unwrap_or_default(),
    });
    request.set_timeout(Duration::from_millis(DEFAULT_TIMEOUT_MS));
    let started = Instant::now();
    let response = target
        .native()
        .infer(request)
        .await
        .map_err(|status| load::status_error(&args.addr, &status))?
        .into_inner();
    let round_trip = started.elapsed();

    let timing = response.timing.unwrap_or_default();
    let served_by = load::tier_name(response.served_by());
    let reason = response.reason().as_str_name();
    if args.json {
        let out = json!({
            "id": response.id,
            "label": response.label,
            "class_index": response.class_index,
            "confidence": response.confidence,
            "true_label": truth,
            "correct": truth.map(|t| u32::from(t) == response.class_index),
            "served_by": served_by,
            "reason": reason,
            "degraded": response.degraded,
            "model": response.model,
            "edge_confidence": response.edge_confidence,
            "probabilities": response.probabilities,
            "timing_us": {
                "queue": timing.queue_us,
                "edge_compute": timing.edge_compute_us,
                "uplink": timing.uplink_us,
                "cloud": timing.cloud_us,
                "downlink": timing.downlink_us,
                "total": timing.total_us,
            },
            "round_trip_us": round_trip.as_micros() as u64,
        });
        println!("{out}");
        return Ok(());
    }

    println!(
        "label        {}  (confidence {:.4})",
        response.label, response.confidence
    );
    if let (Some(truth), Some(index)) = (truth, args.mnist_test) {
        let verdict = if u32::from(truth) == response.class_index {
            "right"
        } else {
            "wrong"
        };
        println!("true label   {truth}  (MNIST test image {index}: {verdict})");
    }
    let edge_confidence = if response.edge_confidence > 0.0 {
        format!(", edge confidence {:.4}", response.edge_confidence)
    } else {
        String::new()
    };
    println!("served by    {served_by}, reason {reason}{edge_confidence}");
    println!(
        "degraded     {}",
        if response.degraded {
            "yes (the edge answered although it wanted the cloud)"
        } else {
            "no"
        }
    );
    println!("model        {}", response.model);
    println!(
        "timing       total {} us on the server = queue {} + edge compute {} + uplink {} + cloud {} + downlink {}",
        timing.total_us,
        timing.queue_us,
        timing.edge_compute_us,
        timing.uplink_us,
        timing.cloud_us,
        timing.downlink_us
    );
    println!(
        "round trip   {} us seen by this client",
        round_trip.as_micros()
    );
    Ok(())
}

// === bench ===

/// Arguments of `edgeinfer bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Server address (an edge or a cloud node, or any Open Inference Protocol server).
    #[arg(long, env = ENV_ADDR, default_value = DEFAULT_ADDR)]
    pub addr: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// API to load: the native `Infer` or the Open Inference Protocol's `ModelInfer`.
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,
    /// Number of requests to send [default: 1000 unless --duration is given].
    #[arg(long, conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Send requests for this many seconds instead of a fixed count.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Closed loop: this many workers, each sending its next request when the previous
    /// answer arrives [default: 16 unless --rate is given].
    #[arg(long, conflicts_with = "rate")]
    pub concurrency: Option<usize>,
    /// Open loop: send this many requests per second whatever the answers do; latency is
    /// measured from each request's scheduled send time (no coordinated omission).
    #[arg(long, value_name = "REQ_PER_S")]
    pub rate: Option<f64>,
    /// Open loop only: the most requests in flight before sending waits (their latency still
    /// counts from the scheduled time).
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Latency budget in milliseconds sent with every request (default: the server's; the
    /// `within_budget` share is then measured against the edge's reported default or 100 ms).
    #[arg(long)]
    pub budget_ms: Option<u32>,
    /// Where requests may be answered.
    #[arg(long, value_enum, default_value_t = PlacementArg::Auto)]
    pub placement: PlacementArg,
    /// Confidence the edge must reach to answer by itself (default: the server's threshold).
    #[arg(long)]
    pub min_confidence: Option<f32>,
    /// Model or task to ask for (native default: the node's task; OIP default: `mnist`).
    #[arg(long)]
    pub model: Option<String>,
    /// OIP only: the datatype of the `input` tensor.
    #[arg(long, value_enum, default_value_t = OipDtype::Uint8)]
    pub oip_dtype: OipDtype,
    /// HTTP/2 connections to spread requests over [default: min(concurrency, 4)].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Client-side limit on each request, in milliseconds; a request over it counts as
    /// DEADLINE_EXCEEDED. It is also sent as the gRPC deadline.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_MS)]
    pub timeout_ms: u64,
    /// Print exactly one JSON object instead of the summary table: requests, ok, errors by
    /// code, throughput_rps, latency_us (p50, p90, p99, p999, max), accuracy, served_by,
    /// reasons, degraded, within_budget, and what was measured.
    #[arg(long)]
    pub json: bool,
}

/// Loads a server with MNIST test images and prints what it measured.
pub async fn run_bench(args: &BenchArgs) -> Result<()> {
    let pacing = match args.rate {
        Some(rate) if !(rate.is_finite() && rate > 0.0) => {
            bail!("--rate must be a positive number of requests per second, not {rate}")
        }
        Some(rate) => Pacing::Open {
            rate,
            max_in_flight: args.max_in_flight.max(1),
        },
        None => Pacing::Closed {
            concurrency: args.concurrency.unwrap_or(16).max(1),
        },
    };
    let stop = match (args.requests, args.duration) {
        (_, Some(seconds)) if !(seconds.is_finite() && seconds > 0.0) => {
            bail!("--duration must be a positive number of seconds, not {seconds}")
        }
        (_, Some(seconds)) => Stop::Duration(Duration::from_secs_f64(seconds)),
        (Some(0), None) => bail!("--requests must be at least 1"),
        (Some(n), None) => Stop::Requests(n),
        (None, None) => Stop::Requests(1000),
    };
    let connections = args
        .connections
        .unwrap_or_else(|| match pacing {
            Pacing::Closed { concurrency } => concurrency.min(4),
            Pacing::Open { .. } => 4,
        })
        .max(1);

    let inputs = load::mnist_test_set()?;
    let target = Target::connect(&args.addr, connections, &args.tls).await?;
    let budget_ms = match args.budget_ms {
        Some(ms) => ms,
        None => target
            .default_budget_ms()
            .await
            .unwrap_or(DEFAULT_BUDGET_MS),
    };
    let spec = LoadSpec {
        protocol: args.protocol,
        stop,
        pacing,
        options: RequestOptions {
            budget_ms: args.budget_ms,
            placement: args.placement,
            min_confidence: args.min_confidence,
            model: args.model.clone(),
            oip_dtype: args.oip_dtype,
            timeout: Duration::from_millis(args.timeout_ms.max(1)),
        },
        within_budget: Duration::from_millis(u64::from(budget_ms)),
        first_index: 0,
    };

    let progress = progress_bar(&stop);
    let tally = load::run(&target, &inputs, &spec, &progress).await?;
    progress.finish_and_clear();

    let report = tally.report(&spec, &args.addr, connections, budget_ms);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.summary());
    }
    if report.ok == 0 {
        bail!(
            "no request succeeded ({} errors); is a server listening at {}?",
            report.requests,
            args.addr
        );
    }
    Ok(())
}

/// A progress bar on stderr when stderr is a terminal, else a hidden one, so that logs and
/// pipes get no control characters.
fn progress_bar(stop: &Stop) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match stop {
        Stop::Requests(n) => ProgressBar::new(*n).with_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {pos}/{len} requests, {per_sec}, eta {eta}",
            )
            .expect("static template"),
        ),
        Stop::Duration(d) => ProgressBar::new_spinner()
            .with_style(
                ProgressStyle::with_template("{spinner} {elapsed}/{msg} {pos} requests, {per_sec}")
                    .expect("static template"),
            )
            .with_message(format!("{}s", d.as_secs_f64())),
    }
}

// === health ===

/// Arguments of `edgeinfer health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Server address.
    #[arg(long, env = ENV_ADDR, default_value = DEFAULT_ADDR)]
    pub addr: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Service to check, for example `edgeinfer.v1.Inference`; empty checks the whole server.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up after this many milliseconds (connecting included).
    #[arg(long, default_value_t = 3_000)]
    pub timeout_ms: u64,
}

/// `grpc.health.v1.Health/Check`: Ok when the server reports SERVING, an error naming the
/// status (so the process exits non-zero) otherwise.
pub async fn run_health(args: &HealthArgs) -> Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let what = if args.service.is_empty() {
        format!("{} (whole server)", args.addr)
    } else {
        format!("{} service {}", args.addr, args.service)
    };
    let check = async {
        let target = Target::connect_with_timeout(&args.addr, 1, &args.tls, timeout).await?;
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: args.service.clone(),
        });
        request.set_timeout(timeout);
        target
            .health()
            .check(request)
            .await
            .map(|r| r.into_inner().status())
            .map_err(|status| match status.code() {
                tonic::Code::NotFound => {
                    anyhow::anyhow!("{what}: unknown service (the server does not report it)")
                }
                tonic::Code::Unimplemented => {
                    anyhow::anyhow!("{what}: the server does not implement grpc.health.v1")
                }
                _ => load::status_error(&args.addr, &status),
            })
    };
    let status = tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: no answer within {} ms", args.timeout_ms))??;
    match status {
        ServingStatus::Serving => {
            println!("{what}: SERVING");
            Ok(())
        }
        other => bail!("{what}: {} (not SERVING)", other.as_str_name()),
    }
}
