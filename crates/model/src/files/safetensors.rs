//! The `.safetensors` format, metadata as strings in the `__metadata__` header. It holds the f32
//! models (every parameter F32) and the int8 edge MLP (quantization `int8`): per layer an I8
//! `<layer>.weight`, an F32 `<layer>.weight_scale` with one scale per row, an F32 `<layer>.bias`.
//!
//! Reading checks sizes before the `safetensors` crate sees the bytes, so that a file cut short
//! says by how much; writing builds the header by hand, keys in a fixed order.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{
    Int8Layer, ModelFile, ModelFormat, Weights, check_metadata, check_no_extra, check_shape,
    read_detector, write_file,
};
use crate::nets::Architecture;
use crate::ood::{self, Detector};
use crate::{ModelError, ModelMetadata};

const FORMAT: &str = "safetensors";
/// The quantization name of int8 files.
const INT8: &str = "int8";

pub(super) fn parse(bytes: &[u8]) -> Result<ModelFile, ModelError> {
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
    let weights = if metadata.quantization == INT8 {
        Weights::Int8(read_int8(&st, architecture)?)
    } else {
        check_no_extra(
            st.names(),
            architecture
                .params()
                .iter()
                .map(|(n, _)| *n)
                .chain(ood::TENSORS),
            architecture,
        )?;
        let mut weights = Vec::new();
        for (name, shape) in architecture.params() {
            let values = read_f32(&st, name, &shape)?;
            weights.push((
                name.to_string(),
                Tensor::from_vec(values, shape, &Device::Cpu)?,
            ));
        }
        Weights::F32(weights)
    };
    let ood = read_detector(
        |name| st.tensor(name).is_ok(),
        |name| {
            let shape = st
                .tensor(name)
                .map_err(|_| ModelError::MissingTensor(name.to_string()))?
                .shape()
                .to_vec();
            Ok((shape.clone(), read_f32(&st, name, &shape)?))
        },
        metadata.input_len(),
    )?;
    Ok(ModelFile {
        metadata,
        architecture,
        weights,
        ood,
    })
}

/// The tensor `name`, checked to be there with `dtype` and `shape`.
fn view<'a>(
    st: &'a safetensors::SafeTensors<'a>,
    name: &str,
    dtype: safetensors::Dtype,
    shape: &[usize],
) -> Result<safetensors::tensor::TensorView<'a>, ModelError> {
    let view = st
        .tensor(name)
        .map_err(|_| ModelError::MissingTensor(name.to_string()))?;
    if view.dtype() != dtype {
        return Err(ModelError::TensorDtype {
            name: name.to_string(),
            expected: format!("{dtype:?}"),
            actual: format!("{:?}", view.dtype()),
        });
    }
    check_shape(name, shape, view.shape())?;
    Ok(view)
}

/// An F32 tensor's values, refused if any is not finite.
fn read_f32(
    st: &safetensors::SafeTensors<'_>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, ModelError> {
    let values: Vec<f32> = view(st, name, safetensors::Dtype::F32, shape)?
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
    Ok(values)
}

/// The layers of an int8 file: per weight of the architecture, the I8 weight, its F32 scale
/// per row (`<layer>.weight_scale`) and the F32 bias.
fn read_int8(
    st: &safetensors::SafeTensors<'_>,
    arch: Architecture,
) -> Result<Vec<Int8Layer>, ModelError> {
    if arch != Architecture::EdgeMlp {
        return Err(ModelError::Unsupported(format!(
            "int8 {} models (only {} is quantized)",
            arch.id(),
            Architecture::EdgeMlp.id()
        )));
    }
    let layers = int8_layers(arch);
    let names: Vec<String> = layers.iter().flat_map(Int8Names::all).collect();
    check_no_extra(
        st.names(),
        names.iter().map(String::as_str).chain(ood::TENSORS),
        arch,
    )?;
    layers
        .into_iter()
        .map(|l| {
            let weights: Vec<i8> = view(st, &l.weight, safetensors::Dtype::I8, &l.shape)?
                .data()
                .iter()
                .map(|&b| b as i8)
                .collect();
            if let Some(i) = weights.iter().position(|&w| w == i8::MIN) {
                return Err(ModelError::Format {
                    format: FORMAT,
                    detail: format!(
                        "tensor {} holds -128 at index {i}; int8 weights lie in [-127, 127]",
                        l.weight
                    ),
                });
            }
            let scales = read_f32(st, &l.scale, &l.shape[..1])?;
            if let Some(i) = scales.iter().position(|&s| s < 0.0) {
                return Err(ModelError::Format {
                    format: FORMAT,
                    detail: format!("tensor {} holds a negative scale at index {i}", l.scale),
                });
            }
            let bias = read_f32(st, &l.bias, &l.shape[..1])?;
            Ok(Int8Layer {
                name: l.layer,
                shape: l.shape,
                weights,
                scales,
                bias,
            })
        })
        .collect()
}

/// The tensor names and weight shape of one int8 layer.
struct Int8Names {
    layer: String,
    weight: String,
    scale: String,
    bias: String,
    shape: Vec<usize>,
}

impl Int8Names {
    fn all(&self) -> [String; 3] {
        [self.weight.clone(), self.scale.clone(), self.bias.clone()]
    }
}

/// The int8 layers of `arch`: one per `<layer>.weight` of [`Architecture::params`].
fn int8_layers(arch: Architecture) -> Vec<Int8Names> {
    arch.params()
        .into_iter()
        .filter_map(|(name, shape)| {
            let layer = name.strip_suffix(".weight")?;
            Some(Int8Names {
                layer: layer.to_string(),
                weight: name.to_string(),
                scale: format!("{layer}.weight_scale"),
                bias: format!("{layer}.bias"),
                shape,
            })
        })
        .collect()
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

/// One tensor to write: name, safetensors dtype, shape, little-endian bytes.
type Entry = (String, &'static str, Vec<usize>, Vec<u8>);

/// Writes f32 tensors and metadata as safetensors.
pub(crate) fn safetensors_bytes(
    metadata: &ModelMetadata,
    tensors: &[(String, Tensor)],
    ood: Option<&Detector>,
) -> Result<Vec<u8>, ModelError> {
    let mut entries = tensors
        .iter()
        .map(|(name, t)| {
            let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            Ok((name.clone(), "F32", t.dims().to_vec(), f32_bytes(&values)))
        })
        .collect::<Result<Vec<Entry>, ModelError>>()?;
    entries.extend(detector_entries(ood));
    Ok(file_bytes(metadata, &entries))
}

/// Writes int8 layers and metadata as safetensors: per layer, weight, scale and bias.
pub(crate) fn int8_safetensors_bytes(
    metadata: &ModelMetadata,
    layers: &[Int8Layer],
    ood: Option<&Detector>,
) -> Vec<u8> {
    let mut entries: Vec<Entry> = layers
        .iter()
        .flat_map(|l| {
            let rows = vec![l.shape[0]];
            [
                (
                    format!("{}.weight", l.name),
                    "I8",
                    l.shape.clone(),
                    l.weights.iter().map(|&w| w as u8).collect(),
                ),
                (
                    format!("{}.weight_scale", l.name),
                    "F32",
                    rows.clone(),
                    f32_bytes(&l.scales),
                ),
                (format!("{}.bias", l.name), "F32", rows, f32_bytes(&l.bias)),
            ]
        })
        .collect();
    entries.extend(detector_entries(ood));
    file_bytes(metadata, &entries)
}

/// The input detector's tensors, F32, after the network's.
fn detector_entries(ood: Option<&Detector>) -> Vec<Entry> {
    ood.map_or_else(Vec::new, |d| {
        d.parts()
            .into_iter()
            .map(|(name, shape, values)| (name.to_string(), "F32", shape, f32_bytes(&values)))
            .collect()
    })
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The file: header length, JSON header, data. The header is built by hand, keys in a fixed
/// order, because the `safetensors` crate writes metadata from a `HashMap` in random order.
fn file_bytes(metadata: &ModelMetadata, tensors: &[Entry]) -> Vec<u8> {
    let json = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let meta: Vec<String> = metadata
        .to_string_pairs()
        .iter()
        .map(|(k, v)| format!("{}:{}", json(k), json(v)))
        .collect();
    let mut entries = vec![format!("\"__metadata__\":{{{}}}", meta.join(","))];
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        entries.push(format!(
            "{}:{{\"dtype\":\"{dtype}\",\"shape\":{},\"data_offsets\":[{start},{}]}}",
            json(name),
            serde_json::to_string(shape).expect("dims serialize"),
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
    out
}

/// Saves an f32 model (tensors in [`Architecture::params`] order) as `.safetensors`.
pub(crate) fn save_safetensors(
    path: &Path,
    metadata: &ModelMetadata,
    tensors: &[(String, Tensor)],
    ood: Option<&Detector>,
) -> Result<(), ModelError> {
    metadata.validate()?;
    write_file(path, &safetensors_bytes(metadata, tensors, ood)?)
}

/// Saves an int8 model as `.safetensors`.
pub(crate) fn save_int8_safetensors(
    path: &Path,
    metadata: &ModelMetadata,
    layers: &[Int8Layer],
    ood: Option<&Detector>,
) -> Result<(), ModelError> {
    metadata.validate()?;
    write_file(path, &int8_safetensors_bytes(metadata, layers, ood))
}

#[cfg(test)]
mod tests {
    use super::super::tests::f32_params;
    use super::*;
    use crate::{Classifier, Model, nets::Architecture};

    #[test]
    fn safetensors_round_trip_is_exact_and_deterministic() {
        for arch in Architecture::ALL {
            let (m, params) = f32_params(arch);
            let bytes = safetensors_bytes(&m, &params, None).unwrap();
            assert_eq!(bytes, safetensors_bytes(&m, &params, None).unwrap());
            let model = Model::from_bytes(&bytes, ModelFormat::Safetensors).unwrap();
            assert_eq!(model.metadata(), &m);
            let direct = Model::from_f32(m.clone(), params).unwrap();
            let x = vec![0.5f32; 2 * 784];
            assert_eq!(model.logits(&x, 2).unwrap(), direct.logits(&x, 2).unwrap());
        }
    }

    /// An int8 file round-trips exactly, computes what the f32 network does within the error
    /// of 8-bit weights and inputs, with every kernel the same, and refuses what the kernels
    /// cannot take.
    #[test]
    fn int8_round_trip_and_refusals() {
        let (m, params) = f32_params(Architecture::EdgeMlp);
        let f32_model = Model::from_f32(m.clone(), params).unwrap();
        let model = f32_model.quantize(INT8).unwrap();
        assert_eq!(model.metadata().quantization, INT8);
        let (_, params) = f32_params(Architecture::EdgeMlp);
        let layers = &super::super::quantize_int8(&params).unwrap();
        let bytes = int8_safetensors_bytes(model.metadata(), layers, None);
        let again = Model::from_bytes(&bytes, ModelFormat::Safetensors).unwrap();
        assert_eq!(
            int8_safetensors_bytes(again.metadata(), layers, None),
            bytes
        );
        let x: Vec<f32> = (0..3 * 784).map(|i| (i % 7) as f32 / 7.0).collect();
        let want = f32_model.logits(&x, 3).unwrap();
        let got = again.logits(&x, 3).unwrap();
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 0.05, "max |logit error| {err}");

        let mut minus_128 = layers.clone();
        minus_128[0].weights[5] = i8::MIN;
        let mut nan_scale = layers.clone();
        nan_scale[1].scales[0] = f32::NAN;
        for (bad, tensor) in [(minus_128, "fc1.weight"), (nan_scale, "fc2.weight_scale")] {
            let bytes = int8_safetensors_bytes(model.metadata(), &bad, None);
            let err = Model::from_bytes(&bytes, ModelFormat::Safetensors)
                .err()
                .expect("refused");
            assert!(err.to_string().contains(tensor), "{err}");
        }
        // An f32 file claiming int8 lacks the scales.
        let mut im = m.clone();
        im.quantization = INT8.into();
        let err = Model::from_bytes(
            &safetensors_bytes(&im, &params, None).unwrap(),
            ModelFormat::Safetensors,
        )
        .err()
        .expect("f32 tensors are not int8 ones");
        assert!(
            matches!(
                err,
                ModelError::TensorDtype { .. } | ModelError::UnexpectedTensor { .. }
            ),
            "{err}"
        );
    }
}
