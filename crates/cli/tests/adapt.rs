//! `edgeinfer adapt` end to end, small: a real edge and cloud on port 0 with a hard-example
//! store, one turn with a few hundred images and one short epoch. The turn must complete, the
//! edge must have kept the cloud's answers, and the version in service must change to the
//! adapted model's. (Whether the edge's share grows by ten points belongs to the real command's
//! run, in models/MODELS.md: a tiny turn measures nothing.) Then the export command reads the
//! same store. Bounded: every request has a budget, the store wait has a deadline.

use std::process::Command;
use std::time::Duration;

use edgeinfer_cli::adapt::{self, AdaptData, AdaptOptions};
use edgeinfer_cli::local::{LocalOptions, shipped_model, start};
use edgeinfer_model::mnist;

const TOKEN: &str = "adapt-admin-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_turn_completes_and_swaps_the_edge_model() {
    let store = tempfile::tempdir().unwrap();
    let s = start(LocalOptions {
        profile: "ideal".into(),
        admin_token: Some(TOKEN.into()),
        // Far from any budget a busy test machine could miss.
        budget_ms: Some(5000),
        edge_hard_examples_dir: Some(store.path().to_path_buf()),
        ..LocalOptions::default()
    })
    .await
    .expect("servers start");
    let dir = mnist::default_data_dir();
    let (train, validation) = mnist::load_train(&dir)
        .expect("MNIST ships")
        .split_validation();
    let data = AdaptData {
        train: train.slice(0..2000),
        validation: validation.slice(0..500),
        test: mnist::load_test(&dir).expect("MNIST ships").slice(0..1000),
    };
    let out = tempfile::tempdir().unwrap();
    let options = AdaptOptions {
        edge: format!("http://{}", s.edge),
        admin: format!("http://{}", s.edge_admin),
        admin_token: Some(TOKEN.into()),
        store: store.path().to_path_buf(),
        init: shipped_model("edge-mlp.safetensors"),
        out: out.path().join("adapted.safetensors"),
        version: None,
        collect: 400,
        measure: 200,
        seed: 1,
        epochs: 1,
        original: Some(200),
        concurrency: 4,
        budget_ms: 0,
        store_wait: Duration::from_secs(30),
    };
    let mut lines = Vec::new();
    let mut say = |l: &str| lines.push(l.to_string());
    let report = adapt::run(&options, &data, &mut say)
        .await
        .expect("the turn completes");
    assert_eq!(report.model_before, "edge-mlp@1");
    assert_eq!(report.model_after, "edge-mlp@2");
    assert_eq!(report.adapted.version, "2");
    assert_eq!((report.before.requests, report.after.requests), (200, 200));
    assert_eq!(report.before.ok, 200, "{:?}", report.before.errors);
    assert_eq!(report.after.ok, 200, "{:?}", report.after.errors);
    // Noisy digits: the shipped edge sends many to the cloud, and each answer is kept.
    let c = &report.collected;
    assert!(c.answered_by_cloud > 20, "{c:?}");
    assert_eq!(c.records, c.answered_by_cloud, "{c:?}");
    assert_eq!(c.used, c.records, "{c:?}");
    // Edge answers before the swap name the old model, after it the new one. (The shipped
    // model's input detector may send every noisy digit to the cloud: then only the cloud
    // answers before.)
    let (before, after) = (&report.before.models, &report.after.models);
    assert!(!before.contains_key("edge-mlp@2"), "{before:?}");
    assert!(!after.contains_key("edge-mlp@1"), "{after:?}");
    // The adapted model, fitted on noisy digits, answers some of them itself.
    assert!(after.contains_key("edge-mlp@2"), "{after:?}");
    assert!(
        report.adapted.clean.accuracy > 0.9,
        "{:?}",
        report.adapted.clean
    );
    assert!(options.out.exists());
    let table = adapt::table(&report);
    assert!(
        table.contains("edge share") && table.contains("CONFIDENT"),
        "{table}"
    );
    assert_eq!(lines.len(), 5, "{lines:?}");

    // The same store through the export command: every record of the three phases.
    let exported = out.path().join("export");
    let output = Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
        .args(["hard-examples", "export", "--json", "--dir"])
        .arg(store.path())
        .arg("--out")
        .arg(&exported)
        .output()
        .expect("runs edgeinfer");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    let n = v["exported"].as_u64().unwrap() as usize;
    assert!(n >= c.records, "{v}");
    assert_eq!(mnist::load_train(&exported).unwrap().len(), n);
    s.stop().await.unwrap();
}
