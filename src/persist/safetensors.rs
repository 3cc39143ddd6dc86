//! `.safetensors` files of named tensors with string metadata: writing them
//! atomically and reading their metadata. What the metadata means belongs to
//! the callers ([`super::model_card`], the run state).

use super::atomic::write_atomically;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;

/// Writes named tensors and string metadata to `path` atomically (a
/// temporary file in the same folder, then a rename).
pub fn save(path: &Path, tensors: &[(String, Tensor)], metadata: HashMap<String, String>) -> Result<()> {
    let cpu: Vec<(String, Tensor)> =
        tensors.iter().map(|(n, t)| (n.clone(), t.to_device(tch::Device::Cpu).contiguous())).collect();
    let views: Vec<(String, ::safetensors::tensor::TensorView)> = cpu
        .iter()
        .map(|(name, t)| {
            let dtype = match t.kind() {
                tch::Kind::Float => ::safetensors::Dtype::F32,
                tch::Kind::Double => ::safetensors::Dtype::F64,
                tch::Kind::Int64 => ::safetensors::Dtype::I64,
                other => bail!("tensor {name}: cannot save kind {other:?}"),
            };
            let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
            // SAFETY: `t` is a contiguous CPU tensor (made so above) that
            // outlives `views`; it holds numel × element-size bytes at data_ptr().
            let bytes = unsafe {
                std::slice::from_raw_parts(t.data_ptr() as *const u8, t.numel() * t.kind().elt_size_in_bytes())
            };
            Ok((name.clone(), ::safetensors::tensor::TensorView::new(dtype, shape, bytes)?))
        })
        .collect::<Result<_>>()?;
    let bytes = ::safetensors::tensor::serialize(views, &Some(metadata))?;
    write_atomically(path, &bytes)
}

/// Reads the string metadata of a `.safetensors` file.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = ::safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a .safetensors file ({e})", path.display()))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}
