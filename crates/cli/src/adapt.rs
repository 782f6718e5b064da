//! `edgeinfer adapt`: one turn of "a model that gets better in service", against a running
//! edge and cloud.
//!
//! 1. **Before**: the shifted held-out test images (MNIST test set, [`shift`]) go through the
//!    edge's router (native `Infer`, placement auto); the answers are tallied against the true
//!    labels ([`Tally`]).
//! 2. **Collect**: shifted *training* images (the first ones of the 55,000, never the
//!    validation or test images) go through the edge the same way; those the edge sends to the
//!    cloud are kept by the edge in its hard-example store (`--hard-examples-dir`). Their ids
//!    carry this run's prefix, so only this run's collection is used, whatever else the store
//!    holds (the before and after requests are recorded too, under other prefixes, and never
//!    trained on).
//! 3. **Fine-tune** (a library call): the f32 edge model, trained on the hard examples (labels:
//!    the cloud's answers) mixed with as many original training images, quantized to int8,
//!    calibrated on the validation split, written to a file.
//! 4. **Swap**: `ModelAdmin/LoadModel` on the edge's admin listener uploads it as the next
//!    version; the edge serves it from the next request on.
//! 5. **After**: the same shifted test images again, tallied the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use edgeinfer::v1::edge_admin_client::EdgeAdminClient;
use edgeinfer::v1::infer_request::Input;
use edgeinfer::v1::inference_client::InferenceClient;
use edgeinfer::v1::model_admin_client::ModelAdminClient;
use edgeinfer::v1::{
    GetStatusRequest, InferRequest, InferResponse, LoadModelRequest, Reason, Tier,
};
use edgeinfer_model::eval::{self, Evaluation};
use edgeinfer_model::mnist::Dataset;
use edgeinfer_model::train::{self, Guidance, TrainConfig, TrainObserver};
use edgeinfer_model::{Architecture, Classifier, Model};
use futures::StreamExt;
use serde::Serialize;
use tonic::transport::Channel;

use crate::hard_examples;

pub mod shift;

/// What one turn needs.
#[derive(Clone, Debug)]
pub struct AdaptOptions {
    /// The edge's data address (`http://HOST:PORT`).
    pub edge: String,
    /// The edge's admin address.
    pub admin: String,
    /// Bearer token of the admin calls, if the edge wants one.
    pub admin_token: Option<String>,
    /// The edge's `--hard-examples-dir`.
    pub store: PathBuf,
    /// The f32 model the edge's model was made from, fine-tuning's starting point.
    pub init: PathBuf,
    /// Where the adapted int8 model is written.
    pub out: PathBuf,
    /// Version to load it as; `None`: the next one after the served version.
    pub version: Option<String>,
    /// Shifted training images sent to collect hard examples.
    pub collect: usize,
    /// Shifted test images sent before and after.
    pub measure: usize,
    /// Seed of the shift, the sample of original images and training.
    pub seed: u64,
    /// Training epochs.
    pub epochs: usize,
    /// Original training images mixed in; `None`: as many as there are hard examples.
    pub original: Option<usize>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Latency budget of each request, in milliseconds (0: the edge's default).
    pub budget_ms: u32,
    /// How long to wait for the edge's writer to store the collected answers.
    pub store_wait: Duration,
}

/// The MNIST splits a turn uses.
pub struct AdaptData {
    /// Training images without the validation split.
    pub train: Dataset,
    /// The validation split (calibration).
    pub validation: Dataset,
    /// The test set (before and after, and the model's clean accuracy).
    pub test: Dataset,
}

/// The answers of one pass over a data set, against its true labels.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Tally {
    /// Requests sent.
    pub requests: usize,
    /// Requests answered.
    pub ok: usize,
    /// Failed requests, by gRPC code.
    pub errors: BTreeMap<String, usize>,
    /// Answers from the edge.
    pub edge: usize,
    /// Answers from the cloud.
    pub cloud: usize,
    /// Answers with the true label.
    pub correct: usize,
    /// Answers the edge gave because it was confident (reason CONFIDENT).
    pub confident: usize,
    /// Answers by reason.
    pub reasons: BTreeMap<String, usize>,
    /// Answers by model ("name@version").
    pub models: BTreeMap<String, usize>,
}

impl Tally {
    /// Counts one answer (or failure) to a request whose true label is `label`.
    pub fn add(&mut self, label: u8, answer: &Result<InferResponse, tonic::Status>) {
        self.requests += 1;
        let a = match answer {
            Ok(a) => a,
            Err(s) => {
                *self.errors.entry(format!("{:?}", s.code())).or_default() += 1;
                return;
            }
        };
        self.ok += 1;
        match Tier::try_from(a.served_by) {
            Ok(Tier::Edge) => self.edge += 1,
            Ok(Tier::Cloud) => self.cloud += 1,
            _ => {}
        }
        self.correct += usize::from(a.class_index == u32::from(label));
        let reason = Reason::try_from(a.reason).unwrap_or(Reason::Unspecified);
        self.confident += usize::from(reason == Reason::Confident);
        *self
            .reasons
            .entry(reason.as_str_name().to_string())
            .or_default() += 1;
        *self.models.entry(a.model.clone()).or_default() += 1;
    }

    /// Fraction of the answers the edge gave.
    pub fn edge_share(&self) -> f64 {
        ratio(self.edge, self.ok)
    }

    /// Fraction of the answers that were right.
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct, self.ok)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// What the collection gave.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Collected {
    /// Shifted training images sent.
    pub sent: usize,
    /// Of their answers, those the cloud gave (each one should be a record).
    pub answered_by_cloud: usize,
    /// Records of this run's collection found in the store.
    pub records: usize,
    /// Records used as hard examples.
    pub used: usize,
    /// Records left out, by why.
    pub skipped: BTreeMap<String, usize>,
    /// Byte ranges of the store that could not be read (torn tails, corruption).
    pub unreadable_parts: usize,
    /// Of the hard examples, those whose cloud label is not the true one (the cloud's own
    /// errors, trained on as they are: the edge never sees true labels).
    pub cloud_label_wrong: usize,
}

/// The model the turn made.
#[derive(Clone, Debug, Serialize)]
pub struct Adapted {
    /// The file written.
    pub file: PathBuf,
    /// The version it serves as.
    pub version: String,
    /// Its accuracy on the unshifted test set (and calibration).
    pub clean: Evaluation,
    /// Its accuracy on the shifted test set, offline (every image, no routing).
    pub shifted_accuracy: f64,
    /// The starting model's accuracy on the shifted test set, offline.
    pub shifted_accuracy_before: f64,
    /// Seconds of training.
    pub train_seconds: f64,
}

/// One turn's figures.
#[derive(Clone, Debug, Serialize)]
pub struct AdaptReport {
    /// The shift, as [`shift::DESCRIPTION`] says.
    pub shift: &'static str,
    /// Seed of the shift and of training.
    pub seed: u64,
    /// The model in service before.
    pub model_before: String,
    /// The shifted test images before the swap.
    pub before: Tally,
    /// The hard examples.
    pub collected: Collected,
    /// The new model.
    pub adapted: Adapted,
    /// The model in service after.
    pub model_after: String,
    /// The same images after the swap.
    pub after: Tally,
}

/// Runs one turn against the edge of `options`, telling progress to `say`.
pub async fn run(
    options: &AdaptOptions,
    data: &AdaptData,
    say: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<AdaptReport> {
    if options.collect == 0
        || options.measure == 0
        || options.concurrency == 0
        || options.epochs == 0
    {
        bail!("--collect, --measure, --concurrency and --epochs must be at least 1");
    }
    if edgeinfer_model::ModelFormat::from_path(&options.out).ok()
        != Some(edgeinfer_model::ModelFormat::Safetensors)
    {
        bail!(
            "--out {}: the int8 edge model is written as .safetensors",
            options.out.display()
        );
    }
    if options.collect > data.train.len() || options.measure > data.test.len() {
        bail!(
            "--collect {} / --measure {}: there are {} training and {} test images",
            options.collect,
            options.measure,
            data.train.len(),
            data.test.len()
        );
    }
    if !options.store.is_dir() {
        bail!(
            "--hard-examples-dir {}: not a directory; give the edge's --hard-examples-dir \
             (the edge must run with it to keep the cloud's answers)",
            options.store.display()
        );
    }
    let init =
        Model::load(&options.init).with_context(|| format!("--init {}", options.init.display()))?;
    if init.architecture() != Architecture::EdgeMlp {
        bail!(
            "--init {}: the edge model is {}, this file holds {}",
            options.init.display(),
            Architecture::EdgeMlp.id(),
            init.metadata().architecture
        );
    }
    let edge = connect(&options.edge, "--addr").await?;
    let admin = connect(&options.admin, "--admin").await?;
    let model_before = served_model(&admin, options).await?;
    let run_id = format!(
        "adapt-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let measured = shift::dataset(&data.test.slice(0..options.measure), options.seed);
    let gathering = shift::dataset(
        &data.train.slice(0..options.collect),
        options.seed.wrapping_add(1),
    );

    say(&format!(
        "before: {} shifted test images through {} (serving {})",
        measured.len(),
        options.edge,
        model_before.0
    ));
    let before = send(&edge, &measured, &format!("{run_id}-before-"), options).await;

    say(&format!(
        "collecting: {} shifted training images",
        gathering.len()
    ));
    let prefix = format!("{run_id}-collect-");
    let collect_answers = send_answers(&edge, &gathering, &prefix, options).await;
    let answered_by_cloud = collect_answers
        .iter()
        .filter(|a| matches!(a, Ok(r) if r.served_by == Tier::Cloud as i32))
        .count();
    let export = wait_for_store(
        &options.store,
        &prefix,
        answered_by_cloud,
        options.store_wait,
    )
    .await?;
    let hard = export.data;
    let cloud_label_wrong = cloud_errors(&gathering, &collect_answers);
    let collected = Collected {
        sent: gathering.len(),
        answered_by_cloud,
        records: export.records,
        used: hard.len(),
        skipped: export
            .skipped
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        unreadable_parts: export.unreadable.len(),
        cloud_label_wrong,
    };
    if hard.is_empty() {
        bail!(
            "no hard examples: of {} shifted training images the cloud answered {}, and the \
             store {} holds none of them (is the edge running with --hard-examples-dir {}?)",
            gathering.len(),
            answered_by_cloud,
            options.store.display(),
            options.store.display()
        );
    }
    say(&format!(
        "fine-tuning on {} hard examples (the cloud answered {answered_by_cloud} of {})",
        hard.len(),
        gathering.len()
    ));
    let version = match &options.version {
        Some(v) => v.clone(),
        None => next_version(&model_before.1),
    };
    let started = Instant::now();
    // Training takes the whole machine for a while: off the runtime's worker.
    let (tuned, clean) = tokio::task::block_in_place(|| {
        fine_tune(
            &init,
            &hard,
            data,
            options.epochs,
            options.seed,
            options.original,
            &version,
        )
    })?;
    let train_seconds = started.elapsed().as_secs_f64();
    tuned
        .save(&options.out)
        .with_context(|| format!("writing {}", options.out.display()))?;
    let shifted_accuracy = eval::evaluate(&tuned, &measured)?.accuracy;
    let shifted_accuracy_before = eval::evaluate(&init, &measured)?.accuracy;
    let bytes = std::fs::read(&options.out)
        .with_context(|| format!("reading back {}", options.out.display()))?;
    say(&format!(
        "loading {} as version {version} ({} bytes)",
        options.out.display(),
        bytes.len()
    ));
    let loaded = ModelAdminClient::new(admin.clone())
        .load_model(authorized(
            options,
            LoadModelRequest {
                version: version.clone(),
                content: bytes,
                format: "safetensors".into(),
            },
        ))
        .await
        .context("LoadModel on the edge's admin listener")?
        .into_inner();
    let model_after = loaded
        .model
        .map(|m| format!("{}@{}", m.name, m.version))
        .unwrap_or_default();

    say(&format!("after: the same {} images", measured.len()));
    let after = send(&edge, &measured, &format!("{run_id}-after-"), options).await;
    Ok(AdaptReport {
        shift: shift::DESCRIPTION,
        seed: options.seed,
        model_before: model_before.0,
        before,
        collected,
        adapted: Adapted {
            file: options.out.clone(),
            version,
            clean,
            shifted_accuracy,
            shifted_accuracy_before,
            train_seconds,
        },
        model_after,
        after,
    })
}

/// The fine-tuned, int8-quantized, calibrated model, named `version`, and its clean test
/// evaluation. Training starts from `init` (dequantized if need be).
pub fn fine_tune(
    init: &Model,
    hard: &Dataset,
    data: &AdaptData,
    epochs: usize,
    seed: u64,
    original: Option<usize>,
    version: &str,
) -> anyhow::Result<(Model, Evaluation)> {
    let set = train::mix(hard, &data.train, original.unwrap_or(hard.len()), seed)?;
    let mut cfg = TrainConfig::new(Architecture::EdgeMlp);
    cfg.epochs = epochs;
    cfg.seed = seed;
    let guidance = Guidance {
        init: Some(init),
        teacher: None,
    };
    let f32_model = train::train_guided(&cfg, &guidance, &set, &data.validation, &mut Silent)?;
    let mut q = f32_model.quantize("int8")?;
    let e = eval::calibrate(&mut q, &data.validation, &data.test)?;
    let mut meta = q.metadata().clone();
    meta.name = init.metadata().name.clone();
    meta.version = version.to_string();
    q.set_metadata(meta)?;
    Ok((q, e))
}

struct Silent;
impl TrainObserver for Silent {}

/// The version after `v`: `v + 1` when it is a number, else `v` with `-adapted` (then
/// `-adapted2`, ...) appended.
pub fn next_version(v: &str) -> String {
    if let Ok(n) = v.parse::<u64>() {
        return (n + 1).to_string();
    }
    match v.rsplit_once("-adapted") {
        Some((base, "")) => format!("{base}-adapted2"),
        Some((base, n)) if n.parse::<u64>().is_ok() => {
            format!("{base}-adapted{}", n.parse::<u64>().unwrap_or(1) + 1)
        }
        _ => format!("{v}-adapted"),
    }
}

async fn connect(url: &str, flag: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(url.to_string())
        .with_context(|| format!("{flag} {url:?} is not a URL"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("{flag} {url}: cannot connect"))
}

fn authorized<T>(options: &AdaptOptions, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(token) = &options.admin_token
        && let Ok(v) = format!("Bearer {token}").parse()
    {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

/// "name@version" and the version of the edge's model in service.
async fn served_model(admin: &Channel, options: &AdaptOptions) -> anyhow::Result<(String, String)> {
    let status = EdgeAdminClient::new(admin.clone())
        .get_status(authorized(options, GetStatusRequest {}))
        .await
        .context("GetStatus on the edge's admin listener (--admin, --admin-token)")?
        .into_inner();
    let m = status.edge_model.context("the edge reports no model")?;
    Ok((format!("{}@{}", m.name, m.version), m.version))
}

async fn send_answers(
    edge: &Channel,
    data: &Dataset,
    id_prefix: &str,
    options: &AdaptOptions,
) -> Vec<Result<InferResponse, tonic::Status>> {
    let client = InferenceClient::new(edge.clone());
    let mut answers: Vec<_> = futures::stream::iter(0..data.len())
        .map(|i| {
            let mut client = client.clone();
            let request = InferRequest {
                id: format!("{id_prefix}{i}"),
                input: Some(Input::Raw(data.image(i).to_vec())),
                latency_budget_ms: options.budget_ms,
                ..Default::default()
            };
            async move { (i, client.infer(request).await.map(|r| r.into_inner())) }
        })
        .buffer_unordered(options.concurrency)
        .collect()
        .await;
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, a)| a).collect()
}

async fn send(edge: &Channel, data: &Dataset, id_prefix: &str, options: &AdaptOptions) -> Tally {
    let answers = send_answers(edge, data, id_prefix, options).await;
    tally(&data.labels, &answers)
}

/// The tally of `answers` to requests whose true labels are `labels`.
pub fn tally(labels: &[u8], answers: &[Result<InferResponse, tonic::Status>]) -> Tally {
    let mut t = Tally::default();
    for (label, answer) in labels.iter().zip(answers) {
        t.add(*label, answer);
    }
    t
}

/// The cloud's answers (the hard examples' labels) that are not the true label of the image
/// sent: for the report only, the edge never sees true labels.
fn cloud_errors(sent: &Dataset, answers: &[Result<InferResponse, tonic::Status>]) -> usize {
    answers
        .iter()
        .zip(&sent.labels)
        .filter(|(a, label)| {
            matches!(a, Ok(r) if r.served_by == Tier::Cloud as i32
                && r.class_index != u32::from(**label))
        })
        .count()
}

/// Reads this run's records from the store, waiting (bounded by `wait`) until the writer has
/// stored `expected` of them; the edge may have dropped some (its queue was full), so fewer
/// are taken after the wait.
async fn wait_for_store(
    store: &Path,
    prefix: &str,
    expected: usize,
    wait: Duration,
) -> anyhow::Result<hard_examples::Export> {
    let deadline = Instant::now() + wait;
    loop {
        let export = hard_examples::collect(store, prefix)?;
        if export.records >= expected || Instant::now() >= deadline {
            return Ok(export);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The report as the before/after table.
pub fn table(r: &AdaptReport) -> String {
    let (b, a) = (&r.before, &r.after);
    let mut out = String::new();
    out += &format!("{:<22} {:>14} {:>14}\n", "", "before", "after");
    out += &format!(
        "{:<22} {:>14} {:>14}\n",
        "model", r.model_before, r.model_after
    );
    let rows: [(&str, String, String); 7] = [
        ("requests", b.requests.to_string(), a.requests.to_string()),
        (
            "edge share",
            format!("{:.1} %", 100.0 * b.edge_share()),
            format!("{:.1} %", 100.0 * a.edge_share()),
        ),
        (
            "accuracy",
            format!("{:.4}", b.accuracy()),
            format!("{:.4}", a.accuracy()),
        ),
        (
            "CONFIDENT",
            b.confident.to_string(),
            a.confident.to_string(),
        ),
        ("served by edge", b.edge.to_string(), a.edge.to_string()),
        ("served by cloud", b.cloud.to_string(), a.cloud.to_string()),
        (
            "errors",
            b.errors.values().sum::<usize>().to_string(),
            a.errors.values().sum::<usize>().to_string(),
        ),
    ];
    for (name, x, y) in rows {
        out += &format!("{name:<22} {x:>14} {y:>14}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(tier: Tier, reason: Reason, class: u32, model: &str) -> InferResponse {
        InferResponse {
            served_by: tier as i32,
            reason: reason as i32,
            class_index: class,
            model: model.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_tally_counts_shares_accuracy_and_reasons() {
        let answers = vec![
            Ok(answer(Tier::Edge, Reason::Confident, 3, "edge-mlp@1")),
            Ok(answer(Tier::Cloud, Reason::LowConfidence, 4, "cloud-cnn@1")),
            Ok(answer(Tier::Edge, Reason::CloudTimeout, 1, "edge-mlp@1")),
            Err(tonic::Status::resource_exhausted("full")),
        ];
        let t = tally(&[3, 4, 2, 5], &answers);
        assert_eq!((t.requests, t.ok, t.edge, t.cloud), (4, 3, 2, 1));
        assert_eq!((t.correct, t.confident), (2, 1));
        assert_eq!(t.errors["ResourceExhausted"], 1);
        assert_eq!(t.reasons["LOW_CONFIDENCE"], 1);
        assert_eq!(t.models["edge-mlp@1"], 2);
        assert!((t.edge_share() - 2.0 / 3.0).abs() < 1e-12);
        assert!((t.accuracy() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(Tally::default().accuracy(), 0.0);
        let report = table(&AdaptReport {
            shift: shift::DESCRIPTION,
            seed: 1,
            model_before: "edge-mlp@1".into(),
            before: t.clone(),
            collected: Collected::default(),
            adapted: Adapted {
                file: "x".into(),
                version: "2".into(),
                clean: Evaluation {
                    n: 0,
                    accuracy: 0.0,
                    ece: 0.0,
                    ece_uncalibrated: 0.0,
                    nll: 0.0,
                    nll_uncalibrated: 0.0,
                    temperature: 1.0,
                },
                shifted_accuracy: 0.0,
                shifted_accuracy_before: 0.0,
                train_seconds: 0.0,
            },
            model_after: "edge-mlp@2".into(),
            after: t,
        });
        assert!(report.contains("edge share"), "{report}");
        assert!(report.contains("66.7 %"), "{report}");
    }

    #[tokio::test]
    async fn bad_options_are_refused_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let image = |n: usize| Dataset {
            images: vec![0; n * 784],
            labels: vec![0; n],
            rows: 28,
            cols: 28,
        };
        let data = |n: usize| AdaptData {
            train: image(n),
            validation: image(n),
            test: image(n),
        };
        let options = AdaptOptions {
            // Nothing listens there: an attempt to send would fail otherwise.
            edge: "http://127.0.0.1:9".into(),
            admin: "http://127.0.0.1:9".into(),
            admin_token: None,
            store: dir.path().join("missing"),
            init: dir.path().join("missing.safetensors"),
            out: dir.path().join("out.safetensors"),
            version: None,
            collect: 0,
            measure: 1,
            seed: 1,
            epochs: 1,
            original: None,
            concurrency: 1,
            budget_ms: 0,
            store_wait: Duration::ZERO,
        };
        let mut say = |_: &str| {};
        let e = run(&options, &data(1), &mut say).await.unwrap_err();
        assert!(e.to_string().contains("--collect"), "{e}");
        let options = AdaptOptions {
            collect: 1,
            ..options
        };
        let gguf = AdaptOptions {
            out: dir.path().join("out.gguf"),
            ..options.clone()
        };
        let e = run(&gguf, &data(1), &mut say).await.unwrap_err();
        assert!(e.to_string().contains(".safetensors"), "{e}");
        let e = run(&options, &data(0), &mut say).await.unwrap_err();
        assert!(e.to_string().contains("there are 0 training"), "{e}");
        let e = run(&options, &data(1), &mut say).await.unwrap_err();
        assert!(e.to_string().contains("--hard-examples-dir"), "{e}");
        let options = AdaptOptions {
            store: dir.path().to_path_buf(),
            ..options
        };
        let e = format!("{:#}", run(&options, &data(1), &mut say).await.unwrap_err());
        assert!(
            e.contains("--init") && e.contains("missing.safetensors"),
            "{e}"
        );
    }

    #[test]
    fn versions_follow_each_other() {
        assert_eq!(next_version("1"), "2");
        assert_eq!(next_version("41"), "42");
        assert_eq!(next_version("w3"), "w3-adapted");
        assert_eq!(next_version("w3-adapted"), "w3-adapted2");
        assert_eq!(next_version("w3-adapted2"), "w3-adapted3");
    }
}
