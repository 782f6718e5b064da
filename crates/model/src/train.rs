//! Training with candle-nn: Adam on cross-entropy, seeded end to end.
//!
//! Everything random comes from one seed, through separate ChaCha streams for weight
//! initialisation, shuffling and dropout, so that the same seed gives the same file: candle's
//! own CPU RNG cannot be seeded, and is never used here.
//!
//! Progress goes to a [`TrainObserver`]; this crate never writes to the terminal.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::mnist::Dataset;
use crate::nets::{self, Architecture, IMAGE_LEN};
use crate::{Model, ModelError, ModelMetadata};
use crate::{calibrate, ood};

/// ChaCha stream numbers: one per use of randomness, so changing one does not shift another.
const STREAM_INIT: u64 = 0;
const STREAM_SHUFFLE: u64 = 1;
const STREAM_DROPOUT: u64 = 2;

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub architecture: Architecture,
    pub epochs: usize,
    pub seed: u64,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Train on only the first `limit` training images (quick runs, CI).
    pub limit: Option<usize>,
}

// === impl TrainConfig ===

impl TrainConfig {
    /// The defaults of each model: the source material's recipe for the MLP (Adam 1e-3, 5
    /// epochs, Keras' batch of 32); for the CNN, 4 epochs of batch 64, which reach 0.99.
    pub fn new(architecture: Architecture) -> Self {
        let (epochs, batch_size) = match architecture {
            Architecture::EdgeMlp => (5, 32),
            Architecture::CloudCnn => (4, 64),
        };
        Self {
            architecture,
            epochs,
            seed: 1,
            batch_size,
            learning_rate: 1e-3,
            limit: None,
        }
    }
}

/// What one epoch achieved.
#[derive(Clone, Debug)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    pub epochs: usize,
    /// Mean training loss over the epoch's batches.
    pub loss: f64,
    pub val_accuracy: f64,
    pub seconds: f64,
}

/// Receives training progress (the CLI draws it; tests ignore it).
pub trait TrainObserver {
    /// An epoch of `batches` batches begins.
    fn epoch_start(&mut self, _epoch: usize, _batches: usize) {}
    /// One more batch is done; `loss` is its loss.
    fn batch_done(&mut self, _loss: f32) {}
    fn epoch_end(&mut self, _report: &EpochReport) {}
}

/// An observer that ignores everything.
pub struct Quiet;

impl TrainObserver for Quiet {}

/// Trains a network of `cfg.architecture` on `train` (the training split, without validation
/// images), reporting validation accuracy on `validation` after each epoch, and fits the input
/// detector ([`crate::ood`]) on the same training images, its threshold on `validation`. The
/// result's metadata has temperature 1 and test accuracy 0 until [`crate::eval::calibrate`]
/// measures them.
pub fn train(
    cfg: &TrainConfig,
    train: &Dataset,
    validation: &Dataset,
    observer: &mut dyn TrainObserver,
) -> Result<Model, ModelError> {
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(ModelError::Input(
            "epochs and batch size must be at least 1".into(),
        ));
    }
    if train.image_len() != IMAGE_LEN || validation.image_len() != IMAGE_LEN {
        return Err(ModelError::Input(format!(
            "the networks take 28x28 images, got {}x{}",
            train.rows, train.cols
        )));
    }
    let n = cfg.limit.unwrap_or(train.len()).min(train.len());
    if n == 0 {
        return Err(ModelError::Input("no training images".into()));
    }
    let dev = Device::Cpu;
    let arch = cfg.architecture;

    let mut varmap = VarMap::new();
    let net = nets::build(arch, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let mut init_rng = stream(cfg.seed, STREAM_INIT);
    for (name, shape) in arch.params() {
        let values = arch.init_param(name, &shape, &mut init_rng);
        varmap.set_one(name, Tensor::from_vec(values, shape, &dev)?)?;
    }
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;

    let pixels = train.pixels_f32(0..n);
    let xs = Tensor::from_slice(&pixels, (n, IMAGE_LEN), &dev)?;
    let ys = Tensor::from_vec(
        train.labels[..n]
            .iter()
            .map(|&l| u32::from(l))
            .collect::<Vec<_>>(),
        n,
        &dev,
    )?;
    let mut shuffle_rng = stream(cfg.seed, STREAM_SHUFFLE);
    let mut dropout_rng = stream(cfg.seed, STREAM_DROPOUT);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let batches = n.div_ceil(cfg.batch_size);

    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        order.shuffle(&mut shuffle_rng);
        observer.epoch_start(epoch, batches);
        let mut loss_sum = 0.0;
        for chunk in order.chunks(cfg.batch_size) {
            let idx = Tensor::from_slice(chunk, chunk.len(), &dev)?;
            let logits = net.forward_t(&xs.index_select(&idx, 0)?, Some(&mut dropout_rng))?;
            let loss = candle_nn::loss::cross_entropy(&logits, &ys.index_select(&idx, 0)?)?;
            opt.backward_step(&loss)?;
            let loss = loss.to_scalar::<f32>()?;
            loss_sum += f64::from(loss);
            observer.batch_done(loss);
        }
        let val_logits = logits_of(net.as_ref(), validation)?;
        observer.epoch_end(&EpochReport {
            epoch,
            epochs: cfg.epochs,
            loss: loss_sum / batches as f64,
            val_accuracy: calibrate::accuracy(&val_logits, &validation.labels, arch.num_classes()),
            seconds: start.elapsed().as_secs_f64(),
        });
    }

    let data = varmap.data().lock().expect("no training thread panicked");
    let params = arch
        .params()
        .into_iter()
        .map(|(name, _)| {
            let var = data
                .get(name)
                .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
            Ok((name.to_string(), var.as_tensor().detach()))
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    let mut model = Model::from_f32(initial_metadata(arch), params)?;
    model.set_ood(Some(ood::Detector::fit(
        &pixels,
        IMAGE_LEN,
        &validation.pixels_f32(0..validation.len()),
        ood::DEFAULT_COMPONENTS,
        ood::DEFAULT_QUANTILE,
    )?))?;
    Ok(model)
}

/// Metadata of a freshly trained model, before calibration and scoring.
pub fn initial_metadata(arch: Architecture) -> ModelMetadata {
    ModelMetadata {
        name: arch.model_name().to_string(),
        version: "1".to_string(),
        task: "mnist".to_string(),
        architecture: arch.id().to_string(),
        input_shape: arch.input_shape(),
        labels: (0..arch.num_classes()).map(|d| d.to_string()).collect(),
        temperature: 1.0,
        test_accuracy: 0.0,
        quantization: "f32".to_string(),
    }
}

/// Logits of a whole dataset through `net` in inference mode (multithreaded: training is a
/// batch job and gets the whole machine).
fn logits_of(net: &dyn nets::Net, data: &Dataset) -> Result<Vec<f32>, ModelError> {
    const CHUNK: usize = 1_000;
    let mut out = Vec::with_capacity(data.len() * 10);
    for start in (0..data.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(data.len());
        let xs = Tensor::from_vec(
            data.pixels_f32(start..end),
            (end - start, IMAGE_LEN),
            &Device::Cpu,
        )?;
        out.extend(net.forward_t(&xs, None)?.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Classifier, eval, mnist};

    /// MNIST from the repository's `data/mnist`. The files ship with the repository, so a
    /// missing file fails the test instead of letting it pass without training anything.
    fn mnist_or_skip() -> Option<(Dataset, Dataset)> {
        let dir = mnist::default_data_dir();
        let load = |r: Result<Dataset, mnist::MnistError>| {
            r.unwrap_or_else(|e| panic!("the MNIST files ship in {}: {e}", dir.display()))
        };
        Some((load(mnist::load_train(&dir)), load(mnist::load_test(&dir))))
    }

    #[test]
    fn one_short_epoch_learns_and_the_file_round_trips() {
        let Some((train_all, test)) = mnist_or_skip() else {
            return;
        };
        let (train_set, validation) = train_all.split_validation();
        let mut cfg = TrainConfig::new(Architecture::EdgeMlp);
        cfg.epochs = 1;
        cfg.limit = Some(12_000);
        let mut model = train(&cfg, &train_set, &validation, &mut Quiet).unwrap();
        let e = eval::calibrate(&mut model, &validation, &test).unwrap();
        assert!(e.accuracy > 0.9, "accuracy {}", e.accuracy);
        assert!(e.ece < 0.03, "ece {}", e.ece);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        model.save(&path).unwrap();
        let loaded = crate::load_classifier(&path).unwrap();
        assert_eq!(loaded.metadata(), model.metadata());
        assert_eq!(loaded.metadata().test_accuracy, e.accuracy);
    }

    #[test]
    fn the_same_seed_gives_the_same_weights_and_another_seed_does_not() {
        let Some((train_all, _)) = mnist_or_skip() else {
            return;
        };
        let (train_set, validation) = train_all.split_validation();
        let validation = validation.slice(0..500);
        let run = |seed| {
            let mut cfg = TrainConfig::new(Architecture::EdgeMlp);
            cfg.epochs = 1;
            cfg.limit = Some(640);
            cfg.seed = seed;
            let m = train(&cfg, &train_set, &validation, &mut Quiet).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m.safetensors");
            m.save(&path).unwrap();
            std::fs::read(path).unwrap()
        };
        let a = run(5);
        assert_eq!(a, run(5));
        assert_ne!(a, run(6));
    }
}
