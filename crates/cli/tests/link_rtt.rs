//! Issue 15's acceptance for the edge's own link: `edgeinfer up --profile urllc` learns a
//! round-trip median within 1 ms + the loopback gRPC round trip + 0.2 ms, and `--profile ideal`
//! within the loopback round trip + 0.2 ms.
//!
//! The loopback round trip is measured here as the edge's prober sees it: a health check to
//! the cloud every 250 ms, from the same process, with no link, alongside the edge's probes.
//! (Back-to-back calls on a hot connection are several times faster than calls spaced by an
//! idle 250 ms, which wake parked threads on both sides; that is not the link's doing.)
//!
//! Timing on a real clock, so `#[ignore]`: run alone, `cargo test -p edgeinfer-cli --test
//! link_rtt -- --ignored --nocapture --test-threads 1`. It prints the figures it compares.

use std::time::{Duration, Instant};

use edgeinfer::v1::GetStatusRequest;
use edgeinfer::v1::edge_admin_client::EdgeAdminClient;
use edgeinfer_cli::local::{LocalOptions, start};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Probes of each kind: the edge's 250 ms interval for 12 s.
const PROBES: usize = 48;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (the edge's learned median, the direct loopback median), in ms, on `profile`.
async fn learned_and_floor(profile: &str) -> (f64, f64) {
    let servers = start(LocalOptions {
        profile: profile.into(),
        ..LocalOptions::default()
    })
    .await
    .expect("servers start on the shipped models");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", servers.cloud))
        .expect("a loopback URL")
        .connect()
        .await
        .expect("connects to the cloud");
    let mut health = HealthClient::new(channel);
    let mut floor = Vec::with_capacity(PROBES);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    for _ in 0..PROBES + 4 {
        tick.tick().await;
        let start = Instant::now();
        health
            .check(HealthCheckRequest::default())
            .await
            .expect("the cloud answers its health check");
        floor.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let floor = median(floor.split_off(4));
    let mut admin = EdgeAdminClient::connect(format!("http://{}", servers.edge_admin))
        .await
        .expect("connects to the admin listener");
    let status = admin
        .get_status(GetStatusRequest {})
        .await
        .expect("GetStatus answers")
        .into_inner();
    let learned = status.estimates.expect("estimates").rtt_p50_ms;
    servers.stop().await.expect("servers stop");
    (learned, floor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing on the real clock: run alone with --ignored --test-threads 1"]
async fn learned_round_trip_is_the_profile_plus_the_loopback() {
    for (profile, target_ms) in [("ideal", 0.0), ("urllc", 1.0)] {
        let (learned, floor) = learned_and_floor(profile).await;
        let bound = target_ms + floor + 0.2;
        println!(
            "{profile}: learned round-trip median {learned:.3} ms; loopback (health every 250 ms, \
             direct) {floor:.3} ms; bound {target_ms} + {floor:.3} + 0.2 = {bound:.3} ms"
        );
        assert!(
            learned > 0.0 && learned <= bound,
            "{profile}: learned {learned:.3} ms above {bound:.3} ms"
        );
    }
}
