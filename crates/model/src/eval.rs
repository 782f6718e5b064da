//! Measuring a model: accuracy and calibration on a dataset, latency of the forward pass, and
//! the calibration step that writes both into the model's metadata.

use std::time::Instant;

use crate::calibrate::{self, ECE_BINS};
use crate::mnist::Dataset;
use crate::{Classifier, Model, ModelError};

/// Rows per forward pass when evaluating a whole dataset.
const EVAL_BATCH: usize = 500;

/// Accuracy and calibration of a model on a dataset.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Evaluation {
    pub n: usize,
    pub accuracy: f64,
    /// ECE (15 bins) of the probabilities at the model's temperature.
    pub ece: f64,
    /// ECE at temperature 1, as the network came out of training.
    pub ece_uncalibrated: f64,
    pub nll: f64,
    pub nll_uncalibrated: f64,
    pub temperature: f32,
}

/// Logits of every image of `data`, row-major.
pub fn logits(model: &Model, data: &Dataset) -> Result<Vec<f32>, ModelError> {
    let mut out = Vec::with_capacity(data.len() * model.metadata().labels.len());
    for start in (0..data.len()).step_by(EVAL_BATCH) {
        let end = (start + EVAL_BATCH).min(data.len());
        out.extend(model.logits(&data.pixels_f32(start..end), end - start)?);
    }
    Ok(out)
}

/// Accuracy and ECE before and after temperature scaling, on `data`.
pub fn evaluate(model: &Model, data: &Dataset) -> Result<Evaluation, ModelError> {
    let k = model.metadata().labels.len();
    let t = model.metadata().temperature;
    let z = logits(model, data)?;
    let raw = calibrate::probabilities(&z, k, 1.0);
    let scaled = calibrate::probabilities(&z, k, t);
    Ok(Evaluation {
        n: data.len(),
        accuracy: calibrate::accuracy(&z, &data.labels, k),
        ece: calibrate::ece(&scaled, &data.labels, k, ECE_BINS),
        ece_uncalibrated: calibrate::ece(&raw, &data.labels, k, ECE_BINS),
        nll: calibrate::nll(&z, &data.labels, k, f64::from(t)),
        nll_uncalibrated: calibrate::nll(&z, &data.labels, k, 1.0),
        temperature: t,
    })
}

/// Fits the temperature on `validation`, measures accuracy on `test`, and writes both into the
/// model's metadata. Returns the test evaluation.
pub fn calibrate(
    model: &mut Model,
    validation: &Dataset,
    test: &Dataset,
) -> Result<Evaluation, ModelError> {
    let k = model.metadata().labels.len();
    let z = logits(model, validation)?;
    let mut m = model.metadata().clone();
    m.temperature = calibrate::fit_temperature(&z, &validation.labels, k);
    model.set_metadata(m)?;
    let e = evaluate(model, test)?;
    let mut m = model.metadata().clone();
    m.test_accuracy = e.accuracy;
    model.set_metadata(m)?;
    Ok(e)
}

/// Forward-pass latency in microseconds.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Latency {
    /// Median time of one `classify` call on one image.
    pub batch1: f64,
    /// Median time of one `classify` call on 64 images, divided by 64.
    pub batch64_per_image: f64,
}

/// Median `classify` latency at batch 1 and 64, over images of `data`, on the calling thread.
pub fn latency(model: &dyn Classifier, data: &Dataset) -> Result<Latency, ModelError> {
    let one = data.pixels_f32(0..1);
    let many = data.pixels_f32(0..64.min(data.len()));
    let batch = many.len() / data.image_len().max(1);
    let b1 = median_us(|| model.classify(&one, 1).map(drop), 3_000)?;
    let b64 = median_us(|| model.classify(&many, batch).map(drop), 300)?;
    Ok(Latency {
        batch1: b1,
        batch64_per_image: b64 / batch as f64,
    })
}

/// Median wall time of `f` in microseconds, after a warm-up of a tenth of the runs.
fn median_us(
    mut f: impl FnMut() -> Result<(), ModelError>,
    runs: usize,
) -> Result<f64, ModelError> {
    for _ in 0..runs / 10 {
        f()?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[runs / 2])
}
