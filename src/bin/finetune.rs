//! `finetune`: transfer learning on an image folder, and using the result
//! (`finetune predict`, `finetune eval`). Parses arguments, then calls the library.

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use tchlab::models::Arch;
use tchlab::predict::{collect_images, evaluate_split, predict_files, TrainedModel};
use tchlab::report::plots;
use tchlab::train::finetune::{self, FinetuneConfig, Mode};
use tchlab::train::state::RunState;

#[derive(Parser)]
#[command(
    name = "finetune",
    version,
    about = "Fine-tune a pretrained ResNet or EfficientNet-Lite0 on an image folder (DIR/train/<class>/*, DIR/val/<class>/*)",
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  finetune --mode feature-extract --arch efficientnet-lite0\n  finetune --mode full --arch resnet18 --epochs 25 --out runs/r18-full\n  finetune --resume runs/r18-full\n  finetune predict --checkpoint runs/r18-full/best_model.safetensors photo.jpg\n  finetune eval --checkpoint runs/r18-full/best_model.safetensors --data data/hymenoptera_data/val"
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
    /// feature-extract: frozen backbone, new head; full: train every weight.
    #[arg(long, value_enum, default_value = "feature-extract")]
    mode: Mode,
    #[arg(long, value_enum, default_value = "resnet18")]
    arch: Arch,
    /// Image folder with train/ and val/ inside.
    #[arg(long, default_value = "data/hymenoptera_data")]
    data: PathBuf,
    /// Pretrained weights (.pth state_dict or .safetensors); default: the arch's file in --models-dir.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Where scripts/fetch-models.sh puts weights.
    #[arg(long, default_value = "models")]
    models_dir: PathBuf,
    /// Train from random weights instead of pretrained ones.
    #[arg(long)]
    random_init: bool,
    #[arg(long, default_value_t = 25)]
    epochs: usize,
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    #[arg(long, default_value_t = 0.001)]
    lr: f64,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// StepLR: multiply the learning rate by --gamma every this many epochs.
    #[arg(long, default_value_t = 7)]
    step_size: usize,
    #[arg(long, default_value_t = 0.1)]
    gamma: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Output folder (default: runs/<arch>-<mode>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Threads that decode and augment images (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Memory for decoded images, in MB (train split first); images beyond it
    /// are kept as file bytes and decoded at each use: slower, same results.
    #[arg(long, value_name = "MB", default_value_t = tchlab::data::loader::DEFAULT_PIXEL_BUDGET_MB)]
    cache_mb: u64,
    /// feature-extract only: compute train features once (no augmentation) and train the head on them.
    #[arg(long)]
    cache_features: bool,
    /// Fail on the first undecodable image instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Mixed precision on CUDA: fp16 autocast forward passes, loss scaling in full mode.
    #[arg(long)]
    amp: bool,
    /// Continue the run saved in this output folder (its recipe is reused).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
}

#[derive(Args)]
struct PredictArgs {
    /// A model written by finetune (best_model.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Image files or folders.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Classes to show per image (default: all).
    #[arg(long)]
    top_k: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Args)]
struct EvalArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// A split folder: DIR/<class>/<images>.
    #[arg(long)]
    data: PathBuf,
    /// Where to write the confusion matrix PNG and evaluation.json.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "auto")]
    device: String,
}

fn main() {
    tchlab::cli::run_main(|| {
        let cli = Cli::parse();
        match cli.command {
            Some(Command::Predict(args)) => predict(args),
            Some(Command::Eval(args)) => eval(args),
            None => train(cli.train),
        }
    });
}

fn train(args: TrainArgs) -> Result<()> {
    let device = tchlab::device::select(&args.device)?;
    println!("{}", tchlab::device::banner(device));
    let (config, resume) = match &args.resume {
        Some(dir) => {
            let state = RunState::load(dir)?;
            let mut config: FinetuneConfig = serde_json::from_str(&state.config_json)?;
            config.out = dir.clone();
            (config, true)
        }
        None => (config_from_args(&args)?, false),
    };
    println!(
        "finetune: {} {} | epochs {} batch {} lr {} momentum {} StepLR({}, {}) seed {}{} | out {}",
        config.arch.name(),
        config.mode.name(),
        config.epochs,
        config.batch_size,
        config.lr,
        config.momentum,
        config.step_size,
        config.gamma,
        config.seed,
        if config.amp { " | mixed precision (--amp)" } else { "" },
        config.out.display()
    );
    tchlab::cli::stop_on_ctrl_c(&finetune::STOP_REQUESTED);
    let summary = finetune::run(&config, device, resume)?;
    println!(
        "results in {}: metrics.csv, summary.json, {}, loss.png, accuracy.png, val_predictions.png",
        config.out.display(),
        finetune::BEST_MODEL_FILE
    );
    if !summary.bad_files.is_empty() {
        println!("{} file(s) were skipped (listed in summary.json)", summary.bad_files.len());
    }
    Ok(())
}

fn config_from_args(args: &TrainArgs) -> Result<FinetuneConfig> {
    if args.cache_features && args.mode != Mode::FeatureExtract {
        bail!("--cache-features needs --mode feature-extract (in full mode the features change every step)");
    }
    if args.batch_size == 0 || args.epochs == 0 {
        bail!("--batch-size and --epochs must be at least 1");
    }
    let weights = if args.random_init {
        None
    } else {
        let path = args.weights.clone().unwrap_or_else(|| args.arch.default_weights(&args.models_dir));
        if !path.exists() {
            bail!(
                "{}: weights file not found. Run scripts/fetch-models.sh, pass --weights FILE, or use --random-init",
                path.display()
            );
        }
        Some(path)
    };
    let out =
        args.out.clone().unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}", args.arch.name(), args.mode.name())));
    Ok(FinetuneConfig {
        mode: args.mode,
        arch: args.arch,
        data: args.data.clone(),
        weights,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        momentum: args.momentum,
        step_size: args.step_size,
        gamma: args.gamma,
        seed: args.seed,
        out,
        workers: args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        cache_features: args.cache_features,
        cache_mb: args.cache_mb,
        strict: args.strict,
        amp: args.amp,
    })
}

fn predict(args: PredictArgs) -> Result<()> {
    let device = tchlab::device::select(&args.device)?;
    let trained = TrainedModel::load(&args.checkpoint, device)?;
    let files = collect_images(&args.images)?;
    if files.is_empty() {
        bail!("no image files found in {:?}", args.images);
    }
    let top_k = args.top_k.unwrap_or(trained.classes.len());
    let predictions = predict_files(&trained, &files, top_k, device)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&predictions)?);
        return Ok(());
    }
    eprintln!("{}", tchlab::device::banner(device));
    for p in &predictions {
        match &p.error {
            Some(e) => println!("{}  ERROR {e}", p.path.display()),
            None => {
                let cells: Vec<String> = p.top.iter().map(|c| format!("{} {:.4}", c.class, c.probability)).collect();
                println!("{}  {}", p.path.display(), cells.join("  "));
            }
        }
    }
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let device = tchlab::device::select(&args.device)?;
    let trained = TrainedModel::load(&args.checkpoint, device)?;
    let evaluation = evaluate_split(&trained, &args.data, device)?;
    std::fs::create_dir_all(&args.out)?;
    plots::confusion_matrix(&evaluation.confusion, &trained.classes, &args.out.join("confusion_matrix.png"))?;
    let json = serde_json::to_string_pretty(&evaluation)?;
    tchlab::models::checkpoint_io::write_atomically(&args.out.join("evaluation.json"), json.as_bytes())?;
    if args.json {
        println!("{json}");
        return Ok(());
    }
    println!(
        "{}: {} images, accuracy {:.4}, loss {:.4}",
        args.data.display(),
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
    println!(
        "wrote {} and {}",
        args.out.join("confusion_matrix.png").display(),
        args.out.join("evaluation.json").display()
    );
    Ok(())
}
