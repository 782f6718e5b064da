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
