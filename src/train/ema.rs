//! An exponential moving average of a model's weights (`--ema DECAY`), as
//! timm's `ModelEmaV2`: it starts as a copy of the weights and after every
//! optimizer step (one that fp16 loss scaling skipped too, as in timm's
//! loop) becomes `decay·ema + (1 − decay)·w`, for every trained
//! parameter and every buffer training changes (batch norm's running
//! statistics, averaged the same way; integer buffers, the batch counts,
//! are copied). It is evaluated in place of the live weights
//! ([`Ema::swapped_in`]), may be the weights a run keeps, and is saved with
//! the run's state ([`Ema::averages`]) so that a resumed run continues it
//! exactly.

use tch::{Kind, Tensor};

pub struct Ema {
    decay: f64,
    tracked: Vec<Tracked>,
}

/// One averaged tensor: the live one it follows (sharing the model's
/// storage) and its average.
struct Tracked {
    name: String,
    live: Tensor,
    average: Tensor,
}

impl Ema {
    /// An average of `live` (the model's tensors by name, sharing their
    /// storage), starting at their current values.
    pub fn new(decay: f64, live: Vec<(String, Tensor)>) -> Self {
        let tracked = live
            .into_iter()
            .map(|(name, live)| {
                let average = live.detach().copy();
                Tracked { name, live: live.shallow_clone(), average }
            })
            .collect();
        Self { decay, tracked }
    }

    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// One step of the average, after an optimizer step: `decay·ema +
    /// (1 − decay)·w` as timm computes it (integer tensors copied).
    pub fn update(&mut self) {
        tch::no_grad(|| {
            for t in &mut self.tracked {
                if is_float(&t.live) {
                    let _ = t.average.g_mul_scalar_(self.decay).g_add_(&(&t.live * (1.0 - self.decay)));
                } else {
                    t.average.copy_(&t.live);
                }
            }
        });
    }

    /// The averages by name (sharing their storage: what a state saves, and
    /// loads back into).
    pub fn averages(&self) -> Vec<(String, Tensor)> {
        self.tracked.iter().map(|t| (t.name.clone(), t.average.shallow_clone())).collect()
    }

    /// `model` (every tensor of the model by name) with the averages in
    /// place of the tensors they follow.
    pub fn applied_to(&self, model: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
        model
            .into_iter()
            .map(|(name, tensor)| match self.tracked.iter().find(|t| t.name == name) {
                Some(t) => (name, t.average.shallow_clone()),
                None => (name, tensor),
            })
            .collect()
    }

    /// Runs `f` with the averages copied into the live tensors, then puts
    /// the live values back.
    pub fn swapped_in<T>(&self, f: impl FnOnce() -> T) -> T {
        let saved: Vec<Tensor> = tch::no_grad(|| {
            self.tracked
                .iter()
                .map(|t| {
                    let saved = t.live.detach().copy();
                    t.live.shallow_clone().copy_(&t.average);
                    saved
                })
                .collect()
        });
        let result = f();
        tch::no_grad(|| {
            for (t, saved) in self.tracked.iter().zip(&saved) {
                t.live.shallow_clone().copy_(saved);
            }
        });
        result
    }
}

fn is_float(t: &Tensor) -> bool {
    matches!(t.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn the_average_after_k_updates_is_the_closed_form_of_the_recorded_weights() {
        let w = Tensor::from_slice(&[1.0f32, -2.0, 0.5]);
        let count = Tensor::from_slice(&[3i64]);
        let decay = 0.9;
        let mut ema = Ema::new(decay, vec![("w".into(), w.shallow_clone()), ("count".into(), count.shallow_clone())]);
        let mut recorded = vec![w.copy()];
        for k in 1..=5 {
            let _ = w.shallow_clone().g_add_(&Tensor::from_slice(&[0.3f32 * k as f32, -0.1, 1.0 / k as f32]));
            let _ = count.shallow_clone().g_add_scalar_(1);
            ema.update();
            recorded.push(w.copy());
        }
        // ema_k = d^k w_0 + Σ_{i=1..k} (1 − d) d^{k−i} w_i
        let k = recorded.len() - 1;
        let mut expected = &recorded[0] * decay.powi(k as i32);
        for (i, w_i) in recorded.iter().enumerate().skip(1) {
            expected += w_i * ((1.0 - decay) * decay.powi((k - i) as i32));
        }
        let averages = ema.averages();
        let difference = (&averages[0].1 - &expected).abs().max().double_value(&[]);
        assert!(difference < 1e-6, "{difference}");
        assert_eq!(averages[1].1.int64_value(&[0]), 8, "integer buffers are copied");
    }

    #[test]
    fn swapped_in_shows_the_averages_and_puts_the_live_weights_back() {
        let w = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let mut ema = Ema::new(0.5, vec![("w".into(), w.shallow_clone())]);
        tch::no_grad(|| {
            let _ = w.shallow_clone().g_add_scalar_(2.0);
        });
        ema.update();
        let seen = ema.swapped_in(|| w.detach().copy());
        assert_eq!(Vec::<f32>::try_from(&seen).unwrap(), [2.0, 3.0]);
        assert_eq!(Vec::<f32>::try_from(&w.detach()).unwrap(), [3.0, 4.0]);
        let model =
            vec![("w".to_owned(), w.shallow_clone()), ("b".to_owned(), Tensor::zeros([1], tch::kind::FLOAT_CPU))];
        let applied = ema.applied_to(model);
        assert!(applied[0].1.equal(&ema.averages()[0].1) && applied[1].0 == "b");
        assert_eq!(applied[0].1.device(), Device::Cpu);
    }
}
