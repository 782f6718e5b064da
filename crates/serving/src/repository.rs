//! A model repository in Triton's layout: `<repository>/<model>/<version>/<file>`, versions
//! positive integers, one model file (`.safetensors` or `.gguf`) per version directory.
//!
//! The repository is fixed at start by the node's configuration; requests name a model and a
//! version, which are looked up among the directories found there, never joined to a path as
//! given: nothing received over the network makes a node open a path it names. Scans are
//! bounded (directory entries read), so a huge or hostile directory cannot stall a node.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use edgeinfer_model::Classifier;

use crate::batcher::BatcherConfig;
use crate::metrics::BatcherMetrics;
use crate::models::{ModelSlot, Source};

/// Most directory entries read by one scan, over all levels.
const MAX_ENTRIES: usize = 10_000;

/// One version of one model found in the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The model directory's name.
    pub model: String,
    /// The version directory's name (a positive integer).
    pub version: u64,
    /// The model file inside it.
    pub file: PathBuf,
}

/// Why a repository could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The directory cannot be read.
    #[error("{path}: {error}")]
    Io {
        /// The directory.
        path: String,
        /// What the system said.
        error: std::io::Error,
    },
    /// More entries than a scan reads.
    #[error("{0}: more than {MAX_ENTRIES} entries; a model repository holds models, not data")]
    TooLarge(String),
    /// The model or version is not in the repository.
    #[error("{0}")]
    NotFound(String),
}

/// A model repository on the node's disk.
#[derive(Clone, Debug)]
pub struct Repository {
    root: PathBuf,
}

impl Repository {
    /// The repository at `root`, checked to be a readable directory.
    pub fn open(root: &Path) -> Result<Self, RepositoryError> {
        std::fs::read_dir(root).map_err(|error| RepositoryError::Io {
            path: root.display().to_string(),
            error,
        })?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The repository's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every usable version of every model, sorted by model then version. Directories that are
    /// not a model version (a name that is not a positive integer, no model file, several) are
    /// skipped: Triton skips them too, and a stray file must not stop a node.
    pub fn scan(&self) -> Result<Vec<Entry>, RepositoryError> {
        let mut budget = MAX_ENTRIES;
        let mut found = Vec::new();
        for (model, model_dir) in self.subdirectories(&self.root, &mut budget)? {
            for (version, version_dir) in self.subdirectories(&model_dir, &mut budget)? {
                let Ok(version) = version.parse::<u64>() else {
                    continue;
                };
                if version == 0 {
                    continue;
                }
                let files: Vec<PathBuf> = read_bounded(&version_dir, &mut budget, &self.root)?
                    .into_iter()
                    .filter(|p| {
                        p.is_file()
                            && matches!(
                                p.extension().and_then(|e| e.to_str()),
                                Some("safetensors" | "gguf")
                            )
                    })
                    .collect();
                if let [file] = &files[..] {
                    found.push(Entry {
                        model: model.clone(),
                        version,
                        file: file.clone(),
                    });
                }
            }
        }
        found.sort_by(|a, b| (&a.model, a.version).cmp(&(&b.model, b.version)));
        Ok(found)
    }

    /// The highest version of `model`.
    pub fn latest(&self, model: &str) -> Result<Entry, RepositoryError> {
        self.scan()?
            .into_iter()
            .rfind(|e| e.model == model)
            .ok_or_else(|| {
                RepositoryError::NotFound(format!(
                    "{}: no version of model {model:?} (expected {}/{model}/<version>/<file>)",
                    self.root.display(),
                    self.root.display()
                ))
            })
    }

    /// Version `version` of `model`, looked up among what the scan found.
    pub fn find(&self, model: &str, version: &str) -> Result<Entry, RepositoryError> {
        let entries = self.scan()?;
        let wanted = version.parse::<u64>().ok();
        entries
            .iter()
            .find(|e| e.model == model && Some(e.version) == wanted)
            .cloned()
            .ok_or_else(|| {
                let have: Vec<String> = entries
                    .iter()
                    .filter(|e| e.model == model)
                    .map(|e| e.version.to_string())
                    .collect();
                RepositoryError::NotFound(format!(
                    "version: {version:?} is not a version of {model:?} in the repository \
                     (versions: {})",
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                ))
            })
    }

    fn subdirectories(
        &self,
        dir: &Path,
        budget: &mut usize,
    ) -> Result<Vec<(String, PathBuf)>, RepositoryError> {
        Ok(read_bounded(dir, budget, &self.root)?
            .into_iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?.to_string();
                (!name.starts_with('.')).then_some((name, p))
            })
            .collect())
    }
}

/// The model a node starts on, loaded and probed before any port is bound: the highest
/// version of a model in a repository when one is configured, else the model file.
#[derive(Clone)]
pub struct StartingModel {
    /// The model.
    pub model: Arc<dyn Classifier>,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// The repository, the model directory served from it, and the version loaded.
    pub repository: Option<(Repository, String, String)>,
}

impl StartingModel {
    /// Loads `file`, or the highest version of `model` in `repository` when set. `env`
    /// prefixes the environment names in errors ("EDGE", "CLOUD").
    pub fn load(
        file: &Path,
        repository: Option<&Path>,
        model: &str,
        env: &str,
    ) -> anyhow::Result<Self> {
        let (file, repository, setting) = match repository {
            None => (file.to_path_buf(), None, format!("--model / {env}_MODEL")),
            Some(root) => {
                let setting = format!("--model-repository / {env}_MODEL_REPOSITORY");
                let repo = Repository::open(root).map_err(|e| anyhow!("{setting}: {e}"))?;
                let entry = repo
                    .latest(model)
                    .map_err(|e| anyhow!("{setting}, --repository-model {model:?}: {e}"))?;
                let version = entry.version.to_string();
                (
                    entry.file,
                    Some((repo, model.to_string(), version)),
                    setting,
                )
            }
        };
        let loaded = edgeinfer_model::load_classifier(&file)
            .with_context(|| format!("{setting} {}", file.display()))?;
        Ok(Self {
            model: loaded,
            file,
            repository,
        })
    }

    /// The slot serving this model, its version the repository's when it came from one.
    pub fn into_slot(self, config: BatcherConfig, metrics: BatcherMetrics) -> ModelSlot {
        let version = self.repository.as_ref().map(|(_, _, v)| v.clone());
        let slot = ModelSlot::new(
            self.model,
            Source::File(self.file),
            version,
            config,
            metrics,
        );
        match self.repository {
            Some((repository, name, _)) => slot.with_repository(repository, name),
            None => slot,
        }
    }
}

fn read_bounded(
    dir: &Path,
    budget: &mut usize,
    root: &Path,
) -> Result<Vec<PathBuf>, RepositoryError> {
    let io = |error| RepositoryError::Io {
        path: dir.display().to_string(),
        error,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        if *budget == 0 {
            return Err(RepositoryError::TooLarge(root.display().to_string()));
        }
        *budget -= 1;
        out.push(entry.map_err(io)?.path());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        dir
    }

    #[test]
    fn versions_are_found_in_numeric_order_and_strays_skipped() {
        let d = layout(&[
            "edge-mlp/1/model.gguf",
            "edge-mlp/10/model.gguf",
            "edge-mlp/2/model.safetensors",
            "edge-mlp/latest/model.gguf",
            "edge-mlp/0/model.gguf",
            "edge-mlp/3/README.txt",
            "edge-mlp/4/a.gguf",
            "edge-mlp/4/b.gguf",
            "cloud-cnn/1/model.safetensors",
        ]);
        let r = Repository::open(d.path()).unwrap();
        let versions: Vec<(String, u64)> = r
            .scan()
            .unwrap()
            .into_iter()
            .map(|e| (e.model, e.version))
            .collect();
        assert_eq!(
            versions,
            vec![
                ("cloud-cnn".into(), 1),
                ("edge-mlp".into(), 1),
                ("edge-mlp".into(), 2),
                ("edge-mlp".into(), 10),
            ]
        );
        assert_eq!(r.latest("edge-mlp").unwrap().version, 10);
        assert_eq!(r.find("edge-mlp", "2").unwrap().version, 2);
    }

    #[test]
    fn unknown_models_and_versions_are_named() {
        let d = layout(&["edge-mlp/1/model.gguf"]);
        let r = Repository::open(d.path()).unwrap();
        let e = r.find("edge-mlp", "../../etc").unwrap_err().to_string();
        assert!(e.contains("versions: 1"), "{e}");
        let e = r.latest("other").unwrap_err().to_string();
        assert!(e.contains("\"other\""), "{e}");
        assert!(Repository::open(&d.path().join("missing")).is_err());
    }
}
