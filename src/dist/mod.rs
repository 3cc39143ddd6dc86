//! Data-parallel runs on PyTorch's own c10d (issue #28): this module owns
//! joining a process group and the collectives a data-parallel run issues,
//! nothing of training itself (what is reduced when is the caller's).
//!
//! - [`launch`]: where this process sits in the run, from the launcher's
//!   variables (torchrun, `srun`, by hand, or [`spawn_local_ranks`]); none
//!   set means a single process, as before.
//! - [`ProcessGroup`]: a c10d backend joined through a TCPStore, with
//!   broadcast, bucketed gradient mean, metric sums, all-gather and barrier.
//!   Gloo (CPU tensors) is built on every machine, by `build.rs` from
//!   `csrc/c10d.cpp`; [`Backend::Nccl`] (CUDA tensors) is a shared object
//!   from `csrc/c10d_nccl.cpp` opened when a run asks for it. Every collective is bounded by the group's timeout: a rank
//!   that dies or never arrives gives the others an error naming their rank
//!   and the timeout, not a hang.
//! - [`spawn_local_ranks`]: `--nproc N`, N ranks on this machine started by
//!   the tool itself.
//! - [`nodelist`]: Slurm's compressed host lists (`node[01-04]`).
//!
//! What aborts a process instead of returning an error (inside gloo's
//! threads, where no error can be caught): ranks issuing collectives in
//! different orders or on tensors of different sizes, and a peer that loses
//! the store's host (rank 0) while still inside a collective; end runs with
//! [`ProcessGroup::finish`] (a barrier).

mod buckets;
mod ffi;
mod group;
pub mod launch;
mod local;
pub mod nodelist;

pub use group::{Backend, GroupOptions, ProcessGroup, DEFAULT_BUCKET_BYTES, DEFAULT_TIMEOUT};
pub use launch::{Launch, Launcher};
pub use local::{die_with_parent, free_port, spawn_local_ranks};
