//! Eval-mode backbone passes spread over CPU cores in "lanes": each lane is
//! a thread that runs whole batches with one libtorch intra-op thread. At
//! the small batches that are fastest on a CPU, splitting every operator
//! across cores (libtorch's default) spends much of its time waking and
//! synchronising OpenMP threads; independent lanes do not
//! (`cargo run --release --example bench_parallel`).

use crate::models::Classifier;
use tch::{Device, Tensor};

/// Lanes for eval passes on `device`: one per libtorch thread on the CPU; one
/// on CUDA, where a single stream of large batches keeps the GPU busy.
pub fn lane_count(device: Device) -> usize {
    if device.is_cuda() {
        1
    } else {
        tch::get_num_threads().max(1) as usize
    }
}

/// The model, shared read-only by the lanes.
struct SharedModel<'a>(&'a Classifier);

// SAFETY: lanes only call the eval-mode forward without autograd, which reads
// the model's tensors and writes none of them (batch norm uses its running
// statistics, dropout is off); libtorch tensors may be read from several
// threads at once. The `Classifier` outlives the scoped lane threads.
unsafe impl Sync for SharedModel<'_> {}

/// `forward(model, job)` for every job, spread round-robin over `lanes`
/// threads; the results come back in job order. With one lane it runs here.
pub fn map_in_lanes<J: Send>(
    model: &Classifier,
    jobs: Vec<J>,
    lanes: usize,
    forward: impl Fn(&Classifier, J) -> Tensor + Sync,
) -> Vec<Tensor> {
    if lanes <= 1 {
        return jobs.into_iter().map(|job| forward(model, job)).collect();
    }
    let count = jobs.len();
    let mut per_lane: Vec<Vec<(usize, J)>> = (0..lanes).map(|_| Vec::new()).collect();
    for (index, job) in jobs.into_iter().enumerate() {
        per_lane[index % lanes].push((index, job));
    }
    let shared = SharedModel(model);
    let (shared, forward) = (&shared, &forward);
    let mut results: Vec<(usize, Tensor)> = std::thread::scope(|scope| {
        let handles: Vec<_> = per_lane
            .into_iter()
            .map(|lane_jobs| {
                scope.spawn(move || {
                    tch::set_num_threads(1); // this thread only: OpenMP's thread count is per thread
                    lane_jobs.into_iter().map(|(index, job)| (index, forward(shared.0, job))).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a lane panicked")).collect()
    });
    results.sort_by_key(|(index, _)| *index);
    debug_assert_eq!(results.len(), count);
    results.into_iter().map(|(_, t)| t).collect()
}
