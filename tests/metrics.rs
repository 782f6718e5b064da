//! What a Prometheus scraper sees: both real nodes on port 0 with metrics on, a few requests
//! through a real gRPC client, then each node's `/metrics` read over HTTP.

use std::net::SocketAddr;

use edgeinfer::v1::inference_client::InferenceClient;
use edgeinfer::v1::{InferRequest, Pixels, Placement};
use edgeinfer_cli::local::{LocalOptions, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET /metrics` over one HTTP/1.1 connection; the body, read up to 1 MiB.
async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    stream
        .take(1 << 20)
        .read_to_end(&mut bytes)
        .await
        .expect("reads the answer");
    let text = String::from_utf8(bytes).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// The value of the sample written exactly `series`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_expose_triton_names_with_model_labels_and_the_edge_its_link_and_circuit() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let servers = start(LocalOptions {
        edge_metrics_listen: Some(any),
        cloud_metrics_listen: Some(any),
        ..LocalOptions::default()
    })
    .await
    .expect("servers start on the shipped models");
    let mut c = InferenceClient::connect(format!("http://{}", servers.edge))
        .await
        .unwrap();
    let pixels = |value: f32| InferRequest {
        input: Some(edgeinfer::v1::infer_request::Input::Pixels(Pixels {
            values: vec![value; 784],
        })),
        ..InferRequest::default()
    };
    for placement in [
        Placement::EdgeOnly,
        Placement::CloudOnly,
        Placement::EdgeOnly,
    ] {
        c.infer(InferRequest {
            placement: placement as i32,
            ..pixels(0.5)
        })
        .await
        .expect("answered");
    }
    let refused = c.infer(pixels(2.0)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let edge = scrape(servers.edge_metrics.expect("edge metrics bound")).await;
    let cloud = scrape(servers.cloud_metrics.expect("cloud metrics bound")).await;

    // Triton's names, labelled with the model each node runs.
    let edge_model = r#"{model="edge-mlp",version="#;
    let labels = |text: &str, family: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.starts_with(family) && l[family.len()..].starts_with('{'))
            .unwrap_or_else(|| panic!("no {family} in\n{text}"));
        line[family.len()..line.find('}').unwrap() + 1].to_string()
    };
    let edge_labels = labels(&edge, "nv_inference_request_success");
    assert!(edge_labels.starts_with(edge_model), "{edge_labels}");
    let cloud_labels = labels(&cloud, "nv_inference_request_success");
    assert!(
        cloud_labels.starts_with(r#"{model="cloud-cnn",version="#),
        "{cloud_labels}"
    );
    let nv = |text: &str, family: &str, labels: &str| sample(text, &format!("{family}{labels}"));
    assert_eq!(nv(&edge, "nv_inference_request_success", &edge_labels), 3.0);
    assert_eq!(nv(&edge, "nv_inference_request_failure", &edge_labels), 1.0);
    // The edge model ran for all three (a cloud-only request gets its edge answer first, as
    // the fallback); the cloud's for the one sent to it.
    assert_eq!(nv(&edge, "nv_inference_count", &edge_labels), 3.0);
    assert_eq!(
        nv(&cloud, "nv_inference_request_success", &cloud_labels),
        1.0
    );
    assert_eq!(nv(&cloud, "nv_inference_count", &cloud_labels), 1.0);
    assert_eq!(nv(&cloud, "nv_inference_exec_count", &cloud_labels), 1.0);
    for family in [
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
    ] {
        assert!(
            edge.contains(&format!("# TYPE {family} counter\n")),
            "{edge}"
        );
        nv(&edge, family, &edge_labels);
    }
    assert!(
        nv(
            &edge,
            "nv_inference_compute_infer_duration_us",
            &edge_labels
        ) > 0.0
    );

    // edgeinfer's own beside them.
    assert_eq!(
        sample(
            &edge,
            r#"edgeinfer_requests_total{served_by="CLOUD",reason="PLACEMENT"}"#
        ),
        1.0,
    );
    // The circuit as a state set: one gauge per state, exactly one of them 1.
    let states: f64 = ["closed", "open", "half_open"]
        .iter()
        .map(|s| sample(&edge, &format!("edgeinfer_circuit_state{{state=\"{s}\"}}")))
        .sum();
    assert_eq!(states, 1.0, "{edge}");
    assert_eq!(
        sample(&edge, r#"edgeinfer_circuit_state{state="closed"}"#),
        1.0
    );
    // The link's cumulative counts are counters: the cloud call crossed both directions.
    assert!(edge.contains("# TYPE edgeinfer_link_delivered_messages_total counter\n"));
    for direction in ["uplink", "downlink"] {
        let delivered = sample(
            &edge,
            &format!("edgeinfer_link_delivered_messages_total{{direction=\"{direction}\"}}"),
        );
        assert!(delivered >= 1.0, "{direction}: {delivered}");
    }
    servers.stop().await.expect("servers stop");
}
