//! `mnist`: the MLP hidden-size sweep and the CNN on MNIST, trained with the
//! hand-derived backward passes or autograd. Parses and checks arguments, then
//! calls the library.

use anyhow::Result;
use clap::{FromArgMatches, Parser, Subcommand};
use serde::Serialize;
use tchlab::cli::Banner;
use tchlab::interrupt::Interrupt;
use tchlab::mnist::options::{CnnArgs, Common, MlpArgs};
use tchlab::mnist::{self, RunSpec};
use tchlab::report::Terminal;
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
    ///
    /// With --train-limit N the best size is retrained on those N images plus the first N/5 (rounded up) validation
    /// images, the full run's 5:1 proportion.
    Mlp(MlpArgs),
    /// conv(32 7x7, pad 3)-ReLU-maxpool 2x2-affine-ReLU-affine-softmax; trains on train, tests the last epoch's model.
    Cnn(CnnArgs),
}

/// The run's spec from its options (`config`: them as saved); `tool` is
/// `mnist mlp` or `mnist cnn`.
fn run_spec(common: &Common, epochs: usize, start: Start, tool: &str, config: serde_json::Value) -> Result<RunSpec> {
    tchlab::cli::apply_threads(common.run.threads);
    let device = common.device.select()?;
    let base = format!("runs/{}", tool.replace(' ', "-"));
    let out = tchlab::run_dir::choose(common.out.as_deref(), &base, common.run.overwrite, &Terminal)?;
    tchlab::run_dir::check(&out, start, common.run.overwrite)?;
    Banner { tool, device, seed: Some(common.seed.seed), out: Some(&out) }.print();
    let mut config = config;
    config["out"] = serde_json::json!(out);
    Ok(RunSpec {
        recipe: Recipe {
            epochs,
            batch_size: common.batch_size,
            lr: common.lr,
            lr_decay: common.lr_decay,
            seed: common.seed.seed,
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

/// The options of a fresh run (with those of `--config FILE`), or with
/// `--resume DIR` the run's own.
fn resolve<T: clap::Args + FromArgMatches + Serialize + serde::de::DeserializeOwned>(
    args: T,
    common: fn(&mut T) -> &mut Common,
    tool: &'static str,
    given: &std::collections::BTreeSet<String>,
) -> Result<(T, Start)> {
    let mut args = args;
    let Some(dir) = common(&mut args).run.resume.clone() else {
        return Ok((with_config(args, common, tool, given)?, Start::Fresh));
    };
    let run = common(&mut args).run.clone();
    let device = common(&mut args).device.clone();
    let mut saved: T = tchlab::cli::resumed_options(&dir, tool, given, &tchlab::cli::resumable::<T>())?;
    let saved_common = common(&mut saved);
    saved_common.out = Some(dir.clone());
    saved_common.run = run;
    if given.contains("device") {
        saved_common.device = device;
    }
    Ok((saved, Start::Resume))
}

/// `args` with the options they leave out taken from `--config FILE`.
fn with_config<T: clap::Args + FromArgMatches + Serialize + serde::de::DeserializeOwned>(
    args: T,
    common: fn(&mut T) -> &mut Common,
    tool: &'static str,
    given: &std::collections::BTreeSet<String>,
) -> Result<T> {
    let mut args = args;
    let run = common(&mut args).run.clone();
    let Some(file) = &run.config else { return Ok(args) };
    let mut merged: T = tchlab::cli::options_file::merged(&args, file, given, tool)?;
    common(&mut merged).run = run;
    Ok(merged)
}

fn data(common: &Common) -> Result<tchlab::data::mnist::Mnist> {
    mnist::load(&common.data, common.seed.seed, common.train_limit.0, &Terminal)
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
                args.common.resolve_paths();
                let spec = run_spec(&args.common, args.epochs, start, "mnist mlp", serde_json::to_value(&args)?)?;
                let data = data(&args.common)?;
                mnist::mlp_sweep(&data, &args.hidden, &spec, &interrupt, &Terminal).map(|_| ())
            }
            Command::Cnn(args) => {
                let (mut args, start) = resolve(args, |a| &mut a.common, "mnist cnn", &given)?;
                args.common.resolve_paths();
                let spec = run_spec(&args.common, args.epochs, start, "mnist cnn", serde_json::to_value(&args)?)?;
                let data = data(&args.common)?;
                mnist::cnn(&data, args.hidden, &spec, &interrupt, &Terminal).map(|_| ())
            }
        }
    });
}
