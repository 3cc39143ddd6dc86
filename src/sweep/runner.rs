//! Runs points of a sweep, each as its own process of the sweep's tool
//! (`finetune`, `mnist` or `caption`, the binary beside this one) with its
//! own `--out`, several at once: [`Plan`] decides how many,
//! on which devices, and how the CPU cores are split between them; [`run`]
//! claims each point's folder, starts its process (`--resume` for a partial
//! point) with its output in the folder's `log.txt`, keeps one progress line,
//! records how each attempt ended in `exit.json`, and passes every Ctrl-C on
//! to the children, which stop at their next safe point. Children die with
//! the sweep (a killed sweep leaves partial points, resumed next time).

use super::grid::Point;
use super::lock::{self, Claim, Claimed, Holder};
use super::status::{ExitRecord, Outcome, Status};
use super::tool::Tool;
use super::Sweep;
use crate::metrics::format_minutes;
use crate::report::Reporter;
use crate::run_dir::LOG_FILE;
use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::io::{Read, Seek, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How a sweep's runs share the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Devices as `--device` takes them (`cpu`, `cuda:1`).
    pub devices: Vec<String>,
    /// Runs at once on one device.
    pub per_device: usize,
    /// Runs at once in all.
    pub jobs: usize,
    /// CPU cores to split between the concurrent runs.
    pub cores: usize,
}

impl Plan {
    /// `devices`: a comma-separated `--devices` list [default: every GPU
    /// libtorch sees, else the CPU]; `jobs` [default: one per device slot];
    /// `per_device` [default: the jobs spread evenly].
    pub fn new(devices: Option<&str>, jobs: Option<usize>, per_device: Option<usize>) -> Result<Self> {
        let devices = match devices {
            Some(list) => list
                .split(',')
                .map(|d| {
                    crate::device::select(d).map(crate::device::name).map_err(|e| anyhow::anyhow!("--devices: {e}"))
                })
                .collect::<Result<Vec<_>>>()?,
            None => visible_devices(),
        };
        if jobs == Some(0) || per_device == Some(0) {
            bail!("--jobs and --jobs-per-device must be at least 1");
        }
        let per_device = per_device.unwrap_or_else(|| jobs.map_or(1, |j| j.div_ceil(devices.len())));
        let capacity = per_device * devices.len();
        let jobs = jobs.unwrap_or(capacity);
        if jobs > capacity {
            bail!(
                "--jobs {jobs}: {} device(s) with --jobs-per-device {per_device} run {capacity} at once; raise --jobs-per-device",
                devices.len()
            );
        }
        Ok(Self { devices, per_device, jobs, cores: cores() })
    }

    /// The plan of rank `local_rank` of a point's group on this node: one
    /// run, on the device of that index (round-robin), with every core.
    pub fn for_local_rank(&self, local_rank: usize) -> Self {
        let device = self.devices[local_rank % self.devices.len()].clone();
        Self { devices: vec![device], per_device: 1, jobs: 1, cores: self.cores }
    }

    /// Threads (and loader workers) each concurrent run gets.
    pub fn threads_per_run(&self, concurrent: usize) -> usize {
        (self.cores / concurrent.max(1)).max(1)
    }

    /// What each of `concurrent` runs gets: `launched` lists the options
    /// the launcher sets (`threads`, `workers`), the others are the sweep
    /// file's.
    pub fn describe(&self, concurrent: usize, launched: &[&str]) -> String {
        let threads = self.threads_per_run(concurrent);
        let given: Vec<String> = launched
            .iter()
            .map(|&option| match option {
                "workers" => format!("{threads} loader worker(s)"),
                "threads" => format!("{threads} thread(s)"),
                other => format!("{threads} {other}"),
            })
            .collect();
        let each = match given.as_slice() {
            [] => "threads as the sweep file sets them".to_owned(),
            _ => format!("{} each of {} core(s)", given.join(" and "), self.cores),
        };
        format!("{concurrent} at once on {} ({} per device), {each}", self.devices.join(", "), self.per_device)
    }
}

/// Every GPU libtorch sees, else the CPU.
fn visible_devices() -> Vec<String> {
    match crate::device::cuda_count() {
        0 => vec!["cpu".into()],
        n => (0..n).map(|i| format!("cuda:{i}")).collect(),
    }
}

/// The cores this process may use: Slurm's `--cpus-per-task` when set,
/// else every CPU.
fn cores() -> usize {
    let slurm = std::env::var("SLURM_CPUS_PER_TASK").ok().and_then(|n| n.parse().ok()).filter(|&n: &usize| n > 0);
    slurm.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// What became of the points a [`run`] was given.
#[derive(Debug, Default)]
pub struct Tally {
    pub done: Vec<usize>,
    /// Index and error line.
    pub failed: Vec<(usize, String)>,
    /// Stopped by Ctrl-C (or not started because of it).
    pub interrupted: Vec<usize>,
    /// Held by another process.
    pub elsewhere: Vec<(usize, Holder)>,
}

/// A point's process while it runs.
struct Running {
    index: usize,
    device: String,
    child: Child,
    record: ExitRecord,
    started: Instant,
    _claim: Claim,
}

/// Runs the points `indices` of `sweep` (those not done), `plan.jobs` at a
/// time. `ctrl_c` counts Ctrl-C presses: each is passed on to the children,
/// and after the first no new point starts.
pub fn run(
    sweep: &Sweep,
    indices: &[usize],
    plan: &Plan,
    ctrl_c: &AtomicUsize,
    reporter: &dyn Reporter,
) -> Result<Tally> {
    let concurrent = plan.jobs.min(indices.len()).max(1);
    let threads = plan.threads_per_run(concurrent);
    let mut queue: VecDeque<usize> = indices.iter().copied().collect();
    let mut running: Vec<Running> = Vec::new();
    let mut tally = Tally::default();
    let started = Instant::now();
    let bar = reporter.bar(indices.len() as u64, "sweep");
    let mut passed_on = 0;
    loop {
        let presses = ctrl_c.load(Ordering::SeqCst);
        if presses > passed_on {
            running.iter().for_each(|r| interrupt(&r.child));
            passed_on = presses;
        }
        if presses > 0 {
            tally.interrupted.extend(queue.drain(..));
        }
        while running.len() < concurrent {
            let Some(index) = queue.pop_front() else { break };
            let device = least_busy(plan, &running);
            match launch(sweep, &sweep.points[index], &device, threads)? {
                Launch::Started(run) => running.push(*run),
                Launch::Skipped(status) => {
                    bar.inc(1);
                    match status {
                        Status::Running(holder) => tally.elsewhere.push((index, holder)),
                        _ => tally.done.push(index),
                    }
                }
            }
        }
        if running.is_empty() && queue.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut i = 0;
        while i < running.len() {
            let Some(exit) = running[i].child.try_wait().context("waiting for a run")? else {
                i += 1;
                continue;
            };
            let mut run = running.swap_remove(i);
            let line = finish(sweep, &mut run, exit, &mut tally)?;
            bar.inc(1);
            let counts = progress_line(&tally, running.len(), queue.len(), started);
            bar.suspend(|| reporter.line(&format!("{counts} {line}")));
        }
        bar.set_message(format!("sweep: {} running", running.len()));
    }
    bar.finish_and_clear();
    Ok(tally)
}

/// `[done 3 · running 2 · left 5 · 1m 20s elapsed · about 2m 10s to go]`
fn progress_line(tally: &Tally, running: usize, left: usize, started: Instant) -> String {
    let finished = tally.done.len() + tally.failed.len() + tally.interrupted.len() + tally.elsewhere.len();
    let elapsed = started.elapsed().as_secs_f64();
    let to_go = running + left;
    let estimate = if finished > 0 && to_go > 0 {
        format!(" · about {} to go", format_minutes(elapsed * to_go as f64 / finished as f64))
    } else {
        String::new()
    };
    let failed = if tally.failed.is_empty() { String::new() } else { format!(" · failed {}", tally.failed.len()) };
    let stopped =
        if tally.interrupted.is_empty() { String::new() } else { format!(" · stopped {}", tally.interrupted.len()) };
    format!(
        "[done {}{failed}{stopped} · running {running} · left {left} · {} elapsed{estimate}]",
        tally.done.len(),
        format_minutes(elapsed)
    )
}

/// The device with the fewest runs of this sweep on it.
fn least_busy(plan: &Plan, running: &[Running]) -> String {
    let busy = |d: &String| running.iter().filter(|r| &r.device == d).count();
    plan.devices
        .iter()
        .filter(|d| busy(d) < plan.per_device)
        .min_by_key(|d| busy(d))
        .unwrap_or(&plan.devices[0])
        .clone()
}

enum Launch {
    Started(Box<Running>),
    /// Done, or held by another process, when it came to its turn.
    Skipped(Status),
}

/// Claims a point's folder and starts its process, unless it is done or
/// another process holds it.
fn launch(sweep: &Sweep, point: &Point, device: &str, threads: usize) -> Result<Launch> {
    let dir = sweep.dir(point);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create the run folder", dir.display()))?;
    let claim = match lock::claim(&dir)? {
        Claimed::Mine(claim) => claim,
        Claimed::Theirs(holder) => return Ok(Launch::Skipped(Status::Running(holder))),
    };
    let Some(resume) = resumes(&sweep.status(point)?, &dir) else { return Ok(Launch::Skipped(Status::Done)) };
    let tool = sweep.file.tool;
    let mut command = point_command(sweep, point, device, threads, resume)?;
    let previous = ExitRecord::read(&dir)?;
    let record = ExitRecord {
        outcome: Outcome::Started,
        exit_code: None,
        error: None,
        seconds: previous.as_ref().map_or(0.0, |r| r.seconds),
        attempts: previous.as_ref().map_or(0, |r| r.attempts) + 1,
        host: lock::host_name(),
        device: device.to_owned(),
        index: point.index,
        point: point.values.iter().map(|(k, v)| (k.clone(), super::grid::plain(v))).collect(),
        tool: Some(tool.name().to_owned()),
    };
    record.write(&dir)?;
    let log = open_log(&dir, point, &record, tool, &command)?;
    let child = spawn(&mut command, Some(log))
        .with_context(|| format!("point {}: cannot start {}", point.index, tool.name()))?;
    let started = Instant::now();
    Ok(Launch::Started(Box::new(Running {
        index: point.index,
        device: device.to_owned(),
        child,
        record,
        started,
        _claim: claim,
    })))
}

/// Whether a point that stands at `status` resumes (`None`: it is done).
/// A failed attempt resumes from what it saved, if anything. The ranks of
/// a point decide alike: what it depends on changes only when they all run.
fn resumes(status: &Status, dir: &Path) -> Option<bool> {
    match status {
        Status::Done => None,
        Status::Partial { .. } => Some(true),
        _ => Some(crate::run_dir::state_path(dir).is_file()),
    }
}

/// The tool's command for `point`: a fresh run into its folder, or the
/// resumed run with the options it does not save given again.
fn point_command(sweep: &Sweep, point: &Point, device: &str, threads: usize, resume: bool) -> Result<Command> {
    let dir = sweep.dir(point);
    let tool = sweep.file.tool;
    let mut command = tool.command()?;
    if resume {
        command.arg("--resume").arg(&dir);
        if tool.extends_runs() {
            command.arg("--epochs").arg(point.epochs.to_string());
        }
        // What the run's saved options leave out is given again.
        let given = sweep.file.base.iter().chain(point.values.iter().map(|(k, v)| (k, v)));
        given.filter(|(key, _)| tool.not_saved_with_runs().contains(&key.replace('_', "-").as_str())).for_each(
            |(key, value)| {
                command.args(super::tool::flag(key, value));
            },
        );
    } else {
        command.args(&point.flags).arg("--out").arg(&dir);
    }
    command.args(["--device", device]);
    if let Some(cache) = sweep.feature_cache(point) {
        command.arg("--feature-cache").arg(cache);
    }
    for option in sweep.launched_options() {
        command.arg(format!("--{option}")).arg(threads.to_string());
    }
    Ok(command)
}

/// The command a rank other than 0 of a point's group runs: rank 0's,
/// decided from the folder as rank 0 decides, whoever holds it; `None`
/// when the point is done.
pub(super) fn peer_command(sweep: &Sweep, point: &Point, device: &str, threads: usize) -> Result<Option<Command>> {
    match resumes(&sweep.status_unclaimed(point)?, &sweep.dir(point)) {
        Some(resume) => point_command(sweep, point, device, threads, resume).map(Some),
        None => Ok(None),
    }
}

/// Starts `command` as [`run`] starts a point's (dying with this process),
/// its output this process's, and waits for it, passing Ctrl-C on.
pub(super) fn run_attached(command: &mut Command, ctrl_c: &AtomicUsize) -> Result<std::process::ExitStatus> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = spawn(command, None).with_context(|| format!("cannot start {program}"))?;
    wait_passing_ctrl_c(&mut child, ctrl_c)
}

/// Waits for `child`, passing each Ctrl-C counted in `ctrl_c` on to it.
fn wait_passing_ctrl_c(child: &mut Child, ctrl_c: &AtomicUsize) -> Result<std::process::ExitStatus> {
    let mut passed_on = 0;
    loop {
        if let Some(exit) = child.try_wait().context("waiting for a run")? {
            return Ok(exit);
        }
        let presses = ctrl_c.load(Ordering::SeqCst);
        if presses > passed_on {
            interrupt(child);
            passed_on = presses;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `log.txt`, appended to, opened with a header naming the attempt.
fn open_log(dir: &Path, point: &Point, record: &ExitRecord, tool: Tool, command: &Command) -> Result<std::fs::File> {
    let path = dir.join(LOG_FILE);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("{}: cannot open", path.display()))?;
    let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    writeln!(
        log,
        "== finetune sweep: point {} ({}), attempt {} on {}, device {}\n$ {} {}",
        point.index,
        point.label(),
        record.attempts,
        record.host,
        record.device,
        tool.program_name(),
        args.join(" ")
    )
    .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(log)
}

/// Starts a child in its own process group (so the terminal's Ctrl-C reaches
/// only the sweep, which passes it on once) that dies with the sweep; its
/// output goes to `log`, or where the sweep's goes.
fn spawn(command: &mut Command, log: Option<std::fs::File>) -> std::io::Result<Child> {
    let parent = std::process::id();
    command.stdin(Stdio::null()).process_group(0);
    if let Some(log) = log {
        command.stdout(log.try_clone()?).stderr(log);
    }
    // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("the sweep exited"));
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Asks a child to stop at its next safe point (as Ctrl-C does).
fn interrupt(child: &Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: signals our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
}

/// Records how a point's process ended; returns the line that says so.
fn finish(sweep: &Sweep, run: &mut Running, exit: std::process::ExitStatus, tally: &mut Tally) -> Result<String> {
    let point = &sweep.points[run.index];
    let dir = sweep.dir(point);
    let seconds = run.started.elapsed().as_secs_f64();
    let record = &mut run.record;
    record.seconds += seconds;
    record.exit_code = exit.code();
    record.outcome = match exit.code() {
        Some(0) => Outcome::Done,
        Some(crate::cli::EXIT_INTERRUPTED) => Outcome::Interrupted,
        _ => Outcome::Failed,
    };
    let took = format_minutes(seconds);
    let line = match record.outcome {
        Outcome::Done => {
            tally.done.push(run.index);
            let tool = sweep.file.tool;
            let summary = super::status::RunFolder::read(&dir)?.summary.unwrap_or_default();
            let headline = tool.headline(&summary);
            let score = headline.score.unwrap_or(f64::NAN);
            let startup = headline.startup_seconds.map_or(String::new(), |s| format!(" · start-up {s:.1} s"));
            let features = headline.features.map_or(String::new(), |(loaded, computed)| {
                format!(" (features: {loaded} loaded, {computed} computed)")
            });
            format!(
                "point {} ({}) done in {took}: {} {score:.4}{startup}{features}",
                point.index,
                point.label(),
                tool.score_name()
            )
        }
        Outcome::Interrupted => {
            tally.interrupted.push(run.index);
            format!("point {} ({}) stopped at a safe point after {took}", point.index, point.label())
        }
        _ => {
            let error = match exit.signal() {
                Some(signal) => format!("killed by signal {signal}"),
                None => last_error(&dir.join(LOG_FILE)).unwrap_or_else(|| format!("exit status {exit}")),
            };
            record.error = Some(error.clone());
            tally.failed.push((run.index, error.clone()));
            format!(
                "point {} ({}) FAILED after {took}: {error} (log: {})",
                point.index,
                point.label(),
                dir.join(LOG_FILE).display()
            )
        }
    };
    record.write(&dir)?;
    Ok(line)
}

/// The last `error:` line of a log (only its end is read).
fn last_error(log: &Path) -> Option<String> {
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(std::io::SeekFrom::Start(len.saturating_sub(64 << 10))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let tail = String::from_utf8_lossy(&tail);
    tail.lines().rev().find(|l| l.starts_with("error: ")).map(|l| l.trim_start_matches("error: ").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_spreads_jobs_over_devices_and_splits_the_cores() {
        let plan = Plan::new(Some("cpu"), Some(2), None).unwrap();
        assert_eq!((plan.devices.clone(), plan.per_device, plan.jobs), (vec!["cpu".to_owned()], 2, 2));
        assert_eq!(Plan { cores: 8, ..plan.clone() }.threads_per_run(2), 4);
        assert_eq!(Plan { cores: 1, ..plan }.threads_per_run(2), 1);
        let one = Plan::new(Some("cpu"), None, None).unwrap();
        assert_eq!((one.per_device, one.jobs), (1, 1));
        let refused = Plan::new(Some("cpu"), Some(3), Some(1)).unwrap_err().to_string();
        assert!(refused.contains("--jobs 3: 1 device(s) with --jobs-per-device 1 run 1 at once"), "{refused}");
        let two = Plan { cores: 4, ..Plan::new(Some("cpu"), Some(2), None).unwrap() };
        assert_eq!(
            two.describe(2, &["threads", "workers"]),
            "2 at once on cpu (2 per device), 2 thread(s) and 2 loader worker(s) each of 4 core(s)"
        );
        assert_eq!(two.describe(2, &["threads"]), "2 at once on cpu (2 per device), 2 thread(s) each of 4 core(s)");
        assert_eq!(two.describe(2, &[]), "2 at once on cpu (2 per device), threads as the sweep file sets them");
        let bad = Plan::new(Some("cpu,tpu"), None, None).unwrap_err().to_string();
        assert!(bad.starts_with("--devices: --device tpu"), "{bad}");
    }
}
