//! The Open Inference Protocol over HTTP end to end: the real edge and cloud on port 0 with the
//! shipped models, called with a real HTTP client. The edge's HTTP calls go through its
//! router (a call placed on the cloud is answered by it), and FP32 inputs outside [0, 1]
//! reach the cloud intact, over HTTP and over the gRPC binding alike.

use bytes::Bytes;
use edgeinfer::inference::ModelInferRequest;
use edgeinfer::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use edgeinfer::inference::model_infer_request::InferInputTensor;
use edgeinfer::oip;
use edgeinfer_cli::local::{LocalOptions, start};
use edgeinfer_model::mnist::{default_data_dir, load_test};
use http_body_util::{BodyExt, Full};
use hyper::http::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

async fn post(addr: std::net::SocketAddr, path: &str, body: Value) -> (StatusCode, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    let response = client.request(request).await.expect("the node answers");
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).expect("a JSON body"))
}

fn infer(datatype: &str, data: Value, placement: &str) -> Value {
    json!({
        "parameters": {"placement": placement, "latency_budget_ms": 5000},
        "inputs": [{"name": "input", "shape": [1, 784], "datatype": datatype, "data": data}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_calls_are_routed_and_any_finite_fp32_reaches_the_cloud() {
    let any = Some("127.0.0.1:0".parse().unwrap());
    let s = start(LocalOptions {
        profile: "ideal".into(),
        edge_http_listen: any,
        cloud_http_listen: any,
        ..LocalOptions::default()
    })
    .await
    .expect("servers start on the shipped models");
    let (edge, cloud) = (s.edge_http.unwrap(), s.cloud_http.unwrap());

    // perf_analyzer's default data: values far outside [0, 1].
    let wild: Vec<f32> = (0..784).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
    for (addr, placement) in [(edge, "cloud"), (cloud, "auto")] {
        let (status, v) = post(
            addr,
            "/v2/models/mnist/infer",
            infer("FP32", json!(wild), placement),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["parameters"]["served_by"], "CLOUD", "{v}");
        let probabilities = v["outputs"][0]["data"].as_array().unwrap();
        assert_eq!(probabilities.len(), 10);
    }

    // A real digit, placed on the edge: answered there, through the router, correctly.
    let test = load_test(&default_data_dir()).expect("MNIST test set");
    let (status, v) = post(
        edge,
        "/v2/models/mnist/infer",
        infer("UINT8", json!(test.image(0)), "edge"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["parameters"]["served_by"], "EDGE");
    assert_eq!(v["parameters"]["label"], test.labels[0].to_string(), "{v}");

    // The gRPC binding decodes the same way: any finite FP32 value, NaN refused by index.
    let mut oip = GrpcInferenceServiceClient::connect(format!("http://{}", s.edge))
        .await
        .unwrap();
    let request = |values: &[f32]| ModelInferRequest {
        model_name: "mnist".into(),
        parameters: [("placement".to_string(), oip::string_param("cloud"))].into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 784],
            ..Default::default()
        }],
        raw_input_contents: vec![values.iter().flat_map(|v| v.to_le_bytes()).collect()],
        ..Default::default()
    };
    let answer = oip.model_infer(request(&wild)).await.unwrap().into_inner();
    assert_eq!(
        oip::as_string(&answer.parameters["served_by"]).as_deref(),
        Some("CLOUD")
    );
    let mut nan = wild.clone();
    nan[400] = f32::NAN;
    let e = oip.model_infer(request(&nan)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "inputs[0] (input)[400]: NaN is not a finite number"
    );

    let (status, v) = post(
        edge,
        "/v2/models/mnist/infer",
        infer("FP32", json!([1.0]), "auto"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("1 FP32 values, expected 784"),
        "{v}"
    );
    s.stop().await.unwrap();
}
