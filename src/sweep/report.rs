//! One table of all runs under some folders (a sweep's, or any `finetune`
//! outputs): the options that vary between them, and per configuration
//! (the runs that differ only in `seed`) the best val accuracy as mean ± std
//! over the seeds, best epoch, seconds per epoch, wall time and device.
//! Written as `results.md`, `results.csv` and `results.png`. Runs that failed
//! or are not finished are listed as such, not dropped. Reads run folders
//! through [`super::status`]; trains nothing. Over 400 lines only with its
//! unit tests (the code is about 370): aggregation and its three writers
//! read best together.

use super::status::{RunFolder, Status};
use crate::metrics::mean_std;
use crate::persist::write_atomically;
use crate::report::csv_field;
use crate::report::plots::{spread_chart, SpreadRow};
use crate::train::config::TrainOptions;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// How deep under each given folder run folders are looked for.
const MAX_DEPTH: usize = 4;
/// Config entries that say how a run was carried out, not what it was.
const NOT_OPTIONS: &[&str] = &["out", "workers", "threads", "cache_mb", "overwrite"];
/// The option runs of one configuration differ in.
const SEED: &str = "seed";

/// One run folder, summed up.
#[derive(Debug, Clone)]
pub struct Run {
    /// The folder, relative to the folder given.
    pub dir: PathBuf,
    pub status: Status,
    /// Every option of the run's config, as text (`None`: no config saved).
    pub options: Option<BTreeMap<String, String>>,
    pub best_val_acc: Option<f64>,
    pub best_epoch: Option<usize>,
    pub epochs_done: usize,
    pub epochs: Option<usize>,
    /// Mean seconds of an epoch (train and val phases).
    pub seconds_per_epoch: Option<f64>,
    /// Wall time of every attempt (the launcher's record, else the run's own).
    pub wall_seconds: Option<f64>,
    pub device: Option<String>,
}

/// Runs that differ only in their seed.
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
    /// The options whose values differ between runs, but the seed.
    pub keys: Vec<String>,
    pub runs: Vec<Run>,
    pub configurations: Vec<Configuration>,
    /// Run folders of the other tools (`mnist mlp`, …), left out: (folder, tool).
    pub skipped: Vec<(PathBuf, String)>,
}

impl Report {
    /// Finds and reads every run folder under `roots`.
    pub fn collect(roots: &[PathBuf]) -> Result<Self> {
        let mut runs = Vec::new();
        let mut skipped = Vec::new();
        for root in roots {
            if !root.is_dir() {
                bail!("{}: not a folder", root.display());
            }
            let mut found = Vec::new();
            find_run_folders(root, MAX_DEPTH, &mut found)?;
            if found.is_empty() {
                bail!("{}: no run folders in it (a run folder holds summary.json, state.safetensors or a sweep's log.txt)", root.display());
            }
            let (others, found): (Vec<_>, Vec<_>) =
                found.into_iter().map(|dir| (other_tool(&dir), dir)).partition(|(tool, _)| tool.is_some());
            skipped.extend(others.into_iter().map(|(tool, dir)| (dir, tool.unwrap_or_default())));
            let mut found =
                found.iter().map(|(_, dir)| read_run(dir, root, roots.len() > 1)).collect::<Result<Vec<_>>>()?;
            // A sweep's runs in the order of their points.
            found.sort_by_key(|(run, index)| (index.unwrap_or(usize::MAX), run.dir.clone()));
            runs.extend(found.into_iter().map(|(run, _)| run));
        }
        let keys = varying_keys(&runs);
        let configurations = group(&runs, &keys);
        if runs.is_empty() && !skipped.is_empty() {
            let names: Vec<String> = skipped.iter().map(|(dir, tool)| format!("{} ({tool})", dir.display())).collect();
            bail!("no finetune runs to tabulate; run folders of other tools: {}", names.join(", "));
        }
        Ok(Self { roots: roots.to_vec(), keys, runs, configurations, skipped })
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
        let mut header: Vec<String> = self.keys.clone();
        header.extend(["runs done", "best val acc", "best epoch", "s/epoch", "wall", "device"].map(String::from));
        let mut rows = vec![header];
        for configuration in &self.configurations {
            let done = self.done(configuration);
            let mut row = configuration.values.clone();
            row.push(format!("{} of {}", done.len(), configuration.runs.len()));
            let stat = |f: fn(&Run) -> Option<f64>| done.iter().filter_map(|r| f(r)).collect::<Vec<f64>>();
            let accs = stat(|r| r.best_val_acc);
            row.push(match accs.len() {
                0 => "—".into(),
                1 => format!("{:.4}", accs[0]),
                _ => {
                    let (mean, std) = mean_std(&accs);
                    format!("{mean:.4} ± {std:.4}")
                }
            });
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
        let mut header = vec!["run".to_owned(), "status".to_owned()];
        header.extend(self.keys.iter().cloned());
        header.extend(["seed", "best val acc", "best epoch", "epochs", "s/epoch", "wall", "device"].map(String::from));
        let mut rows = vec![header];
        for run in &self.runs {
            let option =
                |key: &str| run.options.as_ref().and_then(|o| o.get(key).cloned()).unwrap_or_else(|| "?".into());
            let mut row = vec![format!("`{}`", run.dir.display()), run.status.word().to_owned()];
            row.extend(self.keys.iter().map(|k| option(k)));
            row.push(option(SEED));
            row.push(run.best_val_acc.map_or("—".into(), |a| format!("{a:.4}")));
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
        let mut text = format!("# Results: {} run(s) under {}, {done} done\n\n", self.runs.len(), roots.join(", "));
        text += &markdown_table(&self.configuration_rows());
        text += "\nbest val acc: mean ± standard deviation over the seeds of the done runs; best epoch, s/epoch \
                 (train and val phases) and wall time (every attempt): means over them.\n\n## Runs\n\n";
        text += &markdown_table(&self.run_rows());
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
        text
    }

    /// `results.csv`: one row per configuration.
    pub fn csv(&self) -> String {
        let mut header: Vec<String> = self.keys.clone();
        header.extend(
            [
                "runs",
                "done",
                "best_val_acc_mean",
                "best_val_acc_std",
                "best_epoch_mean",
                "seconds_per_epoch",
                "wall_seconds",
                "devices",
            ]
            .map(String::from),
        );
        let mut lines = vec![header.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(",")];
        for configuration in &self.configurations {
            let done = self.done(configuration);
            let stat = |f: fn(&Run) -> Option<f64>| done.iter().filter_map(|r| f(r)).collect::<Vec<f64>>();
            let accs = stat(|r| r.best_val_acc);
            let (mean, std) = mean_std(&accs);
            let number =
                |values: &[f64]| if values.is_empty() { String::new() } else { format!("{:.6}", mean_std(values).0) };
            let devices: BTreeSet<&str> = done.iter().filter_map(|r| r.device.as_deref()).collect();
            let mut cells: Vec<String> = configuration.values.clone();
            cells.push(configuration.runs.len().to_string());
            cells.push(done.len().to_string());
            cells.push(if accs.is_empty() { String::new() } else { format!("{mean:.6}") });
            cells.push(if accs.len() < 2 { String::new() } else { format!("{std:.6}") });
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
            .map(|c| SpreadRow {
                label: self.label(c),
                values: self.done(c).iter().filter_map(|r| r.best_val_acc).collect(),
            })
            .collect();
        let title = format!("Best val accuracy per configuration ({} runs)", self.runs.len());
        spread_chart(&png, &title, "best val accuracy", &rows)?;
        Ok(vec![md, csv, png])
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

/// The tool that wrote the run in `dir` when it is not `finetune`: the
/// `tool` of its summary, or for an unfinished run whether its state is
/// `finetune`'s (which alone carries a `history`).
fn other_tool(dir: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(dir.join(crate::run_dir::SUMMARY_FILE)) {
        let tool = serde_json::from_str::<serde_json::Value>(&text).ok()?.get("tool")?.as_str()?.to_owned();
        return (tool != "finetune").then_some(tool);
    }
    let metadata = crate::persist::safetensors::read_metadata(&crate::run_dir::state_path(dir)).ok()?;
    (!metadata.contains_key("history")).then(|| "an unfinished run of another tool".to_owned())
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

/// The run in `dir` (named relative to the folder `root` it was found
/// under, after that folder with `with_root`), and its point's index when a
/// sweep ran it.
fn read_run(dir: &Path, root: &Path, with_root: bool) -> Result<(Run, Option<usize>)> {
    let folder = RunFolder::read(dir)?;
    let name = match dir.strip_prefix(root) {
        Ok(relative) if relative.as_os_str().is_empty() => root.to_owned(),
        Ok(relative) if with_root => root.join(relative),
        Ok(relative) => relative.to_owned(),
        Err(_) => dir.to_owned(),
    };
    let status = folder.status(None);
    let options = folder.config().map(option_texts).transpose()?;
    let history = folder.saved.as_ref().map(|s| &s.history);
    let epoch_seconds: Vec<f64> = history
        .map(|h| {
            let val = h.phase("val");
            h.phase("train")
                .iter()
                .map(|t| t.seconds + val.iter().find(|v| v.epoch == t.epoch).map_or(0.0, |v| v.seconds))
                .collect()
        })
        .unwrap_or_default();
    let summary = folder.summary.as_ref();
    let run = Run {
        dir: name,
        best_val_acc: summary.map(|s| s.best_val_acc),
        best_epoch: summary.map(|s| s.best_epoch),
        epochs_done: folder.saved.as_ref().map_or(0, |s| s.epochs_done),
        epochs: folder.config().map(|c| c.epochs),
        seconds_per_epoch: (!epoch_seconds.is_empty()).then(|| mean_std(&epoch_seconds).0),
        wall_seconds: folder.exit.as_ref().map(|e| e.seconds).or(summary.map(|s| s.seconds)),
        device: summary.map(|s| s.device.clone()).or(folder.exit.as_ref().map(|e| e.device.clone())),
        status,
        options,
    };
    Ok((run, folder.exit.as_ref().map(|e| e.index)))
}

/// A run's config as option name → value text (`lr` → `0.01`).
fn option_texts(config: &crate::train::config::FinetuneConfig) -> Result<BTreeMap<String, String>> {
    let serde_json::Value::Object(fields) = serde_json::to_value(config)? else { bail!("config is not a map") };
    Ok(fields
        .into_iter()
        .filter(|(key, _)| !NOT_OPTIONS.contains(&key.as_str()))
        .map(|(key, value)| {
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => "—".into(),
                other => other.to_string(),
            };
            (key.replace('_', "-"), text)
        })
        .collect())
}

/// The options (but the seed) whose values differ between runs, in the
/// order `finetune --help` lists them.
fn varying_keys(runs: &[Run]) -> Vec<String> {
    let options: Vec<&BTreeMap<String, String>> = runs.iter().filter_map(|r| r.options.as_ref()).collect();
    let all: BTreeSet<&String> = options.iter().flat_map(|o| o.keys()).collect();
    let varies = |key: &String| options.iter().map(|o| o.get(key)).collect::<BTreeSet<_>>().len() > 1;
    let mut keys: Vec<String> = all.into_iter().filter(|k| *k != SEED && varies(k)).cloned().collect();
    let order: Vec<String> = TrainOptions::ids().iter().map(|id| id.replace('_', "-")).collect();
    keys.sort_by_key(|k| (order.iter().position(|o| o == k).unwrap_or(usize::MAX), k.clone()));
    keys
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
            status,
            options: Some(options),
            best_val_acc: acc,
            best_epoch: acc.map(|_| 1),
            epochs_done: 2,
            epochs: Some(2),
            seconds_per_epoch: Some(1.5),
            wall_seconds: Some(4.0),
            device: Some("cpu".into()),
        }
    }

    fn report(runs: Vec<Run>) -> Report {
        let keys = varying_keys(&runs);
        let configurations = group(&runs, &keys);
        Report { roots: vec![PathBuf::from("runs/s")], keys, runs, configurations, skipped: Vec::new() }
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
}
