//! The int8 matrix product's SIMD kernels: the crate's only `unsafe` code.
//!
//! One job: `out[b][n] = Σ_k x[b][k] · w[n][k]` over i8 values, accumulated exactly in i32.
//! Everything around it (scales, bias, candle) lives in safe code in the parent module.
//!
//! The instruction set is chosen at run time, because the binary is built for baseline x86-64
//! (or aarch64) but the machines it runs on differ: this project's has AVX-512 VNNI, others
//! may have only AVX2. [`Kernel::best`] picks the fastest one the CPU has; [`Kernel::available`]
//! lists all of them, so tests can hold each one to the portable scalar kernel. A [`Kernel`] can
//! only be obtained from those two functions, which is what makes calling the
//! `#[target_feature]` functions sound: the features were detected before the value existed.
//! On x86-64, `cargo test -p edgeinfer-model` tests the x86 kernels the CPU has;
//! `crates/model/scripts/test-kernels-aarch64.sh` runs the same tests for aarch64 under qemu.
//!
//! Layouts are fixed by [`PackedWeights`], which also checks what the kernels rely on:
//! - rows of both operands are padded with zeros to a multiple of [`K_ALIGN`] bytes, so every
//!   kernel steps through `k` in whole vectors with no tail;
//! - weight rows are padded to a multiple of [`N_TILE`], so tiles of output columns are whole;
//! - weights lie in \[-127, 127\]: AVX2 multiplies `|x|` by `w` carrying the sign of `x`
//!   (`maddubs` of `sign(x, x)` and `sign(w, x)`), and `-(-128)` does not fit in an i8.
//!
//! The VNNI instructions multiply *unsigned* by signed bytes, so those kernels add 128 to each
//! activation (a sign-bit flip) and subtract `128 · Σ_k w[n][k]`, precomputed per row.
#![allow(unsafe_code)]

/// Bytes of `k` each kernel step consumes; rows are padded to a multiple of it.
pub const K_ALIGN: usize = 64;
/// Output columns (weight rows) computed together, sharing each load of an activation row.
pub const N_TILE: usize = 4;
/// Activation rows computed together, sharing each load of a weight row.
const M_TILE: usize = 4;

/// An instruction set a kernel is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// 512-bit `vpdpbusd` (AVX-512 VNNI): 64 multiply-adds per instruction.
    Avx512Vnni,
    /// 256-bit `vpdpbusd` (AVX-VNNI, on CPUs with VNNI but without AVX-512).
    AvxVnni,
    /// 256-bit `vpmaddubsw` + `vpmaddwd`.
    Avx2,
    /// 128-bit `sdot` (the Armv8.2 dot-product extension).
    NeonDot,
    /// 128-bit widening multiply and pairwise add (every aarch64 CPU).
    Neon,
    /// Plain Rust, for any CPU, and the reference the others are tested against.
    Scalar,
}

/// A kernel that this CPU can run; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel(Level);

// === impl Kernel ===

impl Kernel {
    /// Every kernel this CPU supports, fastest first; the last is always the scalar one.
    pub fn available() -> Vec<Kernel> {
        let mut levels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                levels.push(Level::Avx512Vnni);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("avxvnni")
            {
                levels.push(Level::AvxVnni);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                levels.push(Level::Avx2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                levels.push(Level::NeonDot);
            }
            if std::arch::is_aarch64_feature_detected!("neon") {
                levels.push(Level::Neon);
            }
        }
        levels.push(Level::Scalar);
        levels.into_iter().map(Kernel).collect()
    }

    /// The fastest kernel this CPU supports, detected once per process.
    pub fn best() -> Kernel {
        static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Self::available()[0])
    }

    /// The portable kernel, available everywhere.
    pub fn scalar() -> Kernel {
        Kernel(Level::Scalar)
    }

    pub fn level(self) -> Level {
        self.0
    }
}

/// Why weights cannot be packed.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PackError {
    #[error("{len} weights do not make {rows} rows of {cols}")]
    Shape {
        len: usize,
        rows: usize,
        cols: usize,
    },
    #[error("weight row {row} holds -128; int8 weights lie in [-127, 127]")]
    OutOfRange { row: usize },
}

/// A weight matrix laid out for the kernels: `rows` (output columns) of `cols` (inputs) int8
/// values, padded, with per-row sums for the VNNI offset correction.
#[derive(Clone, Debug)]
pub struct PackedWeights {
    rows: usize,
    cols: usize,
    /// `rows` rounded up to [`N_TILE`]; padding rows are zero.
    padded_rows: usize,
    /// `cols` rounded up to [`K_ALIGN`]: the stride of both operands' rows.
    stride: usize,
    data: Vec<i8>,
    /// `128 · Σ_k w[n][k]`, what the VNNI kernels' unsigned activations add to each output.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    offsets: Vec<i32>,
}

// === impl PackedWeights ===

impl PackedWeights {
    /// Packs row-major `rows × cols` weights.
    pub fn new(weights: &[i8], rows: usize, cols: usize) -> Result<Self, PackError> {
        if rows.checked_mul(cols) != Some(weights.len()) {
            return Err(PackError::Shape {
                len: weights.len(),
                rows,
                cols,
            });
        }
        if let Some(i) = weights.iter().position(|&w| w == i8::MIN) {
            return Err(PackError::OutOfRange { row: i / cols });
        }
        let stride = row_stride(cols);
        let padded_rows = rows.next_multiple_of(N_TILE);
        let mut data = vec![0i8; padded_rows * stride];
        for (dst, src) in data
            .chunks_exact_mut(stride)
            .zip(weights.chunks_exact(cols))
        {
            dst[..cols].copy_from_slice(src);
        }
        let offsets = data
            .chunks_exact(stride)
            .map(|row| 128 * row.iter().map(|&w| i32::from(w)).sum::<i32>())
            .collect();
        Ok(Self {
            rows,
            cols,
            padded_rows,
            stride,
            data,
            offsets,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes per activation row the kernels expect: `cols` padded with zeros.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Weight `(row, col)`, for saving and tests.
    pub fn get(&self, row: usize, col: usize) -> i8 {
        self.data[row * self.stride + col]
    }

    /// `out[b * rows + n] = Σ_k x[b][k] · w[n][k]` for the `x.len() / stride` activation rows
    /// of `x` (each `stride` bytes, zero beyond `cols`), with `kernel`.
    ///
    /// # Panics
    /// If `x` is not whole rows or `out` does not hold `rows` values per row: the callers in
    /// this crate size both from `self`.
    pub fn matmul(&self, kernel: Kernel, x: &[i8], out: &mut [i32]) {
        assert_eq!(x.len() % self.stride, 0, "activations are whole rows");
        let batch = x.len() / self.stride;
        assert_eq!(
            out.len(),
            batch * self.rows,
            "one output per row and column"
        );
        // Tiles of whole padded rows are computed into a scratch row set, then the real
        // columns copied out, so kernels never see a partial tile of columns.
        let mut tile = vec![0i32; M_TILE * self.padded_rows];
        for (x_rows, out_rows) in x
            .chunks(M_TILE * self.stride)
            .zip(out.chunks_mut(M_TILE * self.rows))
        {
            let m = x_rows.len() / self.stride;
            let tile = &mut tile[..m * self.padded_rows];
            self.tile(kernel, x_rows, m, tile);
            for (dst, src) in out_rows
                .chunks_exact_mut(self.rows)
                .zip(tile.chunks_exact(self.padded_rows))
            {
                dst.copy_from_slice(&src[..self.rows]);
            }
        }
    }

    /// Up to [`M_TILE`] activation rows against every padded weight row.
    fn tile(&self, kernel: Kernel, x: &[i8], m: usize, out: &mut [i32]) {
        debug_assert!((1..=M_TILE).contains(&m) && x.len() == m * self.stride);
        debug_assert_eq!(out.len(), m * self.padded_rows);
        let args = TileArgs {
            x,
            w: &self.data,
            stride: self.stride,
            n: self.padded_rows,
            out,
        };
        // SAFETY (every arm): a `Kernel` of a SIMD level exists only if `Kernel::available`
        // detected the level's CPU features; the slices' lengths are whole rows and tiles,
        // checked above and by construction of `PackedWeights`, which is what the kernels'
        // unchecked loads rely on.
        match kernel.0 {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512Vnni => {
                unsafe { x86::avx512vnni(args) };
                subtract_offsets(out, &self.offsets);
            }
            #[cfg(target_arch = "x86_64")]
            Level::AvxVnni => {
                unsafe { x86::avxvnni(args) };
                subtract_offsets(out, &self.offsets);
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => unsafe { x86::avx2(args) },
            #[cfg(target_arch = "aarch64")]
            Level::NeonDot => unsafe { arm::neon_dot(args) },
            #[cfg(target_arch = "aarch64")]
            Level::Neon => unsafe { arm::neon(args) },
            Level::Scalar => scalar(args),
            #[allow(unreachable_patterns)]
            other => unreachable!("{other:?} is not detected on this architecture"),
        }
    }
}

/// [`super::quantize_symmetric`] compiled for `kernel`'s instruction set, where it vectorizes
/// (the same code: results are identical whatever the kernel).
pub fn quantize_row(kernel: Kernel, values: &[f32], out: &mut [i8]) -> f32 {
    assert_eq!(values.len(), out.len(), "one output per value");
    match kernel.0 {
        // SAFETY: the kernel's level was detected, so its features are present.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512Vnni => unsafe { x86::quantize_avx512(values, out) },
        #[cfg(target_arch = "x86_64")]
        Level::AvxVnni | Level::Avx2 => unsafe { x86::quantize_avx2(values, out) },
        _ => super::quantize_symmetric(values, out),
    }
}

/// The row stride for `cols` inputs: padded to [`K_ALIGN`], at least one step.
pub fn row_stride(cols: usize) -> usize {
    cols.max(1).next_multiple_of(K_ALIGN)
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn subtract_offsets(out: &mut [i32], offsets: &[i32]) {
    for row in out.chunks_exact_mut(offsets.len()) {
        for (o, c) in row.iter_mut().zip(offsets) {
            *o -= c;
        }
    }
}

/// One tile's operands: `m = x.len() / stride` activation rows, `n` weight rows (a multiple of
/// [`N_TILE`]), `out` row-major `m × n`.
struct TileArgs<'a> {
    x: &'a [i8],
    w: &'a [i8],
    stride: usize,
    n: usize,
    out: &'a mut [i32],
}

fn scalar(a: TileArgs) {
    for (xr, out_row) in a.x.chunks_exact(a.stride).zip(a.out.chunks_exact_mut(a.n)) {
        for (wr, o) in a.w.chunks_exact(a.stride).zip(out_row.iter_mut()) {
            *o = xr
                .iter()
                .zip(wr)
                .map(|(&x, &w)| i32::from(x) * i32::from(w))
                .sum();
        }
    }
}

/// Expands to a match on the tile's activation row count that calls `$kernel::<M>`, so each
/// kernel keeps its accumulators in registers for a row count known at compile time.
macro_rules! by_rows {
    ($kernel:ident, $a:expr) => {{
        let a = $a;
        match a.x.len() / a.stride {
            1 => $kernel::<1>(a),
            2 => $kernel::<2>(a),
            3 => $kernel::<3>(a),
            _ => $kernel::<4>(a),
        }
    }};
}

/// Defines a kernel for one instruction set: `$name` (called by [`PackedWeights::tile`]) and
/// its body for `M` activation rows. All kernels share the loop: for each tile of [`N_TILE`]
/// weight rows, step through `k`, load the tile's weight vectors once and multiply-add each of
/// the `M` activation vectors into its own accumulators, then sum each accumulator's lanes.
/// The arguments say how to load a vector from a pointer, what to do once per activation
/// vector (`prepare`), how to multiply-add, and how to sum lanes.
macro_rules! tile_kernel {
    (
        $(#[$doc:meta])*
        $name:ident / $rows:ident, features = $features:literal, step = $step:literal,
        zero = $zero:expr,
        load = |$p:ident| $load:expr,
        prepare = |$xv:ident| $prep:expr,
        madd = |$acc:ident, $xp:ident, $wv:ident| $madd:expr,
        sum = |$v:ident| $sum:expr $(,)?
    ) => {
        $(#[$doc])*
        /// # Safety
        /// The CPU has the features named in `target_feature`; `a` as described at
        /// [`TileArgs`], `stride` a multiple of the step.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name(a: TileArgs) {
            unsafe { by_rows!($rows, a) }
        }

        #[target_feature(enable = $features)]
        unsafe fn $rows<const M: usize>(a: TileArgs) {
            let (x, w, k) = (a.x.as_ptr(), a.w.as_ptr(), a.stride);
            for n0 in (0..a.n).step_by(N_TILE) {
                let mut acc = [[$zero; N_TILE]; M];
                for kk in (0..k).step_by($step) {
                    // SAFETY: weight rows n0..n0 + N_TILE and activation rows 0..M exist, and
                    // kk + step <= stride, because the tile is whole (see `TileArgs`).
                    unsafe {
                        let wv: [_; N_TILE] = std::array::from_fn(|j| {
                            let $p = w.add((n0 + j) * k + kk);
                            $load
                        });
                        for (i, acc) in acc.iter_mut().enumerate() {
                            let $xv = {
                                let $p = x.add(i * k + kk);
                                $load
                            };
                            let $xp = $prep;
                            for (acc, $wv) in acc.iter_mut().zip(&wv) {
                                let $acc = *acc;
                                *acc = $madd;
                            }
                        }
                    }
                }
                for (i, acc) in acc.iter().enumerate() {
                    for (j, $v) in acc.iter().enumerate() {
                        a.out[i * a.n + n0 + j] = $sum;
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{N_TILE, TileArgs};

    tile_kernel! {
        /// 64 bytes per step; activations made unsigned by flipping their sign bit.
        avx512vnni / avx512vnni_m, features = "avx512f,avx512bw,avx512vnni", step = 64,
        zero = _mm512_setzero_si512(),
        load = |p| _mm512_loadu_si512(p.cast()),
        prepare = |xv| _mm512_xor_si512(xv, _mm512_set1_epi8(i8::MIN)),
        madd = |acc, xu, wv| _mm512_dpbusd_epi32(acc, xu, *wv),
        sum = |v| _mm512_reduce_add_epi32(*v),
    }

    tile_kernel! {
        /// 32 bytes per step; activations made unsigned as for AVX-512.
        avxvnni / avxvnni_m, features = "avx2,avxvnni", step = 32,
        zero = _mm256_setzero_si256(),
        load = |p| _mm256_loadu_si256(p.cast()),
        prepare = |xv| _mm256_xor_si256(xv, _mm256_set1_epi8(i8::MIN)),
        madd = |acc, xu, wv| _mm256_dpbusd_avx_epi32(acc, xu, *wv),
        sum = |v| hsum(*v),
    }

    tile_kernel! {
        /// 32 bytes per step: `|x| · (w with the sign of x) = x · w`, pairs of products summed
        /// in i16 (at most 2 · 128 · 127, which fits because |w| <= 127), then into i32.
        avx2 / avx2_m, features = "avx2", step = 32,
        zero = _mm256_setzero_si256(),
        load = |p| _mm256_loadu_si256(p.cast()),
        prepare = |xv| (_mm256_sign_epi8(xv, xv), xv),
        madd = |acc, xs, wv| {
            let p16 = _mm256_maddubs_epi16(xs.0, _mm256_sign_epi8(*wv, xs.1));
            _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
        },
        sum = |v| hsum(*v),
    }

    /// # Safety
    /// AVX-512F and AVX-512BW present.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_avx512(values: &[f32], out: &mut [i8]) -> f32 {
        super::super::quantize_symmetric(values, out)
    }

    /// # Safety
    /// AVX2 present.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_avx2(values: &[f32], out: &mut [i8]) -> f32 {
        super::super::quantize_symmetric(values, out)
    }

    /// The sum of the eight i32 lanes.
    #[target_feature(enable = "avx2")]
    fn hsum(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    use super::{N_TILE, TileArgs};

    tile_kernel! {
        /// 16 bytes per step with `sdot`: signed by signed, four products per lane.
        neon_dot / neon_dot_m, features = "neon,dotprod", step = 16,
        zero = vdupq_n_s32(0),
        load = |p| vld1q_s8(p),
        prepare = |xv| xv,
        madd = |acc, xv, wv| sdot(acc, xv, *wv),
        sum = |v| vaddvq_s32(*v),
    }

    /// `acc + dot products of groups of four bytes`, the `sdot` instruction. Written in
    /// assembly because its intrinsic (`vdotq_s32`) is not yet stable Rust.
    #[target_feature(enable = "neon,dotprod")]
    fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let mut acc = acc;
        // SAFETY: `sdot` reads and writes only these registers; the feature is enabled.
        unsafe {
            std::arch::asm!(
                "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack),
            );
        }
        acc
    }

    tile_kernel! {
        /// 16 bytes per step: i8 · i8 widened to i16, pairs added into the i32 lanes.
        neon / neon_m, features = "neon", step = 16,
        zero = vdupq_n_s32(0),
        load = |p| vld1q_s8(p),
        prepare = |xv| xv,
        madd = |acc, xv, wv| {
            let lo = vmull_s8(vget_low_s8(xv), vget_low_s8(*wv));
            vpadalq_s16(vpadalq_s16(acc, lo), vmull_high_s8(xv, *wv))
        },
        sum = |v| vaddvq_s32(*v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(len: usize, rng: &mut impl Rng) -> Vec<i8> {
        (0..len).map(|_| rng.random_range(-127..=127)).collect()
    }

    /// Activations in kernel layout: `batch` rows of `cols` values, zero-padded to `stride`.
    fn rows(values: &[i8], cols: usize, stride: usize) -> Vec<i8> {
        values
            .chunks_exact(cols)
            .flat_map(|r| {
                r.iter()
                    .copied()
                    .chain(std::iter::repeat_n(0, stride - cols))
            })
            .collect()
    }

    /// The products as plain i32 arithmetic, with no padding at all.
    fn reference(x: &[i8], w: &[i8], cols: usize) -> Vec<i32> {
        x.chunks_exact(cols)
            .flat_map(|xr| {
                w.chunks_exact(cols).map(move |wr| {
                    xr.iter()
                        .zip(wr)
                        .map(|(&a, &b)| i32::from(a) * i32::from(b))
                        .sum()
                })
            })
            .collect()
    }

    /// Every kernel the CPU has gives exactly the scalar result, and the scalar kernel the
    /// plain arithmetic, over shapes that exercise every tile remainder and padding: rows not a
    /// multiple of 4, columns not a multiple of 64, batches of 1 to 9, extreme values.
    #[test]
    fn every_available_kernel_matches_scalar_exactly() {
        let kernels = Kernel::available();
        assert_eq!(kernels.last(), Some(&Kernel::scalar()));
        assert!(kernels.contains(&Kernel::best()));
        eprintln!("kernels on this CPU: {kernels:?}");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (rows_n, cols) in [(128, 784), (10, 128), (1, 1), (5, 65), (12, 800), (3, 200)] {
            let w = random(rows_n * cols, &mut rng);
            let packed = PackedWeights::new(&w, rows_n, cols).unwrap();
            for batch in [1, 2, 3, 4, 5, 8, 9] {
                let mut x = random(batch * cols, &mut rng);
                // Saturation corners: -128 activations, all-extreme rows.
                x[0] = i8::MIN;
                if batch > 1 {
                    x[cols..2 * cols].fill(127);
                }
                let want = reference(&x, &w, cols);
                let xs = rows(&x, cols, packed.stride());
                for &kernel in &kernels {
                    let mut out = vec![0; batch * rows_n];
                    packed.matmul(kernel, &xs, &mut out);
                    assert_eq!(out, want, "{kernel:?}, {rows_n}x{cols}, batch {batch}");
                }
            }
        }
    }

    /// Quantization compiled per instruction set gives the portable result, bit for bit.
    #[test]
    fn quantization_is_the_same_for_every_kernel() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let mut rows: Vec<Vec<f32>> = [1, 15, 16, 17, 784, 1000]
            .iter()
            .map(|&n| (0..n).map(|_| rng.random_range(-3.0..3.0)).collect())
            .collect();
        rows.push(vec![0.0; 40]);
        rows.push(vec![1.0, f32::NAN, -2.0]);
        rows.push(vec![1.0, f32::NEG_INFINITY]);
        rows.push(vec![0.5, -0.5, 1.5, 2.5]);
        for row in &rows {
            let mut want = vec![0i8; row.len()];
            let scale = super::super::quantize_symmetric(row, &mut want);
            for kernel in Kernel::available() {
                let mut got = vec![1i8; row.len()];
                let s = quantize_row(kernel, row, &mut got);
                assert_eq!(s.to_bits(), scale.to_bits(), "{kernel:?}");
                assert_eq!(got, want, "{kernel:?}");
            }
        }
    }

    #[test]
    fn packing_refuses_what_the_kernels_cannot_take() {
        assert_eq!(
            PackedWeights::new(&[1, 2, 3], 2, 2).unwrap_err(),
            PackError::Shape {
                len: 3,
                rows: 2,
                cols: 2
            }
        );
        assert_eq!(
            PackedWeights::new(&[1, 2, 3, -128], 2, 2).unwrap_err(),
            PackError::OutOfRange { row: 1 }
        );
        let p = PackedWeights::new(&[1, 2, 3, 4], 2, 2).unwrap();
        assert_eq!((p.rows(), p.cols(), p.stride(), p.get(1, 0)), (2, 2, 64, 3));
    }
}
