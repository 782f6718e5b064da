//! A native `InferRequest` as it arrives on the wire: protobuf bytes, then `decode_native`
//! (image, float pixels, 8-bit pixels or model values). What decodes has the model's input
//! size; images and pixels in [0, 1], model values (`values`, any finite number) finite.
#![no_main]

use edgeinfer::v1::InferRequest;
use edgeinfer::v1::infer_request::Input;
use edgeinfer_fuzz::{BoundedAlloc, mnist_spec};
use edgeinfer_serving::input::{InputLimits, decode_native};
use libfuzzer_sys::fuzz_target;
use prost::Message;

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = InferRequest::decode(data) else {
        return;
    };
    let spec = mnist_spec();
    if let Ok(decoded) = decode_native(request.input.as_ref(), &spec, &InputLimits::default()) {
        assert_eq!(decoded.values.len(), spec.len());
        let unit = !matches!(request.input, Some(Input::Values(_)));
        assert!(
            decoded
                .values
                .iter()
                .all(|v| v.is_finite() && (!unit || (0.0..=1.0).contains(v)))
        );
    }
});
