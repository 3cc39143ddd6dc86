//! The MNIST experiments as the assignment runs them: the MLP hidden-size
//! sweep (pick the best by val accuracy, retrain it on train+val, test it)
//! and the CNN; each writes tables and figures to its output folder.

use crate::data::mnist::{self, Mnist, Split};
use crate::nets::cnn::ConvNetShape;
use crate::nets::{Net, ThreeLayerConvNet, TwoLayerNet};
use crate::persist::write_atomically;
use crate::report::plots::{line_chart, Chart, Series};
use crate::train::solver::{evaluate, train, SolverConfig, TrainOutcome};
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

#[derive(Debug, Serialize)]
pub struct SweepRow {
    pub hidden: i64,
    pub train_acc: f64,
    pub val_acc: f64,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct SweepSummary {
    pub rows: Vec<SweepRow>,
    pub best_hidden: i64,
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

/// Train+val as one split, for the final retraining.
fn train_and_val(data: &Mnist) -> Split {
    Split {
        images: Tensor::cat(&[&data.train.images, &data.val.images], 0),
        labels: Tensor::cat(&[&data.train.labels, &data.val.labels], 0),
    }
}

pub fn mlp_sweep(data: &Mnist, hidden_sizes: &[i64], config: &SolverConfig, out: &Path) -> Result<SweepSummary> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(out).with_context(|| format!("--out {}: cannot create", out.display()))?;
    let mut rows = Vec::new();
    for &hidden in hidden_sizes {
        let (_vs, net) = mlp(hidden, config);
        let outcome = train(&net, &data.train, &data.val, config, &format!("hidden {hidden}"), &mut |_| {})?;
        let last = outcome.final_epoch();
        println!(
            "hidden-dim = {hidden:<5} train acc = {:.4}  val acc = {:.4}  ({:.1} s)",
            last.train_acc, last.val_acc, outcome.seconds
        );
        rows.push(SweepRow { hidden, train_acc: last.train_acc, val_acc: last.val_acc, seconds: outcome.seconds });
    }
    let best = rows.iter().max_by(|a, b| a.val_acc.total_cmp(&b.val_acc)).context("no hidden sizes given")?;
    let best_hidden = best.hidden;
    println!(
        "best hidden-dim by val accuracy: {best_hidden} (val acc {:.4}); retraining it on train+val",
        best.val_acc
    );
    let (_vs, net) = mlp(best_hidden, config);
    let outcome = train(
        &net,
        &train_and_val(data),
        &data.test,
        config,
        &format!("hidden {best_hidden} (train+val)"),
        &mut |_| {},
    )?;
    let test_acc = evaluate(&net, &data.test, config.device);
    println!("test acc (hidden-dim = {best_hidden}) = {test_acc:.4}");
    let summary = SweepSummary {
        rows,
        best_hidden,
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
        "sweep took {:.0} s; wrote {}/results.md, results.csv, loss_history.png, accuracy_vs_hidden.png",
        summary.seconds,
        out.display()
    );
    Ok(summary)
}

fn write_sweep_tables(summary: &SweepSummary, out: &Path) -> Result<()> {
    let mut csv = String::from("hidden,train_acc,val_acc,seconds\n");
    let mut md = String::from("| hidden | train acc | val acc | seconds |\n|---:|---:|---:|---:|\n");
    for r in &summary.rows {
        csv += &format!("{},{:.4},{:.4},{:.1}\n", r.hidden, r.train_acc, r.val_acc, r.seconds);
        let mark = if r.hidden == summary.best_hidden { " **best**" } else { "" };
        md += &format!("| {}{mark} | {:.4} | {:.4} | {:.1} |\n", r.hidden, r.train_acc, r.val_acc, r.seconds);
    }
    md += &format!(
        "\nBest hidden size {} retrained on train+val: **test acc {:.4}**. Sweep wall time {:.0} s.\n",
        summary.best_hidden, summary.test_acc, summary.seconds
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
    pub train_acc: f64,
    pub val_acc: f64,
    pub test_acc: f64,
    pub seconds: f64,
}

pub fn cnn(data: &Mnist, hidden: i64, config: &SolverConfig, out: &Path) -> Result<CnnSummary> {
    std::fs::create_dir_all(out).with_context(|| format!("--out {}: cannot create", out.display()))?;
    tch::manual_seed(config.seed as i64);
    let vs = nn::VarStore::new(config.device);
    let shape = ConvNetShape { side: 28, filters: 32, kernel: 7, hidden, classes: 10 };
    let net = ThreeLayerConvNet::new(&vs.root(), &shape, 1e-2);
    let outcome = train(&net, &data.train, &data.val, config, "cnn", &mut |e| {
        println!(
            "epoch {}: train acc = {:.4}  val acc = {:.4}  ({:.1} s)",
            e.epoch + 1,
            e.train_acc,
            e.val_acc,
            e.seconds
        )
    })?;
    let test_acc = evaluate(&net as &dyn Net, &data.test, config.device);
    let last = outcome.final_epoch();
    println!("test acc = {test_acc:.4}  (training took {:.0} s)", outcome.seconds);
    let summary = CnnSummary { train_acc: last.train_acc, val_acc: last.val_acc, test_acc, seconds: outcome.seconds };
    write_atomically(&out.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    loss_plot(&outcome, &out.join("loss_history.png"), "CNN training loss")?;
    Ok(summary)
}
