//! The gradient all-reduce of a data-parallel step at world size 2 on this
//! machine (Gloo over 127.0.0.1, one thread per rank): the gradients of
//! EfficientNet-Lite0 and ResNet-50 (1000 classes), as one flat buffer and as
//! the model's real tensors in DDP's 25 MB buckets (`all_reduce_mean_`),
//! alternating, median over the repetitions. Run without launch variables, it
//! starts its two ranks itself (`spawn_local_ranks`). `REPS=N` (default 9).
//! `cargo run --release --example bench_allreduce`

use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};
use tchlab::dist::{spawn_local_ranks, GroupOptions, Launch, ProcessGroup};
use tchlab::models::{Arch, Classifier};

fn main() -> anyhow::Result<()> {
    let Some(launch) = Launch::from_env()? else {
        let exe = std::env::current_exe()?;
        let ctrl_c = std::sync::atomic::AtomicUsize::new(0);
        let status = spawn_local_ranks(2, &exe, &[], 1, Duration::from_secs(60), &ctrl_c)?;
        std::process::exit(status.code().unwrap_or(1));
    };
    let options = GroupOptions { timeout: Duration::from_secs(120), ..GroupOptions::default() };
    let group = ProcessGroup::join(&launch, &options)?;
    let reps: usize = std::env::var("REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(9);
    for arch in [Arch::EfficientnetLite0, Arch::Resnet50] {
        let gradients = gradients_of(arch, group.rank());
        let numel: usize = gradients.iter().map(Tensor::numel).sum();
        let flat = Tensor::full([numel as i64], group.rank() as f64, (Kind::Float, Device::Cpu));
        let (mut flat_ms, mut bucketed_ms) = (Vec::new(), Vec::new());
        for rep in 0..reps + 2 {
            let flat_time = timed(&group, &[flat.shallow_clone()])?;
            let bucketed_time = timed(&group, &gradients)?;
            if rep >= 2 {
                flat_ms.push(flat_time);
                bucketed_ms.push(bucketed_time);
            }
        }
        if group.rank() == 0 {
            let mb = numel as f64 * 4.0 / 1e6;
            println!(
                "{arch:?}: {numel} floats ({mb:.1} MB) in {} tensors: flat buffer {:.1} ms, bucketed {:.1} ms (median of {reps})",
                gradients.len(),
                median(&mut flat_ms),
                median(&mut bucketed_ms)
            );
        }
    }
    group.finish()?;
    Ok(())
}

/// Tensors shaped as `arch`'s trainable parameters, filled with the rank.
fn gradients_of(arch: Arch, rank: usize) -> Vec<Tensor> {
    let model = Classifier::new(arch, 1000, Device::Cpu);
    let params = model.named_tensors().into_iter().filter(|(_, t)| t.requires_grad());
    params.map(|(_, t)| Tensor::full(t.size(), rank as f64, (Kind::Float, Device::Cpu))).collect()
}

/// One all-reduce mean after a barrier (so both ranks start together), in ms.
fn timed(group: &ProcessGroup, tensors: &[Tensor]) -> anyhow::Result<f64> {
    group.barrier()?;
    let clock = Instant::now();
    group.all_reduce_mean_(tensors)?;
    Ok(clock.elapsed().as_secs_f64() * 1e3)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}
