//! An Open Inference Protocol `ModelInferRequest` as it arrives on the wire: protobuf bytes,
//! then `decode_oip` on its first input tensor and first raw content, as the OIP front end
//! calls it. What decodes is whole rows of the model's input, every value finite (FP32 takes
//! any finite value; 8-bit pixels are scaled to [0, 1]), within the row limit.
#![no_main]

use edgeinfer::inference::ModelInferRequest;
use edgeinfer_fuzz::{BoundedAlloc, mnist_spec};
use edgeinfer_serving::input::{InputLimits, decode_oip};
use libfuzzer_sys::fuzz_target;
use prost::Message;

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = ModelInferRequest::decode(data) else {
        return;
    };
    let Some(tensor) = request.inputs.first() else {
        return;
    };
    let spec = mnist_spec();
    let limits = InputLimits::default();
    let raw = request.raw_input_contents.first().map(|b| b.as_slice());
    if let Ok(rows) = decode_oip(tensor, raw, &spec, &limits) {
        assert!(!rows.is_empty() && rows.len() <= limits.max_batch_rows);
        for row in rows {
            assert_eq!(row.values.len(), spec.len());
            assert!(row.values.iter().all(|v| v.is_finite()));
        }
    }
});
