//! Forward-pass cost of the edge MLP through `Classifier::classify`: f32, q8_0 and q4_0, at
//! batch 1 and 64, on the calling thread (as the servers run it).
//!
//! Runs on the shipped model files when present, else on a freshly initialised network (the
//! cost does not depend on the weights' values). `cargo bench -p edgeinfer-model --bench forward`

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use edgeinfer_model::{Classifier, Model, load_classifier};

fn models() -> Vec<(&'static str, std::sync::Arc<dyn Classifier>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let files = [
        ("f32", "edge-mlp.safetensors"),
        ("q8_0", "edge-mlp-q8_0.gguf"),
        ("q4_0", "edge-mlp-q4_0.gguf"),
    ];
    if files.iter().all(|(_, f)| dir.join(f).is_file()) {
        return files
            .iter()
            .map(|(q, f)| {
                (
                    *q,
                    load_classifier(&dir.join(f)).expect("shipped model loads"),
                )
            })
            .collect();
    }
    eprintln!(
        "no shipped models in {}: benchmarking an untrained MLP",
        dir.display()
    );
    let f32_model = Model::untrained(edgeinfer_model::Architecture::EdgeMlp, 1).unwrap();
    let q8 = f32_model.quantize("q8_0").unwrap();
    let q4 = f32_model.quantize("q4_0").unwrap();
    vec![
        ("f32", std::sync::Arc::new(f32_model)),
        ("q8_0", std::sync::Arc::new(q8)),
        ("q4_0", std::sync::Arc::new(q4)),
    ]
}

fn forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("edge-mlp classify");
    for (quant, model) in models() {
        for batch in [1usize, 64] {
            // Deterministic, image-like inputs: values in [0, 1], mostly zero like MNIST.
            let inputs: Vec<f32> = (0..batch * 784)
                .map(|i| {
                    if i % 3 == 0 {
                        (i % 255) as f32 / 255.0
                    } else {
                        0.0
                    }
                })
                .collect();
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new(quant, batch), &inputs, |b, inputs| {
                b.iter(|| model.classify(black_box(inputs), batch).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
