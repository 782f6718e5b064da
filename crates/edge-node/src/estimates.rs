//! What the edge learns online about the path to the cloud, from what it observes: the round
//! trip of small messages (RFC 6298 smoothing), the effective bandwidth per direction, and the
//! time the cloud reports spending. The router asks it how long a cloud call of a given size
//! is expected to take.

use std::sync::Mutex;
use std::time::Duration;

/// RFC 6298 gains: SRTT moves 1/8 toward a sample, RTTVAR 1/4.
const ALPHA: f64 = 0.125;
const BETA: f64 = 0.25;
/// Smoothing of bandwidth and cloud-time samples.
const GAIN: f64 = 0.2;

/// A snapshot of the estimates, in seconds and bits per second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Smoothed round trip of small messages; `None` before the first sample.
    pub srtt: Option<f64>,
    /// Round-trip variation.
    pub rttvar: f64,
    /// Effective uplink rate, bits per second; `None` until measured.
    pub uplink_bps: Option<f64>,
    /// Effective downlink rate, bits per second; `None` until measured.
    pub downlink_bps: Option<f64>,
    /// Smoothed time the cloud spends per request.
    pub cloud: f64,
}

/// The edge's estimates of the cloud path.
#[derive(Debug, Default)]
pub struct PathEstimates {
    state: Mutex<Snapshot>,
}

fn smooth(old: Option<f64>, sample: f64) -> f64 {
    old.map_or(sample, |o| o + GAIN * (sample - o))
}

impl PathEstimates {
    /// The current estimates.
    pub fn snapshot(&self) -> Snapshot {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the round trip of a small message (a probe), which is nearly all latency.
    pub fn observe_rtt(&self, rtt: Duration) {
        let r = rtt.as_secs_f64();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
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
    /// the cloud's own time. The part of a one-way time above half the small-message round
    /// trip is taken as serialization, which gives a rate sample when it is measurable.
    pub fn observe_exchange(
        &self,
        up_bytes: usize,
        up: Duration,
        down_bytes: usize,
        down: Duration,
        cloud: Duration,
    ) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.cloud = smooth(Some(s.cloud).filter(|c| *c > 0.0), cloud.as_secs_f64());
        let half_rtt = s.srtt.unwrap_or(0.0) / 2.0;
        let rate = |bytes: usize, t: Duration| {
            let serialization = t.as_secs_f64() - half_rtt;
            // Below 100 µs the difference is jitter, not serialization.
            (serialization > 1e-4).then(|| bytes as f64 * 8.0 / serialization)
        };
        if let Some(r) = rate(up_bytes, up) {
            s.uplink_bps = Some(smooth(s.uplink_bps, r));
        }
        if let Some(r) = rate(down_bytes, down) {
            s.downlink_bps = Some(smooth(s.downlink_bps, r));
        }
    }

    /// Expected time of a cloud call sending `up_bytes` and receiving `down_bytes`: the round
    /// trip plus serialization at the measured rates plus the cloud's time. `None` while the
    /// round trip has never been measured.
    pub fn expected_call(&self, up_bytes: usize, down_bytes: usize) -> Option<Duration> {
        let s = self.snapshot();
        let srtt = s.srtt?;
        let ser = |bytes: usize, bps: Option<f64>| bps.map_or(0.0, |b| bytes as f64 * 8.0 / b);
        let total = srtt + ser(up_bytes, s.uplink_bps) + ser(down_bytes, s.downlink_bps) + s.cloud;
        Some(Duration::from_secs_f64(total.max(0.0)))
    }

    /// Forgets everything, for a new link profile.
    pub fn reset(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Snapshot::default();
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
        assert_eq!(e.expected_call(100, 100), None);
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
        let expected = e.expected_call(125_000, 100).unwrap();
        assert!((expected.as_secs_f64() - (0.020 + 0.100 + 0.005)).abs() < 1e-9);
    }
}
