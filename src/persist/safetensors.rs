//! `.safetensors` files of named tensors with string metadata: writing them
//! atomically and reading their metadata. What the metadata means belongs to
//! the callers: [`super::card`] for typed cards, the run state for itself.

use super::atomic::write_atomically_through;
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
            let bytes: &[u8] = if t.numel() == 0 {
                // An empty tensor's data pointer may be null, which no slice may hold.
                &[]
            } else {
                // SAFETY: `t` is a contiguous CPU tensor (made so above) that
                // outlives `views`; it holds numel × element-size bytes at data_ptr().
                unsafe {
                    std::slice::from_raw_parts(t.data_ptr() as *const u8, t.numel() * t.kind().elt_size_in_bytes())
                }
            };
            Ok((name.clone(), ::safetensors::tensor::TensorView::new(dtype, shape, bytes)?))
        })
        .collect::<Result<_>>()?;
    let metadata = Some(metadata);
    write_atomically_through(path, |tmp| {
        ::safetensors::tensor::serialize_to_file(views, &metadata, tmp)
            .with_context(|| format!("writing {}", tmp.display()))
    })
}

/// Reads the string metadata of a `.safetensors` file.
/// Only the header is read (a run state can be hundreds of MB).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let not_safetensors = |why: &str| anyhow::anyhow!("{}: not a .safetensors file ({why})", path.display());
    let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let file_len = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| not_safetensors("shorter than its header length"))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER_BYTES || header_len > file_len.saturating_sub(8) {
        return Err(not_safetensors("header length past the file"));
    }
    let mut header = Vec::new();
    file.take(header_len).read_to_end(&mut header).with_context(|| format!("reading {}", path.display()))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| not_safetensors(&format!("header: {e}")))?;
    match header.get("__metadata__") {
        None => Ok(HashMap::new()),
        Some(metadata) => serde_json::from_value(metadata.clone())
            .map_err(|e| not_safetensors(&format!("metadata is not a map of strings: {e}"))),
    }
}

/// The safetensors format's own limit on its JSON header.
const MAX_HEADER_BYTES: u64 = 100_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_read_from_the_header_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let tensors = [("w".to_string(), Tensor::ones([256, 256], (tch::Kind::Float, tch::Device::Cpu)))];
        save(&path, &tensors, HashMap::from([("arch".to_string(), "resnet18".to_string())])).unwrap();
        assert_eq!(read_metadata(&path).unwrap()["arch"], "resnet18");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..5]).unwrap();
        let error = read_metadata(&path).unwrap_err().to_string();
        assert!(error.contains("m.safetensors: not a .safetensors file"), "{error}");
    }

    /// Issue 27, defect: an empty tensor's null data pointer was made into a
    /// slice (undefined behaviour); it saves and reads back as empty.
    #[test]
    fn empty_tensors_save_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.safetensors");
        let empty = Tensor::zeros([0, 3], (tch::Kind::Float, tch::Device::Cpu));
        save(&path, &[("e".to_string(), empty)], HashMap::new()).unwrap();
        let read = crate::persist::weights::read_named_tensors(&path).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].1.size(), [0, 3]);
    }
}
