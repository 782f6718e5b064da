//! Model files: f32 `.safetensors` and quantized `.gguf`, each carrying [`ModelMetadata`].
//!
//! This module holds what both formats share: the format enum, file I/O, and the checks of
//! metadata and tensor lists against the architecture the metadata names. Each format's
//! reading and writing lives in its own submodule (`safetensors`, `gguf`).
//!
//! Reading works on bytes already in memory (the files are small), so the same code serves a
//! path, an upload and a fuzz target. Every check that can name a problem does so before the
//! tensors reach candle: truncation (with the sizes), missing or unexpected tensors, shapes,
//! dtypes, and the metadata rules of [`crate::metadata`].
//!
//! Writing is byte-for-byte deterministic (fixed tensor and key order), so the same training
//! seed gives the same file.

mod gguf;
mod safetensors;

use std::path::Path;

use candle_core::Tensor;
use candle_core::quantized::QTensor;

use crate::metadata::KEY_PREFIX;
use crate::nets::Architecture;
use crate::ood::{self, Detector};
use crate::{ModelError, ModelMetadata};

pub(crate) use gguf::{gguf_bytes, quantize_tensors, save_gguf};
pub(crate) use safetensors::{int8_safetensors_bytes, save_int8_safetensors, save_safetensors};

/// The two model file formats, told apart by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// f32 or int8 tensors in safetensors, metadata in `__metadata__`.
    Safetensors,
    /// GGUF with q8_0 / q4_0 weights and f32 biases, metadata as GGUF keys.
    Gguf,
}

// === impl ModelFormat ===

impl ModelFormat {
    pub fn from_path(path: &Path) -> Result<Self, ModelError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Ok(Self::Safetensors),
            Some("gguf") => Ok(Self::Gguf),
            _ => Err(ModelError::UnknownExtension {
                path: path.to_path_buf(),
            }),
        }
    }

    /// The format that holds models of `quantization` (`f32`, `int8`, `q8_0`, `q4_0`).
    pub fn for_quantization(quantization: &str) -> Result<Self, ModelError> {
        match quantization {
            "f32" | "int8" => Ok(Self::Safetensors),
            "q8_0" | "q4_0" => Ok(Self::Gguf),
            other => Err(ModelError::Unsupported(format!(
                "quantization {other:?}: use one of {}",
                crate::metadata::QUANTIZATIONS.join(", ")
            ))),
        }
    }

    /// The file extension, with its dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Safetensors => ".safetensors",
            Self::Gguf => ".gguf",
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Safetensors => "safetensors",
            Self::Gguf => "gguf",
        }
    }
}

/// The tensors of a model file, checked against its architecture, before they become a network.
pub(crate) enum Weights {
    /// Every parameter in f32, in [`Architecture::params`] order.
    F32(Vec<(String, Tensor)>),
    /// Every parameter as a `QTensor` (weights quantized, biases f32), in params order.
    Quantized(Vec<(String, QTensor)>),
    /// One entry per weight of [`Architecture::params`], in that order.
    Int8(Vec<Int8Layer>),
}

/// One int8 layer as a file holds it.
#[derive(Clone, Debug)]
pub(crate) struct Int8Layer {
    /// The layer's name: its parameters are `<name>.weight`, `<name>.weight_scale`,
    /// `<name>.bias`.
    pub name: String,
    /// The weight's shape, `[rows, cols]`, as in [`Architecture::params`].
    pub shape: Vec<usize>,
    /// Row-major, in \[-127, 127\].
    pub weights: Vec<i8>,
    /// Per row: the value of one weight step.
    pub scales: Vec<f32>,
    pub bias: Vec<f32>,
}

/// A parsed and checked model file.
pub(crate) struct ModelFile {
    pub metadata: ModelMetadata,
    pub architecture: Architecture,
    pub weights: Weights,
    /// The input detector, when the file carries one (files made before it do not).
    pub ood: Option<Detector>,
}

/// Largest model file read: the shipped ones are under 1 MB; a file beyond this is not a model
/// an edge or cloud node of this kind serves, and reading it whole would exhaust memory.
pub const MAX_MODEL_FILE_BYTES: u64 = 512 << 20;

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    use std::io::Read;
    let io = |cause| ModelError::Io {
        action: "read",
        path: path.to_path_buf(),
        cause,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_MODEL_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() as u64 > MAX_MODEL_FILE_BYTES {
        return Err(io(std::io::Error::other(format!(
            "larger than {MAX_MODEL_FILE_BYTES} bytes, the most a model file may be"
        ))));
    }
    Ok(bytes)
}

pub(super) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    std::fs::write(path, bytes).map_err(|cause| ModelError::Io {
        action: "write",
        path: path.to_path_buf(),
        cause,
    })
}

/// Parses and checks a model file held in memory.
pub(crate) fn parse(bytes: &[u8], format: ModelFormat) -> Result<ModelFile, ModelError> {
    match format {
        ModelFormat::Safetensors => safetensors::parse(bytes),
        ModelFormat::Gguf => gguf::parse(bytes),
    }
}

/// Checks the metadata against the architecture it names and returns that architecture.
pub(super) fn check_metadata(
    m: &ModelMetadata,
    format: ModelFormat,
) -> Result<Architecture, ModelError> {
    let arch = Architecture::from_id(&m.architecture)?;
    let invalid = |key: &str, detail: String| ModelError::InvalidMetadata {
        key: format!("{KEY_PREFIX}{key}"),
        detail,
    };
    if m.input_shape != arch.input_shape() {
        return Err(invalid(
            "input_shape",
            format!(
                "{:?}, but {} takes {:?}",
                m.input_shape,
                arch.id(),
                arch.input_shape()
            ),
        ));
    }
    if m.labels.len() != arch.num_classes() {
        return Err(invalid(
            "labels",
            format!(
                "{} labels, but {} has {} outputs",
                m.labels.len(),
                arch.id(),
                arch.num_classes()
            ),
        ));
    }
    if ModelFormat::for_quantization(&m.quantization)? != format {
        return Err(invalid(
            "quantization",
            format!(
                "{:?} in a {} file (safetensors holds f32 / int8, gguf holds q8_0 / q4_0)",
                m.quantization,
                format.name()
            ),
        ));
    }
    Ok(arch)
}

/// Refuses tensors outside `expected`, the tensors a file of `arch` holds.
pub(super) fn check_no_extra<'a, S: AsRef<str>>(
    names: impl IntoIterator<Item = S>,
    expected: impl IntoIterator<Item = &'a str>,
    arch: Architecture,
) -> Result<(), ModelError> {
    let expected: Vec<&str> = expected.into_iter().collect();
    let mut extra: Vec<String> = names
        .into_iter()
        .map(|n| n.as_ref().to_string())
        .filter(|n| !expected.contains(&n.as_str()))
        .collect();
    extra.sort();
    match extra.first() {
        Some(name) => Err(ModelError::UnexpectedTensor {
            name: name.to_string(),
            architecture: arch.id().to_string(),
        }),
        None => Ok(()),
    }
}

/// The input detector's tensors ([`ood::TENSORS`]): all of them or none. `has` says whether
/// the file holds a tensor; `read` gives an F32 tensor's shape and (finite) values.
pub(super) fn read_detector(
    has: impl Fn(&str) -> bool,
    mut read: impl FnMut(&str) -> Result<(Vec<usize>, Vec<f32>), ModelError>,
    dim: usize,
) -> Result<Option<Detector>, ModelError> {
    if !ood::TENSORS.iter().any(|n| has(n)) {
        return Ok(None);
    }
    if let Some(missing) = ood::TENSORS.iter().find(|n| !has(n)) {
        return Err(ModelError::MissingTensor(missing.to_string()));
    }
    let (shape, mean) = read(ood::TENSOR_MEAN)?;
    check_shape(ood::TENSOR_MEAN, &[dim], &shape)?;
    let (shape, basis) = read(ood::TENSOR_BASIS)?;
    let k = shape.first().copied().unwrap_or(0);
    check_shape(ood::TENSOR_BASIS, &[k, dim], &shape)?;
    let (shape, variances) = read(ood::TENSOR_VARIANCES)?;
    check_shape(ood::TENSOR_VARIANCES, &[k + 1], &shape)?;
    let (shape, threshold) = read(ood::TENSOR_THRESHOLD)?;
    check_shape(ood::TENSOR_THRESHOLD, &[1], &shape)?;
    Detector::from_parts(dim, mean, basis, variances, threshold[0]).map(Some)
}

pub(super) fn check_shape(
    name: &str,
    expected: &[usize],
    actual: &[usize],
) -> Result<(), ModelError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ModelError::TensorShape {
            name: name.to_string(),
            expected: expected.to_vec(),
            actual: actual.to_vec(),
        })
    }
}

/// f32 parameters (in [`Architecture::params`] order, weights 2-D) as int8 layers, each weight
/// quantized row by row.
pub(crate) fn quantize_int8(params: &[(String, Tensor)]) -> Result<Vec<Int8Layer>, ModelError> {
    let values = |t: &Tensor| -> Result<Vec<f32>, ModelError> { Ok(t.flatten_all()?.to_vec1()?) };
    let bias = |layer: &str| {
        let name = format!("{layer}.bias");
        params
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or(ModelError::MissingTensor(name))
            .and_then(|(_, t)| values(t))
    };
    params
        .iter()
        .filter_map(|(name, t)| Some((name.strip_suffix(".weight")?, t)))
        .map(|(layer, t)| {
            let shape = t.dims().to_vec();
            let (weights, scales) = crate::int8::quantize_rows(&values(t)?, shape[1]);
            Ok(Int8Layer {
                name: layer.to_string(),
                shape,
                weights,
                scales,
                bias: bias(layer)?,
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::quantized::GgmlDType;
    use candle_core::{DType, Device};

    use super::gguf::gguf_bytes;
    use super::safetensors::safetensors_bytes;
    use super::*;
    use crate::{Classifier, Model};

    pub(crate) fn f32_params(arch: Architecture) -> (ModelMetadata, Vec<(String, Tensor)>) {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
        let params = arch
            .params()
            .into_iter()
            .map(|(name, shape)| {
                let v = arch.init_param(name, &shape, &mut rng);
                (
                    name.to_string(),
                    Tensor::from_vec(v, shape, &Device::Cpu).unwrap(),
                )
            })
            .collect();
        (crate::train::initial_metadata(arch), params)
    }

    pub(crate) fn q_params(
        m: &ModelMetadata,
        params: &[(String, Tensor)],
    ) -> Vec<(String, std::sync::Arc<QTensor>)> {
        quantize_tensors(m, params)
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n, std::sync::Arc::new(t)))
            .collect()
    }

    pub(crate) fn err_of(r: Result<Model, ModelError>) -> ModelError {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn truncated_files_say_so_at_every_cut() {
        let (m, params) = f32_params(Architecture::EdgeMlp);
        let st = safetensors_bytes(&m, &params, None).unwrap();
        let mut qm = m.clone();
        qm.quantization = "q8_0".into();
        let gg = gguf_bytes(&qm, &q_params(&qm, &params), None).unwrap();
        for (bytes, format) in [(&st, ModelFormat::Safetensors), (&gg, ModelFormat::Gguf)] {
            // GGUF pads after the last tensor (the 40-byte fc2.bias, padded to 64), so cutting
            // only that padding loses nothing; cut into the data instead.
            for cut in [0, 5, 8, 40, bytes.len() / 2, bytes.len() - 30] {
                let err = err_of(Model::from_bytes(&bytes[..cut], format));
                assert!(
                    matches!(err, ModelError::Truncated { .. }),
                    "{format:?} cut at {cut}: {err}"
                );
                assert!(err.to_string().contains("truncated"), "{err}");
            }
        }
    }

    #[test]
    fn wrong_shapes_are_named() {
        let (m, mut params) = f32_params(Architecture::EdgeMlp);
        // A 784-wide first layer: the unpadded network of the source material.
        params[0].1 = Tensor::zeros((128, 768), DType::F32, &Device::Cpu).unwrap();
        let st = safetensors_bytes(&m, &params, None).unwrap();
        let err = err_of(Model::from_bytes(&st, ModelFormat::Safetensors));
        assert!(
            matches!(err, ModelError::TensorShape { ref name, .. } if name == "fc1.weight"),
            "{err}"
        );
        assert!(err.to_string().contains("[128, 800]"), "{err}");

        let mut qm = m.clone();
        qm.quantization = "q4_0".into();
        let gg = gguf_bytes(&qm, &q_params(&qm, &params), None).unwrap();
        let err = err_of(Model::from_bytes(&gg, ModelFormat::Gguf));
        assert!(
            matches!(err, ModelError::TensorShape { ref name, .. } if name == "fc1.weight"),
            "{err}"
        );
    }

    #[test]
    fn missing_extra_and_mistyped_tensors() {
        let (m, params) = f32_params(Architecture::EdgeMlp);
        let st = safetensors_bytes(&m, &params[..3], None).unwrap();
        let err = err_of(Model::from_bytes(&st, ModelFormat::Safetensors));
        assert!(
            matches!(err, ModelError::MissingTensor(ref n) if n == "fc2.bias"),
            "{err}"
        );

        let mut more = params.clone();
        more.push(("fc3.weight".into(), params[3].1.clone()));
        let st = safetensors_bytes(&m, &more, None).unwrap();
        let err = err_of(Model::from_bytes(&st, ModelFormat::Safetensors));
        assert!(err.to_string().contains("fc3.weight"), "{err}");

        // A bias quantized where f32 is expected.
        let mut qm = m.clone();
        qm.quantization = "q8_0".into();
        let mut q = q_params(&qm, &params);
        q[1].1 = std::sync::Arc::new(
            QTensor::quantize(
                &Tensor::zeros(128, DType::F32, &Device::Cpu).unwrap(),
                GgmlDType::Q8_0,
            )
            .unwrap(),
        );
        let gg = gguf_bytes(&qm, &q, None).unwrap();
        let err = err_of(Model::from_bytes(&gg, ModelFormat::Gguf));
        assert!(
            matches!(err, ModelError::TensorDtype { ref name, .. } if name == "fc1.bias"),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_a_format_error_not_a_panic() {
        for format in [ModelFormat::Safetensors, ModelFormat::Gguf] {
            for bytes in [
                &b"hello world, this is not a model file at all"[..],
                &[0xff; 64][..],
                &[
                    8, 0, 0, 0, 0, 0, 0, 0, b'{', b'}', b' ', b' ', b' ', b' ', b' ', b' ',
                ][..],
            ] {
                let _ = err_of(Model::from_bytes(bytes, format));
            }
        }
    }

    /// A poor man's fuzzer: random byte flips of valid files must give `Ok` or `Err`, and an
    /// `Ok` model must still classify, never panic.
    #[test]
    fn random_corruption_never_panics() {
        use rand::{Rng, SeedableRng};
        let (m, params) = f32_params(Architecture::EdgeMlp);
        let mut qm = m.clone();
        qm.quantization = "q4_0".into();
        let files = [
            (
                safetensors_bytes(&m, &params, None).unwrap(),
                ModelFormat::Safetensors,
            ),
            (
                gguf_bytes(&qm, &q_params(&qm, &params), None).unwrap(),
                ModelFormat::Gguf,
            ),
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let x = vec![0.25f32; 784];
        for (bytes, format) in &files {
            // Flips in the header, where the structure is, are the interesting ones.
            let header = bytes.len().min(1200);
            for _ in 0..400 {
                let mut b = bytes.clone();
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..header);
                    b[i] = rng.random();
                }
                if let Ok(model) = Model::from_bytes(&b, *format)
                    && let Ok(p) = model.classify(&x, 1)
                {
                    assert!(p.iter().all(|v| v.is_finite()), "{format:?}: {p:?}");
                }
            }
        }
    }

    /// Every format carries the input detector through a save and a load, and quantizing
    /// keeps it; a file with only some of its tensors names the one missing.
    #[test]
    fn the_input_detector_survives_every_format() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let sample = |n: usize, rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
            (0..n * 784)
                .map(|i| {
                    if i % 784 < 300 {
                        rng.random::<f32>()
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let detector =
            Detector::fit(&sample(400, &mut rng), 784, &sample(100, &mut rng), 8, 0.99).unwrap();
        let mut f32_model = Model::untrained(Architecture::EdgeMlp, 4).unwrap();
        f32_model.set_ood(Some(detector.clone())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for model in [
            f32_model.quantize("int8").unwrap(),
            f32_model.quantize("q8_0").unwrap(),
            f32_model,
        ] {
            let format = ModelFormat::for_quantization(&model.metadata().quantization).unwrap();
            let path = dir.path().join(format!("m{}", format.extension()));
            model.save(&path).unwrap();
            let loaded = Model::load(&path).unwrap();
            assert_eq!(loaded.ood(), Some(&detector), "{format:?}");
        }
        let (m, mut params) = f32_params(Architecture::EdgeMlp);
        let [mean, basis, variances, _threshold] = detector.parts();
        for (name, shape, values) in [mean, basis, variances] {
            params.push((
                name.to_string(),
                Tensor::from_vec(values, shape, &Device::Cpu).unwrap(),
            ));
        }
        let st = safetensors_bytes(&m, &params, None).unwrap();
        let err = err_of(Model::from_bytes(&st, ModelFormat::Safetensors));
        assert!(
            matches!(err, ModelError::MissingTensor(ref n) if n == ood::TENSOR_THRESHOLD),
            "{err}"
        );
    }

    #[test]
    fn extension_picks_the_format() {
        assert_eq!(
            ModelFormat::from_path(Path::new("a/b.gguf")).unwrap(),
            ModelFormat::Gguf
        );
        let err = ModelFormat::from_path(Path::new("model.onnx")).unwrap_err();
        assert!(err.to_string().contains("model.onnx"), "{err}");
    }
}
