//! The two networks, their parameter lists, and the quantized form of the MLP.
//!
//! Each network is a plain struct built from a `VarBuilder` with an `impl Module` for inference;
//! training goes through [`Net::forward_t`], which draws dropout masks from the caller's seeded
//! RNG, because candle's CPU RNG cannot be seeded and training must be reproducible.
//!
//! Inputs arrive flat, `(batch, 784)`, pixels in [0, 1]; each network reshapes or pads them
//! itself, so callers never know about the 800-wide first layer or the image layout.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};
use rand::Rng;

use crate::ModelError;
use crate::int8::Int8Linear;

/// MNIST pixels per image.
pub const IMAGE_LEN: usize = 28 * 28;
/// The MLP's padded input width: the next multiple of the 32-wide q4_0 / q8_0 block.
pub const MLP_INPUT: usize = 800;
const MLP_HIDDEN: usize = 128;
const CLASSES: usize = 10;
const MLP_DROPOUT: f32 = 0.2;
const CNN_DROPOUT: f32 = 0.25;

/// Which network a model file holds; its [`id`](Architecture::id) is the `architecture` metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// Flatten, pad to 800, Dense 128 ReLU, Dropout 0.2, Dense 10.
    EdgeMlp,
    /// Conv 5x5x32 ReLU, max-pool 2, conv 5x5x64 ReLU, max-pool 2, Dense 128 ReLU, Dropout 0.25,
    /// Dense 10.
    CloudCnn,
}

// === impl Architecture ===

impl Architecture {
    pub const ALL: [Architecture; 2] = [Architecture::EdgeMlp, Architecture::CloudCnn];

    /// The metadata `architecture` value.
    pub fn id(self) -> &'static str {
        match self {
            Architecture::EdgeMlp => "mlp-800-128-10",
            Architecture::CloudCnn => "cnn-c32-c64-d128-10",
        }
    }

    /// The model name the CLI knows it by, and the default `name` metadata.
    pub fn model_name(self) -> &'static str {
        match self {
            Architecture::EdgeMlp => "edge-mlp",
            Architecture::CloudCnn => "cloud-cnn",
        }
    }

    pub fn from_id(id: &str) -> std::result::Result<Self, ModelError> {
        Self::ALL
            .into_iter()
            .find(|a| a.id() == id)
            .ok_or_else(|| ModelError::UnknownArchitecture(id.to_string()))
    }

    pub fn from_model_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.model_name() == name)
    }

    pub(crate) fn known_ids() -> String {
        Self::ALL.map(|a| a.id()).join(", ")
    }

    /// Every parameter tensor, by name, with its shape, in a fixed order (which is also the
    /// order of weight initialisation and of tensors in files).
    pub fn params(self) -> Vec<(&'static str, Vec<usize>)> {
        match self {
            Architecture::EdgeMlp => vec![
                ("fc1.weight", vec![MLP_HIDDEN, MLP_INPUT]),
                ("fc1.bias", vec![MLP_HIDDEN]),
                ("fc2.weight", vec![CLASSES, MLP_HIDDEN]),
                ("fc2.bias", vec![CLASSES]),
            ],
            Architecture::CloudCnn => vec![
                ("conv1.weight", vec![32, 1, 5, 5]),
                ("conv1.bias", vec![32]),
                ("conv2.weight", vec![64, 32, 5, 5]),
                ("conv2.bias", vec![64]),
                ("fc1.weight", vec![128, 64 * 4 * 4]),
                ("fc1.bias", vec![128]),
                ("fc2.weight", vec![CLASSES, 128]),
                ("fc2.bias", vec![CLASSES]),
            ],
        }
    }

    /// Shape of one input, without batch.
    pub fn input_shape(self) -> Vec<usize> {
        vec![1, 28, 28]
    }

    pub fn num_classes(self) -> usize {
        CLASSES
    }

    /// The initial value of parameter `name` of shape `shape`, drawn from `rng`: Glorot-uniform
    /// weights and zero biases, the Keras defaults of the source material. The MLP's padding columns start, and therefore
    /// stay, at zero: their inputs are always zero, so their gradient is too.
    pub(crate) fn init_param(self, name: &str, shape: &[usize], rng: &mut impl Rng) -> Vec<f32> {
        let n: usize = shape.iter().product();
        if name.ends_with(".bias") {
            return vec![0.0; n];
        }
        let receptive: usize = shape[2..].iter().product();
        let fan_in = shape[1] * receptive;
        let fan_out = shape[0] * receptive;
        let bound = (6.0 / (fan_in + fan_out) as f32).sqrt();
        let mut v: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
        if self == Architecture::EdgeMlp && name == "fc1.weight" {
            for row in v.chunks_mut(MLP_INPUT) {
                row[IMAGE_LEN..].fill(0.0);
            }
        }
        v
    }
}

/// A network being trained or run in full precision.
pub trait Net: Module + Send + Sync {
    /// Forward pass; with `dropout` set, in training mode with masks drawn from it.
    fn forward_t(&self, xs: &Tensor, dropout: Option<&mut dyn rand::RngCore>) -> Result<Tensor>;
}

/// Builds the network of `arch` from `vb` (a `VarMap` for training, file tensors for serving).
pub fn build(arch: Architecture, vb: VarBuilder) -> Result<Box<dyn Net>> {
    Ok(match arch {
        Architecture::EdgeMlp => Box::new(EdgeMlp::new(vb)?),
        Architecture::CloudCnn => Box::new(CloudCnn::new(vb)?),
    })
}

/// Builds the network of `arch` for serving from `vb`: the same function as [`build`], computed
/// the fastest way this crate knows (the CNN as whole-batch GEMMs, [`crate::cnn_gemm`]).
pub fn build_inference(
    arch: Architecture,
    vb: VarBuilder,
) -> Result<Box<dyn Module + Send + Sync>> {
    Ok(match arch {
        Architecture::EdgeMlp => Box::new(EdgeMlp::new(vb)?),
        Architecture::CloudCnn => Box::new(crate::cnn_gemm::CloudCnnGemm::new(vb)?),
    })
}

/// Inverted dropout with a mask from `rng`: kept activations are scaled by `1 / (1 - p)` so
/// inference needs no rescaling.
fn dropout(xs: &Tensor, p: f32, rng: &mut dyn rand::RngCore) -> Result<Tensor> {
    let scale = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..xs.elem_count())
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { scale })
        .collect();
    xs.mul(&Tensor::from_vec(mask, xs.shape(), xs.device())?)
}

fn linear(vb: &VarBuilder, name: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
    let vb = vb.pp(name);
    Ok(Linear::new(
        vb.get((out_dim, in_dim), "weight")?,
        Some(vb.get(out_dim, "bias")?),
    ))
}

/// The edge model: the source material's 784-128-10 MLP with its input padded to 800.
#[derive(Clone, Debug)]
pub struct EdgeMlp {
    fc1: Linear,
    fc2: Linear,
}

// === impl EdgeMlp ===

impl EdgeMlp {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: linear(&vb, "fc1", MLP_INPUT, MLP_HIDDEN)?,
            fc2: linear(&vb, "fc2", MLP_HIDDEN, CLASSES)?,
        })
    }
}

impl Net for EdgeMlp {
    fn forward_t(
        &self,
        xs: &Tensor,
        dropout_rng: Option<&mut dyn rand::RngCore>,
    ) -> Result<Tensor> {
        let xs = pad_input(xs)?;
        let mut h = self.fc1.forward(&xs)?.relu()?;
        if let Some(rng) = dropout_rng {
            h = dropout(&h, MLP_DROPOUT, rng)?;
        }
        self.fc2.forward(&h)
    }
}

impl Module for EdgeMlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_t(xs, None)
    }
}

/// `(batch, 784)` flattened images (or any `(batch, 1, 28, 28)`) to `(batch, 800)`.
fn pad_input(xs: &Tensor) -> Result<Tensor> {
    let xs = xs.flatten_from(1)?;
    xs.pad_with_zeros(D::Minus1, 0, MLP_INPUT - IMAGE_LEN)
}

/// The cloud model: a small LeNet-style CNN.
#[derive(Clone, Debug)]
pub struct CloudCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

// === impl CloudCnn ===

impl CloudCnn {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let conv = |name: &str, c_in: usize, c_out: usize| -> Result<Conv2d> {
            let vb = vb.pp(name);
            Ok(Conv2d::new(
                vb.get((c_out, c_in, 5, 5), "weight")?,
                Some(vb.get(c_out, "bias")?),
                Conv2dConfig::default(),
            ))
        };
        Ok(Self {
            conv1: conv("conv1", 1, 32)?,
            conv2: conv("conv2", 32, 64)?,
            fc1: linear(&vb, "fc1", 64 * 4 * 4, 128)?,
            fc2: linear(&vb, "fc2", 128, CLASSES)?,
        })
    }
}

impl Net for CloudCnn {
    fn forward_t(
        &self,
        xs: &Tensor,
        dropout_rng: Option<&mut dyn rand::RngCore>,
    ) -> Result<Tensor> {
        let b = xs.dim(0)?;
        let xs = xs.reshape((b, 1, 28, 28))?;
        let xs = self.conv1.forward(&xs)?.relu()?.max_pool2d(2)?;
        let xs = self.conv2.forward(&xs)?.relu()?.max_pool2d(2)?;
        let mut h = self.fc1.forward(&xs.flatten_from(1)?)?.relu()?;
        if let Some(rng) = dropout_rng {
            h = dropout(&h, CNN_DROPOUT, rng)?;
        }
        self.fc2.forward(&h)
    }
}

impl Module for CloudCnn {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_t(xs, None)
    }
}

/// The edge MLP with q8_0 / q4_0 weights, multiplied by candle's quantized kernels; biases stay
/// f32 (they are 138 numbers).
#[derive(Debug)]
pub struct QuantizedMlp {
    fc1: QMatMul,
    b1: Tensor,
    fc2: QMatMul,
    b2: Tensor,
}

// === impl QuantizedMlp ===

impl QuantizedMlp {
    /// From the four tensors in [`Architecture::params`] order: weights quantized, biases f32.
    pub fn new(fc1: Arc<QTensor>, b1: Tensor, fc2: Arc<QTensor>, b2: Tensor) -> Result<Self> {
        Ok(Self {
            fc1: QMatMul::from_arc(fc1)?,
            b1,
            fc2: QMatMul::from_arc(fc2)?,
            b2,
        })
    }
}

impl Module for QuantizedMlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = pad_input(xs)?;
        let h = self.fc1.forward(&xs)?.broadcast_add(&self.b1)?.relu()?;
        self.fc2.forward(&h)?.broadcast_add(&self.b2)
    }
}

/// The edge MLP with int8 weights and a scale per output row ([`crate::int8`]): each layer one
/// fused candle op, biases f32.
#[derive(Clone, Debug)]
pub struct Int8Mlp {
    fc1: Int8Linear,
    fc2: Int8Linear,
}

// === impl Int8Mlp ===

impl Int8Mlp {
    /// From the two layers' weights in [`Architecture::params`] shapes (`fc1` 128 x 800, `fc2`
    /// 10 x 128), a scale per row and the biases.
    pub fn new(fc1: Int8Params<'_>, fc2: Int8Params<'_>) -> std::result::Result<Self, ModelError> {
        // fc1's columns past the 784 pixels only ever meet the zero padding of the input, so
        // the layer takes the pixels as they come and skips the pad of the f32 network.
        let fc1_weights: Vec<i8> = fc1
            .weights
            .chunks_exact(MLP_INPUT)
            .flat_map(|row| &row[..IMAGE_LEN])
            .copied()
            .collect();
        Ok(Self {
            fc1: Int8Linear::new(
                &fc1_weights,
                fc1.scales.to_vec(),
                fc1.bias.to_vec(),
                IMAGE_LEN,
                true,
            )?,
            fc2: Int8Linear::new(
                fc2.weights,
                fc2.scales.to_vec(),
                fc2.bias.to_vec(),
                MLP_HIDDEN,
                false,
            )?,
        })
    }

    /// The same network computed with `kernel` (for tests and benchmarks).
    pub fn with_kernel(self, kernel: crate::int8::kernels::Kernel) -> Self {
        Self {
            fc1: self.fc1.with_kernel(kernel),
            fc2: self.fc2.with_kernel(kernel),
        }
    }
}

/// One int8 layer's parameters as stored: row-major weights, a scale and a bias per row.
#[derive(Clone, Copy, Debug)]
pub struct Int8Params<'a> {
    pub weights: &'a [i8],
    pub scales: &'a [f32],
    pub bias: &'a [f32],
}

impl Module for Int8Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = xs.flatten_from(1)?;
        self.fc2.forward(&self.fc1.forward(&xs)?)
    }
}

/// The GGML type of a quantization name (`q8_0`, `q4_0`).
pub fn ggml_dtype(quantization: &str) -> std::result::Result<GgmlDType, ModelError> {
    match quantization {
        "q8_0" => Ok(GgmlDType::Q8_0),
        "q4_0" => Ok(GgmlDType::Q4_0),
        other => Err(ModelError::Unsupported(format!(
            "quantization {other:?}: use q8_0 or q4_0"
        ))),
    }
}
