//! How unlike its training inputs an input is: a probabilistic PCA model of the training
//! inputs, fitted when a model is trained and carried in its file.
//!
//! The training inputs' mean `mu` and their `k` principal directions `u_j` (variances
//! `lambda_j`) describe where the data lies; the variance left in the other `d - k` directions,
//! averaged, is `sigma2`. An input `x` scores
//!
//! ```text
//! score(x) = ( sum_j (u_j . (x - mu))^2 / lambda_j  +  |residual|^2 / sigma2 ) / d
//! ```
//!
//! the squared Mahalanobis distance under that model, per dimension: about 1 for an input like
//! the training data, far more for one that is not (uniform noise scores in the hundreds on
//! MNIST, because the pixels that are always dark in digits are bright in it). The threshold is
//! the 99th percentile of the scores of the training inputs and the validation split together,
//! so about one input in a hundred of what the model learned from is flagged. The training
//! inputs count because a model fine-tuned on new inputs (`edgeinfer adapt`) has learned them:
//! they are "like its training data" in the proportion it saw them, which a validation split of
//! the original data alone would not say.
//!
//! The detector works in input space and needs nothing of the network, so one mechanism serves
//! every architecture and every quantization of it: quantizing a model carries its detector
//! over unchanged. Scoring costs `k + 1` dot products of the input's length (41 x 784 for the
//! shipped models); `cargo bench --bench model_forward -- 'ood score'` measures it.

use candle_core::{DType, Device, Tensor};

use crate::ModelError;

/// Principal directions kept. Measured on MNIST's validation split with the shipped edge
/// model (models/MODELS.md, "Out-of-distribution inputs"): 20 leaves more noisy digits
/// unflagged, 80 or 120 gain nothing.
pub const DEFAULT_COMPONENTS: usize = 40;
/// Fraction of validation inputs below the threshold.
pub const DEFAULT_QUANTILE: f64 = 0.99;
/// Extra directions iterated beyond `k`, so that the `k` kept ones converge.
const OVERSAMPLE: usize = 16;
/// Rounds of orthogonal iteration.
const ITERATIONS: usize = 150;

/// Names of the detector's tensors in a model file, all F32.
pub const TENSOR_MEAN: &str = "ood.mean";
pub const TENSOR_BASIS: &str = "ood.basis";
pub const TENSOR_VARIANCES: &str = "ood.variances";
pub const TENSOR_THRESHOLD: &str = "ood.threshold";
pub const TENSORS: [&str; 4] = [
    TENSOR_MEAN,
    TENSOR_BASIS,
    TENSOR_VARIANCES,
    TENSOR_THRESHOLD,
];

/// The verdict on one input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Novelty {
    /// [`Detector::score`]: about 1 for inputs like the training data.
    pub score: f32,
    /// True when the score is above the detector's threshold.
    pub unusual: bool,
}

/// A fitted detector (see the module documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct Detector {
    /// Input length `d`.
    dim: usize,
    mean: Vec<f32>,
    /// `k` orthonormal rows of `d`.
    basis: Vec<f32>,
    /// `lambda_1..lambda_k`, then `sigma2`.
    variances: Vec<f32>,
    threshold: f32,
}

// === impl Detector ===

impl Detector {
    /// Fits the detector on `n` training inputs of `dim` floats (row-major), with `k`
    /// directions, and sets the threshold at `quantile` of the scores of the training inputs
    /// and `validation` together.
    pub fn fit(
        inputs: &[f32],
        dim: usize,
        validation: &[f32],
        k: usize,
        quantile: f64,
    ) -> Result<Self, ModelError> {
        let n = inputs.len() / dim.max(1);
        if dim == 0 || inputs.len() != n * dim || n < 2 {
            return Err(ModelError::Input(format!(
                "fitting the input detector needs at least 2 inputs of {dim} floats, got {} floats",
                inputs.len()
            )));
        }
        if k == 0 || k >= dim {
            return Err(ModelError::Input(format!(
                "the input detector keeps 1 to {} directions, not {k}",
                dim - 1
            )));
        }
        if validation.is_empty() || !validation.len().is_multiple_of(dim) {
            return Err(ModelError::Input(format!(
                "the threshold needs validation inputs of {dim} floats, got {} floats",
                validation.len()
            )));
        }
        if !(0.0..=1.0).contains(&quantile) {
            return Err(ModelError::Input(format!(
                "the threshold's quantile {quantile} is not in [0, 1]"
            )));
        }
        let dev = Device::Cpu;
        let xs = Tensor::from_slice(inputs, (n, dim), &dev)?.to_dtype(DType::F64)?;
        let mean_t = xs.mean_keepdim(0)?;
        let centred = xs.broadcast_sub(&mean_t)?;
        let cov = (centred.t()?.matmul(&centred)? / (n - 1) as f64)?;
        let trace: f64 = cov
            .to_vec2::<f64>()?
            .iter()
            .enumerate()
            .map(|(i, r)| r[i])
            .sum();
        let (directions, lambdas) = top_eigen(&cov, dim, k)?;
        // The variance the kept directions leave, spread over the others (PPCA's estimate),
        // floored so that a direction the data never varies in cannot divide by zero.
        let rest = (trace - lambdas.iter().sum::<f64>()).max(0.0) / (dim - k) as f64;
        let floor = 1e-6 * (trace / dim as f64).max(f64::MIN_POSITIVE);
        let mut variances: Vec<f32> = lambdas.iter().map(|&l| l.max(floor) as f32).collect();
        variances.push(rest.max(floor) as f32);
        let mut detector = Self {
            dim,
            mean: mean_t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
            basis: directions,
            variances,
            threshold: f32::INFINITY,
        };
        let mut scores: Vec<f32> = validation
            .chunks_exact(dim)
            .chain(inputs.chunks_exact(dim))
            .map(|x| detector.score(x))
            .collect();
        scores.sort_by(f32::total_cmp);
        let at = ((scores.len() - 1) as f64 * quantile).round() as usize;
        detector.threshold = scores[at];
        Ok(detector)
    }

    /// A detector from its file tensors, checked: the shapes agree with `dim`, the basis rows
    /// are unit length, variances and threshold are positive and finite.
    pub fn from_parts(
        dim: usize,
        mean: Vec<f32>,
        basis: Vec<f32>,
        variances: Vec<f32>,
        threshold: f32,
    ) -> Result<Self, ModelError> {
        let bad = |name: &str, detail: String| {
            Err(ModelError::InvalidTensor {
                name: name.to_string(),
                detail,
            })
        };
        if mean.len() != dim {
            return bad(
                TENSOR_MEAN,
                format!("{} values for inputs of {dim}", mean.len()),
            );
        }
        let k = basis.len() / dim.max(1);
        if k == 0 || k >= dim || basis.len() != k * dim {
            return bad(
                TENSOR_BASIS,
                format!(
                    "{} values: want k rows of {dim}, 1 <= k < {dim}",
                    basis.len()
                ),
            );
        }
        if let Some(row) = basis
            .chunks_exact(dim)
            .position(|r| (dot(r, r) - 1.0).abs() > 1e-3)
        {
            return bad(TENSOR_BASIS, format!("row {row} is not of unit length"));
        }
        if variances.len() != k + 1 {
            return bad(
                TENSOR_VARIANCES,
                format!(
                    "{} values for {k} directions, want {}",
                    variances.len(),
                    k + 1
                ),
            );
        }
        if let Some(i) = variances.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
            return bad(
                TENSOR_VARIANCES,
                format!("value {i} is not a positive number"),
            );
        }
        if !(threshold.is_finite() && threshold > 0.0) {
            return bad(
                TENSOR_THRESHOLD,
                format!("{threshold} is not a positive number"),
            );
        }
        if mean.iter().chain(&basis).any(|v| !v.is_finite()) {
            return bad(TENSOR_MEAN, "holds a non-finite value".into());
        }
        Ok(Self {
            dim,
            mean,
            basis,
            variances,
            threshold,
        })
    }

    /// The tensors a file stores, as `(name, shape, values)`, in [`TENSORS`] order.
    pub fn parts(&self) -> [(&'static str, Vec<usize>, Vec<f32>); 4] {
        [
            (TENSOR_MEAN, vec![self.dim], self.mean.clone()),
            (
                TENSOR_BASIS,
                vec![self.components(), self.dim],
                self.basis.clone(),
            ),
            (
                TENSOR_VARIANCES,
                vec![self.variances.len()],
                self.variances.clone(),
            ),
            (TENSOR_THRESHOLD, vec![1], vec![self.threshold]),
        ]
    }

    /// Length of the inputs it scores.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Directions kept.
    pub fn components(&self) -> usize {
        self.basis.len() / self.dim
    }

    /// Scores above this are flagged.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The score of one input of the detector's length (see the module documentation).
    /// Always finite: inputs so far off that it overflows (or that are not finite) score
    /// `f32::MAX`.
    pub fn score(&self, x: &[f32]) -> f32 {
        debug_assert_eq!(x.len(), self.dim);
        let centred: Vec<f32> = x.iter().zip(&self.mean).map(|(a, m)| a - m).collect();
        let k = self.components();
        let (total, explained, within) = projections(&self.basis, &self.variances[..k], &centred);
        let residual = (total - explained).max(0.0);
        let score = (within + residual / self.variances[k]) / self.dim as f32;
        if score.is_finite() { score } else { f32::MAX }
    }

    /// Score and verdict of one input.
    pub fn assess(&self, x: &[f32]) -> Novelty {
        let score = self.score(x);
        Novelty {
            score,
            unusual: score > self.threshold,
        }
    }
}

/// `(|x|², Σ yᵢ², Σ yᵢ² / λᵢ)` with `yᵢ` the dot product of `x` with row `i` of `basis`: the
/// whole of a score's arithmetic. Compiled for several instruction sets and chosen at run time
/// (the first call checks the CPU once): the lanes of [`dot`] fill the widest registers the
/// CPU has. The operations and their order are the same on every target (no fused
/// multiply-add), so every machine computes the same score.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn projections(basis: &[f32], variances: &[f32], x: &[f32]) -> (f32, f32, f32) {
    let total = dot(x, x);
    let mut explained = 0.0f32;
    let mut within = 0.0f32;
    for (u, lambda) in basis.chunks_exact(x.len()).zip(variances) {
        let y = dot(u, x);
        explained += y * y;
        within += y * y / lambda;
    }
    (total, explained, within)
}

/// Independent running sums of [`dot`]: one AVX-512 register, two AVX or four SSE ones.
const LANES: usize = 16;

/// A dot product in [`LANES`] independent lanes, which the compiler turns into SIMD (a single
/// running sum would force it to add in order).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The `k` leading eigenvectors (as `k` rows of `dim`, f32) and eigenvalues of the symmetric
/// `dim x dim` matrix `cov`: orthogonal iteration on `k + OVERSAMPLE` vectors, then the
/// Rayleigh-Ritz step (a small symmetric eigenproblem, solved by Jacobi rotations).
fn top_eigen(cov: &Tensor, dim: usize, k: usize) -> Result<(Vec<f32>, Vec<f64>), ModelError> {
    let m = (k + OVERSAMPLE).min(dim);
    // A fixed, full-rank start: the identity's first m columns, mixed so that no direction of
    // the data is orthogonal to all of them.
    let mut q: Vec<f64> = (0..dim * m)
        .map(|i| {
            let (r, c) = (i / m, i % m);
            ((r * 31 + c * 17) % 97) as f64 / 97.0 - 0.5 + if r == c { 1.0 } else { 0.0 }
        })
        .collect();
    orthonormalize_columns(&mut q, dim, m);
    for _ in 0..ITERATIONS {
        let qt = Tensor::from_slice(&q, (dim, m), &Device::Cpu)?;
        q = cov.matmul(&qt)?.flatten_all()?.to_vec1()?;
        orthonormalize_columns(&mut q, dim, m);
    }
    let qt = Tensor::from_slice(&q, (dim, m), &Device::Cpu)?;
    let h = qt.t()?.matmul(&cov.matmul(&qt)?)?.to_vec2::<f64>()?;
    let (values, vectors) = jacobi_eigen(h);
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let mut basis = Vec::with_capacity(k * dim);
    let mut lambdas = Vec::with_capacity(k);
    for &j in &order[..k] {
        // Ritz vector j: Q times column j of the small problem's eigenvectors.
        let mut v: Vec<f64> = (0..dim)
            .map(|r| (0..m).map(|c| q[r * m + c] * vectors[c][j]).sum())
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        basis.extend(v.iter().map(|&x| x as f32));
        lambdas.push(values[j]);
    }
    Ok((basis, lambdas))
}

/// Modified Gram-Schmidt on the `m` columns of the row-major `dim x m` matrix `q`.
fn orthonormalize_columns(q: &mut [f64], dim: usize, m: usize) {
    for c in 0..m {
        for p in 0..c {
            let d: f64 = (0..dim).map(|r| q[r * m + c] * q[r * m + p]).sum();
            for r in 0..dim {
                q[r * m + c] -= d * q[r * m + p];
            }
        }
        let norm = (0..dim).map(|r| q[r * m + c].powi(2)).sum::<f64>().sqrt();
        let norm = if norm > 0.0 { norm } else { 1.0 };
        for r in 0..dim {
            q[r * m + c] /= norm;
        }
    }
}

/// Eigenvalues and eigenvectors (as the columns of the second result) of a small symmetric
/// matrix, by cyclic Jacobi rotations.
fn jacobi_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        let scale: f64 = (0..n).map(|i| a[i][i] * a[i][i]).sum();
        if off <= 1e-24 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < f64::MIN_POSITIVE {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (low, high) = a.split_at_mut(q);
                for (apk, aqk) in low[p].iter_mut().zip(high[0].iter_mut()) {
                    let (x, y) = (*apk, *aqk);
                    *apk = c * x - s * y;
                    *aqk = s * x + c * y;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Inputs near a plane: two strong directions plus a little noise in every coordinate.
    fn planar(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .flat_map(|_| {
                let (a, b): (f32, f32) = (rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
                let noise: Vec<f32> = (0..dim).map(|_| rng.random_range(-0.01..0.01)).collect();
                (0..dim)
                    .map(move |i| {
                        let e1 = if i % 2 == 0 { 1.0 } else { 0.0 };
                        let e2 = if i < dim / 2 { 1.0 } else { -1.0 };
                        0.5 + a * e1 * 0.3 + b * e2 * 0.1 + noise[i]
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn jacobi_diagonalises_a_symmetric_matrix() {
        let a = vec![
            vec![4.0, 1.0, 0.5],
            vec![1.0, 3.0, 0.2],
            vec![0.5, 0.2, 1.0],
        ];
        let (values, v) = jacobi_eigen(a.clone());
        for j in 0..3 {
            for i in 0..3 {
                let av: f64 = (0..3).map(|k| a[i][k] * v[k][j]).sum();
                assert!((av - values[j] * v[i][j]).abs() < 1e-9);
            }
        }
        let trace: f64 = values.iter().sum();
        assert!((trace - 8.0).abs() < 1e-9);
    }

    #[test]
    fn inputs_off_the_data_score_far_above_the_threshold() {
        let dim = 24;
        let train = planar(2_000, dim, 1);
        let validation = planar(500, dim, 2);
        let d = Detector::fit(&train, dim, &validation, 2, 0.99).unwrap();
        // The two directions found are the data's: the training inputs score about 1.
        let mean: f32 = train.chunks(dim).map(|x| d.score(x)).sum::<f32>() / 2_000.0;
        assert!((0.7..1.3).contains(&mean), "mean score {mean}");
        let flagged = planar(1_000, dim, 3)
            .chunks(dim)
            .filter(|x| d.assess(x).unusual)
            .count();
        assert!(
            flagged < 40,
            "{flagged} of 1000 in-distribution inputs flagged"
        );
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for _ in 0..100 {
            let noise: Vec<f32> = (0..dim).map(|_| rng.random::<f32>()).collect();
            let v = d.assess(&noise);
            assert!(v.unusual && v.score > 10.0 * d.threshold(), "{v:?}");
        }
        assert_eq!(d.score(&vec![f32::NAN; dim]), f32::MAX);
        assert_eq!(d.score(&vec![1e30; dim]), f32::MAX);
    }

    #[test]
    fn parts_round_trip_and_bad_parts_are_named() {
        let dim = 24;
        let d = Detector::fit(&planar(300, dim, 5), dim, &planar(100, dim, 6), 3, 0.99).unwrap();
        let [
            (_, _, mean),
            (_, _, basis),
            (_, _, variances),
            (_, _, threshold),
        ] = d.parts();
        let again = Detector::from_parts(
            dim,
            mean.clone(),
            basis.clone(),
            variances.clone(),
            threshold[0],
        )
        .unwrap();
        assert_eq!(again, d);
        let err = Detector::from_parts(
            dim,
            mean.clone(),
            basis[..dim].to_vec(),
            variances.clone(),
            1.0,
        )
        .unwrap_err();
        assert!(err.to_string().contains(TENSOR_VARIANCES), "{err}");
        let mut skewed = basis.clone();
        skewed[0] += 0.5;
        let err =
            Detector::from_parts(dim, mean.clone(), skewed, variances.clone(), 1.0).unwrap_err();
        assert!(err.to_string().contains("unit length"), "{err}");
        let mut zero = variances.clone();
        zero[1] = 0.0;
        let err = Detector::from_parts(dim, mean, basis, zero, 1.0).unwrap_err();
        assert!(err.to_string().contains("value 1"), "{err}");
        assert!(Detector::fit(&[0.5; 10], 5, &[0.5; 5], 5, 0.99).is_err());
    }

    /// The score, on whatever instruction set was chosen at run time, is the module's formula
    /// computed plainly in f64, for an input length that is no multiple of the lanes.
    #[test]
    fn the_score_is_the_formula_whatever_the_instruction_set() {
        let dim = 37;
        let d = Detector::fit(&planar(400, dim, 7), dim, &planar(100, dim, 8), 5, 0.99).unwrap();
        let [(_, _, mean), (_, _, basis), (_, _, variances), _] = d.parts();
        let k = d.components();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for _ in 0..50 {
            let x: Vec<f32> = (0..dim).map(|_| rng.random::<f32>()).collect();
            let c: Vec<f64> = x.iter().zip(&mean).map(|(a, m)| f64::from(a - m)).collect();
            let ys: Vec<f64> = basis
                .chunks(dim)
                .map(|u| u.iter().zip(&c).map(|(u, c)| f64::from(*u) * c).sum())
                .collect();
            let total: f64 = c.iter().map(|v| v * v).sum();
            let explained: f64 = ys.iter().map(|y| y * y).sum();
            let within: f64 = ys
                .iter()
                .zip(&variances)
                .map(|(y, l)| y * y / f64::from(*l))
                .sum();
            let want =
                (within + (total - explained).max(0.0) / f64::from(variances[k])) / dim as f64;
            let got = f64::from(d.score(&x));
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{got} against {want}"
            );
        }
    }
}
