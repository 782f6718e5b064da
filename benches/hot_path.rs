//! The parts of a request's path besides the model, each on its own, in one run: decoding the
//! input, the router's decision, the batcher's hand-off to a model worker, and whole gRPC round
//! trips to the edge beside the same calls to a server that does no work (the floor), so that
//! the edge's figures read as ratios to it.
//!
//! `CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=2 cargo bench --bench hot_path` (figures and
//! machine in BENCHMARKS.md, "The hot path, part by part"). Criterion's filter picks groups:
//! `cargo bench --bench hot_path -- 'grpc round trip'`.
//!
//! - `decode`: `edgeinfer_serving::input`'s decoders of one MNIST-sized input in each encoding
//!   the servers accept: native raw bytes, float pixels and a PNG; OIP FP32 as typed contents
//!   and as raw bytes; and 64 OIP rows in one tensor.
//! - `router decision`: `edge_node::decide` for a request the edge model answers
//!   (`decide`, then `after_edge` confident) and for one it sends to the cloud (`after_edge`
//!   unsure).
//! - `batcher`: one request through `Batcher::classify` with the served int8 edge model,
//!   scored on the caller's thread (`inline`, what the edge does with a pass this cheap) and
//!   handed to a worker thread and back (`hand-off`); the difference is the hand-off's cost.
//! - `grpc round trip`: one call at a time from a client on this thread to the shipped edge
//!   and cloud (`edgeinfer_cli::local`, link `ideal`) on a two-thread runtime, and the same call
//!   to `edgeinfer_cli::floor` on that runtime: native `Infer` with raw bytes (placement
//!   EDGE_ONLY) and OIP `ModelInfer` FP32 [1, 784] to `edge-mlp`.
//!
//! Runs on the shipped files in models/ (run from the repository root, as `cargo bench` does).

mod common;

use std::hint::black_box;
use std::io::Cursor;
use std::path::Path;
use std::time::Duration;

use common::{image_bytes, native_request, oip_request, oip_tensor, unit};
use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use edge_node::circuit::CircuitView;
use edge_node::decide::{self, EdgeVerdict, Plan, Request, Snapshot};
use edge_node::estimates;
use edge_node::policy::{ConfidenceMetric, Policy};
use edgeinfer::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use edgeinfer::v1::inference_client::InferenceClient;
use edgeinfer_cli::local::{LocalOptions, start};
use edgeinfer_model::load_classifier;
use edgeinfer_serving::answer::{Placement, Reason};
use edgeinfer_serving::batcher::{Batcher, BatcherConfig};
use edgeinfer_serving::input::{InputLimits, InputSpec, decode_image, decode_native, decode_oip};
use edgeinfer_serving::metrics::Metrics;
use tokio::runtime::Runtime;
use tokio::time::Instant;

fn png(bytes: &[u8]) -> Vec<u8> {
    let image = image::GrayImage::from_raw(28, 28, bytes.to_vec()).expect("28x28 pixels");
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("a PNG encodes");
    out.into_inner()
}

fn decoders(c: &mut Criterion) {
    let spec = InputSpec {
        shape: vec![1, 28, 28],
    };
    let limits = InputLimits::default();
    let mut group = c.benchmark_group("decode");
    for (label, raw) in [("native raw u8", true), ("native pixels f32", false)] {
        let request = native_request(raw);
        let input = request.input.as_ref();
        group.bench_function(label, |b| {
            b.iter(|| decode_native(black_box(input), &spec, &limits).unwrap())
        });
    }
    let image = png(&image_bytes());
    group.bench_function("native png", |b| {
        b.iter(|| decode_image(black_box(&image), &spec, &limits).unwrap())
    });
    for (label, rows, typed) in [
        ("oip fp32 contents", 1, true),
        ("oip fp32 raw", 1, false),
        ("oip fp32 raw", 64, false),
    ] {
        let (tensor, raw) = oip_tensor(rows, typed);
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_with_input(BenchmarkId::new(label, rows), &tensor, |b, tensor| {
            b.iter(|| decode_oip(black_box(tensor), raw.as_deref(), &spec, &limits).unwrap())
        });
    }
    group.finish();
}

fn router(c: &mut Criterion) {
    // A warmed-up edge on embb-midband: a measured path, the circuit closed, the model idle.
    let snapshot = Snapshot {
        policy: Policy {
            threshold: 0.95,
            default_budget: Duration::from_millis(100),
            metric: ConfidenceMetric::MaxProbability,
        },
        path: Some(estimates::Snapshot {
            srtt: Some(0.028),
            rttvar: 0.004,
            rtt_p50: Some(0.028),
            uplink_bps: Some(50e6),
            downlink_bps: Some(200e6),
            cloud: 0.0002,
        }),
        circuit: CircuitView::Closed,
        edge_completion: Duration::from_micros(3),
        reserve: Duration::from_micros(200),
    };
    let request = |received| Request {
        placement: Placement::Auto,
        concrete_model: false,
        budget: Some(Duration::from_millis(100)),
        deadline: None,
        min_confidence: None,
        received,
        up_bytes: 900,
        down_bytes: 120,
    };
    let mut group = c.benchmark_group("router decision");
    for (label, confidence, expect_cloud) in
        [("edge answers", 0.99, false), ("to the cloud", 0.6, true)]
    {
        group.bench_function(label, |b| {
            b.iter(|| {
                let now = Instant::now();
                let request = request(now);
                let deadline = decide::deadline(&snapshot.policy, &request);
                let first = decide::decide(&snapshot, black_box(&request), deadline, now);
                assert_eq!(first, Plan::EdgeThenDecide);
                let verdict = EdgeVerdict {
                    confidence: black_box(confidence),
                    unusual: false,
                };
                let plan = decide::after_edge(&snapshot, &request, verdict, deadline, now);
                assert_eq!(matches!(plan, Plan::Cloud { .. }), expect_cloud, "{plan:?}");
                assert!(expect_cloud || plan == Plan::Edge(Reason::Confident));
                plan
            })
        });
    }
    group.finish();
}

fn runtime(threads: Option<usize>) -> Runtime {
    match threads {
        None => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    }
    .enable_all()
    .build()
    .expect("a tokio runtime")
}

fn batcher(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/edge-mlp-int8.safetensors");
    let model = load_classifier(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let input = unit(&image_bytes());
    let rt = runtime(None);
    let mut group = c.benchmark_group("batcher");
    for (label, inline_below) in [
        ("inline", Duration::from_millis(1)),
        ("hand-off", Duration::ZERO),
    ] {
        let metrics = Metrics::unregistered(model.metadata());
        let config = BatcherConfig {
            workers: 1,
            inline_below,
            ..BatcherConfig::default()
        };
        let batcher = Batcher::new(model.clone(), config, metrics.batcher.clone());
        // The first pass is measured on a worker; only then is it known to be cheap.
        rt.block_on(batcher.classify(input.clone(), None))
            .expect("scored");
        group.bench_function(label, |b| {
            b.iter(|| {
                let scored = rt
                    .block_on(batcher.classify(black_box(input.clone()), None))
                    .expect("scored");
                assert_eq!(scored.batch_size, 1);
                scored
            })
        });
    }
    group.finish();
}

fn round_trips(c: &mut Criterion) {
    let servers_rt = runtime(Some(2));
    let servers = servers_rt
        .block_on(start(LocalOptions {
            profile: "ideal".into(),
            ..LocalOptions::default()
        }))
        .expect("the shipped models start (run from the repository root)");
    let floor = servers_rt
        .block_on(edgeinfer_cli::floor::spawn(
            "127.0.0.1:0".parse().expect("an address"),
        ))
        .expect("the floor server starts");
    let client_rt = runtime(None);
    let mut group = c.benchmark_group("grpc round trip");
    for (server, addr) in [("floor", floor), ("edge", servers.edge)] {
        let url = format!("http://{addr}");
        let (native, oip) = client_rt.block_on(async {
            (
                InferenceClient::connect(url.clone())
                    .await
                    .expect("connects"),
                GrpcInferenceServiceClient::connect(url)
                    .await
                    .expect("connects"),
            )
        });
        let request = native_request(true);
        bench_call(
            &mut group,
            "native Infer raw u8",
            server,
            &client_rt,
            || {
                let mut client = native.clone();
                let request = request.clone();
                async move { client.infer(request).await }
            },
        );
        let request = oip_request();
        bench_call(
            &mut group,
            "OIP ModelInfer FP32",
            server,
            &client_rt,
            || {
                let mut client = oip.clone();
                let request = request.clone();
                async move { client.model_infer(request).await }
            },
        );
    }
    group.finish();
    drop(servers);
    servers_rt.shutdown_background();
}

/// Times one call at a time, each made by `call` and awaited on `rt`.
fn bench_call<F, Fut, T>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    call_name: &str,
    server: &str,
    rt: &Runtime,
    mut call: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    group.bench_function(BenchmarkId::new(call_name, server), |b| {
        b.iter(|| rt.block_on(call()).expect("answered"))
    });
}

criterion_group!(benches, decoders, router, batcher, round_trips);
criterion_main!(benches);
