//! Trace replay: a trace of known rate replays at that rate, and the shipped Mahimahi-format
//! traces load through a profile file.

use std::path::Path;
use std::time::Duration;

use edgeinfer_linksim::{Direction, DirectionProfile, Link, LinkProfile, Simulator, Trace, sample};
use tokio::time::Instant;

/// A profile whose uplink replays `trace_text`, nothing else in the way.
fn traced(dir: &Path, trace_text: &str) -> LinkProfile {
    let path = dir.join("rate.up");
    std::fs::write(&path, trace_text).unwrap();
    LinkProfile {
        name: "traced".into(),
        description: String::new(),
        uplink: DirectionProfile {
            trace: Some(path),
            ..DirectionProfile::default()
        },
        downlink: DirectionProfile::unlimited(),
        handover: None,
    }
}

/// 1,000 opportunities per second of 1,500 bytes: 12 Mbit/s.
fn twelve_mbps() -> String {
    (1..=1000).map(|ms| format!("{ms}\n")).collect()
}

#[test]
fn known_rate_replays_at_that_rate_in_the_core() {
    let dir = tempfile::tempdir().unwrap();
    let r = sample(&traced(dir.path(), &twelve_mbps()), 50, 1_000_000, 1);
    let up = r.throughput_mbps.uplink.unwrap();
    assert!((up - 12.0).abs() / 12.0 <= 0.05, "{up} Mbit/s");
}

#[tokio::test(start_paused = true)]
async fn known_rate_replays_at_that_rate_on_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::new(traced(dir.path(), &twelve_mbps()), 1);
    let start = Instant::now();
    // Ten 1.2 MB messages at once, back to back: 8,000 opportunities, 8 s at 1 per ms.
    let sends: Vec<_> = (0..10)
        .map(|_| {
            let link = link.clone();
            tokio::spawn(async move { link.transmit(Direction::Uplink, 1_200_000).await })
        })
        .collect();
    for s in sends {
        s.await.unwrap().unwrap();
    }
    let mbps = 12e6 * 8.0 / start.elapsed().as_secs_f64() / 1e6;
    assert!((mbps - 12.0).abs() / 12.0 <= 0.05, "{mbps} Mbit/s");
    assert_eq!(start.elapsed(), Duration::from_secs(8));
}

#[test]
fn shipped_lte_traces_load_through_their_profile() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("traces");
    let down = Trace::load(&dir.join("synthetic-lte.down")).unwrap();
    assert_eq!(down.period(), Duration::from_secs(20));
    assert!(
        (down.mean_rate_mbps() - 12.4).abs() < 0.01,
        "{}",
        down.mean_rate_mbps()
    );

    let profile = LinkProfile::load(dir.join("lte-trace.toml")).unwrap();
    assert_eq!(profile.name, "lte-trace");
    // A sender that keeps the link busy gets each trace's mean rate (over whole loops).
    for (dir, mean) in [(Direction::Uplink, 3.27f64), (Direction::Downlink, 12.4)] {
        let mut sim = Simulator::new(&profile, 1);
        let last = (0..100)
            .map(|_| sim.send(dir, 1_000_000, Duration::ZERO))
            .last()
            .unwrap();
        let mbps = 100e6 * 8.0 / last.air_end.as_secs_f64() / 1e6;
        assert!((mbps - mean).abs() / mean <= 0.05, "{dir}: {mbps} Mbit/s");
    }
}
