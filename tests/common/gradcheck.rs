//! Gradient checks shared by the layer tests: relative error, autograd's
//! gradients of a weighted sum, and central finite differences.

use tch::{Kind, Tensor};

/// max |a − b| / max(|a| + |b|), the assignment's relative error.
pub fn rel_error(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).abs().max().double_value(&[]);
    let scale = (a.abs() + b.abs()).max().double_value(&[]).max(1e-300);
    diff / scale
}

/// Autograd's gradients of `Σ forward(x)·upstream` w.r.t. x and `params`.
pub fn autograd(forward: impl Fn(&Tensor) -> Tensor, x: &Tensor, params: &[Tensor], upstream: &Tensor) -> Vec<Tensor> {
    let x = x.detach().set_requires_grad(true);
    let params: Vec<Tensor> = params.iter().map(|p| p.shallow_clone().set_requires_grad(true)).collect();
    let out = (forward(&x) * upstream).sum(Kind::Double);
    let mut wrt = vec![&x];
    wrt.extend(params.iter());
    let grads = Tensor::run_backward(&[&out], &wrt, false, false);
    for p in &params {
        let _ = p.shallow_clone().set_requires_grad(false);
    }
    grads
}

/// Central differences of `Σ forward()·upstream` at a few entries of `target`,
/// each within `tolerance` (relative) of `analytic`.
pub fn finite_difference_check(
    target: &Tensor,
    analytic: &Tensor,
    upstream: &Tensor,
    forward: &dyn Fn() -> Tensor,
    what: &str,
    tolerance: f64,
) {
    let h = 1e-6;
    let n = target.numel() as i64;
    let flat = target.view([-1]);
    for k in 0..6.min(n) {
        let i = (k * 7919) % n;
        let original = flat.double_value(&[i]);
        let _ = flat.get(i).fill_(original + h);
        let plus = (forward() * upstream).sum(Kind::Double).double_value(&[]);
        let _ = flat.get(i).fill_(original - h);
        let minus = (forward() * upstream).sum(Kind::Double).double_value(&[]);
        let _ = flat.get(i).fill_(original);
        let numeric = (plus - minus) / (2.0 * h);
        let exact = analytic.reshape([-1]).double_value(&[i]);
        let rel = (numeric - exact).abs() / (numeric.abs() + exact.abs()).max(1e-8);
        assert!(rel < tolerance, "{what}[{i}]: finite difference {numeric} vs explicit {exact} (rel {rel:e})");
    }
}

/// Autograd's gradients of `Σ forward()·upstream` with respect to `wrt`.
pub fn autograd_of(forward: &dyn Fn() -> Tensor, wrt: &[&Tensor], upstream: &Tensor) -> Vec<Tensor> {
    for t in wrt {
        let _ = t.shallow_clone().set_requires_grad(true);
    }
    let out = (forward() * upstream).sum(Kind::Double);
    let grads = Tensor::run_backward(&[&out], wrt, false, false);
    for t in wrt {
        let _ = t.shallow_clone().set_requires_grad(false);
    }
    grads
}
