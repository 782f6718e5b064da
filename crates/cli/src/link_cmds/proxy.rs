//! `edgeinfer link proxy`: any TCP stream behind a link profile, both directions, until Ctrl-C.
//!
//! What the client sends crosses the profile's uplink, what the upstream answers its downlink
//! (see `edgeinfer_linksim::proxy` for how a byte stream meets delay, bandwidth or a trace,
//! handovers and loss). The link waits with the precise timer.

use anyhow::Context as _;
use clap::Args;
use edgeinfer_linksim::{Link, LinkProfile, LinkTimer};

/// Arguments of `link proxy`.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Address to accept connections on, for example 127.0.0.1:6000.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Address to relay each connection to (`host:port`; the host may be a name).
    #[arg(long, value_name = "ADDR")]
    pub upstream: String,
    /// Built-in profile (ideal, urllc, embb-mmwave, embb-midband, lte, cell-edge, offline) or
    /// the path of a profile file.
    #[arg(long, value_name = "P")]
    pub profile: String,
    /// Seed of the link's random processes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Checks the arguments, binds, and relays until Ctrl-C.
pub async fn run(args: &ProxyArgs) -> anyhow::Result<()> {
    let profile = LinkProfile::resolve(&args.profile)
        .with_context(|| format!("--profile {}", args.profile))?;
    upstream_has_port(&args.upstream)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", args.listen))?;
    eprintln!(
        "link proxy: {} -> {} through `{}` (uplink is toward the upstream); Ctrl-C stops",
        listener.local_addr()?,
        args.upstream,
        profile.name
    );
    let link = Link::new(profile, args.seed).with_timer(LinkTimer::Precise);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    edgeinfer_linksim::proxy::serve(listener, args.upstream.clone(), link, shutdown).await?;
    Ok(())
}

/// `host:port` with a port number; the host is resolved per connection (it may come up later).
fn upstream_has_port(upstream: &str) -> anyhow::Result<()> {
    let port = upstream.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
    match port {
        Some(Ok(p)) if p != 0 => Ok(()),
        _ => anyhow::bail!("--upstream {upstream}: expected host:port, for example cloud:50052"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_needs_a_port() {
        assert!(upstream_has_port("cloud:50052").is_ok());
        assert!(upstream_has_port("[::1]:80").is_ok());
        for bad in ["cloud", "cloud:", "cloud:0", "cloud:http", "1.2.3.4:70000"] {
            let err = upstream_has_port(bad).unwrap_err().to_string();
            assert!(err.contains("--upstream"), "{bad}: {err}");
        }
    }
}
