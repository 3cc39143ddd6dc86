//! Getting augmented training batches to the device: on CUDA a producer
//! thread augments ahead into pinned memory and copies do not block; on the
//! CPU the epoch is augmented up front so no helper thread competes with a
//! training step for the cores.

use crate::accel::single_threaded_helper;
use crate::data::loader::{DecodedSplit, EpochPlan};
use anyhow::Result;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Streams the epoch's augmented images in batches of `batch_images`, in
/// plan order, already on `device`. On CUDA a producer thread augments the
/// next batches (on the rayon pool, into pinned memory) while `consume`
/// computes on the current one. On the CPU the epoch is augmented ahead in
/// rounds of `UPFRONT_IMAGES` (all of it for a small dataset), on every
/// core: helper threads working during a training step would stall its
/// multi-threaded operators. Returns the seconds spent
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
        let mut preparing = 0.0;
        let total = plan.order.len();
        let round_batches = (UPFRONT_IMAGES / batch_images).max(1);
        for first_batch in (0..batches).step_by(round_batches) {
            let start = Instant::now();
            let first_image = first_batch * batch_images;
            let round = first_image..(first_image + round_batches * batch_images).min(total);
            let (pixels, labels) = (plan.pixels(split, round.clone()), plan.labels(split, round.clone()));
            preparing += start.elapsed().as_secs_f64();
            for (b, offset) in (first_batch..).zip((0..round.len()).step_by(batch_images)) {
                let len = batch_images.min(round.len() - offset);
                let mut images = pixels.narrow(0, offset as i64, len as i64).to_kind(Kind::Float) / 255.0;
                let first = round.start + offset;
                plan.erase(split, &mut images, first..first + len);
                consume(b, images, labels.narrow(0, offset as i64, len as i64))?;
            }
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

/// Images augmented at a time on the CPU (150 KB each as uint8): the whole
/// epoch of a small dataset, bounded memory for a large one.
const UPFRONT_IMAGES: usize = 2048;

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
