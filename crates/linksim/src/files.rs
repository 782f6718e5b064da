//! Reading the files a profile names, with bounds, and only where the reader allows.
//!
//! Two kinds of text reach this crate. A profile the operator names on the command line or in a
//! local file ([`LinkProfile::resolve`], [`LinkProfile::load`]) is trusted to name its trace
//! files by any path. A profile document received over the network
//! ([`LinkProfile::from_document_in`], what the edge's `SetLinkProfile` carries) is not: it may
//! name a trace only by a bare file name, looked up in a directory the operator fixed at start
//! ([`TraceSource::Dir`]), or carry the trace inline. Whatever the source, every read stops at a
//! size limit, only regular files are read (so `/dev/zero` or a FIFO is refused before it is
//! opened), and no error quotes what a file contains: a name and a reason only.
//!
//! [`LinkProfile::resolve`]: crate::LinkProfile::resolve
//! [`LinkProfile::load`]: crate::LinkProfile::load
//! [`LinkProfile::from_document_in`]: crate::LinkProfile::from_document_in

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::profile::ProfileError;

/// Largest profile file or document read, in bytes: gRPC's default message limit, so that a
/// document too large for `SetLinkProfile` is also too large as a file.
pub const MAX_PROFILE_BYTES: u64 = 4 << 20;

/// Largest trace file read, in bytes (a Mahimahi trace of an hour at 50 Mbit/s is about 80 MB;
/// the traces in use are a few minutes).
pub const MAX_TRACE_BYTES: u64 = 16 << 20;

/// Where the trace names of a profile document received over the network may point.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TraceSource {
    /// Nowhere: a document may carry its traces inline (`trace_ms`) but name no file.
    #[default]
    None,
    /// Bare file names inside this directory (canonical: symlinks resolved when it was made).
    Dir(PathBuf),
}

impl TraceSource {
    /// The directory `dir`, checked to exist now; what `--link-trace-dir` gives.
    pub fn dir(dir: impl AsRef<Path>) -> Result<TraceSource, ProfileError> {
        let dir = dir.as_ref();
        let canonical = std::fs::canonicalize(dir).map_err(|source| ProfileError::Io {
            path: dir.to_owned(),
            source,
        })?;
        if !canonical.is_dir() {
            return Err(ProfileError::Io {
                path: dir.to_owned(),
                source: std::io::Error::other("not a directory"),
            });
        }
        Ok(TraceSource::Dir(canonical))
    }

    /// The file a document's `field` (for example `uplink.trace`) names: `name` must be a bare
    /// file name, and the file, after symlinks, a regular file inside the directory.
    pub(crate) fn resolve(&self, field: &str, name: &Path) -> Result<PathBuf, ProfileError> {
        let TraceSource::Dir(dir) = self else {
            return Err(invalid(
                field,
                "names a trace file, but this node reads no trace files from profile documents \
                 (it was started without a trace directory); give the trace inline as `trace_ms`",
            ));
        };
        let bare = name.to_str().is_some_and(|s| {
            !s.is_empty() && !s.contains(['/', '\\', '\0']) && s != "." && s != ".."
        }) && matches!(
            name.components().collect::<Vec<_>>().as_slice(),
            [Component::Normal(_)]
        );
        if !bare {
            return Err(invalid(
                field,
                "must be a bare file name in the trace directory (no path separators, no `..`, \
                 not absolute)",
            ));
        }
        let canonical = std::fs::canonicalize(dir.join(name))
            .map_err(|_| invalid(field, "names no file in the trace directory"))?;
        if canonical.parent() != Some(dir.as_path()) {
            return Err(invalid(
                field,
                "names a link that leads out of the trace directory",
            ));
        }
        if !canonical.is_file() {
            return Err(invalid(field, "names something that is not a regular file"));
        }
        Ok(canonical)
    }
}

fn invalid(field: &str, reason: &str) -> ProfileError {
    ProfileError::Invalid {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Why a bounded read failed; the caller wraps it with what the file was for.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The system refused, or the file is not a regular file.
    Io(std::io::Error),
    /// Longer than the limit.
    TooLarge,
}

/// Reads a regular file as UTF-8, refusing one longer than `limit` bytes. The size is checked
/// on what is read, not on what the metadata says (a file may grow), and nothing else is
/// opened: a device or a FIFO is refused on its metadata, before `open` could block on it.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<String, ReadError> {
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::Io(std::io::Error::other("not a regular file")));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge);
    }
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: Result<PathBuf, ProfileError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn names_resolve_inside_the_directory_only() {
        let root = tempfile::tempdir().unwrap();
        let traces = root.path().join("traces");
        std::fs::create_dir(&traces).unwrap();
        std::fs::write(traces.join("ok.up"), "1\n").unwrap();
        std::fs::write(root.path().join("secret"), "s3cret\n").unwrap();
        std::fs::create_dir(traces.join("sub")).unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), traces.join("escape")).unwrap();
        std::os::unix::fs::symlink("ok.up", traces.join("alias")).unwrap();
        let src = TraceSource::dir(&traces).unwrap();
        let f = "uplink.trace";

        let ok = src.resolve(f, Path::new("ok.up")).unwrap();
        assert_eq!(ok, std::fs::canonicalize(traces.join("ok.up")).unwrap());
        // A link to a file inside stays allowed.
        assert_eq!(src.resolve(f, Path::new("alias")).unwrap(), ok);

        let secret = root.path().join("secret");
        let inside_abs = traces.join("ok.up");
        for name in [
            Path::new("/etc/passwd"),
            Path::new("../secret"),
            Path::new("sub/../ok.up"),
            Path::new("./ok.up"),
            Path::new(".."),
            Path::new(""),
            inside_abs.as_path(),
            secret.as_path(),
        ] {
            let err = reason(src.resolve(f, name));
            assert!(err.contains("`uplink.trace`"), "{name:?}: {err}");
            assert!(err.contains("bare file name"), "{name:?}: {err}");
        }
        assert!(reason(src.resolve(f, Path::new("escape"))).contains("out of the trace directory"));
        assert!(reason(src.resolve(f, Path::new("sub"))).contains("not a regular file"));
        assert!(reason(src.resolve(f, Path::new("missing"))).contains("names no file"));
        for err in [
            reason(src.resolve(f, Path::new("escape"))),
            reason(src.resolve(f, Path::new("../secret"))),
        ] {
            assert!(!err.contains("s3cret"), "{err}");
        }
        let none = reason(TraceSource::None.resolve(f, Path::new("ok.up")));
        assert!(none.contains("trace_ms"), "{none}");
    }

    #[test]
    fn reads_are_bounded_and_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "12345").unwrap();
        assert_eq!(read_bounded(&path, 5).unwrap(), "12345");
        assert!(matches!(read_bounded(&path, 4), Err(ReadError::TooLarge)));
        assert!(matches!(
            read_bounded(Path::new("/dev/zero"), 1 << 20),
            Err(ReadError::Io(_))
        ));
        assert!(matches!(
            read_bounded(dir.path(), 1 << 20),
            Err(ReadError::Io(_))
        ));
    }
}
