//! The data of a fine-tuning run: the train and val folders found (a val
//! folder by name, part of train/ held out, or one fold of K over train/
//! and val/ pooled or train/ alone: `crate::data::folds`), or the rows of a
//! labels file (its val rows, part of its train rows held out, or one fold
//! of K over its rows, all of them or the train rows alone), then
//! decoded within the memory budget, with the val images transformed once.

use super::config::{FinetuneConfig, FoldsOver};
use crate::data::image_folder::ImageFolder;
use crate::data::labels_file::{self, BadRows, LabelsFile, Reading, Split};
use crate::data::loader::{DecodedSplit, PixelBudget};
use crate::report::Reporter;
use anyhow::{bail, Result};
use std::path::Path;
use tch::Tensor;

/// The folders of a run, scanned (file names only, nothing decoded).
pub struct Folders {
    pub train: ImageFolder,
    pub val: ImageFolder,
    /// The rows of a labels file left out (none for the folder layout).
    pub bad_rows: BadRows,
}

impl Folders {
    pub fn scan(config: &FinetuneConfig) -> Result<Self> {
        if let Some(labels) = &config.labels {
            return Self::from_labels(config, labels);
        }
        let (train, val) = match (config.val_split, config.kfold()) {
            (Some(fraction), _) => ImageFolder::scan(&config.data.join("train"))?.split_off(fraction, config.seed)?,
            (None, Some(kfold)) => kfold.split(Self::fold_pool(config)?)?,
            (None, None) => ImageFolder::scan_train_and(&config.data, &config.val_dir)?,
        };
        Ok(Self { train, val, bad_rows: BadRows::default() })
    }

    /// The splits of a labels file, which must be the one the run started
    /// with: its classes are every label of its good rows.
    fn from_labels(config: &FinetuneConfig, labels: &Path) -> Result<Self> {
        let digest = labels_file::digest(labels)?;
        if let Some(saved) = config.labels_digest.as_ref().filter(|saved| **saved != digest) {
            bail!(
                "--labels {}: the file changed since this run started ({saved}, now {digest}); its rows decide the classes and splits: put the original back, or start a new run with --out",
                labels.display()
            );
        }
        let reading = Reading { root: &config.data, label_delim: config.label_delim, strict: config.strict };
        let file = LabelsFile::read(labels, reading)?;
        let classes = file.classes();
        let folder = |split| file.folder(&file.rows_of(split), &classes, config.multi_label());
        let has_val_rows = !file.rows_of(Split::Val).is_empty();
        let (train, val) = match (config.val_split, has_val_rows) {
            (None, _) if config.kfold().is_some() => {
                let pooled = match config.folds_over {
                    FoldsOver::TrainAndVal => file.rows.iter().collect(),
                    FoldsOver::Train => file.rows_of(Split::Train),
                };
                let pool = file.folder(&pooled, &classes, config.multi_label())?;
                config.kfold().expect("checked").split(pool)?
            }
            (None, true) => (folder(Split::Train)?, folder(Split::Val)?),
            (Some(fraction), false) => folder(Split::Train)?.split_off(fraction, config.seed)?,
            (Some(fraction), true) => bail!(
                "--val-split {fraction}: {} has val rows (its split column); drop --val-split, or mark those rows train",
                labels.display()
            ),
            (None, false) => bail!(
                "{}: no val rows (split column val); add them, or hold out part of the train rows with --val-split 0.2",
                labels.display()
            ),
        };
        let trained = |class: usize| {
            train
                .samples
                .iter()
                .any(|s| s.label_set.as_ref().map_or(s.class_index == class, |set| set.contains(&class)))
        };
        if let Some(untrained) = (0..classes.len()).find(|&class| !trained(class)) {
            bail!(
                "{}: label {:?} has no train rows (only val ones), so the model could not learn it",
                labels.display(),
                classes[untrained]
            );
        }
        Ok(Self { train, val, bad_rows: file.bad_rows })
    }

    /// The images `--folds` deals: train/ alone, or pooled with the val
    /// folder (named as the data folder).
    fn fold_pool(config: &FinetuneConfig) -> Result<ImageFolder> {
        match config.folds_over {
            FoldsOver::Train => ImageFolder::scan(&config.data.join("train")),
            FoldsOver::TrainAndVal => {
                let (train, val) = ImageFolder::scan_train_and(&config.data, &config.val_dir)?;
                let samples = train.samples.into_iter().chain(val.samples).collect();
                let ignored = train.ignored.into_iter().chain(val.ignored).collect();
                Ok(ImageFolder { root: config.data.clone(), classes: train.classes, samples, ignored })
            }
        }
    }

    pub fn classes(&self) -> &[String] {
        &self.train.classes
    }
}

/// Decoded data of a run.
pub struct Splits {
    pub train: DecodedSplit,
    pub val: DecodedSplit,
    /// Val images after the val transform, `[N, 3, S, S]` in [0, 1].
    pub val_images: Tensor,
    /// The labels file's rows left out, one line each (`FILE line N: why`).
    pub bad_rows: Vec<String>,
}

impl Splits {
    /// What data-parallel ranks must agree on: the classes, the images of
    /// each split, and a hash of their file names and labels.
    pub fn fingerprint(&self) -> Tensor {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for split in [&self.train, &self.val] {
            split.classes.hash(&mut hasher);
            split.labels.hash(&mut hasher);
            split.label_sets.hash(&mut hasher);
            split.paths.iter().map(|p| p.file_name()).for_each(|name| name.hash(&mut hasher));
        }
        let counts = [self.train.classes.len(), self.train.len(), self.val.len()].map(|n| n as i64);
        Tensor::from_slice(&[counts[0], counts[1], counts[2], hasher.finish() as i64])
    }

    /// Decodes both folders (a bar from `reporter` counts the images), then
    /// reports the files skipped and what the data holds.
    pub fn decode(folders: &Folders, config: &FinetuneConfig, reporter: &dyn Reporter) -> Result<Self> {
        for line in folders.bad_rows.report() {
            reporter.warning(&line);
        }
        let total = (folders.train.samples.len() + folders.val.samples.len()) as u64;
        let bar = reporter.bar(total, "decoding images");
        let mut budget = PixelBudget::megabytes(config.cache_mb);
        let mut train = DecodedSplit::decode(&folders.train, config.strict, &mut budget, &bar)?;
        let mut val = DecodedSplit::decode(&folders.val, config.strict, &mut budget, &bar)?;
        bar.finish_and_clear();
        train.sizing = config.sizing();
        train.augment = config.augment_recipe();
        train.erase_fill = config.arch.normalization().zero_point();
        train.sampler = config.sampler;
        val.sizing = config.sizing();
        for bad in train.bad_files.iter().chain(&val.bad_files) {
            reporter.warning(&format!("skipped {}: {}", bad.path.display(), bad.reason));
        }
        reporter.line(&format!(
            "data: {} | classes {:?} | train {} images, val {} images ({}), {} file(s) skipped",
            match &config.labels {
                Some(labels) => format!("{} (paths from {})", labels.display(), config.data.display()),
                None => config.data.display().to_string(),
            },
            train.classes,
            train.len(),
            val.len(),
            config.val_description(),
            train.bad_files.len() + val.bad_files.len()
        ));
        let ((train_bytes, train_encoded), (val_bytes, val_encoded)) = (train.memory(), val.memory());
        reporter.line(&format!(
            "decoded images held: {} MB of --cache-mb {}{}",
            (train_bytes + val_bytes).div_ceil(1 << 20),
            config.cache_mb,
            match train_encoded + val_encoded {
                0 => String::new(),
                n => format!(" ({n} images beyond it are decoded at each use)"),
            }
        ));
        let val_images = val.val_tensor();
        Ok(Self { train, val, val_images, bad_rows: folders.bad_rows.lines() })
    }
}
