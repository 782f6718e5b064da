//! What the benches that call the servers send: one MNIST-sized image and the requests that
//! carry it, so that every bench measures the same calls.

use edgeinfer::inference::model_infer_request::InferInputTensor;
use edgeinfer::inference::{InferTensorContents, ModelInferRequest};
use edgeinfer::v1::infer_request::Input;
use edgeinfer::v1::{InferRequest, Pixels, Placement};

/// An MNIST-like image: a bright stroke on black, as 8-bit pixels.
pub fn image_bytes() -> Vec<u8> {
    (0..784u32)
        .map(|i| {
            let (y, x) = (i / 28, i % 28);
            if (10..18).contains(&x) && (4..24).contains(&y) {
                200 + (i % 55) as u8
            } else {
                0
            }
        })
        .collect()
}

/// The pixels scaled to [0, 1], as the servers decode them.
pub fn unit(bytes: &[u8]) -> Vec<f32> {
    bytes.iter().map(|&b| f32::from(b) / 255.0).collect()
}

/// Native `Infer` of [`image_bytes`] as 8-bit `raw` or as float `pixels`, placement EDGE_ONLY
/// so that the edge model answers without a cloud call.
pub fn native_request(raw: bool) -> InferRequest {
    let bytes = image_bytes();
    InferRequest {
        input: Some(if raw {
            Input::Raw(bytes)
        } else {
            Input::Pixels(Pixels {
                values: unit(&bytes),
            })
        }),
        placement: Placement::EdgeOnly as i32,
        ..Default::default()
    }
}

/// An OIP FP32 `[rows, 784]` tensor of [`image_bytes`] rows: as typed contents, or with its
/// values as the raw bytes returned beside it.
pub fn oip_tensor(rows: usize, typed: bool) -> (InferInputTensor, Option<Vec<u8>>) {
    let row = unit(&image_bytes());
    let values: Vec<f32> = (0..rows).flat_map(|_| row.iter().copied()).collect();
    let mut tensor = InferInputTensor {
        name: "input".into(),
        datatype: "FP32".into(),
        shape: vec![rows as i64, 784],
        ..Default::default()
    };
    if typed {
        tensor.contents = Some(InferTensorContents {
            fp32_contents: values,
            ..Default::default()
        });
        (tensor, None)
    } else {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        (tensor, Some(raw))
    }
}

/// OIP `ModelInfer` of one FP32 [1, 784] row to `edge-mlp` by name (answered by its model).
pub fn oip_request() -> ModelInferRequest {
    let (tensor, _) = oip_tensor(1, true);
    ModelInferRequest {
        model_name: "edge-mlp".into(),
        inputs: vec![tensor],
        ..Default::default()
    }
}
