//! The options of a data-parallel run (`--nproc`, `--dist-backend`,
//! `--dist-timeout`) and what a binary does with them: start its own local
//! ranks, or join the process group its launcher (torchrun, `srun`, or
//! `--nproc`) describes, or run alone when none does.

use super::{parse, EXIT_INTERRUPTED, HOW_IT_RUNS};
use crate::dist::{spawn_local_ranks, Backend, GroupOptions, Launch, ProcessGroup, DEFAULT_BUCKET_BYTES};
use crate::interrupt::Interrupted;
use crate::train::data_parallel::Ranks;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::time::Duration;
use tch::Device;

/// `--dist-backend`: which c10d backend carries the collectives.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// NCCL for CUDA devices, Gloo for the CPU.
    #[default]
    Auto,
    Gloo,
    Nccl,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DataParallelArgs {
    /// Start N data-parallel ranks on this machine (the CPU cores split between them), as `torchrun --nproc-per-node N` would; `--batch-size` is per rank [default: one process, or the ranks torchrun or srun started].
    #[arg(help_heading = HOW_IT_RUNS, long, value_name = "N", value_parser = parse::at_least_one, allow_negative_numbers = true)]
    pub nproc: Option<usize>,
    /// The c10d backend between the ranks: auto (NCCL for CUDA devices, Gloo for the CPU), gloo or nccl.
    #[arg(help_heading = HOW_IT_RUNS, long, value_name = "NAME", value_enum, default_value_t = BackendChoice::Auto)]
    pub dist_backend: BackendChoice,
    /// Seconds a rank waits for the others (joining, and each collective) before it stops with an error naming them.
    #[arg(help_heading = HOW_IT_RUNS, long, value_name = "S", value_parser = parse::at_least_one, allow_negative_numbers = true, default_value_t = 1800)]
    pub dist_timeout: usize,
}

impl DataParallelArgs {
    /// The ranks `--nproc` asks this process to start: `None` in a process
    /// that a launcher started (it is a rank itself).
    pub fn ranks_to_start(&self) -> Option<usize> {
        self.nproc.filter(|_| std::env::var_os("RANK").is_none() && std::env::var_os("SLURM_PROCID").is_none())
    }

    /// Runs this program again as `n` local ranks (its arguments without
    /// `--nproc`), the cores split between them, and waits for them: Ok
    /// when all succeeded, [`Interrupted`] after Ctrl-C.
    pub fn start_local_ranks(&self, n: usize, device: Device) -> Result<()> {
        if device.is_cuda() {
            bail!("--nproc on CUDA needs the nccl backend, which this build does not have yet; run on the CPU (--device cpu)");
        }
        let program = std::env::current_exe().context("cannot find this program to start its ranks")?;
        let args = without_nproc(std::env::args_os().skip(1));
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let ctrl_c = super::count_ctrl_c();
        let kill_after = Duration::from_secs(self.dist_timeout as u64 + 10);
        let status = spawn_local_ranks(n, &program, &args, (cores / n).max(1), kill_after, &ctrl_c)?;
        match status.code() {
            Some(0) => Ok(()),
            Some(EXIT_INTERRUPTED) => Err(Interrupted(format!("interrupted: the {n} ranks stopped")).into()),
            _ => bail!("the {n} local ranks ended with {status}"),
        }
    }

    /// Joins the process group this process's environment names (torchrun,
    /// `srun`, `--nproc`'s ranks); alone when it names none.
    pub fn join(&self, device: Device) -> Result<Ranks> {
        let Some(launch) = Launch::from_env()? else { return Ok(Ranks::single()) };
        let backend = match (self.dist_backend, device.is_cuda()) {
            (BackendChoice::Gloo, false) | (BackendChoice::Auto, false) => Backend::Gloo,
            (BackendChoice::Gloo, true) => bail!("--dist-backend gloo carries CPU tensors only here; use --device cpu"),
            (BackendChoice::Nccl, _) | (BackendChoice::Auto, true) => Backend::Nccl,
        };
        let options = GroupOptions {
            backend,
            timeout: Duration::from_secs(self.dist_timeout as u64),
            bucket_bytes: DEFAULT_BUCKET_BYTES,
        };
        Ok(Ranks::of(ProcessGroup::join(&launch, &options)?, backend))
    }
}

/// `args` without `--nproc N` / `--nproc=N`.
fn without_nproc(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut kept = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match arg.to_str() {
            Some("--nproc") => skip_value = true,
            Some(text) if text.starts_with("--nproc=") => {}
            _ => kept.push(arg),
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::without_nproc;
    use std::ffi::OsString;

    #[test]
    fn the_ranks_get_the_arguments_without_nproc() {
        let args = |line: &str| line.split(' ').map(OsString::from).collect::<Vec<_>>();
        let kept = without_nproc(args("--mode full --nproc 2 --epochs 3 --nproc=4 --out x").into_iter());
        assert_eq!(kept, args("--mode full --epochs 3 --out x"));
    }
}
