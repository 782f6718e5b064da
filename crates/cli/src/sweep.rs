//! `edgeinfer sweep`: the accuracy / offload / latency trade-off, measured over a grid of
//! confidence thresholds and link profiles.
//!
//! Every cell of the grid goes the same way, whether the servers run in this process or
//! elsewhere: set the edge's link profile (`EdgeAdmin/SetLinkProfile`, with a fixed seed so
//! each cell sees the same link) and threshold (`EdgeAdmin/SetPolicy`), send a short warm-up
//! so the router's estimates (RTT, bandwidth, cloud time) learn the new link, then load the
//! edge with the MNIST test set and count. In-process mode only differs in who starts the
//! servers: both on port 0, then the same path.
//!
//! # Layout
//!
//! - this file: arguments, the grid, the table (CSV and JSON).
//! - [`plots`]: the two PNG plots.

mod plots;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use edgeinfer::v1::{SetLinkProfileRequest, SetPolicyRequest, set_link_profile_request};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::client_cmds::load::{
    self, LoadSpec, OipDtype, Pacing, PlacementArg, Protocol, RequestOptions, Stop, Target, TlsArgs,
};
use crate::client_cmds::tally::{Percentiles, Tally};
use crate::client_cmds::{DEFAULT_BUDGET_MS, load::status_error};

/// Requests per second of the default open loop.
const DEFAULT_RATE: f64 = 400.0;

/// Arguments of `edgeinfer sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Confidence thresholds of the edge, comma-separated, each in [0, 1].
    #[arg(
        long,
        env = "EDGEINFER_SWEEP_THRESHOLDS",
        value_delimiter = ',',
        default_value = "0.5,0.8,0.9,0.95,0.99,0.999"
    )]
    pub thresholds: Vec<f32>,
    /// Link profiles between edge and cloud, comma-separated (see `edgeinfer link profiles`).
    #[arg(
        long,
        env = "EDGEINFER_SWEEP_PROFILES",
        value_delimiter = ',',
        default_value = "urllc,embb-midband,lte,cell-edge"
    )]
    pub profiles: Vec<String>,
    /// Measured requests per cell (threshold and profile).
    #[arg(long, env = "EDGEINFER_SWEEP_REQUESTS", default_value_t = 2000)]
    pub requests: u64,
    /// Seconds of warm-up load per cell, not counted. Switching the link makes the edge forget
    /// its estimates; it relearns the round trip from probes sent every 250 ms, so 3 s give it
    /// a dozen samples before anything is measured.
    #[arg(
        long,
        env = "EDGEINFER_SWEEP_WARMUP",
        value_name = "SECONDS",
        default_value_t = 3.0
    )]
    pub warmup: f64,
    /// Open loop (the default): requests per second sent to the edge whatever its answers do,
    /// latency counted from each request's scheduled time. A moderate rate measures the link
    /// and the models rather than queues: on a small machine running both nodes, a saturating
    /// load would make every profile look like its CPU [default: 400].
    #[arg(
        long,
        env = "EDGEINFER_SWEEP_RATE",
        value_name = "REQ_PER_S",
        conflicts_with = "concurrency"
    )]
    pub rate: Option<f64>,
    /// Closed loop instead: this many workers, each sending when its previous answer arrives.
    #[arg(long, env = "EDGEINFER_SWEEP_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Latency budget sent with every request (default: the edge's default budget).
    #[arg(long, env = "EDGEINFER_SWEEP_BUDGET_MS")]
    pub budget_ms: Option<u32>,
    /// API to load the edge with.
    #[arg(long, env = "EDGEINFER_SWEEP_PROTOCOL", value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,
    /// Seed of the link's random processes, set at the start of every cell.
    #[arg(long, env = "EDGEINFER_SWEEP_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Threshold whose latency CDF is plotted [default: the middle of --thresholds].
    #[arg(long, env = "EDGEINFER_SWEEP_CDF_THRESHOLD")]
    pub cdf_threshold: Option<f32>,
    /// Use a running edge node at this address instead of starting edge and cloud in process.
    /// Its threshold and link profile are changed during the sweep and restored at the end.
    #[arg(long, env = "EDGEINFER_SWEEP_EDGE", value_name = "ADDR")]
    pub edge: Option<String>,
    /// With --edge: the edge's admin listener, where its threshold and link are set.
    #[arg(
        long,
        env = "EDGEINFER_SWEEP_EDGE_ADMIN",
        value_name = "ADDR",
        requires = "edge",
        default_value = "http://127.0.0.1:50061"
    )]
    pub edge_admin: String,
    /// With --edge: the cloud behind it, checked for health before the sweep starts.
    #[arg(
        long,
        env = "EDGEINFER_SWEEP_CLOUD",
        value_name = "ADDR",
        requires = "edge"
    )]
    pub cloud: Option<String>,
    /// TLS settings for https:// --edge and --cloud addresses.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Directory for sweep.csv, sweep.json, accuracy_vs_offload.png and latency_cdf.png.
    #[arg(long, env = "EDGEINFER_SWEEP_OUT")]
    pub out: PathBuf,
}

/// One cell of the grid: what the edge did at one threshold over one link profile.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub profile: String,
    #[serde(serialize_with = "as_written")]
    pub threshold: f32,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    /// Over answered requests.
    pub accuracy: f64,
    /// Share of answers given by the edge.
    pub edge_share: f64,
    /// Share of answers given by the cloud.
    pub offloaded_share: f64,
    /// Share of answers the edge gave although it wanted the cloud.
    pub degraded_share: f64,
    /// Share of requests answered within the budget.
    pub within_budget: f64,
    pub latency_us: Percentiles,
    pub throughput_rps: f64,
    pub budget_ms: u32,
    pub reasons: std::collections::BTreeMap<String, u64>,
}

/// Writes an f32 as the decimal it was given as (0.8, not 0.800000011920929): JSON numbers are
/// read as f64, where the f32 nearest 0.8 is another number.
fn as_written<S: serde::Serializer>(value: &f32, serializer: S) -> Result<S::Ok, S::Error> {
    let shortest: f64 = value.to_string().parse().unwrap_or(f64::from(*value));
    serializer.serialize_f64(shortest)
}

impl Row {
    fn new(profile: &str, threshold: f32, budget_ms: u32, tally: &Tally) -> Self {
        let share = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
        Self {
            profile: profile.to_string(),
            threshold,
            requests: tally.requests,
            ok: tally.ok,
            errors: tally.requests - tally.ok,
            accuracy: tally.accuracy().unwrap_or(0.0),
            edge_share: share(tally.served_edge, tally.ok),
            offloaded_share: share(tally.served_cloud, tally.ok),
            degraded_share: share(tally.degraded, tally.ok),
            within_budget: share(tally.within_budget, tally.requests),
            latency_us: tally.percentiles(),
            throughput_rps: tally.throughput_rps(),
            budget_ms,
            reasons: tally.reasons.clone(),
        }
    }
}

/// A finished sweep: the table, and each cell's latency histogram for the CDF plot.
pub struct Sweep {
    pub rows: Vec<Row>,
    pub latencies: Vec<Histogram<u64>>,
    pub budget_ms: u32,
    pub cdf_threshold: f32,
}

/// Runs the sweep and writes its table and plots into `--out`.
pub async fn run_sweep(args: &SweepArgs) -> Result<()> {
    validate(args)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;

    let sweep = match &args.edge {
        Some(edge) => {
            if let Some(cloud) = &args.cloud {
                check_cloud(cloud, &args.tls).await?;
            }
            sweep_edge(edge, &args.edge_admin, args).await?
        }
        None => {
            // Port 0 for both, no metrics: nothing here can collide with a running `up`.
            let servers = edgeinfer_cli::local::start(edgeinfer_cli::local::LocalOptions {
                profile: args.profiles[0].clone(),
                seed: args.seed,
                budget_ms: args.budget_ms,
                ..Default::default()
            })
            .await
            .context("cannot start edge and cloud in this process")?;
            eprintln!(
                "edge on {}, cloud on {} (in this process)",
                servers.edge, servers.cloud
            );
            let result = sweep_edge(
                &format!("http://{}", servers.edge),
                &format!("http://{}", servers.edge_admin),
                args,
            )
            .await;
            if let Err(e) = servers.stop().await {
                eprintln!("warning: the in-process servers did not stop cleanly: {e:#}");
            }
            result?
        }
    };

    write_table(&sweep, args, &args.out)?;
    plots::accuracy_vs_offload(&args.out.join("accuracy_vs_offload.png"), &sweep)?;
    plots::latency_cdf(&args.out.join("latency_cdf.png"), &sweep)?;
    eprintln!(
        "wrote sweep.csv, sweep.json, accuracy_vs_offload.png and latency_cdf.png to {}",
        args.out.display()
    );
    Ok(())
}

fn validate(args: &SweepArgs) -> Result<()> {
    ensure!(!args.thresholds.is_empty(), "--thresholds is empty");
    for &t in &args.thresholds {
        ensure!(
            (0.0..=1.0).contains(&t),
            "--thresholds: {t} is not in [0, 1]"
        );
    }
    ensure!(!args.profiles.is_empty(), "--profiles is empty");
    ensure!(args.requests > 0, "--requests must be at least 1");
    ensure!(
        args.warmup.is_finite() && args.warmup >= 0.0,
        "--warmup must be a number of seconds, 0 or more, not {}",
        args.warmup
    );
    ensure!(
        args.concurrency != Some(0),
        "--concurrency must be at least 1"
    );
    if let Some(rate) = args.rate {
        ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of requests per second, not {rate}"
        );
    }
    if let Some(t) = args.cdf_threshold {
        ensure!(
            args.thresholds.contains(&t),
            "--cdf-threshold {t} is not one of --thresholds"
        );
    }
    Ok(())
}

/// Open loop at `--rate` (400 req/s by default) unless `--concurrency` asks for a closed loop.
fn pacing(args: &SweepArgs) -> Pacing {
    match args.concurrency {
        Some(concurrency) => Pacing::Closed { concurrency },
        None => Pacing::Open {
            rate: args.rate.unwrap_or(DEFAULT_RATE),
            max_in_flight: 10_000,
        },
    }
}

/// The threshold whose latency CDF is plotted: the one asked for, else the middle one.
fn cdf_threshold(args: &SweepArgs) -> f32 {
    args.cdf_threshold.unwrap_or_else(|| {
        let mut sorted = args.thresholds.clone();
        sorted.sort_by(f32::total_cmp);
        sorted[sorted.len() / 2]
    })
}

async fn check_cloud(cloud: &str, tls: &TlsArgs) -> Result<()> {
    let target = Target::connect(cloud, 1, tls).await?;
    let status = target
        .health()
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .map_err(|s| status_error(cloud, &s))?
        .into_inner()
        .status();
    ensure!(
        status == tonic_health::pb::health_check_response::ServingStatus::Serving,
        "the cloud at {cloud} is {}, not SERVING",
        status.as_str_name()
    );
    Ok(())
}

/// Runs every cell against the edge at `edge`, then puts its policy and link back.
async fn sweep_edge(edge: &str, admin_addr: &str, args: &SweepArgs) -> Result<Sweep> {
    let target = Target::connect(edge, 4, &args.tls).await?;
    let admin_target = Target::connect(admin_addr, 1, &args.tls).await?;
    let original = admin_target
        .admin()
        .get_status(edgeinfer::v1::GetStatusRequest {})
        .await
        .map_err(|s| {
            if s.code() == tonic::Code::Unimplemented {
                anyhow::anyhow!(
                    "{admin_addr} does not serve edgeinfer.v1.EdgeAdmin: the sweep needs an \
                     edge node's admin listener (--edge-admin)"
                )
            } else {
                status_error(admin_addr, &s)
            }
        })?
        .into_inner();
    let budget_ms = args
        .budget_ms
        .or(original.policy.map(|p| p.default_budget_ms))
        .filter(|&ms| ms > 0)
        .unwrap_or(DEFAULT_BUDGET_MS);
    let inputs = load::mnist_test_set()?;

    let result = run_cells(&target, &admin_target, &inputs, args, budget_ms).await;

    // Leave a shared edge as we found it, even when a cell failed.
    let mut admin = admin_target.admin();
    if let Some(policy) = original.policy {
        let restore = SetPolicyRequest {
            threshold: Some(policy.threshold),
            default_budget_ms: None,
            confidence_metric: 0,
        };
        if let Err(s) = admin.set_policy(restore).await {
            eprintln!(
                "warning: could not restore the edge's threshold: {}",
                s.message()
            );
        }
    }
    let restore = SetLinkProfileRequest {
        profile: Some(set_link_profile_request::Profile::Name(
            original.link_profile.clone(),
        )),
        seed: 0,
    };
    if let Err(s) = admin.set_link_profile(restore).await {
        eprintln!(
            "warning: could not restore the edge's link profile {:?}: {}",
            original.link_profile,
            s.message()
        );
    }

    let (rows, latencies) = result?;
    Ok(Sweep {
        rows,
        latencies,
        budget_ms,
        cdf_threshold: cdf_threshold(args),
    })
}

async fn run_cells(
    target: &Target,
    admin: &Target,
    inputs: &edgeinfer_model::mnist::Dataset,
    args: &SweepArgs,
    budget_ms: u32,
) -> Result<(Vec<Row>, Vec<Histogram<u64>>)> {
    let mut admin = admin.admin();
    let options = RequestOptions {
        budget_ms: args.budget_ms,
        placement: PlacementArg::Auto,
        min_confidence: None,
        model: None,
        oip_dtype: OipDtype::Uint8,
        timeout: Duration::from_secs(10),
    };
    let spec = |stop: Stop, first_index: usize| LoadSpec {
        protocol: args.protocol,
        stop,
        pacing: pacing(args),
        options: options.clone(),
        within_budget: Duration::from_millis(u64::from(budget_ms)),
        first_index,
    };
    let cells = args.profiles.len() * args.thresholds.len();
    let mut rows = Vec::with_capacity(cells);
    let mut latencies = Vec::with_capacity(cells);
    let hidden = ProgressBar::hidden();
    for profile in &args.profiles {
        for &threshold in &args.thresholds {
            admin
                .set_link_profile(SetLinkProfileRequest {
                    profile: Some(set_link_profile_request::Profile::Name(profile.clone())),
                    seed: args.seed,
                })
                .await
                .map_err(|s| {
                    anyhow::anyhow!("cannot set link profile {profile:?}: {}", s.message())
                })?;
            admin
                .set_policy(SetPolicyRequest {
                    threshold: Some(threshold),
                    default_budget_ms: None,
                    confidence_metric: 0,
                })
                .await
                .map_err(|s| {
                    anyhow::anyhow!("cannot set threshold {threshold}: {}", s.message())
                })?;
            if args.warmup > 0.0 {
                // Warm-up images come from the second half of the test set, measured ones
                // from the start, so every cell is scored on the same images.
                let warmup = Stop::Duration(Duration::from_secs_f64(args.warmup));
                load::run(target, inputs, &spec(warmup, inputs.len() / 2), &hidden).await?;
            }
            let measured = Stop::Requests(args.requests);
            let tally = load::run(target, inputs, &spec(measured, 0), &hidden).await?;
            if tally.ok == 0 {
                bail!(
                    "profile {profile}, threshold {threshold}: no request succeeded ({:?})",
                    tally.errors
                );
            }
            let row = Row::new(profile, threshold, budget_ms, &tally);
            eprintln!(
                "[{:>2}/{cells}] {profile:<13} threshold {threshold:<6} accuracy {:.4}  edge {:5.1}%  offloaded {:5.1}%  degraded {:5.1}%  p50 {:>8}  p99 {:>8}  within budget {:5.1}%",
                rows.len() + 1,
                row.accuracy,
                100.0 * row.edge_share,
                100.0 * row.offloaded_share,
                100.0 * row.degraded_share,
                crate::client_cmds::tally::fmt_us(row.latency_us.p50),
                crate::client_cmds::tally::fmt_us(row.latency_us.p99),
                100.0 * row.within_budget,
            );
            rows.push(row);
            latencies.push(tally.latency);
        }
    }
    Ok((rows, latencies))
}

/// The CSV columns, in order; the JSON rows carry the same names (latency nested).
const CSV_HEADER: &str = "profile,threshold,requests,ok,errors,accuracy,edge_share,offloaded_share,degraded_share,within_budget,latency_p50_us,latency_p90_us,latency_p99_us,latency_p999_us,latency_max_us,throughput_rps,budget_ms";

fn csv_line(r: &Row) -> String {
    format!(
        "{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{},{},{},{},{},{:.1},{}",
        r.profile,
        r.threshold,
        r.requests,
        r.ok,
        r.errors,
        r.accuracy,
        r.edge_share,
        r.offloaded_share,
        r.degraded_share,
        r.within_budget,
        r.latency_us.p50,
        r.latency_us.p90,
        r.latency_us.p99,
        r.latency_us.p999,
        r.latency_us.max,
        r.throughput_rps,
        r.budget_ms
    )
}

fn write_table(sweep: &Sweep, args: &SweepArgs, out: &Path) -> Result<()> {
    let mut csv = String::from(CSV_HEADER);
    csv.push('\n');
    for row in &sweep.rows {
        csv.push_str(&csv_line(row));
        csv.push('\n');
    }
    let csv_path = out.join("sweep.csv");
    std::fs::write(&csv_path, csv)
        .with_context(|| format!("cannot write {}", csv_path.display()))?;

    let json = serde_json::json!({
        "budget_ms": sweep.budget_ms,
        "requests_per_cell": args.requests,
        "warmup_seconds_per_cell": args.warmup,
        "mode": match pacing(args) {
            Pacing::Closed { .. } => "closed",
            Pacing::Open { .. } => "open",
        },
        "rate": match pacing(args) {
            Pacing::Open { rate, .. } => Some(rate),
            Pacing::Closed { .. } => None,
        },
        "concurrency": args.concurrency,
        "protocol": args.protocol.name(),
        "seed": args.seed,
        "cdf_threshold": sweep.cdf_threshold,
        "rows": sweep.rows,
    });
    let json_path = out.join("sweep.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn fake_sweep() -> Sweep {
        let profiles = ["urllc", "embb-midband", "lte", "cell-edge"];
        let thresholds = [0.5f32, 0.8, 0.9, 0.95, 0.99, 0.999];
        let mut rows = Vec::new();
        let mut latencies = Vec::new();
        for (p, profile) in profiles.iter().enumerate() {
            let rtt_us = [1_000u64, 28_000, 37_000, 80_000][p];
            for (k, &threshold) in thresholds.iter().enumerate() {
                let offloaded = [0.002, 0.01, 0.02, 0.04, 0.08, 0.15][k] * (1.0 - 0.15 * p as f64);
                let mut tally = Tally::new();
                tally.requests = 1000;
                tally.ok = 1000;
                tally.served_cloud = (offloaded * 1000.0) as u64;
                tally.served_edge = 1000 - tally.served_cloud;
                tally.correct = 975 + (k as u64 * 3) - p as u64;
                tally.degraded = (p * k) as u64;
                tally.within_budget = 1000 - (p * k * 3) as u64;
                tally.elapsed = Duration::from_secs(1);
                for i in 0..1000u64 {
                    let v = if i < tally.served_edge {
                        150 + i % 400
                    } else {
                        rtt_us + (i % 50) * rtt_us / 20
                    };
                    tally.latency.record(v).unwrap();
                }
                rows.push(Row::new(profile, threshold, 100, &tally));
                latencies.push(tally.latency);
            }
        }
        Sweep {
            rows,
            latencies,
            budget_ms: 100,
            cdf_threshold: 0.95,
        }
    }

    #[test]
    fn csv_has_one_line_per_cell_and_the_header_columns() {
        let sweep = fake_sweep();
        let line = csv_line(&sweep.rows[0]);
        assert_eq!(
            line.split(',').count(),
            CSV_HEADER.split(',').count(),
            "{line}"
        );
        assert!(line.starts_with("urllc,0.5,1000,1000,0,"), "{line}");
    }

    #[test]
    fn table_and_plots_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let sweep = fake_sweep();
        let args = SweepArgs {
            thresholds: vec![0.5, 0.8, 0.9, 0.95, 0.99, 0.999],
            profiles: vec!["urllc".into()],
            requests: 1000,
            warmup: 0.0,
            edge_admin: String::new(),
            tls: TlsArgs::default(),
            rate: None,
            concurrency: Some(16),
            budget_ms: None,
            protocol: Protocol::Native,
            seed: 1,
            cdf_threshold: None,
            edge: None,
            cloud: None,
            out: dir.path().to_path_buf(),
        };
        write_table(&sweep, &args, dir.path()).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("sweep.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 24);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("sweep.json")).unwrap())
                .unwrap();
        assert_eq!(json["rows"].as_array().unwrap().len(), 24);
        assert!(json["rows"][0]["latency_us"]["p99"].is_u64());
        let thresholds: Vec<f64> = json["rows"].as_array().unwrap()[..6]
            .iter()
            .map(|r| r["threshold"].as_f64().unwrap())
            .collect();
        assert_eq!(thresholds, [0.5, 0.8, 0.9, 0.95, 0.99, 0.999], "as written");

        for name in ["accuracy_vs_offload.png", "latency_cdf.png"] {
            let path = dir.path().join(name);
            match name {
                "accuracy_vs_offload.png" => plots::accuracy_vs_offload(&path, &sweep).unwrap(),
                _ => plots::latency_cdf(&path, &sweep).unwrap(),
            }
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name} is a PNG");
            assert!(bytes.len() > 10_000, "{name} has content");
        }
        if let Ok(keep) = std::env::var("EDGEINFER_KEEP_PLOTS") {
            for name in ["accuracy_vs_offload.png", "latency_cdf.png"] {
                std::fs::copy(dir.path().join(name), Path::new(&keep).join(name)).unwrap();
            }
        }
    }

    #[test]
    fn cdf_threshold_defaults_to_the_middle_one() {
        let mut args = SweepArgs {
            thresholds: vec![0.99, 0.5, 0.9],
            profiles: vec!["lte".into()],
            requests: 1,
            warmup: 0.0,
            edge_admin: String::new(),
            tls: TlsArgs::default(),
            rate: None,
            concurrency: None,
            budget_ms: None,
            protocol: Protocol::Native,
            seed: 1,
            cdf_threshold: None,
            edge: None,
            cloud: None,
            out: PathBuf::from("x"),
        };
        assert_eq!(cdf_threshold(&args), 0.9);
        args.cdf_threshold = Some(0.7);
        assert!(validate(&args).is_err(), "0.7 is not a swept threshold");
        args.cdf_threshold = None;
        args.thresholds.push(1.5);
        assert!(validate(&args).is_err());
    }
}
