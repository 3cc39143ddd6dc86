//! Parallel loops on libtorch's own OpenMP threads.
//!
//! libtorch runs its kernels on an OpenMP team whose idle threads spin for a
//! while after each kernel before they sleep. Work run on a second pool
//! (rayon) between two kernels therefore competes with spinning threads for
//! the same cores: on two cores the Winograd weight gradients of ResNet-18's
//! layers 1–2 saved 0–10 ms of a step with rayon, ~20 ms with this.
//! [`for_each_index`] runs a loop as an OpenMP parallel region of the
//! same runtime (`GOMP_parallel`, found at run time in the process's global
//! symbols, where libtorch's `libgomp` put it), so it reuses libtorch's
//! threads; where that runtime is absent it falls back to rayon.

use rayon::prelude::*;
use std::ffi::{c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

type ParallelRegion = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint);
type ThreadQuery = unsafe extern "C" fn() -> c_int;

/// The OpenMP entry points of the runtime libtorch loaded.
struct OpenMp {
    parallel: ParallelRegion,
    thread_num: ThreadQuery,
    num_threads: ThreadQuery,
}

fn symbol(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT only looks a name up in the libraries
    // already loaded; the result is checked for null.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!address.is_null()).then_some(address)
}

fn openmp() -> Option<&'static OpenMp> {
    static OPENMP: OnceLock<Option<OpenMp>> = OnceLock::new();
    OPENMP
        .get_or_init(|| {
            let parallel = symbol(c"GOMP_parallel")?;
            let thread_num = symbol(c"omp_get_thread_num")?;
            let num_threads = symbol(c"omp_get_num_threads")?;
            // SAFETY: these are the OpenMP ABI's functions, with these signatures
            // (libgomp; Intel's and LLVM's runtimes export the same ones).
            unsafe {
                Some(OpenMp {
                    parallel: std::mem::transmute::<*mut c_void, ParallelRegion>(parallel),
                    thread_num: std::mem::transmute::<*mut c_void, ThreadQuery>(thread_num),
                    num_threads: std::mem::transmute::<*mut c_void, ThreadQuery>(num_threads),
                })
            }
        })
        .as_ref()
}

/// What each thread of the region needs: the loop body and its length.
struct Region<'a> {
    body: &'a (dyn Fn(usize) + Sync),
    len: usize,
    openmp: &'static OpenMp,
}

extern "C" fn run_share(data: *mut c_void) {
    // SAFETY: `data` is the `Region` that `for_each_index` keeps alive until
    // `GOMP_parallel` returns, which is after every thread has left this call.
    let region = unsafe { &*(data as *const Region) };
    let (thread, threads) = unsafe { ((region.openmp.thread_num)() as usize, (region.openmp.num_threads)() as usize) };
    // Contiguous shares, as OpenMP's static schedule.
    let share = region.len.div_ceil(threads.max(1));
    for index in (thread * share).min(region.len)..((thread + 1) * share).min(region.len) {
        (region.body)(index);
    }
}

/// Calls `body(i)` for every `i` in `0..len`, in parallel on libtorch's
/// intra-op threads (`tch::get_num_threads()` of them). `body` must not panic:
/// a panic cannot unwind through the OpenMP runtime and aborts the process.
pub fn for_each_index(len: usize, body: impl Fn(usize) + Sync) {
    let Some(openmp) = openmp() else {
        (0..len).into_par_iter().for_each(&body);
        return;
    };
    let threads = tch::get_num_threads().max(1) as usize;
    if threads == 1 || len <= 1 {
        (0..len).for_each(body);
        return;
    }
    let region = Region { body: &body, len, openmp };
    // SAFETY: `run_share` only reads `region`, which outlives the call, and
    // `GOMP_parallel` returns once all threads have finished it.
    unsafe {
        (openmp.parallel)(run_share, &region as *const Region as *mut c_void, threads.min(len) as c_uint, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn libtorchs_openmp_runtime_is_found_and_every_index_runs_once() {
        let _ = tch::get_num_threads(); // libtorch is loaded, and with it its OpenMP runtime
        assert!(openmp().is_some(), "GOMP_parallel not found among the loaded libraries");
        for len in [0, 1, 2, 3, 17, 64] {
            let hits: Vec<AtomicUsize> = (0..len).map(|_| AtomicUsize::new(0)).collect();
            for_each_index(len, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "len {len}");
        }
        // The loop really is shared out among libtorch's threads.
        let threads = std::sync::Mutex::new(std::collections::HashSet::new());
        for_each_index(64, |_| {
            threads.lock().unwrap().insert(std::thread::current().id());
        });
        let expected = (tch::get_num_threads() as usize).min(64);
        assert_eq!(threads.into_inner().unwrap().len(), expected, "threads that ran the loop");
    }
}
