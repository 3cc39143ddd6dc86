//! Work spread over CPU cores in "lanes": each lane is a thread that runs
//! whole jobs (batches, or slices of a batch) with one libtorch intra-op
//! thread. At the small batches of this project, splitting every operator
//! across cores (libtorch's default) spends much of its time waking and
//! synchronising OpenMP threads; independent lanes do not
//! (`cargo run --release --example bench_parallel`).

use crate::models::Classifier;
use crate::nets::Net;
use tch::Device;

/// Models that lanes may share: what runs in a lane only reads them.
///
/// # Safety
/// An implementor promises that the code given to [`map_in_lanes`] for it
/// calls only methods that read its tensors (no optimizer step, no
/// batch-norm statistics update), so that concurrent use is sound: libtorch
/// tensors may be read from several threads at once.
pub unsafe trait SharedReadOnly {}

// SAFETY: lanes run the classifier's eval-mode forward without autograd only
// (batch norm reads its running statistics, dropout is off).
unsafe impl SharedReadOnly for Classifier {}

// SAFETY: lanes call `scores` and `loss_and_gradients`, which return new
// tensors and never write the parameters; autograd in a lane builds its own
// graph and returns gradients (`run_backward`) instead of accumulating them.
unsafe impl<'a> SharedReadOnly for dyn Net + 'a {}

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

/// `run(model, job)` for every job, spread round-robin over `lanes` threads;
/// the results come back in job order. With one lane it runs here.
pub fn map_in_lanes<M: SharedReadOnly + ?Sized, J: Send, R: Send>(
    model: &M,
    jobs: Vec<J>,
    lanes: usize,
    run: impl Fn(&M, J) -> R + Sync,
) -> Vec<R> {
    if lanes <= 1 || jobs.len() <= 1 {
        return jobs.into_iter().map(|job| run(model, job)).collect();
    }
    let mut per_lane: Vec<Vec<(usize, J)>> = (0..lanes).map(|_| Vec::new()).collect();
    for (index, job) in jobs.into_iter().enumerate() {
        per_lane[index % lanes].push((index, job));
    }
    let shared = Shared(model);
    let (shared, run) = (&shared, &run);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = per_lane
            .into_iter()
            .map(|lane_jobs| {
                scope.spawn(move || {
                    tch::set_num_threads(1); // this thread only: OpenMP's thread count is per thread
                    lane_jobs.into_iter().map(|(index, job)| (index, run(shared.0, job))).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a lane panicked")).collect()
    });
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, r)| r).collect()
}
