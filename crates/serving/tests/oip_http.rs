//! The OIP HTTP listener as a client sees it: a real server on port 0 over a fake node, driven
//! by hyper's HTTP client. JSON and binary tensors, every error status, the bearer token.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use edgeinfer_model::ModelMetadata;
use edgeinfer_serving::answer::{Answer, Reason, Tier, Timing};
use edgeinfer_serving::auth::BearerAuthLayer;
use edgeinfer_serving::batcher::BatchError;
use edgeinfer_serving::error::ServeError;
use edgeinfer_serving::limits::{Gate, ServerLimits};
use edgeinfer_serving::metrics::Metrics;
use edgeinfer_serving::node::{Call, Node};
use edgeinfer_serving::oip_http::{HttpSettings, serve_http};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A node whose model takes four floats and answers [0.25, 0.75] (or, for a first value of
/// 99, a full queue; 98, a passed deadline), remembering what it was given.
struct FakeNode {
    models: Arc<[ModelMetadata]>,
    metrics: Metrics,
    seen: Mutex<Vec<Vec<f32>>>,
}

impl FakeNode {
    fn new() -> Self {
        let models: Arc<[ModelMetadata]> = Arc::from([ModelMetadata {
            name: "fake-mlp".into(),
            version: "3".into(),
            task: "mnist".into(),
            architecture: "mlp".into(),
            input_shape: vec![4],
            labels: vec!["a".into(), "b".into()],
            temperature: 1.0,
            test_accuracy: 0.9,
            quantization: "f32".into(),
        }]);
        Self {
            metrics: Metrics::unregistered(&models[0]),
            models,
            seen: Mutex::new(Vec::new()),
        }
    }
}

#[tonic::async_trait]
impl Node for FakeNode {
    fn models(&self) -> Arc<[ModelMetadata]> {
        self.models.clone()
    }

    async fn infer(&self, call: Call) -> Result<Answer, ServeError> {
        match call.input.values[0] {
            99.0 => return Err(ServeError::Batch(BatchError::QueueFull(1))),
            98.0 => return Err(ServeError::DeadlineExceeded),
            _ => {}
        }
        self.seen.lock().unwrap().push(call.input.values.clone());
        Ok(Answer {
            id: call.id,
            label: "b".into(),
            class_index: 1,
            confidence: 0.75,
            probabilities: vec![0.25, 0.75],
            served_by: Tier::Edge,
            reason: Reason::Confident,
            degraded: false,
            model: "fake-mlp@3".into(),
            timing: Timing::default(),
            edge_confidence: 0.75,
            novelty: None,
        })
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

struct Server {
    base: String,
    node: Arc<FakeNode>,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(token: Option<&str>, max_body_bytes: usize) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let node = Arc::new(FakeNode::new());
    let (stop, stopped) = oneshot::channel::<()>();
    let settings = HttpSettings {
        limits: ServerLimits {
            max_message_bytes: max_body_bytes,
            ..ServerLimits::default()
        },
        gate: Gate::default(),
        auth: BearerAuthLayer::new(token.map(String::from)),
        tls: None,
    };
    let task = tokio::spawn(serve_http(
        listener,
        node.clone(),
        "edgeinfer-test",
        settings,
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        base,
        node,
        client: Client::builder(TokioExecutor::new()).build_http(),
        stop: Some(stop),
        task,
    }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The OIP error message, checking the status and the JSON shape.
    fn error(&self, status: StatusCode) -> String {
        assert_eq!(
            self.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()["error"]
            .as_str()
            .expect("an error message")
            .to_string()
    }
}

impl Server {
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let response = self
            .client
            .request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], Vec::new()).await
    }

    async fn post_json(&self, path: &str, body: Value) -> Reply {
        self.send(
            Method::POST,
            path,
            &[("content-type", "application/json".into())],
            serde_json::to_vec(&body).unwrap(),
        )
        .await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn fp32_request(data: Value) -> Value {
    json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": data}]})
}

#[tokio::test]
async fn health_metadata_and_config_answer_as_triton_does() {
    let s = start(None, 1 << 20).await;
    assert_eq!(s.get("/v2/health/live").await.status, StatusCode::OK);
    assert_eq!(s.get("/v2/health/ready").await.status, StatusCode::OK);
    assert_eq!(s.get("/v2/models/mnist/ready").await.status, StatusCode::OK);
    assert_eq!(
        s.get("/v2/models/fake-mlp/versions/3/ready").await.status,
        StatusCode::OK
    );
    let server = s.get("/v2").await.json();
    assert_eq!(server["name"], "edgeinfer-test");
    assert_eq!(server["extensions"], json!(["binary_tensor_data"]));
    let meta = s.get("/v2/models/mnist").await;
    assert_eq!(meta.status, StatusCode::OK);
    let meta = meta.json();
    assert_eq!(meta["name"], "mnist");
    assert_eq!(meta["versions"], json!(["3"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 4]}])
    );
    assert_eq!(
        meta["outputs"],
        json!([{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}])
    );
    let config = s.get("/v2/models/mnist/config").await.json();
    assert_eq!(config["max_batch_size"], 1024);
    assert_eq!(
        config["input"],
        json!([{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}])
    );

    let e = s.get("/v2/models/nope").await.error(StatusCode::NOT_FOUND);
    assert!(e.contains("unknown model \"nope\""), "{e}");
    let e = s
        .get("/v2/models/mnist/versions/9")
        .await
        .error(StatusCode::NOT_FOUND);
    assert!(e.contains("no version \"9\""), "{e}");
    let e = s.get("/v3/what").await.error(StatusCode::NOT_FOUND);
    assert!(e.contains("no such route"), "{e}");
    let e = s
        .send(Method::DELETE, "/v2/models/mnist", &[], Vec::new())
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED);
    assert!(e.contains("DELETE"), "{e}");
    s.stop().await;
}

#[tokio::test]
async fn json_tensors_take_any_finite_value_and_answer_in_json() {
    let s = start(None, 1 << 20).await;
    let mut request = fp32_request(json!([[5.0, -3.0], [0.5, 1.0e6]]));
    request["id"] = json!("req-1");
    request["parameters"] = json!({"placement": "edge"});
    let r = s.post_json("/v2/models/mnist/infer", request).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    let v = r.json();
    assert_eq!(v["id"], "req-1");
    assert_eq!(v["model_name"], "mnist");
    assert_eq!(v["model_version"], "3");
    assert_eq!(v["parameters"]["served_by"], "EDGE");
    assert_eq!(v["parameters"]["label"], "b");
    assert_eq!(
        v["outputs"],
        json!([{"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}])
    );
    assert_eq!(s.node.seen.lock().unwrap()[0], vec![5.0, -3.0, 0.5, 1.0e6]);

    // UINT8 values are pixels: scaled to [0, 1].
    let r = s
        .post_json(
            "/v2/models/fake-mlp/versions/3/infer",
            json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "UINT8",
                               "data": [0, 255, 51, 0]}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(s.node.seen.lock().unwrap()[1], vec![0.0, 1.0, 0.2, 0.0]);
    s.stop().await;
}

#[tokio::test]
async fn binary_tensors_in_and_out() {
    let s = start(None, 1 << 20).await;
    let header = serde_json::to_vec(&json!({
        "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                    "parameters": {"binary_data_size": 32}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}}],
    }))
    .unwrap();
    let mut body = header.clone();
    for v in [0.0f32, 1.0, 2.0, 3.0, -4.0, 5.5, 6.0, 7.0] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    let r = s
        .send(
            Method::POST,
            "/v2/models/mnist/infer",
            &[("inference-header-content-length", header.len().to_string())],
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.headers["content-type"], "application/octet-stream");
    let n: usize = r.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let v: Value = serde_json::from_slice(&r.body[..n]).unwrap();
    assert_eq!(v["outputs"][0]["shape"], json!([2, 2]));
    assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 16);
    let floats: Vec<f32> = r.body[n..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(floats, vec![0.25, 0.75, 0.25, 0.75]);
    let seen = s.node.seen.lock().unwrap().clone();
    let mut rows: Vec<Vec<f32>> = seen;
    rows.sort_by(|a, b| a[0].total_cmp(&b[0]));
    assert_eq!(
        rows,
        vec![vec![-4.0, 5.5, 6.0, 7.0], vec![0.0, 1.0, 2.0, 3.0]]
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_requests_get_oip_errors_with_fitting_statuses() {
    let s = start(None, 4096).await;
    // NaN can only come in binary; it is refused naming the element.
    let header = serde_json::to_vec(&json!({
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                    "parameters": {"binary_data_size": 16}}],
    }))
    .unwrap();
    let mut body = header.clone();
    for v in [0.0f32, 1.0, f32::NAN, 3.0] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    let e = s
        .send(
            Method::POST,
            "/v2/models/mnist/infer",
            &[("inference-header-content-length", header.len().to_string())],
            body,
        )
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(e, "inputs[0] (input)[2]: NaN is not a finite number");
    // Beyond f32's range is infinite once converted: refused the same way.
    let e = s
        .post_json(
            "/v2/models/mnist/infer",
            fp32_request(json!([0, 1e39, 0, 0])),
        )
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(e, "inputs[0] (input)[1]: inf is not a finite number");
    let e = s
        .post_json("/v2/models/mnist/infer", fp32_request(json!([1, 2, 3])))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert!(e.contains("3 FP32 values, expected 4"), "{e}");
    let e = s
        .send(
            Method::POST,
            "/v2/models/mnist/infer",
            &[],
            b"{\"inputs\": [".to_vec(),
        )
        .await
        .error(StatusCode::BAD_REQUEST);
    assert!(e.starts_with("body: not an inference request"), "{e}");
    let e = s
        .post_json("/v2/models/nope/infer", fp32_request(json!([0, 0, 0, 0])))
        .await
        .error(StatusCode::NOT_FOUND);
    assert!(e.contains("unknown model"), "{e}");
    let e = s
        .post_json(
            "/v2/models/mnist/versions/1/infer",
            fp32_request(json!([0, 0, 0, 0])),
        )
        .await
        .error(StatusCode::NOT_FOUND);
    assert!(e.contains("no version \"1\""), "{e}");
    let e = s
        .post_json("/v2/models/mnist/infer", fp32_request(json!([99, 0, 0, 0])))
        .await
        .error(StatusCode::TOO_MANY_REQUESTS);
    assert!(e.contains("queue"), "{e}");
    s.post_json("/v2/models/mnist/infer", fp32_request(json!([98, 0, 0, 0])))
        .await
        .error(StatusCode::GATEWAY_TIMEOUT);
    let e = s
        .send(
            Method::POST,
            "/v2/models/mnist/infer",
            &[],
            vec![b' '; 5000],
        )
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        e,
        "request body: more than the limit of 4096 bytes (--max-message-bytes)"
    );
    let e = s
        .send(
            Method::POST,
            "/v2/models/mnist/infer",
            &[("content-encoding", "gzip".into())],
            b"{}".to_vec(),
        )
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(e.starts_with("Content-Encoding: gzip"), "{e}");
    s.stop().await;
}

#[tokio::test]
async fn the_data_plane_token_applies_to_http_with_health_open() {
    let s = start(Some("s3cret"), 1 << 20).await;
    let body = serde_json::to_vec(&fp32_request(json!([0, 0, 0, 0]))).unwrap();
    let post = |auth: Option<&'static str>| {
        let headers: Vec<(&str, String)> = auth
            .map(|a| vec![("authorization", a.to_string())])
            .unwrap_or_default();
        let body = body.clone();
        let s = &s;
        async move {
            s.send(Method::POST, "/v2/models/mnist/infer", &headers, body)
                .await
        }
    };
    let e = post(None).await.error(StatusCode::UNAUTHORIZED);
    assert!(e.contains("Bearer <token>"), "{e}");
    post(Some("Bearer nope"))
        .await
        .error(StatusCode::UNAUTHORIZED);
    assert_eq!(post(Some("Bearer s3cret")).await.status, StatusCode::OK);
    s.get("/v2/models/mnist")
        .await
        .error(StatusCode::UNAUTHORIZED);
    assert_eq!(s.get("/v2/health/live").await.status, StatusCode::OK);
    assert_eq!(s.get("/v2/health/ready").await.status, StatusCode::OK);
    let wrong = s
        .send(
            Method::GET,
            "/v2/health/ready",
            &[("authorization", "Bearer nope".into())],
            Vec::new(),
        )
        .await;
    assert_eq!(
        wrong.status,
        StatusCode::UNAUTHORIZED,
        "a presented wrong token is refused everywhere, as on gRPC"
    );
    s.stop().await;
}
