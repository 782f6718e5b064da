//! Model forward passes through `Classifier::classify`, on the calling thread as the servers
//! run them: edge-mlp in f32, int8, q8_0 and q4_0, and cloud-cnn, at batch 1 and 64, all in one
//! run so that their ratios are measured under the same conditions; and the input detector's
//! score of one input (`ood score`), which the batcher computes beside each forward pass; and
//! cloud-cnn's matrix products alone at batch 1 and 64 (`cloud-cnn gemm`), in FLOP/s.
//!
//! `cargo bench --bench model_forward` (figures and machine in BENCHMARKS.md, "Model forward").
//! Set `CANDLE_NUM_THREADS=1` and `RAYON_NUM_THREADS=<cores>` as a server does
//! (`edgeinfer_model::threading`); the bench says so when they are missing.
//!
//! Runs on the shipped files in models/; a missing file is replaced by a freshly initialised
//! network of the same kind (the cost does not depend on the weights' values), with a note.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use edgeinfer_model::{Architecture, Classifier, Model, load_classifier};

/// (label, shipped file, how to make a stand-in)
const MODELS: [(&str, &str, Architecture, Option<&str>); 5] = [
    (
        "edge-mlp f32",
        "edge-mlp.safetensors",
        Architecture::EdgeMlp,
        None,
    ),
    (
        "edge-mlp int8",
        "edge-mlp-int8.safetensors",
        Architecture::EdgeMlp,
        Some("int8"),
    ),
    (
        "edge-mlp q8_0",
        "edge-mlp-q8_0.gguf",
        Architecture::EdgeMlp,
        Some("q8_0"),
    ),
    (
        "edge-mlp q4_0",
        "edge-mlp-q4_0.gguf",
        Architecture::EdgeMlp,
        Some("q4_0"),
    ),
    (
        "cloud-cnn f32",
        "cloud-cnn.safetensors",
        Architecture::CloudCnn,
        None,
    ),
];

fn load(file: &str, arch: Architecture, quantization: Option<&str>) -> Arc<dyn Classifier> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(file);
    if path.is_file() {
        return load_classifier(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    eprintln!(
        "{} is missing: benchmarking an untrained network instead",
        path.display()
    );
    let model = Model::untrained(arch, 1).expect("an untrained network builds");
    match quantization {
        Some(q) => Arc::new(model.quantize(q).expect("the MLP quantizes")),
        None => Arc::new(model),
    }
}

/// Deterministic, image-like inputs: values in [0, 1], mostly zero like MNIST.
fn inputs(batch: usize) -> Vec<f32> {
    (0..batch * 784)
        .map(|i| {
            if i % 3 == 0 {
                (i % 255) as f32 / 255.0
            } else {
                0.0
            }
        })
        .collect()
}

fn forward(c: &mut Criterion) {
    if let Some(warning) = edgeinfer_model::threading::env_warning() {
        eprintln!("warning: {warning}");
    }
    let mut group = c.benchmark_group("model forward");
    for (label, file, arch, quantization) in MODELS {
        let model = load(file, arch, quantization);
        for batch in [1usize, 64] {
            let x = inputs(batch);
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new(label, batch), &x, |b, x| {
                b.iter(|| model.classify(black_box(x), batch).unwrap())
            });
        }
    }
    group.finish();

    // The detector is the same in every form of the edge model: the int8 file's, as served.
    let (_, file, arch, quantization) = MODELS[1];
    let model = load(file, arch, quantization);
    if let Some(detector) = model.ood() {
        let x = inputs(1);
        c.bench_function("ood score/1", |b| b.iter(|| detector.score(black_box(&x))));
    } else {
        eprintln!("{file} carries no input detector: ood score not measured");
    }
}

/// The matrix products of cloud-cnn's pass (`edgeinfer_model::cnn_gemm`: each convolution one
/// GEMM over the whole batch) on their own, as candle multiplies them, at batch 1 and 64, and a
/// 1024-cube product for this CPU's f32 rate at its best. Throughput is in floating-point
/// operations (two per multiply-add): criterion's elem/s is FLOP/s. If the rate per product
/// does not rise with the batch, batching cannot make the CNN cheaper per image.
fn cloud_gemms(c: &mut Criterion) {
    use candle_core::{Device, Tensor};
    let shapes: [(&str, usize, usize, usize); 7] = [
        ("conv1 im2col x kernel", 576, 25, 32),
        ("conv1 im2col x kernel", 576 * 64, 25, 32),
        ("conv2 im2col x kernel", 64, 800, 64),
        ("conv2 im2col x kernel", 64 * 64, 800, 64),
        ("fc1", 1, 1024, 128),
        ("fc1", 64, 1024, 128),
        ("square", 1024, 1024, 1024),
    ];
    let mut group = c.benchmark_group("cloud-cnn gemm");
    for (label, m, k, n) in shapes {
        let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).expect("a tensor");
        let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu).expect("a tensor");
        group.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        group.bench_function(BenchmarkId::new(label, format!("{m}x{k}x{n}")), |bench| {
            bench.iter(|| black_box(&a).matmul(black_box(&b)).expect("multiplies"))
        });
    }
    group.finish();
}

criterion_group!(benches, forward, cloud_gemms);
criterion_main!(benches);
