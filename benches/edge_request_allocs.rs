//! Heap allocations per edge request, counted by a counting global allocator, server side only.
//!
//! `cargo bench --bench edge_request_allocs` starts the shipped edge and cloud in this process
//! (`edgeinfer_cli::local::start`, link `ideal`) on a multi-threaded runtime, and drives them
//! from a client on a separate single-threaded runtime on the main thread. Allocations made on
//! the client's thread are not counted, so the figures are the servers' own work per request:
//! tonic and hyper on the runtime threads, decoding, routing, the batcher and the model worker.
//!
//! First the floor (`edgeinfer_cli::floor`, a server that does no work): what tonic, hyper and
//! prost allocate for the same calls. Then three requests, each answered by the edge model without a cloud call: native `Infer` with
//! 8-bit `raw` pixels and with float `pixels` (placement EDGE_ONLY, through the router), and
//! OIP `ModelInfer` of FP32 [1, 784] to `edge-mlp` by name. Each is sent sequentially after a
//! warm-up; the figures are the counts over the measured requests, less what the servers
//! allocate idle over as long again (probes, gauges, pings), divided by the request count.
//! Arguments: `[requests]` (default 2000); `EDGE_MODEL` names the edge model file (default:
//! the one `edgeinfer up` serves). Figures and how they compare with an earlier commit are in
//! BENCHMARKS.md, "Allocations per request".

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use common::{native_request, oip_request};
use edgeinfer::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use edgeinfer::v1::inference_client::InferenceClient;
use edgeinfer_cli::local::{LocalOptions, start};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the client's thread: what it allocates is not the servers' work.
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize) {
    // `try_with`: a thread being torn down has no thread locals left; count it.
    if !UNCOUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting has no effect
// on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: `ptr` and `layout` come from this allocator, which is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARMUP: usize = 200;

struct Measured {
    allocs: f64,
    bytes: f64,
    /// Allocations over an idle stretch as long as the measurement, already taken off.
    idle_allocs: u64,
    /// Latency at concurrency 1, median and 99th percentile.
    p50_us: f64,
    p99_us: f64,
}

/// Runs `send` `WARMUP` times, then `n` times counting, then idles as long, counting.
async fn measure<F, Fut>(n: usize, mut send: F) -> Measured
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..WARMUP {
        send().await;
    }
    // Room for every latency first, so that recording them allocates nothing on the way.
    let mut latencies = Vec::with_capacity(n);
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    for _ in 0..n {
        let sent = Instant::now();
        send().await;
        latencies.push(sent.elapsed());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let (a1, b1) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    // What the servers allocate with no request at all (health probes, gauges, HTTP/2 pings)
    // over as long again, taken off so that the figure does not depend on the machine's speed.
    tokio::time::sleep(elapsed).await;
    let (a2, b2) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let (idle_allocs, idle_bytes) = (a2 - a1, b2 - b1);
    Measured {
        allocs: (a1 - a0).saturating_sub(idle_allocs) as f64 / n as f64,
        bytes: (b1 - b0).saturating_sub(idle_bytes) as f64 / n as f64,
        idle_allocs,
        p50_us: latencies[n / 2].as_secs_f64() * 1e6,
        p99_us: latencies[(n * 99 / 100).min(n - 1)].as_secs_f64() * 1e6,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; the only argument of ours is a count.
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| match a.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => panic!("the argument is a request count above 0, not {a:?}"),
        })
        .unwrap_or(2000);
    let servers_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let defaults = LocalOptions::default();
    let edge_model = std::env::var_os("EDGE_MODEL").map_or(defaults.edge_model.clone(), Into::into);
    println!("edge model: {}", edge_model.display());
    let servers = servers_rt
        .block_on(start(LocalOptions {
            profile: "ideal".into(),
            edge_model,
            ..defaults
        }))
        .expect("the shipped models start (run from the repository root)");
    let edge = format!("http://{}", servers.edge);
    let floor = servers_rt
        .block_on(edgeinfer_cli::floor::spawn(
            "127.0.0.1:0".parse().expect("an address"),
        ))
        .expect("the floor server starts");
    let floor = format!("http://{floor}");

    UNCOUNTED.with(|u| u.set(true));
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let rows = client_rt.block_on(async {
        let native_client = InferenceClient::connect(edge.clone())
            .await
            .expect("connects to the edge");
        let oip_client = GrpcInferenceServiceClient::connect(edge)
            .await
            .expect("connects to the edge");
        let mut rows = Vec::new();
        // The floor: the same calls to a server that does no work (tonic, hyper, prost only).
        let floor_native = InferenceClient::connect(floor.clone())
            .await
            .expect("connects to the floor");
        let floor_oip = GrpcInferenceServiceClient::connect(floor)
            .await
            .expect("connects to the floor");
        let request = native_request(true);
        let m = measure(n, || {
            let mut c = floor_native.clone();
            let r = request.clone();
            async move {
                c.infer(r).await.expect("the floor answers");
            }
        })
        .await;
        rows.push(("floor: native Infer, raw u8", m));
        let request = oip_request();
        let m = measure(n, || {
            let mut c = floor_oip.clone();
            let r = request.clone();
            async move {
                c.model_infer(r).await.expect("the floor answers");
            }
        })
        .await;
        rows.push(("floor: OIP ModelInfer", m));
        for (label, raw) in [
            ("native Infer, raw u8", true),
            ("native Infer, pixels f32", false),
        ] {
            let request = native_request(raw);
            let m = measure(n, || {
                let mut c = native_client.clone();
                let r = request.clone();
                async move {
                    let answer = c.infer(r).await.expect("the edge answers").into_inner();
                    assert!(
                        !answer.probabilities.is_empty(),
                        "an answer with probabilities"
                    );
                }
            })
            .await;
            rows.push((label, m));
        }
        let request = oip_request();
        let m = measure(n, || {
            let mut c = oip_client.clone();
            let r = request.clone();
            async move {
                let answer = c
                    .model_infer(r)
                    .await
                    .expect("the edge answers")
                    .into_inner();
                assert!(!answer.outputs.is_empty(), "an answer with outputs");
            }
        })
        .await;
        rows.push(("OIP ModelInfer FP32 [1,784]", m));
        rows
    });
    println!("server-side heap allocations per edge request ({n} sequential requests each):");
    println!(
        "{:<30} {:>11} {:>10} {:>12} {:>9} {:>9}",
        "request", "allocs/req", "bytes/req", "idle allocs", "p50 µs", "p99 µs"
    );
    for (label, m) in rows {
        println!(
            "{:<30} {:>11.1} {:>10.0} {:>12} {:>9.1} {:>9.1}",
            label, m.allocs, m.bytes, m.idle_allocs, m.p50_us, m.p99_us
        );
    }
    drop(servers);
    servers_rt.shutdown_background();
}
