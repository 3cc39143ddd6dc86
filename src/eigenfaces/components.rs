//! `components.safetensors`: what an eigenfaces run saves (mean, components,
//! eigenvalues, and as its [`Card`] the face size and pixel scale), read back
//! with every tensor checked against the others, and new faces projected
//! onto it with their reconstruction error.

use super::{cpu_values, Results};
use crate::data::faces::{self, FaceSize, Faces};
use crate::pca::{Divisor, Method, Pca};
use crate::persist::card::{self, Card};
use crate::report::Reporter;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// What components.safetensors says of its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentsCard {
    pub height: u32,
    pub width: u32,
    /// The value of a white pixel in the faces: 255, or 1 for float arrays.
    pub white: f64,
    pub faces: usize,
    pub covariance_divisor: Divisor,
    pub total_variance: f64,
    pub components_95: i64,
    /// Where the faces came from.
    pub source: String,
}

/// The `format` entry of files written before the card, beside the same keys.
const LEGACY_FORMAT: &str = "tchlab-eigenfaces-1";

impl Card for ComponentsCard {
    const KIND: &'static str = "eigenfaces components";

    fn check(&self, path: &Path) -> Result<()> {
        faces::parse_size(&format!("{}x{}", self.height, self.width))
            .map_err(|e| anyhow::anyhow!("{}: image size: {e}", path.display()))?;
        Ok(())
    }

    fn legacy(metadata: &HashMap<String, String>) -> Option<HashMap<String, String>> {
        (metadata.get("format")? == LEGACY_FORMAT).then(|| metadata.clone())
    }
}

pub(super) fn save_components(pca: &Pca, faces: &Faces, summary: &Results, path: &Path) -> Result<()> {
    let saved = ComponentsCard {
        height: faces.size.height,
        width: faces.size.width,
        white: faces.white,
        faces: faces.len(),
        covariance_divisor: pca.divisor,
        total_variance: pca.total_variance,
        components_95: summary.components_95,
        source: faces.description.clone(),
    };
    card::save(path, &pca.named_tensors(), &saved)
}

/// A new face's place in a saved eigenspace.
#[derive(Debug, Serialize)]
pub struct Projection {
    pub file: PathBuf,
    /// The file's own size when it was resized to the components' size.
    pub resized_from: Option<String>,
    pub k: i64,
    pub coordinates: Vec<f64>,
    /// Mean squared error per pixel of the face rebuilt from `k` components.
    pub mse_per_pixel: f64,
    /// |face − rebuilt| / |face − mean face|.
    pub relative_error: f64,
}

/// Components saved by [`super::run`], read back with their image size.
pub struct Saved {
    pub pca: Pca,
    pub size: FaceSize,
    pub white: f64,
}

/// Reads `components.safetensors`, checking that its tensors fit together.
pub fn read_components(path: &Path) -> Result<Saved> {
    let saved: ComponentsCard = card::read(path)?;
    let size = FaceSize { height: saved.height, width: saved.width };
    let tensors = Tensor::read_safetensors(path)
        .with_context(|| format!("{}: not a readable .safetensors file", path.display()))?;
    let get = |name: &str| {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.to_kind(Kind::Double))
            .with_context(|| format!("{}: tensor {name} is missing", path.display()))
    };
    let (mean, components, eigenvalues) = (get("mean")?, get("components")?, get("eigenvalues")?);
    let d = size.pixels() as i64;
    let rank = components.size().first().copied().unwrap_or(0);
    if mean.size() != [d] || components.size() != [rank, d] || eigenvalues.size() != [rank] || rank < 1 {
        bail!(
            "{}: tensors mean {:?}, components {:?}, eigenvalues {:?} do not fit {size} images",
            path.display(),
            mean.size(),
            components.size(),
            eigenvalues.size()
        );
    }
    let pca = Pca {
        mean,
        components,
        eigenvalues,
        total_variance: saved.total_variance,
        samples: saved.faces as i64,
        divisor: saved.covariance_divisor,
        method: Method::Auto,
        eigensolver: "saved".to_string(),
    };
    Ok(Saved { pca, size, white: saved.white })
}

/// Projects image files onto the first `k` saved components (all when `None`).
pub fn project(saved: &Saved, images: &[PathBuf], k: Option<i64>) -> Result<Vec<Projection>> {
    let rank = saved.pca.rank();
    let k = k.unwrap_or(rank);
    if k > rank {
        bail!("--k {k}: the components file holds {rank} components");
    }
    images
        .iter()
        .map(|file| {
            let gray = faces::read_gray(file)?;
            let own = FaceSize { height: gray.height(), width: gray.width() };
            let scale = saved.white / 255.0;
            let values: Vec<f64> = faces::gray_values(&gray, saved.size).iter().map(|v| v * scale).collect();
            let face = Tensor::from_slice(&values).unsqueeze(0);
            let coordinates = saved.pca.project(&face, k);
            let error = saved.pca.squared_errors(&face, k).double_value(&[0]);
            let spread = (&face - &saved.pca.mean).square().sum(Kind::Double).double_value(&[]);
            Ok(Projection {
                file: file.clone(),
                resized_from: (own != saved.size).then(|| own.to_string()),
                k,
                coordinates: cpu_values(&coordinates),
                mse_per_pixel: error / values.len() as f64,
                relative_error: (error / spread.max(f64::MIN_POSITIVE)).sqrt(),
            })
        })
        .collect()
}

/// One line per face: file, errors, coordinates.
pub fn report_projections(projections: &[Projection], size: FaceSize, reporter: &dyn Reporter) {
    for p in projections {
        let resized = p.resized_from.as_ref().map(|s| format!(" (resized from {s} to {size})")).unwrap_or_default();
        let coordinates: Vec<String> = p.coordinates.iter().map(|c| format!("{c:.4e}")).collect();
        reporter.line(&format!(
            "{}{resized}: k = {}, MSE per pixel {:.4e}, relative error {:.4}; coordinates {}",
            p.file.display(),
            p.k,
            p.mse_per_pixel,
            p.relative_error,
            coordinates.join(" ")
        ));
    }
}
