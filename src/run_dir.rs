//! The run folder every tool writes into: the names of its files (each
//! spelled here once), the overwrite rule, the default folder name, and
//! the top-level keys of `summary.json`.
//!
//! Every `summary.json` starts with the same keys (tool, version, config,
//! device, libtorch, seconds), the tool's results beside them.
//!
//! The rule, the same for `finetune`, `mnist`, `caption` and `eigenfaces`:
//! a folder that holds a run (a [`STATE_FILE`] or a [`SUMMARY_FILE`]) is
//! refused for a fresh run unless `--overwrite`; a folder holding other
//! files is refused always; without `--out` a run takes the first free
//! `runs/<tool>-…`, `runs/<tool>-…-2`, …. With `--overwrite` what the
//! earlier run wrote (the files any tool writes, named here) is removed
//! once the new run has saved its first result, other files are left alone, so a run that fails before that leaves
//! the earlier one whole. A run that saved nothing leaves no folder it
//! made. It knows files and folders, not training.

use crate::interrupt::Interrupted;
use crate::persist::write_atomically;
use crate::report::Reporter;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::cell::Cell;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The resumable state, written atomically after every epoch.
pub const STATE_FILE: &str = "state.safetensors";
/// The closing record: see [`RunSummary`].
pub const SUMMARY_FILE: &str = "summary.json";
/// The kept model with its card.
pub const BEST_MODEL_FILE: &str = "best_model.safetensors";
/// The run's resolved options, as a `--config` file.
pub const RUN_CONFIG_FILE: &str = "run.toml";
/// `finetune`'s per-epoch rows.
pub const METRICS_FILE: &str = "metrics.csv";
/// A multi-label `finetune` run's per-epoch val mAP, F1 and exact match.
pub const MULTILABEL_METRICS_FILE: &str = "multilabel_metrics.csv";
/// A multi-label `finetune` run's per-image val probabilities of the kept epoch.
pub const VAL_SCORES_FILE: &str = "val_scores.csv";
/// `finetune`'s outcome on each val image at the kept epoch.
pub const VAL_PREDICTIONS_FILE: &str = "val_predictions.csv";
/// The run's output (stdout and stderr), as its launcher keeps it.
pub const LOG_FILE: &str = "log.txt";
/// The claim on the folder while a launcher runs it.
pub const LOCK_FILE: &str = "sweep.lock";
/// How the launcher's last attempt at the run ended.
pub const EXIT_FILE: &str = "exit.json";
/// Every other file a tool writes into its run folder: what `--overwrite`
/// removes of an earlier run (with TensorBoard events and `finetune eval`'s
/// `eval-*` folders); files of other names are left alone.
const TOOL_FILES: &[&str] = &[
    // finetune
    MULTILABEL_METRICS_FILE,
    VAL_SCORES_FILE,
    "loss.png",
    "accuracy.png",
    "val_predictions.png",
    VAL_PREDICTIONS_FILE,
    // mnist
    "results.md",
    "results.csv",
    "loss_history.png",
    "accuracy_vs_hidden.png",
    // caption
    "loss_history.csv",
    "epochs.csv",
    "samples.json",
    "samples_train.png",
    "samples_val.png",
    // eigenfaces
    "eigenvalues.csv",
    "components.safetensors",
    "recognition.csv",
    "eigenvalues.png",
    "eigenfaces.png",
    "reconstructions.png",
    "accuracy_vs_k.png",
];

/// What a launcher (`finetune sweep`) keeps in a run's folder beside the
/// run's own files. They do not make the folder someone else's.
pub const LAUNCHER_FILES: &[&str] = &[LOG_FILE, LOCK_FILE, EXIT_FILE];

/// Whether a run starts afresh or continues its saved state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Fresh,
    Resume,
}

pub fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// The options saved with the run state in `dir` (its `config` metadata),
/// to resume it with.
pub fn saved_config(dir: &Path) -> Result<String> {
    let path = state_path(dir);
    if !path.is_file() {
        bail!(
            "{}: nothing to resume (no {STATE_FILE}: the run saved no completed epoch, or was started with another --out)",
            dir.display()
        );
    }
    let meta = crate::persist::safetensors::read_metadata(&path)?;
    meta.get("config").cloned().with_context(|| format!("{}: metadata config missing", path.display()))
}

/// The tool that saved the run state in `dir` (its `tool` metadata; none
/// in `finetune`'s states).
pub fn saved_tool(dir: &Path) -> Result<Option<String>> {
    Ok(crate::persist::safetensors::read_metadata(&state_path(dir))?.get("tool").cloned())
}

/// A run's options (`config`, as the tool saves them) as the TOML file that
/// runs it again: `tool --config run.toml --out NEW_DIR` (the output folder,
/// the device and unset options left out).
pub fn options_toml(tool: &str, config: &serde_json::Value) -> Result<String> {
    let serde_json::Value::Object(fields) = config else { bail!("{tool}: options that are not a table") };
    let mut fields = fields.clone();
    // Where it ran is not the recipe (a sweep's cuda:1 may not exist elsewhere).
    fields.remove("out");
    fields.remove("device");
    fields.retain(|_, value| !value.is_null());
    let table: toml::Table = serde_json::from_value(serde_json::Value::Object(fields))?;
    Ok(format!(
        "# The resolved options of this run: {tool} --config {RUN_CONFIG_FILE} --out NEW_DIR runs it again.\n{}",
        toml::to_string(&table)?
    ))
}

/// Whether `dir` holds a run: its resumable state or its summary.
pub fn holds_a_run(dir: &Path) -> bool {
    dir.join(STATE_FILE).is_file() || dir.join(SUMMARY_FILE).is_file()
}

/// `--out` made absolute, or without it `base` when it is free or
/// `overwrite` replaces it, else the first free of `base-2`, `base-3`, …
/// (said in one line to `reporter`).
pub fn choose(out: Option<&Path>, base: &str, overwrite: bool, reporter: &dyn Reporter) -> Result<PathBuf> {
    if let Some(out) = out {
        return absolute(out);
    }
    let free = std::iter::once(PathBuf::from(base))
        .chain((2..).map(|n| PathBuf::from(format!("{base}-{n}"))))
        .find(|dir| overwrite || !holds_files(dir))
        .context("no free output folder")?;
    if free != Path::new(base) {
        reporter.line(&format!(
            "note: {base} holds an earlier run; this one goes to {} (--out to choose, --overwrite to replace)",
            free.display()
        ));
    }
    absolute(&free)
}

pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("{}: cannot make the path absolute", path.display()))
}

/// A file as it was when a run started: what tells that the run has
/// rewritten it since (inode, size and modification time; not the clock).
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint(u64, u64, i64, i64);

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let m = std::fs::symlink_metadata(path).ok()?;
    Some(Fingerprint(m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

/// Refuses `path` for a run, as [`RunDir::prepare`] would, without making
/// anything: for the binaries to call before slow work (reading data).
pub fn check(path: &Path, start: Start, overwrite: bool) -> Result<()> {
    if start == Start::Resume {
        saved_config(path)?;
        return Ok(());
    }
    if path.exists() && holds_files(path) {
        if !holds_a_run(path) {
            bail!(
                "--out {}: the folder holds files that are not a run's; choose an empty or new folder",
                path.display()
            );
        }
        if !overwrite {
            bail!(
                "--out {}: the folder holds a run; use --overwrite to replace it{}",
                path.display(),
                if path.join(STATE_FILE).is_file() { " or --resume to continue it" } else { "" }
            );
        }
    }
    Ok(())
}

/// The output folder of a run in progress.
pub struct RunDir {
    path: PathBuf,
    /// Made by this run (and so removed again if nothing was saved).
    created: bool,
    /// What an earlier run left there (`--overwrite`), removed once this
    /// run has saved, unless this run has rewritten it since.
    stale: Vec<(PathBuf, Option<Fingerprint>)>,
    saved: Cell<bool>,
}

impl RunDir {
    /// Makes the folder (for a fresh run: empty, or holding an earlier run
    /// that `overwrite` allows to replace) and proves it writable. A
    /// resumed run needs its state there.
    pub fn prepare(path: &Path, start: Start, overwrite: bool) -> Result<Self> {
        check(path, start, overwrite)?;
        let existed = path.exists();
        let stale = match start {
            Start::Fresh if existed => run_files(path)?.into_iter().map(|p| (p.clone(), fingerprint(&p))).collect(),
            _ => Vec::new(),
        };
        std::fs::create_dir_all(path)
            .with_context(|| format!("--out {}: cannot create the output folder", path.display()))?;
        let probe = path.join(".write-test");
        std::fs::write(&probe, b"ok")
            .with_context(|| format!("--out {}: output folder is not writable", path.display()))?;
        std::fs::remove_file(&probe).ok();
        Ok(Self { path: path.to_owned(), created: !existed, stale, saved: Cell::new(start == Start::Resume) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the run's file `name`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes the run's file `name` atomically.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_atomically(&self.file(name), bytes)
    }

    /// Whether the run has saved anything yet (a resumed one has).
    pub fn saved(&self) -> bool {
        self.saved.get()
    }

    /// The run saved a result: the folder stays, whatever happens next, and
    /// what an earlier run left beside this one's files goes.
    pub fn mark_saved(&self) {
        if self.saved.replace(true) {
            return;
        }
        for (path, before) in &self.stale {
            if fingerprint(path) != *before {
                continue;
            }
            let _ = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        }
    }

    /// Refuses to resume a run that finished (its summary is written).
    pub fn refuse_if_complete(&self) -> Result<()> {
        if self.file(SUMMARY_FILE).exists() {
            bail!("{}: run already complete; start a new run to train again", self.path.display());
        }
        Ok(())
    }

    /// Adds what the user can do next to an error from inside the run:
    /// `tool --resume DIR` when an epoch is saved, else that there is
    /// nothing to resume yet. An [`Interrupted`] error stays one.
    pub fn explain(&self, error: anyhow::Error, tool: &str) -> anyhow::Error {
        let next = if self.saved() {
            format!("the last completed epoch is saved. Resume with: {tool} --resume {}", self.path.display())
        } else {
            "nothing to resume yet (no epoch was completed)".to_owned()
        };
        match error.downcast::<Interrupted>() {
            Ok(Interrupted(message)) => Interrupted(format!("{message}; {next}")).into(),
            Err(error) if self.saved() => error.context(format!("the last good state is in {}", self.path.display())),
            Err(error) => error.context(next),
        }
    }

    /// Writes `summary.json` with the keys every tool's summary has.
    pub fn write_summary<C: Serialize, R: Serialize>(&self, summary: &RunSummary<C, R>) -> Result<()> {
        self.write(SUMMARY_FILE, serde_json::to_string_pretty(summary)?.as_bytes())
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.created && !self.saved.get() && !self.path.join(STATE_FILE).exists() {
            std::fs::remove_dir_all(&self.path).ok();
        }
    }
}

/// `summary.json`: the same top-level keys for every tool.
#[derive(Debug, Serialize)]
pub struct RunSummary<'a, C: Serialize, R: Serialize> {
    /// `finetune`, `mnist mlp`, `caption train`, ….
    pub tool: &'a str,
    pub version: &'a str,
    /// The resolved options of the run.
    pub config: &'a C,
    /// As users type it: `cpu`, `cuda:0`.
    pub device: String,
    pub libtorch: &'a str,
    pub seconds: f64,
    /// What the run measured, in the tool's own shape, beside these keys.
    #[serde(flatten)]
    pub results: &'a R,
}

impl<'a, C: Serialize, R: Serialize> RunSummary<'a, C, R> {
    pub fn new(tool: &'a str, config: &'a C, device: tch::Device, seconds: f64, results: &'a R) -> Self {
        Self {
            tool,
            version: env!("CARGO_PKG_VERSION"),
            config,
            device: crate::device::name(device),
            libtorch: crate::device::libtorch_version(),
            seconds,
            results,
        }
    }
}

/// Whether `dir` holds anything but a launcher's files.
fn holds_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| !LAUNCHER_FILES.contains(&e.file_name().to_string_lossy().as_ref()))
    })
}

/// Whether `path` is something a run of any tool wrote.
fn written_by_a_run(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    [STATE_FILE, SUMMARY_FILE, BEST_MODEL_FILE, RUN_CONFIG_FILE, METRICS_FILE].contains(&name.as_str())
        || TOOL_FILES.contains(&name.as_str())
        || name.starts_with("events.out.tfevents.")
        || (name.starts_with("eval-") && path.is_dir())
}

/// What an earlier run wrote in `dir`.
fn run_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("--out {}: cannot list the folder", dir.display()))?;
    Ok(entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| written_by_a_run(p)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Capture;

    #[test]
    fn a_folder_holding_a_run_is_refused_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SUMMARY_FILE), "{}").unwrap();
        let error = RunDir::prepare(dir.path(), Start::Fresh, false).err().unwrap().to_string();
        assert!(error.contains("holds a run") && error.contains("--overwrite"), "{error}");
        assert!(!error.contains("--resume"), "a summary alone cannot be resumed: {error}");
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        std::fs::remove_file(dir.path().join(SUMMARY_FILE)).unwrap();
        let error = RunDir::prepare(dir.path(), Start::Fresh, true).err().unwrap().to_string();
        assert!(error.contains("not a run's"), "{error}");
    }

    #[test]
    fn overwrite_removes_the_earlier_run_once_the_new_one_saved_and_keeps_what_it_rewrote() {
        let dir = tempfile::tempdir().unwrap();
        for name in [SUMMARY_FILE, "recognition.csv", LOG_FILE, "notes.md"] {
            std::fs::write(dir.path().join(name), "old").unwrap();
        }
        let run = RunDir::prepare(dir.path(), Start::Fresh, true).unwrap();
        assert!(dir.path().join("recognition.csv").exists(), "kept until the new run saves");
        run.write(SUMMARY_FILE, b"new").unwrap();
        run.mark_saved();
        assert!(!dir.path().join("recognition.csv").exists());
        assert_eq!(std::fs::read_to_string(dir.path().join(SUMMARY_FILE)).unwrap(), "new");
        assert!(dir.path().join(LOG_FILE).exists(), "a launcher's file stays");
        assert!(dir.path().join("notes.md").exists(), "a file no run writes stays");
    }

    #[test]
    fn a_run_that_saved_nothing_leaves_no_folder_it_made() {
        let parent = tempfile::tempdir().unwrap();
        let out = parent.path().join("run");
        drop(RunDir::prepare(&out, Start::Fresh, false).unwrap());
        assert!(!out.exists());
        let error = RunDir::prepare(&out, Start::Resume, false).err().unwrap().to_string();
        assert!(error.contains("nothing to resume"), "{error}");
    }

    #[test]
    fn without_out_a_run_takes_the_next_free_folder() {
        let parent = tempfile::tempdir().unwrap();
        let base = parent.path().join("mnist-mlp");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join(SUMMARY_FILE), "{}").unwrap();
        let capture = Capture::default();
        let chosen = choose(None, base.to_str().unwrap(), false, &capture).unwrap();
        assert_eq!(choose(None, base.to_str().unwrap(), true, &capture).unwrap(), base);
        assert_eq!(chosen, parent.path().join("mnist-mlp-2"));
        let note = format!("note: {} holds an earlier run; this one goes to {}", base.display(), chosen.display());
        assert_eq!(capture.lines().len(), 1, "the note is said once: {:?}", capture.lines());
        assert!(capture.lines()[0].starts_with(&note), "{:?}", capture.lines());
    }
}
