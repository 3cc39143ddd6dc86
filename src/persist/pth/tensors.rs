//! State_dict entries to tensors: storages by key, views checked to lie
//! inside their storage, copies charged to the file-size budget.

use super::*;

/// A storage named by a persistent id: its element type and element count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct StorageInfo {
    pub(super) kind: Kind,
    pub(super) numel: u64,
    /// `numel × element size`, checked.
    pub(super) byte_len: u64,
}

#[derive(Debug)]
pub(super) struct StorageRef {
    pub(super) key: Rc<str>,
    pub(super) info: StorageInfo,
}

#[derive(Debug)]
pub(super) struct TensorSpec {
    pub(super) storage: Rc<StorageRef>,
    pub(super) offset: i64,
    pub(super) size: Vec<i64>,
    pub(super) stride: Vec<i64>,
}

pub(super) fn storage_info(storages: &HashMap<Rc<str>, StorageInfo>, key: &str) -> Result<StorageInfo> {
    storages.get(key).copied().with_context(|| format!("storage {} is not named by the pickle", quoted(key)))
}

pub(super) fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

pub(super) fn element_size(kind: Kind) -> u64 {
    match kind {
        Kind::Double | Kind::Int64 => 8,
        Kind::Float | Kind::Int => 4,
        Kind::Half | Kind::BFloat16 | Kind::Int16 => 2,
        _ => 1,
    }
}

/// The root dict's entries: every key a string, every value a tensor, no
/// name twice.
pub(super) fn state_dict_entries(root: &Value) -> Result<Vec<(Rc<str>, Rc<TensorSpec>)>> {
    let Value::Dict(items) = root else {
        bail!("the file holds no state_dict (top-level object is a {}, not a dict)", root.describe())
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for pair in items.items.chunks(2) {
        match pair {
            [Value::Str(name), Value::Tensor(spec)] => {
                if !seen.insert(name.clone()) {
                    bail!("tensor {} appears twice", quoted(name));
                }
                out.push((name.clone(), spec.clone()));
            }
            [Value::Str(name), other] => bail!("entry {} holds a {}, not a tensor", quoted(name), other.describe()),
            [key, _] => bail!("state_dict key is a {}, not a string", key.describe()),
            _ => bail!("state_dict has an odd number of items"),
        }
    }
    Ok(out)
}

/// Storage keys in order of first use.
pub(super) fn referenced_storages(tensors: &[(Rc<str>, Rc<TensorSpec>)]) -> Vec<Rc<str>> {
    let mut seen = HashSet::new();
    tensors.iter().map(|(_, spec)| spec.storage.key.clone()).filter(|key| seen.insert(key.clone())).collect()
}

/// Makes the tensors: one tensor per storage (a copy of its bytes), each
/// entry a strided view of it, copied only when the view is not contiguous.
/// Storages, and copies of non-contiguous views, are each capped at
/// `file_len` bytes in all.
pub(super) fn build_tensors<'d>(
    tensors: &[(Rc<str>, Rc<TensorSpec>)],
    storages: &HashMap<Rc<str>, StorageInfo>,
    storage_bytes: impl Fn(&str) -> Option<&'d [u8]>,
    file_len: usize,
) -> Result<Vec<(String, Tensor)>> {
    let mut storage_budget = Budget::new(file_len);
    let mut copy_budget = Budget::new(file_len);
    let mut flat: HashMap<Rc<str>, Tensor> = HashMap::new();
    let mut out = Vec::with_capacity(tensors.len());
    for (name, spec) in tensors {
        let key = &spec.storage.key;
        let info = spec.storage.info;
        if storage_info(storages, key)? != info {
            bail!("storage {} is named with two different types or sizes", quoted(key));
        }
        if !flat.contains_key(key) {
            let data = storage_bytes(key).with_context(|| {
                format!("tensor {}: storage {} is missing from the file", quoted(name), quoted(key))
            })?;
            // Tensor::f_from_data_size reads numel × element-size bytes from `data`
            // without checking its length: this equality is what keeps it in bounds.
            if data.len() as u64 != info.byte_len {
                bail!("storage {} holds {} bytes, expected {}", quoted(key), data.len(), info.byte_len);
            }
            if info.kind == Kind::Bool && data.iter().any(|&b| b > 1) {
                bail!("bool storage {} holds values other than 0 and 1", quoted(key));
            }
            storage_budget.spend(info.byte_len, || format!("storage {}", quoted(key)))?;
            let numel = i64::try_from(info.numel).context("storage too large")?;
            let tensor = Tensor::f_from_data_size(data, &[numel], info.kind)
                .map_err(|e| anyhow!("storage {}: {e}", quoted(key)))?;
            flat.insert(key.clone(), tensor);
        }
        let storage = flat.get(key).context("storage tensor vanished")?;
        let numel = check_view(spec).with_context(|| format!("tensor {}", quoted(name)))?;
        let view = storage
            .f_as_strided(&spec.size, &spec.stride, spec.offset)
            .map_err(|e| anyhow!("tensor {}: {}", quoted(name), one_line(&e.to_string())))?;
        let tensor = if view.is_contiguous() {
            view
        } else {
            let bytes = numel.saturating_mul(element_size(info.kind));
            copy_budget.spend(bytes, || format!("tensor {}", quoted(name)))?;
            view.f_contiguous().map_err(|e| anyhow!("tensor {}: {}", quoted(name), one_line(&e.to_string())))?
        };
        out.push((name.to_string(), tensor));
    }
    Ok(out)
}

/// Checks that a view lies inside its storage; returns its element count.
pub(super) fn check_view(spec: &TensorSpec) -> Result<u64> {
    let storage_numel = spec.storage.info.numel;
    let offset = u64::try_from(spec.offset).context("negative storage offset")?;
    if offset > storage_numel {
        bail!("storage offset {offset} is past the storage's {storage_numel} elements");
    }
    let mut numel: u64 = 1;
    let mut last: u64 = offset;
    for (&size, &stride) in spec.size.iter().zip(&spec.stride) {
        let size = u64::try_from(size).context("negative size")?;
        let stride = u64::try_from(stride).context("negative stride")?;
        numel = numel.checked_mul(size).filter(|&n| n <= i64::MAX as u64).context("shape overflows")?;
        if size > 0 {
            last = (size - 1).checked_mul(stride).and_then(|s| s.checked_add(last)).context("strides overflow")?;
        }
    }
    if numel > 0 && last >= storage_numel {
        bail!(
            "shape {:?} with strides {:?} needs {} elements, the storage holds {storage_numel}",
            spec.size,
            spec.stride,
            last + 1
        );
    }
    Ok(numel)
}
