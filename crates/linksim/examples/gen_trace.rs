//! Writes the synthetic Mahimahi traces in `crates/linksim/traces/` (see its README).
//!
//! `cargo run -p edgeinfer-linksim --example gen_trace -- crates/linksim/traces`
//!
//! The capacity of each direction follows a Markov-modulated process: every ~1 s (exponential
//! sojourn) the rate jumps to one of a few levels, as a moving LTE user's does when its
//! signal quality and cell load change; within a level, the packets delivered in each
//! millisecond are Poisson with that level's mean. Each line is the millisecond of one
//! 1500-byte delivery opportunity, Mahimahi's format.

use std::fmt::Write as _;
use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Poisson};

/// One direction's trace: levels in Mbit/s, length in ms, seed.
fn trace(levels: &[f64], length_ms: u64, seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let sojourn = Exp::new(1.0 / 1000.0).unwrap(); // mean 1000 ms
    let mut out = String::new();
    let mut level = levels[levels.len() / 2];
    let mut next_change = sojourn.sample(&mut rng);
    for ms in 1..=length_ms {
        if ms as f64 >= next_change {
            level = levels[rng.random_range(0..levels.len())];
            next_change += sojourn.sample(&mut rng);
        }
        // Mbit/s to 1500-byte packets per ms: mbps * 1e6 / 8 / 1500 / 1000 = mbps / 12.
        let packets = Poisson::new(level / 12.0).unwrap().sample(&mut rng) as u64;
        for _ in 0..packets {
            writeln!(out, "{ms}").unwrap();
        }
    }
    // The period is the last line's value: make sure the trace ends at its length.
    if !out.ends_with(&format!("\n{length_ms}\n")) {
        writeln!(out, "{length_ms}").unwrap();
    }
    out
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "traces".into()));
    std::fs::create_dir_all(&dir).unwrap();
    let down = trace(&[2.0, 5.0, 9.0, 14.0, 20.0], 20_000, 1);
    let up = trace(&[0.5, 1.5, 3.0, 5.0, 7.0], 20_000, 2);
    for (name, text) in [("synthetic-lte.down", down), ("synthetic-lte.up", up)] {
        let t = edgeinfer_linksim::Trace::parse(&text).unwrap();
        println!(
            "{name}: {} opportunities over {:?}, mean {:.2} Mbit/s",
            t.len(),
            t.period(),
            t.mean_rate_mbps()
        );
        std::fs::write(dir.join(name), text).unwrap();
    }
}
