//! Model forward passes through `Classifier::classify`, on the calling thread as the servers
//! run them: edge-mlp in f32, int8, q8_0 and q4_0, and cloud-cnn, at batch 1 and 64, all in one
//! run so that their ratios are measured under the same conditions; and the input detector's
//! score of one input (`ood score`), which the batcher computes beside each forward pass.
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

criterion_group!(benches, forward);
criterion_main!(benches);
