//! `finetune audit`: what is wrong with a data set before training on it.
//! Over a list of (file, class, split) samples ([`dataset`]) one pass
//! ([`inspect`]) reads, hashes, decodes and featurizes every file; [`pairs`]
//! finds exact and near duplicates; [`findings`] counts, flags and
//! summarises; this module runs them and writes `audit.json` and
//! `audit.png` (the most telling pairs side by side). It trains nothing and
//! changes no file of the data set.

pub mod dataset;
pub mod findings;
pub mod inspect;
pub mod pairs;

use crate::choice_names::Named;
use crate::data::decode::decode_rgb_bytes;
use crate::models::Arch;
use crate::persist::write_atomically;
use crate::report::plots::{image_pairs, PairPanel};
use crate::report::Reporter;
use anyhow::{bail, Context, Result};
use dataset::Dataset;
use findings::{Findings, Pair};
use inspect::FeatureModel;
use pairs::Thresholds;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

pub const JSON_FILE: &str = "audit.json";
pub const FIGURE_FILE: &str = "audit.png";
/// Pairs drawn in the figure (audit.json lists every one).
pub const FIGURE_PAIRS: usize = 24;
/// Measured on ants/bees (README, "Auditing a data set"): its 78 606 pairs
/// of different photos are 14 bits or more apart and at most 0.80
/// cosine-similar with Lite0; JPEG quality 70, resized, brightened, grey and
/// 3%-cropped copies are 0–8 bits apart; mirrored ones 28–36 bits but 0.86–0.96.
pub const DEFAULT_PHASH_DISTANCE: u32 = 8;
pub const DEFAULT_FEATURE_SIMILARITY: f64 = 0.9;

/// What `finetune audit` is asked.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditOptions {
    /// The data set: DIR/train/<class>/* and DIR/<val-dir>/<class>/*, or DIR/train/ alone.
    #[arg(value_name = "DIR")]
    pub data: PathBuf,
    /// Name of the validation folder inside DIR.
    #[arg(long, value_name = "NAME", default_value = "val")]
    pub val_dir: String,
    /// Audit the val split that finetune --val-split FRACTION --seed N holds out of train/ [default: the --val-dir folder, else train/ alone].
    #[arg(long, value_name = "FRACTION")]
    pub val_split: Option<f64>,
    /// The --seed of the training run whose --val-split is audited.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = crate::cli::parse::seed, requires = "val_split")]
    pub seed: u64,
    /// Near duplicates by perceptual hash: 64-bit DCT pHashes at most this many bits apart (re-encoded, resized, slightly cropped copies: 0–8; different ants/bees photos: 14 or more).
    #[arg(long, value_name = "BITS", default_value_t = DEFAULT_PHASH_DISTANCE, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub phash_distance: u32,
    /// Near duplicates by content: the frozen backbone's pooled features at least this cosine-similar (mirrored copies of an ants/bees photo: 0.93–0.97; different photos: at most 0.80).
    #[arg(long, value_name = "COSINE", default_value_t = DEFAULT_FEATURE_SIMILARITY)]
    pub feature_similarity: f64,
    /// The backbone whose features are compared.
    #[arg(long, value_enum, default_value = "efficientnet-lite0")]
    pub arch: Arch,
    /// Its pretrained weights (.pth state_dict or .safetensors) [default: the arch's file in --models-dir].
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Where scripts/fetch-models.sh puts weights.
    #[arg(long, value_name = "DIR", default_value = "models")]
    pub models_dir: PathBuf,
    /// Skip the feature pass: hashes only (no weights needed; near duplicates by pHash alone).
    #[arg(long)]
    pub no_features: bool,
    /// Where audit.json and audit.png go (replaced when there) [default: runs/audit-<DIR's name>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `audit.json`: what was asked, how long it took, and the findings.
#[derive(Serialize)]
struct AuditFile<'a> {
    tool: &'static str,
    version: &'static str,
    config: AuditConfig<'a>,
    seconds: Seconds,
    #[serde(flatten)]
    findings: &'a Findings,
}

#[derive(Serialize)]
struct AuditConfig<'a> {
    data: &'a Path,
    arch: Option<String>,
    weights: Option<&'a Path>,
    thresholds: Thresholds,
    device: String,
}

#[derive(Serialize)]
struct Seconds {
    /// The whole audit.
    total: f64,
    /// Reading, decoding, hashing and (with features) the backbone.
    pass: f64,
    files: usize,
}

/// The files an audit wrote.
pub struct Written {
    pub json: PathBuf,
    pub figure: PathBuf,
    pub findings: Findings,
}

/// Audits the data set of `options` on `device`: the summary and a bar over
/// the files go to `reporter`; `audit.json` and `audit.png` to the output folder.
pub fn audit(options: &AuditOptions, device: Device, reporter: &dyn Reporter) -> Result<Written> {
    let started = Instant::now();
    check(options)?;
    let weights = feature_weights(options)?;
    let out = output_folder(options)?;
    let dataset = Dataset::from_folders(&options.data, &options.val_dir, options.val_split, options.seed)?;
    let model = weights.as_deref().map(|w| FeatureModel::load(options.arch, w, device)).transpose()?;
    reporter.line(&format!(
        "auditing {} files of {} ({}){}",
        dataset.samples.len(),
        options.data.display(),
        dataset.val.describe(),
        model.as_ref().map_or(String::new(), |m| format!(", features of {}", m.arch.name()))
    ));
    let paths: Vec<PathBuf> = dataset.samples.iter().map(|s| s.path.clone()).collect();
    let pass = inspect::inspect(&paths, model.as_ref(), reporter)?;
    let thresholds =
        Thresholds { phash_distance: options.phash_distance, feature_similarity: options.feature_similarity };
    let similar = pairs::find(&pass.files, pass.features.as_ref(), thresholds);
    let findings = Findings::new(&dataset, &pass.files, &similar);
    let figure = out.join(FIGURE_FILE);
    draw(&figure, &dataset, &findings)?;
    let seconds = Seconds { total: started.elapsed().as_secs_f64(), pass: pass.seconds, files: paths.len() };
    let config = AuditConfig {
        data: &dataset.root,
        arch: model.as_ref().map(|m| m.arch.name().to_owned()),
        weights: model.as_ref().map(|m| m.weights.as_path()),
        thresholds,
        device: crate::device::name(device),
    };
    let json = out.join(JSON_FILE);
    let file =
        AuditFile { tool: "finetune audit", version: env!("CARGO_PKG_VERSION"), config, seconds, findings: &findings };
    write_atomically(&json, serde_json::to_string_pretty(&file)?.as_bytes())?;
    for line in findings.summary(&thresholds, model.is_some()) {
        reporter.line(&line);
    }
    let what = if model.is_some() { "read, decode, hash and features" } else { "read, decode and hash" };
    reporter.line(&format!(
        "{} files: {what} {:.1} s; audit {:.1} s in all",
        file.seconds.files, file.seconds.pass, file.seconds.total
    ));
    Ok(Written { json, figure, findings })
}

fn check(options: &AuditOptions) -> Result<()> {
    if let Some(fraction) = options.val_split {
        if !(fraction > 0.0 && fraction < 1.0) {
            bail!("--val-split {fraction}: expected a fraction between 0 and 1");
        }
    }
    let similarity = options.feature_similarity;
    if !(similarity > 0.0 && similarity <= 1.0) {
        bail!("--feature-similarity {similarity}: expected a cosine above 0 and at most 1");
    }
    Ok(())
}

/// The weights of the feature pass, none with `--no-features`.
fn feature_weights(options: &AuditOptions) -> Result<Option<PathBuf>> {
    if options.no_features {
        return Ok(None);
    }
    let path = options.weights.clone().unwrap_or_else(|| options.arch.default_weights(&options.models_dir));
    if !path.is_file() {
        bail!(
            "{}: weights file not found. Run scripts/fetch-models.sh {}, pass --weights FILE, or audit without features (--no-features)",
            path.display(),
            options.arch.name()
        );
    }
    Ok(Some(path))
}

/// `--out`, or `runs/audit-<data folder's name>`, made and checked writable
/// before the slow pass.
fn output_folder(options: &AuditOptions) -> Result<PathBuf> {
    let out = options.out.clone().unwrap_or_else(|| {
        let name = crate::run_dir::absolute(&options.data)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "data".into());
        PathBuf::from("runs").join(format!("audit-{name}"))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("--out {}: cannot create the folder", out.display()))?;
    let probe = out.join(".write-test");
    std::fs::write(&probe, b"ok").with_context(|| format!("--out {}: the folder is not writable", out.display()))?;
    std::fs::remove_file(&probe).ok();
    Ok(out)
}

/// The pairs the figure shows, most telling first: leakage (exact copies,
/// then near ones by similarity), then one pair of each exact group within
/// a split, then near pairs within a split.
fn figure_pairs(findings: &Findings) -> Vec<(Pair, Option<usize>)> {
    let within_exact = findings.exact_duplicates.iter().filter(|g| g.scope != "across splits");
    let exact_pairs = within_exact.map(|group| {
        let (a, b) = (group.files[0].clone(), group.files[1].clone());
        let pair = Pair {
            kind: "exact",
            scope: group.scope.clone(),
            classes_differ: group.classes_differ,
            a,
            b,
            phash_distance: None,
            cosine: None,
            found_by: Vec::new(),
            files: (group.members[0], group.members[1]),
        };
        (pair, Some(group.files.len()))
    });
    let leakage = findings.leakage.iter().map(|p| (p.clone(), None));
    let near_within = findings.near_duplicates.iter().filter(|p| p.scope != "across splits").map(|p| (p.clone(), None));
    leakage.chain(exact_pairs).chain(near_within).take(FIGURE_PAIRS).collect()
}

/// `audit.png`: the most telling pairs side by side.
fn draw(path: &Path, dataset: &Dataset, findings: &Findings) -> Result<()> {
    let shown = figure_pairs(findings);
    let picture = |i: usize| {
        let bytes = inspect::read_bounded(&dataset.samples[i].path);
        bytes.and_then(|bytes| decode_rgb_bytes(&bytes)).map_err(|e| format!("{e:#}"))
    };
    let panels: Vec<PairPanel> = shown
        .iter()
        .enumerate()
        .map(|(k, (pair, group_size))| PairPanel {
            pictures: [picture(pair.files.0), picture(pair.files.1)],
            lines: panel_lines(k + 1, pair, *group_size),
            alarm: pair.scope == "across splits" || pair.classes_differ,
        })
        .collect();
    let total = findings.leakage.len()
        + findings.exact_duplicates.iter().filter(|g| g.scope != "across splits").count()
        + findings.near_duplicates.iter().filter(|p| p.scope != "across splits").count();
    let title = [
        format!(
            "Audit of {}: {} leakage pair(s), {} exact duplicate group(s), {} near-duplicate pair(s)",
            dataset.root.file_name().map_or("data".into(), |n| n.to_string_lossy()),
            findings.leakage.len(),
            findings.exact_duplicates.len(),
            findings.near_duplicates.len()
        ),
        format!(
            "{} of {total} pairs, leakage (train ↔ val, in red) first, then the most similar; {} unreadable file(s)",
            shown.len(),
            findings.unreadable.len()
        ),
    ];
    image_pairs(path, &title, &panels, "No two files are the same or nearly the same picture at these thresholds.")
}

/// What a pair's panel says: rank and kind, its two files, how alike.
fn panel_lines(rank: usize, pair: &Pair, group_size: Option<usize>) -> Vec<String> {
    let kind = match (pair.kind, group_size) {
        ("exact", Some(n)) if n > 2 => format!("exact copy ({n} files)"),
        ("exact", _) => "exact copy".to_owned(),
        _ => "near duplicate".to_owned(),
    };
    let scope = if pair.scope == "across splits" { "LEAKAGE train ↔ val".to_owned() } else { pair.scope.clone() };
    let classes = if pair.classes_differ { ", classes differ" } else { "" };
    let measures = match (pair.phash_distance, pair.cosine) {
        (None, _) => "identical bytes".to_owned(),
        (Some(d), Some(c)) => format!("pHash distance {d} of 64, feature cosine {c:.4}"),
        (Some(d), None) => format!("pHash distance {d} of 64"),
    };
    let file = |f: &findings::FileRef| format!("{} ({})", f.path, f.class);
    vec![format!("#{rank} {scope}: {kind}{classes}"), file(&pair.a), file(&pair.b), measures]
}

#[cfg(test)]
mod tests {
    use super::dataset::Split;
    use super::*;

    #[test]
    fn panels_name_the_kind_the_scope_and_the_measures() {
        let file = |path: &str, split| findings::FileRef { path: path.into(), split, class: "ants".into() };
        let pair = Pair {
            kind: "near",
            scope: "across splits".into(),
            classes_differ: false,
            a: file("train/ants/a.jpg", Split::Train),
            b: file("val/ants/b.jpg", Split::Val),
            phash_distance: Some(2),
            cosine: Some(0.98765),
            found_by: vec!["phash", "features"],
            files: (0, 1),
        };
        let lines = panel_lines(3, &pair, None);
        assert_eq!(
            lines,
            [
                "#3 LEAKAGE train ↔ val: near duplicate",
                "train/ants/a.jpg (ants)",
                "val/ants/b.jpg (ants)",
                "pHash distance 2 of 64, feature cosine 0.9877"
            ]
        );
        let exact = Pair { kind: "exact", scope: "within train".into(), phash_distance: None, cosine: None, ..pair };
        assert_eq!(panel_lines(1, &exact, Some(3))[0], "#1 within train: exact copy (3 files)");
        assert_eq!(panel_lines(1, &exact, Some(3))[3], "identical bytes");
    }
}
