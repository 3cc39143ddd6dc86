//! What a binary does with the options of a data-parallel run (`--nproc`,
//! `--dist-backend`, `--dist-timeout`): start its own local
//! ranks, or join the process group its launcher (torchrun, `srun`, or
//! `--nproc`) describes, or run alone when none does.

use super::EXIT_INTERRUPTED;
use crate::dist::{spawn_local_ranks, Backend, GroupOptions, Launch, ProcessGroup, DEFAULT_BUCKET_BYTES};
use crate::interrupt::Interrupted;
use crate::train::data_parallel::Ranks;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::time::Duration;
use tch::Device;

/// `--dist-backend`: which c10d backend carries the collectives.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendChoice {
    /// NCCL for CUDA devices, Gloo for the CPU.
    #[default]
    Auto,
    Gloo,
    Nccl,
}

/// How a data-parallel run is started and joined: `--nproc`,
/// `--dist-backend`, `--dist-timeout` as a tool's options give them.
#[derive(Debug, Clone, Copy)]
pub struct DataParallel {
    pub nproc: Option<usize>,
    pub backend: BackendChoice,
    /// Seconds a rank waits for the others.
    pub timeout_s: usize,
}

impl DataParallel {
    /// The ranks `--nproc` asks this process to start: `None` in a process
    /// that a launcher started as one rank of several.
    pub fn ranks_to_start(&self) -> Option<usize> {
        self.nproc.filter(|_| matches!(Launch::from_env(), Ok(None)))
    }

    /// Whether this process reports for the run: alone, or rank 0 of the
    /// group its launcher describes (the others report only their errors).
    pub fn speaks_for_the_run(&self) -> Result<bool> {
        Ok(Launch::from_env()?.is_none_or(|launch| launch.rank == 0))
    }

    /// Runs this program again as `n` local ranks and waits for them: Ok
    /// when all succeeded, [`Interrupted`] after Ctrl-C. `threads` (default:
    /// the cores) are split between the ranks, as compute threads and as
    /// loader workers.
    pub fn start_local_ranks(&self, n: usize, threads: Option<usize>, device: Device) -> Result<()> {
        let gpus = crate::device::cuda_count().max(0) as usize;
        if device.is_cuda() && n > gpus {
            bail!("--nproc {n} on CUDA needs a GPU per rank; this machine has {gpus} (fewer ranks, or --device cpu)");
        }
        let program = std::env::current_exe().context("cannot find this program to start its ranks")?;
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let per_rank = (threads.unwrap_or(cores) / n).max(1);
        let args = rank_args(std::env::args_os().skip(1), per_rank);
        let ctrl_c = super::count_ctrl_c();
        let kill_after = Duration::from_secs(self.timeout_s as u64 + 10);
        let status = spawn_local_ranks(n, &program, &args, per_rank, kill_after, &ctrl_c)?;
        match status.code() {
            Some(0) => Ok(()),
            Some(EXIT_INTERRUPTED) => Err(Interrupted(format!("interrupted: the {n} ranks stopped")).into()),
            _ => bail!("the {n} local ranks ended with {status}"),
        }
    }

    /// The device this rank computes on: under a launcher, a CUDA device
    /// means this rank's own GPU, `cuda:LOCAL_RANK` (as DDP scripts
    /// `set_device(LOCAL_RANK)`), or the one GPU a launcher that gives each
    /// task its own (`srun --gpus-per-task=1`) left visible.
    pub fn rank_device(&self, device: Device) -> Result<Device> {
        match (Launch::from_env()?, device) {
            (Some(launch), Device::Cuda(_)) => gpu_of(launch.local_rank, crate::device::cuda_count().max(0) as usize),
            _ => Ok(device),
        }
    }

    /// Joins the process group this process's environment names (torchrun,
    /// `srun`, `--nproc`'s ranks) on `device` (see [`DataParallel::rank_device`]);
    /// alone when it names none.
    pub fn join(&self, device: Device) -> Result<Ranks> {
        let Some(launch) = Launch::from_env()? else { return Ok(Ranks::single()) };
        let backend = match (self.backend, device.is_cuda()) {
            (BackendChoice::Gloo, false) | (BackendChoice::Auto, false) => Backend::Gloo,
            (BackendChoice::Gloo, true) => bail!("--dist-backend gloo carries CPU tensors only here; use --device cpu"),
            (BackendChoice::Nccl, false) => {
                bail!("--dist-backend nccl carries CUDA tensors only; use --device cuda, or gloo on the CPU")
            }
            (BackendChoice::Nccl, true) | (BackendChoice::Auto, true) => Backend::Nccl,
        };
        let options = GroupOptions {
            backend,
            timeout: Duration::from_secs(self.timeout_s as u64),
            bucket_bytes: DEFAULT_BUCKET_BYTES,
            device: if backend == Backend::Nccl { device } else { Device::Cpu },
        };
        Ok(Ranks::of(ProcessGroup::join(&launch, &options)?, backend))
    }
}

/// Whether this rank is an `srun` task, which sees only the GPU Slurm bound
/// to it (`--gpus-per-task=1`) as `cuda:0`.
fn gpus_bound_per_task() -> bool {
    std::env::var_os("SLURM_STEP_ID").is_some()
}

/// The GPU of the rank with `local_rank` on a machine where `gpus` are visible.
fn gpu_of(local_rank: usize, gpus: usize) -> Result<Device> {
    match gpus {
        0 => bail!("local rank {local_rank}: CUDA was asked for, but this machine shows no GPU"),
        n if local_rank < n => Ok(Device::Cuda(local_rank)),
        1 if gpus_bound_per_task() => Ok(Device::Cuda(0)),
        n => bail!(
            "local rank {local_rank} has no GPU of its own: this machine shows {n}; start at most {n} ranks per node"
        ),
    }
}

/// A local rank's arguments: this process's `args` without `--nproc`,
/// `--threads` and `--workers`, then `threads` of each.
fn rank_args(args: impl Iterator<Item = OsString>, threads: usize) -> Vec<OsString> {
    const REPLACED: [&str; 3] = ["--nproc", "--threads", "--workers"];
    let mut kept = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match arg.to_str() {
            Some(flag) if REPLACED.contains(&flag) => skip_value = true,
            Some(text) if REPLACED.iter().any(|flag| text.starts_with(&format!("{flag}="))) => {}
            _ => kept.push(arg),
        }
    }
    kept.extend(["--threads", &threads.to_string(), "--workers", &threads.to_string()].map(OsString::from));
    kept
}

#[cfg(test)]
mod tests {
    use super::{gpu_of, rank_args};
    use std::ffi::OsString;
    use tch::Device;

    #[test]
    fn each_local_rank_has_its_own_gpu() {
        assert_eq!(gpu_of(3, 4).unwrap(), Device::Cuda(3));
        assert_eq!(gpu_of(0, 1).unwrap(), Device::Cuda(0));
        assert!(gpu_of(1, 1).unwrap_err().to_string().starts_with("local rank 1 has no GPU of its own"));
        assert_eq!(
            gpu_of(4, 4).unwrap_err().to_string(),
            "local rank 4 has no GPU of its own: this machine shows 4; start at most 4 ranks per node"
        );
        assert!(gpu_of(0, 0).unwrap_err().to_string().contains("shows no GPU"));
    }

    #[test]
    fn a_local_rank_gets_the_arguments_with_its_share_of_the_threads() {
        let args = |line: &str| line.split(' ').map(OsString::from).collect::<Vec<_>>();
        let given = args("--mode full --nproc 2 --threads 8 --epochs 3 --workers=8 --nproc=4 --out x");
        let expected = args("--mode full --epochs 3 --out x --threads 4 --workers 4");
        assert_eq!(rank_args(given.into_iter(), 4), expected);
    }
}
