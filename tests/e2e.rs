//! End-to-end behaviour a user sees: the real edge and cloud servers on port 0 with the shipped
//! models, called through real gRPC clients.

use std::collections::HashSet;
use std::time::Duration;

use edgeinfer::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use edgeinfer::inference::model_infer_request::InferInputTensor;
use edgeinfer::inference::{ModelInferRequest, ModelReadyRequest};
use edgeinfer::oip;
use edgeinfer::v1::edge_admin_client::EdgeAdminClient;
use edgeinfer::v1::infer_request::Input;
use edgeinfer::v1::inference_client::InferenceClient;
use edgeinfer::v1::set_link_profile_request::Profile;
use edgeinfer::v1::{
    Estimates, GetStatusRequest, InferRequest, InferResponse, ListModelsRequest, Pixels, Placement,
    Reason, SetLinkProfileRequest, SetPolicyRequest, Tier,
};
use edgeinfer_cli::local::{LocalOptions, LocalServers, start};
use edgeinfer_model::mnist::{Dataset, default_data_dir, load_test};
use tonic::Code;
use tonic::transport::Channel;

async fn servers(profile: &str) -> LocalServers {
    start(LocalOptions {
        profile: profile.into(),
        ..LocalOptions::default()
    })
    .await
    .expect("servers start on the shipped models")
}

async fn client(addr: std::net::SocketAddr) -> InferenceClient<Channel> {
    InferenceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
}

async fn admin(addr: std::net::SocketAddr) -> EdgeAdminClient<Channel> {
    EdgeAdminClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
}

fn test_set() -> Dataset {
    load_test(&default_data_dir()).expect("MNIST test set")
}

fn raw(image: &[u8]) -> InferRequest {
    InferRequest {
        input: Some(Input::Raw(image.to_vec())),
        ..InferRequest::default()
    }
}

/// The test image the edge model is least sure about among the first 300: a genuinely
/// ambiguous input, whatever the model file.
async fn ambiguous(c: &mut InferenceClient<Channel>, data: &Dataset) -> Vec<u8> {
    let mut best = (f32::MAX, 0);
    for i in 0..300 {
        let r = c
            .infer(InferRequest {
                placement: Placement::EdgeOnly as i32,
                ..raw(data.image(i))
            })
            .await
            .unwrap()
            .into_inner();
        // An unusual image would go to the cloud for that reason, not for its confidence.
        if r.edge_confidence < best.0 && !r.out_of_distribution {
            best = (r.edge_confidence, i);
        }
    }
    assert!(
        best.0 < 0.9,
        "some usual test image is ambiguous to the edge model"
    );
    data.image(best.1).to_vec()
}

/// Polls the edge's estimates every 20 ms for up to 4 s until `done` holds; returns the last
/// seen.
async fn estimates_until(
    a: &mut EdgeAdminClient<Channel>,
    done: impl Fn(&Estimates) -> bool,
) -> Estimates {
    let mut last = Estimates::default();
    for _ in 0..200 {
        let s = a
            .get_status(GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        last = s.estimates.unwrap();
        if done(&last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last
}

/// Waits until the edge has measured the round trip to the cloud.
async fn warmed_up(a: &mut EdgeAdminClient<Channel>) {
    let e = estimates_until(a, |e| e.srtt_ms > 0.0).await;
    assert!(
        e.srtt_ms > 0.0,
        "the edge never measured the cloud round trip"
    );
}

fn assert_within_budget(r: &InferResponse, budget_ms: u64) {
    let total = r.timing.unwrap().total_us;
    assert!(
        total <= budget_ms * 1000,
        "answered in {total} us, over the {budget_ms} ms budget: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_digits_are_answered_at_the_edge_and_ambiguous_ones_by_the_cloud() {
    let s = servers("ideal").await;
    let mut c = client(s.edge).await;
    let data = test_set();

    let r = c.infer(raw(data.image(0))).await.unwrap().into_inner();
    assert_eq!(r.served_by(), Tier::Edge, "{r:?}");
    assert_eq!(r.reason(), Reason::Confident);
    assert!(!r.degraded);
    assert_eq!(r.label, data.labels[0].to_string());
    assert!(r.model.starts_with("edge-mlp@"), "{}", r.model);
    assert_eq!(r.probabilities.len(), 10);
    assert!(!r.id.is_empty(), "the server assigns an id");

    let hard = ambiguous(&mut c, &data).await;
    warmed_up(&mut admin(s.edge_admin).await).await;
    let r = c.infer(raw(&hard)).await.unwrap().into_inner();
    assert_eq!(r.served_by(), Tier::Cloud, "{r:?}");
    assert_eq!(r.reason(), Reason::LowConfidence);
    assert!(r.model.starts_with("cloud-cnn@"), "{}", r.model);
    assert!(r.edge_confidence > 0.0 && r.edge_confidence < 0.9);
    let t = r.timing.unwrap();
    assert!(t.cloud_us > 0 && t.total_us >= t.cloud_us, "{t:?}");
    assert!(!r.out_of_distribution && r.ood_score.is_some(), "{r:?}");

    // Noise is nothing like a digit: whatever the edge's confidence, the cloud answers, and
    // the answer says why. (A deterministic spread of values in [0, 1).)
    let noise: Vec<f32> = (0..784u32)
        .map(|i| (i * 7919 % 1000) as f32 / 1000.0)
        .collect();
    let r = c
        .infer(InferRequest {
            input: Some(Input::Pixels(Pixels { values: noise })),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.served_by(), r.reason()),
        (Tier::Cloud, Reason::OutOfDistribution),
        "{r:?}"
    );
    assert!(
        r.out_of_distribution && r.ood_score.unwrap() > 10.0,
        "{r:?}"
    );
    assert!(r.explanation.is_empty(), "explanations only when asked for");

    // Asked to explain: one attribution per pixel, by the edge model, whoever answered.
    let r = c
        .infer(InferRequest {
            explain: true,
            ..raw(data.image(0))
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.explanation.len(), 784);
    assert!(r.explanation.iter().any(|a| *a != 0.0), "{r:?}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_cloud_never_loses_a_request_and_its_return_is_noticed() {
    let mut s = servers("ideal").await;
    let mut c = client(s.edge).await;
    let data = test_set();
    let hard = ambiguous(&mut c, &data).await;
    warmed_up(&mut admin(s.edge_admin).await).await;

    s.stop_cloud().await.unwrap();
    for _ in 0..20 {
        let r = c
            .infer(raw(&hard))
            .await
            .expect("still answered")
            .into_inner();
        assert_eq!(r.served_by(), Tier::Edge, "{r:?}");
        assert!(r.degraded);
        assert!(
            matches!(
                r.reason(),
                Reason::CloudUnavailable | Reason::CircuitOpen | Reason::CloudTimeout
            ),
            "{r:?}"
        );
        assert_within_budget(&r, 100);
    }

    s.restart_cloud().await.unwrap();
    let mut back = false;
    for _ in 0..100 {
        let r = c.infer(raw(&hard)).await.unwrap().into_inner();
        if r.served_by() == Tier::Cloud {
            assert_eq!(r.reason(), Reason::LowConfidence);
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "cloud answers resume once the cloud is back");
    s.stop().await.unwrap();
}

/// Design section 10, faults: the link flapping between profiles (down to offline) under
/// load, with a threshold that sends about half the requests to the cloud. Every request is
/// answered, by the cloud when the link allows and by the edge (degraded) when not, and none
/// waits for the link past its budget. The budget is checked with 10 ms of slack for the
/// scheduler: many calls here run right up to their deadline, and on two cores shared with
/// other servers a timer can fire a few milliseconds late before the edge has learned its
/// fallback reserve (measured: 102.8 ms once, with one extra busy process), while a router
/// that waited on the link would be tens or hundreds of milliseconds over. Ignored by default and run alone by CI
/// (`-- --ignored --test-threads 1`), like the whole-test-set test, so that only its own
/// servers share the cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing under load: run alone with --ignored --test-threads 1"]
async fn a_flapping_link_loses_no_request_and_no_budget() {
    use futures::StreamExt;

    let s = servers("lte").await;
    let mut a = admin(s.edge_admin).await;
    a.set_policy(SetPolicyRequest {
        threshold: Some(0.999),
        ..Default::default()
    })
    .await
    .unwrap();
    warmed_up(&mut a).await;
    let flapping = tokio::spawn(async move {
        let profiles = ["urllc", "cell-edge", "offline", "embb-mmwave", "lte"];
        for i in 0.. {
            a.set_link_profile(SetLinkProfileRequest {
                profile: Some(Profile::Name(profiles[i % profiles.len()].into())),
                seed: i as u64 + 1,
            })
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    });

    let data = test_set();
    let c = client(s.edge).await;
    let answers: Vec<InferResponse> = futures::stream::iter(0..400)
        .map(|i| {
            let mut c = c.clone();
            let request = raw(data.image(i));
            async move { c.infer(request).await.expect("answered").into_inner() }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    flapping.abort();

    let from_cloud = answers
        .iter()
        .filter(|r| r.served_by() == Tier::Cloud)
        .count();
    let degraded = answers.iter().filter(|r| r.degraded).count();
    for r in &answers {
        assert_within_budget(r, 100 + 10);
    }
    assert!(
        from_cloud > 0,
        "no answer from the cloud in {} requests",
        answers.len()
    );
    assert!(
        degraded > 0,
        "no degraded answer although the link went offline"
    );
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_link_still_answers_within_budget() {
    let s = servers("offline").await;
    let mut c = client(s.edge).await;
    let data = test_set();
    let hard = ambiguous(&mut c, &data).await;
    for _ in 0..10 {
        let r = c.infer(raw(&hard)).await.unwrap().into_inner();
        assert_eq!(r.served_by(), Tier::Edge);
        assert!(r.degraded, "{r:?}");
        assert_within_budget(&r, 110);
    }
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_budgets_and_short_deadlines_are_honoured() {
    let s = servers("lte").await;
    let mut c = client(s.edge).await;
    let data = test_set();
    let hard = ambiguous(&mut c, &data).await;
    warmed_up(&mut admin(s.edge_admin).await).await;

    let r = c
        .infer(InferRequest {
            latency_budget_ms: 5,
            ..raw(&hard)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.reason(), Reason::BudgetTooSmall, "{r:?}");
    assert!(r.degraded);
    let t = r.timing.unwrap();
    assert_eq!(t.uplink_us + t.cloud_us + t.downlink_us, 0, "no cloud call");

    // A 20 ms client deadline is tighter than the 100 ms default: the edge answers in time
    // rather than letting the deadline pass.
    let mut request = tonic::Request::new(raw(&hard));
    request.set_timeout(Duration::from_millis(20));
    let r = c
        .infer(request)
        .await
        .expect("answered before the deadline")
        .into_inner();
    assert_eq!(r.served_by(), Tier::Edge, "{r:?}");
    assert_within_budget(&r, 20);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placements_are_obeyed_and_streams_match_ids() {
    let s = servers("ideal").await;
    let mut c = client(s.edge).await;
    let data = test_set();

    let r = c
        .infer(InferRequest {
            placement: Placement::CloudOnly as i32,
            ..raw(data.image(1))
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.served_by(), r.reason()),
        (Tier::Cloud, Reason::Placement)
    );
    let r = c
        .infer(InferRequest {
            placement: Placement::EdgeOnly as i32,
            min_confidence: Some(1.0),
            ..raw(data.image(1))
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.served_by(), r.reason()), (Tier::Edge, Reason::Placement));

    let frames: Vec<InferRequest> = (0..100)
        .map(|i| InferRequest {
            id: format!("frame-{i}"),
            ..raw(data.image(i))
        })
        .collect();
    let mut answers = c
        .infer_stream(tokio_stream::iter(frames))
        .await
        .unwrap()
        .into_inner();
    let mut ids = HashSet::new();
    let mut correct = 0;
    while let Some(a) = answers.message().await.unwrap() {
        let i: usize = a.id.strip_prefix("frame-").unwrap().parse().unwrap();
        correct += usize::from(a.label == data.labels[i].to_string());
        assert!(ids.insert(a.id));
    }
    assert_eq!(ids.len(), 100);
    assert!(correct >= 97, "{correct} of 100 right");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_field_named_and_the_server_keeps_serving() {
    let s = servers("ideal").await;
    let mut c = client(s.edge).await;
    let pixels = |values: Vec<f32>| InferRequest {
        input: Some(Input::Pixels(Pixels { values })),
        ..InferRequest::default()
    };
    let mut nan = vec![0.0; 784];
    nan[3] = f32::NAN;
    let cases: Vec<(InferRequest, Code, &str)> = vec![
        (
            pixels(vec![0.0; 100]),
            Code::InvalidArgument,
            "pixels.values: expected 784",
        ),
        (pixels(nan), Code::InvalidArgument, "pixels.values[3]"),
        (
            pixels(vec![2.0; 784]),
            Code::InvalidArgument,
            "outside [0, 1]",
        ),
        (raw(&[0; 783]), Code::InvalidArgument, "raw: expected 784"),
        (
            InferRequest {
                input: Some(Input::Image(b"GIF89a not really".to_vec())),
                ..InferRequest::default()
            },
            Code::InvalidArgument,
            "image:",
        ),
        (
            InferRequest {
                input: Some(Input::Image(vec![0; 5 << 20])),
                ..InferRequest::default()
            },
            Code::InvalidArgument,
            "image: 5242880 bytes is more than the limit",
        ),
        (InferRequest::default(), Code::InvalidArgument, "input:"),
        (
            InferRequest {
                model: "resnet".into(),
                ..raw(&[0; 784])
            },
            Code::NotFound,
            "unknown model \"resnet\"",
        ),
        (
            InferRequest {
                min_confidence: Some(7.0),
                ..raw(&[0; 784])
            },
            Code::InvalidArgument,
            "min_confidence",
        ),
    ];
    for (request, code, needle) in cases {
        let status = c.infer(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(needle),
            "{needle:?} not in {status:?}"
        );
    }
    // Over the transport limit (16 MiB): refused by the framework, and the server lives on.
    let huge = c
        .infer(InferRequest {
            input: Some(Input::Image(vec![0; 17 << 20])),
            ..InferRequest::default()
        })
        .await
        .unwrap_err();
    // tonic refuses a message over the server's decoding limit with OUT_OF_RANGE.
    assert_eq!(huge.code(), Code::OutOfRange, "{huge:?}");
    assert!(huge.message().contains("too large"), "{huge:?}");
    let data = test_set();
    let r = c.infer(raw(data.image(0))).await.unwrap().into_inner();
    assert_eq!(r.label, data.labels[0].to_string());
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_inference_protocol_goes_through_the_router_with_provenance() {
    let s = servers("ideal").await;
    let mut oip_client = GrpcInferenceServiceClient::connect(format!("http://{}", s.edge))
        .await
        .unwrap();
    let data = test_set();
    let mut raw_input = Vec::new();
    for i in 0..4 {
        raw_input.extend_from_slice(data.image(i));
    }
    let mut request = ModelInferRequest {
        model_name: "mnist".into(),
        id: "batch-1".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "UINT8".into(),
            shape: vec![4, 1, 28, 28],
            ..Default::default()
        }],
        raw_input_contents: vec![raw_input],
        ..Default::default()
    };
    request
        .parameters
        .insert("latency_budget_ms".into(), oip::int64_param(50));
    let r = oip_client.model_infer(request).await.unwrap().into_inner();
    assert_eq!(r.id, "batch-1");
    assert_eq!(r.outputs[0].shape, vec![4, 10]);
    let probs: Vec<f32> = r.raw_output_contents[0]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(probs.len(), 40);
    for (i, row) in probs.chunks(10).enumerate() {
        let best = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(best, usize::from(data.labels[i]));
    }
    let served = oip::as_string(&r.parameters["served_by"]).unwrap();
    assert_eq!(served.split(',').count(), 4, "{served}");
    assert!(r.parameters.contains_key("reason") && r.parameters.contains_key("total_us"));

    // Asked to explain, every row also gets an attribution per pixel: gradient times input,
    // so zero wherever the pixel is.
    let mut raw_input = Vec::new();
    for i in 0..2 {
        raw_input.extend_from_slice(data.image(i));
    }
    let mut request = ModelInferRequest {
        model_name: "mnist".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "UINT8".into(),
            shape: vec![2, 784],
            ..Default::default()
        }],
        raw_input_contents: vec![raw_input.clone()],
        ..Default::default()
    };
    request
        .parameters
        .insert("explain".into(), oip::bool_param(true));
    let r = oip_client.model_infer(request).await.unwrap().into_inner();
    assert_eq!(r.outputs[1].name, "explanation");
    assert_eq!(r.outputs[1].shape, vec![2, 784]);
    let explanation: Vec<f32> = r.raw_output_contents[1]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(explanation.len(), 2 * 784);
    for (pixel, a) in raw_input.iter().zip(&explanation) {
        assert!(a.is_finite());
        if *pixel == 0 {
            assert_eq!(*a, 0.0);
        }
    }
    assert!(
        explanation.iter().any(|a| *a > 0.0),
        "something pushed towards the label"
    );

    let ready = oip_client
        .model_ready(ModelReadyRequest {
            name: "edge-mlp".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ready.ready);
    let missing = oip_client
        .model_ready(ModelReadyRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_switches_the_link_and_the_policy_at_run_time() {
    let s = servers("ideal").await;
    let mut a = admin(s.edge_admin).await;
    let p = a
        .set_policy(SetPolicyRequest {
            threshold: Some(0.5),
            default_budget_ms: Some(250),
            confidence_metric: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((p.threshold, p.default_budget_ms), (0.5, 250));
    let bad = a
        .set_policy(SetPolicyRequest {
            threshold: Some(3.0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(bad.message().starts_with("threshold"), "{bad:?}");

    let r = a
        .set_link_profile(SetLinkProfileRequest {
            profile: Some(Profile::Name("lte".into())),
            seed: 7,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.link_profile, "lte");
    let status = a
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.link_profile, "lte");
    assert_eq!(status.policy.unwrap().threshold, 0.5);
    let reserve = status.estimates.unwrap().fallback_reserve_ms;
    assert!(
        (3.0..=25.0).contains(&reserve),
        "fallback reserve {reserve} ms"
    );

    // The same link with a new seed keeps what the edge learned; another link starts afresh.
    // The median round trip tells them apart: 64 lte samples would hold it above 10 ms for
    // 32 more probes (8 s), a reset lets a few `ideal` probes bring it near 0.
    let switch = |name: &str| SetLinkProfileRequest {
        profile: Some(Profile::Name(name.into())),
        seed: 8,
    };
    let lte = estimates_until(&mut a, |e| e.rtt_p50_ms > 10.0)
        .await
        .rtt_p50_ms;
    a.set_link_profile(switch("lte")).await.unwrap();
    // Read at once: given time, new lte probes would hide a reset.
    let kept = estimates_until(&mut a, |_| true).await.rtt_p50_ms;
    assert!(
        kept > 10.0,
        "lte round trip {lte} ms forgotten: now {kept} ms"
    );
    a.set_link_profile(switch("ideal")).await.unwrap();
    let fresh = estimates_until(&mut a, |e| e.rtt_p50_ms < 5.0)
        .await
        .rtt_p50_ms;
    assert!(
        fresh < 5.0,
        "lte round trip kept for ideal: median {fresh} ms"
    );

    let unknown = a
        .set_link_profile(SetLinkProfileRequest {
            profile: Some(Profile::Name("6g".into())),
            seed: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(unknown.message().contains("embb-midband"), "{unknown:?}");

    let models = client(s.edge)
        .await
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(models[0].task, "mnist");
    assert_eq!(models[0].input_shape, vec![1, 28, 28]);
    s.stop().await.unwrap();
}

/// Acceptance figure of the serving issue: over the whole test set through the edge on `ideal`
/// with the default threshold, accuracy within 0.002 of the cloud model's and at least 85 %
/// answered at the edge. Ignored by default: it is the heaviest test and must run alone, or
/// the other tests' load pushes work to the cloud (EDGE_OVERLOADED); CI runs it by itself with
/// `cargo test --test e2e -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "heavy: run alone with --ignored"]
async fn whole_test_set_through_the_edge_on_ideal() {
    let s = servers("ideal").await;
    let data = test_set();
    warmed_up(&mut admin(s.edge_admin).await).await;
    let cloud_accuracy = client(s.cloud)
        .await
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models[0]
        .test_accuracy;
    let n = data.len();
    let workers = 16;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut c = client(s.edge).await;
        let images: Vec<(Vec<u8>, u8)> = (w..n)
            .step_by(workers)
            .map(|i| (data.image(i).to_vec(), data.labels[i]))
            .collect();
        tasks.push(tokio::spawn(async move {
            let (mut correct, mut edge) = (0usize, 0usize);
            for (image, label) in images {
                let r = c.infer(raw(&image)).await.unwrap().into_inner();
                correct += usize::from(r.label == label.to_string());
                edge += usize::from(r.served_by() == Tier::Edge);
            }
            (correct, edge)
        }));
    }
    let (mut correct, mut edge) = (0, 0);
    for t in tasks {
        let (c, e) = t.await.unwrap();
        correct += c;
        edge += e;
    }
    let accuracy = correct as f64 / n as f64;
    let edge_share = edge as f64 / n as f64;
    eprintln!("accuracy {accuracy:.4} (cloud {cloud_accuracy:.4}), edge share {edge_share:.3}");
    assert!(accuracy >= cloud_accuracy - 0.002, "accuracy {accuracy}");
    assert!(edge_share >= 0.85, "edge share {edge_share}");
    s.stop().await.unwrap();
}
