//! Property tests of model loading from untrusted bytes: the shipped files, corrupted (bytes
//! overwritten, the file cut short), are refused with an error or load as a working model;
//! loading never panics. Headers and metadata are where a flip does the most harm, so half of
//! the flips land in the first 4 KiB.

use std::path::PathBuf;

use edgeinfer_model::{ModelFormat, load_classifier_bytes};
use proptest::prelude::*;

fn shipped(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Overwrites bytes of `file` and maybe truncates it, then loads it.
fn load_corrupted(
    file: &[u8],
    format: ModelFormat,
    flips: &[(bool, prop::sample::Index, u8)],
    cut: Option<prop::sample::Index>,
) {
    let mut bytes = file.to_vec();
    for (in_header, at, value) in flips {
        let span = if *in_header {
            bytes.len().min(4096)
        } else {
            bytes.len()
        };
        let i = at.index(span);
        bytes[i] = *value;
    }
    if let Some(cut) = cut {
        bytes.truncate(cut.index(bytes.len()));
    }
    if let Ok(model) = load_classifier_bytes(&bytes, format) {
        // A file that loads must classify: the right number of finite probabilities.
        let meta = model.metadata();
        let probs = model.classify(&vec![0.5; meta.input_len()], 1).unwrap();
        assert_eq!(probs.len(), meta.labels.len());
        assert!(probs.iter().all(|p| p.is_finite()));
    }
}

fn flips() -> impl Strategy<Value = Vec<(bool, prop::sample::Index, u8)>> {
    proptest::collection::vec(
        (any::<bool>(), any::<prop::sample::Index>(), any::<u8>()),
        1..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn corrupted_gguf(flips in flips(), cut in proptest::option::of(any::<prop::sample::Index>())) {
        load_corrupted(&shipped("edge-mlp-q8_0.gguf"), ModelFormat::Gguf, &flips, cut);
    }

    #[test]
    fn corrupted_q4_gguf(flips in flips(), cut in proptest::option::of(any::<prop::sample::Index>())) {
        load_corrupted(&shipped("edge-mlp-q4_0.gguf"), ModelFormat::Gguf, &flips, cut);
    }

    #[test]
    fn corrupted_int8_safetensors(
        flips in flips(),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        load_corrupted(&shipped("edge-mlp-int8.safetensors"), ModelFormat::Safetensors, &flips, cut);
    }

    #[test]
    fn corrupted_safetensors(
        flips in flips(),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        load_corrupted(&shipped("edge-mlp.safetensors"), ModelFormat::Safetensors, &flips, cut);
    }

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for format in [ModelFormat::Gguf, ModelFormat::Safetensors] {
            prop_assert!(load_classifier_bytes(&bytes, format).is_err());
        }
    }
}
