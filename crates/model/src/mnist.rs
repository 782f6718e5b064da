//! MNIST from its original gzipped IDX files, with every header field checked.
//!
//! The IDX format is a big-endian header (magic, then one u32 per dimension) followed by the
//! raw u8 values. A truncated download or a swapped file must fail loudly here, naming the file
//! and what is wrong with it, rather than train a model on garbage.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

/// Magic number of an IDX file of unsigned bytes with three dimensions (images).
const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels).
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Environment variable naming the directory that holds the four MNIST files.
pub const ENV_DATA_DIR: &str = "EDGEINFER_DATA_DIR";

/// Number of training images set aside, from the end of the training file, for model selection
/// and temperature calibration (the conventional MNIST split).
pub const VALIDATION_LEN: usize = 5_000;

/// Number of classes in MNIST.
pub const NUM_CLASSES: usize = 10;

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte.gz";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte.gz";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte.gz";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte.gz";

/// Why an MNIST file could not be loaded. Every variant names the file; causes are part of the
/// message (not `source()`), so that printing the error alone says why.
#[derive(Debug, thiserror::Error)]
pub enum MnistError {
    #[error("cannot read {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} is not a gzip file or its gzip stream is corrupt: {cause}")]
    Gzip {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: bad magic number {found:#010x}, expected {expected:#010x} ({what})")]
    Magic {
        path: PathBuf,
        found: u32,
        expected: u32,
        what: &'static str,
    },
    #[error("{path} is truncated: {detail}")]
    Truncated { path: PathBuf, detail: String },
    #[error("{path} has trailing data: {extra} bytes after the declared {declared} items")]
    TrailingData {
        path: PathBuf,
        extra: usize,
        declared: usize,
    },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        images: PathBuf,
        n_images: usize,
        labels: PathBuf,
        n_labels: usize,
    },
}

/// A set of labelled grayscale images, pixels as stored in the IDX file (0..=255).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// `len() * rows * cols` pixels, image after image, row-major.
    pub images: Vec<u8>,
    /// One label per image, `0..NUM_CLASSES`.
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

// === impl Dataset ===

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of one image per row-major order.
    pub fn image_len(&self) -> usize {
        self.rows * self.cols
    }

    /// The pixels of image `i`. Panics if `i >= len()`, as slice indexing does.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// The images `range`, as a new dataset.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Dataset {
        let n = self.image_len();
        Dataset {
            images: self.images[range.start * n..range.end * n].to_vec(),
            labels: self.labels[range].to_vec(),
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// The first `len() - VALIDATION_LEN` images (for training) and the last `VALIDATION_LEN`
    /// (for validation and calibration). A set no larger than `VALIDATION_LEN` is all validation.
    pub fn split_validation(&self) -> (Dataset, Dataset) {
        let cut = self.len().saturating_sub(VALIDATION_LEN);
        (self.slice(0..cut), self.slice(cut..self.len()))
    }

    /// Pixels of images `range` scaled to [0, 1], as the models take them.
    pub fn pixels_f32(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        let n = self.image_len();
        self.images[range.start * n..range.end * n]
            .iter()
            .map(|&p| f32::from(p) / 255.0)
            .collect()
    }
}

/// The 60,000 training images (validation split included: see [`Dataset::split_validation`]).
pub fn load_train(dir: &Path) -> Result<Dataset, MnistError> {
    load_pair(&dir.join(TRAIN_IMAGES), &dir.join(TRAIN_LABELS))
}

/// The 10,000 test images.
pub fn load_test(dir: &Path) -> Result<Dataset, MnistError> {
    load_pair(&dir.join(TEST_IMAGES), &dir.join(TEST_LABELS))
}

/// Writes `data` as the training pair of `dir` (`train-images-idx3-ubyte.gz`,
/// `train-labels-idx1-ubyte.gz`), so that [`load_train`] reads it back: how a data set other
/// than MNIST (hard examples from the edge) is handed to `edgeinfer train`. Each file is
/// written aside and renamed into place.
pub fn save_train(dir: &Path, data: &Dataset) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind, Write};
    let n = u32::try_from(data.len())
        .map_err(|_| Error::new(ErrorKind::InvalidInput, "too many images"))?;
    if data.images.len() != data.len() * data.image_len() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} pixels for {} images of {}x{}",
                data.images.len(),
                data.len(),
                data.rows,
                data.cols
            ),
        ));
    }
    std::fs::create_dir_all(dir)?;
    let write = |name: &str, header: &[u32], body: &[u8]| -> std::io::Result<()> {
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut gz = flate2::write::GzEncoder::new(
            std::io::BufWriter::new(std::fs::File::create(&tmp)?),
            flate2::Compression::default(),
        );
        for word in header {
            gz.write_all(&word.to_be_bytes())?;
        }
        gz.write_all(body)?;
        gz.finish()?.flush()?;
        std::fs::rename(&tmp, dir.join(name))
    };
    write(
        TRAIN_IMAGES,
        &[IMAGES_MAGIC, n, data.rows as u32, data.cols as u32],
        &data.images,
    )?;
    write(TRAIN_LABELS, &[LABELS_MAGIC, n], &data.labels)
}

/// Where the MNIST files are: `$EDGEINFER_DATA_DIR` if set, else the first `data/mnist` found
/// walking up from the current directory, else `data/mnist` of the source tree this crate was
/// built from. The result may not exist; loading then names the missing file.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(ENV_DATA_DIR) {
        return PathBuf::from(dir);
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            let candidate = dir.join("data").join("mnist");
            if candidate.join(TEST_IMAGES).is_file() {
                return candidate;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist")
}

/// Loads an images file and its labels file and checks they agree.
pub fn load_pair(images_path: &Path, labels_path: &Path) -> Result<Dataset, MnistError> {
    let (images, n_images, rows, cols) = load_images(images_path)?;
    let labels = load_labels(labels_path)?;
    if labels.len() != n_images {
        return Err(MnistError::CountMismatch {
            images: images_path.to_path_buf(),
            n_images,
            labels: labels_path.to_path_buf(),
            n_labels: labels.len(),
        });
    }
    Ok(Dataset {
        images,
        labels,
        rows,
        cols,
    })
}

fn load_images(path: &Path) -> Result<(Vec<u8>, usize, usize, usize), MnistError> {
    let bytes = read_gz(path)?;
    let header = parse_header(path, &bytes, IMAGES_MAGIC, 3, "images, u8, 3 dimensions")?;
    let (n, rows, cols) = (header[0], header[1], header[2]);
    if rows == 0 || cols == 0 {
        return Err(MnistError::Invalid {
            path: path.to_path_buf(),
            detail: format!("image size {rows}x{cols} is empty"),
        });
    }
    let body = take_body(path, &bytes, 16, n, rows * cols)?;
    Ok((body, n, rows, cols))
}

fn load_labels(path: &Path) -> Result<Vec<u8>, MnistError> {
    let bytes = read_gz(path)?;
    let header = parse_header(path, &bytes, LABELS_MAGIC, 1, "labels, u8, 1 dimension")?;
    let labels = take_body(path, &bytes, 8, header[0], 1)?;
    if let Some(i) = labels.iter().position(|&l| usize::from(l) >= NUM_CLASSES) {
        return Err(MnistError::Invalid {
            path: path.to_path_buf(),
            detail: format!("label {} of item {i} is not a digit 0-9", labels[i]),
        });
    }
    Ok(labels)
}

fn read_gz(path: &Path) -> Result<Vec<u8>, MnistError> {
    let compressed = std::fs::read(path).map_err(|cause| MnistError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    if !compressed.starts_with(&[0x1f, 0x8b]) {
        return Err(MnistError::Gzip {
            path: path.to_path_buf(),
            cause: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no gzip magic number (1f 8b) at the start",
            ),
        });
    }
    let mut bytes = Vec::new();
    GzDecoder::new(compressed.as_slice())
        .read_to_end(&mut bytes)
        .map_err(|cause| {
            // A gzip stream cut short is the common case of a truncated download.
            if cause.kind() == std::io::ErrorKind::UnexpectedEof {
                MnistError::Truncated {
                    path: path.to_path_buf(),
                    detail: "the gzip stream ends early".into(),
                }
            } else {
                MnistError::Gzip {
                    path: path.to_path_buf(),
                    cause,
                }
            }
        })?;
    Ok(bytes)
}

/// Checks the magic number and returns the `n_dims` dimensions that follow it.
fn parse_header(
    path: &Path,
    bytes: &[u8],
    magic: u32,
    n_dims: usize,
    what: &'static str,
) -> Result<Vec<usize>, MnistError> {
    let header_len = 4 * (1 + n_dims);
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if bytes.len() < 4 {
        return Err(MnistError::Truncated {
            path: path.to_path_buf(),
            detail: format!("{} bytes, shorter than the magic number", bytes.len()),
        });
    }
    let found = word(0);
    if found != magic {
        return Err(MnistError::Magic {
            path: path.to_path_buf(),
            found,
            expected: magic,
            what,
        });
    }
    if bytes.len() < header_len {
        return Err(MnistError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "{} bytes, shorter than its {header_len}-byte header",
                bytes.len()
            ),
        });
    }
    Ok((0..n_dims).map(|d| word(4 + 4 * d) as usize).collect())
}

/// The `n * item_len` bytes after the header, refusing a short or over-long file.
fn take_body(
    path: &Path,
    bytes: &[u8],
    header_len: usize,
    n: usize,
    item_len: usize,
) -> Result<Vec<u8>, MnistError> {
    let want = n.checked_mul(item_len).ok_or_else(|| MnistError::Invalid {
        path: path.to_path_buf(),
        detail: format!("declared size {n} x {item_len} overflows"),
    })?;
    let have = bytes.len() - header_len;
    if have < want {
        return Err(MnistError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "header declares {n} items of {item_len} bytes ({want} bytes), file holds {have}"
            ),
        });
    }
    if have > want {
        return Err(MnistError::TrailingData {
            path: path.to_path_buf(),
            extra: have - want,
            declared: n,
        });
    }
    Ok(bytes[header_len..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_saved_training_pair_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = Dataset {
            images: (0..3 * 4 * 5).map(|i| (i * 7) as u8).collect(),
            labels: vec![3, 0, 9],
            rows: 4,
            cols: 5,
        };
        save_train(dir.path(), &data).unwrap();
        assert_eq!(load_train(dir.path()).unwrap(), data);
        let mut bad = data.clone();
        bad.images.pop();
        assert!(save_train(dir.path(), &bad).is_err());
    }

    fn idx_images(n: u32, rows: u32, cols: u32, body_len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [IMAGES_MAGIC, n, rows, cols] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend((0..body_len).map(|i| i as u8));
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [LABELS_MAGIC, labels.len() as u32] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend_from_slice(labels);
        v
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn loads_a_small_valid_pair() {
        let dir = tempfile::tempdir().unwrap();
        let i = write(dir.path(), "i.gz", &gz(&idx_images(3, 2, 2, 12)));
        let l = write(dir.path(), "l.gz", &gz(&idx_labels(&[1, 2, 9])));
        let d = load_pair(&i, &l).unwrap();
        assert_eq!((d.len(), d.rows, d.cols), (3, 2, 2));
        assert_eq!(d.image(1), &[4, 5, 6, 7]);
        assert_eq!(d.labels, vec![1, 2, 9]);
        assert_eq!(d.pixels_f32(2..3)[3], 11.0 / 255.0);
    }

    #[test]
    fn wrong_magic_names_file_and_numbers() {
        let dir = tempfile::tempdir().unwrap();
        // A labels file where an images file is expected.
        let i = write(dir.path(), "swapped.gz", &gz(&idx_labels(&[1, 2])));
        let l = write(dir.path(), "l.gz", &gz(&idx_labels(&[1, 2])));
        let err = load_pair(&i, &l).unwrap_err();
        assert!(
            matches!(err, MnistError::Magic { found: 0x801, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("swapped.gz") && msg.contains("0x00000803"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_body_is_reported_with_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let i = write(dir.path(), "short.gz", &gz(&idx_images(3, 2, 2, 11)));
        let l = write(dir.path(), "l.gz", &gz(&idx_labels(&[1, 2, 3])));
        let err = load_pair(&i, &l).unwrap_err();
        assert!(matches!(err, MnistError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("12 bytes"), "{err}");
    }

    #[test]
    fn truncated_header_and_gzip_stream() {
        let dir = tempfile::tempdir().unwrap();
        let header_only = &idx_images(3, 2, 2, 0)[..10];
        let i = write(dir.path(), "h.gz", &gz(header_only));
        let err = load_images(&i).unwrap_err();
        assert!(matches!(err, MnistError::Truncated { .. }), "{err}");

        let full = gz(&idx_images(100, 28, 28, 100 * 784));
        let cut = write(dir.path(), "cut.gz", &full[..full.len() / 2]);
        let err = load_images(&cut).unwrap_err();
        assert!(matches!(err, MnistError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("cut.gz"), "{err}");
    }

    #[test]
    fn not_gzip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "plain", &idx_labels(&[1]));
        assert!(matches!(
            load_labels(&p).unwrap_err(),
            MnistError::Gzip { .. }
        ));
        let err = load_labels(&dir.path().join("nope.gz")).unwrap_err();
        assert!(matches!(err, MnistError::Io { .. }));
        assert!(err.to_string().contains("nope.gz"));
    }

    #[test]
    fn trailing_data_count_mismatch_and_bad_label() {
        let dir = tempfile::tempdir().unwrap();
        let i = write(dir.path(), "long.gz", &gz(&idx_images(1, 2, 2, 5)));
        assert!(matches!(
            load_images(&i).unwrap_err(),
            MnistError::TrailingData { extra: 1, .. }
        ));

        let i = write(dir.path(), "i.gz", &gz(&idx_images(2, 2, 2, 8)));
        let l = write(dir.path(), "l.gz", &gz(&idx_labels(&[1, 2, 3])));
        assert!(matches!(
            load_pair(&i, &l).unwrap_err(),
            MnistError::CountMismatch {
                n_images: 2,
                n_labels: 3,
                ..
            }
        ));

        let l = write(dir.path(), "bad.gz", &gz(&idx_labels(&[1, 12])));
        let err = load_labels(&l).unwrap_err();
        assert!(err.to_string().contains("label 12 of item 1"), "{err}");
    }

    #[test]
    fn validation_split_is_the_tail() {
        let d = Dataset {
            images: (0..6000u32).map(|i| (i % 251) as u8).collect(),
            labels: (0..6000u32).map(|i| (i % 10) as u8).collect(),
            rows: 1,
            cols: 1,
        };
        let (train, val) = d.split_validation();
        assert_eq!((train.len(), val.len()), (1000, VALIDATION_LEN));
        assert_eq!(val.labels[0], d.labels[1000]);
    }

    /// The shipped files: the counts and shapes the README promises. They ship with the
    /// repository, so a missing file fails here.
    #[test]
    fn shipped_mnist_files_load() {
        let dir = default_data_dir();
        let test = load_test(&dir)
            .unwrap_or_else(|e| panic!("the MNIST files ship in {}: {e}", dir.display()));
        assert_eq!((test.len(), test.rows, test.cols), (10_000, 28, 28));
    }
}
