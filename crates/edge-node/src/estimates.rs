//! What the edge learns online about the path to the cloud, from what it observes: the round
//! trip of small messages (RFC 6298 smoothing, and the median of the recent ones), the
//! effective bandwidth per direction, and the time the cloud reports spending. The router asks
//! it how long a cloud call of a given size is expected to take.
//!
//! The expected call is built from medians of recent samples, not from means. A radio link's
//! delays are heavy-tailed (on `cell-edge` the round-trip p99 is five times the p50): the rare
//! slow exchange pulls a mean above what most calls see, and a router comparing it with a
//! budget between the two would never call the cloud although most calls would return in
//! time. With medians, a call is made when it is more likely than not to arrive; one that
//! does not is answered by the edge at the deadline, as for any other late cloud. SRTT and
//! RTTVAR are still kept: they give RFC 6298's retransmission timeout.
//!
//! Rates come from real exchanges: a one-way time minus half the median small-message round
//! trip is that message's serialization (and queueing) time, a sample that jitter can make
//! negative. Keeping negative samples matters: dropping them, and averaging the rest, would
//! keep exactly the exchanges that jitter slowed down and report a fraction of the real rate.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// RFC 6298 gains: SRTT moves 1/8 toward a sample, RTTVAR 1/4.
const ALPHA: f64 = 0.125;
const BETA: f64 = 0.25;
/// Smoothing of cloud-time samples.
const GAIN: f64 = 0.2;
/// Samples kept for a median: 16 s of probes at the edge's 250 ms interval.
const RECENT: usize = 64;

/// A snapshot of the estimates, in seconds and bits per second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Smoothed round trip of small messages; `None` before the first sample.
    pub srtt: Option<f64>,
    /// Round-trip variation.
    pub rttvar: f64,
    /// Median of the last [`RECENT`] round trips; `None` before the first sample.
    pub rtt_p50: Option<f64>,
    /// Effective uplink rate, bits per second; `None` until measured, or while messages
    /// cross faster than jitter lets the edge tell.
    pub uplink_bps: Option<f64>,
    /// Effective downlink rate, bits per second, as for the uplink.
    pub downlink_bps: Option<f64>,
    /// Smoothed time the cloud spends per request.
    pub cloud: f64,
}

/// The edge's estimates of the cloud path.
#[derive(Debug, Default)]
pub struct PathEstimates {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    snapshot: Snapshot,
    /// Round trips of probes, seconds.
    rtts: Window,
    /// Serialization time per byte of real exchanges, seconds, per direction.
    uplink: Window,
    downlink: Window,
}

/// The last [`RECENT`] samples of something, oldest first.
#[derive(Debug, Default)]
struct Window(VecDeque<f64>);

impl Window {
    /// Adds a sample and returns the median of the window (the mean of the middle two for an
    /// even count).
    fn push(&mut self, sample: f64) -> f64 {
        if self.0.len() == RECENT {
            self.0.pop_front();
        }
        self.0.push_back(sample);
        let mut v: Vec<f64> = self.0.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        }
    }
}

impl Snapshot {
    /// Expected time of a cloud call sending `up_bytes` and receiving `down_bytes`: the median
    /// round trip plus serialization at the measured rates plus the cloud's time. `None` while
    /// the round trip has never been measured.
    pub fn expected_call(&self, up_bytes: usize, down_bytes: usize) -> Option<Duration> {
        let rtt = self.rtt_p50?;
        let ser = |bytes: usize, bps: Option<f64>| bps.map_or(0.0, |b| bytes as f64 * 8.0 / b);
        let total =
            rtt + ser(up_bytes, self.uplink_bps) + ser(down_bytes, self.downlink_bps) + self.cloud;
        Some(Duration::from_secs_f64(total.max(0.0)))
    }

    /// RFC 6298's retransmission timeout, SRTT + 4 RTTVAR, kept between 50 ms and 2 s; 1 s
    /// before the first sample. An exchange slower than this is taken as lost: probes wait
    /// this long, and only a cloud call given at least this long counts against the circuit
    /// when it times out.
    pub fn rto(&self) -> Duration {
        self.srtt.map_or(Duration::from_secs(1), |srtt| {
            Duration::from_secs_f64((srtt + 4.0 * self.rttvar).clamp(0.05, 2.0))
        })
    }
}

impl PathEstimates {
    /// The current estimates.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().snapshot
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// RFC 6298's retransmission timeout of the current estimates ([`Snapshot::rto`]).
    pub fn rto(&self) -> Duration {
        self.snapshot().rto()
    }

    /// Records the round trip of a small message (a probe), which is nearly all latency.
    pub fn observe_rtt(&self, rtt: Duration) {
        let r = rtt.as_secs_f64();
        let mut state = self.lock();
        let p50 = state.rtts.push(r);
        let s = &mut state.snapshot;
        s.rtt_p50 = Some(p50);
        match s.srtt {
            None => {
                s.srtt = Some(r);
                s.rttvar = r / 2.0;
            }
            Some(srtt) => {
                s.rttvar = (1.0 - BETA) * s.rttvar + BETA * (srtt - r).abs();
                s.srtt = Some((1.0 - ALPHA) * srtt + ALPHA * r);
            }
        }
    }

    /// Records one real exchange: bytes each way, the one-way times the link reported, and
    /// the cloud's own time. Before any round trip is known the one-way times cannot be
    /// split into latency and serialization, and teach nothing.
    pub fn observe_exchange(
        &self,
        up_bytes: usize,
        up: Duration,
        down_bytes: usize,
        down: Duration,
        cloud: Duration,
    ) {
        let mut state = self.lock();
        let cloud = cloud.as_secs_f64();
        let old = state.snapshot.cloud;
        state.snapshot.cloud = if old > 0.0 {
            old + GAIN * (cloud - old)
        } else {
            cloud
        };
        let Some(rtt) = state.snapshot.rtt_p50 else {
            return;
        };
        // Seconds per byte, then bits per second; a median at or below zero means the
        // messages cross faster than the edge can tell from jitter.
        let per_byte =
            |bytes: usize, t: Duration| (t.as_secs_f64() - rtt / 2.0) / bytes.max(1) as f64;
        let rate = |spb: f64| (spb > 0.0).then(|| 8.0 / spb);
        let up_spb = state.uplink.push(per_byte(up_bytes, up));
        let down_spb = state.downlink.push(per_byte(down_bytes, down));
        state.snapshot.uplink_bps = rate(up_spb);
        state.snapshot.downlink_bps = rate(down_spb);
    }

    /// Forgets everything, for a new link profile.
    pub fn reset(&self) {
        *self.lock() = State::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn rtt_follows_rfc_6298() {
        let e = PathEstimates::default();
        assert_eq!(e.snapshot().expected_call(100, 100), None);
        e.observe_rtt(ms(40));
        let s = e.snapshot();
        assert_eq!(s.srtt, Some(0.040));
        assert!((s.rttvar - 0.020).abs() < 1e-12);
        e.observe_rtt(ms(80));
        let s = e.snapshot();
        assert!((s.srtt.unwrap() - 0.045).abs() < 1e-12);
        assert!((s.rttvar - (0.75 * 0.020 + 0.25 * 0.040)).abs() < 1e-12);
    }

    #[test]
    fn big_exchanges_teach_the_rates_and_the_cloud_time() {
        let e = PathEstimates::default();
        e.observe_rtt(ms(20));
        // 125,000 bytes up in 10 ms + 100 ms of serialization: 10 Mbit/s.
        e.observe_exchange(125_000, ms(110), 100, ms(10), ms(5));
        let s = e.snapshot();
        assert!((s.uplink_bps.unwrap() - 10e6).abs() < 1.0);
        assert_eq!(s.downlink_bps, None, "a small message gives no rate");
        assert!((s.cloud - 0.005).abs() < 1e-12);
        let expected = e.snapshot().expected_call(125_000, 100).unwrap();
        assert!((expected.as_secs_f64() - (0.020 + 0.100 + 0.005)).abs() < 1e-9);
    }

    #[test]
    fn a_heavy_tail_moves_srtt_but_not_the_expected_call() {
        let e = PathEstimates::default();
        // Nine round trips of 80 ms and one of 400 ms, repeated: the mean is 112 ms.
        for _ in 0..6 {
            for _ in 0..9 {
                e.observe_rtt(ms(80));
            }
            e.observe_rtt(ms(400));
        }
        let s = e.snapshot();
        assert_eq!(s.rtt_p50, Some(0.080));
        assert!(s.srtt.unwrap() > 0.090, "srtt {:?}", s.srtt);
        assert_eq!(e.snapshot().expected_call(10, 10), Some(ms(80)));
    }

    #[test]
    fn the_median_forgets_old_round_trips() {
        let e = PathEstimates::default();
        for _ in 0..RECENT {
            e.observe_rtt(ms(200));
        }
        for _ in 0..=RECENT / 2 {
            e.observe_rtt(ms(10));
        }
        assert_eq!(e.snapshot().rtt_p50, Some(0.010));
        e.reset();
        assert_eq!(e.snapshot(), Snapshot::default());
        e.observe_rtt(ms(30));
        e.observe_rtt(ms(50));
        assert_eq!(e.snapshot().rtt_p50, Some(0.040));
    }

    #[test]
    fn the_rto_follows_rfc_6298() {
        let e = PathEstimates::default();
        assert_eq!(e.rto(), Duration::from_secs(1));
        e.observe_rtt(ms(100));
        // SRTT 100 ms, RTTVAR 50 ms: 300 ms.
        assert_eq!(e.rto(), ms(300));
        let fast = PathEstimates::default();
        fast.observe_rtt(ms(1));
        assert_eq!(fast.rto(), ms(50), "kept above 50 ms");
    }

    #[test]
    fn jitter_does_not_drag_the_rate_down() {
        let e = PathEstimates::default();
        e.observe_rtt(ms(80));
        // 3,000 bytes at 2 Mbit/s take 12 ms; the one-way latency is 40 ms give or take 30,
        // with an occasional 200 ms. Keeping only the samples above 40 ms would give 0.6 Mbit/s.
        for latency in [10, 70, 40, 25, 55, 200, 10, 70, 40, 25, 55] {
            e.observe_exchange(3_000, ms(latency + 12), 3_000, ms(latency), ms(1));
        }
        let s = e.snapshot();
        let up = s.uplink_bps.unwrap();
        assert!((up - 2e6).abs() < 1.0, "uplink {up}");
        assert_eq!(s.downlink_bps, None, "no serialization visible downstream");
        assert_eq!(
            e.snapshot().expected_call(3_000, 3_000),
            Some(ms(80 + 12 + 1))
        );
    }

    #[test]
    fn exchanges_before_any_round_trip_teach_only_the_cloud_time() {
        let e = PathEstimates::default();
        e.observe_exchange(3_000, ms(50), 100, ms(40), ms(2));
        let s = e.snapshot();
        assert_eq!((s.uplink_bps, s.downlink_bps), (None, None));
        assert!((s.cloud - 0.002).abs() < 1e-12);
        assert_eq!(e.snapshot().expected_call(3_000, 100), None);
    }
}
