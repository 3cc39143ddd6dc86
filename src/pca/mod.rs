//! Principal component analysis written out on libtorch (CPU or CUDA): the
//! data centred, then the symmetric eigendecomposition of the covariance
//! (d×d) or, when there are fewer samples than dimensions, of the N×N Gram
//! matrix, whose eigenvectors map onto the same components. Also projection,
//! reconstruction, the variance kept by k components, and
//! [`recognition`] by nearest neighbour in eigenspace. It computes; reading
//! faces and writing reports belong to `data` and `eigenfaces`.

pub mod recognition;

use crate::accel::lapack::{self, ProductEigen};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// What the covariance is divided by. `N − 1` (the unbiased sample
/// covariance) is scikit-learn's `PCA` and numpy's `cov`; `N` is the
/// population covariance, under which the mean squared reconstruction error
/// with k components is exactly the sum of the discarded eigenvalues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Divisor {
    #[value(name = "n-1")]
    #[serde(rename = "N-1")]
    NMinusOne,
    #[value(name = "n")]
    #[serde(rename = "N")]
    N,
}

impl Divisor {
    pub fn of(self, samples: i64) -> f64 {
        match self {
            Divisor::NMinusOne => (samples - 1) as f64,
            Divisor::N => samples as f64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Divisor::NMinusOne => "N-1",
            Divisor::N => "N",
        }
    }
}

/// Which matrix is decomposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Gram when N < d, covariance otherwise: the smaller matrix.
    Auto,
    /// The N×N Gram matrix Xc·Xcᵀ.
    Gram,
    /// The d×d covariance Xcᵀ·Xc.
    Covariance,
}

impl Method {
    /// The matrix actually decomposed for `samples` rows of `dims` values.
    pub fn resolve(self, samples: i64, dims: i64) -> Method {
        match self {
            Method::Auto if samples < dims => Method::Gram,
            Method::Auto => Method::Covariance,
            chosen => chosen,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Auto => "auto",
            Method::Gram => "gram",
            Method::Covariance => "covariance",
        }
    }
}

/// A fitted PCA: components are rows, by decreasing eigenvalue.
#[derive(Debug)]
pub struct Pca {
    /// `[d]`
    pub mean: Tensor,
    /// `[r, d]`, orthonormal rows; r is the numerical rank (at most min(N − 1, d)).
    pub components: Tensor,
    /// `[r]`, decreasing, in the `divisor` convention.
    pub eigenvalues: Tensor,
    /// The total variance (trace of the covariance), kept components or not.
    pub total_variance: f64,
    pub samples: i64,
    pub divisor: Divisor,
    pub method: Method,
    /// What took the eigendecomposition: OpenBLAS (and which) or libtorch.
    pub eigensolver: String,
}

/// Fits a PCA to the rows of `data` (`[N, d]`), in `data`'s kind and on its device.
pub fn fit(data: &Tensor, divisor: Divisor, method: Method) -> Result<Pca> {
    let [samples, dims] = data.size()[..] else { bail!("PCA needs a matrix of rows, got shape {:?}", data.size()) };
    if samples < 2 || dims < 1 {
        bail!("PCA needs at least 2 rows of at least 1 value, got {samples}×{dims}");
    }
    let method = method.resolve(samples, dims);
    let scale = divisor.of(samples);
    let mean = data.mean_dim(0, false, data.kind());
    let centred = data - &mean;
    let gram = method == Method::Gram;
    let (ProductEigen { values, rows, trace: total_variance }, eigensolver) = eigh_of_product(&centred, scale, gram);
    let most = (samples - 1).min(dims);
    let rank = numerical_rank(&values, samples.max(dims), data.kind()).min(most);
    let eigenvalues = values.narrow(0, 0, rank);
    let components = if gram {
        // vᵢ = Xcᵀuᵢ / √(scale·λᵢ) has unit length and the same eigenvalue.
        let norms = (&eigenvalues * scale).sqrt();
        rows.narrow(0, 0, rank).mm(&centred) / norms.unsqueeze(1)
    } else {
        rows.narrow(0, 0, rank)
    };
    Ok(Pca {
        mean,
        components: largest_entry_positive(components),
        eigenvalues,
        total_variance,
        samples,
        divisor,
        method,
        eigensolver,
    })
}

/// The eigendecomposition of `Xcᵀ·Xc / scale` (the covariance), or of
/// `Xc·Xcᵀ / scale` (the Gram matrix) with `gram`: by OpenBLAS where it
/// takes the tensor, else by libtorch; and what computed it.
fn eigh_of_product(centred: &Tensor, scale: f64, gram: bool) -> (ProductEigen, String) {
    if let Some(blas) = lapack::for_tensor(centred) {
        if let Some(eigen) = blas.product_eigh(centred, 1.0 / scale, gram) {
            return (eigen, format!("OpenBLAS ({})", blas.path));
        }
    }
    let product = if gram { centred.mm(&centred.tr()) } else { centred.tr().mm(centred) } / scale;
    let trace = product.diagonal(0, 0, 1).sum(Kind::Double).double_value(&[]);
    let (values, vectors) = product.linalg_eigh("L");
    let solver = if centred.device() == tch::Device::Cpu { "libtorch (MKL)" } else { "libtorch" };
    (ProductEigen { values: values.flip([0]), rows: vectors.flip([1]).tr().contiguous(), trace }, solver.to_string())
}

/// How many leading eigenvalues stand above rounding noise (at least 1).
fn numerical_rank(descending: &Tensor, size: i64, kind: Kind) -> i64 {
    let epsilon = if kind == Kind::Double { f64::EPSILON } else { f32::EPSILON as f64 };
    let largest = descending.double_value(&[0]);
    let tolerance = largest.abs() * size as f64 * epsilon;
    descending.gt(tolerance).sum(Kind::Int64).int64_value(&[]).max(1)
}

/// Each row's sign flipped so that its entry of largest magnitude is
/// positive (scikit-learn's `svd_flip` on components: the first such entry
/// where several tie), so results repeat. From each row's largest and
/// smallest entries and their first indices, without an |x| copy. The
/// rows are flipped in place: `fit` passes tensors nothing else reads.
fn largest_entry_positive(mut rows: Tensor) -> Tensor {
    let (largest, largest_at) = rows.max_dim(1, true);
    let (smallest, smallest_at) = rows.min_dim(1, true);
    let magnitude_of_smallest = -smallest;
    let tie_goes_positive = magnitude_of_smallest.eq_tensor(&largest).logical_and(&largest_at.le_tensor(&smallest_at));
    let positive = largest.gt_tensor(&magnitude_of_smallest).logical_or(&tie_goes_positive);
    rows *= positive.to_kind(rows.kind()) * 2.0 - 1.0;
    rows
}

impl Pca {
    pub fn rank(&self) -> i64 {
        self.components.size()[0]
    }

    pub fn dims(&self) -> i64 {
        self.components.size()[1]
    }

    pub fn eigenvalues_vec(&self) -> Vec<f64> {
        let values = self.eigenvalues.to_kind(Kind::Double).to_device(tch::Device::Cpu);
        Vec::<f64>::try_from(values.flatten(0, -1)).expect("a flat f64 CPU tensor converts to Vec<f64>")
    }

    /// Coordinates `[M, k]` of rows `[M, d]` on the first `k` components.
    pub fn project(&self, rows: &Tensor, k: i64) -> Tensor {
        (rows.to_kind(self.mean.kind()) - &self.mean).mm(&self.components.narrow(0, 0, k).tr())
    }

    /// Rows `[M, d]` rebuilt from coordinates `[M, k]`.
    pub fn reconstruct(&self, coordinates: &Tensor) -> Tensor {
        let k = coordinates.size()[1];
        coordinates.mm(&self.components.narrow(0, 0, k)) + &self.mean
    }

    /// The squared distance `[M]` of each row from its rebuilding with `k` components.
    pub fn squared_errors(&self, rows: &Tensor, k: i64) -> Tensor {
        let rows = rows.to_kind(self.mean.kind());
        (self.reconstruct(&self.project(&rows, k)) - rows).square().sum_dim_intlist(1, false, Kind::Double)
    }

    /// The fraction of the total variance the first k components keep, for k = 1 … r.
    pub fn cumulative_fractions(&self) -> Vec<f64> {
        let total = self.total_variance;
        self.eigenvalues_vec()
            .iter()
            .scan(0.0, |sum, v| {
                *sum += v;
                Some(*sum / total)
            })
            .collect()
    }

    /// The fewest components that keep at least `fraction` of the variance.
    pub fn components_for(&self, fraction: f64) -> i64 {
        components_for(&self.cumulative_fractions(), fraction)
    }

    /// The tensors saved for later projection, by name.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        vec![
            ("mean".into(), self.mean.to_kind(Kind::Double)),
            ("components".into(), self.components.to_kind(Kind::Double)),
            ("eigenvalues".into(), self.eigenvalues.to_kind(Kind::Double)),
        ]
    }
}

/// The first k (counted from 1) whose cumulative fraction reaches
/// `fraction`, less a rounding allowance; all of them when none does.
pub fn components_for(cumulative: &[f64], fraction: f64) -> i64 {
    let reached = cumulative.iter().position(|&c| c >= fraction - 1e-12);
    reached.unwrap_or(cumulative.len().saturating_sub(1)) as i64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(rows: i64, cols: i64) -> Tensor {
        tch::manual_seed(7);
        Tensor::randn([rows, cols], (Kind::Double, tch::Device::Cpu))
    }

    #[test]
    fn auto_picks_the_smaller_matrix() {
        assert_eq!(Method::Auto.resolve(100, 625), Method::Gram);
        assert_eq!(Method::Auto.resolve(625, 625), Method::Covariance);
        assert_eq!(Method::Auto.resolve(2414, 2016), Method::Covariance);
        assert_eq!(Method::Gram.resolve(2414, 2016), Method::Gram);
    }

    #[test]
    fn components_are_orthonormal_and_eigenvalues_sum_to_the_variance() {
        for (rows, cols) in [(30, 12), (12, 30)] {
            let pca = fit(&random(rows, cols), Divisor::NMinusOne, Method::Auto).unwrap();
            assert_eq!(pca.rank(), (rows - 1).min(cols));
            let gram = pca.components.mm(&pca.components.tr());
            let off = (gram - Tensor::eye(pca.rank(), (Kind::Double, tch::Device::Cpu))).abs().max().double_value(&[]);
            assert!(off < 1e-12, "{rows}x{cols}: |VVᵀ − I| = {off}");
            let sum: f64 = pca.eigenvalues_vec().iter().sum();
            assert!((sum / pca.total_variance - 1.0).abs() < 1e-12);
            assert!(pca.eigenvalues_vec().windows(2).all(|w| w[0] >= w[1]));
        }
    }

    #[test]
    fn the_count_for_a_fraction_is_the_first_that_reaches_it() {
        let cumulative = [0.5, 0.8, 0.95, 0.99, 1.0];
        assert_eq!(components_for(&cumulative, 0.5), 1);
        assert_eq!(components_for(&cumulative, 0.9), 3);
        assert_eq!(components_for(&cumulative, 0.95), 3);
        assert_eq!(components_for(&cumulative, 0.96), 4);
        assert_eq!(components_for(&[0.3, 0.6], 0.99), 2);
    }

    #[test]
    fn the_largest_entry_of_each_component_is_positive() {
        let pca = fit(&random(20, 8), Divisor::N, Method::Covariance).unwrap();
        for row in 0..pca.rank() {
            let component = pca.components.get(row);
            let largest = component.abs().argmax(0, false).int64_value(&[]);
            assert!(component.double_value(&[largest]) > 0.0);
        }
    }

    #[test]
    fn the_first_of_tied_largest_entries_decides_the_sign() {
        let rows =
            Tensor::from_slice(&[0.5, -0.5, 0.1, -0.5, 0.5, 0.1, 0.0, 0.0, 0.0, 0.1, -0.7, 0.7, -0.2, 0.9, -0.95])
                .view([5, 3]);
        let flipped = largest_entry_positive(rows.copy());
        let expected = [0.5, -0.5, 0.1, 0.5, -0.5, -0.1, 0.0, 0.0, 0.0, -0.1, 0.7, -0.7, 0.2, -0.9, 0.95];
        assert_eq!(Vec::<f64>::try_from(flipped.flatten(0, -1)).unwrap(), expected);
    }

    #[test]
    fn fewer_than_two_rows_is_an_error() {
        assert!(fit(&random(1, 4), Divisor::N, Method::Auto).is_err());
    }
}
