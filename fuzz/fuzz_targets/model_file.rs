//! Model file bytes (what `LoadModel` uploads or a model repository holds): GGUF when they
//! start with its magic, safetensors otherwise, through the same loader the servers use. A
//! file that loads also classifies (the loader runs it once on blank, grey and white inputs).
#![no_main]

use edgeinfer_fuzz::BoundedAlloc;
use edgeinfer_model::{ModelFormat, load_classifier_bytes};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc;

fuzz_target!(|data: &[u8]| {
    let format = if data.starts_with(b"GGUF") {
        ModelFormat::Gguf
    } else {
        ModelFormat::Safetensors
    };
    let _ = load_classifier_bytes(data, format);
});
