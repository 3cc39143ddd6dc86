//! Using a trained model: load a `best_model.safetensors` with its recorded
//! architecture, classes and normalization; predict class probabilities for
//! image files (a multi-label model: every label above its threshold);
//! evaluate a labelled split, a class folder or the rows of a labels file
//! (accuracy, macro-F1, balanced accuracy, per-class precision, recall and
//! F1, confusion matrix; a multi-label model: mAP, F1, exact match,
//! per-class average precision). Either may average each image's
//! probabilities over test-time views (`--tta`, [`crate::data::tta`]).

use super::cam::{top_losses, TopLoss};
use super::evaluate::{confusion, loss_and_correct};
use super::multi_label::{self, MultiLabelScores};
use super::outcomes::{self, ImageOutcome};
use crate::data::decode::decode_rgb;
use crate::data::image_folder::{ImageFolder, Sample};
use crate::data::labels_file::{BadRows, LabelsFile, Reading, Split};
use crate::data::loader::{image_tensor, DecodedSplit, PixelBudget};
use crate::data::tta::{self, Tta};
use crate::models::Classifier;
use crate::persist::model_card::ModelCard;
use crate::report::{csv_field, Reporter, Silent};
use crate::run_dir::BEST_MODEL_FILE;
use crate::train::amp::Autocast;
use crate::train::frozen_backbone::{predict_probabilities, FrozenPass};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub struct TrainedModel {
    pub model: Classifier,
    pub card: ModelCard,
    pub classes: Vec<String>,
    /// The model file read (a run folder's best model when given the folder).
    pub path: PathBuf,
    /// A multi-label model's threshold: its card's unless set otherwise;
    /// none for a single-label model.
    pub threshold: Option<f64>,
    /// The views of each image whose probabilities are averaged.
    pub tta: Tta,
}

impl TrainedModel {
    /// Loads a model saved by `finetune`: its `.safetensors` file, or the
    /// run folder that holds it.
    pub fn load(checkpoint: &Path, device: Device) -> Result<Self> {
        let path = if checkpoint.is_dir() { checkpoint.join(BEST_MODEL_FILE) } else { checkpoint.to_owned() };
        if !path.is_file() {
            bail!(
                "{}: no saved model there (expected a {BEST_MODEL_FILE} or a run folder holding one)",
                path.display()
            );
        }
        let card = ModelCard::read(&path)?;
        let mut model = Classifier::for_images(card.arch, card.classes.len() as i64, card.image_size, device);
        crate::persist::weights::load_all(&mut model, &path)?;
        model.multi_label = card.multi_label.is_some();
        let threshold = card.multi_label.as_ref().map(|m| m.threshold);
        Ok(Self { model, classes: card.classes.clone(), card, path, threshold, tta: Tta::None })
    }

    /// Sets a multi-label model's threshold (`--threshold`); refused for a
    /// single-label model, whose prediction is its top class.
    pub fn set_threshold(&mut self, threshold: f64) -> Result<()> {
        if self.threshold.is_none() {
            bail!("--threshold {threshold}: {} is a single-label model (its prediction is the top class); only multi-label models threshold their outputs", self.path.display());
        }
        if !(threshold > 0.0 && threshold < 1.0) {
            bail!("--threshold {threshold}: must be a probability between 0 and 1");
        }
        self.threshold = Some(threshold);
        Ok(())
    }

    /// Probabilities `[N, classes]` for `[N, 3, S, S]` images in [0, 1]
    /// (a bar from `reporter` counts the batches).
    pub fn probabilities(&self, images: &Tensor, device: Device, reporter: &dyn Reporter) -> Tensor {
        let pass = FrozenPass { normalization: self.card.normalization, device, autocast: Autocast::Off };
        predict_probabilities(&self.model, images, pass, "predict", reporter)
    }

    /// Probabilities `[N, classes]` of `images` (`[3, H, W]` u8 each, as
    /// decoded), averaged over each one's [`TrainedModel::tta`] views.
    pub fn probabilities_of(&self, images: &[Tensor], device: Device, reporter: &dyn Reporter) -> Tensor {
        let sizing = self.card.sizing();
        let views: Vec<Tensor> = images.iter().map(|image| tta::views(image, &sizing, self.tta)).collect();
        let probs = self.probabilities(&Tensor::cat(&views, 0), device, reporter);
        let per_view = probs.view([images.len() as i64, self.tta.views() as i64, -1]);
        per_view.mean_dim([1i64].as_slice(), false, Kind::Float)
    }

    /// The probabilities of every image of `split` (bars from `reporter`).
    fn split_probabilities(&self, split: &DecodedSplit, device: Device, reporter: &dyn Reporter) -> Tensor {
        if self.tta == Tta::None {
            return self.probabilities(&split.val_tensor(), device, reporter);
        }
        let rows: Vec<usize> = (0..split.len()).collect();
        let bar = reporter.bar(split.len() as u64, &format!("predict ({} views each)", self.tta.views()));
        let chunks: Vec<Tensor> = rows
            .chunks(PREDICT_CHUNK)
            .map(|chunk| {
                let images: Vec<Tensor> = chunk.iter().map(|&i| image_tensor(&split.rgb(i))).collect();
                let probs = self.probabilities_of(&images, device, &Silent);
                bar.inc(chunk.len() as u64);
                probs
            })
            .collect();
        bar.finish_and_clear();
        Tensor::cat(&chunks, 0)
    }
}

/// Images decoded and scored at a time when predicting files or averaging views.
const PREDICT_CHUNK: usize = 32;

#[derive(Debug, Serialize)]
pub struct ClassProbability {
    pub class: String,
    pub probability: f64,
}

#[derive(Debug, Serialize)]
pub struct Prediction {
    pub path: PathBuf,
    /// Highest first (a multi-label model's: those above its threshold);
    /// absent when the file could not be decoded.
    pub top: Vec<ClassProbability>,
    pub error: Option<String>,
    /// Every class's probability, in the model's class order (empty when
    /// the file could not be decoded).
    #[serde(skip)]
    pub probabilities: Vec<f64>,
}

impl Prediction {
    fn of(trained: &TrainedModel, path: &Path, probabilities: Vec<f64>, top_k: usize) -> Self {
        let mut top: Vec<ClassProbability> = trained
            .classes
            .iter()
            .zip(&probabilities)
            .map(|(class, &probability)| ClassProbability { class: class.clone(), probability })
            .collect();
        top.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        if let Some(threshold) = trained.threshold {
            top.retain(|c| c.probability > threshold);
        }
        top.truncate(top_k.max(1));
        Self { path: path.to_owned(), top, error: None, probabilities }
    }

    fn failed(path: &Path, error: &anyhow::Error) -> Self {
        let error = Some(error.root_cause().to_string());
        Self { path: path.to_owned(), top: Vec::new(), error, probabilities: Vec::new() }
    }
}

/// Predicts `files` a chunk at a time and hands each file's row to `emit`,
/// in order: its `top_k` classes (a multi-label model's: of those above its
/// threshold) and every class's probability, or the error of a file that
/// does not decode. Only one chunk of images is held at a time. Returns how
/// many files failed; a bar from `reporter` counts the files.
pub fn predict_files(
    trained: &TrainedModel,
    files: &[PathBuf],
    top_k: usize,
    device: Device,
    reporter: &dyn Reporter,
    emit: &mut dyn FnMut(&Prediction) -> Result<()>,
) -> Result<usize> {
    let bar = reporter.bar(files.len() as u64, "predict");
    let mut failed = 0;
    for chunk in files.chunks(PREDICT_CHUNK) {
        let decoded: Vec<Result<Tensor>> = chunk.par_iter().map(|path| Ok(image_tensor(&decode_rgb(path)?))).collect();
        let images: Vec<Tensor> = decoded.iter().flatten().map(Tensor::shallow_clone).collect();
        let probs = match images.is_empty() {
            true => Tensor::new(),
            false => trained.probabilities_of(&images, device, &Silent).to_kind(Kind::Double),
        };
        let mut row = 0;
        for (path, image) in chunk.iter().zip(&decoded) {
            let prediction = match image {
                Ok(_) => {
                    row += 1;
                    Prediction::of(trained, path, Vec::<f64>::try_from(probs.get(row - 1))?, top_k)
                }
                Err(error) => {
                    failed += 1;
                    Prediction::failed(path, error)
                }
            };
            emit(&prediction)?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(failed)
}

/// `predict --csv`: one row per file as it is predicted — `path`, the
/// prediction (the top class; a multi-label model's labels above its
/// threshold, joined by its label delimiter), each class's probability,
/// and the error of a file that does not decode — flushed row by row, so
/// a run stopped halfway keeps what it predicted.
pub struct PredictionsCsv {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    classes: usize,
    label_delim: Option<char>,
}

impl PredictionsCsv {
    pub fn create(path: &Path, trained: &TrainedModel) -> Result<Self> {
        let file =
            std::fs::File::create(path).with_context(|| format!("--csv {}: cannot create it", path.display()))?;
        let label_delim = trained.card.multi_label.as_ref().map(|m| m.label_delim);
        let classes = trained.classes.len();
        let mut csv = Self { file: std::io::BufWriter::new(file), path: path.to_owned(), classes, label_delim };
        let header: Vec<String> = trained.classes.iter().map(|c| csv_field(c)).collect();
        csv.line(&format!("path,prediction,{},error", header.join(",")))?;
        Ok(csv)
    }

    pub fn write(&mut self, prediction: &Prediction) -> Result<()> {
        let predicted: Vec<&str> = prediction.top.iter().map(|c| c.class.as_str()).collect();
        let predicted = match self.label_delim {
            Some(delim) => predicted.join(&delim.to_string()),
            None => predicted.first().copied().unwrap_or_default().to_owned(),
        };
        let probabilities = match &prediction.error {
            Some(_) => vec![String::new(); self.classes],
            None => prediction.probabilities.iter().map(|p| format!("{p:.6}")).collect(),
        };
        let path = csv_field(&prediction.path.display().to_string());
        let error = csv_field(prediction.error.as_deref().unwrap_or_default());
        self.line(&format!("{path},{},{},{error}", csv_field(&predicted), probabilities.join(",")))
    }

    fn line(&mut self, line: &str) -> Result<()> {
        use std::io::Write;
        let written = writeln!(self.file, "{line}").and_then(|()| self.file.flush());
        written.with_context(|| format!("--csv {}: cannot write", self.path.display()))
    }
}

#[derive(Debug, Serialize)]
pub struct ClassReport {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: i64,
}

#[derive(Debug, Serialize)]
pub struct Evaluation {
    pub split: PathBuf,
    pub images: usize,
    pub accuracy: f64,
    /// scikit-learn's `f1_score(average="macro")` and `balanced_accuracy_score`.
    pub macro_f1: f64,
    pub balanced_accuracy: f64,
    pub loss: f64,
    /// The views each image's probabilities were averaged over.
    pub tta: Tta,
    pub per_class: Vec<ClassReport>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<i64>>,
    pub skipped: Vec<String>,
    /// The images of highest loss, when asked for ([`Evaluation::find_top_losses`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_losses: Vec<TopLoss>,
    /// Each image's outcome, paths relative to the split folder's parent
    /// (`val/ants/1.jpg` for a dataset's val split).
    #[serde(skip)]
    pub outcomes: Vec<ImageOutcome>,
    /// Each image's file, class index and probabilities.
    #[serde(skip)]
    scored: (Vec<PathBuf>, Vec<i64>, Tensor),
}

impl Evaluation {
    /// Fills [`Evaluation::top_losses`] with the `k` images of highest loss.
    pub fn find_top_losses(&mut self, k: usize, classes: &[String]) {
        let (paths, labels, probs) = &self.scored;
        self.top_losses = top_losses(paths, labels, probs, classes, k);
    }
}

/// The split folder to evaluate for `data`: `data` itself when its class
/// folders are the model's, or its `val/` when `data` is a dataset root
/// (`train/` and `val/` inside); the note says which was taken.
pub fn resolve_split(data: &Path, classes: &[String]) -> Result<(ImageFolder, Option<String>)> {
    let val = data.join("val");
    if data.join("train").is_dir() && val.is_dir() && !classes.iter().any(|c| c == "train" || c == "val") {
        if let Ok((folder, subset)) = with_model_classes(ImageFolder::scan(&val)?, classes) {
            let root = format!("{} is a dataset root: evaluating its val split ({})", data.display(), val.display());
            return Ok((folder, Some(subset.map_or(root.clone(), |subset| format!("{root}; {subset}")))));
        }
    }
    with_model_classes(ImageFolder::scan(data)?, classes)
}

/// `folder` labelled by the model's class indices. A split may hold some
/// of the model's classes (a folder of ants alone): then the note says
/// which; a class the model does not know is an error naming it.
fn with_model_classes(folder: ImageFolder, classes: &[String]) -> Result<(ImageFolder, Option<String>)> {
    if folder.classes == classes {
        return Ok((folder, None));
    }
    let index_in_model = |class: &String| classes.iter().position(|c| c == class);
    if let Some(unknown) = folder.classes.iter().find(|c| index_in_model(c).is_none()) {
        bail!(
            "{}: class folder {unknown:?} is not one of the model's classes {classes:?} (a split holds some or all of them)",
            folder.root.display()
        );
    }
    let note = format!(
        "{} holds {} of the model's {} classes ({}); the others have no images to score",
        folder.root.display(),
        folder.classes.len(),
        classes.len(),
        folder.classes.join(", ")
    );
    let indices: Vec<usize> = folder.classes.iter().filter_map(index_in_model).collect();
    let samples = folder.samples.into_iter().map(|s| Sample { class_index: indices[s.class_index], ..s }).collect();
    Ok((ImageFolder { classes: classes.to_vec(), samples, ..folder }, Some(note)))
}

/// Evaluates a trained model on one split folder (`DIR/<class>/*`), with
/// bars from `reporter`.
pub fn evaluate_split(
    trained: &TrainedModel,
    folder: &ImageFolder,
    device: Device,
    reporter: &dyn Reporter,
) -> Result<Evaluation> {
    let split_dir = &folder.root;
    let bar = reporter.bar(folder.samples.len() as u64, "decoding");
    let mut split = DecodedSplit::decode(folder, false, &mut PixelBudget::default(), &bar)?;
    split.sizing = trained.card.sizing();
    bar.finish_and_clear();
    let probs = trained.split_probabilities(&split, device, reporter);
    let labels = split.labels_tensor();
    let (loss, correct) = loss_and_correct(&probs, &labels);
    let outcomes = outcomes::of_split(&split, &probs, split_dir.parent().unwrap_or(split_dir))?;
    let matrix = confusion(&probs, &labels);
    let per_class = (0..matrix.classes())
        .map(|c| ClassReport {
            class: trained.classes[c].clone(),
            precision: matrix.precision(c),
            recall: matrix.recall(c),
            f1: matrix.f1(c),
            support: matrix.support(c) as i64,
        })
        .collect();
    let counts = matrix.counts.iter().map(|row| row.iter().map(|&n| n as i64).collect()).collect();
    Ok(Evaluation {
        split: split_dir.clone(),
        images: split.len(),
        accuracy: correct as f64 / split.len() as f64,
        macro_f1: matrix.macro_f1(),
        balanced_accuracy: matrix.balanced_accuracy(),
        loss,
        tta: trained.tta,
        per_class,
        confusion: counts,
        skipped: split.bad_files.iter().map(|b| format!("{}: {}", b.path.display(), b.reason)).collect(),
        top_losses: Vec::new(),
        outcomes,
        scored: (split.paths.clone(), split.labels.clone(), probs),
    })
}

/// The split to evaluate from a labels file (paths from `root`, or the
/// file's folder): its val rows when it has any (a training run's file),
/// else every row, labelled by the model's classes (a label the model does
/// not know is an error naming its line). Also the rows left out, and a
/// note saying which rows were taken. A multi-label model's rows split on
/// `label_delim`, or on the delimiter it was trained with.
pub fn resolve_labels(
    labels: &Path,
    root: Option<&Path>,
    trained: &TrainedModel,
    label_delim: Option<char>,
) -> Result<(ImageFolder, BadRows, Option<String>)> {
    let label_delim = match (label_delim, &trained.card.multi_label) {
        (None, Some(multi_label)) => Some(multi_label.label_delim),
        (Some(_), Some(_)) | (None, None) => label_delim,
        (Some(delim), None) => bail!(
            "--label-delim {delim:?}: {} is a single-label model; its labels file has one label per row",
            trained.path.display()
        ),
    };
    let root = root.or(labels.parent()).unwrap_or(Path::new("."));
    let file = LabelsFile::read(labels, Reading { root, label_delim, strict: false })?;
    let val_rows = file.rows_of(Split::Val);
    let (rows, note) = match val_rows.is_empty() {
        true => (file.rows.iter().collect(), None),
        false => {
            let note =
                format!("{}: evaluating its {} val rows (of {})", labels.display(), val_rows.len(), file.rows.len());
            (val_rows, Some(note))
        }
    };
    let folder = file.folder(&rows, &trained.classes, trained.threshold.is_some())?;
    Ok((folder, file.bad_rows.clone(), note))
}

/// A multi-label model's evaluation on a split.
#[derive(Debug, Serialize)]
pub struct MultiLabelEvaluation {
    pub split: PathBuf,
    pub images: usize,
    /// The views each image's probabilities were averaged over.
    pub tta: Tta,
    #[serde(flatten)]
    pub scores: MultiLabelScores,
    pub skipped: Vec<String>,
    /// Each image's file, multi-hot targets and probabilities.
    #[serde(skip)]
    paths: Vec<PathBuf>,
    #[serde(skip)]
    targets: Tensor,
    #[serde(skip)]
    probs: Tensor,
}

impl MultiLabelEvaluation {
    /// Writes the per-image scores (`val_scores.csv`'s format) to `path`.
    pub fn write_scores(&self, path: &Path) -> Result<()> {
        let classes: Vec<String> = self.scores.per_class.iter().map(|c| c.class.clone()).collect();
        multi_label::write_val_scores(path, &self.paths, &classes, &self.targets, &self.probs)
    }
}

/// Evaluates a multi-label model on `folder` (multi-label samples, as
/// [`resolve_labels`] gives them) at its threshold, with bars from `reporter`.
pub fn evaluate_multi_label(
    trained: &TrainedModel,
    folder: &ImageFolder,
    device: Device,
    reporter: &dyn Reporter,
) -> Result<MultiLabelEvaluation> {
    let Some(threshold) = trained.threshold else {
        bail!("{}: a single-label model (evaluate it with accuracy and a confusion matrix)", trained.path.display())
    };
    let bar = reporter.bar(folder.samples.len() as u64, "decoding");
    let mut split = DecodedSplit::decode(folder, false, &mut PixelBudget::default(), &bar)?;
    split.sizing = trained.card.sizing();
    bar.finish_and_clear();
    let probs = trained.split_probabilities(&split, device, reporter);
    let targets = split.labels_tensor();
    Ok(MultiLabelEvaluation {
        split: folder.root.clone(),
        images: split.len(),
        tta: trained.tta,
        scores: multi_label::score(&probs, &targets, &trained.classes, threshold),
        skipped: split.bad_files.iter().map(|b| format!("{}: {}", b.path.display(), b.reason)).collect(),
        paths: split.paths.clone(),
        targets,
        probs,
    })
}
