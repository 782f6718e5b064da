//! Training with candle-nn: Adam on cross-entropy, seeded end to end; optionally distilled from
//! a teacher's soft targets ([`Distill`]) and started from an existing model's weights
//! (fine-tuning, [`Guidance::init`]), on a data set that may mix hard examples into a sample of
//! the original one ([`mix`]).
//!
//! Two options make a stronger model of the same architecture: random distortions of the
//! training images ([`TrainConfig::augment`]: translation, rotation, scaling, elastic
//! deformation, [`crate::augment`]) and a cosine learning-rate decay ([`Schedule::Cosine`]);
//! both are off by default.
//!
//! Everything random comes from one seed, through separate ChaCha streams for weight
//! initialisation, shuffling, dropout and augmentation, so that the same seed gives the same
//! file: candle's own CPU RNG cannot be seeded, and is never used here. The same file on CPUs
//! with the same L1 data cache, that is: candle's f32 matmul (the `gemm` crate) sizes its
//! blocks along the summed dimension from the L1d it reads at run time, so another cache
//! geometry adds the same products in another order (models/MODELS.md, models/reproduce.sh).
//!
//! Progress goes to a [`TrainObserver`]; this crate never writes to the terminal.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::augment::Distortion;
use crate::mnist::Dataset;
use crate::nets::{self, Architecture, IMAGE_LEN};
use crate::{Classifier, Model, ModelError, ModelMetadata};
use crate::{calibrate, ood};

/// ChaCha stream numbers: one per use of randomness, so changing one does not shift another.
const STREAM_INIT: u64 = 0;
const STREAM_SHUFFLE: u64 = 1;
const STREAM_DROPOUT: u64 = 2;
const STREAM_MIX: u64 = 3;
const STREAM_AUGMENT: u64 = 4;

/// The default distillation temperature: soft enough that the teacher's second choices carry
/// weight, the usual choice for MNIST (Hinton et al. 2015 used up to 20).
pub const DEFAULT_DISTILL_TEMPERATURE: f32 = 4.0;
/// The default weight of the teacher's soft targets against the labels.
pub const DEFAULT_DISTILL_ALPHA: f32 = 0.7;

/// Knowledge distillation: the loss is `alpha * T^2 * KL(softmax(teacher / T) ||
/// softmax(student / T)) + (1 - alpha) * CE(labels)`. `T^2` keeps the soft term's gradients
/// at the scale of the hard one's whatever the temperature.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Distill {
    /// `T`, above 0.
    pub temperature: f32,
    /// Weight of the soft targets, in [0, 1].
    pub alpha: f32,
}

impl Default for Distill {
    fn default() -> Self {
        Self {
            temperature: DEFAULT_DISTILL_TEMPERATURE,
            alpha: DEFAULT_DISTILL_ALPHA,
        }
    }
}

/// What guides training besides its configuration: where the weights start, and a teacher.
/// The default (neither) is plain training from a seeded initialisation.
#[derive(Default)]
pub struct Guidance<'a> {
    /// Start from this model's weights (dequantized when it is quantized) instead of a fresh
    /// initialisation: fine-tuning. It must be of the architecture being trained.
    pub init: Option<&'a Model>,
    /// Distil from this model's logits, computed once for the training set before the first
    /// epoch. Any architecture taking the same input and labels.
    pub teacher: Option<(&'a Model, Distill)>,
}

/// How the learning rate moves over the optimizer's steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Schedule {
    /// [`TrainConfig::learning_rate`] throughout (the source material's recipe).
    #[default]
    Constant,
    /// From [`TrainConfig::learning_rate`] down to 0 along half a cosine over all the steps:
    /// large steps early, fine ones at the end.
    Cosine,
}

// === impl Schedule ===

impl Schedule {
    /// The rate for step `step` (0-based) of `steps`.
    pub fn rate(self, base: f64, step: usize, steps: usize) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Cosine => {
                let progress = step as f64 / steps.max(1) as f64;
                base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub architecture: Architecture,
    pub epochs: usize,
    pub seed: u64,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub schedule: Schedule,
    /// Each time an image enters a batch it is distorted anew by these random draws (the
    /// default: images as they are). With a teacher, the teacher labels the distorted image.
    pub augment: Distortion,
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
            schedule: Schedule::Constant,
            augment: Distortion::default(),
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
/// detector ([`crate::ood`]) on the same training images, its threshold on them and `validation`. The
/// result's metadata has temperature 1 and test accuracy 0 until [`crate::eval::calibrate`]
/// measures them.
pub fn train(
    cfg: &TrainConfig,
    train: &Dataset,
    validation: &Dataset,
    observer: &mut dyn TrainObserver,
) -> Result<Model, ModelError> {
    train_guided(cfg, &Guidance::default(), train, validation, observer)
}

/// [`train`] with a starting point and a teacher ([`Guidance`]). With neither, the same as
/// [`train`], byte for byte.
pub fn train_guided(
    cfg: &TrainConfig,
    guidance: &Guidance<'_>,
    train: &Dataset,
    validation: &Dataset,
    observer: &mut dyn TrainObserver,
) -> Result<Model, ModelError> {
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(ModelError::Input(
            "epochs and batch size must be at least 1".into(),
        ));
    }
    cfg.augment.check()?;
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
    match guidance.init {
        None => {
            let mut init_rng = stream(cfg.seed, STREAM_INIT);
            for (name, shape) in arch.params() {
                let values = arch.init_param(name, &shape, &mut init_rng);
                varmap.set_one(name, Tensor::from_vec(values, shape, &dev)?)?;
            }
        }
        Some(init) => {
            if init.architecture() != arch {
                return Err(ModelError::Input(format!(
                    "the starting model is {} ({}), not the {} being trained",
                    init.metadata().name,
                    init.architecture().id(),
                    arch.id()
                )));
            }
            for (name, tensor) in init.f32_params()? {
                varmap.set_one(&name, tensor.detach())?;
            }
        }
    }
    let soft = match guidance.teacher {
        None => None,
        Some((teacher, distill)) => Some(SoftTargets::new(
            teacher,
            distill,
            // Distorted images are new inputs each time: the teacher labels them as they come.
            cfg.augment.is_none().then_some(train),
            n,
            arch,
        )?),
    };
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
    let mut augment_rng = stream(cfg.seed, STREAM_AUGMENT);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let batches = n.div_ceil(cfg.batch_size);
    let steps = batches * cfg.epochs;

    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        order.shuffle(&mut shuffle_rng);
        observer.epoch_start(epoch, batches);
        let mut loss_sum = 0.0;
        for (i, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let step = (epoch - 1) * batches + i;
            opt.set_learning_rate(cfg.schedule.rate(cfg.learning_rate, step, steps));
            let idx = Tensor::from_slice(chunk, chunk.len(), &dev)?;
            let (batch, distorted) = if cfg.augment.is_none() {
                (xs.index_select(&idx, 0)?, None)
            } else {
                let distorted = cfg.augment.apply(&pixels, chunk, &mut augment_rng);
                let batch = Tensor::from_slice(&distorted, (chunk.len(), IMAGE_LEN), &dev)?;
                (batch, Some(distorted))
            };
            let logits = net.forward_t(&batch, Some(&mut dropout_rng))?;
            let hard = candle_nn::loss::cross_entropy(&logits, &ys.index_select(&idx, 0)?)?;
            let loss = match &soft {
                None => hard,
                Some(soft) => soft.loss(&logits, &idx, distorted.as_deref(), hard)?,
            };
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

/// A teacher's soft targets: computed once for the training set when its images are used as
/// they are, or batch by batch for distorted images.
struct SoftTargets<'a> {
    teacher: &'a Model,
    /// `softmax(teacher / T)` and `log_softmax(teacher / T)` of every training image, `(n,
    /// classes)` each, when computed once.
    fixed: Option<(Tensor, Tensor)>,
    distill: Distill,
    classes: usize,
}

impl<'a> SoftTargets<'a> {
    /// Checks the teacher and `distill`; with `fixed_set`, computes the targets of its first
    /// `n` images now.
    fn new(
        teacher: &'a Model,
        distill: Distill,
        fixed_set: Option<&Dataset>,
        n: usize,
        arch: Architecture,
    ) -> Result<Self, ModelError> {
        let Distill { temperature, alpha } = distill;
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(ModelError::Input(format!(
                "distillation temperature {temperature} is not above 0"
            )));
        }
        if !(0.0..=1.0).contains(&alpha) {
            return Err(ModelError::Input(format!(
                "distillation alpha {alpha} is outside [0, 1]"
            )));
        }
        let k = arch.num_classes();
        let m = teacher.metadata();
        if m.input_len() != IMAGE_LEN || m.labels.len() != k {
            return Err(ModelError::Input(format!(
                "the teacher {} takes {} inputs and has {} labels; the student takes {IMAGE_LEN} \
                 and has {k}",
                m.name,
                m.input_len(),
                m.labels.len()
            )));
        }
        let mut targets = Self {
            teacher,
            fixed: None,
            distill,
            classes: k,
        };
        if let Some(train) = fixed_set {
            const CHUNK: usize = 500;
            let mut parts = (Vec::new(), Vec::new());
            for start in (0..n).step_by(CHUNK) {
                let end = (start + CHUNK).min(n);
                let (p, log_p) = targets.of(&train.pixels_f32(start..end))?;
                parts.0.push(p);
                parts.1.push(log_p);
            }
            targets.fixed = Some((Tensor::cat(&parts.0, 0)?, Tensor::cat(&parts.1, 0)?));
        }
        Ok(targets)
    }

    /// The teacher's `(softmax, log_softmax)` of `logits / T` for `pixels`, rows of
    /// [`IMAGE_LEN`].
    fn of(&self, pixels: &[f32]) -> Result<(Tensor, Tensor), ModelError> {
        let rows = pixels.len() / IMAGE_LEN;
        let z = self.teacher.logits(pixels, rows)?;
        let mut log_probs = Vec::with_capacity(z.len());
        for row in z.chunks(self.classes) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let scaled: Vec<f32> = row
                .iter()
                .map(|&v| (v - max) / self.distill.temperature)
                .collect();
            let lse = scaled.iter().map(|&v| v.exp()).sum::<f32>().ln();
            log_probs.extend(scaled.iter().map(|&v| v - lse));
        }
        if log_probs.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::NonFiniteOutput(format!(
                "the teacher {}'s logits on the training set",
                self.teacher.metadata().name
            )));
        }
        let probs: Vec<f32> = log_probs.iter().map(|v| v.exp()).collect();
        let dev = Device::Cpu;
        Ok((
            Tensor::from_vec(probs, (rows, self.classes), &dev)?,
            Tensor::from_vec(log_probs, (rows, self.classes), &dev)?,
        ))
    }

    /// The distillation loss of a batch with `logits`, from its cross-entropy on the labels,
    /// `hard`. The batch is rows `idx` of the training set: with targets computed once, they
    /// are looked up; otherwise the teacher labels `pixels`, those rows as the batch holds them
    /// (distorted).
    fn loss(
        &self,
        logits: &Tensor,
        idx: &Tensor,
        pixels: Option<&[f32]>,
        hard: Tensor,
    ) -> Result<Tensor, ModelError> {
        let Distill { temperature, alpha } = self.distill;
        let t = f64::from(temperature);
        let batch = logits.dim(0)? as f64;
        let log_student = candle_nn::ops::log_softmax(&(logits / t)?, candle_core::D::Minus1)?;
        let (p, log_p) = match (&self.fixed, pixels) {
            (Some((probs, log_probs)), _) => {
                (probs.index_select(idx, 0)?, log_probs.index_select(idx, 0)?)
            }
            (None, Some(pixels)) => self.of(pixels)?,
            (None, None) => {
                return Err(ModelError::Input(
                    "distillation without fixed targets needs the batch's pixels".into(),
                ));
            }
        };
        let kl = ((p * (log_p - log_student)?)?.sum_all()? / batch)?;
        let a = f64::from(alpha);
        Ok(((kl * (a * t * t))? + (hard * (1.0 - a))?)?)
    }
}

/// A fine-tuning set: every image of `hard` and `original_count` images of `original` drawn
/// without replacement by `seed` (all of them when it holds fewer), so that the model learns
/// the new inputs without forgetting the old. Hard examples first; training shuffles anyway.
pub fn mix(
    hard: &Dataset,
    original: &Dataset,
    original_count: usize,
    seed: u64,
) -> Result<Dataset, ModelError> {
    if (hard.rows, hard.cols) != (original.rows, original.cols) {
        return Err(ModelError::Input(format!(
            "the hard examples are {}x{} images, the original data {}x{}",
            hard.rows, hard.cols, original.rows, original.cols
        )));
    }
    let mut order: Vec<usize> = (0..original.len()).collect();
    order.shuffle(&mut stream(seed, STREAM_MIX));
    order.truncate(original_count);
    let mut out = hard.clone();
    for i in order {
        out.images.extend_from_slice(original.image(i));
        out.labels.push(original.labels[i]);
    }
    Ok(out)
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

    fn shipped(file: &str) -> Model {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models")
            .join(file);
        Model::load(&path).unwrap_or_else(|e| panic!("{file} ships in models/: {e}"))
    }

    fn file_bytes(m: &Model) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        m.save(&path).unwrap();
        std::fs::read(path).unwrap()
    }

    /// The training split, 500 validation images and 2,000 test images.
    fn small_splits() -> (Dataset, Dataset, Dataset) {
        let (train_all, test) = mnist_or_skip().expect("MNIST ships");
        let (train_set, validation) = train_all.split_validation();
        (train_set, validation.slice(0..500), test.slice(0..2000))
    }

    /// One epoch on the first `limit` images of `train_set`, guided by `init` and `teacher`.
    fn guided(
        init: Option<&Model>,
        teacher: Option<(&Model, f32, f32)>,
        limit: usize,
        sets: (&Dataset, &Dataset),
    ) -> Result<Model, ModelError> {
        guided_with(|_| {}, init, teacher, limit, sets)
    }

    /// [`guided`] with more of the configuration set by `configure`.
    fn guided_with(
        configure: impl FnOnce(&mut TrainConfig),
        init: Option<&Model>,
        teacher: Option<(&Model, f32, f32)>,
        limit: usize,
        (train_set, validation): (&Dataset, &Dataset),
    ) -> Result<Model, ModelError> {
        let mut cfg = TrainConfig::new(Architecture::EdgeMlp);
        cfg.epochs = 1;
        cfg.limit = Some(limit);
        configure(&mut cfg);
        let guidance = Guidance {
            init,
            teacher: teacher.map(|(t, temperature, alpha)| (t, Distill { temperature, alpha })),
        };
        train_guided(&cfg, &guidance, train_set, validation, &mut Quiet)
    }

    #[test]
    fn the_teachers_soft_targets_alone_teach_and_are_deterministic() {
        let (mut train_set, validation, test) = small_splits();
        let teacher = shipped("cloud-cnn.safetensors");
        let n = 3_000;
        // Every label wrong (all zero): with alpha = 1 only the teacher can teach.
        train_set.labels[..n].fill(0);
        let sets = (&train_set, &validation);
        let student = guided(None, Some((&teacher, 4.0, 1.0)), n, sets).unwrap();
        let e = eval::evaluate(&student, &test).unwrap();
        assert!(
            e.accuracy > 0.7,
            "accuracy {} from soft targets",
            e.accuracy
        );
        let again = guided(None, Some((&teacher, 4.0, 1.0)), n, sets).unwrap();
        assert_eq!(file_bytes(&student), file_bytes(&again));
        // The labels alone (alpha = 0) teach only zeros.
        let m = guided(None, Some((&teacher, 4.0, 0.0)), n, sets).unwrap();
        let e = eval::evaluate(&m, &test).unwrap();
        assert!(
            e.accuracy < 0.2,
            "accuracy {} from wrong labels",
            e.accuracy
        );
        // Bad settings are refused, naming the setting.
        for (t, a, what) in [(0.0, 0.5, "temperature"), (4.0, 1.5, "alpha")] {
            let e = guided(None, Some((&teacher, t, a)), n, sets)
                .err()
                .expect("refused");
            assert!(e.to_string().contains(what), "{e}");
        }
    }

    #[test]
    fn fine_tuning_starts_from_the_given_model_even_a_quantized_one() {
        let (train_set, validation, test) = small_splits();
        let sets = (&train_set, &validation);
        let init = shipped("edge-mlp-int8.safetensors");
        // The dequantized weights compute what the int8 model does, up to rounding.
        let f32_model =
            Model::from_f32(init.metadata().clone(), init.f32_params().unwrap()).unwrap();
        let (a, b) = (
            eval::evaluate(&init, &test).unwrap().accuracy,
            eval::evaluate(&f32_model, &test).unwrap().accuracy,
        );
        assert!((a - b).abs() < 0.005, "int8 {a}, dequantized {b}");
        let tuned = guided(Some(&init), None, 64, sets).unwrap();
        let scratch = guided(None, None, 64, sets).unwrap();
        let tuned_acc = eval::evaluate(&tuned, &test).unwrap().accuracy;
        let scratch_acc = eval::evaluate(&scratch, &test).unwrap().accuracy;
        assert!(tuned_acc > 0.95, "fine-tuned {tuned_acc}");
        assert!(
            scratch_acc < 0.85,
            "from scratch on 64 images {scratch_acc}"
        );
        // Another architecture is refused.
        let cnn = shipped("cloud-cnn.safetensors");
        let e = guided(Some(&cnn), None, 64, sets).err().expect("refused");
        assert!(e.to_string().contains("not the mlp-800-128-10"), "{e}");
    }

    #[test]
    fn a_mix_holds_every_hard_example_and_a_seeded_sample() {
        let img = |v: u8| Dataset {
            images: vec![v; 4],
            labels: vec![v % 10],
            rows: 2,
            cols: 2,
        };
        let mut original = img(0);
        for v in 1..50 {
            let d = img(v);
            original.images.extend(d.images);
            original.labels.extend(d.labels);
        }
        let hard = img(200);
        let m = mix(&hard, &original, 10, 3).unwrap();
        assert_eq!(m.len(), 11);
        assert_eq!(m.image(0), hard.image(0));
        assert_eq!(m, mix(&hard, &original, 10, 3).unwrap());
        assert_ne!(m, mix(&hard, &original, 10, 4).unwrap());
        assert_eq!(mix(&hard, &original, 1000, 3).unwrap().len(), 51);
        let other = Dataset {
            images: vec![0; 9],
            labels: vec![0],
            rows: 3,
            cols: 3,
        };
        assert!(mix(&other, &original, 1, 1).is_err());
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

    #[test]
    fn the_cosine_schedule_falls_from_the_rate_to_zero_and_constant_stays() {
        let steps = 1000;
        let rates: Vec<f64> = (0..steps)
            .map(|i| Schedule::Cosine.rate(0.01, i, steps))
            .collect();
        assert_eq!(rates[0], 0.01);
        assert!((rates[500] - 0.005).abs() < 1e-12);
        assert!(rates.windows(2).all(|w| w[1] < w[0]));
        assert!(rates[steps - 1] > 0.0 && rates[steps - 1] < 1e-6);
        assert_eq!(Schedule::Constant.rate(0.01, 999, steps), 0.01);
    }

    #[test]
    fn augmented_distillation_labels_moved_images_by_the_teacher_and_is_deterministic() {
        let (mut train_set, validation, test) = small_splits();
        let teacher = shipped("cloud-cnn.safetensors");
        let n = 3_000;
        train_set.labels[..n].fill(0);
        let run = |shift| {
            let configure = |cfg: &mut TrainConfig| {
                cfg.augment = Distortion::shift(shift);
                cfg.schedule = Schedule::Cosine;
            };
            let teacher = Some((&teacher, 4.0, 1.0));
            guided_with(configure, None, teacher, n, (&train_set, &validation))
        };
        // Only the teacher can teach (every label is 0): it must have seen the moved images.
        let student = run(2).unwrap();
        let e = eval::evaluate(&student, &test).unwrap();
        assert!(
            e.accuracy > 0.7,
            "accuracy {} from soft targets",
            e.accuracy
        );
        assert_eq!(file_bytes(&student), file_bytes(&run(2).unwrap()));
        assert_ne!(file_bytes(&student), file_bytes(&run(0).unwrap()));
        let e = run(crate::augment::MAX_SHIFT + 1).err().expect("refused");
        assert!(e.to_string().contains("out of its frame"), "{e}");
    }
}
