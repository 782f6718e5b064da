//! What every fuzz target shares: an allocator that turns an oversized allocation into a crash
//! libFuzzer reports (its own `-malloc_limit_mb` needs a sanitizer's malloc hooks, which a
//! stable build without ASan does not have), and the model input shape the targets decode for.
//!
//! Layout: `fuzz_targets/*.rs`, one binary per decoder; `corpus/<target>/` the committed seeds;
//! `seeds.py` writes those seeds from the repository's own files.

use std::alloc::{GlobalAlloc, Layout, System};

use edgeinfer_serving::input::InputSpec;

/// Largest single allocation a decoder may make on fuzzed input. The largest legitimate one is
/// a decoded image (at most 8192 x 8192 at 4 bytes a pixel is 256 MiB, which `decode_image`
/// caps through the image crate's `max_alloc`); anything above is unbounded growth.
pub const MAX_ALLOCATION: usize = 256 << 20;

/// [`System`], aborting with a message on any allocation above [`MAX_ALLOCATION`]: libFuzzer
/// catches the abort and keeps the input as a crash.
pub struct BoundedAlloc;

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s contract;
// the size check only adds an abort before it.
unsafe impl GlobalAlloc for BoundedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: same layout as the caller gave, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout (every allocation goes through it).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn check(size: usize) {
    if size > MAX_ALLOCATION {
        // No allocation (and so no formatting) from here: write a fixed message and abort.
        let message = b"fuzz: allocation above MAX_ALLOCATION (unbounded growth on this input)\n";
        let _ = std::io::Write::write_all(&mut std::io::stderr(), message);
        std::process::abort();
    }
}

/// The shipped MNIST models' input: what the servers decode requests for.
pub fn mnist_spec() -> InputSpec {
    InputSpec {
        shape: vec![1, 28, 28],
    }
}
