//! Slurm: the `sweep.sbatch` array job a sweep writes (one task per point
//! not done, at most K at once, one log per task), whose tasks call this
//! same binary on the same sweep file; and the point a task runs, from
//! `SLURM_ARRAY_TASK_ID`. This module writes the script; it submits nothing.

use super::Sweep;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The environment variable Slurm gives each array task its index in.
pub const TASK_ID_VAR: &str = "SLURM_ARRAY_TASK_ID";

/// What the array job asks Slurm for (each `None` left to the cluster's
/// defaults).
#[derive(Debug, Clone, Default)]
pub struct JobRequest {
    pub partition: Option<String>,
    pub gpus_per_task: Option<u32>,
    pub cpus_per_task: Option<u32>,
    /// Per task, as sbatch takes it (`1:00:00`).
    pub time: Option<String>,
    /// Per task, as sbatch takes it (`16G`).
    pub mem: Option<String>,
    pub account: Option<String>,
    /// Further `#SBATCH` options, as written (`--qos=short`).
    pub extra: Vec<String>,
    /// Tasks at once (the array's `%K`).
    pub at_once: usize,
}

/// The point of this Slurm array task, from the value of
/// `SLURM_ARRAY_TASK_ID` (`None` outside an array job).
pub fn task_index(value: Option<&str>) -> Result<Option<usize>> {
    match value {
        None => Ok(None),
        Some(v) => match v.trim().parse() {
            Ok(index) => Ok(Some(index)),
            Err(_) => bail!("{TASK_ID_VAR}={v:?}: not a point index"),
        },
    }
}

/// `0-3,5,7-9%2`: the indices as Slurm's `--array` ranges, `at_once` at a time.
pub fn array_spec(indices: &[usize], at_once: usize) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &i in indices {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == i => *end = i,
            _ => ranges.push((i, i)),
        }
    }
    let ranges: Vec<String> =
        ranges.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    format!("{}%{}", ranges.join(","), at_once.max(1))
}

/// The text of `sweep.sbatch`: an array over `indices` whose tasks run
/// `exe sweep FILE --out OUT` from `workdir` (every path absolute).
pub fn script(
    request: &JobRequest,
    exe: &Path,
    file: &Path,
    out: &Path,
    workdir: &Path,
    indices: &[usize],
) -> Result<String> {
    for path in [exe, file, out, workdir] {
        let text =
            path.to_str().with_context(|| format!("{}: not UTF-8, cannot go in a job script", path.display()))?;
        if text.chars().any(|c| c.is_whitespace() || c == '%' || c == '\'') {
            bail!("{text}: a path with spaces, quotes or % cannot go in #SBATCH lines; use a plainer folder");
        }
    }
    let name = file.file_stem().map_or("sweep".into(), |s| s.to_string_lossy().into_owned());
    let mut lines = vec![
        "#!/bin/bash".to_owned(),
        format!("# Written by finetune sweep --slurm: one array task per point of {} not done then.", file.display()),
        format!("# Submit with: sbatch {}", out.join("sweep.sbatch").display()),
        format!("#SBATCH --job-name=sweep-{name}"),
        format!("#SBATCH --array={}", array_spec(indices, request.at_once)),
        format!("#SBATCH --output={}/slurm/%A_%a.out", out.display()),
        format!("#SBATCH --chdir={}", workdir.display()),
        "#SBATCH --ntasks=1".to_owned(),
    ];
    let options = [
        ("partition", request.partition.clone()),
        ("gpus-per-task", request.gpus_per_task.map(|g| g.to_string())),
        ("cpus-per-task", request.cpus_per_task.map(|c| c.to_string())),
        ("time", request.time.clone()),
        ("mem", request.mem.clone()),
        ("account", request.account.clone()),
    ];
    for (option, value) in options {
        if let Some(value) = value {
            lines.push(format!("#SBATCH --{option}={value}"));
        }
    }
    lines.extend(request.extra.iter().map(|option| format!("#SBATCH {option}")));
    lines.push("set -euo pipefail".into());
    lines.push(format!("# The task's point comes from {TASK_ID_VAR}."));
    lines.push(format!("exec '{}' sweep '{}' --out '{}'", exe.display(), file.display(), out.display()));
    Ok(lines.join("\n") + "\n")
}

/// Writes `sweep.sbatch` for `indices` into the sweep's folder, and makes
/// the folder the tasks' logs go to; returns the script's path.
pub fn write(sweep: &Sweep, request: &JobRequest, indices: &[usize]) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the finetune binary")?;
    let file = std::path::absolute(&sweep.file.path)
        .with_context(|| format!("{}: cannot make the path absolute", sweep.file.path.display()))?;
    let workdir = std::env::current_dir().context("reading the current folder")?;
    let text = script(request, &exe, &file, &sweep.out, &workdir, indices)?;
    let logs = sweep.out.join("slurm");
    std::fs::create_dir_all(&logs).with_context(|| format!("{}: cannot create the folder", logs.display()))?;
    let path = sweep.out.join("sweep.sbatch");
    crate::persist::write_atomically(&path, text.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_ranges_compress_runs_of_indices() {
        assert_eq!(array_spec(&[0, 1, 2, 3], 2), "0-3%2");
        assert_eq!(array_spec(&[0, 2, 3, 4, 7, 9, 10], 4), "0,2-4,7,9-10%4");
        assert_eq!(array_spec(&[5], 0), "5%1");
    }

    #[test]
    fn the_task_index_comes_from_the_array_variable() {
        assert_eq!(task_index(None).unwrap(), None);
        assert_eq!(task_index(Some("7")).unwrap(), Some(7));
        let error = task_index(Some("x")).unwrap_err().to_string();
        assert_eq!(error, "SLURM_ARRAY_TASK_ID=\"x\": not a point index");
    }

    #[test]
    fn the_script_asks_for_what_was_requested_and_calls_the_binary_with_the_sweep() {
        let request = JobRequest {
            partition: Some("gpu".into()),
            gpus_per_task: Some(1),
            time: Some("0:30:00".into()),
            extra: vec!["--qos=short".into()],
            at_once: 2,
            ..Default::default()
        };
        let (exe, file, out, dir) =
            (Path::new("/b/finetune"), Path::new("/w/s.toml"), Path::new("/w/runs/s"), Path::new("/w"));
        let text = script(&request, exe, file, out, dir, &[1, 2, 3]).unwrap();
        for line in [
            "#SBATCH --array=1-3%2",
            "#SBATCH --partition=gpu",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --time=0:30:00",
            "#SBATCH --qos=short",
            "#SBATCH --output=/w/runs/s/slurm/%A_%a.out",
            "#SBATCH --chdir=/w",
            "exec '/b/finetune' sweep '/w/s.toml' --out '/w/runs/s'",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("--mem"), "{text}");
        let spaced = script(&request, exe, file, Path::new("/w/my runs"), dir, &[0]).unwrap_err().to_string();
        assert!(spaced.contains("a path with spaces"), "{spaced}");
    }
}
