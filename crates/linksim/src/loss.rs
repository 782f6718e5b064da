//! Gilbert-Elliott loss with link-layer retransmission, and its long-run message loss.
//!
//! The channel state advances once per transmission attempt (as netem's `gemodel` advances per
//! packet), whatever the time between attempts: what makes losses bursty is that the retries of
//! one message, and the next messages, meet the same bad spell.

use rand::Rng;

use crate::profile::LossProfile;

/// The channel state of one direction.
#[derive(Debug, Clone, Default)]
pub(crate) struct GilbertElliott {
    /// True in the bad state. Starts good.
    bad: bool,
}

/// What happened to one message on the radio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempts {
    /// Transmissions made, the first included (at least 1).
    pub made: u32,
    /// Whether the last one got through.
    pub delivered: bool,
}

impl GilbertElliott {
    /// Sends one message: attempts until one gets through or the retransmissions run out.
    pub(crate) fn send(&mut self, cfg: &LossProfile, rng: &mut impl Rng) -> Attempts {
        if cfg.loss_good == 0.0 && cfg.loss_bad == 0.0 {
            // No draw at all: a lossless profile costs nothing and its delay stream is the same
            // whatever the loss parameters of other profiles.
            return Attempts {
                made: 1,
                delivered: true,
            };
        }
        let mut made = 0;
        loop {
            made += 1;
            let loss = if self.bad {
                cfg.loss_bad
            } else {
                cfg.loss_good
            };
            let lost = rng.random::<f64>() < loss;
            let flip = if self.bad { cfg.r } else { cfg.p };
            if rng.random::<f64>() < flip {
                self.bad = !self.bad;
            }
            if !lost {
                return Attempts {
                    made,
                    delivered: true,
                };
            }
            if made > cfg.max_retransmissions {
                return Attempts {
                    made,
                    delivered: false,
                };
            }
        }
    }
}

/// Long-run fraction of messages lost after all retransmissions, computed exactly.
///
/// Looking at the channel state only at message boundaries gives a two-state Markov chain:
/// from each starting state, the attempts of one message end in some state, lost or not. Its
/// stationary distribution weighs the loss probability of each starting state.
pub fn message_loss_rate(cfg: &LossProfile) -> f64 {
    if cfg.loss_good == 0.0 && cfg.loss_bad == 0.0 {
        return 0.0;
    }
    // For a message starting in state s: next[s][s'] = P(next message starts in s'),
    // lost[s] = P(this message is lost).
    let mut next = [[0.0f64; 2]; 2];
    let mut lost = [0.0f64; 2];
    let loss = [cfg.loss_good, cfg.loss_bad];
    let flip = [cfg.p, cfg.r];
    for start in 0..2 {
        // Probability mass still failing, by the state before the next attempt.
        let mut failing = [0.0f64; 2];
        failing[start] = 1.0;
        for attempt in 0..=cfg.max_retransmissions {
            let mut after = [0.0f64; 2];
            for s in 0..2 {
                let m = failing[s];
                for (outcome_lost, pm) in [(false, m * (1.0 - loss[s])), (true, m * loss[s])] {
                    let stay = pm * (1.0 - flip[s]);
                    let go = pm * flip[s];
                    if outcome_lost && attempt < cfg.max_retransmissions {
                        after[s] += stay;
                        after[1 - s] += go;
                    } else {
                        next[start][s] += stay;
                        next[start][1 - s] += go;
                        if outcome_lost {
                            lost[start] += pm;
                        }
                    }
                }
            }
            failing = after;
        }
    }
    let (to_bad, to_good) = (next[0][1], next[1][0]);
    let bad_share = if to_bad + to_good > 0.0 {
        to_bad / (to_bad + to_good)
    } else {
        0.0
    };
    (1.0 - bad_share) * lost[0] + bad_share * lost[1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn simulate(cfg: &LossProfile, n: u64) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut ge = GilbertElliott::default();
        let lost = (0..n).filter(|_| !ge.send(cfg, &mut rng).delivered).count();
        lost as f64 / n as f64
    }

    #[test]
    fn independent_loss_without_retransmission() {
        let cfg = LossProfile {
            loss_good: 0.1,
            ..LossProfile::default()
        };
        assert!((message_loss_rate(&cfg) - 0.1).abs() < 1e-12);
        let cfg = LossProfile {
            max_retransmissions: 2,
            ..cfg
        };
        assert!((message_loss_rate(&cfg) - 1e-3).abs() < 1e-12);
    }

    #[test]
    fn analytic_matches_simulation_for_bursty_loss() {
        let cfg = LossProfile {
            p: 0.01,
            r: 0.2,
            loss_good: 0.01,
            loss_bad: 0.9,
            retransmit_ms: 8.0,
            max_retransmissions: 3,
        };
        let exact = message_loss_rate(&cfg);
        let sim = simulate(&cfg, 1_000_000);
        assert!(
            (sim - exact).abs() / exact < 0.05,
            "exact {exact}, simulated {sim}"
        );
    }

    #[test]
    fn certain_loss_loses_everything() {
        let cfg = LossProfile {
            loss_good: 1.0,
            loss_bad: 1.0,
            max_retransmissions: 4,
            ..LossProfile::default()
        };
        assert_eq!(message_loss_rate(&cfg), 1.0);
        assert_eq!(simulate(&cfg, 100), 1.0);
    }
}
