//! Small helpers for the Open Inference Protocol's typed `InferParameter` values, so that
//! servers and clients read and write request and response parameters the same way.

use crate::inference::{InferParameter, infer_parameter::ParameterChoice};

/// Builds a string parameter.
pub fn string_param(value: impl Into<String>) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::StringParam(value.into())),
    }
}

/// Builds a boolean parameter.
pub fn bool_param(value: bool) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::BoolParam(value)),
    }
}

/// Builds a signed integer parameter.
pub fn int64_param(value: i64) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::Int64Param(value)),
    }
}

/// Builds a double parameter.
pub fn double_param(value: f64) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::DoubleParam(value)),
    }
}

/// Reads a parameter as a number, whichever numeric kind the client chose (clients differ:
/// tritonclient sends Python ints as int64 and floats as double).
pub fn as_f64(param: &InferParameter) -> Option<f64> {
    match param.parameter_choice.as_ref()? {
        ParameterChoice::Int64Param(v) => Some(*v as f64),
        ParameterChoice::Uint64Param(v) => Some(*v as f64),
        ParameterChoice::DoubleParam(v) => Some(*v),
        ParameterChoice::StringParam(s) => s.trim().parse().ok(),
        ParameterChoice::BoolParam(_) => None,
    }
}

/// Reads a parameter as a string; numbers and booleans are formatted.
pub fn as_string(param: &InferParameter) -> Option<String> {
    Some(match param.parameter_choice.as_ref()? {
        ParameterChoice::StringParam(s) => s.clone(),
        ParameterChoice::BoolParam(b) => b.to_string(),
        ParameterChoice::Int64Param(v) => v.to_string(),
        ParameterChoice::Uint64Param(v) => v.to_string(),
        ParameterChoice::DoubleParam(v) => v.to_string(),
    })
}

/// Reads a parameter as a boolean (also from the strings "true" and "false").
pub fn as_bool(param: &InferParameter) -> Option<bool> {
    match param.parameter_choice.as_ref()? {
        ParameterChoice::BoolParam(b) => Some(*b),
        ParameterChoice::StringParam(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_from_any_numeric_kind() {
        assert_eq!(as_f64(&int64_param(25)), Some(25.0));
        assert_eq!(as_f64(&double_param(0.5)), Some(0.5));
        assert_eq!(as_f64(&string_param("12")), Some(12.0));
        assert_eq!(as_f64(&bool_param(true)), None);
        assert_eq!(as_f64(&InferParameter::default()), None);
    }

    #[test]
    fn strings_and_bools_round_trip() {
        assert_eq!(as_string(&string_param("edge")).as_deref(), Some("edge"));
        assert_eq!(as_string(&int64_param(3)).as_deref(), Some("3"));
        assert_eq!(as_bool(&bool_param(false)), Some(false));
        assert_eq!(as_bool(&string_param("true")), Some(true));
        assert_eq!(as_bool(&int64_param(1)), None);
    }
}
