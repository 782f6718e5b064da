//! TLS end to end: a client reaches the edge over TLS, the edge reaches the cloud over mutual
//! TLS, and what lacks the right credentials is refused. Certificates are made for the test
//! with rcgen: a CA, and one certificate for 127.0.0.1 signed by it.

use std::path::Path;
use std::time::Duration;

use edgeinfer::v1::inference_client::InferenceClient;
use edgeinfer::v1::{InferRequest, Placement, Tier};
use edgeinfer_cli::local::{LocalOptions, LocalTls, start};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// The HTTP/2 client connection preface and an empty SETTINGS frame (RFC 9113 section 3.4).
const HTTP2_PREFACE: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// TLS record content type `alert` and alert level `fatal` (RFC 8446 sections 5.1 and 6).
const TLS_ALERT: u8 = 21;
const TLS_FATAL: u8 = 2;

/// Every cause of an error, outermost first, with their debug forms (where h2 and rustls
/// put the error kinds).
fn causes(err: &tonic::Status) -> String {
    let mut chain = format!("{err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        chain.push_str(&format!(" <- {e} {e:?}"));
        source = e.source();
    }
    chain
}

/// True when the call failed in the connection (a `tonic::transport::Error` below the
/// status), not with a status some handler or layer of the server sent.
fn transport_failure(err: &tonic::Status) -> bool {
    std::error::Error::source(err).is_some_and(|e| e.is::<tonic::transport::Error>())
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

    // Plaintext to the TLS port: something listens (the TCP connection is accepted), and it
    // speaks TLS: an HTTP/2 preface gets a fatal TLS alert record back. A port where nothing
    // listens fails the connect instead, and a plaintext server would answer with SETTINGS;
    // both fail here.
    let mut tcp = tokio::net::TcpStream::connect(s.edge)
        .await
        .expect("the edge's TLS port accepts TCP connections");
    tcp.write_all(HTTP2_PREFACE).await.unwrap();
    let mut reply = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut reply))
        .await
        .expect("the TLS server answers the preface at once")
        .expect("a whole TLS alert record");
    assert_eq!(
        (reply[0], reply[1], reply[3], reply[4], reply[5]),
        (TLS_ALERT, 3, 0, 2, TLS_FATAL),
        "a fatal TLS alert record (type 21, version 3.x, length 2, level 2): {reply:?}"
    );
    let plain = connect(format!("http://{}", s.edge), None)
        .await
        .expect("TCP connects; the refusal comes from the TLS server's answer");
    let err = InferenceClient::new(plain)
        .infer(request(Placement::EdgeOnly))
        .await
        .unwrap_err();
    // The gRPC client sees the same refusal, but which error it reports depends on a race
    // (the alert read as an HTTP/2 frame of impossible size, the close, or a broken pipe),
    // so the bytes above are the proof; here the call must fail in the transport, before
    // any handler could have answered.
    assert!(transport_failure(&err), "{}", causes(&err));

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

    // The cloud wants a client certificate. Without one, the client's side of the TLS 1.3
    // handshake completes (so connecting succeeds) and the server's `certificate_required`
    // alert ends the connection at the first call; whether the client reads the alert or
    // only the close is a race, so both count, but only as a transport failure. The same
    // call with a certificate then succeeds: the certificate is the whole difference.
    let anonymous = connect(format!("https://{}", s.cloud), Some(verify.clone()))
        .await
        .expect("the client's side of the handshake completes");
    let err = InferenceClient::new(anonymous)
        .infer(request(Placement::Auto))
        .await
        .expect_err("the cloud answered a client without a certificate");
    assert!(transport_failure(&err), "{}", causes(&err));
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
