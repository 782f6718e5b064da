//! The `edgeinfer` command line.

mod adapt_cmds;
mod client_cmds;
mod link_cmds;
mod model_cmds;
mod sweep;
mod up;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "edgeinfer",
    version,
    about = "Edge inference with cloud fallback over a simulated 5G link"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cloud and edge in one process on the shipped models, ready for grpcurl.
    Up(up::UpArgs),
    /// Sends one request and prints the answer with who answered, why, and the timing.
    Infer(client_cmds::InferArgs),
    /// Loads a server with MNIST test images and reports latency, throughput, accuracy, routing.
    Bench(client_cmds::BenchArgs),
    /// Accuracy / offload / latency trade-off over thresholds and link profiles, with plots.
    Sweep(sweep::SweepArgs),
    /// grpc.health.v1 check: exit 0 when the server reports SERVING, 2/3/4 as grpc_health_probe.
    Health(client_cmds::HealthArgs),
    /// Trains a model on MNIST, calibrates it and writes it (.safetensors).
    Train(model_cmds::TrainArgs),
    /// Quantizes the f32 edge-mlp to GGUF (q8_0 or q4_0).
    Quantize(model_cmds::QuantizeArgs),
    /// Test accuracy, calibration error and latency of a model file.
    Eval(model_cmds::EvalArgs),
    /// The edge's store of the cloud's answers (--hard-examples-dir): export it for training.
    #[command(subcommand)]
    HardExamples(adapt_cmds::HardExamplesCommand),
    /// One turn of adaptation against a running edge: shifted images before, hard examples
    /// from the edge's store, fine-tuning, int8, a hot swap, the same images after.
    Adapt(adapt_cmds::AdaptArgs),
    /// The simulated 5G link: its profiles, and sampled statistics of one.
    #[command(subcommand)]
    Link(link_cmds::LinkCommand),
    /// A gRPC server that does no work (native Infer, OIP ModelInfer, health): the floor that
    /// serving figures are compared with (`edgeinfer bench --addr ADDR`).
    Floor(FloorArgs),
    /// Prints a shell completion script for edgeinfer (bash, zsh, fish, ...) on stdout.
    Completions(CompletionsArgs),
}

/// Arguments of `edgeinfer completions`.
#[derive(clap::Args)]
#[command(after_help = "Install, for example:
  bash: edgeinfer completions bash > ~/.local/share/bash-completion/completions/edgeinfer
  zsh:  edgeinfer completions zsh > \"${fpath[1]}/_edgeinfer\"
  fish: edgeinfer completions fish > ~/.config/fish/completions/edgeinfer.fish")]
struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
struct FloorArgs {
    /// Address to serve on.
    #[arg(
        long,
        default_value = "127.0.0.1:50070",
        env = "EDGEINFER_FLOOR_LISTEN"
    )]
    listen: std::net::SocketAddr,
}

edgeinfer_serving::binary_main!(async {
    match run(Cli::parse().command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain of causes on one line: what failed, and why.
            eprintln!("edgeinfer: {e:#}");
            ExitCode::from(client_cmds::exit_code(&e))
        }
    }
});

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up(args) => {
            // One process, one exporter: the spans say which node (`node` = edge or cloud).
            let telemetry = edgeinfer_serving::telemetry::init(
                "text",
                args.otlp_endpoint.as_deref(),
                "edgeinfer-up",
            )?;
            let result = up::run_up(&args).await;
            if let Some(t) = telemetry {
                t.shutdown().await;
            }
            result
        }
        Command::Infer(args) => client_cmds::run_infer(&args).await,
        Command::Bench(args) => client_cmds::run_bench(&args).await,
        Command::Sweep(args) => sweep::run_sweep(&args).await,
        Command::Health(args) => client_cmds::run_health(&args).await,
        Command::Train(args) => model_cmds::run_train(&args),
        Command::Quantize(args) => model_cmds::run_quantize(&args),
        Command::Eval(args) => model_cmds::run_eval(&args),
        Command::HardExamples(cmd) => adapt_cmds::run_hard_examples(&cmd),
        Command::Adapt(args) => adapt_cmds::run_adapt(&args).await,
        Command::Link(cmd) => link_cmds::run(&cmd),
        Command::Floor(args) => {
            edgeinfer_serving::cli::init_tracing("text");
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .map_err(|e| anyhow::anyhow!("--listen {}: {e}", args.listen))?;
            let addr = listener.local_addr()?;
            println!("floor (no work) listening on {addr}; stop with Ctrl-C");
            edgeinfer_cli::floor::serve(listener, edgeinfer_serving::shutdown::signal()).await?;
            Ok(())
        }
        Command::Completions(args) => {
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "edgeinfer",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}
