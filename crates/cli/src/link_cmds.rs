//! `edgeinfer link profiles`, `sample`, `live` and `proxy`: the simulated link's profiles, what
//! one of them does to a stream of request/response exchanges (simulated, or live through the
//! tower layer: [`live`]), and any TCP stream behind one ([`proxy`]).
//!
//! `sample` runs the simulator in simulated time (nothing waits): `--messages` requests of
//! `--bytes`, one after another, each echoed back with `--bytes`; see
//! `edgeinfer_linksim::sample` for exactly what each figure means. Its JSON is the contract of
//! design.md section 8 (`profile`, `messages`, `bytes`, `delivered`, `lost`, `uplink_ms`,
//! `downlink_ms`, `rtt_ms` {`p50`, `p99`, `mean`}, `throughput_mbps` {`uplink`, `downlink`}) plus
//! `seed`, `loss_rate`, `retransmissions`, `handovers`, `simulated_s`; the same arguments give
//! byte-identical output.

mod live;
mod proxy;

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use edgeinfer_linksim::{LinkProfile, SampleReport, builtins, message_loss_rate, sample};
use serde::Serialize;

/// `edgeinfer link ...`
#[derive(Debug, Clone, Subcommand)]
pub enum LinkCommand {
    /// Lists the built-in link profiles with the figures they target and their sources.
    Profiles(ProfilesArgs),
    /// Simulates request/response exchanges on a profile: delay percentiles, loss, throughput.
    Sample(SampleArgs),
    /// Measures live round trips through the link's tower layer (a gRPC echo on loopback)
    /// against `sample`'s figures, per profile, with the loopback floor.
    Live(live::LiveArgs),
    /// Relays TCP connections to an upstream address through a profile, both directions.
    Proxy(proxy::ProxyArgs),
}

/// Arguments of `link profiles`.
#[derive(Debug, Clone, Args)]
pub struct ProfilesArgs {
    /// Print a JSON array: each profile's targets and its full parameters (the format of
    /// profile files and of SetLinkProfile documents).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `link sample`.
#[derive(Debug, Clone, Args)]
pub struct SampleArgs {
    /// Built-in profile (ideal, urllc, embb-mmwave, embb-midband, lte, cell-edge, offline), or
    /// the path of a profile file.
    #[arg(
        long,
        required_unless_present = "profile_file",
        conflicts_with = "profile_file"
    )]
    pub profile: Option<String>,
    /// A profile file, TOML or JSON (`.json`); trace paths in it are relative to the file.
    #[arg(long, value_name = "FILE")]
    pub profile_file: Option<PathBuf>,
    /// Request/response exchanges to simulate.
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// Size of each request and of each response, in bytes.
    #[arg(long, default_value_t = 64)]
    pub bytes: usize,
    /// Seed of the link's random processes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `link` subcommand, printing its output on stdout. Called from the async main, so
/// the async subcommands run on its runtime (`block_in_place`); `run_async` is the same for an
/// async caller.
pub fn run(cmd: &LinkCommand) -> anyhow::Result<()> {
    match cmd {
        LinkCommand::Live(_) | LinkCommand::Proxy(_) => tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(run_async(cmd))
        }),
        _ => {
            print!("{}", render(cmd)?);
            Ok(())
        }
    }
}

/// [`run`] for an async caller.
pub async fn run_async(cmd: &LinkCommand) -> anyhow::Result<()> {
    match cmd {
        LinkCommand::Live(args) => {
            print!("{}", live::run(args).await?);
            Ok(())
        }
        LinkCommand::Proxy(args) => {
            edgeinfer_serving::cli::init_tracing("text");
            proxy::run(args).await
        }
        _ => {
            print!("{}", render(cmd)?);
            Ok(())
        }
    }
}

/// What a synchronous `link` subcommand prints (`profiles`, `sample`).
pub fn render(cmd: &LinkCommand) -> anyhow::Result<String> {
    match cmd {
        LinkCommand::Live(_) | LinkCommand::Proxy(_) => {
            anyhow::bail!("`link live` and `link proxy` run on a runtime: use run_async")
        }
        LinkCommand::Profiles(args) => Ok(if args.json {
            profiles_json()
        } else {
            profiles_table()
        }),
        LinkCommand::Sample(args) => {
            let profile = match (&args.profile, &args.profile_file) {
                (_, Some(file)) => LinkProfile::load(file)
                    .with_context(|| format!("--profile-file {}", file.display()))?,
                (Some(spec), None) => {
                    LinkProfile::resolve(spec).with_context(|| format!("--profile {spec}"))?
                }
                (None, None) => anyhow::bail!("give --profile NAME or --profile-file FILE"),
            };
            let report = sample(&profile, args.messages, args.bytes, args.seed);
            Ok(if args.json {
                let mut out = serde_json::to_string_pretty(&report)?;
                out.push('\n');
                out
            } else {
                sample_table(&report)
            })
        }
    }
}

/// One entry of `link profiles --json`.
#[derive(Serialize)]
struct ProfileEntry {
    name: String,
    description: String,
    basis: &'static str,
    targets: edgeinfer_linksim::Targets,
    /// Loss per exchange of the profile's loss model, computed exactly.
    model_loss: f64,
    profile: LinkProfile,
}

fn model_loss(p: &LinkProfile) -> f64 {
    if p.is_offline() {
        return 1.0;
    }
    1.0 - (1.0 - message_loss_rate(&p.uplink.loss)) * (1.0 - message_loss_rate(&p.downlink.loss))
}

fn profiles_json() -> String {
    let entries: Vec<ProfileEntry> = builtins()
        .into_iter()
        .map(|b| ProfileEntry {
            name: b.profile.name.clone(),
            description: b.profile.description.clone(),
            basis: b.basis,
            targets: b.targets,
            model_loss: model_loss(&b.profile),
            profile: b.profile,
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&entries).expect("profiles serialize");
    out.push('\n');
    out
}

fn profiles_table() -> String {
    let rows: Vec<[String; 7]> = builtins()
        .into_iter()
        .map(|b| {
            let t = b.targets;
            let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v} ms"));
            let rate = |v: Option<f64>| v.map_or("unlimited".to_owned(), |v| format!("{v} Mbit/s"));
            let handover = match (t.handover_every_s, t.handover_median_ms, t.handover_p99_ms) {
                (Some(every), Some(median), Some(p99)) => {
                    format!("{every} s / {median} ms (p99 {p99})")
                }
                _ => "none".to_owned(),
            };
            [
                b.profile.name,
                ms(t.rtt_p50_ms),
                ms(t.rtt_p99_ms),
                rate(t.uplink_mbps),
                rate(t.downlink_mbps),
                format!("{}", t.loss),
                handover,
            ]
        })
        .collect();
    let header = [
        "profile",
        "RTT p50",
        "RTT p99",
        "uplink",
        "downlink",
        "loss",
        "handover every / lasting",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let _ = write!(s, "{cell:<w$}");
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut out, &header);
    for row in &rows {
        line(&mut out, &row.each_ref().map(String::as_str));
    }
    out.push_str(
        "\nTargets are for small messages on an idle link (`edgeinfer link sample`); loss is per\n\
         request/response exchange after retransmissions. Sources: `edgeinfer link profiles \
         --json`.\n",
    );
    out
}

fn sample_table(r: &SampleReport) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3} ms"));
    let rate = |v: Option<f64>| v.map_or("unlimited".to_owned(), |v| format!("{v:.1} Mbit/s"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "profile {}: {} exchanges of {} B each way, seed {}",
        r.profile, r.messages, r.bytes, r.seed
    );
    let _ = writeln!(out, "{:<10}{:>14}{:>14}{:>14}", "", "p50", "p99", "mean");
    for (name, s) in [
        ("uplink", &r.uplink_ms),
        ("downlink", &r.downlink_ms),
        ("rtt", &r.rtt_ms),
    ] {
        let _ = writeln!(
            out,
            "{name:<10}{:>14}{:>14}{:>14}",
            ms(s.p50),
            ms(s.p99),
            ms(s.mean)
        );
    }
    let _ = writeln!(
        out,
        "delivered {}, lost {} ({:.3e} of exchanges)",
        r.delivered, r.lost, r.loss_rate
    );
    let _ = writeln!(
        out,
        "throughput: uplink {}, downlink {}",
        rate(r.throughput_mbps.uplink),
        rate(r.throughput_mbps.downlink)
    );
    let _ = writeln!(
        out,
        "retransmissions {}, handovers {}, simulated {} s",
        r.retransmissions, r.handovers, r.simulated_s
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: LinkCommand,
    }

    fn render_args(args: &[&str]) -> anyhow::Result<String> {
        let cli = Cli::try_parse_from(std::iter::once("link").chain(args.iter().copied()))?;
        render(&cli.cmd)
    }

    #[test]
    fn sample_json_has_the_contract_fields_and_is_reproducible() {
        let args = ["sample", "--profile", "lte", "--messages", "2000", "--json"];
        let out = render_args(&args).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        for key in ["profile", "messages", "bytes", "delivered", "lost"] {
            assert!(v.get(key).is_some(), "{key} missing: {out}");
        }
        for key in ["uplink_ms", "downlink_ms", "rtt_ms"] {
            for stat in ["p50", "p99", "mean"] {
                assert!(v[key][stat].is_number(), "{key}.{stat}: {out}");
            }
        }
        assert!(v["throughput_mbps"]["uplink"].is_number());
        assert!(v["throughput_mbps"]["downlink"].is_number());
        assert_eq!(out, render_args(&args).unwrap());
        let other = render_args(&[
            "sample",
            "--profile",
            "lte",
            "--messages",
            "2000",
            "--seed",
            "2",
            "--json",
        ])
        .unwrap();
        assert_ne!(out, other);
    }

    #[test]
    fn sample_reads_profile_files_and_names_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(
            &file,
            "name = \"mine\"\n[uplink]\nbandwidth_mbps = 10\n[downlink]\n",
        )
        .unwrap();
        let out = render_args(&["sample", "--profile-file", file.to_str().unwrap()]).unwrap();
        assert!(out.starts_with("profile mine:"), "{out}");

        std::fs::write(&file, "[uplink]\nbandwith_mbps = 10\n[downlink]\n").unwrap();
        let err = render_args(&["sample", "--profile-file", file.to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("bandwith_mbps"), "{err:#}");
        let err = render_args(&["sample", "--profile", "6g"]).unwrap_err();
        assert!(format!("{err:#}").contains("embb-mmwave"), "{err:#}");
        assert!(render_args(&["sample"]).is_err());
    }

    #[test]
    fn profiles_list_every_builtin() {
        let table = render_args(&["profiles"]).unwrap();
        for name in edgeinfer_linksim::builtin::NAMES {
            assert!(table.contains(name), "{name}: {table}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&render_args(&["profiles", "--json"]).unwrap()).unwrap();
        let lte = &json[4];
        assert_eq!(lte["name"], "lte");
        assert_eq!(lte["targets"]["rtt_p50_ms"], 37.0);
        // The embedded profile is a valid profile document.
        LinkProfile::from_json_str(&lte["profile"].to_string()).unwrap();
    }
}
