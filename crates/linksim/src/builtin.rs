//! The built-in profiles and the figures each one targets.
//!
//! Targets are the profile table of `references.md` (measured small-message RTT, capacities,
//! long-run loss, handover rate and duration). The parameters are chosen so that
//! `edgeinfer link sample --messages 20000 --bytes 64 --seed 1` lands on those targets; the
//! delay parameters come from `cargo run -p edgeinfer-linksim --example calibrate -- --tune`
//! (rounded), the loss parameters from [`crate::message_loss_rate`], as follows.
//!
//! - **Loss.** The table's loss is the loss a caller sees per request/response exchange, after
//!   link-layer retransmissions. Each direction gets `1 - sqrt(1 - loss)`. A first attempt fails
//!   with the block error rate that link adaptation aims at (10 % on eMBB and LTE, 20 % at the
//!   cell edge); that alone, retried, would lose almost nothing, so what is lost is lost in bad
//!   spells (blockage, deep fades: a Gilbert-Elliott bad state losing 90-95 % of
//!   attempts, lasting `1/r` attempts), entered with the probability `p` that gives the target. URLLC has no bad spells: one
//!   retransmission of a 0.224 % first-attempt error gives its 5e-6 per direction.
//! - **Retransmission delay**: HARQ round trip, about 8 ms on LTE FDD, 1-4 ms on NR depending on
//!   numerology; at the cell edge RLC retransmissions (tens of ms) take over.
//! - **Delay**: a base (frame alignment, processing, the path to the cloud) and a log-normal
//!   jitter whose median and p99 are tuned so that the RTT's p50 and p99 (retransmissions and
//!   handovers included) meet the table.
//! - **Handover**: the table's interval and median/p99 duration as they are.

use serde::Serialize;

use crate::profile::{DelayProfile, DirectionProfile, HandoverProfile, LinkProfile, LossProfile};

/// Names of the built-in profiles, in table order.
pub const NAMES: [&str; 7] = [
    "ideal",
    "urllc",
    "embb-mmwave",
    "embb-midband",
    "lte",
    "cell-edge",
    "offline",
];

/// A built-in profile with what it aims at.
#[derive(Debug, Clone, Serialize)]
pub struct Builtin {
    /// The profile.
    pub profile: LinkProfile,
    /// The figures it targets.
    pub targets: Targets,
    /// Where the targets come from.
    pub basis: &'static str,
}

/// The figures a built-in profile targets, for small messages on an idle link.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Targets {
    /// Median round trip, ms (`None`: nothing is delivered).
    pub rtt_p50_ms: Option<f64>,
    /// 99th percentile round trip, ms.
    pub rtt_p99_ms: Option<f64>,
    /// Uplink capacity, Mbit/s (`None`: unlimited).
    pub uplink_mbps: Option<f64>,
    /// Downlink capacity, Mbit/s (`None`: unlimited).
    pub downlink_mbps: Option<f64>,
    /// Long-run fraction of exchanges lost.
    pub loss: f64,
    /// Mean time between handovers, s (`None`: no handovers).
    pub handover_every_s: Option<f64>,
    /// Median handover interruption, ms.
    pub handover_median_ms: Option<f64>,
    /// 99th percentile handover interruption, ms.
    pub handover_p99_ms: Option<f64>,
}

/// Per-direction message loss giving an exchange loss of `exchange`.
pub fn per_direction_loss(exchange: f64) -> f64 {
    1.0 - (1.0 - exchange).sqrt()
}

struct Spec {
    name: &'static str,
    description: &'static str,
    basis: &'static str,
    targets: Targets,
    up: DirectionProfile,
    down: DirectionProfile,
}

fn dir(
    mbps: f64,
    base_ms: f64,
    median_ms: f64,
    p99_ms: f64,
    loss: LossProfile,
) -> DirectionProfile {
    DirectionProfile {
        bandwidth_mbps: Some(mbps),
        trace: None,
        trace_ms: None,
        delay: DelayProfile {
            base_ms,
            jitter_median_ms: median_ms,
            jitter_p99_ms: p99_ms,
            correlation: 0.0,
        },
        loss,
    }
}

fn ge(p: f64, r: f64, loss_good: f64, loss_bad: f64, retransmit_ms: f64, max: u32) -> LossProfile {
    LossProfile {
        p,
        r,
        loss_good,
        loss_bad,
        retransmit_ms,
        max_retransmissions: max,
    }
}

fn targets(rtt: (f64, f64), up: f64, down: f64, loss: f64, ho: Option<(f64, f64, f64)>) -> Targets {
    Targets {
        rtt_p50_ms: Some(rtt.0),
        rtt_p99_ms: Some(rtt.1),
        uplink_mbps: Some(up),
        downlink_mbps: Some(down),
        loss,
        handover_every_s: ho.map(|h| h.0),
        handover_median_ms: ho.map(|h| h.1),
        handover_p99_ms: ho.map(|h| h.2),
    }
}

/// Every built-in profile, in table order.
pub fn builtins() -> Vec<Builtin> {
    let specs = [
        Spec {
            name: "ideal",
            description: "no delay, unlimited bandwidth, no loss: for tests",
            basis: "tests",
            targets: Targets {
                rtt_p50_ms: Some(0.0),
                rtt_p99_ms: Some(0.0),
                uplink_mbps: None,
                downlink_mbps: None,
                loss: 0.0,
                handover_every_s: None,
                handover_median_ms: None,
                handover_p99_ms: None,
            },
            up: DirectionProfile::unlimited(),
            down: DirectionProfile::unlimited(),
        },
        Spec {
            name: "urllc",
            description: "5G URLLC: 0.5 ms user plane each way, 1e-5 loss, no handover",
            basis: "TR 38.913 (0.5 ms UL/DL user plane), ITU-R M.2410 (1 ms, 1-1e-5)",
            targets: targets((1.0, 2.0), 50.0, 100.0, 1e-5, None),
            up: dir(50.0, 0.35, 0.12, 0.87, ge(0.0, 1.0, 2.24e-3, 0.0, 0.5, 1)),
            down: dir(100.0, 0.35, 0.12, 0.87, ge(0.0, 1.0, 2.24e-3, 0.0, 0.5, 1)),
        },
        Spec {
            name: "embb-mmwave",
            description: "5G NSA mmWave, static: low median, heavy tail, frequent handovers",
            basis: "5G-MeMU 2022 (RTT 14.3 ms median, p99 123 ms; uplink 103 Mbit/s), \
                    WWW 2020 (downlink 1,436 Mbit/s), SIGCOMM 2021/22 (NSA handover every 5.5 s, \
                    51-60 ms, p99 113 ms)",
            targets: targets((14.0, 120.0), 100.0, 1400.0, 1e-3, Some((5.5, 55.0, 113.0))),
            up: dir(100.0, 3.0, 2.6, 72.0, ge(5.27e-4, 0.2, 0.1, 0.9, 2.0, 3)),
            down: dir(1400.0, 3.0, 2.6, 72.0, ge(5.27e-4, 0.2, 0.1, 0.9, 2.0, 3)),
        },
        Spec {
            name: "embb-midband",
            description: "5G SA mid-band: moderate median, light tail, rare handovers",
            basis: "WWW 2020 (mid-band downlink 347 Mbit/s, RTT), SIGCOMM 2021/22 (SA handover \
                    every 45 s, 66 ms, p99 74 ms)",
            targets: targets((28.0, 60.0), 50.0, 350.0, 1e-3, Some((45.0, 66.0, 74.0))),
            up: dir(50.0, 8.0, 4.9, 28.0, ge(5.27e-4, 0.2, 0.1, 0.9, 4.0, 3)),
            down: dir(350.0, 8.0, 4.9, 28.0, ge(5.27e-4, 0.2, 0.1, 0.9, 4.0, 3)),
        },
        Spec {
            name: "lte",
            description: "LTE: 8 ms HARQ, handover every 15 s",
            basis: "5G-MeMU 2022 (LTE RTT 37.4 ms, uplink 46 Mbit/s), SIGCOMM 2021/22 (LTE \
                    handover every 15 s, 32-37 ms, p99 up to 181 ms)",
            targets: targets((37.0, 90.0), 46.0, 60.0, 5e-3, Some((15.0, 35.0, 120.0))),
            up: dir(46.0, 10.0, 6.4, 46.0, ge(3.17e-3, 0.2, 0.1, 0.9, 8.0, 3)),
            down: dir(60.0, 10.0, 6.4, 46.0, ge(3.17e-3, 0.2, 0.1, 0.9, 8.0, 3)),
        },
        Spec {
            name: "cell-edge",
            description: "degraded coverage: slow, long bursty fades, RLC retransmissions",
            basis: "degraded coverage (table in references.md): bursty loss 3e-2",
            targets: targets((80.0, 400.0), 2.0, 10.0, 3e-2, Some((10.0, 80.0, 250.0))),
            up: dir(2.0, 20.0, 9.7, 230.0, ge(5.64e-3, 0.1, 0.2, 0.95, 20.0, 3)),
            down: dir(10.0, 20.0, 9.7, 230.0, ge(5.64e-3, 0.1, 0.2, 0.95, 20.0, 3)),
        },
        Spec {
            name: "offline",
            description: "link down: nothing is delivered",
            basis: "link down",
            targets: Targets {
                rtt_p50_ms: None,
                rtt_p99_ms: None,
                uplink_mbps: Some(0.0),
                downlink_mbps: Some(0.0),
                loss: 1.0,
                handover_every_s: None,
                handover_median_ms: None,
                handover_p99_ms: None,
            },
            up: DirectionProfile::with_bandwidth(0.0),
            down: DirectionProfile::with_bandwidth(0.0),
        },
    ];
    specs
        .into_iter()
        .map(|s| Builtin {
            profile: LinkProfile {
                name: s.name.to_owned(),
                description: s.description.to_owned(),
                uplink: s.up,
                downlink: s.down,
                handover: s.targets.handover_every_s.map(|every| HandoverProfile {
                    mean_interval_s: every,
                    duration_median_ms: s.targets.handover_median_ms.unwrap_or(0.0),
                    duration_p99_ms: s.targets.handover_p99_ms.unwrap_or(0.0),
                    in_flight: Default::default(),
                }),
            },
            targets: s.targets,
            basis: s.basis,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_profiles() {
        let names: Vec<String> = builtins().into_iter().map(|b| b.profile.name).collect();
        assert_eq!(names, NAMES);
        for b in builtins() {
            b.profile.validate().unwrap();
        }
    }
}
