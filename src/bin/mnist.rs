//! `mnist`: the MLP hidden-size sweep and the CNN on MNIST, trained with the
//! hand-derived backward passes or autograd. Parses arguments, then calls the library.

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use tchlab::data::mnist::Mnist;
use tchlab::mnist_experiments;
use tchlab::train::solver::{GradMode, SolverConfig};

#[derive(Parser)]
#[command(
    name = "mnist",
    version,
    about = "MNIST with hand-derived layers: a two-layer MLP hidden-size sweep, and a small CNN",
    after_help = "Examples:\n  mnist mlp                               # the full sweep, best size retrained and tested\n  mnist mlp --hidden 800 --grad autograd\n  mnist cnn --epochs 5"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// affine-ReLU-affine-softmax; sweeps hidden sizes, picks the best by val accuracy, tests it.
    Mlp(MlpArgs),
    /// conv(32 7x7, pad 3)-ReLU-maxpool 2x2-affine-ReLU-affine-softmax.
    Cnn(CnnArgs),
}

#[derive(Args)]
struct Common {
    /// Folder with the four IDX files (.gz or not).
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// manual: the layers' explicit backward passes; autograd: libtorch's.
    #[arg(long, value_enum, default_value = "manual")]
    grad: GradMode,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Learning-rate multiplier applied after every epoch.
    #[arg(long, default_value_t = 0.9)]
    lr_decay: f64,
    /// Seeds the train/val split, the init and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long)]
    out: Option<PathBuf>,
    /// Train on only the first N of the 50,000 training images (quick checks).
    #[arg(long, value_name = "N")]
    train_limit: Option<usize>,
}

#[derive(Args)]
struct MlpArgs {
    /// Hidden sizes to sweep (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "10,50,100,250,500,800,1200,1600")]
    hidden: Vec<i64>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct CnnArgs {
    #[arg(long, default_value_t = 100)]
    hidden: i64,
    #[command(flatten)]
    common: Common,
}

fn solver_config(common: &Common, default_epochs: usize) -> Result<SolverConfig> {
    let device = tchlab::device::select(&common.device)?;
    println!("{}", tchlab::device::banner(device));
    let epochs = common.epochs.unwrap_or(default_epochs);
    if epochs == 0 || common.batch_size == 0 {
        bail!("--epochs and --batch-size must be at least 1");
    }
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

/// The MNIST splits and the output folder (`default_out` unless `--out`).
fn data_and_out(common: &Common, default_out: &str) -> Result<(Mnist, PathBuf)> {
    let data = mnist_experiments::load(&common.data, common.seed, common.train_limit)?;
    Ok((data, common.out.clone().unwrap_or_else(|| PathBuf::from(default_out))))
}

fn main() {
    tchlab::cli::run_main(|| match Cli::parse().command {
        Command::Mlp(args) => {
            if args.hidden.iter().any(|&h| h < 1) {
                bail!("--hidden sizes must be positive");
            }
            let config = solver_config(&args.common, 10)?;
            let (data, out) = data_and_out(&args.common, "runs/mnist-mlp")?;
            mnist_experiments::mlp_sweep(&data, &args.hidden, &config, &out).map(|_| ())
        }
        Command::Cnn(args) => {
            let config = solver_config(&args.common, 5)?;
            let (data, out) = data_and_out(&args.common, "runs/mnist-cnn")?;
            mnist_experiments::cnn(&data, args.hidden, &config, &out).map(|_| ())
        }
    });
}
