//! `edgeinfer train`, `quantize` and `eval`: the model lifecycle from the command line.
//!
//! Thin over `edgeinfer_model`: these functions parse nothing themselves (clap does), load the
//! MNIST files, call the library, draw progress on stderr and print results on stdout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use edgeinfer_model::augment::Distortion;
use edgeinfer_model::eval::{self, Evaluation, Latency};
use edgeinfer_model::mnist::{self, Dataset};
use edgeinfer_model::train::{self, Distill, EpochReport, Guidance, TrainConfig, TrainObserver};
use edgeinfer_model::{Architecture, Classifier, Model, ModelFormat, ModelMetadata};
use indicatif::{ProgressBar, ProgressStyle};

/// The models `train` knows.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ModelKind {
    /// The edge's MLP: Dense 128 ReLU, Dropout 0.2, Dense 10 (input padded 784 -> 800).
    EdgeMlp,
    /// The cloud's CNN: two 5x5 convolutions (32, 64), max-pooling, Dense 128, Dense 10.
    CloudCnn,
}

impl From<ModelKind> for Architecture {
    fn from(k: ModelKind) -> Self {
        match k {
            ModelKind::EdgeMlp => Architecture::EdgeMlp,
            ModelKind::CloudCnn => Architecture::CloudCnn,
        }
    }
}

/// Quantization targets of `quantize`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum QuantDtype {
    /// 8-bit weights with an f32 scale per row, run by edgeinfer's own int8 kernels (.safetensors)
    #[value(name = "int8")]
    Int8,
    /// 8-bit blocks of 32 with an f16 scale (8.5 bits per weight).
    #[value(name = "q8_0")]
    Q8_0,
    /// 4-bit blocks of 32 with an f16 scale (4.5 bits per weight).
    #[value(name = "q4_0")]
    Q4_0,
}

impl QuantDtype {
    fn name(self) -> &'static str {
        match self {
            QuantDtype::Int8 => "int8",
            QuantDtype::Q8_0 => "q8_0",
            QuantDtype::Q4_0 => "q4_0",
        }
    }
}

/// Where the MNIST files are, shared by the three commands.
#[derive(Clone, Debug, clap::Args)]
pub struct DataArg {
    /// Directory holding the four MNIST .gz files [default: the first data/mnist found from the
    /// current directory upwards]
    #[arg(long, value_name = "DIR", env = mnist::ENV_DATA_DIR)]
    pub data: Option<PathBuf>,
}

impl DataArg {
    fn dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(mnist::default_data_dir)
    }

    pub(crate) fn load_train(&self) -> anyhow::Result<Dataset> {
        let dir = self.dir();
        mnist::load_train(&dir)
            .with_context(|| format!("loading the MNIST training set from {}", dir.display()))
    }

    pub(crate) fn load_test(&self) -> anyhow::Result<Dataset> {
        let dir = self.dir();
        mnist::load_test(&dir)
            .with_context(|| format!("loading the MNIST test set from {}", dir.display()))
    }
}

/// Trains a model on MNIST, calibrates it on the validation split and writes it.
#[derive(Clone, Debug, clap::Args)]
#[command(
    after_help = "The last 5,000 training images are held out for validation and \
temperature calibration; the test accuracy is measured on the 10,000 test images and stored \
in the file. The same --seed gives the same file, byte for byte, on CPUs with the same L1 \
data cache (candle's matmul blocks its sums by the L1d size it reads at run time; thread counts \
do not matter): see models/MODELS.md and models/reproduce.sh.\n\n\
Example: edgeinfer train --model edge-mlp --seed 1 --out models/edge-mlp.safetensors"
)]
pub struct TrainArgs {
    /// Which network to train
    #[arg(long, value_enum)]
    pub model: ModelKind,
    /// Passes over the training data [default: 5 for edge-mlp, 4 for cloud-cnn]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Seed of weight initialisation, shuffling and dropout
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Train on only the first N training images (quick runs, CI)
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Images per optimizer step [default: 32 for edge-mlp, 64 for cloud-cnn]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Output file (.safetensors)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The version the file names (its `edgeinfer.version`; answers say `name@version`), so
    /// that a model trained to replace another in service says which it is
    #[arg(long, default_value = "1", value_name = "VERSION")]
    pub version: String,
    /// Adam's learning rate [default: 0.001]
    #[arg(long, value_name = "RATE")]
    pub learning_rate: Option<f64>,
    /// How the learning rate moves: constant, or down to 0 along half a cosine
    #[arg(long, value_enum, default_value_t = LrSchedule::Constant, value_name = "SCHEDULE")]
    pub lr_schedule: LrSchedule,
    /// Translate each training image by up to PIXELS in each direction, drawn anew each time
    /// it is used (0: none). With --teacher, the teacher labels the distorted image (this
    /// flag and the three below)
    #[arg(
        long,
        default_value_t = 0,
        value_name = "PIXELS",
        help_heading = "Augmentation"
    )]
    pub augment_shift: usize,
    /// Rotate each training image about its centre by up to DEGREES either way
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "DEGREES",
        help_heading = "Augmentation"
    )]
    pub augment_rotate: f32,
    /// Scale each training image about its centre by a factor in [1 - FRACTION, 1 + FRACTION]
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "FRACTION",
        help_heading = "Augmentation"
    )]
    pub augment_scale: f32,
    /// Deform each training image elastically: a random field smoothed by a Gaussian of 4 px,
    /// times PIXELS (Simard et al. 2003 used 34 on MNIST; 0: none)
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "PIXELS",
        help_heading = "Augmentation"
    )]
    pub augment_elastic: f32,
    /// Distil from this teacher model file (e.g. models/cloud-cnn.safetensors): the loss
    /// adds its soft targets to the labels' cross-entropy. The student's architecture is
    /// unchanged
    #[arg(long, value_name = "FILE", help_heading = "Distillation")]
    pub teacher: Option<PathBuf>,
    /// Temperature T of the soft targets, softmax(logits / T)
    #[arg(long, default_value_t = train::DEFAULT_DISTILL_TEMPERATURE, requires = "teacher", value_name = "T", help_heading = "Distillation")]
    pub distill_temperature: f32,
    /// Weight of the soft targets: loss = alpha T^2 KL(teacher || student) + (1 - alpha) CE
    #[arg(long, default_value_t = train::DEFAULT_DISTILL_ALPHA, requires = "teacher", value_name = "ALPHA", help_heading = "Distillation")]
    pub distill_alpha: f32,
    /// Start from this model file's weights (fine-tuning; a quantized file is dequantized)
    /// instead of a fresh initialisation. It must be of the --model architecture
    #[arg(long, value_name = "FILE", help_heading = "Fine-tuning")]
    pub init: Option<PathBuf>,
    /// Fine-tune on the hard examples exported to DIR (`edgeinfer hard-examples export`),
    /// mixed with a sample of the MNIST training images so the model does not forget
    #[arg(
        long,
        value_name = "DIR",
        requires = "init",
        help_heading = "Fine-tuning"
    )]
    pub hard_examples: Option<PathBuf>,
    /// MNIST training images mixed with the hard examples [default: as many as there are
    /// hard examples]
    #[arg(
        long,
        value_name = "N",
        requires = "hard_examples",
        help_heading = "Fine-tuning"
    )]
    pub original: Option<usize>,
    #[command(flatten)]
    pub data: DataArg,
}

/// Quantizes an f32 edge-mlp (to GGUF, or int8 safetensors), re-calibrates it and re-measures
/// its accuracy.
#[derive(Clone, Debug, clap::Args)]
#[command(
    after_help = "Only the edge-mlp is quantized (its layers are 32-wide block \
multiples). The temperature is fitted again and the test accuracy measured again on the \
quantized weights, so the file's metadata describes the file.\n\n\
Example: edgeinfer quantize --in models/edge-mlp.safetensors --dtype q8_0 \
--out models/edge-mlp-q8_0.gguf"
)]
pub struct QuantizeArgs {
    /// The f32 model (.safetensors)
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Quantization of the weights
    #[arg(long, value_enum)]
    pub dtype: QuantDtype,
    /// Output file (.gguf for q8_0 / q4_0, .safetensors for int8)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataArg,
}

/// Test accuracy, calibration (ECE) and single-thread latency of a model file.
#[derive(Clone, Debug, clap::Args)]
#[command(
    after_help = "ECE is the expected calibration error over 15 equal-width confidence \
bins, after temperature scaling (ece) and before (ece_uncalibrated). Latency is the median of \
one classify call on one thread, at batch 1 and at batch 64 (per image).\n\n\
Example: edgeinfer eval --model models/edge-mlp-q8_0.gguf --json"
)]
pub struct EvalArgs {
    /// The model file (.safetensors or .gguf)
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Skip the latency measurement (a few seconds)
    #[arg(long)]
    pub no_latency: bool,
    #[command(flatten)]
    pub data: DataArg,
}

/// `--lr-schedule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LrSchedule {
    Constant,
    Cosine,
}

impl From<LrSchedule> for train::Schedule {
    fn from(s: LrSchedule) -> Self {
        match s {
            LrSchedule::Constant => train::Schedule::Constant,
            LrSchedule::Cosine => train::Schedule::Cosine,
        }
    }
}

/// `edgeinfer train`.
pub fn run_train(args: &TrainArgs) -> anyhow::Result<()> {
    expect_extension(&args.out, ModelFormat::Safetensors, "--out")?;
    let arch = Architecture::from(args.model);
    let mut cfg = TrainConfig::new(arch);
    cfg.seed = args.seed;
    cfg.limit = args.limit;
    cfg.schedule = args.lr_schedule.into();
    cfg.augment = Distortion {
        shift: args.augment_shift,
        rotate_degrees: args.augment_rotate,
        scale: args.augment_scale,
        elastic_alpha: args.augment_elastic,
    };
    if let Some(e) = args.epochs {
        cfg.epochs = e;
    }
    if let Some(b) = args.batch_size {
        cfg.batch_size = b;
    }
    if let Some(r) = args.learning_rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("--learning-rate {r}: must be a number above 0");
        }
        cfg.learning_rate = r;
    }
    cfg.augment
        .check()
        .context("--augment-shift / -rotate / -scale / -elastic")?;
    // Checked now, not after the training it would name.
    ModelMetadata {
        version: args.version.clone(),
        ..train::initial_metadata(arch)
    }
    .validate()
    .context("--version")?;
    if cfg.epochs == 0 || cfg.batch_size == 0 || cfg.limit == Some(0) {
        bail!("--epochs, --batch-size and --limit must be at least 1");
    }
    let load = |flag: &str, path: &Path| {
        Model::load(path).with_context(|| format!("{flag} {}", path.display()))
    };
    let teacher = args
        .teacher
        .as_deref()
        .map(|p| load("--teacher", p))
        .transpose()?;
    let init = args
        .init
        .as_deref()
        .map(|p| load("--init", p))
        .transpose()?;
    if let (Some(path), Some(m)) = (&args.init, &init)
        && m.architecture() != arch
    {
        bail!(
            "--init {}: holds {} ({}), not the {} ({}) of --model",
            path.display(),
            m.metadata().name,
            m.architecture().id(),
            arch.model_name(),
            arch.id()
        );
    }
    let (original, validation) = args.data.load_train()?.split_validation();
    let test = args.data.load_test()?;
    let train_set = match &args.hard_examples {
        None => original,
        Some(dir) => {
            let hard = mnist::load_train(dir).with_context(|| {
                format!(
                    "--hard-examples {}: expected a data set written by `edgeinfer \
                     hard-examples export`",
                    dir.display()
                )
            })?;
            if hard.is_empty() {
                bail!("--hard-examples {}: the data set is empty", dir.display());
            }
            let count = args.original.unwrap_or(hard.len());
            println!(
                "fine-tuning set: {} hard examples from {} and {} MNIST training images",
                hard.len(),
                dir.display(),
                count.min(original.len())
            );
            train::mix(&hard, &original, count, cfg.seed)?
        }
    };
    let guidance = Guidance {
        init: init.as_ref(),
        teacher: teacher.as_ref().map(|t| {
            (
                t,
                Distill {
                    temperature: args.distill_temperature,
                    alpha: args.distill_alpha,
                },
            )
        }),
    };
    let n = cfg.limit.unwrap_or(train_set.len()).min(train_set.len());
    println!(
        "training {} ({}) on {n} images, {} epochs, batch {}, seed {}{}{}{}{}",
        arch.model_name(),
        arch.id(),
        cfg.epochs,
        cfg.batch_size,
        cfg.seed,
        match cfg.schedule {
            train::Schedule::Constant => String::new(),
            train::Schedule::Cosine => format!(", learning rate {} cosine to 0", cfg.learning_rate),
        },
        if cfg.augment.is_none() {
            String::new()
        } else {
            format!(", images {}", cfg.augment)
        },
        match (&args.teacher, &teacher) {
            (Some(p), Some(t)) => format!(
                ", distilled from {} ({}, T {}, alpha {})",
                p.display(),
                t.metadata().name,
                args.distill_temperature,
                args.distill_alpha
            ),
            _ => String::new(),
        },
        match &args.init {
            Some(p) => format!(", starting from {}", p.display()),
            None => String::new(),
        }
    );
    let start = Instant::now();
    let mut progress = Progress::default();
    let mut model = train::train_guided(&cfg, &guidance, &train_set, &validation, &mut progress)?;
    let metadata = ModelMetadata {
        version: args.version.clone(),
        ..model.metadata().clone()
    };
    model.set_metadata(metadata)?;
    let trained_s = start.elapsed().as_secs_f64();
    let e = eval::calibrate(&mut model, &validation, &test)?;
    model
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("trained in {trained_s:.1} s");
    print_summary(&args.out, &e);
    Ok(())
}

/// `edgeinfer quantize`.
pub fn run_quantize(args: &QuantizeArgs) -> anyhow::Result<()> {
    expect_extension(&args.input, ModelFormat::Safetensors, "--in")?;
    let out_format = ModelFormat::for_quantization(args.dtype.name())?;
    expect_extension(&args.out, out_format, "--out")?;
    let f32_model =
        Model::load(&args.input).with_context(|| format!("loading {}", args.input.display()))?;
    let mut q = f32_model
        .quantize(args.dtype.name())
        .with_context(|| format!("quantizing {}", args.input.display()))?;
    let (_, validation) = args.data.load_train()?.split_validation();
    let test = args.data.load_test()?;
    let e = eval::calibrate(&mut q, &validation, &test)?;
    q.save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "quantized {} to {} (f32 test accuracy {:.4})",
        args.input.display(),
        args.dtype.name(),
        f32_model.metadata().test_accuracy
    );
    print_summary(&args.out, &e);
    Ok(())
}

/// `edgeinfer eval`.
pub fn run_eval(args: &EvalArgs) -> anyhow::Result<()> {
    let model =
        Model::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let file_bytes = std::fs::metadata(&args.model)?.len();
    let test = args.data.load_test()?;
    let e = eval::evaluate(&model, &test)?;
    let latency = if args.no_latency {
        None
    } else {
        if let Some(warning) = edgeinfer_model::threading::env_warning() {
            eprintln!("warning: {warning}");
        }
        Some(eval::latency(&model, &test)?)
    };
    let m = model.metadata();
    // The input detector, and the share of the test images it flags (about 1 %, by design).
    let ood = model.ood().map(|d| {
        let flagged = (0..test.len())
            .filter(|&i| d.assess(&test.pixels_f32(i..i + 1)).unusual)
            .count();
        let bytes: usize = d.parts().iter().map(|(_, _, v)| 4 * v.len()).sum();
        (d, flagged as f64 / test.len().max(1) as f64, bytes)
    });
    if args.json {
        let mut out = serde_json::json!({
            "model": args.model.display().to_string(),
            "name": m.name,
            "version": m.version,
            "architecture": m.architecture,
            "quantization": m.quantization,
            "n": e.n,
            "accuracy": e.accuracy,
            "file_bytes": file_bytes,
            "ece": e.ece,
            "ece_uncalibrated": e.ece_uncalibrated,
            "nll": e.nll,
            "nll_uncalibrated": e.nll_uncalibrated,
            "temperature": e.temperature,
            "metadata_test_accuracy": m.test_accuracy,
        });
        if let Some((d, flagged, bytes)) = ood {
            out["ood"] = serde_json::json!({
                "components": d.components(),
                "threshold": d.threshold(),
                "bytes": bytes,
                "test_flagged": flagged,
            });
        }
        if let Some(Latency {
            batch1,
            batch64_per_image,
        }) = latency
        {
            out["latency_us"] = serde_json::json!({
                "batch1": round2(batch1),
                "batch64_per_image": round2(batch64_per_image),
            });
        }
        println!("{out}");
    } else {
        println!(
            "{}: {}@{} ({}, {}), {} bytes",
            args.model.display(),
            m.name,
            m.version,
            m.architecture,
            m.quantization,
            file_bytes
        );
        println!(
            "  accuracy {:.4} on {} test images (metadata says {:.4})",
            e.accuracy, e.n, m.test_accuracy
        );
        println!(
            "  ECE {:.4} at temperature {:.3}, {:.4} uncalibrated; NLL {:.4} ({:.4} uncalibrated)",
            e.ece, e.temperature, e.ece_uncalibrated, e.nll, e.nll_uncalibrated
        );
        if let Some((d, flagged, bytes)) = ood {
            println!(
                "  input detector: {} directions, threshold {:.3}, {bytes} bytes; flags {:.2} % of the test images",
                d.components(),
                d.threshold(),
                100.0 * flagged
            );
        }
        if let Some(l) = latency {
            println!(
                "  latency (one thread): {:.1} us at batch 1, {:.2} us per image at batch 64",
                l.batch1, l.batch64_per_image
            );
        }
    }
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(crate) fn expect_extension(path: &Path, want: ModelFormat, flag: &str) -> anyhow::Result<()> {
    let got = ModelFormat::from_path(path).ok();
    if got != Some(want) {
        bail!(
            "{flag} {}: expected a {} file",
            path.display(),
            want.extension()
        );
    }
    Ok(())
}

fn print_summary(out: &Path, e: &Evaluation) {
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({bytes} bytes): test accuracy {:.4}, temperature {:.3}, ECE {:.4} ({:.4} uncalibrated)",
        out.display(),
        e.accuracy,
        e.temperature,
        e.ece,
        e.ece_uncalibrated
    );
}

/// Training progress: a bar per epoch on stderr (hidden when stderr is not a terminal), one
/// line per epoch on stdout.
#[derive(Default)]
struct Progress {
    bar: Option<ProgressBar>,
}

impl TrainObserver for Progress {
    fn epoch_start(&mut self, epoch: usize, batches: usize) {
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} batches, loss {msg} ({eta})",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_prefix(epoch.to_string());
        self.bar = Some(bar);
    }

    fn batch_done(&mut self, loss: f32) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if bar.position() % 20 == 1 {
                bar.set_message(format!("{loss:.4}"));
            }
        }
    }

    fn epoch_end(&mut self, r: &EpochReport) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        println!(
            "epoch {}/{}: loss {:.4}, validation accuracy {:.4} ({:.1} s)",
            r.epoch, r.epochs, r.loss, r.val_accuracy, r.seconds
        );
    }
}
