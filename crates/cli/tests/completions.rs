//! `edgeinfer completions` and the environment twins of `up` and `sweep`, from the real
//! process.

use std::process::{Command, Output};

fn edgeinfer(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the edgeinfer binary runs")
}

#[test]
fn completion_scripts_name_the_subcommands_in_each_shells_syntax() {
    for (shell, marker) in [
        ("bash", "complete -F _edgeinfer"),
        ("zsh", "#compdef edgeinfer"),
        ("fish", "complete -c edgeinfer"),
    ] {
        let out = edgeinfer(&["completions", shell], &[]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).expect("UTF-8");
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for word in ["bench", "sweep", "completions", "edge-listen"] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
    }
}

#[test]
fn an_unknown_shell_is_refused_naming_it() {
    let out = edgeinfer(&["completions", "tcsh"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

#[test]
fn up_and_sweep_read_their_flags_from_the_environment() {
    // A bad value in a twin is refused by the parser, naming it, before anything starts.
    let out = edgeinfer(&["up"], &[("EDGEINFER_UP_THRESHOLD", "very")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("very"));
    let out = edgeinfer(&["sweep"], &[("EDGEINFER_SWEEP_REQUESTS", "many")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("many"));
    // The required --out given by its twin counts as given: the run gets as far as checking
    // the thresholds (before any file or port is touched) and refuses the 2.
    let out = edgeinfer(
        &["sweep", "--thresholds", "2"],
        &[("EDGEINFER_SWEEP_OUT", "/nonexistent/out")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("<OUT>"),
        "--out not taken from the environment: {err}"
    );
    assert!(err.contains("--thresholds: 2 is not in [0, 1]"), "{err}");
}
