//! How the built-in profiles were calibrated, and a check that they still are.
//!
//! `cargo run -p edgeinfer-linksim --example calibrate` prints, for every built-in profile with
//! targets, what `link sample --messages 20000 --bytes 64` gives for seeds 1 to 4 against the
//! targets, and the exact long-run loss of its loss model.
//!
//! With `--tune` it also searches, for each profile, the jitter median and p99 (the same in both
//! directions, the base kept) that put the RTT p50 and p99, averaged over the seeds, on the
//! targets, and the Gilbert-Elliott `p` that gives the target loss exactly; the built-ins carry
//! these values rounded.

use edgeinfer_linksim::builtin::per_direction_loss;
use edgeinfer_linksim::{LinkProfile, builtins, message_loss_rate, sample};

const SEEDS: [u64; 4] = [1, 2, 3, 4];
const MESSAGES: u64 = 20_000;

fn measure(p: &LinkProfile) -> (f64, f64, Vec<(f64, f64)>) {
    let per_seed: Vec<(f64, f64)> = SEEDS
        .iter()
        .map(|&s| {
            let r = sample(p, MESSAGES, 64, s);
            (r.rtt_ms.p50.unwrap(), r.rtt_ms.p99.unwrap())
        })
        .collect();
    let n = per_seed.len() as f64;
    let p50 = per_seed.iter().map(|x| x.0).sum::<f64>() / n;
    let p99 = per_seed.iter().map(|x| x.1).sum::<f64>() / n;
    (p50, p99, per_seed)
}

fn set_jitter(p: &mut LinkProfile, median: f64, p99: f64) {
    for d in [&mut p.uplink, &mut p.downlink] {
        d.delay.jitter_median_ms = median;
        d.delay.jitter_p99_ms = p99;
    }
}

/// The `p` giving `target` message loss with the other loss parameters of `p`'s uplink.
fn solve_p(profile: &LinkProfile, target: f64) -> f64 {
    let mut cfg = profile.uplink.loss;
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..100 {
        cfg.p = (lo + hi) / 2.0;
        if message_loss_rate(&cfg) < target {
            lo = cfg.p;
        } else {
            hi = cfg.p;
        }
    }
    (lo + hi) / 2.0
}

fn main() {
    let tune = std::env::args().any(|a| a == "--tune");
    for b in builtins() {
        let (Some(t50), Some(t99)) = (b.targets.rtt_p50_ms, b.targets.rtt_p99_ms) else {
            continue;
        };
        if t50 == 0.0 {
            continue;
        }
        let mut p = b.profile.clone();
        if tune {
            let target = per_direction_loss(b.targets.loss);
            if p.uplink.loss.loss_bad > 0.0 {
                let solved = solve_p(&p, target);
                p.uplink.loss.p = solved;
                p.downlink.loss.p = solved;
            }
            let base = p.uplink.delay.base_ms + p.downlink.delay.base_ms;
            let (mut m, mut q) = (
                p.uplink.delay.jitter_median_ms,
                p.uplink.delay.jitter_p99_ms,
            );
            for _ in 0..40 {
                set_jitter(&mut p, m, q);
                let (m50, m99, _) = measure(&p);
                m *= ((t50 - base) / (m50 - base)).clamp(0.5, 2.0);
                q *= ((t99 - base) / (m99 - base)).powf(1.5).clamp(0.5, 2.0);
                q = q.max(m);
            }
            set_jitter(&mut p, m, q);
            println!(
                "{:<13} tuned: jitter_median_ms {m:.3} jitter_p99_ms {q:.3}; p {:.3e} for \
                 per-direction loss {target:.4e}",
                p.name, p.uplink.loss.p
            );
        }
        let (m50, m99, per_seed) = measure(&p);
        let exchange_loss = 1.0
            - (1.0 - message_loss_rate(&p.uplink.loss))
                * (1.0 - message_loss_rate(&p.downlink.loss));
        println!(
            "{:<13} rtt p50 {m50:7.2} (target {t50}, {:+.1} %)  p99 {m99:7.2} (target {t99}, \
             {:+.1} %)  loss {exchange_loss:.3e} (target {:.0e})  per seed {per_seed:?}",
            p.name,
            (m50 / t50 - 1.0) * 100.0,
            (m99 / t99 - 1.0) * 100.0,
            b.targets.loss,
        );
    }
}
