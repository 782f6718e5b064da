//! Temperature scaling and the calibration measures: accuracy, negative log-likelihood,
//! expected calibration error.
//!
//! Temperature scaling (Guo et al., 2017) divides the logits by one scalar `T` fitted on held-out
//! data to minimise the negative log-likelihood. It never changes the predicted class, only how
//! confident the model says it is, so that "confidence 0.9" means right about 90 % of the time
//! and the edge's threshold reads as a probability.

use crate::classifier::softmax_in_place;

/// Number of equal-width confidence bins of the ECE that `eval` reports.
pub const ECE_BINS: usize = 15;

/// The range searched for the temperature. Far wider than any MNIST model needs, narrow enough
/// that the search converges in a few dozen steps.
const LOG_T_RANGE: (f64, f64) = (-3.0, 3.0);

/// Fraction of rows whose largest score is at the label's index.
pub fn accuracy(scores: &[f32], labels: &[u8], n_classes: usize) -> f64 {
    let right = scores
        .chunks(n_classes)
        .zip(labels)
        .filter(|(row, label)| argmax(row) == usize::from(**label))
        .count();
    right as f64 / labels.len().max(1) as f64
}

/// Index of the largest value (the first, on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// Mean negative log-likelihood of the labels under `softmax(logits / temperature)`.
pub fn nll(logits: &[f32], labels: &[u8], n_classes: usize, temperature: f64) -> f64 {
    let total: f64 = logits
        .chunks(n_classes)
        .zip(labels)
        .map(|(row, &label)| {
            let scaled = row.iter().map(|&z| f64::from(z) / temperature);
            let max = scaled.clone().fold(f64::NEG_INFINITY, f64::max);
            let log_sum = scaled.map(|z| (z - max).exp()).sum::<f64>().ln() + max;
            log_sum - f64::from(row[usize::from(label)]) / temperature
        })
        .sum();
    total / labels.len().max(1) as f64
}

/// The temperature minimising [`nll`] on `(logits, labels)`: a golden-section search on
/// `ln T`, where the NLL is unimodal.
pub fn fit_temperature(logits: &[f32], labels: &[u8], n_classes: usize) -> f32 {
    let f = |log_t: f64| nll(logits, labels, n_classes, log_t.exp());
    let inv_phi = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = LOG_T_RANGE;
    let mut c = b - inv_phi * (b - a);
    let mut d = a + inv_phi * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    // 60 steps shrink the interval by 0.618^60 ≈ 3e-13: far below f32 precision of T.
    for _ in 0..60 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - inv_phi * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + inv_phi * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp() as f32
}

/// Softmax probabilities of every row of `logits` at `temperature`.
pub fn probabilities(logits: &[f32], n_classes: usize, temperature: f32) -> Vec<f32> {
    let mut p = logits.to_vec();
    for row in p.chunks_mut(n_classes) {
        softmax_in_place(row, temperature);
    }
    p
}

/// Expected calibration error with `bins` equal-width bins of confidence (the max probability):
/// the sample-weighted mean gap between each bin's accuracy and its mean confidence.
pub fn ece(probs: &[f32], labels: &[u8], n_classes: usize, bins: usize) -> f64 {
    let mut count = vec![0usize; bins];
    let mut conf_sum = vec![0f64; bins];
    let mut right = vec![0usize; bins];
    for (row, &label) in probs.chunks(n_classes).zip(labels) {
        let pred = argmax(row);
        let conf = f64::from(row[pred]);
        // Bins are (k/bins, (k+1)/bins]; confidence 0 (impossible after softmax) goes to bin 0.
        let bin = ((conf * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        count[bin] += 1;
        conf_sum[bin] += conf;
        if pred == usize::from(label) {
            right[bin] += 1;
        }
    }
    let n = labels.len().max(1) as f64;
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| {
            let c = count[b] as f64;
            (right[b] as f64 / c - conf_sum[b] / c).abs() * c / n
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_argmax() {
        let scores = [0.1, 0.9, 0.8, 0.2, 0.5, 0.5];
        assert_eq!(accuracy(&scores, &[1, 0, 1], 2), 2.0 / 3.0);
        assert_eq!(argmax(&[0.5, 0.5]), 0);
    }

    #[test]
    fn ece_of_perfectly_calibrated_and_overconfident() {
        // Four predictions at confidence 0.75, three right: calibrated, ECE 0.
        let probs = [0.75, 0.25].repeat(4);
        assert!(ece(&probs, &[0, 0, 0, 1], 2, 15) < 1e-9);
        // Confidence 0.99 but half right: ECE 0.49.
        let probs = [0.99, 0.01].repeat(4);
        assert!((ece(&probs, &[0, 0, 1, 1], 2, 15) - 0.49).abs() < 1e-6);
    }

    #[test]
    fn fitted_temperature_recovers_the_generating_one() {
        // Labels drawn from softmax(z / 2): the NLL-optimal temperature is about 2.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (n, k) = (20_000, 4);
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..n {
            let z: Vec<f32> = (0..k).map(|_| rng.random_range(-6.0..6.0)).collect();
            let p = probabilities(&z, k, 2.0);
            let u: f32 = rng.random();
            let mut acc = 0.0;
            let label = p.iter().position(|&q| {
                acc += q;
                u < acc
            });
            labels.push(label.unwrap_or(k - 1) as u8);
            logits.extend(z);
        }
        let t = fit_temperature(&logits, &labels, k);
        assert!((t - 2.0).abs() < 0.1, "fitted {t}");
        assert!(nll(&logits, &labels, k, f64::from(t)) <= nll(&logits, &labels, k, 1.0));
    }
}
