//! TLS end to end: a client reaches the edge over TLS, the edge reaches the cloud over mutual
//! TLS, and what lacks the right credentials is refused. Certificates are made for the test
//! with rcgen: a CA, and one certificate for 127.0.0.1 signed by it.

use std::path::Path;
use std::time::Duration;

use edgeinfer::v1::inference_client::InferenceClient;
use edgeinfer::v1::{InferRequest, Placement, Tier};
use edgeinfer_cli::local::{LocalOptions, LocalTls, start};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Writes `ca.pem`, `node.pem` and `node.key` into `dir`.
fn make_certificates(dir: &Path) -> LocalTls {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let node_key = KeyPair::generate().unwrap();
    let node = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&node_key, &ca)
        .unwrap();
    let tls = LocalTls {
        ca: dir.join("ca.pem"),
        cert: dir.join("node.pem"),
        key: dir.join("node.key"),
    };
    std::fs::write(&tls.ca, ca.pem()).unwrap();
    std::fs::write(&tls.cert, node.pem()).unwrap();
    std::fs::write(&tls.key, node_key.serialize_pem()).unwrap();
    tls
}

async fn connect(url: String, tls: Option<ClientTlsConfig>) -> Result<Channel, String> {
    let mut endpoint = Endpoint::from_shared(url)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

fn request(placement: Placement) -> InferRequest {
    InferRequest {
        input: Some(edgeinfer::v1::infer_request::Input::Raw(vec![0; 784])),
        placement: placement as i32,
        latency_budget_ms: 1000,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_edge_and_mutual_tls_to_the_cloud() {
    let dir = tempfile::tempdir().unwrap();
    let files = make_certificates(dir.path());
    let ca = Certificate::from_pem(std::fs::read(&files.ca).unwrap());
    let me = Identity::from_pem(
        std::fs::read(&files.cert).unwrap(),
        std::fs::read(&files.key).unwrap(),
    );
    let s = start(LocalOptions {
        profile: "ideal".into(),
        tls: Some(files.clone()),
        ..Default::default()
    })
    .await
    .unwrap();

    // A client that checks the edge's certificate against the CA is served, and a request
    // forced to the cloud is answered by it: the edge passed the cloud's mutual TLS.
    let verify = ClientTlsConfig::new()
        .ca_certificate(ca.clone())
        .domain_name("127.0.0.1");
    let edge = connect(format!("https://{}", s.edge), Some(verify.clone()))
        .await
        .unwrap();
    let mut client = InferenceClient::new(edge);
    let r = client
        .infer(request(Placement::CloudOnly))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.served_by(), Tier::Cloud, "{r:?}");
    assert!(!r.degraded, "{r:?}");
    let r = client
        .infer(request(Placement::EdgeOnly))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.served_by(), Tier::Edge);

    // Plaintext to a TLS port gets no answer.
    if let Ok(plain) = connect(format!("http://{}", s.edge), None).await {
        let err = InferenceClient::new(plain)
            .infer(request(Placement::EdgeOnly))
            .await
            .unwrap_err();
        assert_ne!(err.code(), tonic::Code::Ok);
    }

    // A client that does not trust the CA refuses the edge's certificate.
    let stranger = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap();
    let wrong_ca = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(stranger.pem()))
        .domain_name("127.0.0.1");
    let refused = match connect(format!("https://{}", s.edge), Some(wrong_ca)).await {
        Err(e) => e,
        Ok(channel) => format!(
            "{:?}",
            InferenceClient::new(channel)
                .infer(request(Placement::EdgeOnly))
                .await
                .unwrap_err()
        ),
    };
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");

    // The cloud wants a client certificate: without one no call gets through, with one it does.
    let no_identity = match connect(format!("https://{}", s.cloud), Some(verify.clone())).await {
        Err(_) => None,
        Ok(channel) => Some(
            InferenceClient::new(channel)
                .infer(request(Placement::Auto))
                .await,
        ),
    };
    assert!(
        !matches!(no_identity, Some(Ok(_))),
        "the cloud answered a client without a certificate"
    );
    let cloud = connect(format!("https://{}", s.cloud), Some(verify.identity(me)))
        .await
        .unwrap();
    let r = InferenceClient::new(cloud)
        .infer(request(Placement::Auto))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.served_by(), Tier::Cloud);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn bad_tls_files_are_refused_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("node.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let err = match start(LocalOptions {
        tls: Some(LocalTls {
            ca: not_pem.clone(),
            cert: not_pem.clone(),
            key: not_pem,
        }),
        ..Default::default()
    })
    .await
    {
        Ok(_) => panic!("servers started with a certificate file that holds no certificate"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("--tls-cert / CLOUD_TLS_CERT"), "{err}");
    assert!(err.contains("no PEM CERTIFICATE"), "{err}");
}
