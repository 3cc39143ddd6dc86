//! `finetune`: transfer learning on an image folder, and using the result
//! (`finetune predict`, `finetune eval`); many runs from a sweep file
//! (`finetune sweep`) and one table of them (`finetune report`); a data
//! set checked before training (`finetune audit`). Parses arguments, calls
//! the library, reports.

use anyhow::{bail, Result};
use clap::parser::ValueSource;
use clap::{Args, FromArgMatches, Parser, Subcommand};
use std::collections::BTreeSet;
use std::path::PathBuf;
use tchlab::cli::Banner;
use tchlab::data::image_folder::collect_images;
use tchlab::data::tta::Tta;
use tchlab::device::DeviceArg;
use tchlab::finetune::config::{FinetuneConfig, TrainOptions};
use tchlab::finetune::predict::{
    evaluate_multi_label, evaluate_split, predict_files, resolve_labels, resolve_split, Prediction, PredictionsCsv,
    TrainedModel,
};
use tchlab::finetune::run::{self, Start};
use tchlab::interrupt::Interrupt;
use tchlab::report::{plots, Reporter, Silent, Terminal};
use tchlab::run_dir::{BEST_MODEL_FILE, VAL_PREDICTIONS_FILE};
use tchlab::sweep::rank::PointRank;
use tchlab::sweep::report::Report;
use tchlab::sweep::runner::Plan;
use tchlab::sweep::{slurm, Sweep};
use tchlab::train::lr_range::RangeTest;

#[derive(Parser)]
#[command(
    name = "finetune",
    version,
    about = "Fine-tune a pretrained backbone (torchvision's ResNets, RegNetY, MobileNetV3, EfficientNets, ConvNeXt, ViT, Swin-T, or EfficientNet-Lite0; finetune --list-archs) on an image folder (DIR/train/<class>/*, DIR/val/<class>/*)",
    long_about = None,
    args_conflicts_with_subcommands = true,
    allow_negative_numbers = true,
    after_help = "Examples:\n  finetune --mode feature-extract --arch efficientnet-lite0\n  finetune --list-archs\n  finetune --mode full --arch resnet18 --epochs 25 --out runs/r18-full\n  finetune --config run.toml --lr 0.01\n  finetune --cache-features --folds 5 --fold 0 --out runs/fold0      (fold 0 of 5 validates)\n  finetune --resume runs/r18-full --epochs 30\n  finetune predict --checkpoint runs/r18-full photo.jpg\n  finetune eval --checkpoint runs/r18-full --data data/hymenoptera_data\n  finetune --labels photos.csv --label-delim ';' --out runs/tags   (multi-label)\n  finetune export --checkpoint runs/r18-full\n  finetune sweep examples/sweep.toml --jobs 2\n  finetune sweep examples/kfold.toml --jobs 2                      (5 folds × 2 rates)\n  finetune report runs/sweep\n  finetune audit data/hymenoptera_data"
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
    /// Write a trained model for other runtimes: an ONNX graph (opset 17, any batch size) and its preprocessing as JSON beside it.
    Export(ExportArgs),
    /// Many runs from a sweep file (finetune, mnist mlp|cnn or caption train): on this machine's GPUs or CPU, or as a Slurm array job.
    #[command(after_help = SWEEP_EXAMPLES)]
    Sweep(SweepArgs),
    /// One table of the runs under folders (mean ± std over seeds and folds), with paired tests between configurations scored on the same images: results.md, results.csv, results.png.
    Report(ReportArgs),
    /// The learning-rate range test on a recipe (fastai's lr_find): rates growing exponentially over a few hundred updates of the train phase, lr_find.png and lr_find.json in --out, the suggested rates printed; the model is left as it was.
    #[command(name = "lr-find", after_help = LR_FIND_EXAMPLES)]
    LrFind(Box<LrFindArgs>),
    /// What is wrong with a data set before training on it: images per class and split (imbalance flagged), the class weights of --class-weights auto, files that do not decode, exact duplicates (same bytes) and near duplicates (perceptual hash or backbone features) within and across splits, the cross-split ones listed as leakage; audit.json and audit.png in --out.
    #[command(after_help = AUDIT_EXAMPLES)]
    Audit(Box<AuditArgs>),
}

const AUDIT_EXAMPLES: &str = "Examples:
  finetune audit data/hymenoptera_data
  finetune audit data/my_photos --val-split 0.2 --seed 0      (only train/: the split training would hold out)
  finetune audit data/hymenoptera_data --phash-distance 12 --feature-similarity 0.85 --out runs/audit-loose
  finetune audit data/hymenoptera_data --no-features          (hashes only: no weights, seconds)";

#[derive(Args)]
struct AuditArgs {
    #[command(flatten)]
    options: tchlab::finetune::audit::AuditOptions,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    threads: tchlab::cli::ThreadsArg,
}

const LR_FIND_EXAMPLES: &str = "Examples:
  finetune lr-find --mode full --arch efficientnet-lite0 --out runs/lr-find-full
  finetune lr-find --mode feature-extract --cache-features --steps 200
  finetune lr-find --config run.toml --start-lr 1e-6 --end-lr 1

valley (fastai's default suggestion): halfway down the longest descent of the smoothed loss;
steep: where the loss falls fastest per decade of rate.";

#[derive(Args)]
struct LrFindArgs {
    #[command(flatten)]
    options: TrainOptions,
    /// Read the recipe from a TOML file, as finetune --config; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The rate of the first update.
    #[arg(long, default_value_t = 1e-7, value_name = "LR")]
    start_lr: f64,
    /// The rate the updates grow toward (reached after --steps).
    #[arg(long, default_value_t = 10.0, value_name = "LR")]
    end_lr: f64,
    /// Updates in the test (fastai's num_it); the train split is passed over as often as they need.
    #[arg(long, default_value_t = 100, value_name = "N")]
    steps: usize,
    /// Run every step even after the smoothed loss passed 4 × its lowest.
    #[arg(long)]
    no_stop_div: bool,
    #[command(flatten)]
    device: DeviceArg,
}

const SWEEP_EXAMPLES: &str = "Examples:
  finetune sweep examples/sweep.toml --list
  finetune sweep examples/sweep.toml --jobs 2                  (CPU: the cores are split between the runs)
  finetune sweep examples/sweep.toml --devices cuda:0,cuda:1 --jobs-per-device 2
  finetune sweep examples/sweep.toml --index 3
  finetune sweep examples/sweep.toml --slurm --partition gpu --gpus-per-task 1 --time 1:00:00 --jobs 8
  finetune sweep examples/sweep.toml --report
  finetune sweep examples/mnist-hidden.toml --jobs 2           (tool = \"mnist mlp\": the course's hidden-size sweep)";

#[derive(Args)]
struct SweepArgs {
    /// The sweep file: tool = "finetune" (or "mnist mlp", "mnist cnn", "caption train"), [base] options of every run, [grid] lists of values crossed into points (see examples/sweep.toml).
    file: PathBuf,
    /// Folder of the runs, one sub-folder per point named from its values [default: runs/<file name>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// List the points, their folders and whether each is done, partial or new; run nothing.
    #[arg(long, conflicts_with_all = ["index", "slurm", "report"])]
    list: bool,
    /// Run this point only [default under Slurm: $SLURM_ARRAY_TASK_ID].
    #[arg(long, value_name = "I")]
    index: Option<usize>,
    /// Runs at once [default: one per device; with --slurm, each array's tasks at once: all].
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Devices the runs share, comma-separated (cpu, cuda:0, …) [default: every GPU libtorch sees, else cpu].
    #[arg(long, value_name = "LIST")]
    devices: Option<String>,
    /// Runs at once on one device (small runs leave a GPU mostly idle) [default: --jobs spread over the devices].
    #[arg(long, value_name = "K")]
    jobs_per_device: Option<usize>,
    /// Write DIR/sweep.sbatch, a Slurm array job over the points not done (DIR/sweep-nprocN.sbatch for points of nproc = N: N srun tasks each, one per rank), and print the commands that submit them.
    #[arg(long, conflicts_with_all = ["index", "report"])]
    slurm: bool,
    #[command(flatten)]
    job: SlurmArgs,
    /// Write the report of the sweep's runs (results.md, results.csv, results.png in DIR); run nothing.
    #[arg(long, conflicts_with = "index")]
    report: bool,
}

#[derive(Args)]
struct SlurmArgs {
    /// Slurm partition.
    #[arg(long, requires = "slurm", value_name = "P")]
    partition: Option<String>,
    /// GPUs per array task (one point each); per rank for points of nproc = N (--gpus-per-node N×G).
    #[arg(long, requires = "slurm", value_name = "G")]
    gpus_per_task: Option<u32>,
    /// CPU cores per array task (its run's threads and loader workers); per rank for points of nproc > 1.
    #[arg(long, requires = "slurm", value_name = "C")]
    cpus_per_task: Option<u32>,
    /// Time limit per task, as sbatch takes it (1:00:00).
    #[arg(long, requires = "slurm", value_name = "T")]
    time: Option<String>,
    /// Memory per task, as sbatch takes it (16G); N times as much (--mem is per node) for points of nproc = N.
    #[arg(long, requires = "slurm", value_name = "M")]
    mem: Option<String>,
    /// Slurm account to charge.
    #[arg(long, requires = "slurm", value_name = "A")]
    account: Option<String>,
    /// Any other #SBATCH option, as written (--qos=short); may be repeated.
    #[arg(long, requires = "slurm", value_name = "OPTION", allow_hyphen_values = true)]
    sbatch_option: Vec<String>,
}

#[derive(Args)]
struct ReportArgs {
    /// Folders holding runs (searched a few levels deep): a sweep's --out, or run folders of finetune, mnist or caption train (one tool's runs are tabulated, the first of these that has any).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Where to write results.md, results.csv and results.png [default: the first folder].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    options: TrainOptions,
    /// Read options from a TOML file (keys as the options: `lr = 0.01`, `batch-size = 8`); flags override it [default: none: the flags and their defaults].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Continue the run saved in this output folder with its own recipe (--epochs may extend it; --data, --labels (the same file where it now lives), --workers, --threads, --cache-mb may change) [default: a new run].
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Print every --arch: its parameters (counted on its ImageNet model, built with --threads), features, default weights file and whether that file is in --models-dir; then exit.
    #[arg(long, conflicts_with_all = ["resume", "config"])]
    list_archs: bool,
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
    /// Classes to show per image [default: all; a multi-label model's: all above its threshold].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    top_k: Option<u64>,
    /// A multi-label model shows every label whose probability is above this [default: the model's, from its training run's --threshold].
    #[arg(long, value_name = "T")]
    threshold: Option<f64>,
    /// Average each image's probabilities over these views (torchvision's crops of the resized image).
    #[arg(long, value_enum, default_value = "none")]
    tta: Tta,
    /// Also write one row per image to FILE as it is predicted (path, prediction, each class's probability, error).
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Also draw each image with the Grad-CAM map of its top class into DIR (ResNets and EfficientNets).
    #[arg(long, value_name = "DIR")]
    cam: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Exit 0 even when some files cannot be read as images.
    #[arg(long)]
    allow_errors: bool,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    threads: tchlab::cli::ThreadsArg,
}

#[derive(Args)]
struct ExportArgs {
    /// A model written by finetune: its best_model.safetensors, or the run folder.
    #[arg(long, value_name = "FILE|DIR")]
    checkpoint: PathBuf,
    /// The file format.
    #[arg(long, value_enum, default_value = "onnx")]
    format: tchlab::finetune::export::Format,
    /// The file to write (its preprocessing goes to FILE.json) [default: model.onnx beside the model].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// A model written by finetune: its best_model.safetensors, or the run folder.
    #[arg(long, value_name = "FILE|DIR")]
    checkpoint: PathBuf,
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "labels",
        help = "A split folder (DIR/<class>/<images>), or a dataset root (its val/ split is evaluated); with --labels, where the file's relative paths start [default with --labels: the labels file's folder]"
    )]
    data: Option<PathBuf>,
    /// Evaluate the images of a .csv or .tsv labels file (header path,label[,split]): its val rows when it has any, else every row; a multi-label model needs one [default: none: --data's class folders].
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// The separator of a multi-label labels file's labels [default: the one the model was trained with].
    #[arg(long, value_name = "C", requires = "labels")]
    label_delim: Option<char>,
    /// A multi-label model predicts a label above this probability (F1, exact match) [default: the model's, from its training run's --threshold].
    #[arg(long, value_name = "T")]
    threshold: Option<f64>,
    #[arg(
        long,
        value_name = "DIR",
        help = "Where to write confusion_matrix.png, evaluation.json and predictions.csv (each image's outcome; a multi-label model: evaluation.json and scores.csv) [default: eval-<split> beside the model]"
    )]
    out: Option<PathBuf>,
    /// Average each image's probabilities over these views (torchvision's crops of the resized image).
    #[arg(long, value_enum, default_value = "none")]
    tta: Tta,
    /// List the K images of highest loss in evaluation.json and draw them with the Grad-CAM map of the predicted class in top_losses.png (ResNets and EfficientNets).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..=100))]
    top_losses: Option<u64>,
    /// Print the evaluation as JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    threads: tchlab::cli::ThreadsArg,
}

/// `finetune eval`'s outcome on each image, as a run's val_predictions.csv.
const EVAL_PREDICTIONS_FILE: &str = "predictions.csv";

fn main() {
    tchlab::cli::run_main(|| {
        let matches = tchlab::cli::matches::<Cli>();
        let cli = Cli::from_arg_matches(&matches)?;
        match cli.command {
            Some(Command::Predict(args)) => predict(args),
            Some(Command::Eval(args)) => eval(args),
            Some(Command::Export(args)) => export(args),
            Some(Command::Sweep(args)) => sweep(args),
            Some(Command::Report(args)) => report(&args.dirs, args.out.as_ref().unwrap_or(&args.dirs[0])),
            Some(Command::Audit(args)) => audit(*args),
            Some(Command::LrFind(args)) => {
                let sub = matches.subcommand_matches("lr-find").expect("the lr-find subcommand");
                lr_find(*args, given_options(sub))
            }
            None if cli.train.list_archs => {
                tchlab::cli::apply_threads(cli.train.options.threads);
                tchlab::say!("{}", tchlab::models::arch_table(&cli.train.options.models_dir));
                Ok(())
            }
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

fn lr_find(args: LrFindArgs, given: BTreeSet<String>) -> Result<()> {
    let test = RangeTest {
        start_lr: args.start_lr,
        end_lr: args.end_lr,
        steps: args.steps,
        stop_on_divergence: !args.no_stop_div,
    };
    test.check()?;
    if args.options.nproc.is_some() || tchlab::dist::Launch::from_env()?.is_some() {
        bail!("lr-find runs in one process: drop --nproc, and run it outside torchrun or srun");
    }
    let device = args.device.select()?;
    let options = match &args.config {
        Some(file) => args.options.with_file(file, &given)?,
        None => args.options,
    };
    let config = FinetuneConfig::new_reporting(&options, &Terminal)?;
    tchlab::accel::init_threads(config.threads, config.workers, &Terminal);
    Banner { tool: "finetune lr-find", device, seed: Some(config.seed), out: Some(&config.out) }.print();
    let interrupt = Interrupt::new();
    tchlab::cli::stop_on_ctrl_c(&interrupt);
    let found = tchlab::finetune::lr_find::lr_find(&config, test, device, &interrupt, &Terminal)?;
    let [json, png] = found.write(&config.out)?;
    let steps = found.curve.lrs.len();
    let last = found.curve.lrs.last().copied().unwrap_or(test.start_lr);
    tchlab::say!("{steps} updates, rates {:.2e} to {last:.2e}", test.start_lr);
    if let Some(why) = &found.curve.stopped {
        tchlab::say!("stopped early: {why}");
    }
    match found.suggestions {
        Some(s) => {
            tchlab::say!("suggested rates: valley {:.2e} (fastai's default), steep {:.2e}", s.valley.lr, s.steep.lr)
        }
        None => tchlab::say!(
            "no suggestion: too few points to judge ({steps} updates; the first tenth and the last 5 are left out){}",
            if found.curve.stopped.is_some() { "; try a smaller --end-lr" } else { "; try more --steps" }
        ),
    }
    tchlab::say!("wrote {} and {}", png.display(), json.display());
    Ok(())
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
    let data_parallel = options.data_parallel();
    // Before the group is joined, rank 0 (or a lone process) speaks for the run.
    let early: &dyn Reporter = if data_parallel.speaks_for_the_run()? { &Terminal } else { &Silent };
    let (config, start) = match &args.resume {
        Some(dir) => {
            (FinetuneConfig::resume(&tchlab::run_dir::saved_config(dir)?, dir, &options, &given)?, Start::Resume)
        }
        None => (FinetuneConfig::new_reporting(&options, early)?, Start::Fresh),
    };
    if let Some(n) = data_parallel.ranks_to_start() {
        return data_parallel.start_local_ranks(n, options.threads, device);
    }
    tchlab::accel::init_threads(config.threads, config.workers, early);
    let device = data_parallel.rank_device(device)?;
    let ranks = data_parallel.join(device)?;
    // Rank 0 speaks for the run; the others report only their errors.
    let reporter: &dyn Reporter = if ranks.leads() { &Terminal } else { &Silent };
    if ranks.leads() {
        Banner { tool: "finetune", device, seed: Some(config.seed), out: Some(&config.out) }.print();
        tchlab::say!("{}", config.describe());
        if ranks.world_size() > 1 {
            let global = config.batch_size * ranks.world_size() * config.accumulate;
            tchlab::say!("data-parallel: {} ranks, {global} images per step", ranks.world_size());
        }
    }
    let interrupt = Interrupt::new();
    tchlab::cli::stop_on_ctrl_c(&interrupt);
    let summary = run::run(&config, (device, &ranks), start, &interrupt, reporter)?;
    let leads = ranks.leads();
    ranks.finish()?;
    if !leads {
        return Ok(());
    }
    let per_image = match config.multi_label() {
        true => "multilabel_metrics.csv, val_scores.csv".to_owned(),
        false => format!("val_predictions.png, {VAL_PREDICTIONS_FILE}"),
    };
    tchlab::say!(
        "results in {}: metrics.csv, summary.json, {BEST_MODEL_FILE}, loss.png, accuracy.png, {per_image}, TensorBoard events (tensorboard --logdir {})",
        config.out.display(),
        config.out.display()
    );
    if !summary.bad_files.is_empty() {
        tchlab::say!("{} file(s) were skipped (listed in summary.json)", summary.bad_files.len());
    }
    if !summary.bad_rows.is_empty() {
        tchlab::say!("{} labels file row(s) were skipped (listed in summary.json)", summary.bad_rows.len());
    }
    Ok(())
}

fn predict(args: PredictArgs) -> Result<()> {
    args.threads.apply();
    let device = args.device.select()?;
    Banner { tool: "finetune predict", device, seed: None, out: None }.print();
    let mut trained = TrainedModel::load(&args.checkpoint, device)?;
    if let Some(threshold) = args.threshold {
        trained.set_threshold(threshold)?;
    }
    let (files, skipped) = collect_images(&args.images)?;
    if skipped > 0 {
        tchlab::say_err!("skipped {skipped} file(s) in the folders given that are not images by extension");
    }
    if files.is_empty() {
        bail!("no image files found in {:?}", args.images);
    }
    trained.tta = args.tta;
    if args.cam.is_some() {
        tchlab::finetune::cam::check_explainable(&trained, "--cam")?;
    }
    let top_k = args.top_k.map_or(trained.classes.len(), |k| k as usize);
    let mut csv = args.csv.as_deref().map(|path| PredictionsCsv::create(path, &trained)).transpose()?;
    let mut json = Vec::new();
    let failed = predict_files(&trained, &files, top_k, device, &Terminal, &mut |prediction| {
        if let Some(csv) = &mut csv {
            csv.write(prediction)?;
        }
        match args.json {
            true => json.push(serde_json::to_value(prediction)?),
            false => tchlab::say!("{}", prediction_line(prediction, trained.threshold)),
        }
        Ok(())
    })?;
    if args.json {
        tchlab::say!("{}", serde_json::to_string_pretty(&json)?);
    }
    if let Some(path) = &args.csv {
        tchlab::say_err!("wrote {}", path.display());
    }
    if let Some(dir) = &args.cam {
        let written = tchlab::finetune::cam::write_class_maps(&trained, &files, dir, device)?;
        tchlab::say_err!("wrote {written} class map(s) to {}", dir.display());
    }
    if failed > 0 && !args.allow_errors {
        bail!("{failed} of {} file(s) could not be read as images (--allow-errors to exit 0 anyway)", files.len());
    }
    Ok(())
}

/// One file's row of `predict`'s table.
fn prediction_line(prediction: &Prediction, threshold: Option<f64>) -> String {
    let path = prediction.path.display();
    match &prediction.error {
        Some(e) => format!("{path}  ERROR {e}"),
        None if prediction.top.is_empty() => format!("{path}  (no label above {})", threshold.unwrap_or_default()),
        None => {
            let cells: Vec<String> =
                prediction.top.iter().map(|c| format!("{} {:.4}", c.class, c.probability)).collect();
            format!("{path}  {}", cells.join("  "))
        }
    }
}

fn audit(args: AuditArgs) -> Result<()> {
    args.threads.apply();
    let device = args.device.select()?;
    Banner { tool: "finetune audit", device, seed: None, out: args.options.out.as_deref() }.print();
    let written = tchlab::finetune::audit::audit(&args.options, device, &Terminal)?;
    tchlab::say!("wrote {} and {}", written.json.display(), written.figure.display());
    Ok(())
}

fn export(args: ExportArgs) -> Result<()> {
    let trained = TrainedModel::load(&args.checkpoint, tch::Device::Cpu)?;
    let beside = trained.path.parent().unwrap_or(std::path::Path::new(".")).join("model.onnx");
    let out = args.out.unwrap_or(beside);
    let tchlab::finetune::export::Format::Onnx = args.format;
    let exported = tchlab::finetune::export::export(&trained, &out)?;
    tchlab::say!(
        "wrote {} ({} nodes, opset {}, input {} [batch, 3, {size}, {size}], output {} [batch, {}]) and its preprocessing in {}",
        exported.model.display(),
        exported.nodes,
        tchlab::persist::onnx::OPSET,
        tchlab::models::onnx::INPUT,
        tchlab::models::onnx::OUTPUT,
        trained.classes.len(),
        exported.card.display(),
        size = trained.card.image_size
    );
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    args.threads.apply();
    let device = args.device.select()?;
    let mut trained = TrainedModel::load(&args.checkpoint, device)?;
    if let Some(threshold) = args.threshold {
        trained.set_threshold(threshold)?;
    }
    trained.tta = args.tta;
    if args.top_losses.is_some() {
        if trained.threshold.is_some() {
            bail!(
                "--top-losses: {} is a multi-label model; its per-image scores are in scores.csv",
                trained.path.display()
            );
        }
        tchlab::finetune::cam::check_explainable(&trained, "--top-losses")?;
    }
    let (folder, note, bad_rows) = match (&args.labels, &args.data) {
        (Some(labels), data) => {
            let (folder, bad_rows, note) = resolve_labels(labels, data.as_deref(), &trained, args.label_delim)?;
            (folder, note, bad_rows.report())
        }
        (None, Some(_)) if trained.threshold.is_some() => bail!(
            "{} is a multi-label model: evaluate it on a labels file (--labels FILE.csv); class folders hold one label per image",
            trained.path.display()
        ),
        (None, Some(data)) => {
            let (folder, note) = resolve_split(data, &trained.classes)?;
            (folder, note, Vec::new())
        }
        (None, None) => bail!("give --data DIR or --labels FILE.csv: the images to evaluate"),
    };
    if let Some(note) = note {
        tchlab::say_err!("note: {note}");
    }
    for line in &bad_rows {
        tchlab::say_err!("{line}");
    }
    let out = args.out.unwrap_or_else(|| {
        let split_name = match &args.labels {
            Some(labels) => labels.file_stem().map_or("labels".into(), |n| n.to_string_lossy().into_owned()),
            None => folder.root.file_name().map_or("split".into(), |n| n.to_string_lossy().into_owned()),
        };
        trained.path.parent().unwrap_or(std::path::Path::new(".")).join(format!("eval-{split_name}"))
    });
    Banner { tool: "finetune eval", device, seed: None, out: Some(&out) }.print();
    let create_out = || {
        std::fs::create_dir_all(&out)
            .map_err(|e| anyhow::anyhow!("--out {}: cannot create the folder ({e})", out.display()))
    };
    if trained.threshold.is_some() {
        let evaluation = evaluate_multi_label(&trained, &folder, device, &Terminal)?;
        create_out()?;
        evaluation.write_scores(&out.join("scores.csv"))?;
        return report_multi_label_eval(&evaluation, &out, args.json);
    }
    let mut evaluation = evaluate_split(&trained, &folder, device, &Terminal)?;
    create_out()?;
    if let Some(k) = args.top_losses {
        evaluation.find_top_losses(k as usize, &trained.classes);
        let figure = out.join("top_losses.png");
        tchlab::finetune::cam::top_losses_figure(&trained, &evaluation.top_losses, device, &figure)?;
    }
    plots::confusion_matrix(&evaluation.confusion, &trained.classes, &out.join("confusion_matrix.png"))?;
    let json = serde_json::to_string_pretty(&evaluation)?;
    tchlab::persist::write_atomically(&out.join("evaluation.json"), json.as_bytes())?;
    let outcomes_csv = tchlab::finetune::outcomes::csv(&evaluation.outcomes);
    tchlab::persist::write_atomically(&out.join(EVAL_PREDICTIONS_FILE), outcomes_csv.as_bytes())?;
    if args.json {
        tchlab::say!("{json}");
        return Ok(());
    }
    tchlab::say!(
        "{}: {} images, accuracy {:.4}, macro-F1 {:.4}, balanced accuracy {:.4}, loss {:.4}",
        folder.root.display(),
        evaluation.images,
        evaluation.accuracy,
        evaluation.macro_f1,
        evaluation.balanced_accuracy,
        evaluation.loss
    );
    tchlab::say!("{:<16} {:>9} {:>9} {:>9} {:>8}", "class", "precision", "recall", "f1", "support");
    for c in &evaluation.per_class {
        tchlab::say!("{:<16} {:>9.4} {:>9.4} {:>9.4} {:>8}", c.class, c.precision, c.recall, c.f1, c.support);
    }
    tchlab::say!("confusion matrix (rows: true, columns: predicted):");
    for (class, row) in trained.classes.iter().zip(&evaluation.confusion) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:>6}")).collect();
        tchlab::say!("{:<16}{}", class, cells.join(""));
    }
    tchlab::say!(
        "wrote {}, {} and {}",
        out.join("confusion_matrix.png").display(),
        out.join("evaluation.json").display(),
        out.join(EVAL_PREDICTIONS_FILE).display()
    );
    if !evaluation.top_losses.is_empty() {
        tchlab::say!(
            "the {} images of highest loss: {}",
            evaluation.top_losses.len(),
            out.join("top_losses.png").display()
        );
    }
    Ok(())
}

/// A multi-label evaluation: evaluation.json in `out`, and its numbers
/// printed (as JSON with `json`).
fn report_multi_label_eval(
    evaluation: &tchlab::finetune::predict::MultiLabelEvaluation,
    out: &std::path::Path,
    json: bool,
) -> Result<()> {
    let text = serde_json::to_string_pretty(evaluation)?;
    tchlab::persist::write_atomically(&out.join("evaluation.json"), text.as_bytes())?;
    if json {
        tchlab::say!("{text}");
        return Ok(());
    }
    let s = &evaluation.scores;
    tchlab::say!(
        "{}: {} images, mAP {:.4}, F1 macro {:.4} micro {:.4}, exact match {:.4}, loss {:.4} (threshold {})",
        evaluation.split.display(),
        evaluation.images,
        s.map,
        s.macro_f1,
        s.micro_f1,
        s.exact_match,
        s.loss,
        s.threshold
    );
    tchlab::say!("{:<16} {:>9} {:>9} {:>9} {:>9} {:>8}", "class", "AP", "precision", "recall", "F1", "support");
    for c in &s.per_class {
        tchlab::say!(
            "{:<16} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>8}",
            c.class,
            c.average_precision,
            c.precision,
            c.recall,
            c.f1,
            c.support
        );
    }
    tchlab::say!("wrote {} and {}", out.join("evaluation.json").display(), out.join("scores.csv").display());
    Ok(())
}

fn sweep(args: SweepArgs) -> Result<()> {
    let sweep = Sweep::load(&args.file, args.out.as_deref())?;
    if args.list {
        tchlab::say!("{}", sweep.listing()?);
        return Ok(());
    }
    if args.report {
        return write_report(&Report::of_sweep(&sweep)?, &sweep.out);
    }
    if args.slurm {
        return write_sbatch(&sweep, &args);
    }
    let index = match args.index {
        Some(index) => Some(index),
        None => slurm::task_index(std::env::var(slurm::TASK_ID_VAR).ok().as_deref())?,
    };
    let plan = Plan::new(args.devices.as_deref(), args.jobs, args.jobs_per_device)?;
    if let Some(rank) = PointRank::of_this_process(&sweep, index)? {
        return rank.run(&sweep, &plan, &tchlab::cli::count_ctrl_c(), &Terminal);
    }
    let outcome = match sweep.to_run(index, &Terminal)? {
        Some(indices) => sweep.run(&indices, &plan, &tchlab::cli::count_ctrl_c(), &Terminal).map(|_| ()),
        None => Ok(()),
    };
    if index.is_none() {
        write_report(&Report::of_sweep(&sweep)?, &sweep.out)?;
    }
    outcome
}

fn write_sbatch(sweep: &Sweep, args: &SweepArgs) -> Result<()> {
    let Some(indices) = sweep.to_run(None, &Terminal)? else { return Ok(()) };
    let job = &args.job;
    let request = slurm::JobRequest {
        partition: job.partition.clone(),
        gpus_per_task: job.gpus_per_task,
        cpus_per_task: job.cpus_per_task,
        time: job.time.clone(),
        mem: job.mem.clone(),
        account: job.account.clone(),
        extra: job.sbatch_option.clone(),
        at_once: args.jobs.unwrap_or(indices.len()),
    };
    let written = slurm::write(sweep, &request, &indices)?;
    for script in &written {
        let ranks = if script.nproc == 1 { String::new() } else { format!(" of {} ranks each (srun)", script.nproc) };
        tchlab::say!("wrote {}: {} array task(s){ranks}", script.path.display(), script.tasks);
    }
    let submit: Vec<String> = written.iter().map(|script| format!("  sbatch {}", script.path.display())).collect();
    tchlab::say!("submit {} with:\n{}", if written.len() == 1 { "it" } else { "them" }, submit.join("\n"));
    Ok(())
}

fn report(dirs: &[PathBuf], out: &std::path::Path) -> Result<()> {
    write_report(&Report::collect(dirs)?, out)
}

fn write_report(report: &Report, out: &std::path::Path) -> Result<()> {
    let written = report.write(out)?;
    Terminal.text(&report.markdown());
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    tchlab::say!("\nwrote {}", names.join(", "));
    Ok(())
}
