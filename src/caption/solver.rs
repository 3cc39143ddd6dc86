//! The captioning training loop: minibatches of captions (each with its
//! image's features) in a seeded order every epoch, Adam (`torch.optim.Adam`'s
//! update: [`crate::train::optim::AdamW`] without weight decay) on gradients
//! from the explicit backward passes or autograd, the learning rate
//! multiplied by `lr_decay` after every epoch, and the val loss after every
//! epoch. It reports epochs as they end and leaves saving to its caller.

use super::dataset::{CaptionData, CaptionSplit};
use super::model::CaptioningNet;
use crate::grad::{backward, Gradients, Params};
use crate::interrupt::Interrupt;
use crate::report::progress;
use crate::train::optim::{AdamW, Optimizer};
use crate::train::solver::{GradMode, SolverConfig};
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Mean minibatch loss of the epoch.
    pub train_loss: f64,
    pub val_loss: f64,
    pub lr: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TrainLog {
    /// Every minibatch's loss, in order.
    pub batch_losses: Vec<f64>,
    pub epochs: Vec<EpochRecord>,
    /// Stopped by Ctrl-C before the last epoch ended.
    pub interrupted: bool,
}

/// A split's features and captions on the device, ready for batching.
struct OnDevice {
    features: Tensor,
    captions: Tensor,
    image_of_caption: Tensor,
}

impl OnDevice {
    fn new(split: &CaptionSplit, device: Device) -> Self {
        Self {
            features: split.features.to_device(device).to_kind(Kind::Float),
            captions: split.captions.to_device(device),
            image_of_caption: split.image_of_caption.to_device(device),
        }
    }

    fn batch(&self, rows: &Tensor) -> (Tensor, Tensor) {
        let images = self.image_of_caption.index_select(0, rows);
        (self.features.index_select(0, &images), self.captions.index_select(0, rows))
    }

    fn len(&self) -> i64 {
        self.captions.size()[0]
    }
}

/// Trains `net` (whose parameters are `params`) on `data.train`, calling
/// `on_epoch` after every epoch. Returns early, with `interrupted` set, when
/// Ctrl-C was pressed.
pub fn train(
    net: &CaptioningNet,
    params: &Params,
    data: &CaptionData,
    schedule: &SolverConfig,
    interrupt: &Interrupt,
    on_epoch: &mut dyn FnMut(&EpochRecord) -> Result<()>,
) -> Result<TrainLog> {
    let device = schedule.device;
    let train = OnDevice::new(&data.train, device);
    let val = OnDevice::new(&data.val, device);
    let mut optimizer = AdamW::new(params, 0.0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(schedule.seed);
    let batches = (train.len() as usize).div_ceil(schedule.batch_size);
    let mut log = TrainLog::default();
    let mut lr = schedule.lr;
    for epoch in 0..schedule.epochs {
        let started = Instant::now();
        let mut order: Vec<i64> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let order = Tensor::from_slice(&order).to_device(device);
        let bar = progress::bar(batches as u64, &format!("epoch {epoch}/{}", schedule.epochs - 1));
        let mut epoch_loss = 0.0;
        for b in 0..batches {
            if interrupt.requested() {
                bar.finish_and_clear();
                log.interrupted = true;
                return Ok(log);
            }
            let start = (b * schedule.batch_size) as i64;
            let rows = order.narrow(0, start, (schedule.batch_size as i64).min(train.len() - start));
            let (features, captions) = train.batch(&rows);
            let (loss, grads) = loss_and_gradients(net, params, &features, &captions, schedule.grad);
            if !loss.is_finite() {
                bail!("non-finite loss ({loss}) at epoch {epoch}, batch {b}; lower --lr");
            }
            optimizer.step(params, &grads, lr);
            log.batch_losses.push(loss);
            epoch_loss += loss;
            bar.inc(1);
        }
        bar.finish_and_clear();
        let record = EpochRecord {
            epoch,
            train_loss: epoch_loss / batches as f64,
            val_loss: mean_loss(net, &val, schedule.batch_size.max(500)),
            lr,
            seconds: started.elapsed().as_secs_f64(),
        };
        on_epoch(&record)?;
        log.epochs.push(record);
        lr *= schedule.lr_decay;
    }
    Ok(log)
}

fn loss_and_gradients(
    net: &CaptioningNet,
    params: &Params,
    features: &Tensor,
    captions: &Tensor,
    grad: GradMode,
) -> (f64, Gradients) {
    let (loss, grads) = match grad {
        GradMode::Manual => {
            let (loss, grads) = tch::no_grad(|| net.loss_and_gradients(features, captions));
            // `Params` keeps its tensors sorted by name; the network lists them in layer order.
            let mut by_name: HashMap<String, Tensor> =
                net.named_parameters().into_iter().map(|(name, _)| name).zip(grads).collect();
            let ordered = params.iter().map(|(name, _)| by_name.remove(name).expect("a gradient per parameter"));
            (loss, Gradients(ordered.collect()))
        }
        GradMode::Autograd => {
            let loss = net.loss(features, captions);
            let (grads, _) = backward(&loss, params, &[]);
            (loss, grads)
        }
    };
    (loss.double_value(&[]), grads)
}

/// The mean per-caption loss over a whole split, in chunks.
fn mean_loss(net: &CaptioningNet, split: &OnDevice, chunk: usize) -> f64 {
    tch::no_grad(|| {
        let n = split.len();
        let mut total = 0.0;
        for start in (0..n).step_by(chunk) {
            let len = (chunk as i64).min(n - start);
            let rows = Tensor::arange_start(start, start + len, (Kind::Int64, split.captions.device()));
            let (features, captions) = split.batch(&rows);
            total += net.loss(&features, &captions).double_value(&[]) * len as f64;
        }
        total / n.max(1) as f64
    })
}
