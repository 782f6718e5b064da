//! The built-in profiles against the figures they target (references.md), on the pure core:
//! small-message RTT, long-run loss, throughput of large messages, and offline.

use edgeinfer_linksim::builtin::{builtins, per_direction_loss};
use edgeinfer_linksim::{LinkProfile, message_loss_rate, sample};

const CALIBRATED: [&str; 5] = ["urllc", "embb-mmwave", "embb-midband", "lte", "cell-edge"];

fn rel(measured: f64, target: f64) -> f64 {
    (measured - target).abs() / target
}

/// `link sample --messages 20000 --bytes 64 --seed 1`: p50 within 10 %, p99 within 25 %.
#[test]
fn small_message_rtt_meets_the_table() {
    for b in builtins()
        .into_iter()
        .filter(|b| CALIBRATED.contains(&&*b.profile.name))
    {
        let r = sample(&b.profile, 20_000, 64, 1);
        let (p50, p99) = (r.rtt_ms.p50.unwrap(), r.rtt_ms.p99.unwrap());
        let (t50, t99) = (b.targets.rtt_p50_ms.unwrap(), b.targets.rtt_p99_ms.unwrap());
        eprintln!(
            "{}: rtt p50 {p50} (target {t50}), p99 {p99} (target {t99})",
            r.profile
        );
        assert!(rel(p50, t50) <= 0.10, "{}: p50 {p50} vs {t50}", r.profile);
        assert!(rel(p99, t99) <= 0.25, "{}: p99 {p99} vs {t99}", r.profile);
    }
}

/// A million exchanges: the loss a caller sees is the table's, within 30 %.
#[test]
fn long_run_loss_meets_the_table() {
    for name in ["lte", "cell-edge"] {
        let b = builtins()
            .into_iter()
            .find(|b| b.profile.name == name)
            .unwrap();
        let r = sample(&b.profile, 1_000_000, 64, 1);
        eprintln!(
            "{name}: lost {} of {} = {:.3e} (target {:.0e})",
            r.lost, r.messages, r.loss_rate, b.targets.loss
        );
        assert!(
            rel(r.loss_rate, b.targets.loss) <= 0.30,
            "{name}: {}",
            r.loss_rate
        );
    }
}

/// The exact loss of every profile's loss model gives the table's loss per exchange.
#[test]
fn loss_models_are_calibrated_exactly() {
    for b in builtins()
        .into_iter()
        .filter(|b| CALIBRATED.contains(&&*b.profile.name))
    {
        let target = per_direction_loss(b.targets.loss);
        for dir in [&b.profile.uplink, &b.profile.downlink] {
            let exact = message_loss_rate(&dir.loss);
            assert!(
                rel(exact, target) < 0.01,
                "{}: {exact} vs {target}",
                b.profile.name
            );
        }
    }
}

/// 1 MB messages: throughput within 10 % of the bandwidth in each direction.
#[test]
fn large_messages_get_the_bandwidth() {
    for b in builtins()
        .into_iter()
        .filter(|b| CALIBRATED.contains(&&*b.profile.name))
    {
        let r = sample(&b.profile, 300, 1_000_000, 1);
        let up = r.throughput_mbps.uplink.unwrap();
        let down = r.throughput_mbps.downlink.unwrap();
        let (tu, td) = (
            b.targets.uplink_mbps.unwrap(),
            b.targets.downlink_mbps.unwrap(),
        );
        eprintln!(
            "{}: {up} Mbit/s up (target {tu}), {down} down (target {td})",
            r.profile
        );
        assert!(rel(up, tu) <= 0.10, "{}: uplink {up} vs {tu}", r.profile);
        assert!(
            rel(down, td) <= 0.10,
            "{}: downlink {down} vs {td}",
            r.profile
        );
    }
}

#[test]
fn offline_delivers_nothing() {
    let r = sample(&LinkProfile::builtin("offline").unwrap(), 20_000, 64, 1);
    assert_eq!(r.delivered, 0);
    assert_eq!(r.lost, 20_000);
}

/// Same seed, byte-identical report; another seed, another report.
#[test]
fn sample_is_deterministic_per_seed() {
    let p = LinkProfile::builtin("cell-edge").unwrap();
    let json = |seed| serde_json::to_string(&sample(&p, 20_000, 64, seed)).unwrap();
    assert_eq!(json(1), json(1));
    assert_ne!(json(1), json(2));
}
