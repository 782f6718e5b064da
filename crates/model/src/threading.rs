//! Keeping each forward pass on the calling thread, and cheap.
//!
//! Candle 0.11's CPU backend has three process-wide behaviours that decide a forward pass's cost
//! far more than the model does (measured on this project's 2-core machine, edge-mlp f32):
//!
//! 1. **`candle_core::utils::get_num_threads()` is called by every f32 matmul** (so by every
//!    `Linear`, and by convolutions through im2col). It returns `RAYON_NUM_THREADS` if set, else
//!    the number of physical cores, which on Linux `num_cpus` finds by opening and parsing
//!    `/proc/cpuinfo`, uncached, on every call. That file read, not threading, is what makes
//!    the MLP take ~55-90 us at batch 1 instead of ~12-15 us: two matmuls, two parses.
//! 2. **gemm runs on the caller's rayon pool.** f32 matmuls above gemm's work threshold (batch
//!    64, not batch 1) use `Parallelism::Rayon(get_num_threads())`, which spreads the work over
//!    the rayon pool of the calling thread (the global pool, shared with the servers' own rayon
//!    work); convolutions also use rayon's `par_iter`.
//! 3. **candle's barrier pool** (`candle_core::utils::barrier_pool`), threads of its own that
//!    spin 25,000 times before parking, runs every quantized matmul (q8_0, q4_0) and every
//!    element-wise op of 64K elements or more. Its size is fixed at first use from
//!    `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the physical cores; callers queue on
//!    its one lock. When its helper thread is not scheduled at once (a loaded machine), a
//!    q8_0 pass at batch 1 was measured at over 1 ms instead of ~25 us.
//!
//! The servers get their parallelism from concurrent batches, so every pass should run on its
//! caller's thread alone. The mechanisms chosen:
//!
//! - **In the library, for (2):** [`single_threaded`] (used by [`crate::Model::logits`], hence
//!   by `classify`) runs the pass inside a rayon pool of one thread that *is the calling
//!   thread* (`ThreadPoolBuilder::use_current_thread`), built once per calling thread. gemm
//!   still splits its work, but every piece runs inline on the caller, as do rayon loops; the
//!   global pool and the servers' pools are untouched and no environment variable is read or
//!   written. Two consequences for callers: the calling thread stays a member of that pool, so
//!   any rayon work it does later also runs inline on it (call models from threads that exist
//!   for model work, such as the batcher's); and rayon leaks the pool's small registry when the
//!   thread exits, so those threads should be long-lived. A caller that is already a worker of
//!   another rayon pool keeps that pool.
//! - **In the process environment, for (1) and (3),** because candle reads these only from the
//!   environment: `RAYON_NUM_THREADS` set to the available parallelism (the size rayon picks
//!   anyway, so the servers' rayon is unchanged, but candle stops parsing `/proc/cpuinfo`), and
//!   `CANDLE_NUM_THREADS=1` (candle only: the barrier pool then runs inline). Both must be in
//!   place before the first tensor operation, so a binary sets them at the very start of a
//!   synchronous `main`, before any thread exists, with the values from [`env_defaults`]; a
//!   deployment may also set them itself. [`env_warning`] says when they are missing.
//!
//! Measured with both (median of `classify`, one thread, load from other jobs present): f32
//! ~12-15 us at batch 1 and ~3.5-5.5 us per image at batch 64; q8_0 and q4_0 ~20-35 us per
//! image at either batch size, candle's quantized kernel being slower than its f32 gemm here.
//! `cargo bench --bench model_forward` (root `benches/`) measures it again.

use std::cell::OnceCell;

/// Sizes candle's barrier pool (threads, the caller included); read once, at first use.
pub const ENV_CANDLE_NUM_THREADS: &str = "CANDLE_NUM_THREADS";
/// rayon's pool size, which candle also reads on every f32 matmul.
pub const ENV_RAYON_NUM_THREADS: &str = "RAYON_NUM_THREADS";

thread_local! {
    /// This thread's one-thread rayon pool, or `None` if the thread already belongs to a pool.
    static LOCAL_POOL: OnceCell<Option<rayon::ThreadPool>> = const { OnceCell::new() };
}

/// Runs `f` (a forward pass) with every rayon-parallel part of candle confined to the calling
/// thread. See the module documentation.
pub fn single_threaded<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    LOCAL_POOL.with(|cell| {
        let pool = cell.get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .use_current_thread()
                .thread_name(|_| "edgeinfer-model".into())
                .build()
                .ok()
        });
        match pool {
            // The caller is the pool's only worker, so `install` runs `f` right here.
            Some(pool) => pool.install(f),
            None => f(),
        }
    })
}

/// The environment variables a serving process should set, with their values, for those not
/// already set: `CANDLE_NUM_THREADS=1`, and `RAYON_NUM_THREADS` = the available parallelism
/// (rayon's own default). Set them before any thread starts, e.g. first thing in `main`:
///
/// ```ignore
/// for (key, value) in edgeinfer_model::threading::env_defaults() {
///     // SAFETY: no other thread exists yet, so nothing reads the environment concurrently.
///     unsafe { std::env::set_var(key, value) };
/// }
/// ```
pub fn env_defaults() -> Vec<(&'static str, String)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    [
        (ENV_CANDLE_NUM_THREADS, "1".to_string()),
        (ENV_RAYON_NUM_THREADS, cores.to_string()),
    ]
    .into_iter()
    .filter(|(k, _)| std::env::var_os(k).is_none())
    .collect()
}

/// A warning to log when the process runs without the settings of [`env_defaults`], naming
/// what is missing and what it costs; `None` when all is set.
pub fn env_warning() -> Option<String> {
    let missing: Vec<String> = env_defaults()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} not set: candle re-reads /proc/cpuinfo on every f32 matmul and runs quantized \
             matmuls on a shared spinning thread pool, so forward passes are several times \
             slower (see edgeinfer_model::threading)",
            missing.join(" and ")
        )
    })
}

/// Threads candle's barrier pool uses per quantized matmul, the caller included (1 is what the
/// servers want). Creates the pool if no tensor operation has yet.
pub fn candle_pool_threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_the_calling_thread_with_one_rayon_thread() {
        let me = std::thread::current().id();
        let (id, n) =
            single_threaded(|| (std::thread::current().id(), rayon::current_num_threads()));
        assert_eq!((id, n), (me, 1));
        // Nested parallel iterators stay on this thread too.
        let ids: Vec<_> = single_threaded(|| {
            use rayon::prelude::*;
            (0..64)
                .into_par_iter()
                .map(|_| std::thread::current().id())
                .collect()
        });
        assert!(ids.iter().all(|&i| i == me));
    }

    #[test]
    fn inside_another_pool_it_still_runs() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let v = pool.install(|| single_threaded(|| 41 + 1));
        assert_eq!(v, 42);
    }
}
