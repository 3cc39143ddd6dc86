//! Inverted dropout: each element is kept with probability `1 − rate` and
//! scaled by `1 / (1 − rate)`, else zeroed; at rate 0 (evaluation) it is
//! the identity. The rate belongs to the pass, not the layer: a network
//! passes its training rate to training steps and 0 to the rest. The mask
//! is drawn once, in the forward pass, from
//! torch's generator (seeded by the run's `--seed`), and the same
//! [`DropoutMask`] value is handed to the backward pass: `dx = dy ⊙ mask`.
//! Drawing every mask of a pass in one fixed order makes a pass repeatable
//! after `tch::manual_seed`, which is how explicit and autograd gradients
//! are compared with dropout on.

use tch::Tensor;

/// The dropout rate of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Dropout {
    pub rate: f64,
}

/// A drawn mask (already scaled by `1 / (1 − rate)`), or none: the identity.
pub struct DropoutMask(pub Option<Tensor>);

impl Dropout {
    pub fn new(rate: f64) -> Self {
        assert!((0.0..1.0).contains(&rate), "a dropout rate in [0, 1), not {rate}");
        Self { rate }
    }

    /// No dropout: the identity.
    pub const NONE: Dropout = Dropout { rate: 0.0 };

    /// A mask shaped like `x`: drawn unless the rate is 0.
    pub fn mask(&self, x: &Tensor) -> DropoutMask {
        if self.rate == 0.0 {
            return DropoutMask(None);
        }
        let keep = 1.0 - self.rate;
        let mut mask = x.empty_like();
        let _ = mask.bernoulli_float_(keep);
        DropoutMask(Some(mask / keep))
    }
}

impl DropoutMask {
    /// `x ⊙ mask`.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        match &self.0 {
            Some(mask) => x * mask,
            None => x.shallow_clone(),
        }
    }

    /// `dx = dy ⊙ mask`: the same product.
    pub fn backward(&self, upstream: &Tensor) -> Tensor {
        self.apply(upstream)
    }
}
