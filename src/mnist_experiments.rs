//! The MNIST experiments as the assignment runs them: the MLP hidden-size
//! sweep (pick the best by val accuracy, retrain it on train+val, test it)
//! and the CNN; each writes tables and figures to its output folder.

use crate::data::mnist::{self, Mnist, Split};
use crate::names::Named;
use crate::nets::cnn::ConvNetShape;
use crate::nets::{Net, ThreeLayerConvNet, TwoLayerNet};
use crate::persist::write_atomically;
use crate::report::plots::{line_chart, Chart, Series};
use crate::train::solver::{evaluate, train, EpochStats, SolverConfig, TrainOutcome};
use anyhow::{Context, Result};
use plotters::chart::SeriesLabelPosition;
use plotters::style::{RGBColor, BLUE, RED};
use serde::Serialize;
use std::path::Path;
use tch::{nn, Tensor};

/// Weight init std for the MLP (as the assignment's `weight_scale`).
const MLP_WEIGHT_SCALE: f64 = 0.01;

pub fn load(dir: &Path, seed: u64, train_limit: Option<usize>) -> Result<Mnist> {
    let data = mnist::load(dir, seed, train_limit)?;
    println!(
        "MNIST: train {}, val {}, test {} images from {}",
        data.train.len(),
        data.val.len(),
        data.test.len(),
        dir.display()
    );
    Ok(data)
}

/// One line for results.md describing how a run trains; epochs are
/// numbered from 0, as printed.
fn describe(config: &SolverConfig) -> String {
    format!(
        "Adam, lr {} multiplied by {} after every epoch, batch {}, {} epoch(s) (numbered 0 to {}), seed {}, \
         `--grad {}`, device {}",
        config.lr,
        config.lr_decay,
        config.batch_size,
        config.epochs,
        config.epochs.saturating_sub(1),
        config.seed,
        config.grad.name(),
        crate::device::name(config.device)
    )
}

#[derive(Debug, Serialize)]
pub struct SweepRow {
    pub hidden: i64,
    pub train_acc: f64,
    pub val_acc: f64,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct SweepSummary {
    pub recipe: SolverConfig,
    /// Images each size trained on (validated on `val_images`).
    pub train_images: usize,
    pub val_images: usize,
    pub rows: Vec<SweepRow>,
    pub best_hidden: i64,
    /// What the best size was retrained on: training images, then validation images.
    pub retrain_train_images: usize,
    pub retrain_val_images: usize,
    pub test_acc: f64,
    pub retrain_seconds: f64,
    pub seconds: f64,
}

fn mlp(hidden: i64, config: &SolverConfig) -> (nn::VarStore, TwoLayerNet) {
    tch::manual_seed(config.seed as i64);
    let vs = nn::VarStore::new(config.device);
    let net = TwoLayerNet::new(&vs.root(), 784, hidden, 10, MLP_WEIGHT_SCALE);
    (vs, net)
}

/// Validation images the retrain on train+val adds under `--train-limit N`:
/// the first ⌈N/5⌉, the full run's 50,000 : 10,000 proportion (all of
/// them without a limit, or when the limit exceeds the training images).
pub fn retrain_val_count(train_images: usize, val_images: usize, train_limit: Option<usize>) -> usize {
    match train_limit {
        Some(limit) if limit <= train_images => limit.div_ceil(5).min(val_images),
        _ => val_images,
    }
}

/// The sweep's training images and the first `val_count` validation images
/// as one split, for the final retraining.
fn train_and_val(data: &Mnist, val_count: usize) -> Split {
    let val_count = val_count as i64;
    Split {
        images: Tensor::cat(&[&data.train.images, &data.val.images.narrow(0, 0, val_count)], 0),
        labels: Tensor::cat(&[&data.train.labels, &data.val.labels.narrow(0, 0, val_count)], 0),
    }
}

/// The hidden-size sweep: trains every size on train, picks the best by val
/// accuracy, retrains it on train+val (with `train_limit`, on the limited
/// train images and a proportional share of val: [`retrain_val_count`]) and
/// tests it.
pub fn mlp_sweep(
    data: &Mnist,
    hidden_sizes: &[i64],
    config: &SolverConfig,
    train_limit: Option<usize>,
    out: &Path,
) -> Result<SweepSummary> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(out).with_context(|| format!("--out {}: cannot create", out.display()))?;
    let mut rows = Vec::new();
    // Epochs are numbered from 0, as `finetune` numbers them.
    let last_epoch = config.epochs.saturating_sub(1);
    for &hidden in hidden_sizes {
        let (_vs, net) = mlp(hidden, config);
        let outcome = train(&net, &data.train, &data.val, config, &format!("hidden {hidden}"), &mut |e| {
            println!(
                "  hidden {hidden} epoch {}/{last_epoch}: train acc = {:.4}  val acc = {:.4}  ({:.1} s)",
                e.epoch, e.train_acc, e.val_acc, e.seconds
            )
        })?;
        let last = outcome.final_epoch();
        println!(
            "hidden-dim = {hidden:<5} train acc = {:.4}  val acc = {:.4}  ({:.1} s)",
            last.train_acc, last.val_acc, outcome.seconds
        );
        rows.push(SweepRow { hidden, train_acc: last.train_acc, val_acc: last.val_acc, seconds: outcome.seconds });
    }
    let best = rows.iter().max_by(|a, b| a.val_acc.total_cmp(&b.val_acc)).context("no hidden sizes given")?;
    let best_hidden = best.hidden;
    let (train_images, val_images) = (data.train.len(), data.val.len());
    let retrain_val_images = retrain_val_count(train_images, val_images, train_limit);
    let why = match train_limit {
        Some(limit) if retrain_val_images < val_images => {
            format!(" (--train-limit {limit}: the first {retrain_val_images}, 1 per 5 training images)")
        }
        _ => String::new(),
    };
    println!(
        "best hidden-dim by val accuracy: {best_hidden} (val acc {:.4}); retraining it on train+val: \
         {train_images} training + {retrain_val_images} validation images{why}",
        best.val_acc
    );
    let (_vs, net) = mlp(best_hidden, config);
    let outcome = train(
        &net,
        &train_and_val(data, retrain_val_images),
        &data.test,
        config,
        &format!("hidden {best_hidden} (train+val)"),
        &mut |e| {
            // The split `train` calls val is the test set here: its accuracy waits for the end.
            println!(
                "  retrain epoch {}/{last_epoch}: train+val acc = {:.4}  ({:.1} s)",
                e.epoch, e.train_acc, e.seconds
            )
        },
    )?;
    let test_acc = evaluate(&net, &data.test, config.device);
    println!("test acc (hidden-dim = {best_hidden}) = {test_acc:.4}");
    let summary = SweepSummary {
        recipe: config.clone(),
        train_images,
        val_images,
        rows,
        best_hidden,
        retrain_train_images: train_images,
        retrain_val_images,
        test_acc,
        retrain_seconds: outcome.seconds,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_sweep_tables(&summary, out)?;
    loss_plot(&outcome, &out.join("loss_history.png"), &format!("MLP training loss (hidden {best_hidden})"))?;
    let sweep_points = |f: fn(&SweepRow) -> f64| summary.rows.iter().map(|r| (r.hidden as f64, f(r))).collect();
    line_chart(
        &out.join("accuracy_vs_hidden.png"),
        &Chart {
            title: "MLP accuracy against hidden size",
            x_label: "hidden size (log scale)",
            y_label: "accuracy",
            log_x: true,
            legend: SeriesLabelPosition::LowerRight,
        },
        &[
            Series { name: "train", color: BLUE, points: sweep_points(|r| r.train_acc) },
            Series { name: "val", color: RED, points: sweep_points(|r| r.val_acc) },
        ],
        None,
    )?;
    println!(
        "sweep took {:.0} s; wrote {}/results.md, results.csv, summary.json, loss_history.png, accuracy_vs_hidden.png",
        summary.seconds,
        out.display()
    );
    Ok(summary)
}

fn write_sweep_tables(summary: &SweepSummary, out: &Path) -> Result<()> {
    let mut csv = String::from("hidden,train_acc,val_acc,seconds\n");
    let mut md = format!(
        "# MNIST MLP hidden-size sweep\n\nRecipe: affine-ReLU-affine-softmax, init std {MLP_WEIGHT_SCALE}; {}. \
         Each size trained on {} images and validated on {}.\n\n\
         | hidden | train acc | val acc | seconds |\n|---:|---:|---:|---:|\n",
        describe(&summary.recipe),
        summary.train_images,
        summary.val_images
    );
    for r in &summary.rows {
        csv += &format!("{},{:.4},{:.4},{:.1}\n", r.hidden, r.train_acc, r.val_acc, r.seconds);
        let mark = if r.hidden == summary.best_hidden { " **best**" } else { "" };
        md += &format!("| {}{mark} | {:.4} | {:.4} | {:.1} |\n", r.hidden, r.train_acc, r.val_acc, r.seconds);
    }
    md += &format!(
        "\nBest hidden size {} retrained on train+val ({} training + {} validation images): **test acc {:.4}**. \
         Sweep wall time {:.0} s.\n",
        summary.best_hidden,
        summary.retrain_train_images,
        summary.retrain_val_images,
        summary.test_acc,
        summary.seconds
    );
    write_atomically(&out.join("results.csv"), csv.as_bytes())?;
    write_atomically(&out.join("results.md"), md.as_bytes())?;
    write_atomically(&out.join("summary.json"), serde_json::to_string_pretty(summary)?.as_bytes())
}

/// Every minibatch loss, and its running mean over 100 iterations.
fn loss_plot(outcome: &TrainOutcome, path: &Path, title: &str) -> Result<()> {
    let losses = &outcome.loss_history;
    let points = losses.iter().enumerate().map(|(i, &l)| (i as f64, l)).collect();
    let window = 100;
    let smoothed = (0..losses.len())
        .map(|i| {
            let recent = &losses[i.saturating_sub(window - 1)..=i];
            (i as f64, recent.iter().sum::<f64>() / recent.len() as f64)
        })
        .collect();
    line_chart(
        path,
        &Chart {
            title,
            x_label: "iteration",
            y_label: "training loss",
            log_x: false,
            legend: SeriesLabelPosition::UpperRight,
        },
        &[
            Series { name: "minibatch loss", color: RGBColor(150, 170, 230), points },
            Series { name: "mean of the last 100", color: RED, points: smoothed },
        ],
        None,
    )
}

#[derive(Debug, Serialize)]
pub struct CnnSummary {
    pub recipe: SolverConfig,
    pub hidden: i64,
    pub train_images: usize,
    pub val_images: usize,
    pub test_images: usize,
    /// The last epoch's accuracies, and the test accuracy of that model.
    pub train_acc: f64,
    pub val_acc: f64,
    pub test_acc: f64,
    pub seconds: f64,
    /// Every epoch, numbered from 0.
    pub per_epoch: Vec<EpochStats>,
}

const CNN_FILTERS: i64 = 32;
const CNN_KERNEL: i64 = 7;

/// Trains the CNN on train (val measured after every epoch), tests the last
/// epoch's model, and writes results.md, results.csv, summary.json and
/// loss_history.png to `out`.
pub fn cnn(data: &Mnist, hidden: i64, config: &SolverConfig, out: &Path) -> Result<CnnSummary> {
    std::fs::create_dir_all(out).with_context(|| format!("--out {}: cannot create", out.display()))?;
    tch::manual_seed(config.seed as i64);
    let vs = nn::VarStore::new(config.device);
    let shape = ConvNetShape { side: 28, filters: CNN_FILTERS, kernel: CNN_KERNEL, hidden, classes: 10 };
    let net = ThreeLayerConvNet::new(&vs.root(), &shape, 1e-2);
    let last_epoch = config.epochs.saturating_sub(1);
    let outcome = train(&net, &data.train, &data.val, config, "cnn", &mut |e| {
        println!(
            "epoch {}/{last_epoch}: train acc = {:.4}  val acc = {:.4}  ({:.1} s)",
            e.epoch, e.train_acc, e.val_acc, e.seconds
        )
    })?;
    let test_acc = evaluate(&net as &dyn Net, &data.test, config.device);
    let last = outcome.final_epoch();
    println!("test acc = {test_acc:.4}  (training took {:.0} s)", outcome.seconds);
    let summary = CnnSummary {
        recipe: config.clone(),
        hidden,
        train_images: data.train.len(),
        val_images: data.val.len(),
        test_images: data.test.len(),
        train_acc: last.train_acc,
        val_acc: last.val_acc,
        test_acc,
        seconds: outcome.seconds,
        per_epoch: outcome.epochs.clone(),
    };
    write_cnn_tables(&summary, out)?;
    loss_plot(&outcome, &out.join("loss_history.png"), "CNN training loss")?;
    println!("wrote {}/results.md, results.csv, summary.json, loss_history.png", out.display());
    Ok(summary)
}

/// results.csv: one row, the recipe and the accuracies; results.md: the
/// recipe, every epoch (from 0) and the final accuracies; summary.json: all of it.
fn write_cnn_tables(s: &CnnSummary, out: &Path) -> Result<()> {
    let r = &s.recipe;
    let grad = r.grad.name();
    let csv = format!(
        "hidden,epochs,batch_size,lr,lr_decay,seed,grad,train_images,val_images,test_images,\
         train_acc,val_acc,test_acc,seconds\n\
         {},{},{},{},{},{},{grad},{},{},{},{:.4},{:.4},{:.4},{:.1}\n",
        s.hidden,
        r.epochs,
        r.batch_size,
        r.lr,
        r.lr_decay,
        r.seed,
        s.train_images,
        s.val_images,
        s.test_images,
        s.train_acc,
        s.val_acc,
        s.test_acc,
        s.seconds
    );
    let mut md = format!(
        "# MNIST CNN\n\nRecipe: conv {CNN_FILTERS}×{CNN_KERNEL}×{CNN_KERNEL} (pad {}) – ReLU – max-pool 2×2 – affine {} – \
         ReLU – affine 10 – softmax; {}. Trained on {} images, validated on {}, tested on {}.\n\n\
         | epoch | train acc | val acc | seconds |\n|---:|---:|---:|---:|\n",
        CNN_KERNEL / 2,
        s.hidden,
        describe(r),
        s.train_images,
        s.val_images,
        s.test_images
    );
    for e in &s.per_epoch {
        md += &format!("| {} | {:.4} | {:.4} | {:.1} |\n", e.epoch, e.train_acc, e.val_acc, e.seconds);
    }
    md += &format!(
        "\n| train acc | val acc | test acc | seconds |\n|---:|---:|---:|---:|\n| {:.4} | {:.4} | **{:.4}** | {:.0} |\n\n\
         Train and val accuracy after the last epoch; test accuracy of that model.\n",
        s.train_acc, s.val_acc, s.test_acc, s.seconds
    );
    write_atomically(&out.join("results.csv"), csv.as_bytes())?;
    write_atomically(&out.join("results.md"), md.as_bytes())?;
    write_atomically(&out.join("summary.json"), serde_json::to_string_pretty(s)?.as_bytes())
}
