//! What a model file says about itself, and the rules it must satisfy.
//!
//! Both file formats carry the same keys, all under the `edgeinfer.` prefix: as strings in a
//! safetensors `__metadata__` header, as typed values in GGUF. Keys outside the prefix belong to
//! other tools (GGUF's `general.alignment`) and are ignored; an unknown key inside it is an
//! error, so a file written by a newer, incompatible edgeinfer is refused rather than misread.

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Prefix of every metadata key this crate writes and reads.
pub const KEY_PREFIX: &str = "edgeinfer.";

/// The metadata keys, without prefix, in the order they are written.
pub const KEYS: [&str; 9] = [
    "name",
    "version",
    "task",
    "architecture",
    "input_shape",
    "labels",
    "temperature",
    "test_accuracy",
    "quantization",
];

/// Quantization names as they appear in metadata and on the command line.
pub const QUANTIZATIONS: [&str; 4] = ["f32", "int8", "q8_0", "q4_0"];

/// A model's description: what the servers need to route to it and to validate inputs for it,
/// without knowing what it computes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelMetadata {
    /// The concrete model's name (`edge-mlp`), addressable on its own.
    pub name: String,
    pub version: String,
    /// The task it solves (`mnist`); servers expose the task by this name.
    pub task: String,
    /// Which network the tensors describe (see [`crate::Architecture`]).
    pub architecture: String,
    /// Shape of one input, without the batch dimension (`[1, 28, 28]`).
    pub input_shape: Vec<usize>,
    /// One label per output, in output order.
    pub labels: Vec<String>,
    /// Softmax temperature fitted on the validation split; probabilities are
    /// `softmax(logits / temperature)`.
    pub temperature: f32,
    /// Accuracy on the task's test set, measured on this very file's weights.
    pub test_accuracy: f64,
    /// `f32`, `int8`, `q8_0` or `q4_0`.
    pub quantization: String,
}

// === impl ModelMetadata ===

impl ModelMetadata {
    /// Number of floats in one input: the product of `input_shape`.
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Checks what can be checked without the tensors.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |key: &str, detail: String| {
            Err(ModelError::InvalidMetadata {
                key: format!("{KEY_PREFIX}{key}"),
                detail,
            })
        };
        for (key, value) in [
            ("name", &self.name),
            ("version", &self.version),
            ("task", &self.task),
            ("architecture", &self.architecture),
        ] {
            if value.trim().is_empty() {
                return bad(key, "is empty".into());
            }
        }
        if self.input_shape.is_empty() || self.input_shape.contains(&0) {
            return bad(
                "input_shape",
                format!("{:?} has no elements", self.input_shape),
            );
        }
        if self.labels.len() < 2 {
            return bad(
                "labels",
                format!("{} labels, need at least 2", self.labels.len()),
            );
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(
                "temperature",
                format!("{} is not a positive number", self.temperature),
            );
        }
        if !(0.0..=1.0).contains(&self.test_accuracy) {
            return bad(
                "test_accuracy",
                format!("{} is not in [0, 1]", self.test_accuracy),
            );
        }
        if !QUANTIZATIONS.contains(&self.quantization.as_str()) {
            return bad(
                "quantization",
                format!(
                    "{:?} is not one of {}",
                    self.quantization,
                    QUANTIZATIONS.join(", ")
                ),
            );
        }
        Ok(())
    }

    /// The metadata as `(key, value)` string pairs, prefixed, in field order: the safetensors
    /// form. Lists are JSON, numbers their shortest round-tripping decimal form.
    pub fn to_string_pairs(&self) -> Vec<(String, String)> {
        let values = [
            self.name.clone(),
            self.version.clone(),
            self.task.clone(),
            self.architecture.clone(),
            serde_json::to_string(&self.input_shape).expect("a Vec<usize> serializes"),
            serde_json::to_string(&self.labels).expect("a Vec<String> serializes"),
            self.temperature.to_string(),
            self.test_accuracy.to_string(),
            self.quantization.clone(),
        ];
        KEYS.iter()
            .zip(values)
            .map(|(k, v)| (format!("{KEY_PREFIX}{k}"), v))
            .collect()
    }

    /// Parses the safetensors form, refusing missing, unknown and malformed keys.
    pub fn from_string_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ModelError> {
        let mut fields = Fields::default();
        for (key, value) in pairs {
            let Some(short) = key.strip_prefix(KEY_PREFIX) else {
                continue;
            };
            let slot = fields.slot(key, short)?;
            *slot = Some(value.to_string());
        }
        fn parse_json<T: serde::de::DeserializeOwned>(
            key: &str,
            text: String,
        ) -> Result<T, ModelError> {
            serde_json::from_str(&text).map_err(|e| ModelError::InvalidMetadata {
                key: format!("{KEY_PREFIX}{key}"),
                detail: format!("{text:?} is not valid: {e}"),
            })
        }
        let parse_num = |key: &str, text: String| {
            text.trim()
                .parse::<f64>()
                .map_err(|e| ModelError::InvalidMetadata {
                    key: format!("{KEY_PREFIX}{key}"),
                    detail: format!("{text:?} is not a number: {e}"),
                })
        };
        let m = ModelMetadata {
            name: Fields::take(&mut fields.name, "name")?,
            version: Fields::take(&mut fields.version, "version")?,
            task: Fields::take(&mut fields.task, "task")?,
            architecture: Fields::take(&mut fields.architecture, "architecture")?,
            input_shape: parse_json(
                "input_shape",
                Fields::take(&mut fields.input_shape, "input_shape")?,
            )?,
            labels: parse_json("labels", Fields::take(&mut fields.labels, "labels")?)?,
            temperature: parse_num(
                "temperature",
                Fields::take(&mut fields.temperature, "temperature")?,
            )? as f32,
            test_accuracy: parse_num(
                "test_accuracy",
                Fields::take(&mut fields.test_accuracy, "test_accuracy")?,
            )?,
            quantization: Fields::take(&mut fields.quantization, "quantization")?,
        };
        m.validate()?;
        Ok(m)
    }
}

/// One optional value per key while a file's metadata is being read.
#[derive(Default)]
struct Fields {
    name: Option<String>,
    version: Option<String>,
    task: Option<String>,
    architecture: Option<String>,
    input_shape: Option<String>,
    labels: Option<String>,
    temperature: Option<String>,
    test_accuracy: Option<String>,
    quantization: Option<String>,
}

impl Fields {
    fn slot(&mut self, key: &str, short: &str) -> Result<&mut Option<String>, ModelError> {
        Ok(match short {
            "name" => &mut self.name,
            "version" => &mut self.version,
            "task" => &mut self.task,
            "architecture" => &mut self.architecture,
            "input_shape" => &mut self.input_shape,
            "labels" => &mut self.labels,
            "temperature" => &mut self.temperature,
            "test_accuracy" => &mut self.test_accuracy,
            "quantization" => &mut self.quantization,
            _ => return Err(ModelError::UnknownMetadata(key.to_string())),
        })
    }

    fn take(slot: &mut Option<String>, short: &str) -> Result<String, ModelError> {
        slot.take()
            .ok_or_else(|| ModelError::MissingMetadata(format!("{KEY_PREFIX}{short}")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> ModelMetadata {
        ModelMetadata {
            name: "edge-mlp".into(),
            version: "1".into(),
            task: "mnist".into(),
            architecture: "mlp-800-128-10".into(),
            input_shape: vec![1, 28, 28],
            labels: (0..10).map(|d| d.to_string()).collect(),
            temperature: 1.2345678,
            test_accuracy: 0.9781,
            quantization: "f32".into(),
        }
    }

    fn pairs(m: &ModelMetadata) -> Vec<(String, String)> {
        m.to_string_pairs()
    }

    fn parse(p: &[(String, String)]) -> Result<ModelMetadata, ModelError> {
        ModelMetadata::from_string_pairs(p.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    #[test]
    fn string_pairs_round_trip_exactly() {
        let m = sample();
        assert_eq!(m.input_len(), 784);
        assert_eq!(parse(&pairs(&m)).unwrap(), m);
    }

    #[test]
    fn foreign_keys_are_ignored_unknown_own_keys_refused() {
        let mut p = pairs(&sample());
        p.push(("format".into(), "pt".into()));
        assert!(parse(&p).is_ok());
        p.push(("edgeinfer.colour".into(), "blue".into()));
        let err = parse(&p).unwrap_err();
        assert!(matches!(err, ModelError::UnknownMetadata(ref k) if k == "edgeinfer.colour"));
        assert!(err.to_string().contains("edgeinfer.colour"), "{err}");
    }

    #[test]
    fn missing_and_malformed_keys_are_named() {
        let p: Vec<_> = pairs(&sample())
            .into_iter()
            .filter(|(k, _)| k != "edgeinfer.temperature")
            .collect();
        let err = parse(&p).unwrap_err();
        assert!(err.to_string().contains("edgeinfer.temperature"), "{err}");

        let mut p = pairs(&sample());
        p[4].1 = "1x28x28".into();
        let err = parse(&p).unwrap_err();
        assert!(
            matches!(err, ModelError::InvalidMetadata { ref key, .. } if key == "edgeinfer.input_shape"),
            "{err}"
        );

        let mut m = sample();
        m.quantization = "q2_k".into();
        assert!(parse(&pairs(&m)).unwrap_err().to_string().contains("q2_k"));
        let mut m = sample();
        m.temperature = -1.0;
        assert!(m.validate().is_err());
    }
}
