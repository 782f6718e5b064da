//! The int8 path of the edge MLP: linear layers whose weights are int8 with one f32 scale per
//! output row, whose inputs are quantized per row at run time, and whose products accumulate
//! exactly in i32 ([`kernels`], SIMD chosen at run time).
//!
//! Each layer is a candle custom op ([`Int8Linear`] implements `CustomOp1`): an f32 tensor in,
//! an f32 tensor out, with quantization, the product, the scales, the bias and the ReLU fused
//! into the one op. Fusing is what makes it pay at batch 1, where a forward pass is dominated
//! by candle's per-op cost (allocation, layout checks), not by arithmetic.
//!
//! Quantization is symmetric: a row `v` becomes `round(v / s)` with `s = max|v| / 127`, so
//! values lie in \[-127, 127\] and zero stays exactly zero (the MLP's zero padding columns and
//! the many black pixels of MNIST cost no error). Then `y[n] = s_x · s_w[n] · Σ q_x · q_w[n] +
//! b[n]`: the only rounding is the two quantizations.

pub mod kernels;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Module, Shape, Tensor};

use crate::ModelError;
use kernels::{Kernel, PackedWeights};

/// The largest quantized magnitude; `-128` is never produced (see [`kernels`]).
const Q_MAX: f32 = 127.0;

/// Quantizes `values` symmetrically into `out` (same length) and returns the scale: `values[i]
/// ≈ scale · out[i]`. An all-zero row has scale 0. A row holding NaN or an infinity gets a NaN
/// scale, so that what is computed from it is NaN and reported, as the f32 path would.
///
/// Written for the vectorizer, because at batch 64 this costs as much as the product: the
/// kernels module compiles it once per instruction set ([`kernels::quantize_row`]).
#[inline(always)]
pub fn quantize_symmetric(values: &[f32], out: &mut [i8]) -> f32 {
    debug_assert_eq!(values.len(), out.len());
    // The bits of |v| order like the values for finite floats and exceed every finite one for
    // infinities and NaN, so one integer max finds both the largest magnitude and any
    // non-finite value, and integer max reductions vectorize where float ones do not.
    let max_bits = values
        .iter()
        .map(|v| v.to_bits() & 0x7fff_ffff)
        .fold(0, u32::max);
    if max_bits >= f32::INFINITY.to_bits() {
        out.fill(0);
        return f32::NAN;
    }
    let max = f32::from_bits(max_bits);
    if max == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let inv = Q_MAX / max;
    // Adding 1.5 · 2^23 rounds to the nearest integer (ties to even) and leaves that integer in
    // the low bits of the sum, for magnitudes up to 2^22. Reading it from the bits keeps the
    // loop free of float-to-int conversions, which (saturating in Rust) do not vectorize.
    const ROUND: f32 = 12_582_912.0;
    for (o, v) in out.iter_mut().zip(values) {
        *o = (v * inv + ROUND).to_bits().wrapping_sub(ROUND.to_bits()) as i8;
    }
    max / Q_MAX
}

/// A linear layer `y = x Wᵀ + b` (optionally followed by ReLU) with int8 weights, as a candle
/// op: apply it with [`Module::forward`] to an f32 `(batch, cols)` tensor.
#[derive(Clone, Debug)]
pub struct Int8Linear {
    weights: PackedWeights,
    /// Per output row, the value of one weight step.
    scales: Vec<f32>,
    bias: Vec<f32>,
    relu: bool,
    /// Chosen at construction ([`Kernel::best`]); tests pick others.
    kernel: Kernel,
}

// === impl Int8Linear ===

impl Int8Linear {
    /// From quantized weights (`rows × cols`, row-major), a scale per row and a bias per row.
    pub fn new(
        weights: &[i8],
        scales: Vec<f32>,
        bias: Vec<f32>,
        cols: usize,
        relu: bool,
    ) -> Result<Self, ModelError> {
        let rows = scales.len();
        if bias.len() != rows {
            return Err(ModelError::Input(format!(
                "int8 layer: {} biases for {rows} rows",
                bias.len()
            )));
        }
        let weights = PackedWeights::new(weights, rows, cols)
            .map_err(|e| ModelError::Input(format!("int8 layer: {e}")))?;
        Ok(Self {
            weights,
            scales,
            bias,
            relu,
            kernel: Kernel::best(),
        })
    }

    /// Quantizes f32 weights (`rows × cols`, row-major) row by row.
    pub fn quantize(
        weights: &[f32],
        bias: Vec<f32>,
        cols: usize,
        relu: bool,
    ) -> Result<Self, ModelError> {
        let (q, scales) = quantize_rows(weights, cols);
        Self::new(&q, scales, bias, cols, relu)
    }

    /// The same layer computed with `kernel` (tests compare kernels through the whole op).
    pub fn with_kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = kernel;
        self
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// `y` for `batch` rows of `x`, row-major.
    fn compute(&self, x: &[f32], batch: usize) -> Vec<f32> {
        let (cols, stride, rows) = (
            self.weights.cols(),
            self.weights.stride(),
            self.weights.rows(),
        );
        let mut q = vec![0i8; batch * stride];
        let mut x_scales = Vec::with_capacity(batch);
        for (src, dst) in x.chunks_exact(cols).zip(q.chunks_exact_mut(stride)) {
            x_scales.push(kernels::quantize_row(self.kernel, src, &mut dst[..cols]));
        }
        let mut acc = vec![0i32; batch * rows];
        self.weights.matmul(self.kernel, &q, &mut acc);
        let mut y = Vec::with_capacity(batch * rows);
        for (acc, sx) in acc.chunks_exact(rows).zip(&x_scales) {
            for ((&a, sw), b) in acc.iter().zip(&self.scales).zip(&self.bias) {
                let v = a as f32 * (sx * sw) + b;
                y.push(if self.relu { v.max(0.0) } else { v });
            }
        }
        if self.relu {
            // `max` drops NaN; keep a NaN row NaN so it is reported, not answered.
            for (row, sx) in y.chunks_exact_mut(rows).zip(&x_scales) {
                if sx.is_nan() {
                    row.fill(f32::NAN);
                }
            }
        }
        y
    }
}

/// Quantizes `rows × cols` weights row by row: the values and one scale per row.
pub fn quantize_rows(weights: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; weights.len()];
    let scales = weights
        .chunks_exact(cols)
        .zip(q.chunks_exact_mut(cols))
        .map(|(w, q)| quantize_symmetric(w, q))
        .collect();
    (q, scales)
}

impl CustomOp1 for Int8Linear {
    fn name(&self) -> &'static str {
        "int8-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("int8-linear takes f32 input, got {:?}", storage.dtype());
        };
        let (batch, cols) = layout.shape().dims2()?;
        if cols != self.weights.cols() {
            candle_core::bail!(
                "int8-linear takes {} inputs per row, got {cols}",
                self.weights.cols()
            );
        }
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("int8-linear takes a contiguous input");
        };
        let y = self.compute(&data[start..end], batch);
        Ok((
            CpuStorage::F32(y),
            Shape::from((batch, self.weights.rows())),
        ))
    }
}

impl Module for Int8Linear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        xs.apply_op1_no_bwd(self)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn symmetric_quantization_rounds_and_keeps_zero() {
        let mut q = [0i8; 5];
        let s = quantize_symmetric(&[0.0, 1.0, -2.0, 0.5, 2.0], &mut q);
        assert_eq!(s, 2.0 / 127.0);
        assert_eq!(q, [0, 64, -127, 32, 127]); // 63.5 and 31.75 round to even / nearest
        assert_eq!(quantize_symmetric(&[0.0; 5], &mut q), 0.0);
        assert_eq!(q, [0; 5]);
        assert!(quantize_symmetric(&[1.0, f32::NAN, 0.0, 0.0, 0.0], &mut q).is_nan());
        assert!(quantize_symmetric(&[1.0, f32::INFINITY, 0.0, 0.0, 0.0], &mut q).is_nan());
    }

    fn layer(rows: usize, cols: usize, rng: &mut impl Rng) -> (Vec<f32>, Vec<f32>) {
        let w = (0..rows * cols)
            .map(|_| rng.random_range(-0.2..0.2))
            .collect();
        let b = (0..rows).map(|_| rng.random_range(-0.5..0.5)).collect();
        (w, b)
    }

    /// The op against the f32 product it approximates, through candle tensors, for every
    /// kernel: within the error two 8-bit quantizations allow, and identical across kernels.
    #[test]
    fn op_matches_f32_reference_for_every_kernel() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (rows, cols, batch) = (37, 784, 6);
        let (w, b) = layer(rows, cols, &mut rng);
        let x: Vec<f32> = (0..batch * cols)
            .map(|i| {
                if i % 3 == 0 {
                    rng.random_range(0.0..1.0)
                } else {
                    0.0
                }
            })
            .collect();
        let dev = Device::Cpu;
        let xs = Tensor::from_slice(&x, (batch, cols), &dev).unwrap();
        let wt = Tensor::from_slice(&w, (rows, cols), &dev).unwrap();
        let bt = Tensor::from_slice(&b, rows, &dev).unwrap();
        let want = xs
            .matmul(&wt.t().unwrap())
            .unwrap()
            .broadcast_add(&bt)
            .unwrap()
            .relu()
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let base = Int8Linear::quantize(&w, b.clone(), cols, true).unwrap();
        let mut first: Option<Vec<Vec<f32>>> = None;
        for kernel in Kernel::available() {
            let got = base
                .clone()
                .with_kernel(kernel)
                .forward(&xs)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                // |error| <= (|x| |w| summed) / 127 roughly; here about 0.02 at worst.
                assert!((g - w).abs() < 0.05, "{kernel:?}: {g} vs {w}");
            }
            match &first {
                Some(f) => assert_eq!(f, &got, "{kernel:?} differs from the first kernel"),
                None => first = Some(got),
            }
        }
    }

    #[test]
    fn bad_input_is_an_error_and_nan_stays_nan() {
        let dev = Device::Cpu;
        let op = Int8Linear::quantize(&[0.5; 8], vec![0.0; 2], 4, true).unwrap();
        let wrong_width = Tensor::zeros((1, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(op.forward(&wrong_width).is_err());
        let wrong_dtype = Tensor::zeros((1, 4), candle_core::DType::F64, &dev).unwrap();
        assert!(op.forward(&wrong_dtype).is_err());
        let nan = Tensor::from_slice(&[1.0f32, f32::NAN, 0.0, 0.0], (1, 4), &dev).unwrap();
        let y = op.forward(&nan).unwrap().to_vec2::<f32>().unwrap();
        assert!(y[0].iter().all(|v| v.is_nan()), "{y:?}");
        assert!(Int8Linear::new(&[1, 2, 3, 4], vec![1.0; 2], vec![0.0], 2, false).is_err());
    }
}
