//! A sweep process that `srun` started as one rank of a point of `nproc`
//! ranks (a task of `sweep-nprocN.sbatch`, see [`super::slurm`]): it runs
//! one point, the array task's, whose `nproc` must be the tasks' number.
//! Rank 0 runs it as any sweep runs a point (claim, `exit.json`, `log.txt`,
//! the score line); every other rank starts the same command, which finds
//! its rank in the Slurm variables it inherits and joins rank 0's run, and
//! writes nothing of the sweep's. Each rank takes the device of its local
//! rank among those it sees.

use super::runner::{self, Plan};
use super::Sweep;
use crate::dist::Launch;
use crate::interrupt::Interrupted;
use crate::report::Reporter;
use anyhow::{bail, Result};
use std::sync::atomic::AtomicUsize;

/// This process as one rank of a point's group.
#[derive(Debug, Clone)]
pub struct PointRank {
    pub launch: Launch,
    /// The point it runs.
    pub index: usize,
}

impl PointRank {
    /// The rank this process is, from its launcher's variables (`None` when
    /// it names no group: an ordinary sweep), checked against the point
    /// `index` (from `--index` or the array task) it must run.
    pub fn of_this_process(sweep: &Sweep, index: Option<usize>) -> Result<Option<Self>> {
        let Some(launch) = Launch::from_env()? else { return Ok(None) };
        Self::new(sweep, launch, index).map(Some)
    }

    /// `launch` running point `index`: one point, of `nproc` = the group's size.
    pub fn new(sweep: &Sweep, launch: Launch, index: Option<usize>) -> Result<Self> {
        let (rank, world) = (launch.rank, launch.world_size);
        let Some(index) = index else {
            bail!("this sweep is rank {rank} of {world} (srun) and runs one point: give --index I or run it as an array task");
        };
        let point = sweep.point(index)?;
        let nproc = sweep.nproc(point);
        if nproc != world {
            bail!(
                "point {index} ({}) has nproc = {nproc}, but this sweep is rank {rank} of {world} (srun); run it from the {} that finetune sweep --slurm writes",
                point.label(),
                super::slurm::script_name(nproc)
            );
        }
        Ok(Self { launch, index })
    }

    /// Runs the point as this rank; `plan` is this process's own.
    pub fn run(&self, sweep: &Sweep, plan: &Plan, ctrl_c: &AtomicUsize, reporter: &dyn Reporter) -> Result<()> {
        let plan = plan.for_local_rank(self.launch.local_rank);
        if self.launch.rank == 0 {
            return match sweep.to_run(Some(self.index), reporter)? {
                Some(indices) => sweep.run(&indices, &plan, ctrl_c, reporter).map(|_| ()),
                None => Ok(()),
            };
        }
        self.run_as_peer(sweep, &plan, ctrl_c, reporter)
    }

    /// A rank other than 0: rank 0's command, its output this process's.
    fn run_as_peer(&self, sweep: &Sweep, plan: &Plan, ctrl_c: &AtomicUsize, reporter: &dyn Reporter) -> Result<()> {
        let (index, rank) = (self.index, self.launch.rank);
        let point = sweep.point(index)?;
        let dir = sweep.dir(point);
        let Some(mut command) = runner::peer_command(sweep, point, &plan.devices[0], plan.threads_per_run(1))? else {
            reporter.line(&format!("point {index} ({}) is done: {}", point.label(), dir.display()));
            return Ok(());
        };
        reporter.line(&format!(
            "point {index} ({}): rank {rank} joins rank 0's run in {}",
            point.label(),
            dir.display()
        ));
        let exit = runner::run_attached(&mut command, ctrl_c)?;
        match exit.code() {
            Some(0) => Ok(()),
            Some(crate::cli::EXIT_INTERRUPTED) => {
                Err(Interrupted(format!("point {index}: rank {rank} stopped at a safe point")).into())
            }
            _ => bail!(
                "point {index}: rank {rank} of {}: {} ended with {exit}",
                self.launch.world_size,
                sweep.file.tool.name()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::Launcher;

    fn launch(rank: usize, world_size: usize) -> Launch {
        Launch {
            launcher: Launcher::Slurm,
            rank,
            world_size,
            local_rank: rank,
            master_addr: "node1".into(),
            master_port: 15000,
            hosts_store: rank == 0,
            attempt: 0,
        }
    }

    #[test]
    fn a_rank_runs_one_point_whose_nproc_is_the_number_of_tasks() {
        let sweep = crate::sweep::fixture::sweep("nproc = [1, 2]", std::path::Path::new("/w/runs/s"));
        let rank = PointRank::new(&sweep, launch(1, 2), Some(1)).unwrap();
        assert_eq!((rank.index, rank.launch.rank), (1, 1));
        let mismatch = PointRank::new(&sweep, launch(0, 2), Some(0)).unwrap_err().to_string();
        assert_eq!(
            mismatch,
            "point 0 (nproc=1) has nproc = 1, but this sweep is rank 0 of 2 (srun); run it from the sweep.sbatch that finetune sweep --slurm writes"
        );
        let no_index = PointRank::new(&sweep, launch(0, 2), None).unwrap_err().to_string();
        assert!(no_index.contains("runs one point: give --index I"), "{no_index}");
    }

    #[test]
    fn each_local_rank_takes_its_own_device() {
        let plan = Plan { devices: vec!["cuda:0".into(), "cuda:1".into()], per_device: 2, jobs: 4, cores: 8 };
        let second = plan.for_local_rank(1);
        assert_eq!((second.devices, second.jobs, second.cores), (vec!["cuda:1".to_owned()], 1, 8));
        assert_eq!(plan.for_local_rank(2).devices, ["cuda:0"]);
    }
}
