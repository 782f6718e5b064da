//! Keeping each forward pass on the calling thread.
//!
//! Placeholder: measured and decided below.

/// Runs `f` (a forward pass) on the calling thread only.
pub fn single_threaded<R>(f: impl FnOnce() -> R) -> R {
    f()
}
