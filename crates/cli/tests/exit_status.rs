//! The exit statuses scripts read, from the real `edgeinfer` process: `health` as
//! grpc_health_probe (0 SERVING, 2 connection, 3 RPC, 4 not serving) and `bench`'s 3 for a
//! missed target. The unit tests check how each failure is classified; these check that the
//! process exits with it.

use std::process::{Command, Output};

use edgeinfer_cli::local::{LocalOptions, start};
use tonic_health::ServingStatus;

/// Runs the binary off the async threads (it blocks until the child exits).
async fn edgeinfer(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
            .args(&args)
            // The test's own environment must not choose the server or send a token.
            .env_remove("EDGEINFER_ADDR")
            .env_remove("EDGEINFER_TOKEN")
            .output()
            .expect("the edgeinfer binary runs")
    })
    .await
    .unwrap()
}

fn status(output: &Output) -> (Option<i32>, String) {
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A server with only `grpc.health.v1`, one service SERVING and one NOT_SERVING.
async fn health_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("test.Up", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("test.Down", ServingStatus::NotServing)
        .await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_as_grpc_health_probe() {
    let addr = health_server().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    for (service, addr, want) in [
        ("", addr.as_str(), 0),
        ("test.Up", &addr, 0),
        ("test.Down", &addr, 4),
        ("test.Unknown", &addr, 3),
        ("", closed.as_str(), 2),
    ] {
        let output = edgeinfer(&["health", "--addr", addr, "--service", service]).await;
        let (code, stderr) = status(&output);
        assert_eq!(code, Some(want), "{service:?} at {addr}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_exits_3_on_a_missed_target_and_0_on_a_met_one() {
    let nodes = start(LocalOptions {
        profile: "ideal".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let addr = format!("http://{}", nodes.edge);
    let base = [
        "bench",
        "--addr",
        &addr,
        "--requests",
        "50",
        "--concurrency",
        "2",
    ];

    // No answer over gRPC comes back within a microsecond.
    let missed: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--max-p99-ms", "0.001", "--json"])
        .collect();
    let output = edgeinfer(&missed).await;
    let (code, stderr) = status(&output);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("target missed"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["requests"], 50,
        "the report is printed in full first"
    );

    let met: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--max-error-rate", "0"])
        .collect();
    let (code, stderr) = status(&edgeinfer(&met).await);
    assert_eq!(code, Some(0), "{stderr}");
    nodes.stop().await.unwrap();
}
