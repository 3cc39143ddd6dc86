//! The MNIST experiments as the assignment runs them: the MLP hidden-size
//! sweep (pick the best by val accuracy, retrain it on train+val, test it)
//! and the CNN, each trained by the one training loop ([`crate::train::engine`],
//! on minibatches of rows, [`crate::train::minibatch`]) into a run folder
//! ([`crate::run_dir`]).
//! The run state is saved after every epoch, so a stopped run resumes where
//! it stood: the sweep at the size (or the retrain) and epoch it reached.
//! Its tables and figures are [`tables`]'.

pub mod options;
mod tables;

use crate::data::mnist::{self, Mnist, Split};
use crate::grad::{self, Gradients, Params};
use crate::interrupt::Interrupt;
use crate::layers::loss::accuracy;
use crate::nets::cnn::ConvNetShape;
use crate::nets::{Net, ThreeLayerConvNet, TwoLayerNet};
use crate::persist::card;
use crate::report::tensorboard::LazyEvents;
use crate::report::Reporter;
use crate::run_dir::{RunDir, RunSummary, Start, STATE_FILE};
use crate::train::engine::{self, EpochRecord, KeepRule, Live, StateCard, Task, TrainState};
use crate::train::minibatch::{Recipe, RowTask, Rows};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Tensor};

/// Weight init std for the MLP (as the assignment's `weight_scale`).
const MLP_WEIGHT_SCALE: f64 = 0.01;
const CNN_FILTERS: i64 = 32;
const CNN_KERNEL: i64 = 7;

/// One `mnist` run: what it trains, how, and where it writes.
pub struct RunSpec {
    pub recipe: Recipe,
    pub device: Device,
    pub train_limit: Option<usize>,
    /// The run folder, fresh or resumed.
    pub out: PathBuf,
    pub start: Start,
    pub overwrite: bool,
    /// The options as given, saved with the run state (what `--resume`
    /// reads back) and in `summary.json`.
    pub config: serde_json::Value,
}

/// Loads MNIST from `dir` and reports the sizes of its splits.
pub fn load(dir: &Path, seed: u64, train_limit: Option<usize>, reporter: &dyn Reporter) -> Result<Mnist> {
    let data = mnist::load(dir, seed, train_limit)?;
    reporter.line(&format!(
        "MNIST: train {}, val {}, test {} images from {}",
        data.train.len(),
        data.val.len(),
        data.test.len(),
        dir.display()
    ));
    Ok(data)
}

/// Classification of a split's images by a [`Net`], as the engine's task:
/// after every epoch the accuracy on the training split and, where there is
/// one, on `val`.
struct Classify<'a> {
    net: &'a dyn Net,
    params: Params,
    images: Tensor,
    labels: Tensor,
    train: &'a Split,
    val: Option<&'a Split>,
    device: Device,
}

impl<'a> Classify<'a> {
    fn new(net: &'a dyn Net, train: &'a Split, val: Option<&'a Split>, device: Device) -> Self {
        Self {
            net,
            params: Params::new(net.named_parameters()),
            images: train.images.to_device(device),
            labels: train.labels.to_device(device),
            train,
            val,
            device,
        }
    }
}

impl RowTask for Classify<'_> {
    fn train_rows(&self) -> i64 {
        self.train.len() as i64
    }

    fn params(&self) -> &Params {
        &self.params
    }

    fn train_step(&self, rows: &Tensor, grad: grad::GradMode) -> (Tensor, Gradients) {
        let (images, labels) = (self.images.index_select(0, rows), self.labels.index_select(0, rows));
        grad::gradients(grad, self.net, &self.params, &images, &labels)
    }

    fn valid_step(&self) -> BTreeMap<String, f64> {
        let mut scores = BTreeMap::from([("train_acc".to_owned(), evaluate(self.net, self.train, self.device))]);
        if let Some(val) = self.val {
            scores.insert("val_acc".to_owned(), evaluate(self.net, val, self.device));
        }
        scores
    }
}

/// Top-1 accuracy of `net` on a split, evaluated in chunks.
pub fn evaluate(net: &dyn Net, split: &Split, device: Device) -> f64 {
    let n = split.len() as i64;
    let chunk = 10_000;
    let mut correct = 0.0;
    tch::no_grad(|| {
        for start in (0..n).step_by(chunk as usize) {
            let len = chunk.min(n - start);
            let images = split.images.narrow(0, start, len).to_device(device);
            let labels = split.labels.narrow(0, start, len).to_device(device);
            correct += accuracy(&net.scores(&images), &labels) * len as f64;
        }
    });
    correct / n as f64
}

/// Where a run stands between its stages (the sweep's sizes, then its
/// retrain; the CNN has one), saved with the run state.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Stages {
    /// The stage in progress.
    stage: usize,
    /// The sweep's finished sizes.
    rows: Vec<SweepRow>,
}

/// The run folder with the run's saved progress.
struct Run<'a> {
    spec: &'a RunSpec,
    /// `mnist mlp` or `mnist cnn`, as the resume hint spells it.
    tool: &'static str,
    interrupt: &'a Interrupt,
    reporter: &'a dyn Reporter,
    out: RunDir,
    stages: Stages,
    events: LazyEvents,
}

impl<'a> Run<'a> {
    fn open(
        spec: &'a RunSpec,
        tool: &'static str,
        interrupt: &'a Interrupt,
        reporter: &'a dyn Reporter,
    ) -> Result<Self> {
        let out = RunDir::prepare(&spec.out, spec.start, spec.overwrite)?;
        let stages = match spec.start {
            Start::Fresh => Stages::default(),
            Start::Resume => {
                out.refuse_if_complete()?;
                let path = out.file(STATE_FILE);
                let card: StateCard = card::read(&path)?;
                let stages = card.stages.with_context(|| format!("{}: the state names no stages", path.display()))?;
                serde_json::from_value(stages)
                    .with_context(|| format!("{}: the state's stages do not parse", path.display()))?
            }
        };
        let events = LazyEvents::new(out.path());
        Ok(Self { spec, tool, interrupt, reporter, out, stages, events })
    }

    /// The saved state of the stage in progress, copied into `params`, or a
    /// fresh one.
    fn state_for(&self, rows: &Rows<Classify>) -> Result<TrainState> {
        let path = self.out.file(STATE_FILE);
        let optimizer = self.spec.recipe.optimizer(rows.task.params());
        // Between stages the saved state holds no progress: the next starts afresh.
        if self.spec.start == Start::Resume && card::read::<StateCard>(&path)?.progress.is_some() {
            let state = TrainState::load(&path, Live::model(&rows.model(), rows.params()), optimizer)?;
            let after = state.epochs_done().saturating_sub(1);
            self.reporter.line(&format!("resuming {} after epoch {after} of this stage", self.out.path().display()));
            return Ok(state);
        }
        Ok(TrainState::new(optimizer))
    }

    /// Saves the step to the next stage (the finished one's row kept).
    fn next_stage(&mut self) -> Result<()> {
        self.stages.stage += 1;
        save(&self.out, self.spec, self.tool, &self.stages, None)
    }

    /// Trains `task` through the stage, saving and logging every epoch
    /// under `tag`; `report` says each epoch's line.
    fn train_stage(&mut self, task: &Classify, tag: &str, report: &dyn Fn(&EpochRecord)) -> Result<TrainState> {
        let mut rows = Rows::new(task, &self.spec.recipe, tag)?;
        let mut state = self.state_for(&rows)?;
        let Run { spec, tool, interrupt, reporter, out, stages, events } = self;
        let fit = rows.fit(KeepRule::Last, interrupt, *reporter);
        let outcome = engine::fit(&mut rows, &fit, &mut state, &mut |state, rows| {
            let record = state.epochs.last().expect("an epoch ended");
            report(record);
            let mut scalars = vec![(format!("{tag}/loss"), record.train_loss), (format!("{tag}/lr"), record.lr)];
            scalars.extend(record.scores.iter().map(|(name, value)| (format!("{tag}/{name}"), *value)));
            events.scalars(record.epoch as i64, &scalars)?;
            save(out, spec, tool, stages, Some((state, rows)))
        });
        outcome.map_err(|e| out.explain(e, tool))?;
        Ok(state)
    }

    fn write_summary<R: Serialize>(&self, results: &R, seconds: f64) -> Result<()> {
        let tool = self.tool;
        self.out.write_summary(&RunSummary::new(tool, &self.spec.config, self.spec.device, seconds, results))
    }
}

/// Saves the run state: the options, the stages, and the stage's training
/// state with its parameters (none between stages).
fn save(
    out: &RunDir,
    spec: &RunSpec,
    tool: &str,
    stages: &Stages,
    state: Option<(&TrainState, &Rows<Classify>)>,
) -> Result<()> {
    let card = StateCard { stages: Some(serde_json::to_value(stages)?), ..StateCard::new(Some(tool), &spec.config)? };
    let path = out.file(STATE_FILE);
    match state {
        Some((state, rows)) => state.save(&path, rows, &card)?,
        None => card::save(&path, &[], &card)?,
    }
    out.mark_saved();
    out.write(crate::run_dir::RUN_CONFIG_FILE, crate::run_dir::options_toml(tool, &spec.config)?.as_bytes())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepRow {
    pub hidden: i64,
    pub train_acc: f64,
    pub val_acc: f64,
    pub seconds: f64,
}

/// What the sweep measured (`summary.json`'s `results`).
#[derive(Debug, Serialize)]
pub struct SweepResults {
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
    /// Every epoch of the retrain, numbered from 0.
    pub retrain_epochs: Vec<EpochRecord>,
}

fn mlp(hidden: i64, spec: &RunSpec) -> (nn::VarStore, TwoLayerNet) {
    tch::manual_seed(spec.recipe.seed as i64);
    let vs = nn::VarStore::new(spec.device);
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
/// tests it. Stopped by Ctrl-C at the next minibatch; resumed at the size
/// and epoch it reached. Its lines and bars go to `reporter`.
pub fn mlp_sweep(
    data: &Mnist,
    hidden_sizes: &[i64],
    spec: &RunSpec,
    interrupt: &Interrupt,
    reporter: &dyn Reporter,
) -> Result<SweepResults> {
    let started = std::time::Instant::now();
    if hidden_sizes.is_empty() {
        bail!("no hidden sizes given");
    }
    let mut run = Run::open(spec, "mnist mlp", interrupt, reporter)?;
    let last_epoch = spec.recipe.epochs.saturating_sub(1);
    let device = spec.device;
    while run.stages.stage < hidden_sizes.len() {
        let hidden = hidden_sizes[run.stages.stage];
        let (_vs, net) = mlp(hidden, spec);
        let task = Classify::new(&net, &data.train, Some(&data.val), device);
        let state = run.train_stage(&task, &format!("hidden {hidden}"), &|e| {
            reporter.line(&format!(
                "  hidden {hidden} epoch {}/{last_epoch}: train acc = {:.4}  val acc = {:.4}  ({:.1} s)",
                e.epoch,
                e.score("train_acc"),
                e.score("val_acc"),
                e.seconds
            ))
        })?;
        let last = state.epochs.last().expect("at least one epoch");
        let seconds = state.epochs.iter().map(|e| e.seconds).sum();
        reporter.line(&format!(
            "hidden-dim = {hidden:<5} train acc = {:.4}  val acc = {:.4}  ({seconds:.1} s)",
            last.score("train_acc"),
            last.score("val_acc"),
        ));
        let row = SweepRow { hidden, train_acc: last.score("train_acc"), val_acc: last.score("val_acc"), seconds };
        run.stages.rows.push(row);
        run.next_stage()?;
    }
    let rows = run.stages.rows.clone();
    let best = rows.iter().max_by(|a, b| a.val_acc.total_cmp(&b.val_acc)).context("no hidden sizes trained")?;
    let best_hidden = best.hidden;
    let (train_images, val_images) = (data.train.len(), data.val.len());
    let retrain_val_images = retrain_val_count(train_images, val_images, spec.train_limit);
    let why = match spec.train_limit {
        Some(limit) if retrain_val_images < val_images => {
            format!(" (--train-limit {limit}: the first {retrain_val_images}, 1 per 5 training images)")
        }
        _ => String::new(),
    };
    reporter.line(&format!(
        "best hidden-dim by val accuracy: {best_hidden} (val acc {:.4}); retraining it on train+val: \
         {train_images} training + {retrain_val_images} validation images{why}",
        best.val_acc
    ));
    let (_vs, net) = mlp(best_hidden, spec);
    let train_val = train_and_val(data, retrain_val_images);
    // The test set is measured once, at the end: the retrain is validated on nothing.
    let task = Classify::new(&net, &train_val, None, device);
    let state = run.train_stage(&task, "retrain", &|e| {
        reporter.line(&format!(
            "  retrain epoch {}/{last_epoch}: train+val acc = {:.4}  ({:.1} s)",
            e.epoch,
            e.score("train_acc"),
            e.seconds
        ))
    })?;
    let test_acc = evaluate(&net, &data.test, device);
    reporter.line(&format!("test acc (hidden-dim = {best_hidden}) = {test_acc:.4}"));
    let results = SweepResults {
        train_images,
        val_images,
        rows,
        best_hidden,
        retrain_train_images: train_images,
        retrain_val_images,
        test_acc,
        retrain_seconds: state.epochs.iter().map(|e| e.seconds).sum(),
        retrain_epochs: state.epochs.clone(),
    };
    let seconds = started.elapsed().as_secs_f64();
    tables::write_sweep(&results, &spec.recipe, device, seconds, &run.out)?;
    tables::loss_plot(
        &state.batch_losses,
        &run.out.file("loss_history.png"),
        &format!("MLP training loss (hidden {best_hidden})"),
    )?;
    tables::sweep_plot(&results, &run.out.file("accuracy_vs_hidden.png"))?;
    run.write_summary(&results, seconds)?;
    reporter.line(&format!(
        "sweep took {seconds:.0} s; wrote {}/results.md, results.csv, summary.json, loss_history.png, accuracy_vs_hidden.png",
        spec.out.display()
    ));
    Ok(results)
}

/// What the CNN run measured (`summary.json`'s `results`).
#[derive(Debug, Serialize)]
pub struct CnnResults {
    pub hidden: i64,
    pub train_images: usize,
    pub val_images: usize,
    pub test_images: usize,
    /// The last epoch's accuracies, and the test accuracy of that model.
    pub train_acc: f64,
    pub val_acc: f64,
    pub test_acc: f64,
    pub training_seconds: f64,
    /// Every epoch, numbered from 0.
    pub per_epoch: Vec<EpochRecord>,
}

/// Trains the CNN on train (val measured after every epoch), tests the last
/// epoch's model, and writes results.md, results.csv, summary.json and
/// loss_history.png. Stopped by Ctrl-C at the next minibatch; resumed at
/// the epoch it reached. Its lines and bars go to `reporter`.
pub fn cnn(
    data: &Mnist,
    hidden: i64,
    spec: &RunSpec,
    interrupt: &Interrupt,
    reporter: &dyn Reporter,
) -> Result<CnnResults> {
    let started = std::time::Instant::now();
    let mut run = Run::open(spec, "mnist cnn", interrupt, reporter)?;
    tch::manual_seed(spec.recipe.seed as i64);
    let vs = nn::VarStore::new(spec.device);
    let shape = ConvNetShape { side: 28, filters: CNN_FILTERS, kernel: CNN_KERNEL, hidden, classes: 10 };
    let net = ThreeLayerConvNet::new(&vs.root(), &shape, 1e-2);
    let last_epoch = spec.recipe.epochs.saturating_sub(1);
    let task = Classify::new(&net, &data.train, Some(&data.val), spec.device);
    let state = run.train_stage(&task, "cnn", &|e| {
        reporter.line(&format!(
            "epoch {}/{last_epoch}: train acc = {:.4}  val acc = {:.4}  ({:.1} s)",
            e.epoch,
            e.score("train_acc"),
            e.score("val_acc"),
            e.seconds
        ))
    })?;
    let test_acc = evaluate(&net, &data.test, spec.device);
    let last = state.epochs.last().expect("at least one epoch");
    let training_seconds = state.epochs.iter().map(|e| e.seconds).sum();
    reporter.line(&format!("test acc = {test_acc:.4}  (training took {training_seconds:.0} s)"));
    let results = CnnResults {
        hidden,
        train_images: data.train.len(),
        val_images: data.val.len(),
        test_images: data.test.len(),
        train_acc: last.score("train_acc"),
        val_acc: last.score("val_acc"),
        test_acc,
        training_seconds,
        per_epoch: state.epochs.clone(),
    };
    let seconds = started.elapsed().as_secs_f64();
    tables::write_cnn(&results, &spec.recipe, spec.device, &run.out)?;
    tables::loss_plot(&state.batch_losses, &run.out.file("loss_history.png"), "CNN training loss")?;
    run.write_summary(&results, seconds)?;
    reporter.line(&format!("wrote {}/results.md, results.csv, summary.json, loss_history.png", spec.out.display()));
    Ok(results)
}
