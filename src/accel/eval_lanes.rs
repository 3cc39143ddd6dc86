//! Eval passes spread over CPU cores in "lanes": each lane is a thread that
//! runs whole batches with one libtorch intra-op thread. At the small
//! batches that are fastest for the frozen backbone, splitting every
//! operator across cores (libtorch's default) spends much of its time waking
//! and synchronising OpenMP threads; independent lanes do not
//! (`cargo run --release --example bench_parallel`). MNIST training gains
//! nothing from them (its matrix products keep both cores busy), so it does
//! not use them.

use rayon::prelude::*;
use std::sync::OnceLock;
use tch::Device;

/// Models that lanes may share: every method of the type only reads its
/// tensors.
///
/// # Safety
/// An implementor promises that no method reachable through a shared
/// reference writes a tensor (no optimizer step, no batch-norm statistics
/// update, no autograd graph), so that concurrent use is sound: libtorch
/// tensors may be read from several threads at once. Implement it for
/// narrow read-only views (such as `models::FrozenView`), never for a model
/// that can also train.
pub unsafe trait SharedReadOnly {}

/// Lanes for `device`: one per libtorch thread on the CPU; one on CUDA, where
/// a single stream of large batches keeps the GPU busy.
pub fn lane_count(device: Device) -> usize {
    if device.is_cuda() {
        1
    } else {
        tch::get_num_threads().max(1) as usize
    }
}

struct Shared<'a, M: ?Sized>(&'a M);

// SAFETY: see `SharedReadOnly`.
unsafe impl<M: SharedReadOnly + ?Sized> Sync for Shared<'_, M> {}

impl<M: ?Sized> Shared<'_, M> {
    fn get(&self) -> &M {
        self.0
    }
}

/// The lane threads, started once per process: a thread's first call to
/// `set_num_threads` costs (libtorch drops its cached oneDNN kernels), so
/// lanes must not be new threads per batch. The error of a pool that could
/// not be started stays, and the passes then run on the calling thread.
pub fn lane_pool(lanes: usize) -> Result<&'static rayon::ThreadPool, &'static str> {
    static POOL: OnceLock<Result<rayon::ThreadPool, String>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(lanes)
            .thread_name(|i| format!("lane-{i}"))
            // This thread only: OpenMP's thread count is per thread.
            .start_handler(|_| tch::set_num_threads(1))
            .build()
            .map_err(|error| error.to_string())
    });
    pool.as_ref().map_err(String::as_str)
}

/// `run(model, job)` for every job, spread over `lanes` threads; the results
/// come back in job order. With one lane, or without the lane threads, it
/// runs here.
pub fn map_in_lanes<M: SharedReadOnly + ?Sized, J: Send, R: Send>(
    model: &M,
    jobs: Vec<J>,
    lanes: usize,
    run: impl Fn(&M, J) -> R + Sync,
) -> Vec<R> {
    let pool = match (lanes > 1 && jobs.len() > 1).then(|| lane_pool(lanes)) {
        Some(Ok(pool)) => pool,
        _ => return jobs.into_iter().map(|job| run(model, job)).collect(),
    };
    let shared = Shared(model);
    pool.install(|| jobs.into_par_iter().map(|job| run(shared.get(), job)).collect())
}
