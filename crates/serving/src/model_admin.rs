//! Model control for both nodes: the `ModelAdmin` service (served on the admin listener only)
//! and the two other ways a node reloads its model file: SIGHUP and a watch on the file.
//!
//! The watch polls the file's modification time and length every interval rather than using
//! inotify (the `notify` crate): it watches one file, a stat per second costs nothing, and
//! polling also sees changes that inotify misses (a Kubernetes ConfigMap or Secret swapped by
//! a symlink flip, bind mounts from another host, network file systems). A change is loaded
//! only once the file has stayed the same for one interval, so a file still being written is
//! not read half-way; should that happen anyway, the probe refuses it and the old model keeps
//! serving.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use edgeinfer::v1::model_admin_server::ModelAdmin;
use edgeinfer::v1::{LoadModelRequest, LoadModelResponse};
use edgeinfer_model::ModelFormat;
use tonic::{Request, Response, Status};

use crate::models::{LoadError, ModelSlot};
use crate::node::model_info;

/// A node that serves a swappable model.
pub trait HasModelSlot: Send + Sync + 'static {
    /// The node's model slot.
    fn model_slot(&self) -> &ModelSlot;
}

/// The `ModelAdmin` service over a node.
pub struct ModelAdminService<N> {
    node: Arc<N>,
}

impl<N> ModelAdminService<N> {
    /// Controls `node`'s model.
    pub fn new(node: Arc<N>) -> Self {
        Self { node }
    }
}

impl From<LoadError> for Status {
    fn from(e: LoadError) -> Self {
        let message = e.to_string();
        match e {
            LoadError::Model { .. } => Status::invalid_argument(message),
            LoadError::Incompatible { .. } | LoadError::NoFile => {
                Status::failed_precondition(message)
            }
            LoadError::Aborted(_) => Status::internal(message),
        }
    }
}

/// The format named by a `LoadModel` request's `format` field.
fn parse_format(format: &str) -> Result<ModelFormat, Status> {
    match format {
        "safetensors" => Ok(ModelFormat::Safetensors),
        "gguf" => Ok(ModelFormat::Gguf),
        other => Err(Status::invalid_argument(format!(
            "format: {other:?} is not a model format; use \"safetensors\" or \"gguf\""
        ))),
    }
}

#[tonic::async_trait]
impl<N: HasModelSlot> ModelAdmin for ModelAdminService<N> {
    async fn load_model(
        &self,
        request: Request<LoadModelRequest>,
    ) -> Result<Response<LoadModelResponse>, Status> {
        let r = request.into_inner();
        let version = (!r.version.is_empty()).then_some(r.version);
        if let Some(v) = &version
            && (v.len() > 64 || v.chars().any(|c| c.is_control() || c == '@'))
        {
            return Err(Status::invalid_argument(
                "version: at most 64 characters, no control characters and no '@'",
            ));
        }
        let slot = self.node.model_slot();
        let served = if r.content.is_empty() {
            if !r.format.is_empty() {
                return Err(Status::invalid_argument(
                    "format: set only together with `content`",
                ));
            }
            slot.reload(version).await?
        } else {
            let format = parse_format(&r.format)?;
            slot.load_bytes(r.content, format, version).await?
        };
        Ok(Response::new(LoadModelResponse {
            model: Some(model_info(&served.meta)),
            source: served.source.to_string(),
        }))
    }
}

/// Reloads the slot's configured file on SIGHUP, and, when `watch` is set, whenever the file
/// changes. Runs until the task is dropped; refusals are logged by the slot.
pub async fn reload_on_signal_and_change<N: HasModelSlot>(node: Arc<N>, watch: Option<Duration>) {
    let slot = node.model_slot();
    let Some(path) = slot.file().map(Path::to_path_buf) else {
        return;
    };
    let mut hangup = hangup_signals();
    let mut tick = watch.map(tokio::time::interval);
    if let Some(t) = &mut tick {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut watcher = FileWatch::new(stat(&path));
    loop {
        tokio::select! {
            Some(()) = next_hangup(&mut hangup) => {
                tracing::info!(file = %path.display(), "SIGHUP: reloading the model file");
                let _ = slot.reload(None).await;
                watcher.loaded(stat(&path));
            }
            Some(_) = next_tick(&mut tick) => {
                if watcher.observe(stat(&path)) {
                    tracing::info!(file = %path.display(), "model file changed: reloading it");
                    let _ = slot.reload(None).await;
                }
            }
            else => return,
        }
    }
}

/// What identifies a version of a file cheaply: its modification time and length (`None` when
/// it cannot be read, for example between a delete and a rename).
type Stamp = Option<(SystemTime, u64)>;

fn stat(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// When a polled file should be loaded again: once it differs from what was loaded and has
/// stayed the same for one poll. Pure, so its tests need no clock or file.
#[derive(Debug)]
struct FileWatch {
    loaded: Stamp,
    last_seen: Stamp,
}

impl FileWatch {
    fn new(loaded: Stamp) -> Self {
        Self {
            loaded,
            last_seen: loaded,
        }
    }

    /// Records a poll; true when the file should be loaded now.
    fn observe(&mut self, now: Stamp) -> bool {
        let stable = now == self.last_seen;
        self.last_seen = now;
        if stable && now.is_some() && now != self.loaded {
            self.loaded = now;
            return true;
        }
        false
    }

    /// Records that the file was loaded (by another trigger) as it is now.
    fn loaded(&mut self, now: Stamp) {
        self.loaded = now;
        self.last_seen = now;
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signals() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with LoadModel instead");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signals() -> Hangup {
    None
}

async fn next_hangup(h: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    match h {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
    #[cfg(not(unix))]
    {
        let _ = h;
        std::future::pending().await
    }
}

async fn next_tick(t: &mut Option<tokio::time::Interval>) -> Option<tokio::time::Instant> {
    match t {
        Some(t) => Some(t.tick().await),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, len: u64) -> Stamp {
        Some((SystemTime::UNIX_EPOCH + Duration::from_secs(secs), len))
    }

    #[test]
    fn an_unchanged_file_is_not_reloaded() {
        let mut w = FileWatch::new(at(1, 10));
        assert!(!w.observe(at(1, 10)));
        assert!(!w.observe(at(1, 10)));
    }

    #[test]
    fn a_change_is_loaded_once_it_has_settled() {
        let mut w = FileWatch::new(at(1, 10));
        // Being written: it changes between polls.
        assert!(!w.observe(at(2, 5)));
        assert!(!w.observe(at(3, 10)));
        // Settled: load once, and not again while it stays.
        assert!(w.observe(at(3, 10)));
        assert!(!w.observe(at(3, 10)));
    }

    #[test]
    fn a_missing_file_is_not_loaded_and_its_return_is() {
        let mut w = FileWatch::new(at(1, 10));
        assert!(!w.observe(None));
        assert!(!w.observe(None));
        assert!(!w.observe(at(4, 10)));
        assert!(w.observe(at(4, 10)));
    }

    #[test]
    fn a_load_by_another_trigger_is_not_repeated() {
        let mut w = FileWatch::new(at(1, 10));
        w.loaded(at(2, 10));
        assert!(!w.observe(at(2, 10)));
    }

    #[test]
    fn formats_are_named_exactly() {
        assert_eq!(parse_format("gguf").unwrap(), ModelFormat::Gguf);
        let err = parse_format("onnx").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("format:"), "{}", err.message());
    }
}
