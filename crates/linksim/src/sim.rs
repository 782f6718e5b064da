//! The simulator core: pure, synchronous, in simulated time.
//!
//! [`Simulator::send`] says, for a message of some size handed to a direction at some simulated
//! instant, when it starts and ends serialization, how many attempts the radio made, and when it
//! is delivered or given up. Nothing here sleeps or reads a clock: [`crate::Link`] maps tokio time
//! onto it, and [`crate::sample()`] runs it back to back to simulate thousands of messages at once.
//! One mechanism, two clocks.
//!
//! What happens to a message, in order:
//! 1. it waits for the messages before it in the same direction (FIFO, one "busy until"
//!    instant per direction);
//! 2. it is serialized at the bandwidth, or on the trace's delivery opportunities; a handover
//!    delays the start and pauses serialization;
//! 3. the radio attempts it; each lost attempt costs `retransmit_ms` (retransmissions do not
//!    hold up the queue: HARQ runs several processes in parallel); after
//!    `max_retransmissions` it is lost;
//! 4. it travels the one-way delay (base + jitter), drawn per message (consecutive draws
//!    correlated when the profile says so); messages may overtake each other in this step, as
//!    independent RPCs can;
//! 5. nothing arrives during a handover: a message whose arrival falls inside one was in flight
//!    when the radio went, and it arrives when the handover ends, or is lost there (the
//!    profile's `handover.in_flight`).

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::delay::{Delay, millis};
use crate::handover::Outages;
use crate::loss::GilbertElliott;
use crate::profile::{DirectionProfile, InFlight, LinkProfile, LossProfile};
use crate::trace::{PACKET_BYTES, Trace};

/// A direction of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Edge to cloud: requests.
    Uplink,
    /// Cloud to edge: responses.
    Downlink,
}

impl Direction {
    /// Both directions, uplink first.
    pub const BOTH: [Direction; 2] = [Direction::Uplink, Direction::Downlink];

    pub(crate) fn index(self) -> usize {
        match self {
            Direction::Uplink => 0,
            Direction::Downlink => 1,
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Uplink => "uplink",
            Direction::Downlink => "downlink",
        })
    }
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered at this simulated instant.
    Delivered {
        /// Arrival at the far end.
        at: Duration,
    },
    /// Lost: the sender's link layer gave up at this simulated instant (at once when the
    /// direction carries nothing).
    Lost {
        /// When it was given up.
        at: Duration,
    },
}

/// The timeline of one message through one direction, in simulated time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The direction.
    pub direction: Direction,
    /// The message's size.
    pub bytes: usize,
    /// When it was handed to the link.
    pub sent_at: Duration,
    /// When its serialization started (after the queue and any handover).
    pub air_start: Duration,
    /// When its serialization ended.
    pub air_end: Duration,
    /// Transmission attempts, the first included (0 when the direction carries nothing).
    pub attempts: u32,
    /// Delivered or lost, and when.
    pub outcome: Outcome,
}

impl Delivery {
    /// Arrival instant, when delivered.
    pub fn delivered_at(&self) -> Option<Duration> {
        match self.outcome {
            Outcome::Delivered { at } => Some(at),
            Outcome::Lost { .. } => None,
        }
    }

    /// Time from hand-over to arrival, when delivered.
    pub fn one_way(&self) -> Option<Duration> {
        self.delivered_at().map(|at| at - self.sent_at)
    }

    /// When the link is done with the message, delivered or lost.
    pub fn settled_at(&self) -> Duration {
        match self.outcome {
            Outcome::Delivered { at } | Outcome::Lost { at } => at,
        }
    }

    /// Air time taken (serialization, handover pauses included).
    pub fn air_time(&self) -> Duration {
        self.air_end - self.air_start
    }
}

/// How a direction turns bytes into air time.
#[derive(Debug, Clone)]
enum Capacity {
    /// No serialization time.
    Unlimited,
    /// Nanoseconds per byte at a fixed bandwidth.
    Rate { ns_per_byte: f64 },
    /// Delivery opportunities of a trace; `next` is the first one not yet used or wasted.
    Trace { trace: Arc<Trace>, next: u64 },
    /// Carries nothing: every message is lost at once.
    Down,
}

/// The state of one direction.
#[derive(Debug, Clone)]
struct Lane {
    capacity: Capacity,
    delay: Delay,
    loss: LossProfile,
    channel: GilbertElliott,
    delay_rng: ChaCha8Rng,
    loss_rng: ChaCha8Rng,
    /// End of the last serialization: FIFO.
    busy_until: Duration,
}

/// The simulated link: both directions and the handover schedule, from simulated time 0.
#[derive(Debug, Clone)]
pub struct Simulator {
    lanes: [Lane; 2],
    outages: Outages,
    /// What a handover does to a message in flight.
    in_flight: InFlight,
}

/// The random streams of one seed: each process draws from its own, so that, for example,
/// more traffic on the uplink does not move the handover schedule.
mod stream {
    pub const HANDOVER: u64 = 0;
    pub const DELAY: [u64; 2] = [1, 3];
    pub const LOSS: [u64; 2] = [2, 4];
}

fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

impl Simulator {
    /// A simulator for `profile` with all random processes seeded from `seed`.
    ///
    /// Trace files are read here. The profile is expected to be validated (every way of reading
    /// one from text does); a trace that cannot be read now leaves its direction down, with a
    /// warning, rather than failing: a link that carries nothing is the honest outcome.
    pub fn new(profile: &LinkProfile, seed: u64) -> Self {
        let lane = |dir: Direction| {
            let p = profile.direction(dir);
            Lane {
                capacity: capacity(dir, p),
                delay: Delay::new(&p.delay),
                loss: p.loss,
                channel: GilbertElliott::default(),
                delay_rng: rng(seed, stream::DELAY[dir.index()]),
                loss_rng: rng(seed, stream::LOSS[dir.index()]),
                busy_until: Duration::ZERO,
            }
        };
        Simulator {
            lanes: [lane(Direction::Uplink), lane(Direction::Downlink)],
            outages: Outages::new(profile.handover.as_ref(), rng(seed, stream::HANDOVER)),
            in_flight: profile.handover.map_or(InFlight::Wait, |h| h.in_flight),
        }
    }

    /// Hands a message of `bytes` to direction `dir` at simulated instant `at`, and returns its
    /// fate. Instants should not decrease from one call to the next (tokio time does not); an
    /// earlier one is served as if at the latest (its message still queues FIFO), but may miss
    /// a handover already forgotten.
    pub fn send(&mut self, dir: Direction, bytes: usize, at: Duration) -> Delivery {
        let lane = &mut self.lanes[dir.index()];
        let ready = at.max(lane.busy_until);
        let (air_start, air_end) = match &mut lane.capacity {
            Capacity::Down => {
                return Delivery {
                    direction: dir,
                    bytes,
                    sent_at: at,
                    air_start: at,
                    air_end: at,
                    attempts: 0,
                    outcome: Outcome::Lost { at },
                };
            }
            Capacity::Unlimited => self.outages.schedule(ready, Duration::ZERO),
            Capacity::Rate { ns_per_byte } => {
                let work = Duration::from_nanos((bytes as f64 * *ns_per_byte).round() as u64);
                self.outages.schedule(ready, work)
            }
            Capacity::Trace { trace, next } => replay(
                trace,
                next,
                &mut self.outages,
                ready,
                bytes.div_ceil(PACKET_BYTES),
            ),
        };
        lane.busy_until = air_end;

        let attempts = lane.channel.send(&lane.loss, &mut lane.loss_rng);
        let retransmit = millis(lane.loss.retransmit_ms);
        let after_retries = air_end + retransmit * (attempts.made - 1);
        let outcome = if attempts.delivered {
            let arrival = after_retries + lane.delay.sample(&mut lane.delay_rng);
            match (self.outages.blocked_until(arrival), self.in_flight) {
                (None, _) => Outcome::Delivered { at: arrival },
                (Some(_), InFlight::Wait) => Outcome::Delivered {
                    at: self.outages.usable_from(arrival),
                },
                (Some(_), InFlight::Lose) => Outcome::Lost { at: arrival },
            }
        } else {
            Outcome::Lost { at: after_retries }
        };

        // No later message is ready before `at`, so outages over by then no longer matter.
        self.outages.forget_before(at);
        Delivery {
            direction: dir,
            bytes,
            sent_at: at,
            air_start,
            air_end,
            attempts: attempts.made,
            outcome,
        }
    }

    /// Handovers that started at or before simulated instant `t`.
    pub fn handovers_by(&mut self, t: Duration) -> u64 {
        self.outages.started_by(t)
    }
}

fn capacity(dir: Direction, p: &DirectionProfile) -> Capacity {
    if let Some(ms) = &p.trace_ms {
        return match Trace::from_ms(ms.clone()) {
            Ok(trace) => Capacity::Trace {
                trace: Arc::new(trace),
                next: 0,
            },
            Err(reason) => {
                tracing::warn!(%dir, %reason, "inline link trace invalid: direction down");
                Capacity::Down
            }
        };
    }
    if let Some(path) = &p.trace {
        return match Trace::load(path) {
            Ok(trace) => Capacity::Trace {
                trace: Arc::new(trace),
                next: 0,
            },
            Err(e) => {
                tracing::warn!(%dir, error = %e, "link trace unreadable: direction down");
                Capacity::Down
            }
        };
    }
    match p.bandwidth_mbps {
        None => Capacity::Unlimited,
        Some(mbps) if mbps > 0.0 => Capacity::Rate {
            // bytes * 8 bit / (mbps * 1e6 bit/s) in ns
            ns_per_byte: 8_000.0 / mbps,
        },
        Some(_) => Capacity::Down,
    }
}

/// Uses `packets` delivery opportunities of `trace` from `ready` on, skipping those already used
/// (`next`) and those inside an outage; returns the first and last used opportunity's times.
fn replay(
    trace: &Trace,
    next: &mut u64,
    outages: &mut Outages,
    ready: Duration,
    packets: usize,
) -> (Duration, Duration) {
    let mut n = (*next).max(trace.first_at_or_after(ready));
    let mut first = None;
    let mut last = ready;
    let mut left = packets.max(1);
    while left > 0 {
        let t = trace.opportunity_time(n);
        if let Some(end) = outages.blocked_until(t) {
            n = n.max(trace.first_at_or_after(end));
            continue;
        }
        first.get_or_insert(t);
        last = t;
        n += 1;
        left -= 1;
    }
    *next = n;
    (first.unwrap_or(ready), last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{DelayProfile, HandoverProfile};

    fn profile(up: DirectionProfile) -> LinkProfile {
        LinkProfile {
            name: "test".into(),
            description: String::new(),
            uplink: up,
            downlink: DirectionProfile::unlimited(),
            handover: None,
        }
    }

    #[test]
    fn fifo_serialization_at_the_bandwidth() {
        let mut sim = Simulator::new(&profile(DirectionProfile::with_bandwidth(10.0)), 1);
        let d: Vec<Delivery> = (0..10)
            .map(|_| sim.send(Direction::Uplink, 1_000_000, Duration::ZERO))
            .collect();
        assert_eq!(d[0].delivered_at(), Some(Duration::from_millis(800)));
        assert_eq!(d[9].delivered_at(), Some(Duration::from_secs(8)));
        assert_eq!(d[9].air_start, Duration::from_millis(7200));
    }

    #[test]
    fn delay_retransmission_and_loss() {
        let mut up = DirectionProfile::with_bandwidth(8.0); // 1 byte per µs
        up.delay = DelayProfile {
            base_ms: 5.0,
            ..DelayProfile::default()
        };
        up.loss = LossProfile {
            loss_good: 1.0,
            retransmit_ms: 4.0,
            max_retransmissions: 2,
            ..LossProfile::default()
        };
        let mut sim = Simulator::new(&profile(up), 1);
        let d = sim.send(Direction::Uplink, 1000, Duration::from_millis(1));
        assert_eq!(d.attempts, 3);
        assert_eq!(d.air_end, Duration::from_millis(2));
        assert_eq!(
            d.outcome,
            Outcome::Lost {
                at: Duration::from_millis(10)
            }
        );
    }

    #[test]
    fn down_direction_loses_at_once() {
        let mut sim = Simulator::new(&profile(DirectionProfile::with_bandwidth(0.0)), 1);
        let at = Duration::from_millis(3);
        let d = sim.send(Direction::Uplink, 10, at);
        assert_eq!(d.outcome, Outcome::Lost { at });
        assert_eq!(d.attempts, 0);
    }

    #[test]
    fn handover_delays_but_does_not_lose() {
        let mut p = profile(DirectionProfile::with_bandwidth(100.0));
        p.handover = Some(HandoverProfile {
            mean_interval_s: 0.5,
            duration_median_ms: 100.0,
            duration_p99_ms: 100.0,
            in_flight: InFlight::Wait,
        });
        let mut sim = Simulator::new(&p, 9);
        let mut delayed = 0;
        for i in 0..100_000u64 {
            let at = Duration::from_millis(i * 7);
            let d = sim.send(Direction::Uplink, 100, at);
            assert!(d.delivered_at().is_some());
            if d.air_start > at {
                delayed += 1;
            }
        }
        // 700 s with a handover every ~0.5 s; each 100 ms outage holds up the ~14 messages
        // handed over during it.
        let handovers = sim.handovers_by(Duration::from_secs(700));
        assert!((1250..1500).contains(&handovers), "{handovers}");
        let per_outage = delayed as f64 / handovers as f64;
        assert!((13.5..15.0).contains(&per_outage), "{per_outage}");
        // Only the uplink was used: past outages are still forgotten.
        assert!(sim.outages.remembered() < 5, "{}", sim.outages.remembered());
    }

    fn with_handovers(base_ms: f64, in_flight: InFlight) -> Simulator {
        let mut up = DirectionProfile::unlimited();
        up.delay.base_ms = base_ms;
        let mut p = profile(up);
        p.handover = Some(HandoverProfile {
            mean_interval_s: 0.5,
            duration_median_ms: 100.0,
            duration_p99_ms: 100.0,
            in_flight,
        });
        Simulator::new(&p, 9)
    }

    /// A message sent 10 ms before a 100 ms outage, with 30 ms to travel: it is off the radio
    /// before the outage, but would arrive during it.
    #[test]
    fn a_message_in_flight_waits_for_the_handover_to_end() {
        let mut sim = with_handovers(30.0, InFlight::Wait);
        let outage = sim.outages.next_after(Duration::from_secs(1));
        let d = sim.send(Direction::Uplink, 100, outage.start - ms(10));
        assert_eq!(
            d.air_end,
            outage.start - ms(10),
            "serialized before the outage"
        );
        assert_eq!(d.delivered_at(), Some(outage.end));

        let mut sim = with_handovers(30.0, InFlight::Lose);
        // One that arrives before the outage starts is not touched.
        let d = sim.send(Direction::Uplink, 100, outage.start - ms(31));
        assert_eq!(d.delivered_at(), Some(outage.start - ms(1)));
        let d = sim.send(Direction::Uplink, 100, outage.start - ms(10));
        assert_eq!(
            d.outcome,
            Outcome::Lost {
                at: outage.start + ms(20)
            }
        );
    }

    /// Over many outages: no arrival inside one; with `lose`, exactly those are lost.
    #[test]
    fn nothing_arrives_during_an_outage() {
        let mut waiting = with_handovers(30.0, InFlight::Wait);
        let mut losing = with_handovers(30.0, InFlight::Lose);
        let (mut at_an_end, mut lost) = (0, 0);
        for i in 0..50_000u64 {
            let at = Duration::from_millis(i * 7);
            let d = waiting.send(Direction::Uplink, 100, at);
            let arrival = d.delivered_at().expect("lossless by default");
            assert_eq!(waiting.outages.blocked_until(arrival), None, "{d:?}");
            if arrival != at + ms(30) {
                at_an_end += 1;
            }
            let l = losing.send(Direction::Uplink, 100, at);
            match l.outcome {
                Outcome::Lost { at: t } => {
                    assert!(losing.outages.blocked_until(t).is_some());
                    lost += 1;
                }
                Outcome::Delivered { at: t } => {
                    assert_eq!(losing.outages.blocked_until(t), None);
                }
            }
        }
        // Messages sent in an outage wait at the radio; of those sent in the 30 ms before one,
        // all arrive at its end.
        assert!(at_an_end > 0);
        assert!(lost > 0);
        assert!(lost <= at_an_end, "{lost} lost, {at_an_end} moved");
    }

    #[test]
    fn inline_trace_is_a_trace() {
        let up = DirectionProfile {
            trace_ms: Some(vec![1, 2, 3, 4]),
            ..DirectionProfile::default()
        };
        let mut sim = Simulator::new(&profile(up), 1);
        let a = sim.send(Direction::Uplink, 3001, Duration::ZERO);
        assert_eq!((a.air_start, a.air_end), (ms(1), ms(3)));
    }

    #[test]
    fn trace_opportunities_are_consumed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "1\n2\n3\n4\n").unwrap();
        let up = DirectionProfile {
            trace: Some(path),
            ..DirectionProfile::default()
        };
        let mut sim = Simulator::new(&profile(up), 1);
        // 3001 bytes = 3 packets: opportunities at 1, 2, 3 ms.
        let a = sim.send(Direction::Uplink, 3001, Duration::ZERO);
        assert_eq!((a.air_start, a.air_end), (ms(1), ms(3)));
        // Next one queues behind: opportunity at 4 ms.
        let b = sim.send(Direction::Uplink, 10, Duration::ZERO);
        assert_eq!(b.air_end, ms(4));
        // Idle until 10.5 ms: opportunities 5..=10 are wasted, next is at 11 ms.
        let c = sim.send(Direction::Uplink, 10, Duration::from_micros(10_500));
        assert_eq!(c.air_end, ms(11));
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
}
