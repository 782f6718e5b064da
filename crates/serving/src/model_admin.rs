//! Model control for both nodes: the `ModelAdmin` service and the model repository extension
//! (`RepositoryService`), served on the admin listener only, and the two other ways a node
//! reloads its model file: SIGHUP and a watch on the file.
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

use edgeinfer::inference::model_repository::model_repository_service_server::ModelRepositoryServiceServer;
use edgeinfer::service_names;
use edgeinfer::v1::model_admin_server::{ModelAdmin, ModelAdminServer};
use edgeinfer::v1::{LoadModelRequest, LoadModelResponse};
use edgeinfer_model::ModelFormat;
use tonic::service::RoutesBuilder;
use tonic::{Request, Response, Status};

use edgeinfer::inference::model_repository::model_repository_service_server::ModelRepositoryService;
use edgeinfer::inference::model_repository::repository_index_response::ModelIndex;
use edgeinfer::inference::model_repository::{
    RepositoryIndexRequest, RepositoryIndexResponse, RepositoryModelLoadRequest,
    RepositoryModelLoadResponse, RepositoryModelUnloadRequest, RepositoryModelUnloadResponse,
};

use crate::models::{LoadError, ModelSlot, Source};
use crate::node::model_info;
use crate::repository::{Entry, Repository, RepositoryError};

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
            LoadError::Incompatible { .. } | LoadError::NoFile | LoadError::NoRepository => {
                Status::failed_precondition(message)
            }
            LoadError::Repository(RepositoryError::NotFound(_)) => Status::not_found(message),
            LoadError::Repository(_) => Status::failed_precondition(message),
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
            match (&version, slot.repository()) {
                // With a repository, a version names a version directory there.
                (Some(v), Some(_)) => slot.load_version(Some(v)).await?,
                _ => slot.reload(version).await?,
            }
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

/// The model repository extension over a node, on its admin listener.
pub struct RepositoryService<N> {
    node: Arc<N>,
}

impl<N> RepositoryService<N> {
    /// The repository of `node`.
    pub fn new(node: Arc<N>) -> Self {
        Self { node }
    }
}

impl<N: HasModelSlot> RepositoryService<N> {
    /// The repository and served model, or FAILED_PRECONDITION when the node has none.
    fn repository(&self, name: &str) -> Result<(&Repository, &str), Status> {
        let Some((repository, model)) = self.node.model_slot().repository() else {
            return Err(Status::failed_precondition(
                "this node serves no model repository (start it with --model-repository)",
            ));
        };
        let own = repository
            .root()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if !name.is_empty() && name != own {
            return Err(Status::not_found(format!(
                "repository_name: {name:?}; this node serves one repository, {own:?}"
            )));
        }
        Ok((repository, model))
    }
}

fn repository_status(e: RepositoryError) -> Status {
    match e {
        RepositoryError::NotFound(m) => Status::not_found(m),
        other => Status::failed_precondition(other.to_string()),
    }
}

#[tonic::async_trait]
impl<N: HasModelSlot> ModelRepositoryService for RepositoryService<N> {
    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let r = request.into_inner();
        let (repository, served_model) = self.repository(&r.repository_name)?;
        let current = self.node.model_slot().current();
        let in_service = |e: &Entry| {
            e.model == served_model
                && e.version.to_string() == current.meta.version
                && current.source == Source::File(e.file.clone())
        };
        let models = repository
            .scan()
            .map_err(repository_status)?
            .into_iter()
            .map(|e| {
                let ready = in_service(&e);
                ModelIndex {
                    name: e.model.clone(),
                    version: e.version.to_string(),
                    state: if ready { "READY" } else { "UNAVAILABLE" }.into(),
                    reason: if ready {
                        String::new()
                    } else if e.model == served_model {
                        "not the version in service".into()
                    } else {
                        format!("this node serves {served_model:?}")
                    },
                }
            })
            .filter(|m| !r.ready || m.state == "READY")
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let r = request.into_inner();
        let (_, served_model) = self.repository(&r.repository_name)?;
        if r.model_name != served_model {
            return Err(Status::failed_precondition(format!(
                "model_name: {:?}; this node serves {served_model:?} (one model per node)",
                r.model_name
            )));
        }
        self.node.model_slot().load_version(None).await?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let r = request.into_inner();
        let (_, served_model) = self.repository(&r.repository_name)?;
        if r.model_name == served_model {
            return Err(Status::failed_precondition(format!(
                "model_name: {served_model:?} is the model this node serves; a node always \
                 serves one model: load another version instead"
            )));
        }
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}

/// Adds the model control services (`ModelAdmin`, the model repository extension) over
/// `node` to an admin listener's `routes`; returns their names for health.
pub fn add_model_control<N: HasModelSlot>(
    routes: &mut RoutesBuilder,
    node: Arc<N>,
    max_message_bytes: usize,
) -> [&'static str; 2] {
    routes
        .add_service(
            ModelAdminServer::new(ModelAdminService::new(node.clone()))
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(ModelRepositoryServiceServer::new(RepositoryService::new(
            node,
        )));
    [service_names::MODEL_ADMIN, service_names::MODEL_REPOSITORY]
}

/// Reloads the slot's configured file on SIGHUP, and, when `watch` is set, whenever the file
/// changes. Runs until the task is dropped; refusals are logged by the slot.
pub async fn reload_on_signal_and_change<N: HasModelSlot>(node: Arc<N>, watch: Option<Duration>) {
    let slot = node.model_slot();
    let mut hangup = hangup_signals();
    let mut tick = watch.map(tokio::time::interval);
    if let Some(t) = &mut tick {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut path = slot.file();
    let mut watcher = FileWatch::new(path.as_deref().and_then(stat));
    // The newest repository version tried, so that a refused one is not retried every tick.
    let mut newest_tried = slot
        .repository()
        .map(|_| slot.current().meta.version.clone());
    loop {
        tokio::select! {
            Some(()) = next_hangup(&mut hangup) => {
                if let Some(p) = &path {
                    tracing::info!(file = %p.display(), "SIGHUP: reloading the model file");
                    let _ = slot.reload(None).await;
                    // Loaded as it is now: the watch does not load it again.
                    watcher = FileWatch::new(stat(p));
                }
            }
            Some(_) = next_tick(&mut tick) => {
                if let Some((repository, model)) = slot.repository()
                    && let Ok(latest) = repository.latest(model)
                    && newest_tried.as_deref() != Some(latest.version.to_string().as_str())
                {
                    let v = latest.version.to_string();
                    tracing::info!(model, version = %v, "new version in the model repository");
                    newest_tried = Some(v.clone());
                    let _ = slot.load_version(Some(&v)).await;
                } else if let Some(p) = &path
                    && watcher.observe(stat(p))
                {
                    tracing::info!(file = %p.display(), "model file changed: reloading it");
                    let _ = slot.reload(None).await;
                }
            }
            else => return,
        }
        // A load may have changed the file in service: watch that one from now on.
        let now = slot.file();
        if now != path {
            watcher = FileWatch::new(now.as_deref().and_then(stat));
            path = now;
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
    fn formats_are_named_exactly() {
        assert_eq!(parse_format("gguf").unwrap(), ModelFormat::Gguf);
        let err = parse_format("onnx").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("format:"), "{}", err.message());
    }
}
