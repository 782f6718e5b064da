//! [`Link`]: the simulator on tokio time, shared by every request that crosses it.
//!
//! A `Link` is a handle (an `Arc` inside): clones share one simulated link, so concurrent
//! messages queue behind each other as they would on one radio. Sending a message asks the
//! [`Simulator`] for its fate at the current tokio instant and sleeps until then; on the paused
//! clock of tests nothing waits on the wall clock.
//!
//! The statistics are kept from the fates as they come due, not when they are decided, so a
//! message counts as delivered when it arrives, whether or not its sender still waits for it
//! (a sender that gives up does not take the message off the air).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::profile::LinkProfile;
use crate::sim::{Delivery, Direction, Outcome, Simulator};
use crate::timer::{self, LinkTimer};

/// How many recent one-way delays the percentiles of [`LinkStats`] look at.
const RECENT: usize = 1024;

/// A message the link did not deliver: lost after the retransmission limit, or sent on a
/// direction that carries nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("message lost on the simulated {direction} after {after:?}")]
pub struct Lost {
    /// Where it was lost.
    pub direction: Direction,
    /// Time from hand-over to the link giving up.
    pub after: Duration,
}

/// A simulated link between the edge and the cloud.
#[derive(Debug, Clone)]
pub struct Link {
    state: Arc<Mutex<State>>,
    /// How this handle waits; a property of the handle, so a test can watch a live link.
    timer: LinkTimer,
}

#[derive(Debug)]
struct State {
    /// The profile in force.
    profile: LinkProfile,
    /// The simulator of the profile in force; its time 0 is `origin`.
    sim: Simulator,
    /// The tokio instant of the simulator's time 0 (when the profile was set).
    origin: Instant,
    /// The seed given, and how many profile changes kept it: the simulator's seed is derived
    /// from both, so a change without a new seed continues rather than repeats the randomness.
    seed: u64,
    generation: u64,
    /// Fates not yet due, by when they are due (and a sequence number to keep them apart).
    pending: BTreeMap<(Instant, u64), Settled>,
    sequence: u64,
    /// Messages waiting for or in serialization, per direction: (end of serialization, bytes).
    queued: [VecDeque<(Instant, usize)>; 2],
    /// Counters of fates that came due.
    lanes: [DirectionStats; 2],
    /// Recent one-way delays of delivered messages, both directions.
    recent: VecDeque<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct Settled {
    direction: Direction,
    bytes: usize,
    retransmissions: u32,
    /// The one-way time when delivered.
    delivered: Option<Duration>,
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Messages delivered.
    pub delivered: u64,
    /// Messages lost.
    pub lost: u64,
    /// Bytes of the messages delivered.
    pub bytes_delivered: u64,
    /// Transmission attempts beyond the first.
    pub retransmissions: u64,
}

/// A snapshot of the link's live statistics, for the edge's status and metrics. Counters cover
/// the link's life, across profile changes.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkStats {
    /// The profile in force.
    pub profile: String,
    /// Messages delivered, both directions.
    pub delivered: u64,
    /// Messages lost, both directions.
    pub lost: u64,
    /// Bytes waiting for or in serialization on the uplink now.
    pub uplink_queued_bytes: u64,
    /// Bytes waiting for or in serialization on the downlink now.
    pub downlink_queued_bytes: u64,
    /// Median one-way time of the recent delivered messages (zero when there are none).
    pub recent_delay_p50: Duration,
    /// 99th percentile one-way time of the recent delivered messages.
    pub recent_delay_p99: Duration,
    /// How many recent messages the percentiles are over (at most 1024).
    pub recent_samples: usize,
    /// Uplink counters.
    pub uplink: DirectionStats,
    /// Downlink counters.
    pub downlink: DirectionStats,
    /// Handovers since the profile was set.
    pub handovers: u64,
}

/// The seed of the simulator after `generation` profile changes that kept `seed`.
fn derive_seed(seed: u64, generation: u64) -> u64 {
    if generation == 0 {
        return seed;
    }
    // splitmix64 of the pair: distinct generations give unrelated streams.
    let mut z = seed ^ generation.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A message on the link: when it settles and how.
#[derive(Debug, Clone, Copy)]
#[must_use = "a message in flight does nothing unless its arrival is awaited"]
pub struct Sent {
    due: Instant,
    result: Result<Duration, Lost>,
    timer: LinkTimer,
}

impl Sent {
    /// When the message arrives or is given up.
    pub fn due(&self) -> Instant {
        self.due
    }

    /// Waits until the message arrives (its one-way time) or is given up ([`Lost`]).
    pub async fn arrival(self) -> Result<Duration, Lost> {
        self.wait().await;
        self.result
    }

    /// Waits until [`Sent::due`], with the link's timer (at once when it has passed).
    pub(crate) fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        timer::sleep_until(self.timer, self.due)
    }

    /// The fate [`Sent::arrival`] returns, known from the start.
    pub(crate) fn outcome(&self) -> Result<Duration, Lost> {
        self.result
    }
}

// === impl Link ===

impl Link {
    /// A link with `profile`, its randomness seeded from `seed`; its clock starts now.
    pub fn new(profile: LinkProfile, seed: u64) -> Self {
        let sim = Simulator::new(&profile, seed);
        Link {
            state: Arc::new(Mutex::new(State {
                profile,
                sim,
                origin: Instant::now(),
                seed,
                generation: 0,
                pending: BTreeMap::new(),
                sequence: 0,
                queued: [VecDeque::new(), VecDeque::new()],
                lanes: [DirectionStats::default(); 2],
                recent: VecDeque::with_capacity(RECENT),
            })),
            timer: LinkTimer::Tokio,
        }
    }

    /// The same link waiting with `timer`: [`LinkTimer::Precise`] for a live link (an edge
    /// serving real traffic, `link proxy`), the default [`LinkTimer::Tokio`] for tests on the
    /// paused clock.
    pub fn with_timer(mut self, timer: LinkTimer) -> Self {
        self.timer = timer;
        self
    }

    /// How this handle waits.
    pub fn timer(&self) -> LinkTimer {
        self.timer
    }

    /// Switches to another profile from now on. Messages already sent keep the fate they were
    /// given; new ones meet the new profile with empty queues. With `Some(seed)` the link
    /// behaves from now as `Link::new(profile, seed)` would; with `None` it keeps its seed and
    /// continues its random streams deterministically.
    pub fn set_profile(&self, profile: LinkProfile, seed: Option<u64>) {
        let mut st = self.lock();
        match seed {
            Some(seed) => {
                st.seed = seed;
                st.generation = 0;
            }
            None => st.generation += 1,
        }
        st.sim = Simulator::new(&profile, derive_seed(st.seed, st.generation));
        st.origin = Instant::now();
        st.profile = profile;
    }

    /// The profile in force.
    pub fn profile(&self) -> LinkProfile {
        self.lock().profile.clone()
    }

    /// Sends a message of `bytes` in direction `dir`: waits as the message would on the link,
    /// then returns its one-way time when delivered, or [`Lost`] when the link gives up (at once
    /// on a direction that carries nothing).
    ///
    /// Dropping the future does not take the message back: it still occupies the queue.
    pub async fn transmit(&self, dir: Direction, bytes: usize) -> Result<Duration, Lost> {
        self.send(dir, bytes).arrival().await
    }

    /// Hands a message of `bytes` to direction `dir` now, without waiting: it takes its place
    /// in the queue at once, and [`Sent::arrival`] waits for its fate. What a stream needs,
    /// where the next message is handed over before the last one arrives.
    pub fn send(&self, dir: Direction, bytes: usize) -> Sent {
        let (due, result) = self.decide(dir, bytes);
        Sent {
            due,
            result,
            timer: self.timer,
        }
    }

    /// Decides a message's fate now: when it is due and what it will be.
    fn decide(&self, dir: Direction, bytes: usize) -> (Instant, Result<Duration, Lost>) {
        let now = Instant::now();
        let mut st = self.lock();
        st.catch_up(now);
        let at = now.saturating_duration_since(st.origin);
        let d: Delivery = st.sim.send(dir, bytes, at);
        let origin = st.origin;
        let due = origin + d.settled_at();
        st.queued[dir.index()].push_back((origin + d.air_end, bytes));
        let settled = Settled {
            direction: dir,
            bytes,
            retransmissions: d.attempts.saturating_sub(1),
            delivered: d.one_way(),
        };
        let seq = st.sequence;
        st.sequence += 1;
        st.pending.insert((due, seq), settled);
        st.catch_up(now);
        let result = match d.outcome {
            Outcome::Delivered { .. } => Ok(d.one_way().unwrap_or_default()),
            Outcome::Lost { at: lost_at } => Err(Lost {
                direction: dir,
                after: lost_at - d.sent_at,
            }),
        };
        (due, result)
    }

    /// Bytes waiting in each direction's FIFO now, `[uplink, downlink]`: what a message sent
    /// now queues behind.
    pub fn queued_bytes(&self) -> [u64; 2] {
        let now = Instant::now();
        let mut st = self.lock();
        st.catch_up(now);
        [0, 1].map(|i| st.queued[i].iter().map(|&(_, b)| b as u64).sum::<u64>())
    }

    /// A snapshot of the statistics as of now.
    pub fn stats(&self) -> LinkStats {
        let now = Instant::now();
        let mut st = self.lock();
        st.catch_up(now);
        let queued = |i: usize| st.queued[i].iter().map(|&(_, b)| b as u64).sum::<u64>();
        let mut recent: Vec<Duration> = st.recent.iter().copied().collect();
        recent.sort_unstable();
        let pct = |q: f64| {
            if recent.is_empty() {
                Duration::ZERO
            } else {
                recent[((q * recent.len() as f64).ceil() as usize).clamp(1, recent.len()) - 1]
            }
        };
        let [up, down] = st.lanes;
        let since = now.saturating_duration_since(st.origin);
        LinkStats {
            profile: st.profile.name.clone(),
            delivered: up.delivered + down.delivered,
            lost: up.lost + down.lost,
            uplink_queued_bytes: queued(0),
            downlink_queued_bytes: queued(1),
            recent_delay_p50: pct(0.5),
            recent_delay_p99: pct(0.99),
            recent_samples: recent.len(),
            uplink: up,
            downlink: down,
            handovers: st.sim.handovers_by(since),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements that can panic; a poisoned lock only
        // means another task panicked elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// === impl State ===

impl State {
    /// Folds the fates due by `now` into the counters, and drops serialized messages from the
    /// queues.
    fn catch_up(&mut self, now: Instant) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let s = entry.remove();
            let lane = &mut self.lanes[s.direction.index()];
            lane.retransmissions += u64::from(s.retransmissions);
            match s.delivered {
                Some(delay) => {
                    lane.delivered += 1;
                    lane.bytes_delivered += s.bytes as u64;
                    if self.recent.len() == RECENT {
                        self.recent.pop_front();
                    }
                    self.recent.push_back(delay);
                }
                None => lane.lost += 1,
            }
        }
        for queue in &mut self.queued {
            while queue.front().is_some_and(|&(end, _)| end <= now) {
                queue.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::DirectionProfile;

    fn uplink_only(up: DirectionProfile) -> LinkProfile {
        LinkProfile {
            name: "test".into(),
            description: String::new(),
            uplink: up,
            downlink: DirectionProfile::unlimited(),
            handover: None,
        }
    }

    /// Ten 1 MB messages at once on 10 Mbit/s: FIFO, the first arrives after 0.8 s, the last
    /// after 8 s.
    #[tokio::test(start_paused = true)]
    async fn concurrent_messages_queue_fifo() {
        let link = Link::new(uplink_only(DirectionProfile::with_bandwidth(10.0)), 1);
        let start = Instant::now();
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let link = link.clone();
                tokio::spawn(async move {
                    let one_way = link.transmit(Direction::Uplink, 1_000_000).await.unwrap();
                    (one_way, start.elapsed())
                })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(link.stats().uplink_queued_bytes, 10_000_000);
        let mut arrivals = Vec::new();
        for t in tasks {
            arrivals.push(t.await.unwrap());
        }
        arrivals.sort();
        assert_eq!(arrivals[0].0, Duration::from_millis(800));
        assert_eq!(arrivals[0].1, Duration::from_millis(800));
        assert_eq!(arrivals[9].0, Duration::from_secs(8));
        assert_eq!(arrivals[9].1, Duration::from_secs(8));
        let stats = link.stats();
        assert_eq!(stats.delivered, 10);
        assert_eq!(stats.uplink_queued_bytes, 0);
        assert_eq!(stats.uplink.bytes_delivered, 10_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn offline_loses_at_once() {
        let link = Link::new(LinkProfile::builtin("offline").unwrap(), 1);
        let err = link.transmit(Direction::Uplink, 100).await.unwrap_err();
        assert_eq!(err.direction, Direction::Uplink);
        assert_eq!(err.after, Duration::ZERO);
        assert_eq!(link.stats().lost, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stats_count_when_due_and_profile_switches() {
        let mut p = uplink_only(DirectionProfile::unlimited());
        p.uplink.delay.base_ms = 10.0;
        let link = Link::new(p, 1);
        let sender = link.clone();
        let task = tokio::spawn(async move { sender.transmit(Direction::Uplink, 5).await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(link.stats().delivered, 0, "not yet arrived");
        assert_eq!(task.await.unwrap(), Ok(Duration::from_millis(10)));
        let stats = link.stats();
        assert_eq!(stats.delivered, 1);
        assert_eq!(stats.recent_delay_p50, Duration::from_millis(10));

        link.set_profile(LinkProfile::builtin("offline").unwrap(), None);
        assert_eq!(link.profile().name, "offline");
        assert!(link.transmit(Direction::Downlink, 5).await.is_err());
        let stats = link.stats();
        assert_eq!((stats.delivered, stats.lost), (1, 1));
        assert_eq!(stats.profile, "offline");
    }

    #[tokio::test(start_paused = true)]
    async fn same_seed_same_delays() {
        async fn delays(seed: u64) -> Vec<Result<Duration, Lost>> {
            let link = Link::new(LinkProfile::builtin("cell-edge").unwrap(), seed);
            let mut out = Vec::new();
            for _ in 0..50 {
                out.push(link.transmit(Direction::Uplink, 64).await);
            }
            out
        }
        assert_eq!(delays(4).await, delays(4).await);
        assert_ne!(delays(4).await, delays(5).await);
    }
}
