//! The client commands: `infer` (one request, explained), `bench` (load from the MNIST test set,
//! with latency percentiles from an HDR histogram) and `health` (a `grpc.health.v1` check for
//! container health checks).
//!
//! # Layout
//!
//! - this file: `infer`, and what the commands share (default address and budget).
//! - [`target`]: the server: address, TLS, the headers of data-plane calls, connections.
//! - [`request`]: one request by either protocol, and its answer as one [`request::Answer`]
//!   (class, provenance, the server's timing breakdown).
//! - [`schedule`]: when an open loop sends (evenly or as a Poisson process), pure.
//! - [`load`]: the load generator (closed and open loop) shared with `edgeinfer sweep`.
//! - [`tally`]: what a run counts (latency and timing histograms, errors by code, provenance,
//!   accuracy) and the `bench` report built from it.
//! - [`bench`] and [`bench_plot`]: the `bench` command: steps, warm-up, targets, CSV, plot.
//! - [`health`]: the `health` command, with grpc_health_probe's exit statuses.
//! - [`exit`]: errors that carry an exit status, read by `main`.
//! - `explain`: `infer --explain FILE.png`, the answer's attribution as a heat map.
//! - `fake_server` (tests only): a gRPC server on port 0 with no model, for exact counts.
//!
//! These commands know the service only through `proto/`: they must work against any server
//! speaking the native API or the Open Inference Protocol, not just ours.

pub(crate) mod bench;
mod bench_plot;
pub(crate) mod exit;
mod explain;
#[cfg(test)]
mod fake_server;
pub(crate) mod health;
pub(crate) mod load;
pub(crate) mod request;
pub(crate) mod schedule;
pub(crate) mod tally;
pub(crate) mod target;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use edgeinfer::v1::{InferRequest, Placement, infer_request::Input};
use serde_json::json;

pub use bench::{BenchArgs, run_bench};
pub use exit::exit_code;
pub use health::{HealthArgs, run_health};
use request::RoutingArgs;
use target::ServerArgs;

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
pub(crate) const DEFAULT_TIMEOUT_MS: u64 = 10_000;

// === infer ===

/// Arguments of `edgeinfer infer`.
#[derive(Debug, clap::Args)]
pub struct InferArgs {
    #[command(flatten)]
    pub server: ServerArgs,
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
    #[command(flatten)]
    pub routing: RoutingArgs,
    /// Ask for the answer's explanation (an attribution per pixel, by the node's own model)
    /// and write it to FILE as a PNG: the digit as the model saw it, and beside it the
    /// attribution as a heat map (red pushed towards the label, blue away from it).
    #[arg(long, value_name = "FILE.png")]
    pub explain: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Sends one native `Infer` and prints the answer with its provenance and timing.
pub async fn run_infer(args: &InferArgs) -> Result<()> {
    if let Some(path) = &args.explain
        && !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        bail!(
            "--explain {}: the heat map is written as PNG; name a .png file",
            path.display()
        );
    }
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

    let target = args.server.connect(1).await?;
    let mut request = tonic::Request::new(InferRequest {
        id: String::new(),
        input: Some(input),
        latency_budget_ms: args.routing.budget_ms.unwrap_or(0),
        min_confidence: args.routing.min_confidence,
        placement: Placement::from(args.routing.placement) as i32,
        model: args.routing.model.clone().unwrap_or_default(),
        explain: args.explain.is_some(),
    });
    // The image as the model sees it, to draw beside the explanation.
    let seen = match (&args.explain, &request.get_ref().input) {
        (Some(_), Some(input)) => Some(explain::model_view(input)?),
        _ => None,
    };
    request.set_timeout(Duration::from_millis(DEFAULT_TIMEOUT_MS));
    let started = Instant::now();
    let response = target
        .native()
        .infer(request)
        .await
        .map_err(|status| request::status_error(&args.server.addr, &status))?
        .into_inner();
    let round_trip = started.elapsed();

    if let (Some(path), Some(seen)) = (&args.explain, &seen) {
        explain::write_png(path, seen, &response.explanation)?;
        if !args.json {
            eprintln!("explanation written to {}", path.display());
        }
    }
    let timing = response.timing.unwrap_or_default();
    let served_by = request::tier_name(response.served_by());
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
            "ood_score": response.ood_score,
            "out_of_distribution": response.out_of_distribution,
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
    if let Some(score) = response.ood_score {
        let verdict = if response.out_of_distribution {
            "unlike the model's training data"
        } else {
            "like the model's training data"
        };
        println!("input        ood score {score:.3} ({verdict})");
    }
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
