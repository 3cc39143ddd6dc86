//! Moves named tensors between files and a [`tch::nn::VarStore`]: reads
//! PyTorch `.pth` state_dicts and our `.safetensors`, copies them into a
//! model by name, and names the tensor and both shapes when they disagree.

use super::pth::read_state_dict;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use tch::nn::VarStore;
use tch::Tensor;

/// Reads a weights file: `.safetensors`, or a PyTorch `.pth`/`.pt`/`.bin` state_dict.
pub fn read_named_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.exists() {
        bail!("{}: weights file not found", path.display());
    }
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    if is_safetensors {
        Tensor::read_safetensors(path).with_context(|| format!("{}: not a readable .safetensors file", path.display()))
    } else {
        read_state_dict(path)
    }
}

/// Copies every variable of `vs` from `tensors` by name; a variable the file
/// lacks, or has with another shape, is an error naming the tensor.
pub fn load_into(vs: &mut VarStore, tensors: &[(String, Tensor)], source: &Path) -> Result<()> {
    let by_name: HashMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    // Shapes first: a checkpoint of another architecture is best explained
    // by the first tensor whose shape differs.
    for (name, var) in &variables {
        let Some(src) = by_name.get(name.as_str()) else {
            continue;
        };
        if src.size() != var.size() {
            bail!(
                "loading {}: tensor {name} has shape {:?} in the file but the model expects {:?} (weights of another architecture?)",
                source.display(),
                src.size(),
                var.size()
            );
        }
    }
    let missing: Vec<&String> =
        variables.iter().map(|(n, _)| n).filter(|n| !by_name.contains_key(n.as_str())).collect();
    if let Some(first) = missing.first() {
        bail!(
            "loading {}: {} model tensor(s) missing from the file, first {first} (weights of another architecture?)",
            source.display(),
            missing.len()
        );
    }
    tch::no_grad(|| {
        for (name, var) in &variables {
            var.shallow_clone().copy_(&by_name[name.as_str()].to_kind(var.kind()));
        }
    });
    Ok(())
}

/// Fails when the file holds tensors the model does not know (other than
/// `num_batches_tracked` counters and names starting with `ignored_prefix`).
pub fn reject_unknown(
    tensors: &[(String, Tensor)],
    known: &[String],
    ignored_prefix: Option<&str>,
    source: &Path,
) -> Result<()> {
    let unknown: Vec<&str> = tensors
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !n.ends_with("num_batches_tracked"))
        .filter(|n| ignored_prefix.is_none_or(|p| !n.starts_with(p)))
        .filter(|n| !known.iter().any(|k| k == n))
        .collect();
    if let Some(first) = unknown.first() {
        bail!(
            "loading {}: the file has {} tensor(s) this model does not, first {first} (weights of another architecture?)",
            source.display(),
            unknown.len()
        );
    }
    Ok(())
}

/// Writes named tensors and string metadata to `path` atomically (a
/// temporary file in the same folder, then a rename).
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)], metadata: HashMap<String, String>) -> Result<()> {
    let cpu: Vec<(String, Tensor)> =
        tensors.iter().map(|(n, t)| (n.clone(), t.to_device(tch::Device::Cpu).contiguous())).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = cpu
        .iter()
        .map(|(name, t)| {
            let dtype = match t.kind() {
                tch::Kind::Float => safetensors::Dtype::F32,
                tch::Kind::Double => safetensors::Dtype::F64,
                tch::Kind::Int64 => safetensors::Dtype::I64,
                other => bail!("tensor {name}: cannot save kind {other:?}"),
            };
            let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
            let bytes = unsafe {
                std::slice::from_raw_parts(t.data_ptr() as *const u8, t.numel() * t.kind().elt_size_in_bytes())
            };
            Ok((name.clone(), safetensors::tensor::TensorView::new(dtype, shape, bytes)?))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::tensor::serialize(views, &Some(metadata))?;
    write_atomically(path, &bytes)
}

/// Reads the string metadata of a `.safetensors` file.
pub fn read_safetensors_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a .safetensors file ({e})", path.display()))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Writes `bytes` to `path` through a temporary sibling and a rename, so a
/// crash never leaves a half-written file under the final name.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().unwrap_or_default().to_string_lossy()));
    let mut file = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all().with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
