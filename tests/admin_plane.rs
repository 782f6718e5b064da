//! The admin plane apart from the data plane: `EdgeAdmin` is served only on the admin listener,
//! and there only to callers presenting the admin token, compared exactly.

use edgeinfer::v1::edge_admin_client::EdgeAdminClient;
use edgeinfer::v1::{GetStatusRequest, SetLinkProfileRequest, SetPolicyRequest};
use edgeinfer_cli::local::{LocalOptions, LocalServers, start};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

const TOKEN: &str = "admin-s3cret-token";

async fn servers() -> LocalServers {
    start(LocalOptions {
        profile: "ideal".into(),
        admin_token: Some(TOKEN.into()),
        ..LocalOptions::default()
    })
    .await
    .expect("servers start on the shipped models")
}

async fn client(addr: std::net::SocketAddr) -> EdgeAdminClient<Channel> {
    EdgeAdminClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
}

fn with_auth<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(a) = authorization {
        let value: MetadataValue<_> = a.parse().expect("a valid header value");
        r.metadata_mut().insert("authorization", value);
    }
    r
}

#[tokio::test]
async fn the_data_port_serves_no_admin_call() {
    let s = servers().await;
    let mut data = client(s.edge).await;
    let bearer = format!("Bearer {TOKEN}");
    let auth = Some(bearer.as_str());
    let status = data
        .get_status(with_auth(GetStatusRequest {}, auth))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let status = data
        .set_policy(with_auth(
            SetPolicyRequest {
                threshold: Some(0.1),
                ..Default::default()
            },
            auth,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let status = data
        .set_link_profile(with_auth(SetLinkProfileRequest::default(), auth))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn admin_calls_need_exactly_the_admin_token() {
    let s = servers().await;
    let mut admin = client(s.edge_admin).await;
    let refused = [
        None,
        Some("Bearer wrong-token-of-same-len".to_string()),
        Some("Bearer short".to_string()),
        Some(format!("Bearer {TOKEN} ")),
        Some(format!("Bearer {TOKEN}\t")),
        Some(format!("Bearer  {TOKEN}")),
        Some(TOKEN.to_string()),
    ];
    for authorization in &refused {
        let status = admin
            .get_status(with_auth(GetStatusRequest {}, authorization.as_deref()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{authorization:?}");
        let status = admin
            .set_policy(with_auth(
                SetPolicyRequest {
                    threshold: Some(0.1),
                    ..Default::default()
                },
                authorization.as_deref(),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{authorization:?}");
    }
    let bearer = format!("Bearer {TOKEN}");
    let status = admin
        .get_status(with_auth(GetStatusRequest {}, Some(&bearer)))
        .await
        .expect("the right token works")
        .into_inner();
    assert_eq!(status.edge_model.unwrap().name, "edge-mlp");
    let policy = admin
        .set_policy(with_auth(
            SetPolicyRequest {
                threshold: Some(0.5),
                ..Default::default()
            },
            Some(&bearer),
        ))
        .await
        .expect("the right token works")
        .into_inner();
    assert_eq!(policy.threshold, 0.5);
    s.stop().await.unwrap();
}

/// Resident memory of this process (the servers run in it), in kB.
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[tokio::test]
async fn profile_documents_open_no_path_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    std::fs::create_dir(&traces).unwrap();
    std::fs::write(traces.join("up.trace"), "1\n2\n3\n").unwrap();
    // A secret beside the trace directory, and the system's password file.
    std::fs::write(dir.path().join("secret"), "the-secret-content\n").unwrap();
    let s = start(LocalOptions {
        profile: "ideal".into(),
        admin_token: Some(TOKEN.into()),
        link_trace_dir: Some(traces.clone()),
        ..LocalOptions::default()
    })
    .await
    .expect("servers start");
    let mut admin = client(s.edge_admin).await;
    let bearer = format!("Bearer {TOKEN}");
    let set = |trace: String| {
        let document = format!("[uplink]\ntrace = {trace:?}\n[downlink]\n");
        with_auth(
            SetLinkProfileRequest {
                profile: Some(edgeinfer::v1::set_link_profile_request::Profile::Document(
                    document,
                )),
                seed: 0,
            },
            Some(&bearer),
        )
    };
    let before = rss_kb();
    let refused = [
        "/etc/passwd".to_string(),
        "../secret".to_string(),
        traces.join("up.trace").display().to_string(),
        "/dev/zero".to_string(),
        "sub/up.trace".to_string(),
    ];
    for trace in &refused {
        for _ in 0..20 {
            let status = admin
                .set_link_profile(set(trace.clone()))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{trace}: {status:?}");
            let message = status.message();
            assert!(
                message.contains("uplink.trace"),
                "names the field: {message}"
            );
            for content in ["root:", "the-secret-content", "\n1\n"] {
                assert!(
                    !message.contains(content),
                    "{trace}: quotes a file: {message}"
                );
            }
        }
    }
    let grown = rss_kb().saturating_sub(before);
    assert!(grown < 16 * 1024, "resident memory grew by {grown} kB");
    // A bare name inside the directory is what a document may name.
    let reply = admin
        .set_link_profile(set("up.trace".into()))
        .await
        .expect("a trace in the directory is accepted")
        .into_inner();
    assert_eq!(reply.link_profile, "custom");
    s.stop().await.unwrap();
}
