//! One captioning run from loaded data to its output folder: trains, keeps
//! the epoch with the lowest val loss, or the last one with `--keep last`
//! (`best_model.safetensors` either way, as `finetune` names it), saving
//! the run state after every epoch (a stopped run resumes), then
//! captions the val images with it and writes the loss history (CSV, PNG),
//! BLEU, ROUGE-L, CIDEr-D and (on digit scenes) what the captions got
//! right, against the two baselines (`results.md`, `summary.json`), and the
//! caption sample figures for train and val images (and their text, for
//! more images, in `samples.json`), and for a network that attends, where
//! each word of its val captions looked (`attention_val.png`).

use super::dataset::{CaptionData, CaptionSplit, ImageSource};
use super::decoder::Captioner;
use super::evaluate::{caption_split, sample_images, score_table, ScoreRow};
use super::model::{build, CellKind, Dims};
use super::saved::{self, CaptionCard, FeatureSource};
use super::task::Captioning;
use crate::choice_names::Named;
use crate::data::decode::decode_rgb;
use crate::data::loader::image_tensor;
use crate::interrupt::Interrupt;
use crate::report::plots::{self, CaptionPanel, Chart, Series};
use crate::report::tensorboard::LazyEvents;
use crate::report::Reporter;
use crate::run_dir::{RunDir, RunSummary, Start, BEST_MODEL_FILE, RUN_CONFIG_FILE, STATE_FILE};
use crate::train::engine::{self, EpochRecord, KeepRule, Live, StateCard, Task, TrainState};
use crate::train::minibatch::{Recipe, RowTask, Rows};
use anyhow::{Context, Result};
use plotters::prelude::{RGBColor, SeriesLabelPosition};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Tensor};

/// Which epoch's weights a run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Keep {
    /// The epoch with the lowest val loss.
    Best,
    /// The last epoch (the course's overfit check samples from it).
    Last,
}

impl Keep {
    fn rule(self) -> KeepRule {
        match self {
            Keep::Best => KeepRule::Lowest("val_loss"),
            Keep::Last => KeepRule::Last,
        }
    }
}

/// The tool's name, as summaries and resume hints spell it.
const TOOL: &str = "caption train";
/// Pictures per caption sample figure.
const SAMPLES_PER_FIGURE: usize = 8;
/// Images per split whose sampled and true captions `samples.json` lists.
const SAMPLES_IN_JSON: usize = 100;

/// What a run trains and where it writes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub cell: CellKind,
    pub hidden: i64,
    pub wordvec: i64,
    /// The Transformer's attention heads and decoder layers (0 otherwise).
    pub heads: i64,
    pub layers: i64,
    /// The attention network's attention width, the dropout rate of
    /// training steps (the attention network's deep output, the
    /// Transformer's sublayers; recurrent cells have none) and the
    /// attention network's doubly stochastic penalty λ.
    pub attention_width: i64,
    pub dropout: f64,
    pub attention_penalty: f64,
    /// Hypotheses per image when captioning for the results and figures (1: greedy).
    pub beam: usize,
    pub schedule: Recipe,
    pub device: Device,
    pub keep: Keep,
    pub out: PathBuf,
    pub start: Start,
    pub overwrite: bool,
    pub features: FeatureSource,
    /// Where the data came from, for the results.
    pub data: String,
    /// The options as given, saved with the run state (what `--resume`
    /// reads back) and in `summary.json`.
    pub config: serde_json::Value,
}

/// What a run measured (`summary.json`'s `results`).
#[derive(Debug, Serialize)]
pub struct RunResults {
    pub cell: String,
    pub beam: usize,
    pub data: String,
    pub hidden: i64,
    pub wordvec: i64,
    pub vocabulary: usize,
    pub train_captions: usize,
    pub val_images: usize,
    pub keep: Keep,
    /// The epoch whose weights were kept, and its val loss.
    pub kept_epoch: usize,
    pub kept_val_loss: f64,
    pub final_train_loss: f64,
    /// Ours and the two baselines on the val images.
    pub scores: Vec<ScoreRow>,
    pub seconds_training: f64,
    pub seconds_per_epoch: f64,
    pub peak_memory_mb: Option<f64>,
    pub epochs: Vec<EpochRecord>,
}

/// Trains (or resumes), evaluates and writes everything into `options.out`.
/// Ctrl-C stops it at the next minibatch; the last completed epoch is
/// saved and resumes. Its lines and bars go to `reporter`.
pub fn run(
    data: &CaptionData,
    options: &RunOptions,
    interrupt: &Interrupt,
    reporter: &dyn Reporter,
) -> Result<RunResults> {
    let started = Instant::now();
    let out = RunDir::prepare(&options.out, options.start, options.overwrite)?;
    if options.start == Start::Resume {
        out.refuse_if_complete()?;
    }
    tch::manual_seed(options.schedule.seed as i64);
    let store = VarStore::new(options.device);
    let dims = Dims {
        features: data.train.feature_width(),
        wordvec: options.wordvec,
        hidden: options.hidden,
        vocabulary: data.vocab.len() as i64,
        heads: options.heads,
        layers: options.layers,
        ..attention_dims(options)
    };
    let mut net = build(&store.root(), dims, options.cell, data.vocab.tokens)?;
    // The course's PCA features are used as published; backbone features,
    // far from zero mean and unit variance, are standardized.
    if let FeatureSource::Backbone { .. } = options.features {
        net.standardize_features(&data.train.features);
    }
    let card = |epoch: usize, val_loss: f64| CaptionCard {
        dims,
        cell: options.cell,
        words: data.vocab.words().to_vec(),
        max_words: data.max_words,
        features: options.features.clone(),
        epoch,
        val_loss,
    };
    let task =
        Captioning::new(&*net, &data.train, &data.val, options.schedule.batch_size, options.dropout, options.device);
    let mut rows = Rows::new(&task, &options.schedule, "caption")?;
    let optimizer = options.schedule.optimizer(task.params());
    let mut state = match options.start {
        Start::Fresh => TrainState::new(optimizer),
        Start::Resume => {
            let state = TrainState::load(&out.file(STATE_FILE), Live::model(&rows.model(), rows.params()), optimizer)?;
            let after = state.epochs_done().saturating_sub(1);
            reporter.line(&format!("resuming {} after epoch {after}", out.path().display()));
            state
        }
    };
    let state_card = StateCard::new(Some(TOOL), &options.config)?;
    let run_toml = crate::run_dir::options_toml(TOOL, &options.config)?;
    let mut events = LazyEvents::new(out.path());
    let last_epoch = options.schedule.epochs.saturating_sub(1);
    let fit = rows.fit(options.keep.rule(), interrupt, reporter);
    let outcome = engine::fit(&mut rows, &fit, &mut state, &mut |state, rows| {
        let record = state.epochs.last().expect("an epoch ended");
        let kept_now = state.kept_epoch(options.keep.rule()).is_some_and(|k| k.epoch == record.epoch);
        let best_so_far = state.epochs.iter().all(|e| e.score("val_loss") >= record.score("val_loss"));
        reporter.line(&format!(
            "Epoch {}/{last_epoch}  train loss {:.4}  val loss {:.4}  lr {:.3e}  ({:.1}s){}",
            record.epoch,
            record.train_loss,
            record.score("val_loss"),
            record.lr,
            record.seconds,
            if best_so_far { "  best so far" } else { "" }
        ));
        let scalars = [
            ("loss/train".to_owned(), record.train_loss),
            ("loss/val".to_owned(), record.score("val_loss")),
            ("learning_rate".to_owned(), record.lr),
        ];
        events.scalars(record.epoch as i64, &scalars)?;
        if kept_now {
            saved::save(&out.file(BEST_MODEL_FILE), &store, &card(record.epoch, record.score("val_loss")))?;
        }
        state.save(&out.file(STATE_FILE), rows, &state_card)?;
        out.mark_saved();
        out.write(RUN_CONFIG_FILE, run_toml.as_bytes())
    });
    outcome.map_err(|e| out.explain(e, TOOL))?;
    let kept = state.kept_epoch(options.keep.rule()).context("no epoch was kept")?;
    let (kept_epoch, kept_val_loss) = (kept.epoch, kept.score("val_loss"));
    write_history(&state, kept_epoch, &out)?;
    state.restore_kept(&rows.model())?;
    // Saved again from the kept weights: a run stopped between saving its
    // state and its model resumes to the same file.
    saved::save(&out.file(BEST_MODEL_FILE), &store, &card(kept_epoch, kept_val_loss))?;
    let val = caption_split(&*net, &data.val, &data.vocab, options.beam, options.device);
    let scores = score_table(&format!("{} (ours)", method_name(options.cell, options.beam)), &val, data);
    sample_figure(&*net, data, &data.train, options, &out)?;
    sample_figure(&*net, data, &data.val, options, &out)?;
    attention_figure(&*net, data, options, &out, reporter)?;
    let mut samples = spread_samples(&*net, data, &data.train, SAMPLES_IN_JSON, options).1;
    samples.extend(spread_samples(&*net, data, &data.val, SAMPLES_IN_JSON, options).1);
    out.write("samples.json", serde_json::to_string_pretty(&samples)?.as_bytes())?;
    let results = RunResults {
        cell: options.cell.name().to_string(),
        beam: options.beam,
        data: options.data.clone(),
        hidden: options.hidden,
        wordvec: options.wordvec,
        vocabulary: data.vocab.len(),
        train_captions: data.train.num_captions(),
        val_images: val.images.len(),
        keep: options.keep,
        kept_epoch,
        kept_val_loss,
        final_train_loss: state.batch_losses.last().copied().unwrap_or(f64::NAN),
        scores,
        seconds_training: state.epochs.iter().map(|e| e.seconds).sum(),
        seconds_per_epoch: state.epochs.iter().map(|e| e.seconds).sum::<f64>() / state.epochs.len().max(1) as f64,
        peak_memory_mb: peak_memory_mb(),
        epochs: state.epochs.clone(),
    };
    let seconds = started.elapsed().as_secs_f64();
    out.write("results.md", results_markdown(&results, options.device, seconds).as_bytes())?;
    out.write_summary(&RunSummary::new(TOOL, &options.config, options.device, seconds, &results))?;
    Ok(results)
}

/// `loss_history.csv` (every minibatch), `epochs.csv` and `loss.png` (the `kept` epoch marked).
fn write_history(log: &TrainState, kept: usize, out: &RunDir) -> Result<()> {
    let mut batches = String::from("iteration,loss\n");
    for (i, loss) in log.batch_losses.iter().enumerate() {
        batches += &format!("{i},{loss:.6}\n");
    }
    out.write("loss_history.csv", batches.as_bytes())?;
    let mut epochs = String::from("epoch,train_loss,val_loss,lr,seconds\n");
    for e in &log.epochs {
        let val_loss = e.score("val_loss");
        epochs += &format!("{},{:.6},{val_loss:.6},{:e},{:.3}\n", e.epoch, e.train_loss, e.lr, e.seconds);
    }
    out.write("epochs.csv", epochs.as_bytes())?;
    if log.batch_losses.is_empty() {
        return Ok(());
    }
    let per_epoch = log.batch_losses.len() as f64 / log.epochs.len().max(1) as f64;
    let series = [
        Series {
            name: "train loss (each minibatch)",
            color: RGBColor(31, 119, 180),
            points: log.batch_losses.iter().enumerate().map(|(i, &l)| (i as f64, l)).collect(),
        },
        Series {
            name: "val loss (end of epoch)",
            color: RGBColor(214, 39, 40),
            points: log.epochs.iter().map(|e| ((e.epoch + 1) as f64 * per_epoch, e.score("val_loss"))).collect(),
        },
    ];
    let chart = Chart {
        title: "Captioning loss history",
        x_label: "iteration",
        y_label: "loss (summed over words, per caption)",
        log_x: false,
        legend: SeriesLabelPosition::UpperRight,
    };
    let marker = plots::kept_epoch_marker(&series[1], kept);
    plots::line_chart(&out.file("loss.png"), &chart, &series, marker.as_ref().map(|(x, label)| (*x, label.as_str())))
}

/// Captions of up to `count` captioned images spread over `split`.
#[derive(Debug, Serialize)]
pub struct Sample {
    pub split: String,
    pub image: String,
    pub sampled: String,
    pub truths: Vec<String>,
}

fn spread_samples(
    net: &dyn Captioner,
    data: &CaptionData,
    split: &CaptionSplit,
    count: usize,
    options: &RunOptions,
) -> (Vec<i64>, Vec<Sample>) {
    let captioned = split.captioned_images();
    let count = captioned.len().min(count);
    let picks: Vec<i64> = (0..count).map(|k| captioned[k * captioned.len() / count.max(1)]).collect();
    let sampled = sample_images(net, split, &picks, &data.vocab, options.beam, options.device);
    let rows = split.rows_by_image();
    let samples = picks
        .iter()
        .zip(sampled)
        .map(|(image, sampled)| Sample {
            split: split.name.clone(),
            image: describe(&split.sources[*image as usize]),
            sampled,
            truths: split.decode(&rows[image], &data.vocab),
        })
        .collect();
    (picks, samples)
}

/// `samples_<split>.png`: captions of images spread over the split,
/// each with its first true caption.
fn sample_figure(
    net: &dyn Captioner,
    data: &CaptionData,
    split: &CaptionSplit,
    options: &RunOptions,
    out: &RunDir,
) -> Result<()> {
    let (picks, samples) = spread_samples(net, data, split, SAMPLES_PER_FIGURE, options);
    let panels: Vec<CaptionPanel> = picks
        .iter()
        .zip(samples)
        .map(|(image, sample)| CaptionPanel {
            picture: picture(&split.sources[*image as usize]),
            sampled: sample.sampled,
            truth: sample.truths.into_iter().next().unwrap_or_default(),
        })
        .collect();
    let name = &split.name;
    let title = format!(
        "{} captions of {name} images (blue: sampled, black: a true caption)",
        method_name(options.cell, options.beam)
    );
    plots::caption_samples(&out.file(&format!("samples_{name}.png")), &title, &panels)
}

/// The attention network's own sizes and regularisers (none for the other cells).
fn attention_dims(options: &RunOptions) -> Dims {
    match options.cell {
        CellKind::Attention => {
            Dims { attention: options.attention_width, attention_penalty: options.attention_penalty, ..Dims::default() }
        }
        _ => Dims::default(),
    }
}

/// "LSTM", or "TRANSFORMER, beam 3".
pub fn method_name(cell: CellKind, beam: usize) -> String {
    let cell = cell.name().to_uppercase();
    match beam {
        1 => cell,
        beam => format!("{cell}, beam {beam}"),
    }
}

fn describe(source: &ImageSource) -> String {
    match source {
        ImageSource::File(path) => path.display().to_string(),
        ImageSource::Url(url) => url.clone(),
        ImageSource::Unknown => String::new(),
    }
}

fn picture(source: &ImageSource) -> Result<Tensor, String> {
    match source {
        ImageSource::File(path) => decode_rgb(path).map(|rgb| image_tensor(&rgb)).map_err(|e| format!("{e:#}")),
        ImageSource::Url(url) => Err(format!("no image at hand (features only): {url}")),
        ImageSource::Unknown => Err("no image at hand (features only)".into()),
    }
}

/// This process' peak resident memory (Linux), in MB.
fn peak_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn results_markdown(s: &RunResults, device: Device, seconds_total: f64) -> String {
    let mut text = format!(
        "# Captioning: {} on {}\n\nweights of epoch {} ({:?}: val loss {:.4}); {} training captions, {} val images, vocabulary {}; \
         {:.1} s per epoch, {:.0} s in all, peak memory {} MB, {}.\n\n\
         Val scores as the COCO caption evaluation computes them (corpus BLEU: closest reference length, no smoothing; \
         ROUGE-L: LCS F-measure, β = 1.2, mean over images; CIDEr-D: TF-IDF of 1- to 4-grams over the val references, \
         clipped, σ = 6 length penalty, ×10, mean over images):\n\n\
         | method | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | ROUGE-L | CIDEr-D |\n|---|---|---|---|---|---|---|\n",
        s.cell.to_uppercase(),
        s.data,
        s.kept_epoch,
        s.keep,
        s.kept_val_loss,
        s.train_captions,
        s.val_images,
        s.vocabulary,
        s.seconds_per_epoch,
        seconds_total,
        s.peak_memory_mb.map_or("?".into(), |m| format!("{m:.0}")),
        crate::device::name(device)
    );
    for row in &s.scores {
        let b = row.bleu;
        text += &format!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
            row.method, b[0], b[1], b[2], b[3], row.rouge_l, row.cider_d
        );
    }
    if let Some(scenes) = s.scores.first().and_then(|row| row.scenes) {
        text += &format!(
            "\nOf the {} val scenes, how many captions have the true layout (how many digits, row or column), \
             the true digits (in any order), or are word for word a true caption; and of their {} digits, \
             how many a caption with the true layout names in their own place:\n\n\
             | method | layout right | digits right | exact true caption | digits in place |\n|---|---|---|---|---|\n",
            scenes.scenes, scenes.digits,
        );
        for row in &s.scores {
            let Some(t) = row.scenes else { continue };
            let share = |s: super::scenes::Share| format!("{} ({:.1}%)", s.count, 100.0 * s.fraction);
            text += &format!(
                "| {} | {} | {} | {} | {} |\n",
                row.method,
                share(t.layout_right),
                share(t.digits_right),
                share(t.exact_caption),
                share(t.digits_in_place)
            );
        }
    }
    text
}

/// Val images in the attention figure.
const ATTENTION_IMAGES: usize = 4;

/// `attention_val.png`, for a network that attends: images spread over the
/// val split, each with its greedy caption word by word and where each word
/// looked (the grid's weights over the picture the backbone saw).
fn attention_figure(
    net: &dyn Captioner,
    data: &CaptionData,
    options: &RunOptions,
    out: &RunDir,
    reporter: &dyn Reporter,
) -> Result<()> {
    let FeatureSource::Backbone { arch, image_size, .. } = options.features else { return Ok(()) };
    let sizing = crate::data::transforms::Sizing::of(&arch.preprocessing(), image_size);
    let captioned = data.val.captioned_images();
    let count = captioned.len().min(ATTENTION_IMAGES);
    let picks: Vec<i64> = (0..count).map(|k| captioned[k * captioned.len() / count.max(1)]).collect();
    let features = data.val.features.index_select(0, &Tensor::from_slice(&picks));
    let features = features.to_device(options.device).to_kind(tch::Kind::Float);
    let (tokens, Some(attention)) =
        super::decoder::greedy_with_attention(net, &features, super::evaluate::MAX_SAMPLE_WORDS)
    else {
        return Ok(());
    };
    let (tokens, attention) = (tokens.to_device(Device::Cpu), attention.to_device(Device::Cpu));
    let (_, steps, locations) = attention.size3()?;
    let side = (locations as f64).sqrt().round() as i64;
    if side * side != locations {
        reporter.warning(&format!("no attention figure: a grid of {locations} locations is not square"));
        return Ok(());
    }
    let mut panels = Vec::with_capacity(picks.len());
    for (row, image) in picks.iter().enumerate() {
        let ImageSource::File(path) = &data.val.sources[*image as usize] else { continue };
        let row = row as i64;
        let words = data.vocab.decode_words(&Vec::<i64>::try_from(tokens.get(row))?);
        panels.push(plots::AttentionPanel {
            picture: super::features::seen_picture(path, &sizing)?,
            words: words.into_iter().map(String::from).collect(),
            weights: attention.get(row).reshape([steps, side, side]),
        });
    }
    let title =
        format!("Where {} looked for each word of its greedy val captions", method_name(options.cell, options.beam));
    plots::attention_maps(&out.file("attention_val.png"), &title, &panels)
}
