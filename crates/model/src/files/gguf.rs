//! The `.gguf` format: q8_0 / q4_0 weights and f32 biases as candle `QTensor`s, metadata as
//! typed GGUF values.
//!
//! candle's GGUF reader reports every problem as a message string, so before it runs,
//! [`scan_header`] walks the header's structure itself and tells a file cut short (a typed
//! [`HeaderError::Truncated`]) from one that is malformed; what candle then refuses is a format
//! error.

use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};

use super::{
    ModelFile, ModelFormat, Weights, check_metadata, check_no_extra, check_shape, read_detector,
    write_file,
};
use crate::metadata::KEY_PREFIX;
use crate::nets::{self, Architecture};
use crate::ood::{self, Detector};
use crate::{ModelError, ModelMetadata};

const FORMAT: &str = "gguf";

pub(super) fn parse(bytes: &[u8]) -> Result<ModelFile, ModelError> {
    let mut cursor = Cursor::new(bytes);
    scan_header(bytes).map_err(HeaderError::into_model_error)?;
    // The header's structure is whole, so whatever candle refuses is malformed, not cut short.
    let content = gguf_file::Content::read(&mut cursor).map_err(|e| ModelError::Format {
        format: FORMAT,
        detail: e.to_string(),
    })?;
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
    check_no_extra(
        content.tensor_infos.keys(),
        architecture
            .params()
            .iter()
            .map(|(n, _)| *n)
            .chain(ood::TENSORS),
        architecture,
    )?;
    let qdtype = nets::ggml_dtype(&metadata.quantization)?;
    let mut weights = Vec::new();
    for (name, shape) in architecture.params() {
        let expected = if name.ends_with(".bias") {
            GgmlDType::F32
        } else {
            qdtype
        };
        if let Some(info) = content.tensor_infos.get(name) {
            check_shape(name, &shape, info.shape.dims())?;
        }
        weights.push((
            name.to_string(),
            read_tensor(&content, &mut cursor, name, expected)?,
        ));
    }
    let ood = read_detector(
        |name| content.tensor_infos.contains_key(name),
        |name| {
            let t = read_tensor(&content, &mut cursor, name, GgmlDType::F32)?;
            let values = t.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()?;
            Ok((t.shape().dims().to_vec(), values))
        },
        metadata.input_len(),
    )?;
    Ok(ModelFile {
        metadata,
        architecture,
        weights: Weights::Quantized(weights),
        ood,
    })
}

/// Reads tensor `name`, checked to be of `dtype`, to lie within the file, and to hold only
/// finite values (a NaN or infinite block scale would turn every answer into NaN).
fn read_tensor(
    content: &gguf_file::Content,
    cursor: &mut Cursor<&[u8]>,
    name: &str,
    dtype: GgmlDType,
) -> Result<QTensor, ModelError> {
    let info = content
        .tensor_infos
        .get(name)
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    if info.ggml_dtype != dtype {
        return Err(ModelError::TensorDtype {
            name: name.to_string(),
            expected: format!("{dtype:?}"),
            actual: format!("{:?}", info.ggml_dtype),
        });
    }
    let len = cursor.get_ref().len() as u64;
    // Dimensions come from the file: multiply them without overflowing.
    let n_bytes = info
        .shape
        .dims()
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .and_then(|elems| (elems / dtype.block_size()).checked_mul(dtype.type_size()))
        .ok_or_else(|| ModelError::Format {
            format: FORMAT,
            detail: format!("tensor {name} declares more elements than memory holds"),
        })?;
    let end = content
        .tensor_data_offset
        .saturating_add(info.offset)
        .saturating_add(n_bytes as u64);
    if end > len {
        return Err(ModelError::Truncated {
            format: FORMAT,
            detail: format!("tensor {name} needs bytes up to {end}, the file has {len}"),
        });
    }
    let t = info
        .read(cursor, content.tensor_data_offset, &Device::Cpu)
        .map_err(|e| ModelError::Format {
            format: FORMAT,
            detail: format!("tensor {name}: {e}"),
        })?;
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
    Ok(t)
}

/// Why a GGUF header could not be walked.
#[derive(Debug, PartialEq, thiserror::Error)]
enum HeaderError {
    #[error("the header needs {needed} bytes at offset {at} ({what}), the file has {len}")]
    Truncated {
        what: &'static str,
        at: u64,
        needed: u64,
        len: u64,
    },
    #[error("{0}")]
    Malformed(String),
}

impl HeaderError {
    fn into_model_error(self) -> ModelError {
        match self {
            e @ HeaderError::Truncated { .. } => ModelError::Truncated {
                format: "gguf",
                detail: e.to_string(),
            },
            HeaderError::Malformed(detail) => ModelError::Format {
                format: "gguf",
                detail,
            },
        }
    }
}

/// The deepest nesting of GGUF arrays the scan follows; edgeinfer writes none.
const MAX_ARRAY_DEPTH: u32 = 4;

/// A position in the header being walked: reads advance it, and reading past the end is a
/// [`HeaderError::Truncated`] naming the field. Nothing is allocated, so a header declaring
/// huge lengths costs only the bytes the file really has.
struct Scan<'a> {
    bytes: &'a [u8],
    at: u64,
    /// Width of lengths and counts: 4 bytes in GGUF v1, 8 from v2.
    wide: bool,
}

impl Scan<'_> {
    fn skip(&mut self, what: &'static str, n: u64) -> Result<u64, HeaderError> {
        let len = self.bytes.len() as u64;
        match self.at.checked_add(n) {
            Some(end) if end <= len => {
                let start = self.at;
                self.at = end;
                Ok(start)
            }
            _ => Err(HeaderError::Truncated {
                what,
                at: self.at,
                needed: n,
                len,
            }),
        }
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, HeaderError> {
        let at = self.skip(what, 4)? as usize;
        let b: [u8; 4] = self.bytes[at..at + 4].try_into().expect("4 bytes");
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, HeaderError> {
        let at = self.skip(what, 8)? as usize;
        let b: [u8; 8] = self.bytes[at..at + 8].try_into().expect("8 bytes");
        Ok(u64::from_le_bytes(b))
    }

    fn length(&mut self, what: &'static str) -> Result<u64, HeaderError> {
        if self.wide {
            self.u64(what)
        } else {
            self.u32(what).map(u64::from)
        }
    }

    /// Skips a length-prefixed string; returns where its bytes start.
    fn string(&mut self, what: &'static str) -> Result<u64, HeaderError> {
        let n = self.length(what)?;
        self.skip(what, n)
    }

    /// Skips one metadata value of GGUF type `value_type`.
    fn value(&mut self, value_type: u32, depth: u32) -> Result<(), HeaderError> {
        const WHAT: &str = "a metadata value";
        match value_type {
            8 => self.string(WHAT).map(drop),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(HeaderError::Malformed(format!(
                        "metadata arrays nested deeper than {MAX_ARRAY_DEPTH}"
                    )));
                }
                let item_type = self.u32(WHAT)?;
                let n = self.length(WHAT)?;
                match fixed_value_size(item_type) {
                    Some(size) => self.skip(WHAT, n.saturating_mul(size)).map(drop),
                    // Strings and arrays are at least one length wide, so this loop ends at the
                    // end of the file whatever `n` says.
                    None => (0..n).try_for_each(|_| self.value(item_type, depth + 1)),
                }
            }
            t => match fixed_value_size(t) {
                Some(size) => self.skip(WHAT, size).map(drop),
                None => Err(HeaderError::Malformed(format!(
                    "unknown metadata value type {t}"
                ))),
            },
        }
    }
}

/// Bytes of a fixed-size GGUF value type, `None` for strings, arrays and unknown types.
fn fixed_value_size(value_type: u32) -> Option<u64> {
    match value_type {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// Walks the GGUF header (magic, version, metadata, tensor infos) without interpreting it, so
/// that a file cut short is told apart from a malformed one by a typed error before candle's
/// reader, whose errors are only text, runs. Tensor data extents are checked per tensor later.
fn scan_header(bytes: &[u8]) -> Result<(), HeaderError> {
    let mut scan = Scan {
        bytes,
        at: 0,
        wide: true,
    };
    let magic = scan.u32("the magic number")?;
    // candle accepts the magic in either byte order.
    if magic != 0x4655_4747 && magic != 0x4747_5546 {
        return Err(HeaderError::Malformed(format!(
            "magic number 0x{magic:08x} is not GGUF's"
        )));
    }
    let version = scan.u32("the version")?;
    scan.wide = match version {
        1 => false,
        2 | 3 => true,
        v => return Err(HeaderError::Malformed(format!("unsupported version {v}"))),
    };
    let tensors = scan.length("the tensor count")?;
    let entries = scan.length("the metadata count")?;
    // Every entry and tensor info takes bytes, so both loops end at the end of the file.
    for _ in 0..entries {
        let key = scan.string("a metadata key")? as usize..scan.at as usize;
        let value_type = scan.u32("a metadata value type")?;
        let value = scan.at as usize;
        scan.value(value_type, 0)?;
        // candle divides by the alignment: an integer 0 there would panic inside it. candle
        // drops trailing NULs from keys, so "general.alignment\0" is that key too.
        let key = &bytes[key];
        let key_end = key.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
        if &key[..key_end] == b"general.alignment"
            && (0..=5).contains(&value_type)
            && bytes[value..scan.at as usize].iter().all(|&b| b == 0)
        {
            return Err(HeaderError::Malformed(
                "general.alignment is 0; tensor data is aligned to at least 1 byte".into(),
            ));
        }
    }
    for _ in 0..tensors {
        scan.string("a tensor name")?;
        let dims = scan.u32("a tensor's dimension count")?;
        let dim_width = if scan.wide { 8 } else { 4 };
        scan.skip(
            "a tensor's dimensions",
            u64::from(dims).saturating_mul(dim_width),
        )?;
        scan.skip("a tensor's type and offset", 4 + 8)?;
    }
    Ok(())
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
    ood: Option<&Detector>,
) -> Result<Vec<u8>, ModelError> {
    metadata.validate()?;
    let meta = gguf_metadata(metadata);
    let meta_refs: Vec<(&str, &gguf_file::Value)> =
        meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let detector = ood
        .map(|d| {
            d.parts()
                .into_iter()
                .map(|(name, shape, values)| {
                    let t = Tensor::from_vec(values, shape, &Device::Cpu)?;
                    Ok((name, QTensor::quantize(&t, GgmlDType::F32)?))
                })
                .collect::<Result<Vec<_>, ModelError>>()
        })
        .transpose()?
        .unwrap_or_default();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors
        .iter()
        .map(|(k, t)| (k.as_str(), t.as_ref()))
        .chain(detector.iter().map(|(k, t)| (*k, t)))
        .collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &meta_refs, &tensor_refs)?;
    Ok(out.into_inner())
}

/// Saves a quantized model as `.gguf`.
pub(crate) fn save_gguf(
    path: &Path,
    metadata: &ModelMetadata,
    tensors: &[(String, std::sync::Arc<QTensor>)],
    ood: Option<&Detector>,
) -> Result<(), ModelError> {
    write_file(path, &gguf_bytes(metadata, tensors, ood)?)
}

#[cfg(test)]
mod tests {
    use super::super::safetensors::safetensors_bytes;
    use super::super::tests::{err_of, f32_params, q_params};
    use super::*;
    use crate::{Classifier, Model};

    #[test]
    fn gguf_round_trip_matches_f32_within_quantization_error() {
        let (m, params) = f32_params(Architecture::EdgeMlp);
        let f32_model = Model::from_f32(m.clone(), params.clone()).unwrap();
        let x: Vec<f32> = (0..3 * 784).map(|i| (i % 7) as f32 / 7.0).collect();
        let want = f32_model.logits(&x, 3).unwrap();
        for (q, tol) in [("q8_0", 0.05), ("q4_0", 0.5)] {
            let mut qm = m.clone();
            qm.quantization = q.into();
            let bytes = gguf_bytes(&qm, &q_params(&qm, &params), None).unwrap();
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
            &safetensors_bytes(&bad, &params, None).unwrap(),
            ModelFormat::Safetensors,
        ));
        assert!(err.to_string().contains("edgeinfer.labels"), "{err}");
        let mut bad = m.clone();
        bad.architecture = "transformer".into();
        let err = err_of(Model::from_bytes(
            &safetensors_bytes(&bad, &params, None).unwrap(),
            ModelFormat::Safetensors,
        ));
        assert!(matches!(err, ModelError::UnknownArchitecture(_)), "{err}");
        let err = err_of(Model::from_bytes(
            &safetensors_bytes(&qm, &params, None).unwrap(),
            ModelFormat::Safetensors,
        ));
        assert!(err.to_string().contains("edgeinfer.quantization"), "{err}");
    }

    /// The scan's verdicts are typed: every cut inside the header is truncation naming the
    /// field it fell in, and a wrong magic or version is malformed whatever follows.
    /// Found by the model_file fuzz target: candle divides by `general.alignment`, so a 0
    /// there must be refused before candle reads the file (fuzz/corpus/model_file keeps the
    /// input that found it).
    #[test]
    fn a_zero_alignment_is_refused_not_a_panic() {
        let (m, params) = f32_params(Architecture::EdgeMlp);
        let mut qm = m.clone();
        qm.quantization = "q8_0".into();
        let q = q_params(&qm, &params);
        let mut meta = gguf_metadata(&qm);
        // candle drops trailing NULs from keys: the padded key is the same key.
        for (key, zero) in [
            ("general.alignment", gguf_file::Value::U32(0)),
            ("general.alignment\0\0", gguf_file::Value::U8(0)),
        ] {
            meta.push((key.into(), zero));
            let refs: Vec<(&str, &gguf_file::Value)> =
                meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let tensors: Vec<(&str, &QTensor)> =
                q.iter().map(|(k, t)| (k.as_str(), t.as_ref())).collect();
            let mut out = Cursor::new(Vec::new());
            gguf_file::write(&mut out, &refs, &tensors).unwrap();
            let err = err_of(Model::from_bytes(&out.into_inner(), ModelFormat::Gguf));
            assert!(err.to_string().contains("general.alignment is 0"), "{err}");
            meta.pop();
        }
    }

    #[test]
    fn header_scan_tells_truncation_from_malformation() {
        let (m, params) = f32_params(Architecture::EdgeMlp);
        let mut qm = m.clone();
        qm.quantization = "q8_0".into();
        let bytes = gguf_bytes(&qm, &q_params(&qm, &params), None).unwrap();
        assert_eq!(scan_header(&bytes), Ok(()));
        let content = gguf_file::Content::read(&mut Cursor::new(&bytes)).unwrap();
        let header_end = content.tensor_data_offset as usize;
        for cut in (0..header_end).step_by(7) {
            match scan_header(&bytes[..cut]) {
                Err(HeaderError::Truncated { len, .. }) => assert_eq!(len, cut as u64),
                // Cuts in the alignment padding after the last tensor info lose no header.
                Ok(()) => assert!(cut > header_end - 32, "cut at {cut} passed"),
                Err(e) => panic!("cut at {cut}: {e}"),
            }
        }
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(scan_header(&bad), Err(HeaderError::Malformed(_))));
        let mut bad = bytes.clone();
        bad[4] = 9;
        assert!(matches!(
            scan_header(&bad[..20]),
            Err(HeaderError::Malformed(_))
        ));
        // A length that runs past the end is truncation, however large, and costs nothing.
        let mut huge = bytes[..24].to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            scan_header(&huge),
            Err(HeaderError::Truncated {
                what: "a metadata key",
                ..
            })
        ));
    }
}
