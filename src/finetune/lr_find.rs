//! `finetune lr-find`: the learning-rate range test (fastai's `lr_find`)
//! on a run's recipe. The mode's own train phase runs (feature-extract or
//! full, the recipe's augmentation, sampler, class weights, optimizer,
//! accumulation and clipping) with every update at the test's next rate (`crate::train::lr_range`),
//! over as many epochs of the train split as its steps take, no validation;
//! then the model's weights and buffers are put back as they were. What it
//! writes: `lr_find.json` (the curve and the suggestions) and `lr_find.png`
//! (the smoothed loss against the rate, the suggestions marked).

use super::class_weights::ClassWeightsPlan;
use super::config::{FinetuneConfig, Precision};
use super::run::{build_model, gradient_step};
use super::splits::{Folders, Splits};
use super::strategy::{self, EpochContext};
use crate::interrupt::Interrupt;
use crate::models::Classifier;
use crate::report::plots::{self, Chart, Series};
use crate::report::Reporter;
use crate::train::data_parallel::Ranks;
use crate::train::lr_range::{suggest, RangeCurve, RangeTest, RangeTestEnded, Suggestions};
use crate::train::optim;
use anyhow::{Context, Result};
use plotters::prelude::{SeriesLabelPosition, BLUE, RED};
use serde::Serialize;
use std::path::Path;
use tch::{Device, Tensor};

/// What the test found.
#[derive(Debug, Serialize)]
pub struct LrFind {
    pub curve: RangeCurve,
    /// `None` when the curve is too short to judge (it diverged at once).
    pub suggestions: Option<Suggestions>,
    pub start_lr: f64,
    pub end_lr: f64,
    pub planned_steps: usize,
}

/// Runs the range test `test` on `config`'s recipe on `device`, alone
/// (not data-parallel); Ctrl-C stops it with an error.
pub fn lr_find(
    config: &FinetuneConfig,
    test: RangeTest,
    device: Device,
    interrupt: &Interrupt,
    reporter: &dyn Reporter,
) -> Result<LrFind> {
    if config.mode == super::config::Mode::Staged {
        anyhow::bail!(
            "lr-find tests one stage's rates: --mode feature-extract for the frozen stage, --mode full for the rest"
        );
    }
    config.check_precision(device)?;
    let folders = Folders::scan(config)?;
    let weights_plan = ClassWeightsPlan::new(config.class_weights.as_ref(), folders.classes())?;
    let mut model = build_model(config, folders.classes().len(), device, reporter)?;
    strategy::prepare_model(config.mode, &mut model);
    crate::accel::arrange_weights(&model.backbone_vs, config.precision == Precision::Bf16 && !config.amp);
    let ranks = Ranks::single();
    let mut grad_step = gradient_step(config, &model, (device, &ranks)).with_range_test(test);
    let mut optimizer = optim::build(config.optimizer, &grad_step.params, config.optimizer_settings(&grad_step.params));
    let splits = Splits::decode(&folders, config, reporter)?;
    let class_weights = weights_plan.resolve(&splits.train)?;
    if let Some(weights) = &class_weights {
        reporter.line(&weights.describe());
    }
    let class_weights = class_weights.map(|weights| weights.tensor(device));
    let strategy = strategy::for_mode(config, &model, &splits, (device, &ranks, 0), reporter)?;
    let before = snapshot(&model);
    for epoch in 0.. {
        reporter.line(&format!("lr-find: pass {epoch} over the train split"));
        let class_weights = class_weights.as_ref();
        let ctx =
            EpochContext { config, splits: &splits, device, interrupt, ranks: &ranks, epoch, reporter, class_weights };
        match strategy.train_epoch(&model, &mut grad_step, optimizer.as_mut(), &ctx) {
            Ok(_) => continue,
            Err(error) if error.is::<RangeTestEnded>() => break,
            Err(error) => {
                restore(&model, &before);
                return Err(error);
            }
        }
    }
    restore(&model, &before);
    let curve = grad_step.range_curve().expect("the step runs the range test").clone();
    let suggestions = suggest(&curve, test.steps);
    Ok(LrFind { curve, suggestions, start_lr: test.start_lr, end_lr: test.end_lr, planned_steps: test.steps })
}

/// A copy of every tensor of `model` (weights and buffers), by name.
fn snapshot(model: &Classifier) -> Vec<(String, Tensor)> {
    tch::no_grad(|| model.named_tensors().into_iter().map(|(name, t)| (name, t.copy())).collect())
}

/// Puts `saved` back into `model`'s tensors, in place.
fn restore(model: &Classifier, saved: &[(String, Tensor)]) {
    tch::no_grad(|| {
        for ((_, mut live), (_, kept)) in model.named_tensors().into_iter().zip(saved) {
            live.copy_(kept);
        }
    });
}

impl LrFind {
    /// `lr_find.json` and `lr_find.png` in `out`; the paths written.
    pub fn write(&self, out: &Path) -> Result<[std::path::PathBuf; 2]> {
        std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create the folder", out.display()))?;
        let json = out.join("lr_find.json");
        let text = serde_json::to_string_pretty(self).context("lr_find.json: cannot serialize")?;
        crate::persist::write_atomically(&json, text.as_bytes())?;
        let png = out.join("lr_find.png");
        self.plot(&png)?;
        Ok([json, png])
    }

    /// The smoothed loss against the rate (log scale, fastai's last 5 points
    /// left out), the valley marked by a line and the steepest point by a dot.
    fn plot(&self, path: &Path) -> Result<()> {
        let shown = match self.curve.lrs.len() {
            n if n > 5 => n - 5,
            n => n,
        };
        let points: Vec<(f64, f64)> = (0..shown)
            .map(|i| (self.curve.lrs[i], self.curve.smoothed_losses[i]))
            .filter(|(_, loss)| loss.is_finite())
            .collect();
        let mut series = vec![Series { name: "smoothed loss", color: BLUE, points }];
        let steep_name = self.suggestions.map(|s| format!("steep {:.2e}", s.steep.lr));
        if let (Some(s), Some(name)) = (self.suggestions, steep_name.as_deref()) {
            series.push(Series { name, color: RED, points: vec![(s.steep.lr, s.steep.loss)] });
        }
        let valley_label = self.suggestions.map(|s| (s.valley.lr, format!("valley {:.2e}", s.valley.lr)));
        let chart = Chart {
            title: "Learning-rate range test",
            x_label: "learning rate",
            y_label: "training loss (smoothed)",
            log_x: true,
            legend: SeriesLabelPosition::UpperLeft,
        };
        plots::line_chart(path, &chart, &series, valley_label.as_ref().map(|(lr, label)| (*lr, label.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Arch;

    #[test]
    fn a_restored_model_has_every_weight_and_buffer_it_had() {
        let model = Classifier::new(Arch::Resnet18, 2, Device::Cpu);
        let before = snapshot(&model);
        tch::no_grad(|| {
            for (_, mut t) in model.named_tensors() {
                let _ = t.g_add_scalar_(1);
            }
        });
        assert!(model.named_tensors().iter().zip(&before).any(|((_, a), (_, b))| !a.equal(b)));
        restore(&model, &before);
        for ((name, live), (_, kept)) in model.named_tensors().iter().zip(&before) {
            assert!(live.equal(kept), "{name}");
        }
    }
}
