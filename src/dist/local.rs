//! `--nproc N`: N ranks on this machine started by the tool itself, for
//! users without torchrun. Each child is the same program with
//! `RANK`/`WORLD_SIZE`/`LOCAL_RANK`/`MASTER_ADDR`/`MASTER_PORT` set (a free
//! port on 127.0.0.1) and its share of the CPU cores (`OMP_NUM_THREADS`).

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often the children are looked at.
const POLL: Duration = Duration::from_millis(50);

/// Runs `program args` as `n` local ranks and waits for all of them.
///
/// The children run in their own process group, so the terminal's Ctrl-C
/// reaches only this process; each press counted in `ctrl_c` (see
/// `crate::cli::count_ctrl_c`) is passed on to the children still running,
/// which stop at their next safe point (a second press stops them at once).
/// They die with this process. When one child fails, the others get
/// `kill_after` to end by themselves (they should: their next collective
/// fails within the group's timeout), then are killed.
///
/// Returns success when every rank succeeded, or the interrupted status
/// (`crate::cli::EXIT_INTERRUPTED`) when Ctrl-C was pressed and every rank
/// stopped or finished; otherwise an error naming the first rank that failed.
pub fn spawn_local_ranks(
    n: usize,
    program: &Path,
    args: &[OsString],
    threads_per_rank: usize,
    kill_after: Duration,
    ctrl_c: &AtomicUsize,
) -> Result<ExitStatus> {
    if n == 0 {
        bail!("--nproc 0: at least one rank is needed");
    }
    let port = free_port()?;
    let mut ranks = Vec::with_capacity(n);
    for rank in 0..n {
        match spawn_rank(program, args, rank, n, port, threads_per_rank) {
            Ok(child) => ranks.push(child),
            Err(error) => {
                kill_all(&mut ranks);
                return Err(error.context(format!("cannot start rank {rank} of {n} ({})", program.display())));
            }
        }
    }
    Watch::new(ranks).run(kill_after, ctrl_c)
}

/// A port free on 127.0.0.1 now (rank 0 binds it moments later).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port on 127.0.0.1")?;
    Ok(listener.local_addr().context("cannot find a free port on 127.0.0.1")?.port())
}

/// Makes `command`'s process die with this one (Linux's parent-death
/// signal), so that no child outlives its parent.
pub fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("the parent exited"));
            }
            Ok(())
        });
    }
}

fn spawn_rank(program: &Path, args: &[OsString], rank: usize, n: usize, port: u16, threads: usize) -> Result<Child> {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).process_group(0);
    for name in ["TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT", "SLURM_PROCID", "SLURM_NTASKS"] {
        command.env_remove(name);
    }
    command
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", n.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("LOCAL_WORLD_SIZE", n.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("OMP_NUM_THREADS", threads.max(1).to_string());
    die_with_parent(&mut command);
    take_ctrl_c_by_default(&mut command);
    command.spawn().map_err(anyhow::Error::from)
}

/// Gives `command`'s process SIGINT's default action: a launcher started in
/// the background by a non-interactive shell ignores SIGINT, and a rank
/// would inherit that, so a Ctrl-C passed on before it sets its handler
/// (or to one without a handler) would be lost.
fn take_ctrl_c_by_default(command: &mut Command) {
    // SAFETY: signal() is async-signal-safe; nothing is allocated.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
}

/// The running ranks and how each ended.
struct Watch {
    children: Vec<Child>,
    statuses: Vec<Option<ExitStatus>>,
    /// The first rank that failed, and when.
    first_failure: Option<(usize, Instant)>,
    presses_passed_on: usize,
}

impl Watch {
    fn new(children: Vec<Child>) -> Self {
        let statuses = vec![None; children.len()];
        Self { children, statuses, first_failure: None, presses_passed_on: 0 }
    }

    fn run(mut self, kill_after: Duration, ctrl_c: &AtomicUsize) -> Result<ExitStatus> {
        while self.statuses.iter().any(Option::is_none) {
            self.pass_on_ctrl_c(ctrl_c);
            self.reap()?;
            if self.first_failure.is_some_and(|(_, at)| at.elapsed() >= kill_after) {
                kill_all(&mut self.children);
                self.reap_all()?;
                break;
            }
            std::thread::sleep(POLL);
        }
        self.outcome(ctrl_c.load(Ordering::SeqCst) > 0, kill_after)
    }

    fn pass_on_ctrl_c(&mut self, ctrl_c: &AtomicUsize) {
        let presses = ctrl_c.load(Ordering::SeqCst);
        if presses > self.presses_passed_on {
            for (child, status) in self.children.iter().zip(&self.statuses) {
                if status.is_none() {
                    signal(child, libc::SIGINT);
                }
            }
            self.presses_passed_on = presses;
        }
    }

    /// Records the ranks that have ended.
    fn reap(&mut self) -> Result<()> {
        for rank in 0..self.children.len() {
            if self.statuses[rank].is_some() {
                continue;
            }
            let status = self.children[rank].try_wait().with_context(|| format!("cannot wait for rank {rank}"))?;
            if let Some(status) = status {
                self.record(rank, status);
            }
        }
        Ok(())
    }

    fn reap_all(&mut self) -> Result<()> {
        for rank in 0..self.children.len() {
            if self.statuses[rank].is_none() {
                let status = self.children[rank].wait().with_context(|| format!("cannot wait for rank {rank}"))?;
                self.record(rank, status);
            }
        }
        Ok(())
    }

    fn record(&mut self, rank: usize, status: ExitStatus) {
        if !status.success() && self.first_failure.is_none() {
            self.first_failure = Some((rank, Instant::now()));
        }
        self.statuses[rank] = Some(status);
    }

    fn outcome(&self, interrupted: bool, kill_after: Duration) -> Result<ExitStatus> {
        let statuses: Vec<ExitStatus> = self.statuses.iter().map(|s| s.expect("every rank reaped")).collect();
        let Some((failed, _)) = self.first_failure else { return Ok(statuses[0]) };
        let stopped = |s: &ExitStatus| s.success() || s.code() == Some(crate::cli::EXIT_INTERRUPTED);
        if interrupted && statuses.iter().all(stopped) {
            return Ok(statuses[failed]);
        }
        let n = statuses.len();
        let killed: Vec<String> = (0..n)
            .filter(|&rank| rank != failed && statuses[rank].signal() == Some(libc::SIGKILL))
            .map(|rank| rank.to_string())
            .collect();
        let mut message = format!("rank {failed} of {n} failed ({})", describe(statuses[failed]));
        if !killed.is_empty() {
            let seconds = kill_after.as_secs_f64();
            message += &format!("; rank {} still running {seconds:.0} s later, killed", killed.join(", "));
        }
        bail!(message)
    }
}

/// `exit status 3` / `killed by signal 9`.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: signals our own child, which has not been reaped yet
        // (callers pass only children whose status is unknown).
        unsafe { libc::kill(pid, signal) };
    }
}

/// Kills (and reaps) every child still running.
fn kill_all(children: &mut [Child]) {
    for child in children.iter_mut() {
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
