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
    /// Echo calls per profile, one after another.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Echo calls without a link for the loopback floor (after as many to warm up).
    #[arg(long, default_value_t = 2000)]
    pub floor_messages: u64,
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
    floor_messages: u64,
    floor_ms: Percentiles,
    rows: Vec<LiveRow>,
    all_within: bool,
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
    let floor = Percentiles::of(lo.floor(args.floor_messages, args.bytes).await?);
    let floor_p50 = floor.p50.unwrap_or(0.0);
    let mut rows = Vec::new();
    for p in &profiles {
        eprintln!("link live: {} ({} calls)", p.name, args.messages);
        rows.push(
            lo.compare(p, args.messages, args.bytes, args.seed, floor_p50)
                .await?,
        );
    }
    let report = LiveReport {
        bytes: args.bytes,
        seed: args.seed,
        floor_messages: args.floor_messages,
        floor_ms: floor,
        all_within: rows.iter().all(|r| r.within),
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
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Loopback floor (gRPC echo, no link): p50 {} ms, p99 {} ms over {} calls of {} B.\n",
        ms(r.floor_ms.p50),
        ms(r.floor_ms.p99),
        r.floor_messages,
        r.bytes
    );
    out.push_str(
        "| profile | calls | offline p50 | + floor | live p50 | offline p99 | + floor | live p99 \
         | simulated p50 / p99 | overhead p50 / p99 | lost live / offline | within |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for row in &r.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {} |",
            row.profile,
            row.messages,
            ms(row.offline_ms.p50),
            ms(row.expected_ms.p50),
            ms(row.live_ms.p50),
            ms(row.offline_ms.p99),
            ms(row.expected_ms.p99),
            ms(row.live_ms.p99),
            ms(row.simulated_ms.p50),
            ms(row.simulated_ms.p99),
            ms(row.overhead_ms.p50),
            ms(row.overhead_ms.p99),
            row.lost,
            row.offline_lost,
            if row.within { "yes" } else { "NO" },
        );
    }
    let _ = writeln!(
        out,
        "\nTimes in ms. `+ floor` is the offline figure plus the floor's median; `simulated`: the \
         uplink plus downlink the simulator gave the live calls themselves (the offline model on \
         live's timeline, which meets handovers and traces at other instants than `sample`'s); \
         `overhead`: each live call less its simulated uplink and downlink (floor, layer and \
         timer); `within`: \
         live p50 and p99 within 5 % or 0.1 ms (the larger) of `+ floor`. Seed {}.",
        r.seed
    );
    out
}
