//! The cloud CNN for serving: each convolution is one matrix product over the whole batch.
//!
//! candle 0.11's `conv2d` on the CPU tiles each image's im2col into many small products, so
//! the CNN cost 380 µs at batch 1 and 500 µs per image at batch 64 here (`edgeinfer eval`, one
//! thread), far above what its 3.9 M multiply-adds per image need. Here activations stay in NHWC layout (channels last), which
//! makes a 5x5 patch of a row five contiguous runs of `5 · channels` floats: [`Patches`] copies
//! them for every output position of every image into one `(batch · positions, 25 · channels)`
//! matrix, one GEMM multiplies it by the kernel, and the result is already NHWC for the next
//! layer. [`BiasReluPool`] then adds the bias, applies ReLU and max-pools in one pass (the three
//! commute: bias is per channel and both are monotonic), where candle would make three.
//!
//! The weights are the training network's ([`crate::nets::CloudCnn`]), reordered once at load:
//! kernels to `(ky, kx, c_in)` columns, and `fc1`'s inputs from NCHW to NHWC order. Training
//! keeps candle's `conv2d`, which has gradients; the two forward passes agree within float
//! rounding (tested).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Module, Result, Shape, Tensor};
use candle_nn::{Linear, VarBuilder};

/// Kernel size of both convolutions.
const K: usize = 5;

/// The cloud CNN's inference forward pass; same parameters as [`crate::nets::CloudCnn`].
#[derive(Clone, Debug)]
pub struct CloudCnnGemm {
    conv1: ConvGemm,
    conv2: ConvGemm,
    fc1: Linear,
    fc2: Linear,
}

/// One 5x5 convolution (stride 1, no padding) followed by bias, ReLU and 2x2 max-pooling.
#[derive(Clone, Debug)]
struct ConvGemm {
    /// `(K · K · c_in, c_out)`, rows in patch order `(ky, kx, c_in)`.
    kernel: Tensor,
    pool: BiasReluPool,
}

// === impl CloudCnnGemm ===

impl CloudCnnGemm {
    /// From the parameters of [`crate::Architecture::CloudCnn`].
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let fc1_w = vb.get((128, 64 * 4 * 4), "fc1.weight")?;
        // NCHW flattening (c, y, x) to NHWC flattening (y, x, c).
        let fc1_w = fc1_w
            .reshape((128, 64, 4, 4))?
            .permute((0, 2, 3, 1))?
            .reshape((128, 64 * 4 * 4))?
            .contiguous()?;
        Ok(Self {
            conv1: ConvGemm::new(&vb.pp("conv1"), 1, 32)?,
            conv2: ConvGemm::new(&vb.pp("conv2"), 32, 64)?,
            fc1: Linear::new(fc1_w, Some(vb.get(128, "fc1.bias")?)),
            fc2: Linear::new(
                vb.get((10, 128), "fc2.weight")?,
                Some(vb.get(10, "fc2.bias")?),
            ),
        })
    }
}

impl Module for CloudCnnGemm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let b = xs.dim(0)?;
        let xs = xs.reshape((b, 28, 28, 1))?;
        let xs = self.conv1.forward(&xs)?;
        let xs = self.conv2.forward(&xs)?;
        let h = self.fc1.forward(&xs.reshape((b, 64 * 4 * 4))?)?.relu()?;
        self.fc2.forward(&h)
    }
}

// === impl ConvGemm ===

impl ConvGemm {
    fn new(vb: &VarBuilder, c_in: usize, c_out: usize) -> Result<Self> {
        let kernel = vb
            .get((c_out, c_in, K, K), "weight")?
            .permute((2, 3, 1, 0))?
            .reshape((K * K * c_in, c_out))?
            .contiguous()?;
        let bias = vb.get(c_out, "bias")?.to_vec1::<f32>()?;
        Ok(Self {
            kernel,
            pool: BiasReluPool { bias },
        })
    }

    /// `(b, h, w, c_in)` to `(b, (h - 4) / 2, (w - 4) / 2, c_out)`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, h, w, _) = xs.dims4()?;
        let (oh, ow) = (h - K + 1, w - K + 1);
        let patches = xs.apply_op1_no_bwd(&Patches)?;
        let ys = patches.matmul(&self.kernel)?;
        ys.reshape((b, oh, ow, self.kernel.dim(1)?))?
            .apply_op1_no_bwd(&self.pool)
    }
}

/// im2col in NHWC: `(b, h, w, c)` to `(b · oh · ow, K · K · c)`, one row per output position,
/// columns in `(ky, kx, c)` order.
#[derive(Clone, Copy, Debug)]
struct Patches;

impl CustomOp1 for Patches {
    fn name(&self) -> &'static str {
        "nhwc-patches"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), storage, layout)?;
        let (b, h, w, c) = layout.shape().dims4()?;
        if h < K || w < K {
            candle_core::bail!("nhwc-patches: a {h}x{w} image is smaller than the {K}x{K} kernel");
        }
        let (oh, ow) = (h - K + 1, w - K + 1);
        let run = K * c;
        let mut out = Vec::with_capacity(b * oh * ow * K * run);
        for image in x.chunks_exact(h * w * c) {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ky in 0..K {
                        let start = ((oy + ky) * w + ox) * c;
                        out.extend_from_slice(&image[start..start + run]);
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b * oh * ow, K * run))))
    }
}

/// `relu(max over 2x2 + bias)` in NHWC: `(b, h, w, c)` to `(b, h / 2, w / 2, c)`.
#[derive(Clone, Debug)]
struct BiasReluPool {
    /// One per channel.
    bias: Vec<f32>,
}

impl CustomOp1 for BiasReluPool {
    fn name(&self) -> &'static str {
        "nhwc-bias-relu-pool"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), storage, layout)?;
        let (b, h, w, c) = layout.shape().dims4()?;
        if c != self.bias.len() {
            candle_core::bail!("{}: {c} channels, {} biases", self.name(), self.bias.len());
        }
        let (ph, pw) = (h / 2, w / 2);
        let mut out = Vec::with_capacity(b * ph * pw * c);
        let at = |image: usize, y: usize, x_: usize| ((image * h + y) * w + x_) * c;
        for image in 0..b {
            for py in 0..ph {
                for px in 0..pw {
                    let (y, x0) = (2 * py, 2 * px);
                    let rows = [at(image, y, x0), at(image, y, x0 + 1)];
                    let next = [at(image, y + 1, x0), at(image, y + 1, x0 + 1)];
                    for ch in 0..c {
                        let m = x[rows[0] + ch]
                            .max(x[rows[1] + ch])
                            .max(x[next[0] + ch])
                            .max(x[next[1] + ch]);
                        out.push((m + self.bias[ch]).max(0.0));
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, ph, pw, c))))
    }
}

/// The op's input as one contiguous f32 slice.
fn contiguous_f32<'a>(op: &str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op} takes f32 input, got {:?}", storage.dtype());
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op} takes a contiguous input"),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::nets::{Architecture, CloudCnn};

    /// The GEMM forward pass gives the training network's outputs (candle's `conv2d`) within
    /// 1e-4, at every batch size, with random (non-zero) biases so that their placement counts.
    #[test]
    fn agrees_with_the_conv2d_network() {
        let arch = Architecture::CloudCnn;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let map = arch
            .params()
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let v: Vec<f32> = if name.ends_with(".bias") {
                    (0..n).map(|_| rng.random_range(-0.3..0.3)).collect()
                } else {
                    arch.init_param(name, &shape, &mut rng)
                };
                (
                    name.to_string(),
                    Tensor::from_vec(v, shape, &Device::Cpu).unwrap(),
                )
            })
            .collect();
        let vb = VarBuilder::from_tensors(map, DType::F32, &Device::Cpu);
        let reference = CloudCnn::new(vb.clone()).unwrap();
        let gemm = CloudCnnGemm::new(vb).unwrap();
        for batch in [1, 3, 64] {
            let x: Vec<f32> = (0..batch * 784)
                .map(|_| rng.random_range(0.0..1.0))
                .collect();
            let xs = Tensor::from_vec(x, (batch, 784), &Device::Cpu).unwrap();
            let want = reference.forward(&xs).unwrap().flatten_all().unwrap();
            let got = gemm.forward(&xs).unwrap().flatten_all().unwrap();
            let err = (want - got)
                .unwrap()
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(err < 1e-4, "batch {batch}: max |difference| {err}");
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let small = Tensor::zeros((1, 4, 4, 1), DType::F32, &Device::Cpu).unwrap();
        assert!(small.apply_op1_no_bwd(&Patches).is_err());
        let pool = BiasReluPool { bias: vec![0.0; 3] };
        let x = Tensor::zeros((1, 4, 4, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(x.apply_op1_no_bwd(&pool).is_err());
    }
}
