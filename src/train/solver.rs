//! The MNIST training loop: minibatch Adam over a [`Net`], with gradients
//! from the layers' explicit backward passes or from autograd, a per-epoch
//! learning-rate decay, and accuracy on train and val after every epoch.

use crate::data::mnist::Split;
use crate::layers::loss::accuracy;
use crate::nets::Net;
use crate::report::progress;
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GradMode {
    /// The layers' hand-derived backward passes.
    Manual,
    /// libtorch's autograd over the same forward pass.
    Autograd,
}

/// How an MNIST run trains; recorded with its results.
#[derive(Debug, Clone, Serialize)]
pub struct SolverConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// The learning rate is multiplied by this after every epoch.
    pub lr_decay: f64,
    pub seed: u64,
    pub grad: GradMode,
    #[serde(serialize_with = "device_name")]
    pub device: Device,
}

fn device_name<S: serde::Serializer>(device: &Device, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::device::name(*device))
}

#[derive(Debug, Clone, Serialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_acc: f64,
    pub val_acc: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    /// Loss of every minibatch, in order.
    pub loss_history: Vec<f64>,
    pub epochs: Vec<EpochStats>,
    pub seconds: f64,
}

impl TrainOutcome {
    pub fn final_epoch(&self) -> &EpochStats {
        self.epochs.last().expect("at least one epoch")
    }
}

/// Adam (β = 0.9, 0.999, ε = 1e-8) over explicit gradient tensors.
struct Adam {
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    step: i32,
}

impl Adam {
    fn new(params: &[Tensor]) -> Self {
        Self {
            first: params.iter().map(Tensor::zeros_like).collect(),
            second: params.iter().map(Tensor::zeros_like).collect(),
            step: 0,
        }
    }

    fn update(&mut self, params: &[Tensor], grads: &[Tensor], lr: f64) {
        let (beta1, beta2, eps) = (0.9f64, 0.999f64, 1e-8);
        self.step += 1;
        let correction1 = 1.0 - beta1.powi(self.step);
        let correction2 = 1.0 - beta2.powi(self.step);
        // In place, as torch.optim.Adam's single-tensor path: no temporaries
        // for the moments.
        tch::no_grad(|| {
            for ((param, grad), (m, v)) in
                params.iter().zip(grads).zip(self.first.iter_mut().zip(self.second.iter_mut()))
            {
                let _ = m.lerp_(grad, 1.0 - beta1);
                let _ = v.g_mul_scalar_(beta2);
                let _ = v.addcmul_(&(grad * (1.0 - beta2)), grad);
                let mut denom = v.sqrt();
                let _ = denom.g_div_scalar_(correction2.sqrt());
                let _ = denom.g_add_scalar_(eps);
                let mut param = param.shallow_clone();
                let _ = param.addcdiv_(&(&*m * (-lr / correction1)), &denom);
            }
        });
    }
}

/// Top-1 accuracy of `net` on a split, evaluated in chunks.
pub fn evaluate(net: &dyn Net, split: &Split, device: Device) -> f64 {
    let n = split.len() as i64;
    let chunk = 10_000;
    let mut correct = 0.0;
    tch::no_grad(|| {
        for start in (0..n).step_by(chunk as usize) {
            let len = chunk.min(n - start);
            let images = split.images.narrow(0, start, len).to_device(device);
            let labels = split.labels.narrow(0, start, len).to_device(device);
            correct += accuracy(&net.scores(&images), &labels) * len as f64;
        }
    });
    correct / n as f64
}

/// Trains `net` on `train`, measuring accuracy on `train` and `val` after
/// every epoch and handing each epoch's numbers to `on_epoch` as they come.
pub fn train(
    net: &dyn Net,
    train: &Split,
    val: &Split,
    config: &SolverConfig,
    label: &str,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> Result<TrainOutcome> {
    if config.epochs == 0 || config.batch_size == 0 {
        bail!("{label}: epochs and batch size must be at least 1");
    }
    if train.is_empty() || val.is_empty() {
        bail!("{label}: {} training and {} validation images; both need at least 1", train.len(), val.len());
    }
    let started = std::time::Instant::now();
    let params = net.parameters();
    let mut adam = Adam::new(&params);
    let images = train.images.to_device(config.device);
    let labels = train.labels.to_device(config.device);
    let n = train.len();
    let batches = n.div_ceil(config.batch_size);
    let mut loss_history = Vec::with_capacity(batches * config.epochs);
    let mut epochs = Vec::new();
    let mut lr = config.lr;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
    for epoch in 0..config.epochs {
        let epoch_start = std::time::Instant::now();
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(&mut rng);
        let order = Tensor::from_slice(&order).to_device(config.device);
        // Epochs are numbered from 0, as `finetune` numbers them.
        let bar = progress::bar(batches as u64, &format!("{label} ep {epoch}/{}", config.epochs - 1));
        for b in 0..batches {
            let start = (b * config.batch_size) as i64;
            let len = (config.batch_size as i64).min(n as i64 - start);
            let index = order.narrow(0, start, len);
            let (x, y) = (images.index_select(0, &index), labels.index_select(0, &index));
            let (loss, grads) = match config.grad {
                GradMode::Manual => tch::no_grad(|| net.loss_and_gradients(&x, &y)),
                GradMode::Autograd => {
                    let loss = net.scores(&x).cross_entropy_for_logits(&y);
                    let grads = Tensor::run_backward(&[&loss], &params, false, false);
                    (loss.detach(), grads)
                }
            };
            let loss_value = loss.to_kind(Kind::Double).double_value(&[]);
            if !loss_value.is_finite() {
                bail!("{label}: non-finite loss ({loss_value}) at epoch {epoch}, batch {b}; lower --lr");
            }
            loss_history.push(loss_value);
            adam.update(&params, &grads, lr);
            bar.inc(1);
        }
        bar.finish_and_clear();
        lr *= config.lr_decay;
        let stats = EpochStats {
            epoch,
            train_acc: evaluate(net, train, config.device),
            val_acc: evaluate(net, val, config.device),
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        on_epoch(&stats);
        epochs.push(stats);
    }
    Ok(TrainOutcome { loss_history, epochs, seconds: started.elapsed().as_secs_f64() })
}
