//! The JSON of the Open Inference Protocol's HTTP/REST binding (KServe v2, Triton's HTTP API)
//! to and from the gRPC binding's messages, with the binary-tensor extension: a request body
//! may be a JSON header of `Inference-Header-Content-Length` bytes followed by the tensors'
//! bytes (`binary_data_size` on each input), and an answer carries its outputs the same way
//! when `binary_data` (per output) or `binary_data_output` (per request) asks for it.
//!
//! Pure conversions, no I/O: the HTTP front end ([`crate::oip_http`]) turns a body into a
//! `ModelInferRequest` here and hands it to the gRPC OIP service, so tensor decoding, routing
//! options and provenance are written once, in [`crate::oip`] and [`crate::input`]. Every
//! error names the JSON field at fault and is INVALID_ARGUMENT (HTTP 400).

use std::collections::HashMap;

use edgeinfer::inference::infer_parameter::ParameterChoice;
use edgeinfer::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use edgeinfer::inference::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
    ModelMetadataResponse,
};
use edgeinfer::oip;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ServeError;

/// The header giving the length of the JSON part of a body that carries binary tensors.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

fn field(field: impl Into<String>, message: impl Into<String>) -> ServeError {
    ServeError::Field {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
struct JsonRequest {
    #[serde(default)]
    id: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<JsonInput>,
    #[serde(default)]
    outputs: Vec<JsonOutput>,
}

#[derive(Deserialize)]
struct JsonInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct JsonOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// An inference request read from an HTTP body.
#[derive(Debug)]
pub struct HttpInferRequest {
    /// The request as the gRPC binding would carry it.
    pub request: ModelInferRequest,
    /// True when the answer's outputs go in binary after the JSON header.
    pub binary_output: bool,
}

/// Reads an inference request for `model` (and `version`, empty for any) from `body`, whose
/// first `header_length` bytes are JSON when the client sent `Inference-Header-Content-Length`
/// (else all of it is).
pub fn parse_infer(
    model: &str,
    version: &str,
    body: &[u8],
    header_length: Option<usize>,
) -> Result<HttpInferRequest, ServeError> {
    let (json, mut binary) = match header_length {
        None => (body, None),
        Some(n) if n <= body.len() => (&body[..n], Some(&body[n..])),
        Some(n) => {
            return Err(field(
                "Inference-Header-Content-Length",
                format!("{n} is more than the body's {} bytes", body.len()),
            ));
        }
    };
    let parsed: JsonRequest = serde_json::from_slice(json)
        .map_err(|e| field("body", format!("not an inference request: {e}")))?;
    let mut inputs = Vec::with_capacity(parsed.inputs.len());
    let mut raw = Vec::new();
    for (i, input) in parsed.inputs.into_iter().enumerate() {
        let at = format!("inputs[{i}]");
        let binary_size = match input.parameters.get("binary_data_size") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                field(
                    format!("{at}.parameters.binary_data_size"),
                    "expected a non-negative integer",
                )
            })? as usize),
        };
        let contents = match (binary_size, &input.data) {
            (Some(_), Some(_)) => {
                return Err(field(
                    format!("{at}.data"),
                    "the input has binary_data_size too; send its values in one place",
                ));
            }
            (Some(size), None) => {
                let Some(rest) = binary else {
                    return Err(field(
                        format!("{at}.parameters.binary_data_size"),
                        "binary data needs the Inference-Header-Content-Length header",
                    ));
                };
                if size > rest.len() {
                    return Err(field(
                        format!("{at}.parameters.binary_data_size"),
                        format!("{size} bytes, but only {} are left in the body", rest.len()),
                    ));
                }
                let (mine, others) = rest.split_at(size);
                raw.push(mine.to_vec());
                binary = Some(others);
                None
            }
            (None, Some(data)) => Some(contents(&at, &input.datatype, data)?),
            (None, None) => {
                return Err(field(
                    format!("{at}.data"),
                    "missing; give the values in `data` or as binary with binary_data_size",
                ));
            }
        };
        inputs.push(InferInputTensor {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            parameters: HashMap::new(),
            contents,
        });
    }
    if let Some(rest) = binary
        && !rest.is_empty()
    {
        return Err(field(
            "body",
            format!(
                "{} bytes after the JSON header that no input's binary_data_size claims",
                rest.len()
            ),
        ));
    }
    if !raw.is_empty() && raw.len() != inputs.len() {
        return Err(field(
            "inputs",
            "send every input in binary or none (the binding carries them one way)",
        ));
    }
    let request_binary = match parsed.parameters.get("binary_data_output") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| field("parameters.binary_data_output", "expected true or false"))?,
    };
    let mut binary_output = request_binary;
    let mut outputs = Vec::with_capacity(parsed.outputs.len());
    for (i, output) in parsed.outputs.into_iter().enumerate() {
        if output.parameters.get("classification").is_some() {
            return Err(field(
                format!("outputs[{i}].parameters.classification"),
                "the classification extension is not supported; read `label` in the answer's parameters",
            ));
        }
        if let Some(v) = output.parameters.get("binary_data") {
            binary_output = v.as_bool().ok_or_else(|| {
                field(
                    format!("outputs[{i}].parameters.binary_data"),
                    "expected true or false",
                )
            })?;
        }
        outputs.push(InferRequestedOutputTensor {
            name: output.name,
            parameters: HashMap::new(),
        });
    }
    let parameters = parsed
        .parameters
        .iter()
        .filter(|(k, _)| k.as_str() != "binary_data_output")
        .map(|(k, v)| Ok((k.clone(), parameter(k, v)?)))
        .collect::<Result<_, ServeError>>()?;
    Ok(HttpInferRequest {
        request: ModelInferRequest {
            model_name: model.to_string(),
            model_version: version.to_string(),
            id: parsed.id,
            parameters,
            inputs,
            outputs,
            raw_input_contents: raw,
        },
        binary_output,
    })
}

/// A JSON parameter as the gRPC binding's typed one.
fn parameter(name: &str, value: &Value) -> Result<InferParameter, ServeError> {
    Ok(match value {
        Value::Bool(b) => oip::bool_param(*b),
        Value::String(s) => oip::string_param(s.clone()),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => oip::int64_param(i),
            (None, Some(u), _) => InferParameter {
                parameter_choice: Some(ParameterChoice::Uint64Param(u)),
            },
            (None, None, Some(f)) => oip::double_param(f),
            _ => return Err(field(format!("parameters.{name}"), "not a usable number")),
        },
        _ => {
            return Err(field(
                format!("parameters.{name}"),
                "expected a boolean, a number or a string",
            ));
        }
    })
}

/// The values of a JSON tensor, flattened (the binding allows nested rows) into typed contents.
/// Only the datatypes the models take are read; any other is left empty for the tensor
/// decoder, which names what it supports.
fn contents(at: &str, datatype: &str, data: &Value) -> Result<InferTensorContents, ServeError> {
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    let mut contents = InferTensorContents::default();
    let bad = |i: usize, what: &str| {
        field(
            format!("{at}.data[{i}]"),
            format!("{} is not {what}", flat[i]),
        )
    };
    match datatype {
        "FP32" => {
            contents.fp32_contents = (0..flat.len())
                .map(|i| {
                    flat[i]
                        .as_f64()
                        .map(|v| v as f32)
                        .ok_or_else(|| bad(i, "a number"))
                })
                .collect::<Result<_, _>>()?;
        }
        "UINT8" => {
            contents.uint_contents = (0..flat.len())
                .map(|i| {
                    flat[i]
                        .as_u64()
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(|| bad(i, "a UINT8 value"))
                })
                .collect::<Result<_, _>>()?;
        }
        _ => {}
    }
    Ok(contents)
}

/// Row-major leaves of nested arrays (serde_json bounds the nesting depth at parse time).
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        leaf => out.push(leaf),
    }
}

#[derive(Serialize)]
struct JsonResponse {
    model_name: String,
    model_version: String,
    id: String,
    parameters: Map<String, Value>,
    outputs: Vec<JsonOutputTensor>,
}

#[derive(Serialize)]
struct JsonOutputTensor {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Vec<f32>>,
}

/// An HTTP answer body: the JSON, then the outputs' bytes when `binary`; the second value is
/// the JSON's length, for `Inference-Header-Content-Length`, when binary data follows.
pub fn infer_response(response: ModelInferResponse, binary: bool) -> (Vec<u8>, Option<usize>) {
    let ModelInferResponse {
        model_name,
        model_version,
        id,
        parameters,
        outputs,
        raw_output_contents,
    } = response;
    let mut tail = Vec::new();
    let outputs = outputs
        .into_iter()
        .zip(raw_output_contents)
        .map(|(tensor, raw)| {
            let (parameters, data) = if binary {
                let mut p = Map::new();
                p.insert("binary_data_size".into(), json!(raw.len()));
                tail.extend_from_slice(&raw);
                (Some(p), None)
            } else {
                // Every output the front end builds is FP32 (see `oip::OUTPUT_NAME`).
                let floats = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (None, Some(floats))
            };
            JsonOutputTensor {
                name: tensor.name,
                datatype: tensor.datatype,
                shape: tensor.shape,
                parameters,
                data,
            }
        })
        .collect();
    let mut parameters: Vec<_> = parameters.into_iter().collect();
    parameters.sort_by(|a, b| a.0.cmp(&b.0));
    let body = JsonResponse {
        model_name,
        model_version,
        id,
        parameters: parameters
            .into_iter()
            .map(|(k, v)| (k, parameter_json(&v)))
            .collect(),
        outputs,
    };
    let mut bytes = serde_json::to_vec(&body).expect("plain data serializes");
    if binary {
        let header = bytes.len();
        bytes.extend_from_slice(&tail);
        (bytes, Some(header))
    } else {
        (bytes, None)
    }
}

/// A typed parameter as JSON.
fn parameter_json(p: &InferParameter) -> Value {
    match &p.parameter_choice {
        None => Value::Null,
        Some(ParameterChoice::BoolParam(b)) => json!(b),
        Some(ParameterChoice::Int64Param(i)) => json!(i),
        Some(ParameterChoice::Uint64Param(u)) => json!(u),
        Some(ParameterChoice::DoubleParam(d)) => json!(d),
        Some(ParameterChoice::StringParam(s)) => json!(s),
    }
}

/// A model's metadata as the HTTP binding writes it.
pub fn model_metadata(m: &ModelMetadataResponse) -> Value {
    let tensors = |ts: &[edgeinfer::inference::model_metadata_response::TensorMetadata]| {
        ts.iter()
            .map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
            .collect::<Vec<_>>()
    };
    json!({
        "name": m.name,
        "versions": m.versions,
        "platform": m.platform,
        "inputs": tensors(&m.inputs),
        "outputs": tensors(&m.outputs),
    })
}

/// A model's configuration in Triton's JSON form, which Triton's clients and `perf_analyzer`
/// read before they send: the batch dimension is implicit (`max_batch_size`, here the most
/// rows one request may carry), `dims` are the other dimensions.
pub fn model_config(m: &ModelMetadataResponse, max_batch_size: usize) -> Value {
    let tensors = |ts: &[edgeinfer::inference::model_metadata_response::TensorMetadata]| {
        ts.iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "data_type": format!("TYPE_{}", t.datatype),
                    "dims": t.shape.iter().skip(1).collect::<Vec<_>>(),
                })
            })
            .collect::<Vec<_>>()
    };
    json!({
        "name": m.name,
        "platform": m.platform,
        "backend": "edgeinfer",
        "max_batch_size": max_batch_size,
        "input": tensors(&m.inputs),
        "output": tensors(&m.outputs),
        "dynamic_batching": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: Value) -> Vec<u8> {
        serde_json::to_vec(&json).unwrap()
    }

    #[test]
    fn json_tensors_flatten_nested_rows_and_keep_parameters() {
        let body = request(json!({
            "id": "r1",
            "parameters": {"placement": "edge", "latency_budget_ms": 40, "x": 0.5},
            "inputs": [{"name": "input", "shape": [1, 2, 2], "datatype": "FP32",
                        "data": [[0.0, 2.5], [-1.0, 3]]}],
            "outputs": [{"name": "probabilities"}],
        }));
        let r = parse_infer("mnist", "", &body, None).unwrap();
        assert!(!r.binary_output);
        let q = r.request;
        assert_eq!((q.model_name.as_str(), q.id.as_str()), ("mnist", "r1"));
        let c = q.inputs[0].contents.as_ref().unwrap();
        assert_eq!(c.fp32_contents, vec![0.0, 2.5, -1.0, 3.0]);
        assert_eq!(oip::as_string(&q.parameters["placement"]).unwrap(), "edge");
        assert_eq!(oip::as_f64(&q.parameters["latency_budget_ms"]), Some(40.0));
        assert_eq!(oip::as_f64(&q.parameters["x"]), Some(0.5));
        assert!(q.raw_input_contents.is_empty());
    }

    #[test]
    fn binary_inputs_take_their_bytes_after_the_header() {
        let header = request(json!({
            "inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32",
                        "parameters": {"binary_data_size": 8}}],
            "parameters": {"binary_data_output": true},
        }));
        let mut body = header.clone();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&(-2f32).to_le_bytes());
        let r = parse_infer("m", "2", &body, Some(header.len())).unwrap();
        assert!(r.binary_output);
        assert_eq!(r.request.model_version, "2");
        assert_eq!(
            r.request.raw_input_contents,
            vec![body[header.len()..].to_vec()]
        );
        assert!(!r.request.parameters.contains_key("binary_data_output"));

        let e = parse_infer("m", "", &body[..body.len() - 1], Some(header.len())).unwrap_err();
        assert!(
            e.to_string().contains("8 bytes, but only 7 are left"),
            "{e}"
        );
        let mut long = body.clone();
        long.push(0);
        let e = parse_infer("m", "", &long, Some(header.len())).unwrap_err();
        assert!(
            e.to_string().contains("1 bytes after the JSON header"),
            "{e}"
        );
        let e = parse_infer("m", "", &body, Some(body.len() + 1)).unwrap_err();
        assert!(
            e.to_string().starts_with("Inference-Header-Content-Length"),
            "{e}"
        );
        let e = parse_infer("m", "", &header, None).unwrap_err();
        assert!(e.to_string().contains("needs the Inference-Header"), "{e}");
    }

    #[test]
    fn malformed_requests_name_the_field() {
        let cases = [
            (json!({"inputs": 3}), "body: not an inference request"),
            (
                json!({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32",
                                   "data": ["a"]}]}),
                "inputs[0].data[0]: \"a\" is not a number",
            ),
            (
                json!({"inputs": [{"name": "input", "shape": [1], "datatype": "UINT8",
                                   "data": [-1]}]}),
                "inputs[0].data[0]: -1 is not a UINT8 value",
            ),
            (
                json!({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32"}]}),
                "inputs[0].data: missing",
            ),
            (
                json!({"inputs": [], "parameters": {"p": [1]}}),
                "parameters.p: expected a boolean",
            ),
            (
                json!({"inputs": [], "outputs": [{"name": "probabilities",
                                                  "parameters": {"classification": 3}}]}),
                "outputs[0].parameters.classification",
            ),
        ];
        for (json, want) in cases {
            let e = parse_infer("m", "", &request(json), None).unwrap_err();
            assert!(e.to_string().starts_with(want), "{e} / {want}");
        }
        let e = parse_infer("m", "", b"{not json", None).unwrap_err();
        assert!(e.to_string().starts_with("body: not an inference request"));
    }

    #[test]
    fn answers_carry_outputs_as_json_or_binary() {
        let mut raw = Vec::new();
        for v in [0.25f32, 0.75] {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        let response = ModelInferResponse {
            model_name: "mnist".into(),
            model_version: "1".into(),
            id: "a".into(),
            parameters: [("served_by".to_string(), oip::string_param("EDGE"))].into(),
            outputs: vec![
                edgeinfer::inference::model_infer_response::InferOutputTensor {
                    name: "probabilities".into(),
                    datatype: "FP32".into(),
                    shape: vec![1, 2],
                    ..Default::default()
                },
            ],
            raw_output_contents: vec![raw.clone()],
        };
        let (body, header) = infer_response(response.clone(), false);
        assert_eq!(header, None);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["outputs"][0]["data"], json!([0.25, 0.75]));
        assert_eq!(v["parameters"]["served_by"], "EDGE");
        let (body, header) = infer_response(response, true);
        let n = header.unwrap();
        let v: Value = serde_json::from_slice(&body[..n]).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert!(v["outputs"][0].get("data").is_none());
        assert_eq!(&body[n..], raw.as_slice());
    }
}
