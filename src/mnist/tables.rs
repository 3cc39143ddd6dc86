//! What an `mnist` run writes beside its summary: `results.md` and
//! `results.csv` (the recipe and the accuracies), the loss history and the
//! sweep's accuracy against hidden size.

use super::{CnnResults, SweepResults, SweepRow, CNN_FILTERS, CNN_KERNEL, MLP_WEIGHT_SCALE};
use crate::choice_names::Named;
use crate::report::plots::{line_chart, Chart, Series};
use crate::run_dir::RunDir;
use crate::train::minibatch::Recipe;
use anyhow::Result;
use plotters::chart::SeriesLabelPosition;
use plotters::style::{RGBColor, BLUE, RED};
use std::path::Path;
use tch::Device;

/// One line for results.md describing how a run trains; epochs are
/// numbered from 0, as printed.
fn describe(recipe: &Recipe, device: Device) -> String {
    format!(
        "Adam, lr {} multiplied by {} after every epoch, batch {}, {} epoch(s) (numbered 0 to {}), seed {}, \
         `--grad {}`, device {}",
        recipe.lr,
        recipe.lr_decay,
        recipe.batch_size,
        recipe.epochs,
        recipe.epochs.saturating_sub(1),
        recipe.seed,
        recipe.grad.name(),
        crate::device::name(device)
    )
}

pub(super) fn write_sweep(
    results: &SweepResults,
    recipe: &Recipe,
    device: Device,
    seconds: f64,
    out: &RunDir,
) -> Result<()> {
    let mut csv = String::from("hidden,train_acc,val_acc,seconds\n");
    let mut md = format!(
        "# MNIST MLP hidden-size sweep\n\nRecipe: affine-ReLU-affine-softmax, init std {MLP_WEIGHT_SCALE}; {}. \
         Each size trained on {} images and validated on {}.\n\n\
         | hidden | train acc | val acc | seconds |\n|---:|---:|---:|---:|\n",
        describe(recipe, device),
        results.train_images,
        results.val_images
    );
    for r in &results.rows {
        csv += &format!("{},{:.4},{:.4},{:.1}\n", r.hidden, r.train_acc, r.val_acc, r.seconds);
        let mark = if r.hidden == results.best_hidden { " **best**" } else { "" };
        md += &format!("| {}{mark} | {:.4} | {:.4} | {:.1} |\n", r.hidden, r.train_acc, r.val_acc, r.seconds);
    }
    md += &format!(
        "\nBest hidden size {} retrained on train+val ({} training + {} validation images): **test acc {:.4}**. \
         Sweep wall time {seconds:.0} s.\n",
        results.best_hidden, results.retrain_train_images, results.retrain_val_images, results.test_acc,
    );
    out.write("results.csv", csv.as_bytes())?;
    out.write("results.md", md.as_bytes())
}

/// results.csv: one row, the recipe and the accuracies; results.md: the
/// recipe, every epoch (from 0) and the final accuracies.
pub(super) fn write_cnn(s: &CnnResults, r: &Recipe, device: Device, out: &RunDir) -> Result<()> {
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
        s.training_seconds
    );
    let mut md = format!(
        "# MNIST CNN\n\nRecipe: conv {CNN_FILTERS}×{CNN_KERNEL}×{CNN_KERNEL} (pad {}) – ReLU – max-pool 2×2 – affine {} – \
         ReLU – affine 10 – softmax; {}. Trained on {} images, validated on {}, tested on {}.\n\n\
         | epoch | train acc | val acc | seconds |\n|---:|---:|---:|---:|\n",
        CNN_KERNEL / 2,
        s.hidden,
        describe(r, device),
        s.train_images,
        s.val_images,
        s.test_images
    );
    for e in &s.per_epoch {
        md +=
            &format!("| {} | {:.4} | {:.4} | {:.1} |\n", e.epoch, e.score("train_acc"), e.score("val_acc"), e.seconds);
    }
    md += &format!(
        "\n| train acc | val acc | test acc | seconds |\n|---:|---:|---:|---:|\n| {:.4} | {:.4} | **{:.4}** | {:.0} |\n\n\
         Train and val accuracy after the last epoch; test accuracy of that model.\n",
        s.train_acc, s.val_acc, s.test_acc, s.training_seconds
    );
    out.write("results.csv", csv.as_bytes())?;
    out.write("results.md", md.as_bytes())
}

/// Every minibatch loss, and its running mean over 100 iterations.
pub(super) fn loss_plot(losses: &[f64], path: &Path, title: &str) -> Result<()> {
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

/// Train and val accuracy of every size against the size (log scale).
pub(super) fn sweep_plot(results: &SweepResults, path: &Path) -> Result<()> {
    let points = |f: fn(&SweepRow) -> f64| results.rows.iter().map(|r| (r.hidden as f64, f(r))).collect();
    line_chart(
        path,
        &Chart {
            title: "MLP accuracy against hidden size",
            x_label: "hidden size (log scale)",
            y_label: "accuracy",
            log_x: true,
            legend: SeriesLabelPosition::LowerRight,
        },
        &[
            Series { name: "train", color: BLUE, points: points(|r| r.train_acc) },
            Series { name: "val", color: RED, points: points(|r| r.val_acc) },
        ],
        None,
    )
}
