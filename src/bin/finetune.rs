//! `finetune`: transfer learning on an image folder, and using the result
//! (`finetune predict`, `finetune eval`). Parses arguments, calls the
//! library, reports.

use anyhow::{bail, Result};
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::collections::BTreeSet;
use std::path::PathBuf;
use tchlab::device::DeviceArg;
use tchlab::interrupt::Interrupt;
use tchlab::predict::{collect_images, evaluate_split, predict_files, resolve_split, TrainedModel};
use tchlab::report::plots;
use tchlab::train::checkpoint::{RunState, BEST_MODEL_FILE};
use tchlab::train::config::{FinetuneConfig, TrainOptions};
use tchlab::train::learner::{self, Start};

#[derive(Parser)]
#[command(
    name = "finetune",
    version,
    about = "Fine-tune a pretrained ResNet or EfficientNet-Lite0 on an image folder (DIR/train/<class>/*, DIR/val/<class>/*)",
    long_about = None,
    args_conflicts_with_subcommands = true,
    allow_negative_numbers = true,
    after_help = "Examples:\n  finetune --mode feature-extract --arch efficientnet-lite0\n  finetune --mode full --arch resnet18 --epochs 25 --out runs/r18-full\n  finetune --config run.toml --lr 0.01\n  finetune --resume runs/r18-full --epochs 30\n  finetune predict --checkpoint runs/r18-full photo.jpg\n  finetune eval --checkpoint runs/r18-full --data data/hymenoptera_data"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Class probabilities for images or folders of images.
    Predict(PredictArgs),
    /// Accuracy, per-class precision/recall and a confusion matrix on a split.
    Eval(EvalArgs),
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    options: TrainOptions,
    /// Read options from a TOML file (keys as the options: `lr = 0.01`, `batch-size = 8`); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Continue the run saved in this output folder with its own recipe (--epochs may extend it; --data, --workers, --threads, --cache-mb may change).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArg,
}

#[derive(Args)]
struct PredictArgs {
    /// A model written by finetune: its best_model.safetensors, or the run folder.
    #[arg(long, value_name = "FILE|DIR")]
    checkpoint: PathBuf,
    /// Image files or folders (searched recursively for image files).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Classes to show per image [default: all].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    top_k: Option<u64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Exit 0 even when some files cannot be read as images.
    #[arg(long)]
    allow_errors: bool,
    #[command(flatten)]
    device: DeviceArg,
}

#[derive(Args)]
struct EvalArgs {
    /// A model written by finetune: its best_model.safetensors, or the run folder.
    #[arg(long, value_name = "FILE|DIR")]
    checkpoint: PathBuf,
    #[arg(
        long,
        value_name = "DIR",
        help = "A split folder (DIR/<class>/<images>), or a dataset root (its val/ split is evaluated)"
    )]
    data: PathBuf,
    #[arg(
        long,
        value_name = "DIR",
        help = "Where to write confusion_matrix.png and evaluation.json [default: eval-<split> beside the model]"
    )]
    out: Option<PathBuf>,
    /// Print the evaluation as JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArg,
}

fn main() {
    tchlab::cli::run_main(|| {
        let matches = Cli::command().get_matches();
        let cli = Cli::from_arg_matches(&matches)?;
        match cli.command {
            Some(Command::Predict(args)) => predict(args),
            Some(Command::Eval(args)) => eval(args),
            None => train(cli.train, given_options(&matches)),
        }
    });
}

/// The ids of the training options given on the command line.
fn given_options(matches: &clap::ArgMatches) -> BTreeSet<String> {
    let options = TrainOptions::augment_args(clap::Command::new("options"));
    options
        .get_arguments()
        .map(|arg| arg.get_id().to_string())
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .collect()
}

fn train(args: TrainArgs, given: BTreeSet<String>) -> Result<()> {
    let device = args.device.select()?;
    let mut options = args.options;
    if let Some(file) = &args.config {
        if args.resume.is_some() {
            bail!("--config cannot be given with --resume (the run keeps its saved recipe)");
        }
        options = options.with_file(file, &given)?;
    }
    let (config, start) = match &args.resume {
        Some(dir) => (FinetuneConfig::resume(&RunState::config_json(dir)?, dir, &options, &given)?, Start::Resume),
        None => (FinetuneConfig::new(&options)?, Start::Fresh),
    };
    tchlab::accel::init_threads(config.threads, config.workers);
    println!("{}", tchlab::device::banner(device));
    println!("{}", config.describe());
    let interrupt = Interrupt::new();
    tchlab::cli::stop_on_ctrl_c(&interrupt);
    let summary = learner::run(&config, device, start, &interrupt)?;
    println!(
        "results in {}: metrics.csv, summary.json, {BEST_MODEL_FILE}, loss.png, accuracy.png, val_predictions.png, TensorBoard events (tensorboard --logdir {})",
        config.out.display(),
        config.out.display()
    );
    if !summary.bad_files.is_empty() {
        println!("{} file(s) were skipped (listed in summary.json)", summary.bad_files.len());
    }
    Ok(())
}

fn predict(args: PredictArgs) -> Result<()> {
    let device = args.device.select()?;
    let trained = TrainedModel::load(&args.checkpoint, device)?;
    let (files, skipped) = collect_images(&args.images)?;
    if skipped > 0 {
        eprintln!("skipped {skipped} file(s) in the folders given that are not images by extension");
    }
    if files.is_empty() {
        bail!("no image files found in {:?}", args.images);
    }
    let top_k = args.top_k.map_or(trained.classes.len(), |k| k as usize);
    let predictions = predict_files(&trained, &files, top_k, device)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&predictions)?);
    } else {
        eprintln!("{}", tchlab::device::banner(device));
        for p in &predictions {
            match &p.error {
                Some(e) => println!("{}  ERROR {e}", p.path.display()),
                None => {
                    let cells: Vec<String> =
                        p.top.iter().map(|c| format!("{} {:.4}", c.class, c.probability)).collect();
                    println!("{}  {}", p.path.display(), cells.join("  "));
                }
            }
        }
    }
    let failed = predictions.iter().filter(|p| p.error.is_some()).count();
    if failed > 0 && !args.allow_errors {
        bail!(
            "{failed} of {} file(s) could not be read as images (--allow-errors to exit 0 anyway)",
            predictions.len()
        );
    }
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let device = args.device.select()?;
    let trained = TrainedModel::load(&args.checkpoint, device)?;
    let (folder, note) = resolve_split(&args.data, &trained.classes)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    let evaluation = evaluate_split(&trained, &folder, device)?;
    let out = args.out.unwrap_or_else(|| {
        let split_name = folder.root.file_name().map_or("split".into(), |n| n.to_string_lossy().into_owned());
        trained.path.parent().unwrap_or(std::path::Path::new(".")).join(format!("eval-{split_name}"))
    });
    std::fs::create_dir_all(&out)
        .map_err(|e| anyhow::anyhow!("--out {}: cannot create the folder ({e})", out.display()))?;
    plots::confusion_matrix(&evaluation.confusion, &trained.classes, &out.join("confusion_matrix.png"))?;
    let json = serde_json::to_string_pretty(&evaluation)?;
    tchlab::persist::write_atomically(&out.join("evaluation.json"), json.as_bytes())?;
    if args.json {
        println!("{json}");
        return Ok(());
    }
    println!(
        "{}: {} images, accuracy {:.4}, loss {:.4}",
        folder.root.display(),
        evaluation.images,
        evaluation.accuracy,
        evaluation.loss
    );
    println!("{:<16} {:>9} {:>9} {:>8}", "class", "precision", "recall", "support");
    for c in &evaluation.per_class {
        println!("{:<16} {:>9.4} {:>9.4} {:>8}", c.class, c.precision, c.recall, c.support);
    }
    println!("confusion matrix (rows: true, columns: predicted):");
    for (class, row) in trained.classes.iter().zip(&evaluation.confusion) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:>6}")).collect();
        println!("{:<16}{}", class, cells.join(""));
    }
    println!("wrote {} and {}", out.join("confusion_matrix.png").display(), out.join("evaluation.json").display());
    Ok(())
}
