//! An encoded image (PNG, JPEG or anything else) as a request's `image` field carries it,
//! through `decode_image`: never a panic, an unbounded allocation or a hang; what decodes is
//! the model's input size with values in [0, 1].
#![no_main]

use edgeinfer_fuzz::{BoundedAlloc, mnist_spec};
use edgeinfer_serving::input::{InputLimits, decode_image};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc;

fuzz_target!(|data: &[u8]| {
    let spec = mnist_spec();
    if let Ok(decoded) = decode_image(data, &spec, &InputLimits::default()) {
        assert_eq!(decoded.values.len(), spec.len());
        assert!(decoded.values.iter().all(|v| (0.0..=1.0).contains(v)));
    }
});
