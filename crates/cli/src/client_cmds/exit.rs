//! Exit statuses that scripts read: a command fails with a [`Failure`] carrying its status,
//! and `main` exits with it ([`exit_code`]). Any other error exits 1; clap's usage errors
//! exit 2 (before a command runs).

use thiserror::Error;

/// A command's error with the exit status that classifies it.
#[derive(Debug, Error)]
#[error("{error:#}")]
pub struct Failure {
    pub code: u8,
    error: anyhow::Error,
}

impl Failure {
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }
}

/// The exit status for `error`: the code of the first [`Failure`] in its chain, else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map_or(1, |f| f.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_code_survives_context_and_plain_errors_exit_1() {
        let coded: anyhow::Result<()> = Err(Failure::new(4, anyhow::anyhow!("not serving")).into());
        let wrapped = coded.context("health").unwrap_err();
        assert_eq!(exit_code(&wrapped), 4);
        assert_eq!(format!("{wrapped:#}"), "health: not serving");
        assert_eq!(exit_code(&anyhow::anyhow!("plain")), 1);
    }
}
