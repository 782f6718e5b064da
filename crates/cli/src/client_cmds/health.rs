//! `edgeinfer health`: one `grpc.health.v1.Health/Check`, with grpc_health_probe's exit
//! statuses so that probes written for it (Kubernetes exec probes, compose health checks)
//! read ours the same way.

use std::time::Duration;

use anyhow::{Result, anyhow};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use super::exit::Failure;
use super::request::status_error;
use super::target::{ConnectError, Target, TlsArgs};
use super::{DEFAULT_ADDR, ENV_ADDR};

/// The address or TLS files are wrong: nothing was tried.
pub const EXIT_BAD_ARGUMENTS: u8 = 1;
/// Nothing answered at the address within the timeout (or TLS failed).
pub const EXIT_CONNECTION_FAILURE: u8 = 2;
/// The check call failed: an error status, an unknown service, or no answer in time.
pub const EXIT_RPC_FAILURE: u8 = 3;
/// The server answered with a status other than SERVING.
pub const EXIT_NOT_SERVING: u8 = 4;

/// Arguments of `edgeinfer health`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exit status, as grpc_health_probe's:
  0  the server (or --service) reports SERVING
  1  bad --addr or TLS files (usage errors of the flags themselves exit 2, as for every command)
  2  connection failure: nothing answers at the address within the timeout
  3  RPC failure: the check failed, timed out, or the service is unknown
  4  the server answered NOT_SERVING (or UNKNOWN, SERVICE_UNKNOWN)")]
pub struct HealthArgs {
    /// Server address.
    #[arg(long, env = ENV_ADDR, default_value = DEFAULT_ADDR)]
    pub addr: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Service to check, for example `edgeinfer.v1.Inference`; empty checks the whole server.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up connecting after this many milliseconds, and the check after as many again.
    #[arg(long, default_value_t = 3_000)]
    pub timeout_ms: u64,
}

/// `grpc.health.v1.Health/Check`: Ok when the server reports SERVING, else a [`Failure`]
/// whose code says which step failed.
pub async fn run_health(args: &HealthArgs) -> Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let what = if args.service.is_empty() {
        format!("{} (whole server)", args.addr)
    } else {
        format!("{} service {}", args.addr, args.service)
    };
    // The connect timeout covers TCP and TLS; the outer one a server that accepts but
    // never completes the HTTP/2 handshake.
    let connect = Target::connect_with_timeout(&args.addr, 1, &args.tls, timeout);
    let target = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(target)) => target,
        Ok(Err(ConnectError::Setup(e))) => return Err(Failure::new(EXIT_BAD_ARGUMENTS, e).into()),
        Ok(Err(e @ ConnectError::Unreachable { .. })) => {
            return Err(Failure::new(EXIT_CONNECTION_FAILURE, e).into());
        }
        Err(_) => {
            return Err(Failure::new(
                EXIT_CONNECTION_FAILURE,
                anyhow!("{what}: no connection within {} ms", args.timeout_ms),
            )
            .into());
        }
    };

    let mut request = tonic::Request::new(HealthCheckRequest {
        service: args.service.clone(),
    });
    request.set_timeout(timeout);
    let rpc_failure = |e| Err(Failure::new(EXIT_RPC_FAILURE, e).into());
    let status = match tokio::time::timeout(timeout, target.health().check(request)).await {
        Ok(Ok(response)) => response.into_inner().status(),
        Ok(Err(status)) => {
            return rpc_failure(match status.code() {
                tonic::Code::NotFound => {
                    anyhow!("{what}: unknown service (the server does not report it)")
                }
                tonic::Code::Unimplemented => {
                    anyhow!("{what}: the server does not implement grpc.health.v1")
                }
                _ => status_error(&args.addr, &status),
            });
        }
        Err(_) => return rpc_failure(anyhow!("{what}: no answer within {} ms", args.timeout_ms)),
    };
    match status {
        ServingStatus::Serving => {
            println!("{what}: SERVING");
            Ok(())
        }
        other => Err(Failure::new(
            EXIT_NOT_SERVING,
            anyhow!("{what}: {} (not SERVING)", other.as_str_name()),
        )
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::exit::exit_code;
    use super::super::fake_server::{self, SICK_SERVICE};
    use super::*;

    fn args(addr: &str, service: &str) -> HealthArgs {
        HealthArgs {
            addr: addr.to_string(),
            tls: TlsArgs::default(),
            service: service.to_string(),
            timeout_ms: 2_000,
        }
    }

    async fn code(args: &HealthArgs) -> (u8, String) {
        match run_health(args).await {
            Ok(()) => (0, String::new()),
            Err(e) => (exit_code(&e), format!("{e:#}")),
        }
    }

    #[tokio::test]
    async fn exit_codes_follow_grpc_health_probe() {
        let addr = fake_server::start().await;
        assert_eq!(code(&args(&addr, "")).await.0, 0);
        assert_eq!(code(&args(&addr, "edgeinfer.v1.Inference")).await.0, 0);

        let (c, message) = code(&args(&addr, SICK_SERVICE)).await;
        assert_eq!(c, EXIT_NOT_SERVING, "{message}");
        assert!(message.contains("NOT_SERVING"), "{message}");

        let (c, message) = code(&args(&addr, "no.such.Service")).await;
        assert_eq!(c, EXIT_RPC_FAILURE, "{message}");
        assert!(message.contains("unknown service"), "{message}");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap().to_string();
        drop(listener);
        let (c, message) = code(&args(&closed, "")).await;
        assert_eq!(c, EXIT_CONNECTION_FAILURE, "{message}");

        let (c, message) = code(&args("http://[::1", "")).await;
        assert_eq!(c, EXIT_BAD_ARGUMENTS, "{message}");
    }

    #[tokio::test]
    async fn a_server_without_health_is_an_rpc_failure() {
        let addr = fake_server::start_without_health().await;
        let (c, message) = code(&args(&addr, "")).await;
        assert_eq!(c, EXIT_RPC_FAILURE, "{message}");
        assert!(
            message.contains("does not implement grpc.health.v1"),
            "{message}"
        );
    }
}
