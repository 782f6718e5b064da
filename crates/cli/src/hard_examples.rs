//! From the edge's hard-example store to a data set `edgeinfer train` reads: the records'
//! inputs as 8-bit images (`round(x * 255)`, clamped to [0, 255]) labelled with the cloud's
//! answer, written as an MNIST IDX training pair (`mnist::save_train`).
//!
//! Records that cannot be images of the data set are skipped and counted by why, never
//! guessed at: an input shape other than one channel of `rows x cols`, a shape unlike the
//! first record's, an input of the wrong length or with non-finite values, a cloud label that
//! is not a class index of its probabilities (or not a digit 0-9, which is what IDX labels of
//! this project hold).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use edge_node::hard_examples::{self, HardExample, Skipped};
use edgeinfer_model::mnist::{self, Dataset, NUM_CLASSES};

/// What an export found.
#[derive(Clone, Debug, Default)]
pub struct Export {
    /// The images and the cloud's labels.
    pub data: Dataset,
    /// Records the store held (after the filter).
    pub records: usize,
    /// Records left out, by why.
    pub skipped: BTreeMap<&'static str, usize>,
    /// Parts of segments that could not be read (torn tails, corruption).
    pub unreadable: Vec<Skipped>,
}

/// The `rows x cols` of a record that is an image of the data set, or why it is not one.
fn unfit(r: &HardExample, shape: Option<(usize, usize)>) -> Result<(usize, usize), &'static str> {
    let (rows, cols) = match r.input_shape[..] {
        [1, rows, cols] | [rows, cols] => (rows as usize, cols as usize),
        _ => return Err("input is not one channel of rows x cols"),
    };
    if shape.is_some_and(|s| s != (rows, cols)) {
        return Err("input shape differs from the first record's");
    }
    if r.input.len() != rows * cols || rows == 0 || cols == 0 {
        return Err("input length does not match its shape");
    }
    if r.input.iter().any(|x| !x.is_finite()) {
        return Err("input holds non-finite values");
    }
    let class = r.cloud_class as usize;
    if class >= r.cloud_probabilities.len() || class >= NUM_CLASSES {
        return Err("cloud label is not a class 0-9 of its probabilities");
    }
    Ok((rows, cols))
}

/// The records `keep` accepts, as a data set.
pub fn to_dataset(records: &[HardExample], keep: impl Fn(&HardExample) -> bool) -> Export {
    let mut out = Export::default();
    let mut shape = None;
    for r in records.iter().filter(|r| keep(r)) {
        out.records += 1;
        match unfit(r, shape) {
            Ok(s) => {
                shape = Some(s);
                out.data.images.extend(
                    r.input
                        .iter()
                        .map(|&x| (x * 255.0).round().clamp(0.0, 255.0) as u8),
                );
                out.data.labels.push(r.cloud_class as u8);
            }
            Err(why) => *out.skipped.entry(why).or_default() += 1,
        }
    }
    (out.data.rows, out.data.cols) = shape.unwrap_or((0, 0));
    out
}

/// Reads the store in `dir` and keeps the records whose id starts with `id_prefix`.
pub fn collect(dir: &Path, id_prefix: &str) -> anyhow::Result<Export> {
    if !dir.is_dir() {
        anyhow::bail!(
            "{} is not a directory (the edge's --hard-examples-dir)",
            dir.display()
        );
    }
    let report = hard_examples::read_dir(dir)?;
    let mut export = to_dataset(&report.records, |r| r.id.starts_with(id_prefix));
    export.unreadable = report.skipped;
    Ok(export)
}

/// Exports the store in `dir` to the training pair of `out`; refuses an export of nothing.
pub fn export(dir: &Path, out: &Path, id_prefix: &str) -> anyhow::Result<Export> {
    let export = collect(dir, id_prefix)?;
    if export.data.is_empty() {
        anyhow::bail!(
            "{}: no usable hard examples ({} records{}, {} skipped); nothing written",
            dir.display(),
            export.records,
            if id_prefix.is_empty() {
                String::new()
            } else {
                format!(" with ids starting {id_prefix:?}")
            },
            export.skipped.values().sum::<usize>()
        );
    }
    mnist::save_train(out, &export.data).with_context(|| format!("writing {}", out.display()))?;
    Ok(export)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, class: u32) -> HardExample {
        HardExample {
            id: id.into(),
            unix_ms: 1,
            reason: "LOW_CONFIDENCE".into(),
            edge_model: "edge-mlp@1".into(),
            cloud_model: "cloud-cnn@1".into(),
            input_shape: vec![1, 2, 3],
            input: vec![0.0, 0.5, 1.0, 1.5, -0.2, 0.998],
            edge_probabilities: vec![],
            cloud_class: class,
            cloud_label: class.to_string(),
            cloud_probabilities: vec![0.1; 10],
        }
    }

    #[test]
    fn records_become_clamped_rounded_pixels_with_the_clouds_labels() {
        let mut wrong_len = record("a-3", 1);
        wrong_len.input.pop();
        let mut other_shape = record("a-4", 1);
        other_shape.input_shape = vec![3, 2];
        let mut nan = record("a-5", 1);
        nan.input[0] = f32::NAN;
        let records = vec![
            record("a-1", 7),
            record("b-1", 2),
            record("a-2", 10),
            wrong_len,
            other_shape,
            nan,
            record("a-6", 0),
        ];
        let e = to_dataset(&records, |r| r.id.starts_with("a-"));
        assert_eq!(e.records, 6);
        assert_eq!(e.data.labels, vec![7, 0]);
        assert_eq!((e.data.rows, e.data.cols), (2, 3));
        assert_eq!(&e.data.images[..6], &[0, 128, 255, 255, 0, 254]);
        assert_eq!(e.skipped.values().sum::<usize>(), 4);
        assert_eq!(
            e.skipped["cloud label is not a class 0-9 of its probabilities"],
            1
        );
        assert_eq!(e.skipped["input shape differs from the first record's"], 1);
    }

    #[test]
    fn an_export_of_nothing_is_refused_and_a_missing_dir_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let e = export(dir.path(), &out, "").unwrap_err().to_string();
        assert!(e.contains("no usable hard examples"), "{e}");
        assert!(!out.exists());
        let e = export(&dir.path().join("nope"), &out, "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a directory"), "{e}");
    }
}
