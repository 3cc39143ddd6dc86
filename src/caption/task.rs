//! Captioning as rows for the training loop ([`crate::train::minibatch`]):
//! the training rows are captions, each batched with its image's features;
//! gradients come from the network's explicit backward passes or autograd
//! (`crate::grad::gradients`); after every epoch the val loss is measured.

use super::dataset::CaptionSplit;
use super::decoder::Captioner;
use super::model::CaptioningNet;
use crate::grad::{self, GradMode, Gradients, HandDerived, Params};
use crate::train::minibatch::RowTask;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// Captions per chunk when the val loss is measured.
const VAL_CHUNK: usize = 500;

/// A split's features and captions on the device, ready for batching.
struct OnDevice {
    features: Tensor,
    captions: Tensor,
    image_of_caption: Tensor,
}

impl OnDevice {
    fn new(split: &CaptionSplit, device: Device) -> Self {
        Self {
            // Grid features stay f16 (half the memory); a batch is made f32.
            features: split.features.to_device(device),
            captions: split.captions.to_device(device),
            image_of_caption: split.image_of_caption.to_device(device),
        }
    }

    fn batch(&self, rows: &Tensor) -> (Tensor, Tensor) {
        let images = self.image_of_caption.index_select(0, rows);
        (self.features.index_select(0, &images).to_kind(Kind::Float), self.captions.index_select(0, rows))
    }

    fn len(&self) -> i64 {
        self.captions.size()[0]
    }
}

pub struct Captioning<'a> {
    net: &'a dyn Captioner,
    params: Params,
    train: OnDevice,
    val: OnDevice,
    /// Captions per val chunk (at least the training batch).
    val_chunk: usize,
    /// The dropout rate of training steps (networks without dropout ignore it).
    dropout: f64,
}

impl<'a> Captioning<'a> {
    pub fn new(
        net: &'a dyn Captioner,
        train: &CaptionSplit,
        val: &CaptionSplit,
        batch_size: usize,
        dropout: f64,
        device: Device,
    ) -> Self {
        Self {
            net,
            params: Params::new(net.named_parameters()),
            train: OnDevice::new(train, device),
            val: OnDevice::new(val, device),
            val_chunk: batch_size.max(VAL_CHUNK),
            dropout,
        }
    }
}

impl RowTask for Captioning<'_> {
    fn train_rows(&self) -> i64 {
        self.train.len()
    }

    fn params(&self) -> &Params {
        &self.params
    }

    fn train_step(&self, rows: &Tensor, grad: GradMode) -> (Tensor, Gradients) {
        let (features, captions) = self.train.batch(rows);
        self.net.set_dropout(self.dropout);
        let step = grad::gradients(grad, self.net, &self.params, &features, &captions);
        self.net.set_dropout(0.0);
        step
    }

    fn valid_step(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([("val_loss".to_owned(), mean_loss(self.net, &self.val, self.val_chunk))])
    }
}

impl HandDerived for CaptioningNet {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        CaptioningNet::named_parameters(self)
    }

    fn loss(&self, features: &Tensor, captions: &Tensor) -> Tensor {
        CaptioningNet::loss(self, features, captions)
    }

    fn loss_and_gradients(&self, features: &Tensor, captions: &Tensor) -> (Tensor, Vec<Tensor>) {
        CaptioningNet::loss_and_gradients(self, features, captions)
    }
}

/// The mean per-caption loss over a whole split, in chunks.
fn mean_loss(net: &dyn Captioner, split: &OnDevice, chunk: usize) -> f64 {
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
