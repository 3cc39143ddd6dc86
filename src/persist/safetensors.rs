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
                tch::Kind::Half => ::safetensors::Dtype::F16,
                tch::Kind::BFloat16 => ::safetensors::Dtype::BF16,
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
    let (_, header) = read_header(path)?;
    match header.get("__metadata__") {
        None => Ok(HashMap::new()),
        Some(metadata) => serde_json::from_value(metadata.clone())
            .map_err(|e| not_safetensors(path, &format!("metadata is not a map of strings: {e}"))),
    }
}

/// The tensor `name` of a `.safetensors` file, read straight into its own
/// memory (`Tensor::read_safetensors` holds the whole file and a copy at
/// once; a cache of grid features is hundreds of MB). Its entry is checked
/// against the file: a known dtype, a shape whose bytes are its span, a
/// span inside the file.
pub fn read_tensor(path: &Path, name: &str) -> Result<Tensor> {
    use std::io::{Read, Seek, SeekFrom};
    let (data_start, header) = read_header(path)?;
    let entry = header.get(name).ok_or_else(|| anyhow::anyhow!("{}: no tensor {name}", path.display()))?;
    let entry: TensorEntry =
        serde_json::from_value(entry.clone()).map_err(|e| not_safetensors(path, &format!("entry {name}: {e}")))?;
    let kind = match entry.dtype.as_str() {
        "F32" => tch::Kind::Float,
        "F64" => tch::Kind::Double,
        "F16" => tch::Kind::Half,
        "BF16" => tch::Kind::BFloat16,
        "I64" => tch::Kind::Int64,
        other => bail!("{}: tensor {name} has dtype {other}, which this reader does not take", path.display()),
    };
    let [begin, end] = entry.data_offsets;
    let file_len = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    let bytes = entry.shape.iter().try_fold(kind.elt_size_in_bytes() as u64, |n, &d| n.checked_mul(d));
    if begin > end || Some(end - begin) != bytes || data_start + end > file_len {
        return Err(not_safetensors(path, &format!("tensor {name}'s bytes do not fit its shape or the file")));
    }
    let shape: Vec<i64> = entry.shape.iter().map(|&d| d as i64).collect();
    let tensor = Tensor::empty(shape.as_slice(), (kind, tch::Device::Cpu));
    if end > begin {
        let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        file.seek(SeekFrom::Start(data_start + begin)).with_context(|| format!("reading {}", path.display()))?;
        // SAFETY: `tensor` is a fresh contiguous CPU tensor of exactly
        // `end - begin` bytes (checked above), owned here and written only
        // through this slice.
        let memory = unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr() as *mut u8, (end - begin) as usize) };
        file.read_exact(memory).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(tensor)
}

/// One tensor's entry in a `.safetensors` header.
#[derive(serde::Deserialize)]
struct TensorEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// Where a `.safetensors` file's data starts, and its JSON header. Only the
/// header is read.
fn read_header(path: &Path) -> Result<(u64, serde_json::Value)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let file_len = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| not_safetensors(path, "shorter than its header length"))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER_BYTES || header_len > file_len.saturating_sub(8) {
        return Err(not_safetensors(path, "header length past the file"));
    }
    let mut header = Vec::new();
    file.take(header_len).read_to_end(&mut header).with_context(|| format!("reading {}", path.display()))?;
    let header = serde_json::from_slice(&header).map_err(|e| not_safetensors(path, &format!("header: {e}")))?;
    Ok((8 + header_len, header))
}

fn not_safetensors(path: &Path, why: &str) -> anyhow::Error {
    anyhow::anyhow!("{}: not a .safetensors file ({why})", path.display())
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

    #[test]
    fn one_tensor_reads_back_in_its_kind_and_a_truncated_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.safetensors");
        let grid = Tensor::arange(24, (tch::Kind::Float, tch::Device::Cpu)).reshape([2, 3, 4]) / 7.0;
        let tensors = [
            ("a".to_string(), Tensor::ones([5], tch::kind::FLOAT_CPU)),
            ("g".to_string(), grid.to_kind(tch::Kind::Half)),
        ];
        save(&path, &tensors, HashMap::new()).unwrap();
        let read = read_tensor(&path, "g").unwrap();
        assert_eq!((read.kind(), read.size()), (tch::Kind::Half, vec![2, 3, 4]));
        assert_eq!(read, grid.to_kind(tch::Kind::Half));
        assert!(read_tensor(&path, "missing").unwrap_err().to_string().contains("no tensor missing"));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let error = read_tensor(&path, "g").unwrap_err().to_string();
        assert!(error.contains("h.safetensors: not a .safetensors file (tensor g's bytes"), "{error}");
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
