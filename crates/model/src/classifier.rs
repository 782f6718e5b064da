//! The `Classifier` interface the servers use, and [`Model`], its implementation over candle.
//!
//! A classifier is its metadata plus a batch-in, probabilities-out function. The servers call it
//! from their own worker threads and get their parallelism from concurrent batches, so every
//! forward pass here runs on the calling thread alone (see [`crate::threading`]).

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::files::{self, Int8Layer, ModelFile, ModelFormat, Weights};
use crate::nets::{self, Architecture, Int8Mlp, Int8Params, QuantizedMlp};
use crate::ood::Detector;
use crate::{ModelError, ModelMetadata, threading};

/// A model the servers can run: what it is, and probabilities for a batch of inputs.
pub trait Classifier: Send + Sync + 'static {
    fn metadata(&self) -> &ModelMetadata;

    /// `inputs`: `batch * input_len` floats in \[0,1\], row-major. Returns `batch * labels.len()`
    /// calibrated (temperature-scaled) softmax probabilities, row-major.
    fn classify(&self, inputs: &[f32], batch: usize) -> Result<Vec<f32>, ModelError>;

    /// How unlike its training inputs an input is, when the model file carries a detector
    /// ([`crate::ood`]).
    fn ood(&self) -> Option<&Detector> {
        None
    }

    /// An attribution per input value for the score of label `class`: gradient times input
    /// of that label's logit, `input.len()` values in the input's layout. Positive values
    /// pushed the model towards the label, negative ones away from it.
    fn explain(&self, _input: &[f32], _class: usize) -> Result<Vec<f32>, ModelError> {
        Err(ModelError::Unsupported(format!(
            "{} cannot explain its answers",
            self.metadata().name
        )))
    }
}

/// Loads a model file, choosing the format by extension (`.safetensors`, `.gguf`).
pub fn load_classifier(path: &Path) -> Result<Arc<dyn Classifier>, ModelError> {
    Ok(Arc::new(Model::load(path)?))
}

/// Loads a model from untrusted bytes: the entry point for uploads and fuzz targets. Never
/// panics on bad input; every problem is a [`ModelError`].
pub fn load_classifier_bytes(
    bytes: &[u8],
    format: ModelFormat,
) -> Result<Arc<dyn Classifier>, ModelError> {
    Ok(Arc::new(Model::from_bytes(bytes, format)?))
}

/// A loaded network with its metadata.
pub struct Model {
    metadata: ModelMetadata,
    architecture: Architecture,
    /// The forward pass, from flat inputs to logits.
    net: Box<dyn Module + Send + Sync>,
    /// The parameters as loaded, kept for saving and quantizing.
    params: Params,
    /// The training inputs' detector, when the file carries one.
    ood: Option<Detector>,
    /// The network in f32 with gradients (quantized weights dequantized), built on the first
    /// request for an explanation.
    explainer: std::sync::OnceLock<Box<dyn nets::Net>>,
}

/// A model's parameters in [`Architecture::params`] order.
enum Params {
    F32(Vec<(String, Tensor)>),
    /// Weights q8_0 / q4_0, biases f32, shared with the network's `QMatMul`s.
    Quantized(Vec<(String, Arc<QTensor>)>),
    /// The int8 layers as the file holds them (the network keeps its own packed copy).
    Int8(Vec<Int8Layer>),
}

// === impl Model ===

impl Model {
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let format = ModelFormat::from_path(path)?;
        let bytes = files::read_file(path)?;
        Self::from_bytes(&bytes, format)
    }

    /// Parses, checks and builds a model from file bytes, then runs it once on blank, grey and
    /// white images so that weights which overflow are refused at load, not at serving time.
    pub fn from_bytes(bytes: &[u8], format: ModelFormat) -> Result<Self, ModelError> {
        let model = Self::from_bytes_unchecked(bytes, format)?;
        let n = model.metadata.input_len();
        for value in [0.0f32, 0.5, 1.0] {
            model.classify(&vec![value; n], 1)?;
        }
        Ok(model)
    }

    fn from_bytes_unchecked(bytes: &[u8], format: ModelFormat) -> Result<Self, ModelError> {
        let ModelFile {
            metadata,
            architecture,
            weights,
            ood,
        } = files::parse(bytes, format)?;
        let model = match weights {
            Weights::F32(params) => Self::from_f32(metadata, params)?,
            Weights::Quantized(q) => {
                let q: Vec<(String, Arc<QTensor>)> =
                    q.into_iter().map(|(n, t)| (n, Arc::new(t))).collect();
                let [(_, w1), (_, b1), (_, w2), (_, b2)] = &q[..] else {
                    unreachable!("parse_gguf returns the four parameters of the MLP");
                };
                let dev = Device::Cpu;
                let net = QuantizedMlp::new(
                    w1.clone(),
                    b1.dequantize(&dev)?,
                    w2.clone(),
                    b2.dequantize(&dev)?,
                )?;
                Self {
                    metadata,
                    architecture,
                    net: Box::new(net),
                    params: Params::Quantized(q),
                    ood: None,
                    explainer: Default::default(),
                }
            }
            Weights::Int8(layers) => {
                let [fc1, fc2] = &layers[..] else {
                    unreachable!("the safetensors reader returns the two layers of the MLP");
                };
                fn params(l: &Int8Layer) -> Int8Params<'_> {
                    Int8Params {
                        weights: &l.weights,
                        scales: &l.scales,
                        bias: &l.bias,
                    }
                }
                let net = Int8Mlp::new(params(fc1), params(fc2))?;
                Self {
                    metadata,
                    architecture,
                    net: Box::new(net),
                    params: Params::Int8(layers),
                    ood: None,
                    explainer: Default::default(),
                }
            }
        };
        Ok(Self { ood, ..model })
    }

    /// A model from f32 parameters in [`Architecture::params`] order (checked here).
    pub fn from_f32(
        metadata: ModelMetadata,
        params: Vec<(String, Tensor)>,
    ) -> Result<Self, ModelError> {
        metadata.validate()?;
        let architecture = Architecture::from_id(&metadata.architecture)?;
        let expected = architecture.params();
        for (name, shape) in &expected {
            let t = params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
            if t.dims() != shape.as_slice() {
                return Err(ModelError::TensorShape {
                    name: name.to_string(),
                    expected: shape.clone(),
                    actual: t.dims().to_vec(),
                });
            }
        }
        let map = params.iter().cloned().collect();
        let vb = VarBuilder::from_tensors(map, candle_core::DType::F32, &Device::Cpu);
        let net = nets::build_inference(architecture, vb)?;
        Ok(Self {
            metadata,
            architecture,
            net,
            params: Params::F32(params),
            ood: None,
            explainer: Default::default(),
        })
    }

    /// A freshly initialised (untrained) network with the metadata of a new model: for tests
    /// and benchmarks, where the weights' values do not matter.
    pub fn untrained(architecture: Architecture, seed: u64) -> Result<Self, ModelError> {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let params = architecture
            .params()
            .into_iter()
            .map(|(name, shape)| {
                let values = architecture.init_param(name, &shape, &mut rng);
                Ok((
                    name.to_string(),
                    Tensor::from_vec(values, shape, &Device::Cpu)?,
                ))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Self::from_f32(crate::train::initial_metadata(architecture), params)
    }

    /// Gives the model an input detector (fitted on its training inputs), or takes it away.
    pub fn set_ood(&mut self, ood: Option<Detector>) -> Result<(), ModelError> {
        if let Some(d) = &ood
            && d.dim() != self.metadata.input_len()
        {
            return Err(ModelError::Input(format!(
                "an input detector for {} floats, the model takes {}",
                d.dim(),
                self.metadata.input_len()
            )));
        }
        self.ood = ood;
        Ok(())
    }

    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    /// Sets the metadata (a new temperature or accuracy); the architecture must not change.
    pub fn set_metadata(&mut self, metadata: ModelMetadata) -> Result<(), ModelError> {
        metadata.validate()?;
        if metadata.architecture != self.metadata.architecture {
            return Err(ModelError::InvalidMetadata {
                key: "edgeinfer.architecture".into(),
                detail: format!(
                    "cannot change {} to {}",
                    self.metadata.architecture, metadata.architecture
                ),
            });
        }
        self.metadata = metadata;
        Ok(())
    }

    /// Raw outputs (before softmax and temperature) for `batch` inputs, row-major.
    pub fn logits(&self, inputs: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        let input_len = self.metadata.input_len();
        if batch == 0 {
            return Err(ModelError::Input("batch size is 0".into()));
        }
        if inputs.len() != batch * input_len {
            return Err(ModelError::Input(format!(
                "{} floats for a batch of {batch}, expected {} ({batch} x {input_len})",
                inputs.len(),
                batch * input_len
            )));
        }
        threading::single_threaded(|| {
            let xs = Tensor::from_slice(inputs, (batch, input_len), &Device::Cpu)?;
            let logits = self.net.forward(&xs)?;
            Ok(logits.flatten_all()?.to_vec1::<f32>()?)
        })
    }

    /// Saves to `path`: an f32 or int8 model as `.safetensors`, a q8_0 / q4_0 one as `.gguf`.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let want = ModelFormat::for_quantization(&self.metadata.quantization)?;
        if ModelFormat::from_path(path)? != want {
            return Err(ModelError::Unsupported(format!(
                "{}: a {} model is saved as {}",
                path.display(),
                self.metadata.quantization,
                want.extension()
            )));
        }
        let (m, ood) = (&self.metadata, self.ood.as_ref());
        match &self.params {
            Params::F32(p) => files::save_safetensors(path, m, p, ood),
            Params::Quantized(q) => files::save_gguf(path, m, q, ood),
            Params::Int8(layers) => files::save_int8_safetensors(path, m, layers, ood),
        }
    }

    /// This f32 model quantized to `quantization` (`int8`, `q8_0`, `q4_0`), metadata carried
    /// over (callers re-measure accuracy and temperature). Only the MLP is quantized: its
    /// layers are block-aligned, the CNN's 5x5 kernels are not.
    pub fn quantize(&self, quantization: &str) -> Result<Model, ModelError> {
        if quantization != INT8 {
            nets::ggml_dtype(quantization)?;
        }
        if self.architecture != Architecture::EdgeMlp {
            return Err(ModelError::Unsupported(format!(
                "quantizing {}: only {} ({}) is quantized",
                self.metadata.architecture,
                Architecture::EdgeMlp.model_name(),
                Architecture::EdgeMlp.id()
            )));
        }
        let Params::F32(params) = &self.params else {
            return Err(ModelError::Unsupported(
                "quantizing an already quantized model".into(),
            ));
        };
        let mut metadata = self.metadata.clone();
        metadata.quantization = quantization.to_string();
        // Through the file bytes, so the result is exactly what loading the written file gives.
        if quantization == INT8 {
            let layers = files::quantize_int8(params)?;
            let bytes = files::int8_safetensors_bytes(&metadata, &layers, self.ood.as_ref());
            return Model::from_bytes(&bytes, ModelFormat::Safetensors);
        }
        let q = files::quantize_tensors(&metadata, params)?;
        let q: Vec<_> = q.into_iter().map(|(n, t)| (n, Arc::new(t))).collect();
        let bytes = files::gguf_bytes(&metadata, &q, self.ood.as_ref())?;
        Model::from_bytes(&bytes, ModelFormat::Gguf)
    }
}

impl Model {
    /// The parameters as f32 tensors in [`Architecture::params`] order: as stored for an f32
    /// model, dequantized for a quantized one (int8: weight x its row's scale; q8_0 / q4_0:
    /// candle's dequantization). What fine-tuning starts from.
    pub fn f32_params(&self) -> Result<Vec<(String, Tensor)>, ModelError> {
        let dev = Device::Cpu;
        let by_name: Vec<(String, Tensor)> = match &self.params {
            Params::F32(p) => p.clone(),
            Params::Quantized(q) => q
                .iter()
                .map(|(n, t)| Ok((n.clone(), t.dequantize(&dev)?)))
                .collect::<Result<_, ModelError>>()?,
            Params::Int8(layers) => {
                let mut out = Vec::new();
                for l in layers {
                    let cols = l.shape[1];
                    let w: Vec<f32> = l
                        .weights
                        .iter()
                        .enumerate()
                        .map(|(i, &q)| f32::from(q) * l.scales[i / cols])
                        .collect();
                    out.push((
                        format!("{}.weight", l.name),
                        Tensor::from_vec(w, l.shape.clone(), &dev)?,
                    ));
                    out.push((
                        format!("{}.bias", l.name),
                        Tensor::from_vec(l.bias.clone(), l.bias.len(), &dev)?,
                    ));
                }
                out
            }
        };
        self.architecture
            .params()
            .into_iter()
            .map(|(name, shape)| {
                let t = by_name
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t)
                    .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
                let t = t.reshape(shape.as_slice())?;
                Ok((name.to_string(), t))
            })
            .collect()
    }
}

/// The quantization name of the int8 path.
const INT8: &str = "int8";

impl Classifier for Model {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn classify(&self, inputs: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        let mut out = self.logits(inputs, batch)?;
        let n = self.metadata.labels.len();
        for (i, row) in out.chunks_mut(n).enumerate() {
            softmax_in_place(row, self.metadata.temperature);
            // Inputs are not range-checked (the servers do that), but whatever they are, an
            // answer of NaNs must be an error, not a response.
            if row.iter().any(|p| !p.is_finite()) {
                return Err(ModelError::NonFiniteOutput(format!("row {i} of {batch}")));
            }
        }
        Ok(out)
    }

    fn ood(&self) -> Option<&Detector> {
        self.ood.as_ref()
    }

    fn explain(&self, input: &[f32], class: usize) -> Result<Vec<f32>, ModelError> {
        let n = self.metadata.input_len();
        if input.len() != n {
            return Err(ModelError::Input(format!(
                "{} floats to explain, the model takes {n}",
                input.len()
            )));
        }
        if class >= self.metadata.labels.len() {
            return Err(ModelError::Input(format!(
                "label {class} to explain, the model has {}",
                self.metadata.labels.len()
            )));
        }
        let net = match self.explainer.get() {
            Some(net) => net,
            None => {
                let map = self.f32_params()?.into_iter().collect();
                let vb = VarBuilder::from_tensors(map, candle_core::DType::F32, &Device::Cpu);
                let built = nets::build(self.architecture, vb)?;
                // Another thread may have built it meanwhile; either is the same network.
                let _ = self.explainer.set(built);
                self.explainer.get().expect("set just now")
            }
        };
        threading::single_threaded(|| {
            let x = candle_core::Var::from_slice(input, (1, n), &Device::Cpu)?;
            let logit = net.forward_t(x.as_tensor(), None)?.get(0)?.get(class)?;
            let grads = logit.backward()?;
            let gradient = grads
                .get(x.as_tensor())
                .ok_or_else(|| ModelError::Unsupported("no gradient for the input".into()))?;
            let attribution = (gradient * x.as_tensor())?
                .flatten_all()?
                .to_vec1::<f32>()?;
            if attribution.iter().any(|v| !v.is_finite()) {
                return Err(ModelError::NonFiniteOutput("the explanation".into()));
            }
            Ok(attribution)
        })
    }
}

/// `softmax(row / temperature)`, numerically stable, in place.
pub fn softmax_in_place(row: &mut [f32], temperature: f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = ((*v - max) / temperature).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(batch: usize) -> Vec<f32> {
        (0..batch * 784)
            .map(|i| ((i * 7919) % 256) as f32 / 255.0)
            .collect()
    }

    /// Any batch size gives, row for row, what batch 1 gives (up to summation order), for
    /// every kind of model, and bad shapes are input errors.
    #[test]
    fn every_batch_size_agrees_with_batch_one() {
        let mlp = Model::untrained(Architecture::EdgeMlp, 1).unwrap();
        let models = [
            mlp.quantize("int8").unwrap(),
            mlp.quantize("q8_0").unwrap(),
            mlp.quantize("q4_0").unwrap(),
            mlp,
            Model::untrained(Architecture::CloudCnn, 1).unwrap(),
        ];
        for model in &models {
            let x = inputs(70);
            let rows: Vec<f32> = x
                .chunks(784)
                .flat_map(|img| model.classify(img, 1).unwrap())
                .collect();
            for batch in [1, 2, 3, 31, 64, 70] {
                let got = model.classify(&x[..batch * 784], batch).unwrap();
                assert_eq!(got.len(), batch * 10);
                for (a, b) in got.iter().zip(&rows) {
                    assert!(
                        (a - b).abs() < 1e-4,
                        "{}: batch {batch}",
                        model.metadata().quantization
                    );
                }
            }
            for row in rows.chunks(10) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            }
            assert!(matches!(
                model.classify(&x[..784], 0),
                Err(ModelError::Input(_))
            ));
            assert!(matches!(
                model.classify(&x[..783], 1),
                Err(ModelError::Input(_))
            ));
            assert!(matches!(
                model.classify(&x[..784], 2),
                Err(ModelError::Input(_))
            ));
        }
    }

    #[test]
    fn concurrent_callers_get_their_own_answers() {
        let model: Arc<dyn Classifier> = Arc::new(
            Model::untrained(Architecture::EdgeMlp, 2)
                .unwrap()
                .quantize("q8_0")
                .unwrap(),
        );
        let want: Vec<Vec<f32>> = (1..=4)
            .map(|b| model.classify(&inputs(b), b).unwrap())
            .collect();
        std::thread::scope(|s| {
            for (i, want) in want.iter().enumerate() {
                let model = model.clone();
                s.spawn(move || {
                    for _ in 0..200 {
                        assert_eq!(&model.classify(&inputs(i + 1), i + 1).unwrap(), want);
                    }
                });
            }
        });
    }

    /// Each attribution is the logit's slope along that input (a central difference on the
    /// f32 network the explanation is computed on) times the input, for every kind of model;
    /// bad requests are errors.
    #[test]
    fn explanations_are_gradient_times_input() {
        let mlp = Model::untrained(Architecture::EdgeMlp, 3).unwrap();
        let models = [
            mlp.quantize("int8").unwrap(),
            mlp.quantize("q8_0").unwrap(),
            mlp,
            Model::untrained(Architecture::CloudCnn, 3).unwrap(),
        ];
        let x = inputs(1);
        for model in &models {
            let class = 4;
            let e = model.explain(&x, class).unwrap();
            assert_eq!(e.len(), 784);
            // The f32 network the explanation comes from.
            let f32_model = Model::from_f32(
                crate::train::initial_metadata(model.architecture()),
                model.f32_params().unwrap(),
            )
            .unwrap();
            let logit = |v: &[f32]| f32_model.logits(v, 1).unwrap()[class];
            for i in [100usize, 300, 405, 600] {
                if x[i] == 0.0 {
                    assert_eq!(e[i], 0.0);
                    continue;
                }
                let h = 1e-3;
                let (mut up, mut down) = (x.clone(), x.clone());
                up[i] += h;
                down[i] -= h;
                let slope = (logit(&up) - logit(&down)) / (2.0 * h);
                assert!(
                    (e[i] - slope * x[i]).abs() < 1e-2 + 0.05 * (slope * x[i]).abs(),
                    "{}: input {i}: {} against {}",
                    model.metadata().quantization,
                    e[i],
                    slope * x[i]
                );
            }
            assert!(matches!(
                model.explain(&x[..10], 0),
                Err(ModelError::Input(_))
            ));
            assert!(matches!(model.explain(&x, 10), Err(ModelError::Input(_))));
        }
    }

    #[test]
    fn softmax_with_temperature() {
        let mut a = [1.0f32, 2.0, 3.0];
        softmax_in_place(&mut a, 1.0);
        assert!((a.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let mut b = [1.0f32, 2.0, 3.0];
        softmax_in_place(&mut b, 2.0);
        assert!(b[2] < a[2], "a higher temperature flattens");
        let mut c = [1000.0f32, 0.0];
        softmax_in_place(&mut c, 1.0);
        assert!(c[0].is_finite() && c[0] > 0.999);
    }
}
