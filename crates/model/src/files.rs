//! Model files: f32 `.safetensors` and quantized `.gguf`, each carrying [`ModelMetadata`].
//!
//! Reading works on bytes already in memory (the files are small), so the same code serves a
//! path, an upload and a fuzz target. Every check that can name a problem does so before the
//! tensors reach candle: truncation (with the sizes), missing or unexpected tensors, shapes,
//! dtypes, and the metadata rules of [`crate::metadata`].
//!
//! Writing is byte-for-byte deterministic (fixed tensor and key order), so the same training
//! seed gives the same file.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};

use crate::metadata::KEY_PREFIX;
use crate::nets::{self, Architecture};
use crate::{ModelError, ModelMetadata};

/// The two model file formats, told apart by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// f32 tensors in safetensors, metadata in `__metadata__`.
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

    fn name(self) -> &'static str {
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
}

/// A parsed and checked model file.
pub(crate) struct ModelFile {
    pub metadata: ModelMetadata,
    pub architecture: Architecture,
    pub weights: Weights,
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|cause| ModelError::Io {
        action: "read",
        path: path.to_path_buf(),
        cause,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    std::fs::write(path, bytes).map_err(|cause| ModelError::Io {
        action: "write",
        path: path.to_path_buf(),
        cause,
    })
}

/// Parses and checks a model file held in memory.
pub(crate) fn parse(bytes: &[u8], format: ModelFormat) -> Result<ModelFile, ModelError> {
    match format {
        ModelFormat::Safetensors => parse_safetensors(bytes),
        ModelFormat::Gguf => parse_gguf(bytes),
    }
}

/// Checks the metadata against the architecture it names and returns that architecture.
fn check_metadata(m: &ModelMetadata, format: ModelFormat) -> Result<Architecture, ModelError> {
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
    let quantized = m.quantization != "f32";
    if quantized != (format == ModelFormat::Gguf) {
        return Err(invalid(
            "quantization",
            format!(
                "{:?} in a {} file (safetensors holds f32, gguf holds q8_0 / q4_0)",
                m.quantization,
                format.name()
            ),
        ));
    }
    Ok(arch)
}

/// Refuses tensors the architecture does not have.
fn check_no_extra<S: AsRef<str>>(
    names: impl IntoIterator<Item = S>,
    arch: Architecture,
) -> Result<(), ModelError> {
    let params = arch.params();
    let mut extra: Vec<String> = names
        .into_iter()
        .map(|n| n.as_ref().to_string())
        .filter(|n| !params.iter().any(|(p, _)| p == n))
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

fn check_shape(name: &str, expected: &[usize], actual: &[usize]) -> Result<(), ModelError> {
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

// === safetensors ===

fn parse_safetensors(bytes: &[u8]) -> Result<ModelFile, ModelError> {
    const FORMAT: &str = "safetensors";
    let truncated = |detail: String| ModelError::Truncated {
        format: FORMAT,
        detail,
    };
    // Size checks first, so that a cut-short file says so rather than "invalid offset".
    let Some(len_bytes) = bytes.first_chunk::<8>() else {
        return Err(truncated(format!(
            "{} bytes, shorter than the 8-byte header length",
            bytes.len()
        )));
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    let header_end = 8u64.saturating_add(header_len);
    if header_end > bytes.len() as u64 {
        return Err(truncated(format!(
            "the header declares {header_len} bytes, the file has {} after the length",
            bytes.len() - 8
        )));
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| match e {
        // The declared data does not end where the file does: report by how much.
        safetensors::SafeTensorError::MetadataIncompleteBuffer => {
            data_extent_error(bytes, header_end as usize)
        }
        e => ModelError::Format {
            format: FORMAT,
            detail: e.to_string(),
        },
    })?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| ModelError::Format {
        format: FORMAT,
        detail: e.to_string(),
    })?;
    let empty = HashMap::new();
    let pairs = meta.metadata().as_ref().unwrap_or(&empty);
    let metadata =
        ModelMetadata::from_string_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let architecture = check_metadata(&metadata, ModelFormat::Safetensors)?;
    let names = st.names();
    check_no_extra(names, architecture)?;
    let mut weights = Vec::new();
    for (name, shape) in architecture.params() {
        let view = st
            .tensor(name)
            .map_err(|_| ModelError::MissingTensor(name.to_string()))?;
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(ModelError::TensorDtype {
                name: name.to_string(),
                expected: "F32".into(),
                actual: format!("{:?}", view.dtype()),
            });
        }
        check_shape(name, &shape, view.shape())?;
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::Format {
                format: FORMAT,
                detail: format!("tensor {name} holds a non-finite value at index {i}"),
            });
        }
        weights.push((
            name.to_string(),
            Tensor::from_vec(values, shape, &Device::Cpu)?,
        ));
    }
    Ok(ModelFile {
        metadata,
        architecture,
        weights: Weights::F32(weights),
    })
}

/// Explains a safetensors file whose tensor data does not end at the end of the file.
fn data_extent_error(bytes: &[u8], header_end: usize) -> ModelError {
    let header: Result<serde_json::Value, _> = serde_json::from_slice(&bytes[8..header_end]);
    let data_end = header.ok().and_then(|h| {
        h.as_object()?
            .iter()
            .filter(|(k, _)| *k != "__metadata__")
            .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
            .max()
    });
    let have = (bytes.len() - header_end) as u64;
    match data_end {
        Some(want) if want > have => ModelError::Truncated {
            format: "safetensors",
            detail: format!("the tensors need {want} bytes of data, the file holds {have}"),
        },
        Some(want) => ModelError::Format {
            format: "safetensors",
            detail: format!("{} bytes of trailing data after the tensors", have - want),
        },
        None => ModelError::Format {
            format: "safetensors",
            detail: "tensor data does not cover the file".into(),
        },
    }
}

/// Writes f32 tensors and metadata as safetensors. The header is built by hand, keys in a fixed
/// order, because the `safetensors` crate writes metadata from a `HashMap` in random order.
pub(crate) fn safetensors_bytes(
    metadata: &ModelMetadata,
    tensors: &[(String, Tensor)],
) -> Result<Vec<u8>, ModelError> {
    let json = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let meta: Vec<String> = metadata
        .to_string_pairs()
        .iter()
        .map(|(k, v)| format!("{}:{}", json(k), json(v)))
        .collect();
    let mut entries = vec![format!("\"__metadata__\":{{{}}}", meta.join(","))];
    let mut data = Vec::new();
    for (name, t) in tensors {
        let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let start = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        entries.push(format!(
            "{}:{{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[{start},{}]}}",
            json(name),
            serde_json::to_string(t.dims()).expect("dims serialize"),
            data.len()
        ));
    }
    let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
    // The format asks for the data to start 8-byte aligned; pad the header with spaces.
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + header.len() + data.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    Ok(out)
}

/// Saves an f32 model (tensors in [`Architecture::params`] order) as `.safetensors`.
pub fn save_safetensors(
    path: &Path,
    metadata: &ModelMetadata,
    tensors: &[(String, Tensor)],
) -> Result<(), ModelError> {
    metadata.validate()?;
    write_file(path, &safetensors_bytes(metadata, tensors)?)
}

// === gguf ===

fn parse_gguf(bytes: &[u8]) -> Result<ModelFile, ModelError> {
    const FORMAT: &str = "gguf";
    let mut cursor = Cursor::new(bytes);
    let content = gguf_file::Content::read(&mut cursor).map_err(|e| gguf_error(e, bytes.len()))?;
    let pairs: Vec<(String, String)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with(KEY_PREFIX))
        .map(|(k, v)| Ok((k.clone(), gguf_value_text(k, v)?)))
        .collect::<Result<_, ModelError>>()?;
    let metadata =
        ModelMetadata::from_string_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let architecture = check_metadata(&metadata, ModelFormat::Gguf)?;
    if architecture != Architecture::EdgeMlp {
        return Err(ModelError::Unsupported(format!(
            "quantized {} models (only {} is quantized)",
            architecture.id(),
            Architecture::EdgeMlp.id()
        )));
    }
    check_no_extra(content.tensor_infos.keys(), architecture)?;
    let qdtype = nets::ggml_dtype(&metadata.quantization)?;
    let mut weights = Vec::new();
    for (name, shape) in architecture.params() {
        let info = content
            .tensor_infos
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        check_shape(name, &shape, info.shape.dims())?;
        let expected = if name.ends_with(".bias") {
            GgmlDType::F32
        } else {
            qdtype
        };
        if info.ggml_dtype != expected {
            return Err(ModelError::TensorDtype {
                name: name.to_string(),
                expected: format!("{expected:?}"),
                actual: format!("{:?}", info.ggml_dtype),
            });
        }
        let n_bytes = info.shape.elem_count() / expected.block_size() * expected.type_size();
        let end = content
            .tensor_data_offset
            .saturating_add(info.offset)
            .saturating_add(n_bytes as u64);
        if end > bytes.len() as u64 {
            return Err(ModelError::Truncated {
                format: FORMAT,
                detail: format!(
                    "tensor {name} needs bytes up to {end}, the file has {}",
                    bytes.len()
                ),
            });
        }
        let t = info
            .read(&mut cursor, content.tensor_data_offset, &Device::Cpu)
            .map_err(|e| ModelError::Format {
                format: FORMAT,
                detail: format!("tensor {name}: {e}"),
            })?;
        // A NaN or infinite block scale would turn every answer into NaN.
        let values = t
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::Format {
                format: FORMAT,
                detail: format!("tensor {name} holds a non-finite value at index {i}"),
            });
        }
        weights.push((name.to_string(), t));
    }
    Ok(ModelFile {
        metadata,
        architecture,
        weights: Weights::Quantized(weights),
    })
}

/// Classifies a GGUF header error: running out of bytes is truncation, anything else is format.
fn gguf_error(e: candle_core::Error, len: usize) -> ModelError {
    let text = e.to_string();
    let eof = matches!(&e, candle_core::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof)
        || text.contains("remaining")
        || text.contains("failed to fill whole buffer");
    if eof {
        ModelError::Truncated {
            format: "gguf",
            detail: format!("the header does not fit in the file's {len} bytes ({text})"),
        }
    } else {
        ModelError::Format {
            format: "gguf",
            detail: text,
        }
    }
}

/// A GGUF metadata value in the string form of [`ModelMetadata::from_string_pairs`].
fn gguf_value_text(key: &str, v: &gguf_file::Value) -> Result<String, ModelError> {
    use gguf_file::Value as V;
    let wrong = || ModelError::InvalidMetadata {
        key: key.to_string(),
        detail: format!("unexpected GGUF value type {:?}", v.value_type()),
    };
    Ok(match v {
        V::String(s) => s.clone(),
        V::F32(x) => x.to_string(),
        V::F64(x) => x.to_string(),
        V::U32(x) => x.to_string(),
        V::U64(x) => x.to_string(),
        V::Array(items) => {
            let texts = items
                .iter()
                .map(|item| match item {
                    V::U32(x) => Ok(serde_json::json!(x)),
                    V::U64(x) => Ok(serde_json::json!(x)),
                    V::String(s) => Ok(serde_json::json!(s)),
                    _ => Err(wrong()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            serde_json::Value::Array(texts).to_string()
        }
        _ => return Err(wrong()),
    })
}

/// The metadata as typed GGUF values, in [`crate::metadata::KEYS`] order.
fn gguf_metadata(m: &ModelMetadata) -> Vec<(String, gguf_file::Value)> {
    use gguf_file::Value as V;
    let values = [
        V::String(m.name.clone()),
        V::String(m.version.clone()),
        V::String(m.task.clone()),
        V::String(m.architecture.clone()),
        V::Array(m.input_shape.iter().map(|&d| V::U32(d as u32)).collect()),
        V::Array(m.labels.iter().map(|l| V::String(l.clone())).collect()),
        V::F32(m.temperature),
        V::F64(m.test_accuracy),
        V::String(m.quantization.clone()),
    ];
    crate::metadata::KEYS
        .iter()
        .zip(values)
        .map(|(k, v)| (format!("{KEY_PREFIX}{k}"), v))
        .collect()
}

/// Quantizes f32 tensors for `metadata.quantization`: weights to q8_0 / q4_0, biases kept f32.
pub(crate) fn quantize_tensors(
    metadata: &ModelMetadata,
    tensors: &[(String, Tensor)],
) -> Result<Vec<(String, QTensor)>, ModelError> {
    let qdtype = nets::ggml_dtype(&metadata.quantization)?;
    tensors
        .iter()
        .map(|(name, t)| {
            let dtype = if name.ends_with(".bias") {
                GgmlDType::F32
            } else {
                qdtype
            };
            Ok((name.clone(), QTensor::quantize(t, dtype)?))
        })
        .collect()
}

/// The GGUF bytes of quantized tensors (in params order) and metadata.
pub(crate) fn gguf_bytes(
    metadata: &ModelMetadata,
    tensors: &[(String, std::sync::Arc<QTensor>)],
) -> Result<Vec<u8>, ModelError> {
    metadata.validate()?;
    let meta = gguf_metadata(metadata);
    let meta_refs: Vec<(&str, &gguf_file::Value)> =
        meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors
        .iter()
        .map(|(k, t)| (k.as_str(), t.as_ref()))
        .collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &meta_refs, &tensor_refs)?;
    Ok(out.into_inner())
}

/// Saves a quantized model as `.gguf`.
pub fn save_gguf(
    path: &Path,
    metadata: &ModelMetadata,
    tensors: &[(String, std::sync::Arc<QTensor>)],
) -> Result<(), ModelError> {
    write_file(path, &gguf_bytes(metadata, tensors)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Classifier, Model};

    fn f32_params(arch: Architecture) -> (ModelMetadata, Vec<(String, Tensor)>) {
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

    fn q_params(
        m: &ModelMetadata,
        params: &[(String, Tensor)],
    ) -> Vec<(String, std::sync::Arc<QTensor>)> {
        quantize_tensors(m, params)
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n, std::sync::Arc::new(t)))
            .collect()
    }

    fn err_of(r: Result<Model, ModelError>) -> ModelError {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn safetensors_round_trip_is_exact_and_deterministic() {
        for arch in Architecture::ALL {
            let (m, params) = f32_params(arch);
            let bytes = safetensors_bytes(&m, &params).unwrap();
            assert_eq!(bytes, safetensors_bytes(&m, &params).unwrap());
            let model = Model::from_bytes(&bytes, ModelFormat::Safetensors).unwrap();
            assert_eq!(model.metadata(), &m);
            let direct = Model::from_f32(m.clone(), params).unwrap();
            let x = vec![0.5f32; 2 * 784];
            assert_eq!(model.logits(&x, 2).unwrap(), direct.logits(&x, 2).unwrap());
        }
    }

    #[test]
    fn gguf_round_trip_matches_f32_within_quantization_error() {
        let (m, params) = f32_params(Architecture::EdgeMlp);
        let f32_model = Model::from_f32(m.clone(), params.clone()).unwrap();
        let x: Vec<f32> = (0..3 * 784).map(|i| (i % 7) as f32 / 7.0).collect();
        let want = f32_model.logits(&x, 3).unwrap();
        for (q, tol) in [("q8_0", 0.05), ("q4_0", 0.5)] {
            let mut qm = m.clone();
            qm.quantization = q.into();
            let bytes = gguf_bytes(&qm, &q_params(&qm, &params)).unwrap();
            let model = Model::from_bytes(&bytes, ModelFormat::Gguf).unwrap();
            assert_eq!(model.metadata(), &qm);
            let got = model.logits(&x, 3).unwrap();
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < tol, "{q}: max |logit error| {err}");
        }
    }

    #[test]
    fn truncated_files_say_so_at_every_cut() {
        let (m, params) = f32_params(Architecture::EdgeMlp);
        let st = safetensors_bytes(&m, &params).unwrap();
        let mut qm = m.clone();
        qm.quantization = "q8_0".into();
        let gg = gguf_bytes(&qm, &q_params(&qm, &params)).unwrap();
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
        let st = safetensors_bytes(&m, &params).unwrap();
        let err = err_of(Model::from_bytes(&st, ModelFormat::Safetensors));
        assert!(
            matches!(err, ModelError::TensorShape { ref name, .. } if name == "fc1.weight"),
            "{err}"
        );
        assert!(err.to_string().contains("[128, 800]"), "{err}");

        let mut qm = m.clone();
        qm.quantization = "q4_0".into();
        let gg = gguf_bytes(&qm, &q_params(&qm, &params)).unwrap();
        let err = err_of(Model::from_bytes(&gg, ModelFormat::Gguf));
        assert!(
            matches!(err, ModelError::TensorShape { ref name, .. } if name == "fc1.weight"),
            "{err}"
        );
    }

    #[test]
    fn missing_extra_and_mistyped_tensors() {
        let (m, params) = f32_params(Architecture::EdgeMlp);
        let st = safetensors_bytes(&m, &params[..3]).unwrap();
        let err = err_of(Model::from_bytes(&st, ModelFormat::Safetensors));
        assert!(
            matches!(err, ModelError::MissingTensor(ref n) if n == "fc2.bias"),
            "{err}"
        );

        let mut more = params.clone();
        more.push(("fc3.weight".into(), params[3].1.clone()));
        let st = safetensors_bytes(&m, &more).unwrap();
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
        let gg = gguf_bytes(&qm, &q).unwrap();
        let err = err_of(Model::from_bytes(&gg, ModelFormat::Gguf));
        assert!(
            matches!(err, ModelError::TensorDtype { ref name, .. } if name == "fc1.bias"),
            "{err}"
        );
    }

    #[test]
    fn unknown_missing_and_inconsistent_metadata() {
        let (m, params) = f32_params(Architecture::EdgeMlp);
        let mut qm = m.clone();
        qm.quantization = "q8_0".into();
        let q = q_params(&qm, &params);
        let write = |meta: Vec<(String, gguf_file::Value)>| {
            let meta_refs: Vec<_> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let t: Vec<_> = q.iter().map(|(k, t)| (k.as_str(), t.as_ref())).collect();
            let mut out = Cursor::new(Vec::new());
            gguf_file::write(&mut out, &meta_refs, &t).unwrap();
            out.into_inner()
        };
        let mut meta = gguf_metadata(&qm);
        meta.push(("edgeinfer.threshold".into(), gguf_file::Value::F32(0.9)));
        let err = err_of(Model::from_bytes(&write(meta), ModelFormat::Gguf));
        assert!(
            matches!(err, ModelError::UnknownMetadata(ref k) if k == "edgeinfer.threshold"),
            "{err}"
        );

        let meta: Vec<_> = gguf_metadata(&qm)
            .into_iter()
            .filter(|(k, _)| k != "edgeinfer.labels")
            .collect();
        let err = err_of(Model::from_bytes(&write(meta), ModelFormat::Gguf));
        assert!(
            matches!(err, ModelError::MissingMetadata(ref k) if k == "edgeinfer.labels"),
            "{err}"
        );

        // Metadata that contradicts the tensors or the format.
        let mut bad = m.clone();
        bad.labels.pop();
        let err = err_of(Model::from_bytes(
            &safetensors_bytes(&bad, &params).unwrap(),
            ModelFormat::Safetensors,
        ));
        assert!(err.to_string().contains("edgeinfer.labels"), "{err}");
        let mut bad = m.clone();
        bad.architecture = "transformer".into();
        let err = err_of(Model::from_bytes(
            &safetensors_bytes(&bad, &params).unwrap(),
            ModelFormat::Safetensors,
        ));
        assert!(matches!(err, ModelError::UnknownArchitecture(_)), "{err}");
        let err = err_of(Model::from_bytes(
            &safetensors_bytes(&qm, &params).unwrap(),
            ModelFormat::Safetensors,
        ));
        assert!(err.to_string().contains("edgeinfer.quantization"), "{err}");
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
                safetensors_bytes(&m, &params).unwrap(),
                ModelFormat::Safetensors,
            ),
            (
                gguf_bytes(&qm, &q_params(&qm, &params)).unwrap(),
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
                if let Ok(model) = Model::from_bytes(&b, *format) {
                    if let Ok(p) = model.classify(&x, 1) {
                        assert!(p.iter().all(|v| v.is_finite()), "{format:?}: {p:?}");
                    }
                }
            }
        }
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
