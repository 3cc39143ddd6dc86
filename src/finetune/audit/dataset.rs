//! What an audit looks at: a list of (file, class, split) samples. The
//! image folder training reads makes one ([`Dataset::from_folders`]); any
//! other source of labelled files (a labels file) need only build the same
//! list.

use crate::data::image_folder::ImageFolder;
use anyhow::Result;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The split a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// One labelled file.
#[derive(Debug, Clone)]
pub struct AuditSample {
    pub path: PathBuf,
    pub class_index: usize,
    pub split: Split,
}

/// Where the val samples came from.
#[derive(Debug, Clone, PartialEq)]
pub enum ValSource {
    /// A folder beside train/ (its name).
    Folder(String),
    /// Held out of train/ as `--val-split` holds it out.
    HeldOut { fraction: f64, seed: u64 },
    /// None: train/ alone.
    Absent,
}

impl ValSource {
    pub fn describe(&self) -> String {
        match self {
            ValSource::Folder(name) => format!("train/ and {name}/"),
            ValSource::HeldOut { fraction, seed } => {
                format!("train/, with the val split training holds out by --val-split {fraction} --seed {seed}")
            }
            ValSource::Absent => "train/ alone (no val/ folder)".to_owned(),
        }
    }
}

/// The labelled files of a data set, and what was found beside them.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Paths in reports are given relative to it.
    pub root: PathBuf,
    pub classes: Vec<String>,
    pub samples: Vec<AuditSample>,
    /// Files in the class folders that are not images by extension (training ignores them).
    pub not_images: Vec<PathBuf>,
    pub val: ValSource,
}

impl Dataset {
    /// `data/train/<class>/*` and, as training finds its val split,
    /// `data/<val_dir>/<class>/*`, or the part of train/ that
    /// `val_split` holds out with `seed`, or no val split when neither is
    /// there. Classes missing from one split are kept (with no samples
    /// there) for the audit to report.
    pub fn from_folders(data: &Path, val_dir: &str, val_split: Option<f64>, seed: u64) -> Result<Self> {
        let train = ImageFolder::scan(&data.join("train"))?;
        let (train, val, source) = match val_split {
            Some(fraction) => {
                let (train, val) = train.split_off(fraction, seed)?;
                (train, Some(val), ValSource::HeldOut { fraction, seed })
            }
            None if data.join(val_dir).is_dir() => {
                let val = ImageFolder::scan(&data.join(val_dir))?;
                (train, Some(val), ValSource::Folder(val_dir.to_owned()))
            }
            None => (train, None, ValSource::Absent),
        };
        let mut classes = train.classes.clone();
        classes.extend(val.iter().flat_map(|v| v.classes.iter().cloned()));
        classes.sort();
        classes.dedup();
        let mut dataset =
            Dataset { root: data.to_owned(), classes, samples: Vec::new(), not_images: Vec::new(), val: source };
        dataset.add(train, Split::Train);
        if let Some(val) = val {
            dataset.add(val, Split::Val);
        }
        Ok(dataset)
    }

    fn add(&mut self, folder: ImageFolder, split: Split) {
        for sample in folder.samples {
            let name = &folder.classes[sample.class_index];
            let class_index = self.classes.iter().position(|c| c == name).expect("classes hold every split's");
            self.samples.push(AuditSample { path: sample.path, class_index, split });
        }
        self.not_images.extend(folder.ignored);
    }

    /// The splits audited, in order.
    pub fn splits(&self) -> Vec<Split> {
        match self.val {
            ValSource::Absent => vec![Split::Train],
            _ => vec![Split::Train, Split::Val],
        }
    }

    /// `path` as reports show it: relative to the root when inside it.
    pub fn shown(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).display().to_string()
    }
}
