//! `edgeinfer train` as a user runs it: the augmentation and version flags, from the real
//! process. Bad settings are refused before any training, naming the flag; a short run with
//! every distortion writes a file that says the version asked for.

use std::process::{Command, Output};

fn edgeinfer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
        .args(args)
        .output()
        .expect("the edgeinfer binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn settings_out_of_range_are_refused_before_training_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let out = out.to_str().unwrap();
    for (flags, named) in [
        (&["--augment-rotate", "200"][..], "rotation 200"),
        (&["--augment-scale", "0.9"][..], "scaling 0.9"),
        (&["--augment-elastic=-1"][..], "elastic strength -1"),
        (&["--augment-shift", "28"][..], "out of its frame"),
        (&["--version", ""][..], "--version"),
    ] {
        let mut args = vec!["train", "--model", "edge-mlp", "--out", out];
        args.extend_from_slice(flags);
        let o = edgeinfer(&args);
        assert_eq!(o.status.code(), Some(1), "{flags:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(named), "{flags:?}: {e}");
        assert!(!e.contains("panicked"), "{e}");
        assert!(
            !std::path::Path::new(out).exists(),
            "{flags:?} wrote a file"
        );
    }
}

#[test]
fn a_distorted_short_training_writes_the_version_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let out = out.to_str().unwrap();
    let o = edgeinfer(&[
        "train",
        "--model",
        "edge-mlp",
        "--limit",
        "2000",
        "--epochs",
        "1",
        "--augment-shift",
        "1",
        "--augment-rotate",
        "8",
        "--augment-scale",
        "0.1",
        "--augment-elastic",
        "10",
        "--version",
        "7",
        "--out",
        out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("shifted up to 1 px, rotated up to 8 degrees, scaled by up to 10 %"),
        "{said}"
    );
    let o = edgeinfer(&["eval", "--model", out, "--json", "--no-latency"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["version"], "7");
    // One epoch on 2,000 distorted images still learns the digits.
    assert!(e["accuracy"].as_f64().unwrap() > 0.8, "{e}");
}
