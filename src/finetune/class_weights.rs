//! `--class-weights auto|FILE`: the per-class weights of a run's training
//! loss (`crate::train::loss`, torch's `weight=`). `auto` is scikit-learn's
//! `compute_class_weight("balanced")` over the decoded train split,
//! n_samples / (n_classes · count_c); a FILE holds one `class,weight` line
//! per class. A FILE is read as soon as the classes are known, so a bad
//! one fails before any image is decoded ([`ClassWeightsPlan`]).

use crate::data::loader::DecodedSplit;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// `--class-weights` as given: `auto`, or a file (absolute once resolved;
/// a file named `auto` is `./auto`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum ClassWeighting {
    Auto,
    File(PathBuf),
}

impl From<String> for ClassWeighting {
    fn from(text: String) -> Self {
        if text == "auto" {
            Self::Auto
        } else {
            Self::File(PathBuf::from(text))
        }
    }
}

impl From<ClassWeighting> for String {
    fn from(weighting: ClassWeighting) -> Self {
        weighting.to_string()
    }
}

impl std::fmt::Display for ClassWeighting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The weight of every class, in the classes' order.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassWeights {
    pub classes: Vec<String>,
    pub weights: Vec<f64>,
    /// Where they come from, in words (`auto`, the file).
    pub source: String,
}

/// The largest class-weights file read: one short line per class.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// scikit-learn's `compute_class_weight("balanced")` for classes of
/// `counts` samples: n_samples / (n_classes · count_c), `None` for a class
/// without samples.
pub fn balanced_weights(counts: &[usize]) -> Vec<Option<f64>> {
    let per_class = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    counts.iter().map(|&count| (count > 0).then(|| per_class / count as f64)).collect()
}

impl ClassWeights {
    /// [`balanced_weights`] for samples labelled `labels` (class indices).
    pub fn balanced(classes: &[String], labels: &[i64]) -> Result<Self> {
        let mut counts = vec![0usize; classes.len()];
        labels.iter().for_each(|&label| counts[label as usize] += 1);
        let weights: Option<Vec<f64>> = balanced_weights(&counts).into_iter().collect();
        let Some(weights) = weights else {
            let empty = counts.iter().position(|&count| count == 0).expect("a class without samples");
            bail!("--class-weights auto: class {:?} has no training images to weigh", classes[empty]);
        };
        Ok(Self { classes: classes.to_vec(), weights, source: "auto".into() })
    }

    /// The weights of `classes` in `path`: a `class,weight` line for each
    /// (blank lines, `#` comments and a `class,weight` header allowed);
    /// anything else is a one-line error naming the file and line.
    pub fn read(path: &Path, classes: &[String]) -> Result<Self> {
        let shown = path.display();
        let size = std::fs::metadata(path).with_context(|| format!("--class-weights {shown}: cannot read"))?.len();
        if size > MAX_FILE_BYTES {
            bail!("--class-weights {shown}: {size} bytes; a class-weights file is one class,weight line per class");
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("--class-weights {shown}: cannot read"))?;
        let mut given: Vec<Option<(f64, usize)>> = vec![None; classes.len()];
        for (index, line) in text.lines().enumerate() {
            let (number, line) = (index + 1, line.trim());
            let at = format!("{shown}:{number}");
            if line.is_empty() || line.starts_with('#') || line.replace(' ', "") == "class,weight" {
                continue;
            }
            let Some((class, weight)) = line.rsplit_once(',') else {
                bail!("{at}: expected class,weight, found {line:?}");
            };
            let (class, weight) = (class.trim(), weight.trim());
            let Some(c) = classes.iter().position(|known| known == class) else {
                bail!("{at}: class {class:?} is not one of the training classes {classes:?}");
            };
            if let Some((_, first)) = given[c] {
                bail!("{at}: class {class:?} is given twice (first on line {first})");
            }
            match weight.parse::<f64>() {
                Ok(w) if w.is_finite() && w > 0.0 => given[c] = Some((w, number)),
                _ => bail!("{at}: weight {weight:?} of class {class:?} must be a positive finite number"),
            }
        }
        let mut weights = Vec::with_capacity(classes.len());
        for (class, weight) in classes.iter().zip(given) {
            match weight {
                Some((w, _)) => weights.push(w),
                None => bail!("{shown}: no line for class {class:?} (every training class needs a weight)"),
            }
        }
        Ok(Self { classes: classes.to_vec(), weights, source: shown.to_string() })
    }

    /// The weights as a `[classes]` fp32 tensor on `device`, the loss's `weight=`.
    pub fn tensor(&self, device: Device) -> Tensor {
        Tensor::from_slice(&self.weights).to_kind(Kind::Float).to_device(device)
    }

    /// Class → weight, as `summary.json` records them.
    pub fn by_class(&self) -> BTreeMap<String, f64> {
        self.classes.iter().cloned().zip(self.weights.iter().copied()).collect()
    }

    /// `class weights (auto): ants 0.8333, bees 1.2500`, said at start.
    pub fn describe(&self) -> String {
        let each: Vec<String> = self.classes.iter().zip(&self.weights).map(|(c, w)| format!("{c} {w:.4}")).collect();
        format!("class weights ({}): {}", self.source, each.join(", "))
    }
}

/// A run's class weights in two steps: a FILE read once the classes are
/// known, `auto` once the train split is decoded.
pub enum ClassWeightsPlan {
    Unweighted,
    Auto,
    Read(ClassWeights),
}

impl ClassWeightsPlan {
    pub fn new(weighting: Option<&ClassWeighting>, classes: &[String]) -> Result<Self> {
        Ok(match weighting {
            None => Self::Unweighted,
            Some(ClassWeighting::Auto) => Self::Auto,
            Some(ClassWeighting::File(path)) => Self::Read(ClassWeights::read(path, classes)?),
        })
    }

    /// The weights for the decoded `train` split (none when unweighted).
    pub fn resolve(self, train: &DecodedSplit) -> Result<Option<ClassWeights>> {
        match self {
            Self::Unweighted => Ok(None),
            Self::Auto => ClassWeights::balanced(&train.classes, &train.labels).map(Some),
            Self::Read(weights) => Ok(Some(weights)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<String> {
        vec!["ants".into(), "bees".into()]
    }

    fn read(text: &str) -> Result<ClassWeights> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.csv");
        std::fs::write(&path, text).unwrap();
        let in_dir =
            |e: anyhow::Error| anyhow::anyhow!("{}", e.to_string().replace(&*dir.path().to_string_lossy(), "DIR"));
        ClassWeights::read(&path, &classes()).map_err(in_dir)
    }

    #[test]
    fn a_weights_file_gives_each_class_its_weight_in_class_order() {
        let weights = read("# ants are common\nclass,weight\nbees, 4\n\nants,0.5\n").unwrap();
        assert_eq!(weights.weights, [0.5, 4.0]);
        let said = weights.describe();
        assert!(
            said.starts_with("class weights (/") && said.ends_with("weights.csv): ants 0.5000, bees 4.0000"),
            "{said}"
        );
    }

    #[test]
    fn a_bad_weights_file_is_one_line_naming_the_file_and_line() {
        for (text, expected) in [
            (
                "ants,1\nwasps,2\n",
                "DIR/weights.csv:2: class \"wasps\" is not one of the training classes [\"ants\", \"bees\"]",
            ),
            ("ants,1\n", "DIR/weights.csv: no line for class \"bees\" (every training class needs a weight)"),
            ("ants,1\nbees,0\n", "DIR/weights.csv:2: weight \"0\" of class \"bees\" must be a positive finite number"),
            ("ants,-1\nbees,1\n", "DIR/weights.csv:1: weight \"-1\" of class \"ants\""),
            ("ants,inf\nbees,1\n", "DIR/weights.csv:1: weight \"inf\" of class \"ants\""),
            ("ants,NaN\nbees,1\n", "DIR/weights.csv:1: weight \"NaN\""),
            ("ants 1\n", "DIR/weights.csv:1: expected class,weight, found \"ants 1\""),
            ("ants,1\nbees,2\nants,3\n", "DIR/weights.csv:3: class \"ants\" is given twice (first on line 1)"),
        ] {
            let error = read(text).unwrap_err().to_string();
            assert!(error.starts_with(expected) && !error.contains('\n'), "{text:?}: {error}");
        }
    }

    #[test]
    fn auto_weights_are_scikit_learns_balanced_ones() {
        let weights = ClassWeights::balanced(&classes(), &[0, 0, 0, 1]).unwrap();
        assert_eq!(weights.weights, [4.0 / 6.0, 2.0]);
        let error = ClassWeights::balanced(&classes(), &[0, 0]).unwrap_err().to_string();
        assert_eq!(error, "--class-weights auto: class \"bees\" has no training images to weigh");
    }

    #[test]
    fn the_option_reads_and_writes_auto_or_a_path() {
        let auto = ClassWeighting::from("auto".to_owned());
        assert_eq!(auto, ClassWeighting::Auto);
        let file: ClassWeighting = serde_json::from_str("\"w.csv\"").unwrap();
        assert_eq!(file, ClassWeighting::File("w.csv".into()));
        assert_eq!(serde_json::to_string(&auto).unwrap(), "\"auto\"");
    }
}
