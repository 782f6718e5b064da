//! A bad setting stops the binary before it binds a port, with exit status 64 and a message
//! naming the setting.

use std::process::Command;

#[test]
fn bad_values_exit_64_naming_the_setting() {
    let run = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloud-node"));
        cmd.env("CLOUD_LISTEN", "127.0.0.1:0")
            .env("CLOUD_METRICS_LISTEN", "off");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("cloud-node runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[("CLOUD_MODEL", "/nonexistent.safetensors")]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("CLOUD_MODEL"), "{err}");
    let (code, err) = run(&[("CLOUD_MAX_BATCH", "0")]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--max-batch"), "{err}");
    let (code, err) = run(&[("CLOUD_METRICS_LISTEN", "nowhere")]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--metrics-listen"), "{err}");
}
