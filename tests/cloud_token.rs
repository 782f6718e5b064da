//! An edge given the wrong cloud token: the cloud refuses its calls and its probes, the circuit
//! opens, every request is still answered (degraded), and one log line names the setting. In
//! a file of its own: it installs the process's tracing subscriber to read the log.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgeinfer::v1::edge_admin_client::EdgeAdminClient;
use edgeinfer::v1::infer_request::Input;
use edgeinfer::v1::inference_client::InferenceClient;
use edgeinfer::v1::{CircuitState, GetStatusRequest, InferRequest, Placement, Reason, Tier};
use edgeinfer_cli::local::{LocalOptions, start};

/// A log sink the test can read.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_wrong_cloud_token_opens_the_circuit_and_is_named_once() {
    let log = Log::default();
    let sink = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .init();
    let s = start(LocalOptions {
        profile: "ideal".into(),
        cloud_auth_token: Some("the-right-token".into()),
        edge_cloud_token: Some("a-wrong-token".into()),
        ..LocalOptions::default()
    })
    .await
    .expect("servers start");
    let mut admin = EdgeAdminClient::connect(format!("http://{}", s.edge_admin))
        .await
        .unwrap();
    let mut client = InferenceClient::connect(format!("http://{}", s.edge))
        .await
        .unwrap();
    let mut answers = Vec::new();
    // Bounded: 200 requests, 20 ms apart at most (4 s), enough for the prober's 250 ms
    // interval to see a handful of refusals.
    let mut open = false;
    for i in 0..200 {
        let r = client
            .infer(InferRequest {
                id: format!("r{i}"),
                input: Some(Input::Raw(vec![0u8; 784])),
                placement: Placement::CloudOnly as i32,
                ..Default::default()
            })
            .await
            .expect("every request is answered")
            .into_inner();
        answers.push(r);
        let status = admin
            .get_status(GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if status.circuit == CircuitState::Open as i32 {
            open = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        open,
        "the circuit never opened in {} requests",
        answers.len()
    );
    for a in &answers {
        assert_eq!(a.served_by(), Tier::Edge, "{a:?}");
        assert!(a.degraded, "{a:?}");
        assert!(
            matches!(a.reason(), Reason::CloudUnavailable | Reason::CircuitOpen),
            "{a:?}"
        );
    }
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let naming: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("--cloud-token"))
        .collect();
    assert_eq!(naming.len(), 1, "one line names the setting:\n{text}");
    assert!(naming[0].contains("ERROR"), "{}", naming[0]);
    s.stop().await.unwrap();
}
