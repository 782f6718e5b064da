//! `link sample`: what a profile does to a stream of request/response exchanges, simulated at
//! once on the [`Simulator`].
//!
//! The experiment: one caller sends `messages` requests of `bytes` one after another; the far
//! end answers each at once with `bytes` too (an echo). A request goes out when the previous
//! exchange is settled: answered, or given up by the link layer. So small messages never queue
//! behind each other and the figures are those of an idle link, as the profile table's are.
//!
//! - `delivered` / `lost` count exchanges: an exchange is lost when its request or its response
//!   is. `lost / messages` is the loss a caller sees, which is what the profile table's
//!   long-run loss means.
//! - `uplink_ms`, `downlink_ms`: one-way times (serialization, retransmissions, handover waits and
//!   delay) of delivered messages; `rtt_ms`: request sent to response received, delivered
//!   exchanges only.
//! - `throughput_mbps`: bytes delivered per second of air time in each direction, which is the
//!   rate a sender with back-to-back messages of this size would get. `null` when the direction
//!   takes no air time (unlimited bandwidth).
//!
//! Percentiles are nearest-rank; milliseconds are rounded to the microsecond so that the output
//! is byte-identical for a seed.

use std::time::Duration;

use serde::Serialize;

use crate::profile::LinkProfile;
use crate::sim::{Direction, Simulator};

/// What `link sample` reports; serialized as the JSON of design.md section 8.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleReport {
    /// Profile name.
    pub profile: String,
    /// Exchanges attempted.
    pub messages: u64,
    /// Size of each request and each response.
    pub bytes: usize,
    /// The seed of the link.
    pub seed: u64,
    /// Exchanges completed.
    pub delivered: u64,
    /// Exchanges lost (request or response).
    pub lost: u64,
    /// `lost / messages`.
    pub loss_rate: f64,
    /// One-way time of delivered requests.
    pub uplink_ms: Summary,
    /// One-way time of delivered responses.
    pub downlink_ms: Summary,
    /// Round trip of delivered exchanges.
    pub rtt_ms: Summary,
    /// Rate in each direction.
    pub throughput_mbps: Throughput,
    /// Transmission attempts beyond the first, both directions.
    pub retransmissions: u64,
    /// Handovers during the experiment.
    pub handovers: u64,
    /// Simulated duration of the experiment.
    pub simulated_s: f64,
}

/// Percentiles and mean of a set of times in milliseconds; `null`s when the set is empty.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Mean.
    pub mean: Option<f64>,
}

/// Throughput in each direction, Mbit/s.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throughput {
    /// Edge to cloud.
    pub uplink: Option<f64>,
    /// Cloud to edge.
    pub downlink: Option<f64>,
}

/// Simulates `messages` exchanges of `bytes` each way on `profile` with `seed`.
pub fn sample(profile: &LinkProfile, messages: u64, bytes: usize, seed: u64) -> SampleReport {
    sample_rtts(profile, messages, bytes, seed).0
}

/// [`sample`], and the round trip of each delivered exchange in the order they were made (what
/// its `rtt_ms` summarizes), for a caller that combines them with other measurements.
pub fn sample_rtts(
    profile: &LinkProfile,
    messages: u64,
    bytes: usize,
    seed: u64,
) -> (SampleReport, Vec<Duration>) {
    let mut sim = Simulator::new(profile, seed);
    let mut now = Duration::ZERO;
    let mut one_way: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut rtt = Vec::new();
    let mut carried = [0u64; 2];
    let mut air = [Duration::ZERO; 2];
    let mut retransmissions = 0u64;
    let mut lost = 0u64;
    for _ in 0..messages {
        let start = now;
        let mut at = start;
        let mut exchange_lost = false;
        for dir in Direction::BOTH {
            let d = sim.send(dir, bytes, at);
            air[dir.index()] += d.air_time();
            retransmissions += u64::from(d.attempts.saturating_sub(1));
            at = d.settled_at();
            match d.one_way() {
                Some(t) => {
                    one_way[dir.index()].push(t);
                    carried[dir.index()] += bytes as u64;
                }
                None => {
                    exchange_lost = true;
                    break;
                }
            }
        }
        if exchange_lost {
            lost += 1;
        } else {
            rtt.push(at - start);
        }
        now = at;
    }
    let rate = |i: usize| {
        if carried[i] == 0 {
            Some(0.0)
        } else if air[i].is_zero() {
            None
        } else {
            Some(round3(carried[i] as f64 * 8.0 / air[i].as_secs_f64() / 1e6))
        }
    };
    let [up, down] = one_way;
    let report = SampleReport {
        profile: profile.name.clone(),
        messages,
        bytes,
        seed,
        delivered: messages - lost,
        lost,
        loss_rate: if messages == 0 {
            0.0
        } else {
            lost as f64 / messages as f64
        },
        uplink_ms: summarize(up),
        downlink_ms: summarize(down),
        rtt_ms: summarize(rtt.clone()),
        throughput_mbps: Throughput {
            uplink: rate(0),
            downlink: rate(1),
        },
        retransmissions,
        handovers: sim.handovers_by(now),
        simulated_s: round3(now.as_secs_f64()),
    };
    (report, rtt)
}

fn summarize(mut v: Vec<Duration>) -> Summary {
    if v.is_empty() {
        return Summary {
            p50: None,
            p99: None,
            mean: None,
        };
    }
    v.sort_unstable();
    let ms = |d: Duration| round3(d.as_secs_f64() * 1e3);
    let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    let total: Duration = v.iter().sum();
    Summary {
        p50: Some(ms(rank(0.50))),
        p99: Some(ms(rank(0.99))),
        mean: Some(ms(total / v.len() as u32)),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_report_other_seed_differs() {
        let p = LinkProfile::builtin("lte").unwrap();
        let a = serde_json::to_string(&sample(&p, 2000, 64, 1)).unwrap();
        let b = serde_json::to_string(&sample(&p, 2000, 64, 1)).unwrap();
        let c = serde_json::to_string(&sample(&p, 2000, 64, 2)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn offline_delivers_nothing() {
        let r = sample(&LinkProfile::builtin("offline").unwrap(), 100, 64, 1);
        assert_eq!((r.delivered, r.lost), (0, 100));
        assert_eq!(r.rtt_ms.p50, None);
        assert_eq!(r.throughput_mbps.uplink, Some(0.0));
    }

    #[test]
    fn ideal_is_instant_and_unlimited() {
        let r = sample(&LinkProfile::builtin("ideal").unwrap(), 100, 1_000_000, 1);
        assert_eq!(r.delivered, 100);
        assert_eq!(r.rtt_ms.p99, Some(0.0));
        assert_eq!(r.throughput_mbps.uplink, None);
    }
}
