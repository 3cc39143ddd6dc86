//! What an audit found, in the shape of `audit.json`: counts per class and
//! split with balance flags, the class weights `--class-weights auto` would
//! use, the files that do not decode, exact and near duplicates with the
//! splits they span, and the leakage among them (a picture in train and in
//! val); and the terminal's summary of it.

use super::dataset::{Dataset, Split};
use super::inspect::Inspected;
use super::pairs::{NearPair, Similar, Thresholds, MAX_PAIRS};
use serde::Serialize;

/// A split's largest class over its smallest at or above this is flagged.
pub const IMBALANCE_RATIO: f64 = 1.5;
/// Terminal lines per list (audit.json has every entry).
const LISTED: usize = 20;

#[derive(Debug, Serialize)]
pub struct Findings {
    pub data: String,
    pub splits: String,
    pub classes: Vec<String>,
    pub counts: Vec<ClassCount>,
    pub balance: Vec<Balance>,
    /// scikit-learn's `compute_class_weight("balanced")` over the train
    /// images that decode: n / (classes · count); none for a class without any.
    pub class_weights: Vec<ClassWeight>,
    /// Everything worth a look, one line each.
    pub flags: Vec<String>,
    pub unreadable: Vec<Unreadable>,
    /// Files in the class folders that are not images by extension.
    pub not_images: Vec<String>,
    pub exact_duplicates: Vec<ExactGroup>,
    pub near_duplicates: Vec<Pair>,
    /// The duplicates (exact and near) with one file in train and one in val.
    pub leakage: Vec<Pair>,
    /// A near-duplicate test stopped at its cap of pairs (a threshold too loose).
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileRef {
    pub path: String,
    pub split: Split,
    pub class: String,
}

/// Files found (by extension) and those that decode.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SplitCount {
    pub files: usize,
    pub images: usize,
}

#[derive(Debug, Serialize)]
pub struct ClassCount {
    pub class: String,
    pub train: SplitCount,
    /// None when there is no val split.
    pub val: Option<SplitCount>,
}

#[derive(Debug, Serialize)]
pub struct Balance {
    pub split: Split,
    pub largest: usize,
    pub smallest: usize,
    /// Largest over smallest class (images that decode); none when a class has none.
    pub ratio: Option<f64>,
    pub imbalanced: bool,
}

#[derive(Debug, Serialize)]
pub struct ClassWeight {
    pub class: String,
    pub weight: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Unreadable {
    #[serde(flatten)]
    pub file: FileRef,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct ExactGroup {
    pub scope: String,
    pub classes_differ: bool,
    pub files: Vec<FileRef>,
    /// File indices (for the figure).
    #[serde(skip)]
    pub members: Vec<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    /// `exact` or `near`.
    pub kind: &'static str,
    pub scope: String,
    pub classes_differ: bool,
    /// The train file first in a pair across splits.
    pub a: FileRef,
    pub b: FileRef,
    pub phash_distance: Option<u32>,
    pub cosine: Option<f64>,
    /// Which tests matched: `phash`, `features` (none for exact copies).
    pub found_by: Vec<&'static str>,
    /// File indices (for the figure).
    #[serde(skip)]
    pub files: (usize, usize),
}

impl Findings {
    pub fn new(dataset: &Dataset, files: &[Inspected], similar: &Similar) -> Self {
        let refer = |i: usize| {
            let sample = &dataset.samples[i];
            FileRef {
                path: dataset.shown(&sample.path),
                split: sample.split,
                class: dataset.classes[sample.class_index].clone(),
            }
        };
        let counts = class_counts(dataset, files);
        let balance = dataset.splits().into_iter().map(|split| balance(&counts, split)).collect();
        let class_weights = class_weights(&counts);
        let unreadable = (0..files.len())
            .filter_map(|i| files[i].phash.as_ref().err().map(|why| Unreadable { file: refer(i), reason: why.clone() }))
            .collect();
        let exact_duplicates = similar.exact.iter().map(|group| exact_group(group, &refer)).collect();
        let near_duplicates: Vec<Pair> = similar.near.iter().map(|pair| near_pair(pair, &refer)).collect();
        let leakage = leakage(&similar.exact, &near_duplicates, &refer);
        let mut findings = Findings {
            data: crate::run_dir::absolute(&dataset.root)
                .unwrap_or_else(|_| dataset.root.clone())
                .display()
                .to_string(),
            splits: dataset.val.describe(),
            classes: dataset.classes.clone(),
            counts,
            balance,
            class_weights,
            flags: Vec::new(),
            unreadable,
            not_images: dataset.not_images.iter().map(|p| dataset.shown(p)).collect(),
            exact_duplicates,
            near_duplicates,
            leakage,
            truncated: similar.truncated,
        };
        findings.flags = findings.flag_lines();
        findings
    }

    /// One line per thing worth a look.
    fn flag_lines(&self) -> Vec<String> {
        let mut flags = Vec::new();
        for count in &self.counts {
            let splits =
                std::iter::once((Split::Train, Some(count.train))).chain(count.val.map(|v| (Split::Val, Some(v))));
            for (split, n) in splits {
                if n.is_some_and(|n| n.images == 0) {
                    flags.push(format!("class {} has no usable image in {}", count.class, split.name()));
                }
            }
        }
        for b in self.balance.iter().filter(|b| b.imbalanced) {
            let ratio = b.ratio.map_or("no image in a class".into(), |r| format!("{r:.2}"));
            flags.push(format!(
                "{} is imbalanced: largest class {} images, smallest {} (ratio {ratio}); --class-weights auto weighs the loss",
                b.split.name(),
                b.largest,
                b.smallest
            ));
        }
        if !self.unreadable.is_empty() {
            flags.push(format!("{} file(s) do not decode (training skips them)", self.unreadable.len()));
        }
        if !self.leakage.is_empty() {
            flags.push(format!(
                "leakage: {} pair(s) of the same or nearly the same picture in train and val (val accuracy is inflated)",
                self.leakage.len()
            ));
        }
        let conflicts = self.exact_duplicates.iter().filter(|g| g.classes_differ).count()
            + self.near_duplicates.iter().filter(|p| p.classes_differ).count();
        if conflicts > 0 {
            flags.push(format!("{conflicts} duplicate(s) carry different classes"));
        }
        if self.truncated {
            flags.push(format!("a near-duplicate test stopped at {MAX_PAIRS} pairs: its threshold is too loose"));
        }
        flags
    }

    /// The terminal's summary: the table, weights, flags, and the first
    /// [`LISTED`] of each list.
    pub fn summary(&self, thresholds: &Thresholds, with_features: bool) -> Vec<String> {
        let mut lines = vec![format!("data: {} ({})", self.data, self.splits)];
        lines.extend(self.table());
        let weights: Vec<String> = self
            .class_weights
            .iter()
            .map(|w| format!("{} {}", w.class, w.weight.map_or("none (no train image)".into(), |w| format!("{w:.4}"))))
            .collect();
        lines.push(format!(
            "class weights of --class-weights auto (n / (classes · count) over train): {}",
            weights.join(", ")
        ));
        lines.push(format!("unreadable files: {}", self.unreadable.len()));
        listed(&mut lines, &self.unreadable, |u| format!("  {}: {}", u.file.path, u.reason));
        if !self.not_images.is_empty() {
            lines.push(format!("files not images by extension (ignored by training): {}", self.not_images.len()));
            listed(&mut lines, &self.not_images, |p| format!("  {p}"));
        }
        lines.push(format!("exact duplicates (same bytes): {} group(s)", self.exact_duplicates.len()));
        listed(&mut lines, &self.exact_duplicates, |g| {
            let paths: Vec<&str> = g.files.iter().map(|f| f.path.as_str()).collect();
            format!("  {}: {}", g.scope, paths.join(" = "))
        });
        let feature_test = if with_features {
            format!(" or feature cosine ≥ {}", thresholds.feature_similarity)
        } else {
            String::new()
        };
        lines.push(format!(
            "near duplicates (pHash distance ≤ {}{feature_test}): {} pair(s)",
            thresholds.phash_distance,
            self.near_duplicates.len()
        ));
        listed(&mut lines, &self.near_duplicates, |p| format!("  {}: {}", p.scope, pair_line(p)));
        lines.push(format!("leakage (train ↔ val): {} pair(s)", self.leakage.len()));
        listed(&mut lines, &self.leakage, |p| format!("  {}: {}", p.kind, pair_line(p)));
        if self.flags.is_empty() {
            lines.push("flags: none".into());
        } else {
            lines.push("flags:".into());
            lines.extend(self.flags.iter().map(|f| format!("  {f}")));
        }
        lines
    }

    /// Images (that decode) per class and split; files that do not, in brackets.
    fn table(&self) -> Vec<String> {
        let has_val = self.counts.iter().any(|c| c.val.is_some());
        let width = self.classes.iter().map(|c| c.chars().count()).max().unwrap_or(5).max(5);
        let cell = |n: Option<SplitCount>| match n {
            Some(SplitCount { files, images }) if files > images => format!("{images} (+{} bad)", files - images),
            Some(SplitCount { images, .. }) => images.to_string(),
            None => String::new(),
        };
        let mut lines = vec![format!("{:<width$}  {:>14}  {:>14}", "class", "train", if has_val { "val" } else { "" })];
        let mut totals = [SplitCount::default(); 2];
        for c in &self.counts {
            lines.push(format!("{:<width$}  {:>14}  {:>14}", c.class, cell(Some(c.train)), cell(c.val)));
            for (total, n) in totals.iter_mut().zip([Some(c.train), c.val]) {
                total.files += n.map_or(0, |n| n.files);
                total.images += n.map_or(0, |n| n.images);
            }
        }
        let val_total = has_val.then_some(totals[1]);
        lines.push(format!("{:<width$}  {:>14}  {:>14}", "all", cell(Some(totals[0])), cell(val_total)));
        let ratios: Vec<String> = self
            .balance
            .iter()
            .map(|b| {
                let ratio = b.ratio.map_or("-".into(), |r| format!("{r:.2}"));
                format!("{} {ratio}{}", b.split.name(), if b.imbalanced { " (imbalanced)" } else { "" })
            })
            .collect();
        lines.push(format!("largest / smallest class: {}", ratios.join(", ")));
        lines
    }
}

/// `a ↔ b (classes) pHash d, cosine c`.
fn pair_line(p: &Pair) -> String {
    let classes = if p.classes_differ { format!(" [classes {} and {}]", p.a.class, p.b.class) } else { String::new() };
    let measures: Vec<String> = p
        .phash_distance
        .map(|d| format!("pHash {d}"))
        .into_iter()
        .chain(p.cosine.map(|c| format!("cosine {c:.4}")))
        .collect();
    let measures = if measures.is_empty() { String::new() } else { format!(" ({})", measures.join(", ")) };
    format!("{} ↔ {}{classes}{measures}", p.a.path, p.b.path)
}

/// The first [`LISTED`] of `items` as lines, then how many more.
fn listed<T>(lines: &mut Vec<String>, items: &[T], line: impl Fn(&T) -> String) {
    lines.extend(items.iter().take(LISTED).map(line));
    if items.len() > LISTED {
        lines.push(format!("  … and {} more (audit.json lists every one)", items.len() - LISTED));
    }
}

fn class_counts(dataset: &Dataset, files: &[Inspected]) -> Vec<ClassCount> {
    let has_val = dataset.splits().contains(&Split::Val);
    let mut counts: Vec<ClassCount> = dataset
        .classes
        .iter()
        .map(|class| ClassCount {
            class: class.clone(),
            train: SplitCount::default(),
            val: has_val.then(SplitCount::default),
        })
        .collect();
    for (sample, file) in dataset.samples.iter().zip(files) {
        let count = &mut counts[sample.class_index];
        let n = match sample.split {
            Split::Train => &mut count.train,
            Split::Val => count.val.as_mut().expect("a val sample means a val split"),
        };
        n.files += 1;
        n.images += usize::from(file.phash.is_ok());
    }
    counts
}

fn balance(counts: &[ClassCount], split: Split) -> Balance {
    let images: Vec<usize> = counts
        .iter()
        .map(|c| match split {
            Split::Train => c.train.images,
            Split::Val => c.val.map_or(0, |v| v.images),
        })
        .collect();
    let (largest, smallest) = (images.iter().copied().max().unwrap_or(0), images.iter().copied().min().unwrap_or(0));
    let ratio = (smallest > 0).then(|| largest as f64 / smallest as f64);
    let imbalanced = ratio.is_none_or(|r| r >= IMBALANCE_RATIO);
    Balance { split, largest, smallest, ratio, imbalanced }
}

/// The weights `--class-weights auto` gives the train images.
fn class_weights(counts: &[ClassCount]) -> Vec<ClassWeight> {
    let train: Vec<usize> = counts.iter().map(|c| c.train.images).collect();
    let weights = crate::finetune::class_weights::balanced_weights(&train);
    counts.iter().zip(weights).map(|(c, weight)| ClassWeight { class: c.class.clone(), weight }).collect()
}

/// "within train", "within val" or "across splits".
fn scope(splits: impl IntoIterator<Item = Split>) -> String {
    let mut splits: Vec<Split> = splits.into_iter().collect();
    splits.sort();
    splits.dedup();
    match splits[..] {
        [one] => format!("within {}", one.name()),
        _ => "across splits".to_owned(),
    }
}

fn exact_group(group: &[usize], refer: &impl Fn(usize) -> FileRef) -> ExactGroup {
    let files: Vec<FileRef> = group.iter().map(|&i| refer(i)).collect();
    let classes_differ = files.iter().any(|f| f.class != files[0].class);
    ExactGroup { scope: scope(files.iter().map(|f| f.split)), classes_differ, files, members: group.to_vec() }
}

fn near_pair(pair: &NearPair, refer: &impl Fn(usize) -> FileRef) -> Pair {
    let (a, b) = (refer(pair.first), refer(pair.second));
    let found_by = [(pair.by_phash, "phash"), (pair.by_features, "features")];
    Pair {
        kind: "near",
        scope: scope([a.split, b.split]),
        classes_differ: a.class != b.class,
        a,
        b,
        phash_distance: Some(pair.phash_distance),
        cosine: pair.cosine,
        found_by: found_by.into_iter().filter(|(hit, _)| *hit).map(|(_, name)| name).collect(),
        files: (pair.first, pair.second),
    }
}

/// Every (train, val) pair of an exact group, then the near pairs across
/// splits, the train file first.
fn leakage(exact: &[Vec<usize>], near: &[Pair], refer: &impl Fn(usize) -> FileRef) -> Vec<Pair> {
    let mut pairs = Vec::new();
    for group in exact {
        let side = |split: Split| group.iter().copied().filter(move |&i| refer(i).split == split);
        for t in side(Split::Train) {
            for v in side(Split::Val) {
                let (a, b) = (refer(t), refer(v));
                pairs.push(Pair {
                    kind: "exact",
                    scope: scope([a.split, b.split]),
                    classes_differ: a.class != b.class,
                    a,
                    b,
                    phash_distance: None,
                    cosine: None,
                    found_by: Vec::new(),
                    files: (t, v),
                });
            }
        }
    }
    for pair in near.iter().filter(|p| p.a.split != p.b.split) {
        let mut pair = pair.clone();
        if pair.a.split != Split::Train {
            std::mem::swap(&mut pair.a, &mut pair.b);
            pair.files = (pair.files.1, pair.files.0);
        }
        pairs.push(pair);
    }
    pairs
}
