//! A bad setting stops the binary before it binds a port, with exit status 64 and a message
//! naming the setting.

use std::process::Command;

/// A valid model, so that the later checks are reached.
const SHIPPED_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/edge-mlp-int8.safetensors"
);

fn edge(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-node"));
    cmd.args(args)
        .env("EDGE_MODEL", SHIPPED_MODEL)
        // Port 0: even if validation were skipped, nothing would collide.
        .env("EDGE_LISTEN", "127.0.0.1:0")
        .env("EDGE_METRICS_LISTEN", "off");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("edge-node runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_values_exit_64_naming_the_setting() {
    let (code, err) = edge(&[], &[("EDGE_THRESHOLD", "1.5")]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("--threshold") && err.contains("outside [0, 1]"),
        "{err}"
    );

    let (code, err) = edge(&["--budget-ms", "0"], &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--budget-ms"), "{err}");

    let (code, err) = edge(&[], &[("EDGE_LISTEN", "not-an-address")]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--listen"), "{err}");

    let (code, err) = edge(&["--model", "/nonexistent/model.gguf"], &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("EDGE_MODEL"), "{err}");

    let (code, err) = edge(&[], &[("EDGE_LINK_PROFILE", "6g")]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("EDGE_LINK_PROFILE"), "{err}");

    let (code, err) = edge(&[], &[("EDGE_CLOUD", "cloud:50052")]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("EDGE_CLOUD"), "{err}");

    let (code, err) = edge(&["--link-timer", "hpet"], &[]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("--link-timer") && err.contains("precise or tokio"),
        "{err}"
    );

    let (code, err) = edge(&[], &[("EDGE_HARD_EXAMPLES_MAX_BYTES", "1000")]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--hard-examples-max-bytes"), "{err}");

    // A file where the store's directory should be.
    let (code, err) = edge(&[], &[("EDGE_HARD_EXAMPLES_DIR", SHIPPED_MODEL)]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("EDGE_HARD_EXAMPLES_DIR"), "{err}");
}

#[test]
fn help_shows_every_setting_with_its_environment_twin() {
    let out = Command::new(env!("CARGO_BIN_EXE_edge-node"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for env in [
        "EDGE_LISTEN",
        "EDGE_METRICS_LISTEN",
        "EDGE_MODEL",
        "EDGE_CLOUD",
        "EDGE_LINK_PROFILE",
        "EDGE_LINK_SEED",
        "EDGE_HARD_EXAMPLES_DIR",
        "EDGE_HARD_EXAMPLES_MAX_BYTES",
        "EDGE_THRESHOLD",
        "EDGE_BUDGET_MS",
        "EDGE_CLOUD_TOKEN",
        "EDGE_LINK_TIMER",
    ] {
        assert!(help.contains(env), "{env} missing from --help");
    }
}
