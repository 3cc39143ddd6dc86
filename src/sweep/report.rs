//! One table of all runs of one tool under some folders (a sweep's, or any
//! run folders): the options that vary between them, and per configuration
//! (the runs that differ only in `seed` and `fold`) the tool's score
//! (`finetune`: best val accuracy; `mnist`: val accuracy; `caption train`:
//! val BLEU-4) as mean ± std over the seeds and folds, test accuracy where
//! the tool measures it, val macro-F1 and balanced accuracy at the best
//! epoch where the runs recorded them (`finetune`), best epoch, seconds per
//! epoch, wall time and device; for `finetune`, the paired tests between
//! configurations scored on the same images ([`super::paired`]). Written as `results.md`,
//! `results.csv` and `results.png`. Runs that failed or are not finished are
//! listed as such, not dropped; folders of other tools are named, not
//! tabulated. Reads run folders through [`super::status`]; trains nothing.

use super::paired::{self, Comparison, PairableRun};
use super::status::{RunFolder, Status};
use super::tool::{Tool, TOOLS};
use crate::metrics::mean_std;
use crate::persist::write_atomically;
use crate::report::csv_field;
use crate::report::plots::{spread_chart, SpreadRow};
use crate::run_dir::VAL_PREDICTIONS_FILE;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// How deep under each given folder run folders are looked for.
const MAX_DEPTH: usize = 4;
/// The options runs of one configuration differ in.
const SEED: &str = "seed";
const FOLD: &str = "fold";
/// The columns of the class-balanced scores at the best epoch.
const MACRO_F1_COLUMN: &str = "val macro-F1";
const BALANCED_ACC_COLUMN: &str = "val balanced acc";

/// One run folder, summed up.
#[derive(Debug, Clone)]
pub struct Run {
    /// The folder, relative to the folder given.
    pub dir: PathBuf,
    /// The folder, as found (to read its files).
    pub folder: PathBuf,
    pub status: Status,
    /// Every option of the run's config, as text (`None`: no config saved).
    pub options: Option<BTreeMap<String, String>>,
    /// The tool's score (see [`Tool::score_name`]).
    pub score: Option<f64>,
    pub test_acc: Option<f64>,
    /// Val macro-F1 and balanced accuracy at the best epoch (`finetune`).
    pub macro_f1: Option<f64>,
    pub balanced_acc: Option<f64>,
    pub best_epoch: Option<usize>,
    pub epochs_done: usize,
    pub epochs: Option<usize>,
    /// Mean seconds of an epoch (`finetune`: train and val phases).
    pub seconds_per_epoch: Option<f64>,
    /// Wall time of every attempt (the launcher's record, else the run's own).
    pub wall_seconds: Option<f64>,
    pub device: Option<String>,
    /// Seconds to the first training step, and the frozen features loaded
    /// from a feature cache and computed (`finetune`, last attempt).
    pub startup_seconds: Option<f64>,
    pub features: Option<(usize, usize)>,
}

/// Runs that differ only in their seed and fold.
#[derive(Debug, Clone)]
pub struct Configuration {
    /// The varying options' values, in [`Report::keys`] order.
    pub values: Vec<String>,
    /// Indices into [`Report::runs`].
    pub runs: Vec<usize>,
}

/// The runs under some folders, grouped into configurations.
#[derive(Debug, Clone)]
pub struct Report {
    /// The folders looked in.
    pub roots: Vec<PathBuf>,
    /// The tool whose runs are tabulated.
    pub tool: Tool,
    /// The options whose values differ between runs, but the seed and fold.
    pub keys: Vec<String>,
    pub runs: Vec<Run>,
    pub configurations: Vec<Configuration>,
    /// The configurations compared on the same images (`finetune`).
    pub comparisons: Vec<Comparison>,
    /// Done runs that cannot be paired: they have no per-image outcomes.
    pub unpaired: usize,
    /// Run folders of the other tools (`mnist mlp`, …), left out: (folder, tool).
    pub skipped: Vec<(PathBuf, String)>,
    /// Run folders under a sweep's `--out` that are none of its points (an
    /// edited grid leaves them), or hold a run of another tool or recipe
    /// than their point's, left out.
    pub strays: Vec<PathBuf>,
}

/// A run folder found under a root, read.
struct Found {
    folder: RunFolder,
    root: PathBuf,
}

impl Report {
    /// Finds and reads every run folder under `roots`, and tabulates the
    /// runs of one tool: the first of [`TOOLS`] that has any (folders that do
    /// not say their tool count as its).
    pub fn collect(roots: &[PathBuf]) -> Result<Self> {
        let mut found = Vec::new();
        for root in roots {
            if !root.is_dir() {
                bail!("{}: not a folder", root.display());
            }
            let mut dirs = Vec::new();
            find_run_folders(root, MAX_DEPTH, &mut dirs)?;
            if dirs.is_empty() {
                bail!("{}: no run folders in it (a run folder holds summary.json, state.safetensors or a sweep's log.txt)", root.display());
            }
            for dir in dirs {
                found.push(Found { folder: RunFolder::read(&dir)?, root: root.clone() });
            }
        }
        let tool = TOOLS.into_iter().find(|&tool| found.iter().any(|f| f.folder.sweep_tool() == Some(tool)));
        let (ours, others): (Vec<Found>, Vec<Found>) = found
            .into_iter()
            .partition(|f| f.folder.tool.is_none() || (tool.is_some() && f.folder.sweep_tool() == tool));
        let skipped: Vec<(PathBuf, String)> =
            others.into_iter().map(|f| (f.folder.dir, f.folder.tool.unwrap_or_default())).collect();
        if ours.is_empty() {
            let names: Vec<String> = skipped.iter().map(|(dir, tool)| format!("{} ({tool})", dir.display())).collect();
            bail!(
                "no runs of finetune, mnist or caption train to tabulate; run folders of other tools: {}",
                names.join(", ")
            );
        }
        let tool = tool.unwrap_or(Tool::Finetune);
        let mut runs = Vec::new();
        for root in roots {
            let mut under: Vec<(Run, Option<usize>)> = ours
                .iter()
                .filter(|f| &f.root == root)
                .map(|f| read_run(tool, &f.folder, root, roots.len() > 1))
                .collect::<Result<_>>()?;
            // A sweep's runs in the order of their points.
            under.sort_by_key(|(run, index)| (index.unwrap_or(usize::MAX), run.dir.clone()));
            runs.extend(under.into_iter().map(|(run, _)| run));
        }
        let keys = varying_keys(tool, &runs);
        let configurations = group(&runs, &keys);
        let (comparisons, unpaired) = comparisons(tool, &runs, &configurations)?;
        Ok(Self {
            roots: roots.to_vec(),
            tool,
            keys,
            runs,
            configurations,
            comparisons,
            unpaired,
            skipped,
            strays: Vec::new(),
        })
    }

    /// The runs of a sweep's points, every point one row in point order
    /// (those not started as `new`); run folders under its `--out` that are
    /// none of its points are named, not tabulated.
    pub fn of_sweep(sweep: &super::Sweep) -> Result<Self> {
        let tool = sweep.file.tool;
        let mut runs = Vec::new();
        let mut strays = Vec::new();
        for point in &sweep.points {
            let mut folder = RunFolder::read(&sweep.dir(point))?;
            let other_tool = folder.tool.as_deref().is_some_and(|held| held != tool.name());
            let other_recipe =
                folder.config().and_then(|saved| super::status::recipe_difference(tool, saved, &point.config));
            if other_tool || other_recipe.is_some() {
                strays.push(folder.dir.clone());
                // The point itself has not run.
                folder = RunFolder::empty(&sweep.dir(point));
            }
            let (mut run, _) = read_run(tool, &folder, &sweep.out, false)?;
            run.status = folder.status(Some(point.epochs));
            run.epochs = Some(point.epochs);
            if run.options.is_none() {
                run.options = Some(option_texts(tool, &point.config)?);
            }
            runs.push(run);
        }
        let mut found = Vec::new();
        if sweep.out.is_dir() {
            find_run_folders(&sweep.out, MAX_DEPTH, &mut found)?;
        }
        let points: BTreeSet<PathBuf> = sweep.points.iter().map(|p| sweep.dir(p)).collect();
        strays.extend(found.into_iter().filter(|dir| !points.contains(dir)));
        let keys = varying_keys(tool, &runs);
        let configurations = group(&runs, &keys);
        let (comparisons, unpaired) = comparisons(tool, &runs, &configurations)?;
        Ok(Self {
            roots: vec![sweep.out.clone()],
            tool,
            keys,
            runs,
            configurations,
            comparisons,
            unpaired,
            skipped: Vec::new(),
            strays,
        })
    }

    /// Whether any run is one fold of a cross-validation (a column only then).
    fn has_folds(&self) -> bool {
        let fold = |run: &Run| run.options.as_ref().and_then(|o| o.get(FOLD).cloned());
        self.runs.iter().any(|run| fold(run).is_some_and(|fold| fold != "—"))
    }

    /// Whether any run has a test accuracy (a column only then).
    fn has_test_acc(&self) -> bool {
        self.runs.iter().any(|r| r.test_acc.is_some())
    }

    /// Whether any run has a macro-F1 and balanced accuracy (columns only then).
    fn has_class_balanced(&self) -> bool {
        self.runs.iter().any(|r| r.macro_f1.is_some() || r.balanced_acc.is_some())
    }

    fn done(&self, configuration: &Configuration) -> Vec<&Run> {
        configuration.runs.iter().map(|&i| &self.runs[i]).filter(|r| r.status == Status::Done).collect()
    }

    /// `arch=resnet18 lr=0.01`, or `all runs` when nothing varies.
    fn label(&self, configuration: &Configuration) -> String {
        if self.keys.is_empty() {
            return "all runs".into();
        }
        self.keys.iter().zip(&configuration.values).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }

    /// The configurations table as Markdown rows (cells, header first).
    fn configuration_rows(&self) -> Vec<Vec<String>> {
        let (tests, balanced) = (self.has_test_acc(), self.has_class_balanced());
        let mut header: Vec<String> = self.keys.clone();
        header.extend(["runs done".to_owned(), self.tool.score_name().to_owned()]);
        header.extend(tests.then(|| "test acc".to_owned()));
        if balanced {
            header.extend([MACRO_F1_COLUMN.to_owned(), BALANCED_ACC_COLUMN.to_owned()]);
        }
        header.extend(["best epoch", "s/epoch", "wall", "device"].map(String::from));
        let mut rows = vec![header];
        for configuration in &self.configurations {
            let done = self.done(configuration);
            let stat = |f: fn(&Run) -> Option<f64>| done.iter().filter_map(|r| f(r)).collect::<Vec<f64>>();
            let mut row = configuration.values.clone();
            row.push(format!("{} of {}", done.len(), configuration.runs.len()));
            row.push(spread_cell(&stat(|r| r.score)));
            if tests {
                row.push(spread_cell(&stat(|r| r.test_acc)));
            }
            if balanced {
                row.push(spread_cell(&stat(|r| r.macro_f1)));
                row.push(spread_cell(&stat(|r| r.balanced_acc)));
            }
            row.push(mean_cell(&stat(|r| r.best_epoch.map(|e| e as f64)), 1, ""));
            row.push(mean_cell(&stat(|r| r.seconds_per_epoch), 3, ""));
            row.push(mean_cell(&stat(|r| r.wall_seconds), 1, " s"));
            let devices: BTreeSet<&str> = done.iter().filter_map(|r| r.device.as_deref()).collect();
            row.push(devices.into_iter().collect::<Vec<_>>().join(", "));
            rows.push(row);
        }
        rows
    }

    /// Every run as Markdown rows (cells, header first).
    fn run_rows(&self) -> Vec<Vec<String>> {
        let (tests, balanced) = (self.has_test_acc(), self.has_class_balanced());
        let folds = self.has_folds();
        let mut header = vec!["run".to_owned(), "status".to_owned()];
        header.extend(self.keys.iter().cloned());
        header.extend(folds.then(|| FOLD.to_owned()));
        header.extend([SEED.to_owned(), self.tool.score_name().to_owned()]);
        header.extend(tests.then(|| "test acc".to_owned()));
        if balanced {
            header.extend([MACRO_F1_COLUMN.to_owned(), BALANCED_ACC_COLUMN.to_owned()]);
        }
        header.extend(["best epoch", "epochs", "s/epoch", "wall", "device"].map(String::from));
        let mut rows = vec![header];
        let number = |value: Option<f64>| value.map_or("—".into(), |v| format!("{v:.4}"));
        for run in &self.runs {
            let option =
                |key: &str| run.options.as_ref().and_then(|o| o.get(key).cloned()).unwrap_or_else(|| "?".into());
            let mut row = vec![format!("`{}`", run.dir.display()), run.status.word().to_owned()];
            row.extend(self.keys.iter().map(|k| option(k)));
            row.extend(folds.then(|| option(FOLD)));
            row.push(option(SEED));
            row.push(number(run.score));
            if tests {
                row.push(number(run.test_acc));
            }
            if balanced {
                row.extend([number(run.macro_f1), number(run.balanced_acc)]);
            }
            row.push(run.best_epoch.map_or("—".into(), |e| e.to_string()));
            row.push(format!("{} of {}", run.epochs_done, run.epochs.map_or("?".into(), |e| e.to_string())));
            row.push(run.seconds_per_epoch.map_or("—".into(), |s| format!("{s:.3}")));
            row.push(run.wall_seconds.map_or("—".into(), |s| format!("{s:.1} s")));
            row.push(run.device.clone().unwrap_or_else(|| "—".into()));
            rows.push(row);
        }
        rows
    }

    /// `results.md`: the configurations, every run, and what is not done.
    pub fn markdown(&self) -> String {
        let here = std::env::current_dir().unwrap_or_default();
        let roots: Vec<String> =
            self.roots.iter().map(|r| format!("`{}`", r.strip_prefix(&here).unwrap_or(r).display())).collect();
        let done = self.runs.iter().filter(|r| r.status == Status::Done).count();
        let of_tool = match self.tool {
            Tool::Finetune => String::new(),
            other => format!(" of `{}`", other.name()),
        };
        let mut text =
            format!("# Results: {} run(s){of_tool} under {}, {done} done\n\n", self.runs.len(), roots.join(", "));
        text += &markdown_table(&self.configuration_rows());
        let scores = match self.has_class_balanced() {
            true => {
                format!("{}, {MACRO_F1_COLUMN} and {BALANCED_ACC_COLUMN} (at the best epoch)", self.tool.score_name())
            }
            false => self.tool.score_name().to_owned(),
        };
        text += &format!(
            "\n{scores}: mean ± standard deviation over the seeds{} of the done runs; best epoch, s/epoch{} and wall time \
             (every attempt): means over them.\n",
            if self.has_folds() { " and folds" } else { "" },
            if self.tool == Tool::Finetune { " (train and val phases)" } else { "" }
        );
        if self.tool == Tool::Finetune && self.configurations.len() > 1 {
            let labels: Vec<String> = self.configurations.iter().map(|c| self.label(c)).collect();
            text += &paired::markdown(&self.comparisons, &labels, self.unpaired);
        }
        text += "\n## Runs\n\n";
        text += &markdown_table(&self.run_rows());
        text += &self.startup_section();
        let not_done: Vec<&Run> = self.runs.iter().filter(|r| r.status != Status::Done).collect();
        if !not_done.is_empty() {
            text += "\n## Not done\n\n";
            for run in not_done {
                text += &format!("- `{}`: {}\n", run.dir.display(), run.status.describe());
            }
        }
        if !self.skipped.is_empty() {
            text += "\n## Left out (run folders of other tools)\n\n";
            for (dir, tool) in &self.skipped {
                text += &format!("- `{}`: {tool}\n", dir.display());
            }
        }
        if !self.strays.is_empty() {
            text += "\n## Left out (run folders that are not runs of the sweep's points)\n\n";
            for dir in &self.strays {
                text += &format!("- `{}`\n", dir.display());
            }
        }
        text
    }

    /// Each run's start-up (seconds to its first training step) and what a
    /// feature cache served it, with how many runs loaded every feature
    /// they needed from one; nothing when no run says.
    fn startup_section(&self) -> String {
        let runs: Vec<&Run> = self.runs.iter().filter(|r| r.startup_seconds.is_some()).collect();
        if runs.is_empty() {
            return String::new();
        }
        let mut rows = vec![["run", "start-up", "features loaded", "features computed"].map(String::from).to_vec()];
        for run in &runs {
            let (loaded, computed) =
                run.features.map_or(("—".into(), "—".into()), |(l, c)| (l.to_string(), c.to_string()));
            let startup = run.startup_seconds.map_or("—".into(), |s| format!("{s:.1} s"));
            rows.push(vec![format!("`{}`", run.dir.display()), startup, loaded, computed]);
        }
        let cached = runs.iter().filter(|r| r.features.is_some()).count();
        let reused = runs.iter().filter(|r| r.features.is_some_and(|(loaded, computed)| loaded > 0 && computed == 0));
        let mut text = "\n## Start-up\n\n".to_owned();
        text += &markdown_table(&rows);
        text += &format!(
            "\nStart-up: seconds from a run's start to its first training step (its last attempt). \
             {} of {cached} run(s) with a feature cache loaded every frozen feature from it (computed none).\n",
            reused.count()
        );
        text
    }

    /// `results.csv`: one row per configuration.
    pub fn csv(&self) -> String {
        let (tests, balanced) = (self.has_test_acc(), self.has_class_balanced());
        let score = self.tool.score_key();
        let mut header: Vec<String> = self.keys.clone();
        header.extend(["runs".to_owned(), "done".to_owned(), format!("{score}_mean"), format!("{score}_std")]);
        header.extend(tests.then(|| "test_acc_mean".to_owned()));
        if balanced {
            header.extend(["macro_f1_mean".to_owned(), "balanced_acc_mean".to_owned()]);
        }
        header.extend(["best_epoch_mean", "seconds_per_epoch", "wall_seconds", "devices"].map(String::from));
        let mut lines = vec![header.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(",")];
        for configuration in &self.configurations {
            let done = self.done(configuration);
            let stat = |f: fn(&Run) -> Option<f64>| done.iter().filter_map(|r| f(r)).collect::<Vec<f64>>();
            let scores = stat(|r| r.score);
            let number =
                |values: &[f64]| if values.is_empty() { String::new() } else { format!("{:.6}", mean_std(values).0) };
            let devices: BTreeSet<&str> = done.iter().filter_map(|r| r.device.as_deref()).collect();
            let mut cells: Vec<String> = configuration.values.clone();
            cells.push(configuration.runs.len().to_string());
            cells.push(done.len().to_string());
            cells.push(number(&scores));
            cells.push(if scores.len() < 2 { String::new() } else { format!("{:.6}", mean_std(&scores).1) });
            if tests {
                cells.push(number(&stat(|r| r.test_acc)));
            }
            if balanced {
                cells.push(number(&stat(|r| r.macro_f1)));
                cells.push(number(&stat(|r| r.balanced_acc)));
            }
            cells.push(number(&stat(|r| r.best_epoch.map(|e| e as f64))));
            cells.push(number(&stat(|r| r.seconds_per_epoch)));
            cells.push(number(&stat(|r| r.wall_seconds)));
            cells.push(devices.into_iter().collect::<Vec<_>>().join(" "));
            lines.push(cells.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","));
        }
        lines.join("\n") + "\n"
    }

    /// Writes `results.md`, `results.csv` and `results.png` into `out`;
    /// returns their paths.
    pub fn write(&self, out: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create the folder", out.display()))?;
        let (md, csv, png) = (out.join("results.md"), out.join("results.csv"), out.join("results.png"));
        write_atomically(&md, self.markdown().as_bytes())?;
        write_atomically(&csv, self.csv().as_bytes())?;
        let rows: Vec<SpreadRow> = self
            .configurations
            .iter()
            .map(|c| SpreadRow { label: self.label(c), values: self.done(c).iter().filter_map(|r| r.score).collect() })
            .collect();
        let score = self.tool.score_name();
        let title = format!("{} per configuration ({} runs)", capitalized(score), self.runs.len());
        spread_chart(&png, &title, score, &rows)?;
        Ok(vec![md, csv, png])
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or(String::new(), |first| first.to_uppercase().chain(chars).collect())
}

/// `0.8000 ± 0.0707` over seeds, the value alone for one, `—` for none.
fn spread_cell(values: &[f64]) -> String {
    match values {
        [] => "—".into(),
        [one] => format!("{one:.4}"),
        _ => {
            let (mean, std) = mean_std(values);
            format!("{mean:.4} ± {std:.4}")
        }
    }
}

fn mean_cell(values: &[f64], decimals: usize, unit: &str) -> String {
    if values.is_empty() {
        return "—".into();
    }
    format!("{:.*}{unit}", decimals, mean_std(values).0)
}

fn markdown_table(rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| {
        format!("| {} |\n", cells.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | "))
    };
    let Some((header, body)) = rows.split_first() else { return String::new() };
    let mut text = line(header);
    text += &line(&vec!["---".to_owned(); header.len()]);
    body.iter().for_each(|row| text += &line(row));
    text
}

/// Whether `dir` is a run's folder (a finished, partial, attempted or
/// claimed run).
fn is_run_folder(dir: &Path) -> bool {
    let launcher = crate::run_dir::LAUNCHER_FILES.iter();
    crate::run_dir::holds_a_run(dir) || launcher.into_iter().any(|f| dir.join(f).is_file())
}

/// Run folders under `dir` (not inside other run folders, symlinks not
/// followed), sorted by path.
fn find_run_folders(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) -> Result<()> {
    if is_run_folder(dir) {
        found.push(dir.to_owned());
        return Ok(());
    }
    if depth == 0 {
        return Ok(());
    }
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list the folder", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    children.sort();
    for child in children {
        find_run_folders(&child, depth - 1, found)?;
    }
    Ok(())
}

/// The run in `folder` (named relative to the folder `root` it was found
/// under, after that folder with `with_root`), and its point's index when a
/// sweep ran it.
fn read_run(tool: Tool, folder: &RunFolder, root: &Path, with_root: bool) -> Result<(Run, Option<usize>)> {
    let dir = &folder.dir;
    let name = match dir.strip_prefix(root) {
        Ok(relative) if relative.as_os_str().is_empty() => root.to_owned(),
        Ok(relative) if with_root => root.join(relative),
        Ok(relative) => relative.to_owned(),
        Err(_) => dir.to_owned(),
    };
    let summary = folder.summary.as_ref();
    let headline = summary.map(|s| tool.headline(s)).unwrap_or_default();
    let text = |key: &str| summary.and_then(|s| s.get(key)).and_then(serde_json::Value::as_str).map(str::to_owned);
    let run = Run {
        dir: name,
        folder: dir.clone(),
        score: headline.score,
        test_acc: headline.test_acc,
        macro_f1: headline.macro_f1,
        balanced_acc: headline.balanced_acc,
        best_epoch: headline.best_epoch,
        epochs_done: folder.saved.as_ref().map_or(0, |s| s.epochs_done),
        epochs: folder.config().and_then(Tool::epochs),
        seconds_per_epoch: finetune_epoch_seconds(folder).or(headline.seconds_per_epoch),
        wall_seconds: folder.exit.as_ref().map(|e| e.seconds).or(summary.and_then(|s| s["seconds"].as_f64())),
        device: text("device").or(folder.exit.as_ref().map(|e| e.device.clone())),
        status: folder.status(None),
        options: folder.config().map(|config| option_texts(tool, config)).transpose()?,
        startup_seconds: headline.startup_seconds,
        features: headline.features,
    };
    Ok((run, folder.exit.as_ref().map(|e| e.index)))
}

/// Mean seconds of a `finetune` epoch (train and val phases), from its
/// saved history.
fn finetune_epoch_seconds(folder: &RunFolder) -> Option<f64> {
    let history = folder.saved.as_ref()?.history.as_ref()?;
    let val = history.phase("val");
    let seconds: Vec<f64> = history
        .phase("train")
        .iter()
        .map(|t| t.seconds + val.iter().find(|v| v.epoch == t.epoch).map_or(0.0, |v| v.seconds))
        .collect();
    (!seconds.is_empty()).then(|| mean_std(&seconds).0)
}

/// A run's config as option name → value text (`lr` → `0.01`, a list as
/// `10,50`), without the options that say how it was carried out.
fn option_texts(tool: Tool, config: &serde_json::Value) -> Result<BTreeMap<String, String>> {
    let serde_json::Value::Object(fields) = tool.normalized(config) else { bail!("config is not a map") };
    let text = |value: serde_json::Value| match value {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => "—".into(),
        serde_json::Value::Array(items) => items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    };
    Ok(fields
        .into_iter()
        .filter(|(key, _)| tool.is_reported(key))
        .map(|(key, value)| (key.replace('_', "-"), text(value)))
        .collect())
}

/// The options (but the seed) whose values differ between runs, in the
/// order the tool's `--help` lists them.
fn varying_keys(tool: Tool, runs: &[Run]) -> Vec<String> {
    let options: Vec<&BTreeMap<String, String>> = runs.iter().filter_map(|r| r.options.as_ref()).collect();
    let all: BTreeSet<&String> = options.iter().flat_map(|o| o.keys()).collect();
    let varies = |key: &String| options.iter().map(|o| o.get(key)).collect::<BTreeSet<_>>().len() > 1;
    let mut keys: Vec<String> = all.into_iter().filter(|k| *k != SEED && *k != FOLD && varies(k)).cloned().collect();
    let order: Vec<String> = tool.option_ids().iter().map(|id| id.replace('_', "-")).collect();
    keys.sort_by_key(|k| (order.iter().position(|o| o == k).unwrap_or(usize::MAX), k.clone()));
    keys
}

/// The paired comparisons between `configurations` of `finetune` runs (none
/// for the other tools), and the done runs without per-image outcomes.
fn comparisons(tool: Tool, runs: &[Run], configurations: &[Configuration]) -> Result<(Vec<Comparison>, usize)> {
    if tool != Tool::Finetune || configurations.len() < 2 {
        return Ok((Vec::new(), 0));
    }
    let mut unpaired = 0;
    let mut pairable = Vec::new();
    for configuration in configurations {
        let mut of_configuration = Vec::new();
        for run in configuration.runs.iter().map(|&i| &runs[i]).filter(|r| r.status == Status::Done) {
            let file = run.folder.join(VAL_PREDICTIONS_FILE);
            if !file.is_file() {
                unpaired += 1;
                continue;
            }
            let option = |key: &str| run.options.as_ref().and_then(|o| o.get(key).cloned()).unwrap_or_default();
            let outcomes = crate::finetune::outcomes::read(&file)?;
            of_configuration.push(PairableRun { fold: option(FOLD), seed: option(SEED), outcomes });
        }
        pairable.push(of_configuration);
    }
    Ok((paired::compare_all(&pairable), unpaired))
}

/// Runs with a config grouped by the values of `keys`, in order of first
/// appearance; runs without one are left to the runs table.
fn group(runs: &[Run], keys: &[String]) -> Vec<Configuration> {
    let mut configurations: Vec<Configuration> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let Some(options) = &run.options else { continue };
        let values: Vec<String> = keys.iter().map(|k| options.get(k).cloned().unwrap_or_else(|| "—".into())).collect();
        match configurations.iter_mut().find(|c| c.values == values) {
            Some(configuration) => configuration.runs.push(i),
            None => configurations.push(Configuration { values, runs: vec![i] }),
        }
    }
    configurations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lr: &str, seed: &str, status: Status, acc: Option<f64>) -> Run {
        let options = [("lr", lr), ("seed", seed), ("arch", "resnet18"), ("mode", "full")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Run {
            dir: PathBuf::from(format!("lr={lr},seed={seed}")),
            folder: PathBuf::from(format!("runs/s/lr={lr},seed={seed}")),
            status,
            options: Some(options),
            score: acc,
            test_acc: None,
            macro_f1: None,
            balanced_acc: None,
            best_epoch: acc.map(|_| 1),
            epochs_done: 2,
            epochs: Some(2),
            seconds_per_epoch: Some(1.5),
            wall_seconds: Some(4.0),
            device: Some("cpu".into()),
            startup_seconds: None,
            features: None,
        }
    }

    fn report(runs: Vec<Run>) -> Report {
        let keys = varying_keys(Tool::Finetune, &runs);
        let configurations = group(&runs, &keys);
        Report {
            roots: vec![PathBuf::from("runs/s")],
            tool: Tool::Finetune,
            keys,
            runs,
            configurations,
            comparisons: Vec::new(),
            unpaired: 0,
            skipped: Vec::new(),
            strays: Vec::new(),
        }
    }

    #[test]
    fn seeds_are_summed_up_per_configuration_and_a_failed_run_is_listed_not_dropped() {
        let failed = Status::Failed { error: "data: no val folder".into(), epochs_done: 0 };
        let mut no_config = run("0.1", "0", failed.clone(), None);
        no_config.options = None;
        no_config.dir = PathBuf::from("lr=0.1,seed=0");
        let r = report(vec![
            run("0.01", "0", Status::Done, Some(0.75)),
            run("0.01", "1", Status::Done, Some(0.85)),
            run("0.001", "0", Status::Done, Some(0.5)),
            run("0.001", "1", failed, None),
            no_config,
        ]);
        assert_eq!(r.keys, ["lr"], "only lr varies (seed is what is summed over)");
        assert_eq!(r.configurations.len(), 2);
        let rows = r.configuration_rows();
        assert_eq!(rows[0], ["lr", "runs done", "best val acc", "best epoch", "s/epoch", "wall", "device"]);
        assert_eq!(rows[1], ["0.01", "2 of 2", "0.8000 ± 0.0707", "1.0", "1.500", "4.0 s", "cpu"]);
        assert_eq!(rows[2], ["0.001", "1 of 2", "0.5000", "1.0", "1.500", "4.0 s", "cpu"]);
        let md = r.markdown();
        assert!(md.starts_with("# Results: 5 run(s) under `runs/s`, 3 done\n"), "{md}");
        assert!(md.contains("\n## Not done\n\n- `lr=0.001,seed=1`: failed (data: no val folder)\n- `lr=0.1,seed=0`: failed (data: no val folder)\n"), "{md}");
        assert!(md.contains("| `lr=0.1,seed=0` | failed | ? | ? | — |"), "{md}");
        let csv = r.csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "lr,runs,done,best_val_acc_mean,best_val_acc_std,best_epoch_mean,seconds_per_epoch,wall_seconds,devices"
        );
        assert_eq!(lines[1], "0.01,2,2,0.800000,0.070711,1.000000,1.500000,4.000000,cpu");
        assert_eq!(lines[2], "0.001,2,1,0.500000,,1.000000,1.500000,4.000000,cpu");
    }

    #[test]
    fn runs_that_recorded_macro_f1_and_balanced_accuracy_get_their_columns() {
        let scored = |seed: &str, acc: f64, f1: f64| Run {
            macro_f1: Some(f1),
            balanced_acc: Some(f1 + 0.05),
            ..run("0.01", seed, Status::Done, Some(acc))
        };
        let r = report(vec![scored("0", 0.8, 0.6), scored("1", 0.9, 0.7)]);
        let rows = r.configuration_rows();
        assert_eq!(rows[0][1..4], ["best val acc", "val macro-F1", "val balanced acc"]);
        assert_eq!(rows[1][1..4], ["0.8500 ± 0.0707", "0.6500 ± 0.0707", "0.7000 ± 0.0707"]);
        assert_eq!(r.run_rows()[1][3..6], ["0.8000", "0.6000", "0.6500"]);
        let csv = r.csv();
        assert!(
            csv.starts_with("runs,done,best_val_acc_mean,best_val_acc_std,macro_f1_mean,balanced_acc_mean,"),
            "{csv}"
        );
        assert!(csv.lines().nth(1).unwrap().starts_with("2,2,0.850000,0.070711,0.650000,0.700000,"), "{csv}");
    }
}
