//! What a model made of each val image: [`ImageOutcome`] rows — the image's
//! path (relative to the data folder), its true label, the predicted label,
//! the probability of that prediction, and whether it was right — in path
//! order. A run writes those of its kept epoch as `val_predictions.csv`
//! ([`crate::run_dir::VAL_PREDICTIONS_FILE`]), `finetune eval` those of the
//! split it scores, so that two runs on the same images can be paired image
//! by image (`crate::sweep::paired`), by this module's [`read`].

use crate::data::loader::DecodedSplit;
use crate::report::{csv_field, csv_records};
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::Tensor;

/// The header of an outcomes file.
pub const HEADER: [&str; 5] = ["path", "label", "predicted", "probability", "correct"];
/// An outcomes file larger than this is refused before it is read.
const MAX_FILE_BYTES: u64 = 256 << 20;

/// One image's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOutcome {
    /// Relative to the data folder (`val/ants/1.jpg`), `/`-separated.
    pub path: String,
    pub label: String,
    pub predicted: String,
    /// The model's probability of the predicted label.
    pub probability: f64,
    pub correct: bool,
}

/// The outcomes of `probs` (`[N, classes]`, one row per image of `split`),
/// with paths relative to `data`, sorted by path.
pub fn of_split(split: &DecodedSplit, probs: &Tensor, data: &Path) -> Result<Vec<ImageOutcome>> {
    let (top_probability, predicted) = probs.to_device(tch::Device::Cpu).max_dim(-1, false);
    let predicted: Vec<i64> = Vec::try_from(&predicted).context("the predicted classes")?;
    let top_probability: Vec<f64> =
        Vec::try_from(&top_probability.to_kind(tch::Kind::Double)).context("the probabilities")?;
    let mut outcomes: Vec<ImageOutcome> = split
        .paths
        .iter()
        .zip(&split.labels)
        .zip(predicted.iter().zip(top_probability))
        .map(|((path, &label), (&predicted, probability))| ImageOutcome {
            path: relative_text(path, data),
            label: split.classes[label as usize].clone(),
            predicted: split.classes[predicted as usize].clone(),
            probability,
            correct: label == predicted,
        })
        .collect();
    outcomes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(outcomes)
}

/// `path` relative to `base` when it is inside it, `/`-separated.
fn relative_text(path: &Path, base: &Path) -> String {
    let relative = path.strip_prefix(base).unwrap_or(path);
    let parts: Vec<String> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    parts.join("/")
}

/// The outcomes as CSV text, a header first.
pub fn csv(outcomes: &[ImageOutcome]) -> String {
    let mut text = HEADER.join(",") + "\n";
    for outcome in outcomes {
        let cells = [
            csv_field(&outcome.path),
            csv_field(&outcome.label),
            csv_field(&outcome.predicted),
            format!("{:.6}", outcome.probability),
            u8::from(outcome.correct).to_string(),
        ];
        text += &(cells.join(",") + "\n");
    }
    text
}

/// The outcomes in the file at `path`; a file that is not one is an error
/// naming it (and the line at fault).
pub fn read(path: &Path) -> Result<Vec<ImageOutcome>> {
    let name = path.display();
    let size = std::fs::metadata(path).with_context(|| format!("{name}: cannot read"))?.len();
    if size > MAX_FILE_BYTES {
        bail!("{name}: {size} bytes, more than an outcomes file holds ({MAX_FILE_BYTES} at most)");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{name}: cannot read"))?;
    let records = csv_records(&text).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let mut records = records.into_iter().filter(|(_, fields)| fields != &[""]);
    match records.next() {
        Some((_, header)) if header == HEADER => {}
        _ => bail!("{name}: line 1: the header must be {}", HEADER.join(",")),
    }
    records.map(|(line, fields)| outcome(&fields).map_err(|e| anyhow::anyhow!("{name}: line {line}: {e}"))).collect()
}

/// One row's outcome, or what is wrong with it.
fn outcome(fields: &[String]) -> std::result::Result<ImageOutcome, String> {
    let [path, label, predicted, probability, correct] = fields else {
        return Err(format!("{} fields where {} are expected", fields.len(), HEADER.len()));
    };
    let probability: f64 = match probability.parse() {
        Ok(p) if (0.0..=1.0).contains(&p) => p,
        _ => return Err(format!("probability {probability:?} is not a number from 0 to 1")),
    };
    let correct = match correct.as_str() {
        "1" => true,
        "0" => false,
        other => return Err(format!("correct {other:?} must be 0 or 1")),
    };
    if correct != (label == predicted) {
        return Err(format!("correct is {} for label {label:?} and prediction {predicted:?}", u8::from(correct)));
    }
    Ok(ImageOutcome { path: path.clone(), label: label.clone(), predicted: predicted.clone(), probability, correct })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_back_as_written_and_a_bad_row_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("val_predictions.csv");
        let outcomes = vec![
            ImageOutcome {
                path: "val/ants/a,b.jpg".into(),
                label: "ants".into(),
                predicted: "bees".into(),
                probability: 0.75,
                correct: false,
            },
            ImageOutcome {
                path: "val/bees/c.jpg".into(),
                label: "bees".into(),
                predicted: "bees".into(),
                probability: 0.5,
                correct: true,
            },
        ];
        std::fs::write(&file, csv(&outcomes)).unwrap();
        assert_eq!(read(&file).unwrap(), outcomes);
        std::fs::write(&file, csv(&outcomes) + "val/x.jpg,ants,ants,0.9,0\n").unwrap();
        let error = read(&file).unwrap_err().to_string();
        assert!(error.ends_with("line 4: correct is 0 for label \"ants\" and prediction \"ants\""), "{error}");
        std::fs::write(&file, "path,label\n").unwrap();
        let error = read(&file).unwrap_err().to_string();
        assert!(error.ends_with("line 1: the header must be path,label,predicted,probability,correct"), "{error}");
    }
}
