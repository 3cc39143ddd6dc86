//! `mnist`: the MLP hidden-size sweep and the CNN on MNIST, trained with the
//! hand-derived backward passes or autograd. Parses and checks arguments, then
//! calls the library.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use tchlab::mnist_experiments;
use tchlab::train::solver::{GradMode, SolverConfig};

#[derive(Parser)]
#[command(
    name = "mnist",
    version,
    about = "MNIST with hand-derived layers: a two-layer MLP hidden-size sweep, and a small CNN",
    after_help = "Examples:\n  mnist mlp                               # the full sweep, best size retrained and tested\n  mnist mlp --hidden 800 --grad autograd\n  mnist cnn --epochs 5\n  mnist mlp --hidden 10,100 --epochs 1 --train-limit 2000   # a quick check\n\n`mnist mlp --help` and `mnist cnn --help` list every option with its default."
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

use tchlab::cli::parse::{at_least_one, decay_factor, hidden_size, learning_rate, seed};

#[derive(Args)]
struct MlpArgs {
    /// Hidden sizes to sweep, comma separated (each at least 1); the best by val accuracy is retrained on train+val and tested.
    #[arg(long, value_name = "H,H,...", value_delimiter = ',', default_value = "10,50,100,250,500,800,1200,1600",
          value_parser = hidden_size, allow_hyphen_values = true)]
    hidden: Vec<i64>,
    /// Passes over the training images, for every size and for the retrain (at least 1).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = at_least_one, allow_negative_numbers = true)]
    epochs: usize,
    /// Folder for results.md, results.csv, summary.json, loss_history.png and accuracy_vs_hidden.png (created if missing).
    #[arg(long, value_name = "DIR", default_value = "runs/mnist-mlp")]
    out: PathBuf,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct CnnArgs {
    /// Width of the hidden affine layer after the pooling (at least 1).
    #[arg(long, value_name = "H", default_value_t = 100, value_parser = hidden_size, allow_negative_numbers = true)]
    hidden: i64,
    /// Passes over the training images (at least 1).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = at_least_one, allow_negative_numbers = true)]
    epochs: usize,
    /// Folder for results.md, results.csv, summary.json and loss_history.png (created if missing).
    #[arg(long, value_name = "DIR", default_value = "runs/mnist-cnn")]
    out: PathBuf,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
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
    device: tchlab::device::DeviceArg,
    /// Train on only the first N of the 50,000 training images (quick checks); all: every one.
    ///
    /// With N, `mlp` retrains the best size on those N images plus the first N/5 (rounded up) validation images, the
    /// full run's 5:1 proportion.
    #[arg(long, value_name = "N", default_value = "all", value_parser = train_limit, allow_negative_numbers = true)]
    train_limit: TrainLimit,
}

/// `--train-limit`: a count, or `all` (no limit).
#[derive(Clone, Copy)]
struct TrainLimit(Option<usize>);

fn train_limit(s: &str) -> Result<TrainLimit, String> {
    if s.trim() == "all" {
        return Ok(TrainLimit(None));
    }
    at_least_one(s).map(|n| TrainLimit(Some(n))).map_err(|e| format!("{e}, or all"))
}

fn solver_config(common: &Common, epochs: usize) -> Result<SolverConfig> {
    let device = common.device.select()?;
    println!("{}", tchlab::device::banner(device));
    Ok(SolverConfig {
        epochs,
        batch_size: common.batch_size,
        lr: common.lr,
        lr_decay: common.lr_decay,
        seed: common.seed,
        grad: common.grad,
        device,
    })
}

fn main() {
    tchlab::cli::run_main(|| match tchlab::cli::parse_args::<Cli>().command {
        Command::Mlp(args) => {
            let config = solver_config(&args.common, args.epochs)?;
            let data = mnist_experiments::load(&args.common.data, args.common.seed, args.common.train_limit.0)?;
            mnist_experiments::mlp_sweep(&data, &args.hidden, &config, args.common.train_limit.0, &args.out).map(|_| ())
        }
        Command::Cnn(args) => {
            let config = solver_config(&args.common, args.epochs)?;
            let data = mnist_experiments::load(&args.common.data, args.common.seed, args.common.train_limit.0)?;
            mnist_experiments::cnn(&data, args.hidden, &config, &args.out).map(|_| ())
        }
    });
}
