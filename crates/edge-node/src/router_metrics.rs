//! The edge's router and link figures as Prometheus metrics, read from the node at each
//! scrape: the learned path estimates (gauges), the circuit breaker as a state set (one gauge
//! per state, 1 for the state it is in), and the simulated link's cumulative counts (counters,
//! per direction) and queues (gauges).
//!
//! A collector rather than metrics refreshed by a loop: the figures already live in the
//! router, the circuit and the link, so reading them when Prometheus asks is exact and costs
//! the request path nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use edgeinfer::v1::CircuitState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::node::EdgeNode;

/// The states of the circuit's state set, as its `state` label names them.
const CIRCUIT_STATES: [(CircuitState, &str); 3] = [
    (CircuitState::Closed, "closed"),
    (CircuitState::Open, "open"),
    (CircuitState::HalfOpen, "half_open"),
];

/// Reads the router's and the link's figures at scrape time.
pub struct RouterCollector {
    /// The node whose router and link are read.
    pub node: Arc<EdgeNode>,
}

impl std::fmt::Debug for RouterCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterCollector").finish_non_exhaustive()
    }
}

/// One unlabelled gauge.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One family labelled by `direction`, uplink and downlink.
fn per_direction(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    [up, down]: [u64; 2],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (direction, value) in [("uplink", up), ("downlink", down)] {
        let labels = [("direction", direction)];
        let e = family.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(value).encode(e)?,
            _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(e)?,
        }
    }
    Ok(())
}

impl Collector for RouterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let router = &self.node.router;
        let e = router.estimates.snapshot();
        let enc = &mut encoder;
        gauge(
            enc,
            "link_srtt_seconds",
            "Smoothed round trip to the cloud (RFC 6298)",
            e.srtt.unwrap_or(0.0),
        )?;
        gauge(
            enc,
            "link_rttvar_seconds",
            "Round-trip variation to the cloud (RFC 6298)",
            e.rttvar,
        )?;
        gauge(
            enc,
            "link_uplink_bits_per_second",
            "Estimated uplink rate",
            e.uplink_bps.unwrap_or(0.0),
        )?;
        gauge(
            enc,
            "link_downlink_bits_per_second",
            "Estimated downlink rate",
            e.downlink_bps.unwrap_or(0.0),
        )?;
        gauge(
            enc,
            "cloud_compute_seconds",
            "Smoothed time the cloud reports per request",
            e.cloud,
        )?;

        let current = router.circuit.state();
        let mut family = enc.encode_descriptor(
            "circuit_state",
            "Circuit breaker to the cloud, a state set: 1 for the state it is in, 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for (state, name) in CIRCUIT_STATES {
            let labels = [("state", name)];
            ConstGauge::new(i64::from(state == current)).encode(family.encode_family(&labels)?)?;
        }

        if let Some(store) = &router.hard_examples {
            let s = store.stats();
            for (name, help, value) in [
                (
                    "hard_examples_recorded",
                    "Cloud answers written to the hard-example store",
                    &s.recorded,
                ),
                (
                    "hard_examples_dropped",
                    "Cloud answers not kept because the store's writer was behind",
                    &s.dropped,
                ),
                (
                    "hard_examples_write_errors",
                    "Cloud answers lost to a write error of the hard-example store",
                    &s.write_errors,
                ),
            ] {
                let c = ConstCounter::new(value.load(Ordering::Relaxed));
                c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
            }
            gauge(
                enc,
                "hard_examples_bytes",
                "Bytes the hard-example store's segments hold",
                s.bytes.load(Ordering::Relaxed) as f64,
            )?;
        }

        let l = self.node.link.stats();
        let (up, down) = (&l.uplink, &l.downlink);
        per_direction(
            enc,
            "link_delivered_messages",
            "Messages the simulated link delivered",
            MetricType::Counter,
            [up.delivered, down.delivered],
        )?;
        per_direction(
            enc,
            "link_lost_messages",
            "Messages the simulated link lost",
            MetricType::Counter,
            [up.lost, down.lost],
        )?;
        per_direction(
            enc,
            "link_delivered_bytes",
            "Bytes of the messages the simulated link delivered",
            MetricType::Counter,
            [up.bytes_delivered, down.bytes_delivered],
        )?;
        per_direction(
            enc,
            "link_retransmissions",
            "Transmission attempts beyond the first on the simulated link",
            MetricType::Counter,
            [up.retransmissions, down.retransmissions],
        )?;
        per_direction(
            enc,
            "link_queued_bytes",
            "Bytes waiting on the simulated link",
            MetricType::Gauge,
            [l.uplink_queued_bytes, l.downlink_queued_bytes],
        )?;
        Ok(())
    }
}
