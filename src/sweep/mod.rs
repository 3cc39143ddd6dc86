//! Lab-scale experiments: many runs of one tool (`finetune`, `mnist mlp`,
//! `mnist cnn` or `caption train`) from one sweep file, on the GPUs or CPU
//! of one machine or as a Slurm array, and one report of them.
//!
//! - [`tool`]: the tools a sweep runs and what it needs to know of each;
//! - [`grid`]: the sweep file (`tool`, `[base]` options, `[grid]` lists) and
//!   the points it crosses, each with a stable index and a run folder name;
//! - [`status`]: what a run folder says (done, partial, failed, running, new);
//! - [`lock`]: the claim that keeps two processes off one run folder;
//! - [`runner`]: runs points as child processes of the tool, several at
//!   once over the devices, passing Ctrl-C on;
//! - [`slurm`]: the `sweep.sbatch` array jobs (one per `nproc`) and the
//!   task's point;
//! - [`rank`]: a sweep started by `srun` as one rank of a point of several;
//! - [`report`]: one table (Markdown, CSV, PNG) of the runs under folders;
//! - [`paired`]: its paired tests between configurations scored on the
//!   same images (`finetune`'s per-image val outcomes).
//!
//! Training itself is the tool's own: a sweep starts the tool's binary once
//! per point (`--out` its run folder, `--resume` for a partial one) and never
//! trains in its own process.

pub mod grid;
pub mod lock;
pub mod paired;
pub mod rank;
pub mod report;
pub mod runner;
pub mod slurm;
pub mod status;
pub mod tool;

use crate::interrupt::Interrupted;
use crate::report::Reporter;
use anyhow::{bail, Result};
use grid::{Point, SweepFile};
use runner::{Plan, Tally};
use status::{RunFolder, Status};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;

/// The folder under a sweep's `--out` where its frozen-backbone points
/// share their features.
pub const FEATURE_CACHE_DIR: &str = "feature-cache";

/// A sweep: its file, the folder its runs go under, and its points.
pub struct Sweep {
    pub file: SweepFile,
    pub out: PathBuf,
    pub points: Vec<Point>,
}

impl Sweep {
    /// Reads and checks the sweep file; `out` defaults to `runs/<file stem>`.
    pub fn load(file: &Path, out: Option<&Path>) -> Result<Self> {
        let sweep_file = SweepFile::read(file)?;
        sweep_file.tool.command()?; // the tool's binary, before a listing says the sweep is fine
        let out = match out {
            Some(out) => out.to_owned(),
            None => Path::new("runs").join(file.file_stem().unwrap_or_default()),
        };
        let out = std::path::absolute(&out).map_err(|e| anyhow::anyhow!("--out {}: {e}", out.display()))?;
        let points = sweep_file.points(&out)?;
        Ok(Self { file: sweep_file, out, points })
    }

    /// The options the launcher sets for every point (`threads`, and
    /// `workers` for `finetune`): those the sweep file leaves to it.
    pub fn launched_options(&self) -> Vec<&'static str> {
        let set_by_file =
            |option: &str| self.file.base.contains_key(option) || self.file.axes.iter().any(|a| a.key == option);
        self.file.tool.launcher_options().iter().copied().filter(|&option| !set_by_file(option)).collect()
    }

    /// The feature cache the sweep gives `point`'s run: `<out>/feature-cache`
    /// for a `finetune` point whose backbone is frozen (feature-extract,
    /// or staged for its first epochs), unless the sweep file sets
    /// `feature-cache` itself (then the point's own options hold it).
    pub fn feature_cache(&self, point: &Point) -> Option<PathBuf> {
        let freezes = matches!(point.config["mode"].as_str(), Some("feature-extract" | "staged"));
        let set_by_file = !point.config["feature_cache"].is_null();
        (self.file.tool == tool::Tool::Finetune && freezes && !set_by_file).then(|| self.out.join(FEATURE_CACHE_DIR))
    }

    /// The run folder of `point`.
    pub fn dir(&self, point: &Point) -> PathBuf {
        self.out.join(&point.name)
    }

    /// The point of index `index`, or a one-line error giving the range.
    pub fn point(&self, index: usize) -> Result<&Point> {
        match self.points.get(index) {
            Some(point) => Ok(point),
            None => {
                bail!("point {index}: the sweep has {} point(s), 0 to {}", self.points.len(), self.points.len() - 1)
            }
        }
    }

    /// The ranks `point` runs as: its `nproc` (1 when unset).
    pub fn nproc(&self, point: &Point) -> usize {
        let given = point.values.iter().find(|(key, _)| key == "nproc").map(|(_, value)| value);
        let value = given.or_else(|| self.file.base.get("nproc"));
        value.and_then(toml::Value::as_integer).and_then(|n| usize::try_from(n).ok()).unwrap_or(1).max(1)
    }

    /// Where `point` stands. A run folder that holds a run of another recipe
    /// is an error naming the option that differs.
    pub fn status(&self, point: &Point) -> Result<Status> {
        self.status_of(point, RunFolder::read(&self.dir(point))?)
    }

    /// Where `point` stands whoever holds its folder: what a rank that joins
    /// rank 0's run of it sees (rank 0 holds the folder).
    pub fn status_unclaimed(&self, point: &Point) -> Result<Status> {
        let folder = RunFolder { holder: None, ..RunFolder::read(&self.dir(point))? };
        self.status_of(point, folder)
    }

    fn status_of(&self, point: &Point, folder: RunFolder) -> Result<Status> {
        let tool = self.file.tool;
        if let Some(held) = folder.tool.as_deref().filter(|held| *held != tool.name()) {
            bail!(
                "point {} ({}): {} holds a run of `{held}`, not of `{}`; move it away or give the sweep another --out",
                point.index,
                point.label(),
                self.dir(point).display(),
                tool.name()
            );
        }
        if let Some(difference) =
            folder.config().and_then(|saved| status::recipe_difference(tool, saved, &point.config))
        {
            bail!(
                "point {} ({}): {} holds a run with {difference}; move it away or give the sweep another --out",
                point.index,
                point.label(),
                self.dir(point).display()
            );
        }
        Ok(folder.status(Some(point.epochs)))
    }

    /// The points, their folders and where they stand, as a table.
    pub fn listing(&self) -> Result<String> {
        let mut text =
            format!("{} point(s) of {} under {}\n", self.points.len(), self.file.path.display(), self.out.display());
        text += &format!("{:>5}  {:<8}  {}\n", "index", "status", "folder");
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        for point in &self.points {
            let status = self.status(point)?;
            *counts.entry(status.word()).or_default() += 1;
            let detail = match &status {
                Status::Done | Status::New => String::new(),
                other => format!("  [{}]", other.describe()),
            };
            text += &format!("{:>5}  {:<8}  {}{detail}\n", point.index, status.word(), point.name);
        }
        let counts: Vec<String> = counts.iter().map(|(word, n)| format!("{n} {word}")).collect();
        text += &counts.join(", ");
        Ok(text)
    }

    /// The points to run: `index` alone (`None` when it is done; an error
    /// naming the holder when another process runs it), or every point
    /// neither done nor run elsewhere. Reports what it skips.
    pub fn to_run(&self, index: Option<usize>, reporter: &dyn Reporter) -> Result<Option<Vec<usize>>> {
        if let Some(index) = index {
            let point = self.point(index)?;
            return match self.status(point)? {
                Status::Done => {
                    reporter.line(&format!("point {index} ({}) is done: {}", point.label(), self.dir(point).display()));
                    Ok(None)
                }
                Status::Running(holder) => {
                    bail!("point {index} ({}): {} is being run by {holder}", point.label(), self.dir(point).display())
                }
                _ => Ok(Some(vec![index])),
            };
        }
        let mut pending = Vec::new();
        let (mut done, mut elsewhere) = (0, 0);
        for point in &self.points {
            match self.status(point)? {
                Status::Done => done += 1,
                Status::Running(holder) => {
                    elsewhere += 1;
                    reporter.line(&format!(
                        "point {} ({}) is being run by {holder}: left to it",
                        point.index,
                        point.label()
                    ));
                }
                _ => pending.push(point.index),
            }
        }
        reporter.line(&format!(
            "sweep {}: {} point(s) under {}: {done} done, {elsewhere} running elsewhere, {} to run",
            self.file.path.display(),
            self.points.len(),
            self.out.display(),
            pending.len()
        ));
        Ok((!pending.is_empty()).then_some(pending))
    }

    /// Runs `indices` as `plan` says, then says in one line what did not
    /// end done (an [`Interrupted`] error after Ctrl-C).
    pub fn run(&self, indices: &[usize], plan: &Plan, ctrl_c: &AtomicUsize, reporter: &dyn Reporter) -> Result<Tally> {
        let concurrent = plan.jobs.min(indices.len());
        let describe = plan.describe(concurrent, &self.launched_options());
        reporter.line(&format!("running {} point(s): {describe}", indices.len()));
        let tally = runner::run(self, indices, plan, ctrl_c, reporter)?;
        if !tally.interrupted.is_empty() {
            return Err(Interrupted(format!(
                "stopped: {} point(s) interrupted or not started; run the same command again to continue",
                tally.interrupted.len()
            ))
            .into());
        }
        if let Some((index, error)) = tally.failed.first() {
            let log = self.dir(&self.points[*index]).join(crate::run_dir::LOG_FILE);
            bail!(
                "{} of {} point(s) failed; point {index}: {error} (log: {})",
                tally.failed.len(),
                indices.len(),
                log.display()
            );
        }
        if let [(index, holder)] = tally.elsewhere.as_slice() {
            if indices.len() == 1 {
                bail!("point {index}: {} is being run by {holder}", self.dir(&self.points[*index]).display());
            }
        }
        Ok(tally)
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    use super::{grid::SweepFile, Sweep};
    use std::path::Path;

    /// A `finetune` sweep of the `[grid]` lines `grid` under `out`, from
    /// `/w/s.toml` (any folder does as its data; nothing runs).
    pub fn sweep(grid: &str, out: &Path) -> Sweep {
        let text = format!("[base]\ndata = \"/\"\nepochs = 1\nrandom-init = true\n\n[grid]\n{grid}\n");
        let file = SweepFile::parse(&text, Path::new("/w/s.toml")).unwrap();
        let points = file.points(out).unwrap();
        Sweep { file, out: out.to_owned(), points }
    }
}
