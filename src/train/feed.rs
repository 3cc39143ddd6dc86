//! Getting augmented training batches to the device: on CUDA a producer
//! thread augments ahead into pinned memory and copies do not block; on the
//! CPU the epoch is augmented up front so no helper thread competes with a
//! training step for the cores.

use crate::data::loader::{DecodedSplit, EpochPlan};
use anyhow::Result;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Streams the epoch's augmented images in batches of `batch_images`, in
/// plan order, already on `device`. On CUDA a producer thread augments the
/// next batches (on the rayon pool, into pinned memory) while `consume`
/// computes on the current one. On the CPU the whole epoch is augmented
/// first, on every core: helper threads working during a training step
/// would stall its multi-threaded operators. Returns the seconds spent
/// waiting for or preparing batches.
pub fn for_each_augmented_batch(
    plan: &EpochPlan,
    split: &DecodedSplit,
    batch_images: usize,
    device: Device,
    mut consume: impl FnMut(usize, Tensor, Tensor) -> Result<()>,
) -> Result<f64> {
    let batches = plan.num_batches(batch_images);
    if !device.is_cuda() {
        let start = Instant::now();
        let (pixels, labels) = (plan.all_pixels(split), plan.all_labels(split));
        let preparing = start.elapsed().as_secs_f64();
        let total = labels.size()[0];
        for b in 0..batches {
            let (first, len) =
                ((b * batch_images) as i64, (batch_images as i64).min(total - (b * batch_images) as i64));
            let images = pixels.narrow(0, first, len).to_kind(Kind::Float) / 255.0;
            consume(b, images, labels.narrow(0, first, len))?;
        }
        return Ok(preparing);
    }
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel(3);
        scope.spawn(move || {
            single_threaded_helper();
            for b in 0..batches {
                let (images, labels) = plan.batch(split, batch_images, b);
                if sender.send((stage(images, device), stage(labels, device))).is_err() {
                    break;
                }
            }
        });
        let mut waited = 0.0;
        for b in 0..batches {
            let wait_start = Instant::now();
            let Ok((images, labels)) = receiver.recv() else { break };
            waited += wait_start.elapsed().as_secs_f64();
            consume(b, upload(&images, device), upload(&labels, device))?;
        }
        Ok(waited)
    })
}

/// Makes the calling helper thread (augmentation, batch producer) run its
/// libtorch operators on one thread, as PyTorch's DataLoader workers do: each
/// thread that calls libtorch otherwise starts its own team of OpenMP
/// threads, and on a few cores those teams fight the training step's team.
pub fn single_threaded_helper() {
    tch::set_num_threads(1);
}

/// A CPU tensor ready for [`upload`]: in pinned (page-locked) memory for CUDA.
fn stage(t: Tensor, device: Device) -> Tensor {
    if device.is_cuda() {
        t.pin_memory(device)
    } else {
        t
    }
}

/// `t` on `device`; from pinned memory to CUDA the copy does not block the host.
fn upload(t: &Tensor, device: Device) -> Tensor {
    if device.is_cuda() {
        t.to_device_(device, t.kind(), true, false)
    } else {
        t.to_device(device)
    }
}
