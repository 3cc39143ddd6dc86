//! A training process's place in a data-parallel run, with the semantics of
//! torch's `DistributedDataParallel` on a [`crate::dist::ProcessGroup`]:
//! rank 0's weights broadcast at start, each epoch's order shared out as
//! `DistributedSampler` does, gradients averaged over the ranks once per
//! optimizer step, batch-norm buffers broadcast from rank 0 after each
//! step (so every forward pass sees rank 0's), and the sums of metrics, the rows of sharded passes and
//! Ctrl-C agreed by every rank. A single process ([`Ranks::single`]) does
//! none of it and issues no collective.
//!
//! What it must not do: decide what is trained or written. Every rank calls
//! the same methods in the same order (a collective issued by one rank only
//! waits for the others until the group's timeout).

use crate::data::loader::{rank_share, EpochPlan};
use crate::dist::{Backend, ProcessGroup};
use crate::interrupt::Interrupt;
use anyhow::{bail, Result};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tch::{Device, Tensor};

/// This process alone, or one rank of a process group.
#[derive(Clone, Default)]
pub struct Ranks(Option<Rc<Member>>);

struct Member {
    group: ProcessGroup,
    backend: Backend,
    /// Time spent averaging gradients (the collective that scales with the model).
    averaging: Cell<Duration>,
}

impl Ranks {
    /// A run of one process.
    pub fn single() -> Self {
        Self(None)
    }

    /// Rank `group.rank()` of a group joined over `backend`.
    pub fn of(group: ProcessGroup, backend: Backend) -> Self {
        Self(Some(Rc::new(Member { group, backend, averaging: Cell::default() })))
    }

    pub fn rank(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.group.rank())
    }

    pub fn world_size(&self) -> usize {
        self.0.as_ref().map_or(1, |m| m.group.world_size())
    }

    /// The c10d backend between the ranks (`None` alone).
    pub fn backend(&self) -> Option<Backend> {
        self.0.as_ref().map(|m| m.backend)
    }

    /// Whether this process prints, writes the run's files and checkpoints (rank 0).
    pub fn leads(&self) -> bool {
        self.rank() == 0
    }

    fn group(&self) -> Option<&ProcessGroup> {
        self.0.as_deref().map(|m| &m.group).filter(|g| g.world_size() > 1)
    }

    /// `local` when every rank got an `Ok` at this point; otherwise this
    /// rank's own error, or one saying another rank failed `while` (it
    /// reports its error itself).
    pub fn agree<T>(&self, local: Result<T>, while_: &str) -> Result<T> {
        let Some(group) = self.group() else { return local };
        let mut failed = [f64::from(u8::from(local.is_err()))];
        group.all_reduce_sum_f64(&mut failed)?;
        match local {
            Err(error) => Err(error),
            Ok(_) if failed[0] > 0.0 => {
                bail!("rank {}: stopped: {} other rank(s) failed {while_}", self.rank(), failed[0])
            }
            ok => ok,
        }
    }

    /// Makes `tensors` rank 0's on every rank (the model at start, batch-norm
    /// buffers after each update).
    pub fn broadcast_from_leader(&self, tensors: &[Tensor]) -> Result<()> {
        match self.group() {
            Some(group) => group.broadcast_(&by_kind(tensors), 0),
            None => Ok(()),
        }
    }

    /// Replaces each tensor by its mean over the ranks (gradients: the time
    /// it takes is counted in [`Ranks::averaging_seconds`]).
    pub fn mean_(&self, tensors: &[Tensor]) -> Result<()> {
        let (Some(member), Some(group)) = (self.0.as_deref(), self.group()) else { return Ok(()) };
        let started = Instant::now();
        let averaged = group.all_reduce_mean_(&by_kind(tensors));
        member.averaging.set(member.averaging.get() + started.elapsed());
        averaged
    }

    /// Seconds this rank has spent in [`Ranks::mean_`] so far.
    pub fn averaging_seconds(&self) -> f64 {
        self.0.as_ref().map_or(0.0, |m| m.averaging.get().as_secs_f64())
    }

    /// Sums `values` over the ranks.
    pub fn sum(&self, values: &mut [f64]) -> Result<()> {
        match self.group() {
            Some(group) => group.all_reduce_sum_f64(values),
            None => Ok(()),
        }
    }

    /// Whether Ctrl-C reached any rank; when one did, every rank's
    /// `interrupt` is set, so that all stop at the same safe point.
    pub fn stop_requested(&self, interrupt: &Interrupt) -> Result<bool> {
        let mut requested = [f64::from(u8::from(interrupt.requested()))];
        self.sum(&mut requested)?;
        if requested[0] > 0.0 && !interrupt.requested() {
            interrupt.pass_on();
        }
        Ok(requested[0] > 0.0)
    }

    /// This rank's share of an epoch's plan.
    pub fn share(&self, plan: EpochPlan) -> EpochPlan {
        match self.group() {
            Some(group) => plan.shard(group.rank(), group.world_size()),
            None => plan,
        }
    }

    /// The positions of `len` rows this rank computes in a sharded pass.
    pub fn rows(&self, len: usize) -> Vec<i64> {
        rank_share(len, self.rank(), self.world_size()).into_iter().map(|i| i as i64).collect()
    }

    /// A pass over the rows of `inputs` (fixed images: val, cached
    /// features) shared out between the ranks: `compute` on this rank's
    /// share of the rows, then every rank's results put together in row
    /// order. `compute` returns one result row per input row, on any device.
    pub fn sharded_pass(&self, inputs: &Tensor, compute: impl FnOnce(&Tensor) -> Tensor) -> Result<Tensor> {
        let Some(group) = self.group() else { return Ok(compute(inputs)) };
        let len = inputs.size()[0] as usize;
        let rows = Tensor::from_slice(&self.rows(len)).to_device(inputs.device());
        let mine = compute(&inputs.index_select(0, &rows)).to_device(Device::Cpu);
        let shares = group.all_gather(&mine)?;
        // Rank r's i-th row is row i × world + r: interleave, then drop the padding.
        let interleaved = Tensor::stack(&shares, 1);
        let mut shape = interleaved.size();
        let rows = shape.remove(0) * shape.remove(0);
        shape.insert(0, rows);
        Ok(interleaved.reshape(shape.as_slice()).narrow(0, 0, len as i64))
    }

    /// An error unless `tensors` (the trained weights) are bit for bit the
    /// same on every rank, compared by an integer fingerprint of their bits:
    /// what data-parallel training must keep true, checked once at the end.
    pub fn check_identical(&self, tensors: &[Tensor]) -> Result<()> {
        let fingerprint = tch::no_grad(|| bits_fingerprint(tensors));
        self.check_same(&fingerprint, "weights differ from rank 0's at the end of the run")
    }

    /// An error unless every rank has the same `values` (counts, sizes):
    /// `what` says what differs.
    pub fn check_same(&self, values: &Tensor, what: &str) -> Result<()> {
        let Some(group) = self.group() else { return Ok(()) };
        let all = group.all_gather(&values.to_device(Device::Cpu))?;
        match all.iter().position(|v| !v.equal(&all[0])) {
            Some(rank) => bail!("rank {rank}'s {what}"),
            None => Ok(()),
        }
    }

    /// Ends the rank's part once every rank got here (a barrier), so that
    /// rank 0, which hosts the group's store, does not leave while a peer
    /// still talks to it.
    pub fn finish(self) -> Result<()> {
        match self.0.map(Rc::try_unwrap) {
            Some(Ok(member)) => member.group.finish(),
            Some(Err(_)) => bail!("the process group is still in use at the end of the run"),
            None => Ok(()),
        }
    }
}

/// `tensors` grouped by dtype, keeping their order within a dtype (the same
/// on every rank), so that the collectives' buckets are as few as possible,
/// as DDP's `take_tensors` groups them.
fn by_kind(tensors: &[Tensor]) -> Vec<Tensor> {
    let mut sorted: Vec<Tensor> = tensors.iter().map(Tensor::shallow_clone).collect();
    sorted.sort_by_key(|t| format!("{:?}", t.kind()));
    sorted
}

/// A fingerprint of `tensors`' exact bits, computed in integers (no
/// rounding that could depend on the thread count): the sums of the values'
/// bit patterns, plain and position-weighted.
fn bits_fingerprint(tensors: &[Tensor]) -> Tensor {
    let bits: Vec<Tensor> = tensors
        .iter()
        .map(|t| {
            let t = t.detach().contiguous().to_device(Device::Cpu);
            let as_int = match t.kind() {
                tch::Kind::Float => t.view_dtype(tch::Kind::Int),
                tch::Kind::Double => t.view_dtype(tch::Kind::Int64),
                tch::Kind::Half | tch::Kind::BFloat16 => t.view_dtype(tch::Kind::Int16),
                _ => t,
            };
            as_int.to_kind(tch::Kind::Int64).reshape([-1])
        })
        .collect();
    let all = Tensor::cat(&bits, 0);
    let positions = Tensor::arange(all.size()[0], tch::kind::INT64_CPU).remainder(7) + 1;
    Tensor::stack(&[all.sum(tch::Kind::Int64), (&all * positions).sum(tch::Kind::Int64)], 0)
}
