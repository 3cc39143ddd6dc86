//! `mnist`: the MLP hidden-size sweep and the CNN on MNIST, trained with the
//! hand-derived backward passes or autograd. Parses and checks arguments, then
//! calls the library.

use anyhow::Result;
use clap::{Args, FromArgMatches, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tchlab::cli::parse::{at_least_one, decay_factor, hidden_size, learning_rate, seed};
use tchlab::cli::RunArgs;
use tchlab::grad::GradMode;
use tchlab::interrupt::Interrupt;
use tchlab::mnist::{self, RunSpec};
use tchlab::run_dir::Start;
use tchlab::train::minibatch::Recipe;

#[derive(Parser)]
#[command(
    name = "mnist",
    version,
    about = "MNIST with hand-derived layers: a two-layer MLP hidden-size sweep, and a small CNN",
    after_help = "Examples:\n  mnist mlp                               # the full sweep, best size retrained and tested\n  mnist mlp --hidden 800 --grad autograd\n  mnist cnn --epochs 5\n  mnist mlp --hidden 10,100 --epochs 1 --train-limit 2000   # a quick check\n  mnist mlp --resume runs/mnist-mlp       # continue a stopped run\n\n`mnist mlp --help` and `mnist cnn --help` list every option with its default."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// affine-ReLU-affine-softmax; sweeps hidden sizes, picks the best by val accuracy, retrains it on train+val, tests it.
    Mlp(MlpArgs),
    /// conv(32 7x7, pad 3)-ReLU-maxpool 2x2-affine-ReLU-affine-softmax; trains on train, tests the last epoch's model.
    Cnn(CnnArgs),
}

#[derive(Args, Serialize, Deserialize)]
struct MlpArgs {
    /// Hidden sizes to sweep, comma separated (each at least 1); the best by val accuracy is retrained on train+val and tested.
    #[arg(long, value_name = "H,H,...", value_delimiter = ',', default_value = "10,50,100,250,500,800,1200,1600",
          value_parser = hidden_size, allow_hyphen_values = true)]
    hidden: Vec<i64>,
    /// Passes over the training images, for every size and for the retrain (at least 1).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = at_least_one, allow_negative_numbers = true)]
    epochs: usize,
    #[command(flatten)]
    #[serde(flatten)]
    common: Common,
}

#[derive(Args, Serialize, Deserialize)]
struct CnnArgs {
    /// Width of the hidden affine layer after the pooling (at least 1).
    #[arg(long, value_name = "H", default_value_t = 100, value_parser = hidden_size, allow_negative_numbers = true)]
    hidden: i64,
    /// Passes over the training images (at least 1).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = at_least_one, allow_negative_numbers = true)]
    epochs: usize,
    #[command(flatten)]
    #[serde(flatten)]
    common: Common,
}

#[derive(Args, Serialize, Deserialize)]
struct Common {
    /// Folder with the four IDX files (.gz or not).
    #[arg(long, value_name = "DIR", default_value = "data/mnist")]
    data: PathBuf,
    /// manual: the layers' explicit backward passes; autograd: libtorch's.
    #[arg(long, value_enum, default_value = "manual")]
    grad: GradMode,
    /// Images per Adam step (at least 1).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = at_least_one, allow_negative_numbers = true)]
    batch_size: usize,
    /// Adam learning rate (finite, greater than 0).
    #[arg(long, value_name = "LR", default_value_t = 1e-3, value_parser = learning_rate, allow_negative_numbers = true)]
    lr: f64,
    /// Learning-rate multiplier applied after every epoch, in (0, 1]; 1 keeps it constant.
    #[arg(long, value_name = "F", default_value_t = 0.9, value_parser = decay_factor, allow_negative_numbers = true)]
    lr_decay: f64,
    /// Seeds the train/val split, the init and the batch order (0 or more).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = seed, allow_negative_numbers = true)]
    seed: u64,
    #[command(flatten)]
    #[serde(flatten)]
    device: tchlab::device::DeviceArg,
    /// Train on only the first N of the 50,000 training images (quick checks); all: every one.
    ///
    /// With N, `mlp` retrains the best size on those N images plus the first N/5 (rounded up) validation images, the
    /// full run's 5:1 proportion.
    #[arg(long, value_name = "N", default_value = "all", value_parser = train_limit, allow_negative_numbers = true)]
    train_limit: TrainLimit,
    /// Folder for the results, the run state and TensorBoard events [default: runs/mnist-<mlp|cnn>, or the next free runs/mnist-<mlp|cnn>-N].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    #[serde(skip)]
    run: RunArgs,
}

/// `--train-limit`: a count, or `all` (no limit).
#[derive(Clone, Copy, Serialize, Deserialize)]
struct TrainLimit(Option<usize>);

fn train_limit(s: &str) -> Result<TrainLimit, String> {
    if s.trim() == "all" {
        return Ok(TrainLimit(None));
    }
    at_least_one(s).map(|n| TrainLimit(Some(n))).map_err(|e| format!("{e}, or all"))
}

/// The run's spec from its options (`config`: them as saved).
fn run_spec(common: &Common, epochs: usize, start: Start, tool: &str, config: serde_json::Value) -> Result<RunSpec> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tchlab::accel::init_threads(common.run.threads, cores);
    let device = common.device.select()?;
    println!("{}", tchlab::device::banner(device));
    let out = tchlab::run_dir::choose(common.out.as_deref(), &format!("runs/{tool}"), common.run.overwrite)?;
    tchlab::run_dir::check(&out, start, common.run.overwrite)?;
    let mut config = config;
    config["out"] = serde_json::json!(out);
    Ok(RunSpec {
        recipe: Recipe {
            epochs,
            batch_size: common.batch_size,
            lr: common.lr,
            lr_decay: common.lr_decay,
            seed: common.seed,
            grad: common.grad,
        },
        device,
        train_limit: common.train_limit.0,
        out,
        start,
        overwrite: common.run.overwrite,
        config,
    })
}

/// The options of a fresh run, or with `--resume DIR` the run's own.
fn resolve<T: Serialize + serde::de::DeserializeOwned>(
    args: T,
    common: fn(&mut T) -> &mut Common,
    tool: &str,
    given: &std::collections::BTreeSet<String>,
) -> Result<(T, Start)> {
    let mut args = args;
    let Some(dir) = common(&mut args).run.resume.clone() else { return Ok((args, Start::Fresh)) };
    let run = common(&mut args).run.clone();
    let mut saved: T = tchlab::cli::resumed_options(&dir, tool, given, tchlab::cli::RESUMABLE)?;
    let saved_common = common(&mut saved);
    saved_common.out = Some(dir.clone());
    saved_common.run = run;
    Ok((saved, Start::Resume))
}

fn data(common: &Common) -> Result<tchlab::data::mnist::Mnist> {
    mnist::load(&common.data, common.seed, common.train_limit.0)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn main() {
    tchlab::cli::run_main(|| {
        let matches = tchlab::cli::matches::<Cli>();
        let cli = Cli::from_arg_matches(&matches)?;
        let given = tchlab::cli::given_to_subcommand::<Cli>(&matches);
        let interrupt = Interrupt::new();
        tchlab::cli::stop_on_ctrl_c(&interrupt);
        match cli.command {
            Command::Mlp(args) => {
                let (mut args, start) = resolve(args, |a| &mut a.common, "mnist mlp", &given)?;
                args.common.data = absolute(&args.common.data);
                let spec = run_spec(&args.common, args.epochs, start, "mnist-mlp", serde_json::to_value(&args)?)?;
                let data = data(&args.common)?;
                mnist::mlp_sweep(&data, &args.hidden, &spec, &interrupt).map(|_| ())
            }
            Command::Cnn(args) => {
                let (mut args, start) = resolve(args, |a| &mut a.common, "mnist cnn", &given)?;
                args.common.data = absolute(&args.common.data);
                let spec = run_spec(&args.common, args.epochs, start, "mnist-cnn", serde_json::to_value(&args)?)?;
                let data = data(&args.common)?;
                mnist::cnn(&data, args.hidden, &spec, &interrupt).map(|_| ())
            }
        }
    });
}
