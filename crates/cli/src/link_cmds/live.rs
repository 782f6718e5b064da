//! `edgeinfer link live`: live round trips through the tower layer (a real gRPC echo on
//! loopback) beside `link sample`'s offline figures, per profile, with the loopback floor.
//!
//! The table it prints is the one in crates/linksim/README.md ("Live against offline"); see
//! `edgeinfer_linksim::live` for how the two sides are made comparable.

use std::fmt::Write as _;

use anyhow::Context as _;
use clap::Args;
use edgeinfer_linksim::LinkProfile;
use edgeinfer_linksim::live::{LiveRow, Loopback, Percentiles};
use serde::Serialize;

/// Arguments of `link live`.
#[derive(Debug, Clone, Args)]
pub struct LiveArgs {
    /// Profiles to measure (built-in names or profile files), comma separated; default: every
    /// built-in.
    #[arg(long, value_delimiter = ',')]
    pub profiles: Vec<String>,
    /// Echo calls per profile, one after another. A p99 over fewer is mostly sampling noise
    /// on heavy-tailed profiles (lte's offline p99 over 1,000 exchanges ranges from 84 to
    /// 103 ms across seeds, over 5,000 from 87 to 92).
    #[arg(long, default_value_t = 5000)]
    pub messages: u64,
    /// Echo calls without a link before the first profile, to warm the connection up (each
    /// profile's floor is measured between its own calls).
    #[arg(long, default_value_t = 1000)]
    pub warmup: u64,
    /// Size of each request and response message (gRPC prefix included), in bytes.
    #[arg(long, default_value_t = 64)]
    pub bytes: usize,
    /// Seed of the link (live and offline alike).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What `link live --json` prints.
#[derive(Debug, Serialize)]
struct LiveReport {
    bytes: usize,
    seed: u64,
    warmup: u64,
    rows: Vec<LiveRow>,
    all_within: bool,
    all_within_timeline: bool,
}

/// Runs the measurement and renders it.
pub async fn run(args: &LiveArgs) -> anyhow::Result<String> {
    let names: Vec<String> = if args.profiles.is_empty() {
        edgeinfer_linksim::builtin::NAMES
            .iter()
            .map(|n| n.to_string())
            .collect()
    } else {
        args.profiles.clone()
    };
    let profiles = names
        .iter()
        .map(|n| LinkProfile::resolve(n).with_context(|| format!("--profiles {n}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let lo = Loopback::start().await?;
    lo.warm_up(args.warmup, args.bytes).await?;
    let mut rows = Vec::new();
    for p in &profiles {
        eprintln!("link live: {} ({} calls)", p.name, args.messages);
        rows.push(lo.compare(p, args.messages, args.bytes, args.seed).await?);
    }
    let report = LiveReport {
        bytes: args.bytes,
        seed: args.seed,
        warmup: args.warmup,
        all_within: rows.iter().all(|r| r.within),
        all_within_timeline: rows.iter().all(|r| r.within_timeline),
        rows,
    };
    Ok(if args.json {
        let mut out = serde_json::to_string_pretty(&report)?;
        out.push('\n');
        out
    } else {
        table(&report)
    })
}

fn table(r: &LiveReport) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
    let pair = |p: &Percentiles| format!("{} / {}", ms(p.p50), ms(p.p99));
    let yes = |b: bool| if b { "yes" } else { "NO" };
    let mut out = String::new();
    out.push_str(
        "| profile | calls | floor | offline | + floor | live | within | simulated | + floor \
         | within | overhead | lost live / offline |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: |\n",
    );
    for row in &r.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            row.profile,
            row.messages,
            pair(&row.floor_ms),
            pair(&row.offline_ms),
            pair(&row.expected_ms),
            pair(&row.live_ms),
            yes(row.within),
            pair(&row.simulated_ms),
            pair(&row.timeline_ms),
            yes(row.within_timeline),
            pair(&row.overhead_ms),
            row.lost,
            row.offline_lost,
        );
    }
    let _ = writeln!(
        out,
        "\nRound trips in ms, p50 / p99, messages of {} B, seed {}. `floor`: direct echo calls, \
         one before each call through the link. `offline`: `link sample`'s experiment. \
         `+ floor`: the percentile of a round trip of the column before plus a floor round trip \
         drawn independently. `live`: through the layer on a precise link. `simulated`: the \
         uplink plus downlink the simulator gave the live calls themselves (the offline model on \
         live's timeline, which meets handovers and fades at other instants than `sample`'s). \
         `within`: live p50 and p99 within 5 % or 0.1 ms (the larger) of the `+ floor` before \
         it. `overhead`: each live call less its simulated uplink and downlink.",
        r.bytes, r.seed
    );
    out
}
