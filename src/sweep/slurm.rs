//! Slurm: the array jobs a sweep writes (one task per point not done, at
//! most K at once, one log per task), whose tasks call this same binary on
//! the same sweep file; and the point a task runs, from
//! `SLURM_ARRAY_TASK_ID`. Points of one `nproc` share a script, as an
//! array shares one resource request: `sweep.sbatch` for one-process points
//! (one task each), `sweep-nprocN.sbatch` for points of N ranks (N tasks on
//! one node, started by `srun`, each a rank; see [`super::rank`]). This
//! module writes the scripts; it submits nothing.

use super::Sweep;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The environment variable Slurm gives each array task its index in.
pub const TASK_ID_VAR: &str = "SLURM_ARRAY_TASK_ID";

/// What the array job asks Slurm for (each `None` left to the cluster's
/// defaults), per task: per rank for a point of several ranks.
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

/// The absolute paths a script names: the binary, the sweep file, the
/// sweep's folder and the folder the tasks start in.
#[derive(Debug, Clone, Copy)]
pub struct JobPaths<'a> {
    pub exe: &'a Path,
    pub file: &'a Path,
    pub out: &'a Path,
    pub workdir: &'a Path,
}

/// An array job written by [`write`].
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub path: PathBuf,
    /// The ranks of each of its points.
    pub nproc: usize,
    /// Its array tasks: one per point.
    pub tasks: usize,
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

/// The file name of the array job of points of `nproc` ranks.
pub fn script_name(nproc: usize) -> String {
    match nproc {
        1 => "sweep.sbatch".to_owned(),
        n => format!("sweep-nproc{n}.sbatch"),
    }
}

/// The text of the array job over `indices`, points of `nproc` ranks each,
/// whose tasks run `exe sweep FILE --out OUT` from `workdir` (under `srun`,
/// one task per rank, when `nproc` > 1).
pub fn script(request: &JobRequest, paths: JobPaths, indices: &[usize], nproc: usize) -> Result<String> {
    check_paths(paths)?;
    let mut lines = header(request, paths, indices, nproc);
    lines.extend(task_lines(request, nproc)?.into_iter().map(|option| format!("#SBATCH {option}")));
    let options = [
        ("partition", request.partition.clone()),
        ("time", request.time.clone()),
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
    lines.push(launch_line(request, paths, nproc));
    Ok(lines.join("\n") + "\n")
}

/// Refuses paths that `#SBATCH` lines or the quoted command cannot hold.
fn check_paths(paths: JobPaths) -> Result<()> {
    for path in [paths.exe, paths.file, paths.out, paths.workdir] {
        let text =
            path.to_str().with_context(|| format!("{}: not UTF-8, cannot go in a job script", path.display()))?;
        if text.chars().any(|c| c.is_whitespace() || c == '%' || c == '\'') {
            bail!("{text}: a path with spaces, quotes or % cannot go in #SBATCH lines; use a plainer folder");
        }
    }
    Ok(())
}

/// The shebang, what the script is, and the array's own `#SBATCH` lines.
fn header(request: &JobRequest, paths: JobPaths, indices: &[usize], nproc: usize) -> Vec<String> {
    let stem = paths.file.file_stem().map_or("sweep".into(), |s| s.to_string_lossy().into_owned());
    let name = if nproc == 1 { format!("sweep-{stem}") } else { format!("sweep-{stem}-nproc{nproc}") };
    let mut lines = vec![
        "#!/bin/bash".to_owned(),
        format!(
            "# Written by finetune sweep --slurm: one array task per point{} of {} not done then.",
            if nproc == 1 { String::new() } else { format!(" with nproc = {nproc}") },
            paths.file.display()
        ),
    ];
    if nproc > 1 {
        lines.push(format!(
            "# srun starts {nproc} tasks of the sweep per point, one rank each: rank 0 runs and records the point, the others join its run."
        ));
    }
    lines.extend([
        format!("# Submit with: sbatch {}", paths.out.join(script_name(nproc)).display()),
        format!("#SBATCH --job-name={name}"),
        format!("#SBATCH --array={}", array_spec(indices, request.at_once)),
        format!("#SBATCH --output={}/slurm/%A_%a.out", paths.out.display()),
        format!("#SBATCH --chdir={}", paths.workdir.display()),
    ]);
    lines
}

/// The tasks of one array task and what each gets: one task for a point
/// of one process; `nproc` tasks on one node, the GPUs and memory of all of
/// them, for a point of `nproc` ranks.
fn task_lines(request: &JobRequest, nproc: usize) -> Result<Vec<String>> {
    let cpus = request.cpus_per_task.map(|c| format!("--cpus-per-task={c}"));
    if nproc == 1 {
        let gpus = request.gpus_per_task.map(|g| format!("--gpus-per-task={g}"));
        let mem = request.mem.as_ref().map(|m| format!("--mem={m}"));
        return Ok(["--ntasks=1".to_owned()].into_iter().chain(gpus).chain(cpus).chain(mem).collect());
    }
    let gpus = request.gpus_per_task.map(|g| format!("--gpus-per-node={}", g as usize * nproc));
    let mem = request.mem.as_deref().map(|m| mem_for_ranks(m, nproc)).transpose()?.map(|m| format!("--mem={m}"));
    let tasks = ["--nodes=1".to_owned(), format!("--ntasks-per-node={nproc}")];
    Ok(tasks.into_iter().chain(gpus).chain(cpus).chain(mem).collect())
}

/// `16G` per task as the memory of `nproc` tasks on one node (`--mem` is
/// per node): `32G` for 2.
fn mem_for_ranks(mem: &str, nproc: usize) -> Result<String> {
    let digits = mem.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &mem[digits.len()..];
    match digits.parse::<u64>() {
        Ok(amount) if unit.len() <= 1 => Ok(format!("{}{unit}", amount * nproc as u64)),
        _ => bail!(
            "--mem {mem}: a point of nproc = {nproc} asks for {nproc} times the memory of one task, so --mem must be a whole number with an optional unit (16G)"
        ),
    }
}

/// The command each task runs: the sweep itself, or under `srun` (each of
/// its tasks a rank) for a point of several ranks.
fn launch_line(request: &JobRequest, paths: JobPaths, nproc: usize) -> String {
    let sweep = format!("'{}' sweep '{}' --out '{}'", paths.exe.display(), paths.file.display(), paths.out.display());
    if nproc == 1 {
        return format!("exec {sweep}");
    }
    // Slurm 22.05 stopped passing the job's --cpus-per-task on to srun; say it again.
    let cpus = request.cpus_per_task.map_or(String::new(), |c| format!(" --cpus-per-task={c}"));
    format!("exec srun --kill-on-bad-exit=1{cpus} {sweep}")
}

/// `indices` grouped by the `nproc` of their points.
pub fn by_nproc(sweep: &Sweep, indices: &[usize]) -> BTreeMap<usize, Vec<usize>> {
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &index in indices {
        groups.entry(sweep.nproc(&sweep.points[index])).or_default().push(index);
    }
    groups
}

/// Writes one array job per `nproc` of the points `indices` into the
/// sweep's folder, and makes the folder the tasks' logs go to.
pub fn write(sweep: &Sweep, request: &JobRequest, indices: &[usize]) -> Result<Vec<Written>> {
    let exe = std::env::current_exe().context("finding the finetune binary")?;
    let file = std::path::absolute(&sweep.file.path)
        .with_context(|| format!("{}: cannot make the path absolute", sweep.file.path.display()))?;
    let workdir = std::env::current_dir().context("reading the current folder")?;
    let paths = JobPaths { exe: &exe, file: &file, out: &sweep.out, workdir: &workdir };
    let groups = by_nproc(sweep, indices);
    let texts = groups
        .iter()
        .map(|(&nproc, indices)| script(request, paths, indices, nproc).map(|text| (nproc, indices.len(), text)))
        .collect::<Result<Vec<_>>>()?;
    let logs = sweep.out.join("slurm");
    std::fs::create_dir_all(&logs).with_context(|| format!("{}: cannot create the folder", logs.display()))?;
    let mut written = Vec::new();
    for (nproc, tasks, text) in texts {
        let path = sweep.out.join(script_name(nproc));
        crate::persist::write_atomically(&path, text.as_bytes())?;
        written.push(Written { path, nproc, tasks });
    }
    Ok(written)
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

    fn paths() -> JobPaths<'static> {
        JobPaths {
            exe: Path::new("/b/finetune"),
            file: Path::new("/w/s.toml"),
            out: Path::new("/w/runs/s"),
            workdir: Path::new("/w"),
        }
    }

    fn assert_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(text.lines().any(|l| l == *line), "missing {line:?} in\n{text}");
        }
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
        let text = script(&request, paths(), &[1, 2, 3], 1).unwrap();
        assert_lines(
            &text,
            &[
                "#SBATCH --array=1-3%2",
                "#SBATCH --ntasks=1",
                "#SBATCH --partition=gpu",
                "#SBATCH --gpus-per-task=1",
                "#SBATCH --time=0:30:00",
                "#SBATCH --qos=short",
                "#SBATCH --output=/w/runs/s/slurm/%A_%a.out",
                "#SBATCH --chdir=/w",
                "# Submit with: sbatch /w/runs/s/sweep.sbatch",
                "exec '/b/finetune' sweep '/w/s.toml' --out '/w/runs/s'",
            ],
        );
        assert!(!text.contains("--mem") && !text.contains("srun"), "{text}");
        let spaced = JobPaths { out: Path::new("/w/my runs"), ..paths() };
        let error = script(&request, spaced, &[0], 1).unwrap_err().to_string();
        assert!(error.contains("a path with spaces"), "{error}");
    }

    #[test]
    fn a_point_of_n_ranks_is_n_srun_tasks_on_one_node_with_the_gpus_and_memory_of_all() {
        let request = JobRequest {
            gpus_per_task: Some(1),
            cpus_per_task: Some(4),
            mem: Some("16G".into()),
            at_once: 1,
            ..Default::default()
        };
        let text = script(&request, paths(), &[4, 5], 2).unwrap();
        assert_lines(
            &text,
            &[
                "#SBATCH --job-name=sweep-s-nproc2",
                "#SBATCH --array=4-5%1",
                "#SBATCH --nodes=1",
                "#SBATCH --ntasks-per-node=2",
                "#SBATCH --gpus-per-node=2",
                "#SBATCH --cpus-per-task=4",
                "#SBATCH --mem=32G",
                "# Submit with: sbatch /w/runs/s/sweep-nproc2.sbatch",
                "exec srun --kill-on-bad-exit=1 --cpus-per-task=4 '/b/finetune' sweep '/w/s.toml' --out '/w/runs/s'",
            ],
        );
        assert!(!text.contains("--ntasks=1") && !text.contains("--gpus-per-task"), "{text}");
        let cpu = script(&JobRequest { at_once: 1, ..Default::default() }, paths(), &[4], 4).unwrap();
        assert_lines(
            &cpu,
            &[
                "#SBATCH --ntasks-per-node=4",
                "exec srun --kill-on-bad-exit=1 '/b/finetune' sweep '/w/s.toml' --out '/w/runs/s'",
            ],
        );
        assert!(!cpu.contains("--gpus") && !cpu.contains("--mem"), "{cpu}");
    }

    #[test]
    fn the_memory_of_a_task_is_multiplied_by_the_ranks() {
        assert_eq!(mem_for_ranks("16G", 2).unwrap(), "32G");
        assert_eq!(mem_for_ranks("4000", 3).unwrap(), "12000");
        let error = mem_for_ranks("1.5G", 2).unwrap_err().to_string();
        assert!(error.starts_with("--mem 1.5G: a point of nproc = 2 asks for 2 times"), "{error}");
    }

    #[test]
    fn a_sweep_of_mixed_nproc_gets_one_array_job_per_nproc() {
        let dir = tempfile::tempdir().unwrap();
        let sweep = super::super::fixture::sweep("nproc = [1, 2]\nseed = [0, 1, 2]", dir.path());
        let nprocs: Vec<usize> = sweep.points.iter().map(|p| sweep.nproc(p)).collect();
        assert_eq!(nprocs, [1, 2, 1, 2, 1, 2], "seed before nproc, as --help lists them");
        let request = JobRequest { at_once: 2, ..Default::default() };
        let written = write(&sweep, &request, &[0, 2, 3, 5]).unwrap();
        let expected = [
            Written { path: dir.path().join("sweep.sbatch"), nproc: 1, tasks: 2 },
            Written { path: dir.path().join("sweep-nproc2.sbatch"), nproc: 2, tasks: 2 },
        ];
        assert_eq!(written, expected);
        let one = std::fs::read_to_string(&written[0].path).unwrap();
        assert_lines(&one, &["#SBATCH --array=0,2%2", "#SBATCH --ntasks=1"]);
        assert!(!one.contains("srun"), "{one}");
        let two = std::fs::read_to_string(&written[1].path).unwrap();
        assert_lines(&two, &["#SBATCH --array=3,5%2", "#SBATCH --ntasks-per-node=2"]);
        assert!(two.lines().last().unwrap().starts_with("exec srun --kill-on-bad-exit=1 "), "{two}");
        assert!(dir.path().join("slurm").is_dir());
    }
}
