//! The model a node serves, swappable under load.
//!
//! A [`ModelSlot`] holds the model in service ([`Served`]: its metadata, its batcher, the file
//! it came from). A request takes the current [`Served`] once, as an `Arc`, and keeps it until
//! it is answered, so a swap never changes the model under a request: requests in flight finish
//! on the model they started with, and its batcher's worker threads stop once the last of them
//! is answered. Loading reads, parses and probes the new file (the model crate runs it on blank,
//! grey and white inputs) on a blocking thread, checks it serves the same task, input and labels
//! (a request decoded for the old input must be valid for the new one), and only then swaps the
//! pointer. A refused file leaves the old model serving, and the refusal is logged naming it.
//!
//! The pointer is a `std::sync::RwLock<Arc<Served>>`: a read is an uncontended lock and an
//! `Arc` clone, swaps are rare, and std serves, so no extra crate.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use edgeinfer_model::{Classifier, ModelError, ModelFormat, ModelMetadata};

use crate::batcher::{BatchError, Batcher, BatcherConfig, Scored};
use crate::error::ServeError;
use crate::metrics::BatcherMetrics;
use crate::repository::{Repository, RepositoryError};

/// Where a model came from, for logs and the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A file on the node's disk, named by its configuration.
    File(PathBuf),
    /// Bytes received by an admin call.
    Upload,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Upload => f.write_str("an uploaded model"),
        }
    }
}

/// One model in service.
pub struct Served {
    /// What the model is; its `version` is the one answers name.
    pub meta: Arc<ModelMetadata>,
    /// The metadata as a list of one, as [`crate::node::Node::models`] returns it, made once.
    pub listed: Arc<[ModelMetadata]>,
    /// "name@version", as answers name the model that produced them, made once.
    pub model_ref: String,
    /// The model behind its queue and worker threads.
    pub batcher: Batcher,
    /// Where it was loaded from.
    pub source: Source,
    /// What this version has done since it was loaded (OIP `ModelStatistics`).
    pub stats: VersionStats,
    /// Most requests in one forward pass (OIP `ModelConfig`).
    pub max_batch: usize,
}

/// Counts of one model version's inferences, kept by [`Served::classify`].
#[derive(Debug, Default)]
pub struct VersionStats {
    /// Inferences answered.
    pub success: AtomicU64,
    /// Their queue plus compute time, in nanoseconds.
    pub success_ns: AtomicU64,
    /// Inferences failed or refused.
    pub fail: AtomicU64,
    /// Time answered inferences waited in the queue, in nanoseconds.
    pub queue_ns: AtomicU64,
    /// Forward-pass time of the batches answered inferences were in, in nanoseconds.
    pub compute_ns: AtomicU64,
    /// When the last inference ended, in milliseconds since the Unix epoch.
    pub last_ms: AtomicU64,
}

impl Served {
    /// Scores one input on this version, to be answered before `deadline` (the batcher
    /// refuses it at once when it would not be), counting it in [`Served::stats`].
    pub async fn classify(
        &self,
        input: Vec<f32>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Scored, BatchError> {
        let deadline = deadline.map(tokio::time::Instant::into_std);
        let result = self.batcher.classify(input, deadline).await;
        let s = &self.stats;
        let nanos = |d: std::time::Duration| d.as_nanos().min(u128::from(u64::MAX)) as u64;
        match &result {
            Ok(scored) => {
                s.success.fetch_add(1, Ordering::Relaxed);
                s.success_ns
                    .fetch_add(nanos(scored.queue + scored.compute), Ordering::Relaxed);
                s.queue_ns.fetch_add(nanos(scored.queue), Ordering::Relaxed);
                s.compute_ns
                    .fetch_add(nanos(scored.compute), Ordering::Relaxed);
            }
            Err(_) => {
                s.fail.fetch_add(1, Ordering::Relaxed);
            }
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        s.last_ms.store(now, Ordering::Relaxed);
        result
    }
}

impl Served {
    /// An attribution per input value for label `class` ([`Classifier::explain`]), computed
    /// off the runtime's threads.
    pub async fn explain(&self, input: Vec<f32>, class: usize) -> Result<Vec<f32>, ServeError> {
        let model = self.batcher.model().clone();
        let result = tokio::task::spawn_blocking(move || model.explain(&input, class))
            .await
            .map_err(|e| BatchError::Model(format!("explaining: {e}")))?;
        result.map_err(|e| match e {
            ModelError::Unsupported(message) | ModelError::Input(message) => ServeError::Field {
                field: "explain".into(),
                message,
            },
            e => BatchError::Model(format!("explaining: {e}")).into(),
        })
    }
}

/// Why a model was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file or bytes are not a usable model (unreadable, malformed, failing the probe).
    #[error("{source_name}: {error}")]
    Model {
        /// The file, or "an uploaded model".
        source_name: String,
        /// What is wrong with it.
        error: ModelError,
    },
    /// The model is valid but does not serve what the current one serves.
    #[error("{source_name}: {detail}; the model in service keeps serving")]
    Incompatible {
        /// The file, or "an uploaded model".
        source_name: String,
        /// Which property differs.
        detail: String,
    },
    /// A reload was asked of a node whose model came from no file.
    #[error("the model in service came from no file (it was uploaded), so there is none to reload")]
    NoFile,
    /// A version was asked of a node started without a model repository.
    #[error("version: this node serves no model repository (--model-repository)")]
    NoRepository,
    /// The repository has no such model or version.
    #[error(transparent)]
    Repository(RepositoryError),
    /// A loading thread failed.
    #[error("loading {0} failed: the loading thread stopped")]
    Aborted(String),
}

/// The model a node serves, swapped atomically.
pub struct ModelSlot {
    /// The model in service.
    current: RwLock<Arc<Served>>,
    /// Settings of every batcher made for a new model.
    config: BatcherConfig,
    /// The node's batcher metrics, shared by every model's batcher.
    metrics: BatcherMetrics,
    /// One load at a time: two concurrent loads would each check against the same old model
    /// and the later swap would win silently.
    loading: tokio::sync::Mutex<()>,
    /// The model repository and the model directory this node serves from it, when the node
    /// was started on one.
    repository: Option<(Repository, String)>,
}

impl ModelSlot {
    /// A slot serving `model`, loaded from `source`; `version` overrides the file's own
    /// version (a model repository names versions by directory).
    pub fn new(
        model: Arc<dyn Classifier>,
        source: Source,
        version: Option<String>,
        config: BatcherConfig,
        metrics: BatcherMetrics,
    ) -> Self {
        let served = Self::serve(model, source, version, config, metrics.clone());
        Self {
            current: RwLock::new(Arc::new(served)),
            config,
            metrics,
            loading: tokio::sync::Mutex::new(()),
            repository: None,
        }
    }

    /// Serves model directory `model` of `repository`: versions are loaded from there.
    pub fn with_repository(mut self, repository: Repository, model: String) -> Self {
        self.repository = Some((repository, model));
        self
    }

    /// The repository and the model directory served from it, if any.
    pub fn repository(&self) -> Option<(&Repository, &str)> {
        self.repository.as_ref().map(|(r, m)| (r, m.as_str()))
    }

    /// The file the model in service came from, if it came from one.
    pub fn file(&self) -> Option<PathBuf> {
        match &self.current().source {
            Source::File(p) => Some(p.clone()),
            Source::Upload => None,
        }
    }

    /// Loads the file of the model in service again (SIGHUP, the file watch, an empty
    /// `LoadModel`), keeping its version when it came from a repository.
    pub async fn reload(&self, version: Option<String>) -> Result<Arc<Served>, LoadError> {
        let Some(path) = self.file() else {
            return Err(LoadError::NoFile);
        };
        let version = version.or_else(|| {
            self.repository
                .as_ref()
                .map(|_| self.current().meta.version.clone())
        });
        self.load_file(&path, version).await
    }

    /// Loads version `version` of the served model from the repository; `None` loads the
    /// highest version there.
    pub async fn load_version(&self, version: Option<&str>) -> Result<Arc<Served>, LoadError> {
        let Some((repository, model)) = &self.repository else {
            return Err(LoadError::NoRepository);
        };
        let entry = match version {
            Some(v) => repository.find(model, v),
            None => repository.latest(model),
        }
        .map_err(LoadError::Repository)?;
        self.load_file(&entry.file, Some(entry.version.to_string()))
            .await
    }

    fn serve(
        model: Arc<dyn Classifier>,
        source: Source,
        version: Option<String>,
        config: BatcherConfig,
        metrics: BatcherMetrics,
    ) -> Served {
        let mut meta = model.metadata().clone();
        if let Some(v) = version {
            meta.version = v;
        }
        let batcher = Batcher::new(model, config, metrics.for_version(&meta.version));
        Served {
            listed: Arc::from(vec![meta.clone()]),
            model_ref: format!("{}@{}", meta.name, meta.version),
            meta: Arc::new(meta),
            batcher,
            source,
            stats: VersionStats::default(),
            max_batch: config.max_batch,
        }
    }

    /// The model in service now. Keep the `Arc` for the whole request.
    pub fn current(&self) -> Arc<Served> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads, checks and swaps in the model file at `path`. On refusal the error names the
    /// file, it is logged, and the old model keeps serving.
    pub async fn load_file(
        &self,
        path: &Path,
        version: Option<String>,
    ) -> Result<Arc<Served>, LoadError> {
        let owned = path.to_path_buf();
        let source = Source::File(owned.clone());
        let loaded =
            tokio::task::spawn_blocking(move || edgeinfer_model::load_classifier(&owned)).await;
        self.finish(loaded, source, version).await
    }

    /// Loads, checks and swaps in a model from `bytes` (received by an admin call, so
    /// untrusted; its size is bounded by the listener's message limit).
    pub async fn load_bytes(
        &self,
        bytes: Vec<u8>,
        format: ModelFormat,
        version: Option<String>,
    ) -> Result<Arc<Served>, LoadError> {
        let loaded = tokio::task::spawn_blocking(move || {
            edgeinfer_model::load_classifier_bytes(&bytes, format)
        })
        .await;
        self.finish(loaded, Source::Upload, version).await
    }

    async fn finish(
        &self,
        loaded: Result<Result<Arc<dyn Classifier>, ModelError>, tokio::task::JoinError>,
        source: Source,
        version: Option<String>,
    ) -> Result<Arc<Served>, LoadError> {
        let result = match loaded {
            Err(_) => Err(LoadError::Aborted(source.to_string())),
            Ok(Err(error)) => Err(LoadError::Model {
                source_name: source.to_string(),
                error,
            }),
            Ok(Ok(model)) => {
                let _one_at_a_time = self.loading.lock().await;
                self.swap_in(model, source.clone(), version)
            }
        };
        match &result {
            Ok(served) => tracing::info!(
                model = %served.model_ref,
                source = %served.source,
                "model swapped in; requests in flight finish on the previous one"
            ),
            Err(e) => tracing::error!(
                source = %source,
                error = %e,
                "model refused; the previous model keeps serving"
            ),
        }
        result
    }

    fn swap_in(
        &self,
        model: Arc<dyn Classifier>,
        source: Source,
        version: Option<String>,
    ) -> Result<Arc<Served>, LoadError> {
        let old = self.current();
        if let Some(detail) = incompatibility(&old.meta, model.metadata()) {
            return Err(LoadError::Incompatible {
                source_name: source.to_string(),
                detail,
            });
        }
        let served = Arc::new(Self::serve(
            model,
            source,
            version,
            self.config,
            self.metrics.clone(),
        ));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = served.clone();
        Ok(served)
    }
}

/// What a new model would break for callers of the old one, if anything: the task they name,
/// the input they were validated against, the labels they read.
pub fn incompatibility(old: &ModelMetadata, new: &ModelMetadata) -> Option<String> {
    if old.task != new.task {
        return Some(format!(
            "serves task {:?}, the node serves {:?}",
            new.task, old.task
        ));
    }
    if old.input_shape != new.input_shape {
        return Some(format!(
            "takes input shape {:?}, the node's inputs are {:?}",
            new.input_shape, old.input_shape
        ));
    }
    if old.labels != new.labels {
        return Some(format!(
            "has labels {:?}, the node answers with {:?}",
            new.labels, old.labels
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    struct Constant {
        meta: ModelMetadata,
        answer: usize,
    }

    impl Classifier for Constant {
        fn metadata(&self) -> &ModelMetadata {
            &self.meta
        }
        fn classify(&self, _inputs: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
            let n = self.meta.labels.len();
            let mut out = vec![0.0; batch * n];
            for row in out.chunks_mut(n) {
                row[self.answer] = 1.0;
            }
            Ok(out)
        }
    }

    fn meta(version: &str) -> ModelMetadata {
        ModelMetadata {
            name: "m".into(),
            version: version.into(),
            task: "t".into(),
            architecture: "edge-mlp".into(),
            input_shape: vec![2],
            labels: vec!["a".into(), "b".into()],
            temperature: 1.0,
            test_accuracy: 0.5,
            quantization: "f32".into(),
        }
    }

    fn slot(model: Constant) -> ModelSlot {
        let metrics = Metrics::unregistered(model.metadata());
        let config = BatcherConfig {
            workers: 1,
            ..BatcherConfig::default()
        };
        ModelSlot::new(
            Arc::new(model),
            Source::Upload,
            None,
            config,
            metrics.batcher,
        )
    }

    #[tokio::test]
    async fn a_request_keeps_the_model_it_started_with() {
        let slot = slot(Constant {
            meta: meta("1"),
            answer: 0,
        });
        let before = slot.current();
        let new = Arc::new(Constant {
            meta: meta("2"),
            answer: 1,
        });
        slot.swap_in(new, Source::Upload, None).unwrap();
        // The old model still answers the request that holds it, with its own result.
        let scored = before.classify(vec![0.0, 0.0], None).await.unwrap();
        assert_eq!(scored.probabilities, vec![1.0, 0.0]);
        assert_eq!(before.stats.success.load(Ordering::Relaxed), 1);
        assert!(before.stats.last_ms.load(Ordering::Relaxed) > 0);
        assert_eq!(before.model_ref, "m@1");
        let after = slot.current();
        assert_eq!(after.model_ref, "m@2");
        let scored = after.classify(vec![0.0, 0.0], None).await.unwrap();
        assert_eq!(scored.probabilities, vec![0.0, 1.0]);
        // Counted on the version that answered, not on the other.
        assert_eq!(after.stats.success.load(Ordering::Relaxed), 1);
        assert_eq!(before.stats.success.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn an_incompatible_model_is_refused_and_the_old_one_serves() {
        let slot = slot(Constant {
            meta: meta("1"),
            answer: 0,
        });
        let mut other = meta("2");
        other.labels = vec!["x".into(), "y".into()];
        let err = slot
            .swap_in(
                Arc::new(Constant {
                    meta: other,
                    answer: 0,
                }),
                Source::File("/models/other.safetensors".into()),
                None,
            )
            .err()
            .expect("different labels are refused");
        let text = err.to_string();
        assert!(text.contains("/models/other.safetensors"), "{text}");
        assert!(text.contains("labels"), "{text}");
        assert_eq!(slot.current().model_ref, "m@1");
    }

    #[tokio::test]
    async fn a_bad_file_is_refused_naming_it() {
        let slot = slot(Constant {
            meta: meta("1"),
            answer: 0,
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.safetensors");
        std::fs::write(&path, b"not a model").unwrap();
        let err = slot
            .load_file(&path, None)
            .await
            .err()
            .expect("garbage is refused");
        assert!(err.to_string().contains("broken.safetensors"), "{err}");
        assert_eq!(slot.current().model_ref, "m@1");
    }

    #[tokio::test]
    async fn a_version_override_names_the_answers() {
        let slot = slot(Constant {
            meta: meta("1"),
            answer: 0,
        });
        let served = slot
            .swap_in(
                Arc::new(Constant {
                    meta: meta("1"),
                    answer: 0,
                }),
                Source::Upload,
                Some("7".into()),
            )
            .unwrap();
        assert_eq!(served.model_ref, "m@7");
        assert_eq!(&*served.listed, &[(*served.meta).clone()]);
    }
}
