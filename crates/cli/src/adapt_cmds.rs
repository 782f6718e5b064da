//! `edgeinfer hard-examples export` and `edgeinfer adapt`: the command-line halves of
//! `edgeinfer_cli::hard_examples` and `edgeinfer_cli::adapt`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use edgeinfer_cli::adapt::{self, AdaptData, AdaptOptions};
use edgeinfer_cli::hard_examples;
use edgeinfer_cli::local::shipped_model;

use crate::model_cmds::DataArg;

/// The edge's hard-example store.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum HardExamplesCommand {
    /// Writes the store's records as an MNIST IDX training pair that `edgeinfer train
    /// --hard-examples` reads: images round(x * 255) clamped, labels the cloud's answers.
    Export(ExportArgs),
}

/// Arguments of `edgeinfer hard-examples export`.
#[derive(Clone, Debug, clap::Args)]
#[command(after_help = "Writes OUT/train-images-idx3-ubyte.gz and \
OUT/train-labels-idx1-ubyte.gz, and says how many records it found, how many it skipped and \
why (an input that is not one channel of rows x cols, a cloud label that is no class 0-9, \
a torn tail after a crash). Safe while the edge is writing the store.\n\n\
Example: edgeinfer hard-examples export --dir /var/lib/edgeinfer/hard --out /tmp/hard")]
pub struct ExportArgs {
    /// The edge's --hard-examples-dir
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Directory to write the data set to (created if need be)
    #[arg(long, value_name = "OUT")]
    pub out: PathBuf,
    /// Only the records whose request id starts with this
    #[arg(long, default_value = "", value_name = "PREFIX")]
    pub id_prefix: String,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// `edgeinfer hard-examples`.
pub fn run_hard_examples(command: &HardExamplesCommand) -> anyhow::Result<()> {
    match command {
        HardExamplesCommand::Export(args) => {
            let e = hard_examples::export(&args.dir, &args.out, &args.id_prefix)?;
            let skipped: usize = e.skipped.values().sum();
            if args.json {
                let out = serde_json::json!({
                    "dir": args.dir.display().to_string(),
                    "out": args.out.display().to_string(),
                    "records": e.records,
                    "exported": e.data.len(),
                    "rows": e.data.rows,
                    "cols": e.data.cols,
                    "skipped": e.skipped,
                    "unreadable": e.unreadable.iter().map(|s| serde_json::json!({
                        "segment": s.segment.display().to_string(),
                        "offset": s.offset,
                        "bytes": s.bytes,
                        "why": s.why,
                    })).collect::<Vec<_>>(),
                });
                println!("{out}");
                return Ok(());
            }
            println!(
                "exported {} of {} records ({}x{} images) to {}; {skipped} skipped",
                e.data.len(),
                e.records,
                e.data.rows,
                e.data.cols,
                args.out.display()
            );
            for (why, n) in &e.skipped {
                println!("  skipped {n}: {why}");
            }
            for s in &e.unreadable {
                println!(
                    "  unread: {} bytes of {} from offset {}: {}",
                    s.bytes,
                    s.segment.display(),
                    s.offset,
                    s.why
                );
            }
            Ok(())
        }
    }
}

/// Arguments of `edgeinfer adapt`.
#[derive(Clone, Debug, clap::Args)]
#[command(
    after_help = "One turn of the loop against a running pair (`edgeinfer up \
--hard-examples-dir DIR` gives one):\n\
  1. before: --measure MNIST test images, shifted, through the edge (native Infer, routed)\n\
  2. collect: --collect MNIST training images (never validation or test), shifted, through \
the edge; the edge keeps those the cloud answers in its hard-example store\n\
  3. fine-tune --init on this run's hard examples (labels: the cloud's) mixed with as many \
original training images, quantize to int8, calibrate on the validation split, write --out\n\
  4. LoadModel on the edge's admin listener: the new version serves\n\
  5. after: the same shifted test images again\n\n\
The shift: sensor noise, Gaussian noise of sigma 0.35 (of the full scale) added to every \
pixel, clamped to [0, 1] (seeded by --seed). Test images measure, training images teach, so the figures \
are on images the new model never saw.\n\n\
Example: edgeinfer up --hard-examples-dir /tmp/hard &\n  \
edgeinfer adapt --hard-examples-dir /tmp/hard --out /tmp/edge-mlp-adapted-int8.safetensors"
)]
pub struct AdaptArgs {
    /// The edge's data address
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// The edge's admin address (GetStatus, LoadModel)
    #[arg(long, default_value = "http://127.0.0.1:50061")]
    pub admin: String,
    /// Bearer token of the admin calls
    #[arg(long, env = "EDGEINFER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The edge's hard-example store (its --hard-examples-dir)
    #[arg(long, value_name = "DIR")]
    pub hard_examples_dir: PathBuf,
    /// The f32 model the served edge model was quantized from: fine-tuning starts here
    /// [default: the shipped models/edge-mlp.safetensors]
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// Where the adapted int8 model is written (.safetensors)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Version to load it as [default: the served version plus one]
    #[arg(long)]
    pub version: Option<String>,
    /// Shifted training images sent to collect hard examples
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub collect: usize,
    /// Shifted test images sent before and after
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub measure: usize,
    /// Seed of the shift, the sample of original images and training
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fine-tuning epochs
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Original training images mixed in [default: as many as there are hard examples]
    #[arg(long, value_name = "N")]
    pub original: Option<usize>,
    /// Requests in flight at once
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Latency budget of each request in milliseconds (0: the edge's default)
    #[arg(long, default_value_t = 0)]
    pub budget_ms: u32,
    /// Print one JSON object instead of the table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data: DataArg,
}

/// `edgeinfer adapt`.
pub async fn run_adapt(args: &AdaptArgs) -> anyhow::Result<()> {
    let (train, validation) = args.data.load_train()?.split_validation();
    let data = AdaptData {
        train,
        validation,
        test: args.data.load_test()?,
    };
    let options = AdaptOptions {
        edge: args.addr.clone(),
        admin: args.admin.clone(),
        admin_token: args.admin_token.clone(),
        store: args.hard_examples_dir.clone(),
        init: args
            .init
            .clone()
            .unwrap_or_else(|| shipped_model("edge-mlp.safetensors")),
        out: args.out.clone(),
        version: args.version.clone(),
        collect: args.collect,
        measure: args.measure,
        seed: args.seed,
        epochs: args.epochs,
        original: args.original,
        concurrency: args.concurrency,
        budget_ms: args.budget_ms,
        store_wait: Duration::from_secs(30),
    };
    let mut say = |line: &str| eprintln!("{line}");
    let report = adapt::run(&options, &data, &mut say).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("the report as JSON")?
        );
        return Ok(());
    }
    let c = &report.collected;
    println!("shift: {}, seed {}", report.shift, report.seed);
    println!(
        "hard examples: {} used of {} records (the cloud answered {} of {} shifted training \
         images; {} of its labels wrong)",
        c.used, c.records, c.answered_by_cloud, c.sent, c.cloud_label_wrong
    );
    let a = &report.adapted;
    println!(
        "adapted model: {} as version {}, trained in {:.1} s; clean test accuracy {:.4}; \
         shifted test accuracy {:.4} (was {:.4})",
        a.file.display(),
        a.version,
        a.train_seconds,
        a.clean.accuracy,
        a.shifted_accuracy,
        a.shifted_accuracy_before
    );
    println!();
    print!("{}", adapt::table(&report));
    Ok(())
}
