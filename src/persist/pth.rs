//! Reads PyTorch `torch.save(state_dict)` files without Python.
//!
//! Owns the two on-disk formats torch has used: the zip archive (torch ≥ 1.6:
//! `*/data.pkl` plus one raw file per storage under `*/data/`) and the legacy
//! stream (magic number, protocol, sys-info pickles, the state_dict pickle, the
//! storage keys, then each storage's bytes). Only the small pickle subset that a
//! state_dict uses is interpreted: an `OrderedDict` of `_rebuild_tensor_v2`
//! calls over persistent storage ids. It knows nothing about models.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use tch::{Kind, Tensor};

/// Reads every tensor of a state_dict file, in file order.
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed = if bytes.starts_with(b"PK") { read_zip(&bytes) } else { read_legacy(&bytes) };
    parsed.with_context(|| {
        format!("{}: not a readable PyTorch state_dict (truncated or not a .pth file?)", path.display())
    })
}

fn read_zip(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))?;
    let pickle_name = (0..archive.len())
        .filter_map(|i| archive.name_for_index(i).map(str::to_owned))
        .find(|name| name.ends_with("data.pkl"))
        .context("zip archive has no data.pkl")?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_owned();
    let mut pickle = Vec::new();
    archive.by_name(&pickle_name)?.read_to_end(&mut pickle)?;
    let (root, _) = Unpickler::new(&pickle).run()?;
    let mut storage_bytes = |key: &str| -> Result<Vec<u8>> {
        let name = format!("{prefix}data/{key}");
        let mut data = Vec::new();
        archive.by_name(&name).with_context(|| format!("missing storage {name}"))?.read_to_end(&mut data)?;
        Ok(data)
    };
    let mut storages = HashMap::new();
    for key in storage_keys(&root) {
        storages.insert(key.clone(), storage_bytes(&key)?);
    }
    collect_tensors(root, &storages)
}

fn read_legacy(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let mut offset = 0;
    let mut next_pickle = || -> Result<Value> {
        let (value, used) = Unpickler::new(&bytes[offset..]).run()?;
        offset += used;
        Ok(value)
    };
    match next_pickle()? {
        Value::Int(0x1950a86a20f9469cfc6c) => {}
        _ => bail!("unknown file format (no PyTorch magic number)"),
    }
    let _protocol = next_pickle()?;
    let _sys_info = next_pickle()?;
    let root = next_pickle()?;
    let keys = match next_pickle()? {
        Value::List(keys) => keys,
        _ => bail!("storage key list missing"),
    };
    let element_sizes = storage_element_sizes(&root);
    let mut storages = HashMap::new();
    for key in keys {
        let key = key.as_str()?.to_owned();
        let numel = read_u64(bytes, offset)? as usize;
        offset += 8;
        let size = numel * element_sizes.get(&key).copied().unwrap_or(4);
        let data = bytes.get(offset..offset + size).with_context(|| format!("storage {key} is cut short"))?;
        storages.insert(key, data.to_vec());
        offset += size;
    }
    collect_tensors(root, &storages)
}

fn read_u64(bytes: &[u8], at: usize) -> Result<u64> {
    let raw = bytes.get(at..at + 8).context("file ends inside a storage header")?;
    Ok(u64::from_le_bytes(raw.try_into().unwrap()))
}

/// A value on the pickle stack; only what state_dicts contain.
#[derive(Debug, Clone)]
enum Value {
    None,
    Bool,
    Int(i128),
    Float,
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String),
    Mark,
    /// A persistent id: ("storage", dtype global, key, location, numel).
    Storage {
        kind: Kind,
        key: String,
    },
    Tensor(TensorSpec),
    /// A call we do not interpret (e.g. torch internals we do not need).
    Opaque,
}

#[derive(Debug, Clone)]
struct TensorSpec {
    storage_key: String,
    kind: Kind,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

impl Value {
    fn as_str(&self) -> Result<&str> {
        match self {
            Value::Str(s) => Ok(s),
            other => bail!("expected a string, found {other:?}"),
        }
    }
    fn as_int(&self) -> Result<i64> {
        match self {
            Value::Int(i) => Ok(*i as i64),
            other => bail!("expected an integer, found {other:?}"),
        }
    }
    fn as_ints(&self) -> Result<Vec<i64>> {
        match self {
            Value::Tuple(items) | Value::List(items) => items.iter().map(Value::as_int).collect(),
            other => bail!("expected a tuple of integers, found {other:?}"),
        }
    }
}

fn storage_kind(global: &str) -> Option<Kind> {
    let name = global.rsplit(' ').next()?;
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

fn element_size(kind: Kind) -> usize {
    match kind {
        Kind::Double | Kind::Int64 => 8,
        Kind::Float | Kind::Int => 4,
        Kind::Half | Kind::BFloat16 | Kind::Int16 => 2,
        _ => 1,
    }
}

fn tensors_of(root: &Value) -> Vec<(&str, &TensorSpec)> {
    match root {
        Value::Dict(items) => items
            .iter()
            .filter_map(|(k, v)| match (k, v) {
                (Value::Str(name), Value::Tensor(spec)) => Some((name.as_str(), spec)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn storage_keys(root: &Value) -> Vec<String> {
    let mut keys: Vec<String> = tensors_of(root).iter().map(|(_, spec)| spec.storage_key.clone()).collect();
    keys.sort();
    keys.dedup();
    keys
}

fn storage_element_sizes(root: &Value) -> HashMap<String, usize> {
    tensors_of(root).iter().map(|(_, spec)| (spec.storage_key.clone(), element_size(spec.kind))).collect()
}

fn collect_tensors(root: Value, storages: &HashMap<String, Vec<u8>>) -> Result<Vec<(String, Tensor)>> {
    if !matches!(root, Value::Dict(_)) {
        bail!("the file holds no state_dict (top-level object is not a dict)");
    }
    let mut out = Vec::new();
    for (name, spec) in tensors_of(&root) {
        let data = &storages[&spec.storage_key];
        let numel = (data.len() / element_size(spec.kind)) as i64;
        let flat = Tensor::f_from_data_size(data, &[numel], spec.kind).with_context(|| format!("tensor {name}"))?;
        let needed: i64 =
            spec.offset + spec.size.iter().zip(&spec.stride).map(|(s, st)| (s - 1).max(0) * st).sum::<i64>() + 1;
        if spec.size.iter().all(|&s| s > 0) && needed > numel {
            bail!("tensor {name}: storage holds {numel} values, shape {:?} needs {needed}", spec.size);
        }
        let tensor = flat.f_as_strided(&spec.size, &spec.stride, spec.offset)?.contiguous();
        out.push((name.to_owned(), tensor));
    }
    Ok(out)
}

/// The pickle virtual machine, restricted to the opcodes of protocol 2 to 4
/// that `torch.save` emits.
struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0, stack: Vec::new(), memo: HashMap::new() }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let slice = self.data.get(self.pos..self.pos + n).context("pickle ends early")?;
        self.pos += n;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').context("pickle ends early")?;
        self.pos += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
    fn pop(&mut self) -> Result<Value> {
        self.stack.pop().context("pickle stack underflow")
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.stack.iter().rposition(|v| matches!(v, Value::Mark)).context("pickle MARK missing")?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }
    fn top_mut(&mut self) -> Result<&mut Value> {
        self.stack.last_mut().context("pickle stack empty")
    }

    /// Runs to STOP; returns the value and the bytes consumed.
    fn run(mut self) -> Result<(Value, usize)> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'.' => return Ok((self.pop()?, self.pos)),
                b'(' => self.stack.push(Value::Mark),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool),
                0x89 => self.stack.push(Value::Bool),
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                    self.stack.push(Value::Int(v as i128));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i128));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i128));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let raw = self.take(n)?;
                    let mut v: i128 = 0;
                    for (i, b) in raw.iter().enumerate() {
                        v |= (*b as i128) << (8 * i);
                    }
                    if n > 0 && n < 16 && raw[n - 1] & 0x80 != 0 {
                        v -= 1i128 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    self.take(8)?;
                    self.stack.push(Value::Float);
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.stack.push(Value::Str(s));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.stack.push(Value::Str(s));
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.stack.push(Value::Str(s));
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.stack.push(Value::Str(s));
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(format!("{module} {name}")));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    self.stack.push(Value::Global(format!("{} {}", module.as_str()?, name.as_str()?)));
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let at = self.stack.len().checked_sub(n).context("pickle stack underflow")?;
                    let items = self.stack.split_off(at);
                    self.stack.push(Value::Tuple(items));
                }
                b']' => self.stack.push(Value::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b'a' => {
                    let item = self.pop()?;
                    if let Value::List(items) = self.top_mut()? {
                        items.push(item);
                    }
                }
                b'e' => {
                    let new_items = self.pop_mark()?;
                    if let Value::List(items) = self.top_mut()? {
                        items.extend(new_items);
                    }
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs_of(items);
                    self.stack.push(Value::Dict(pairs));
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    if let Value::Dict(items) = self.top_mut()? {
                        items.push((key, value));
                    }
                }
                b'u' => {
                    let new_items = self.pop_mark()?;
                    if let Value::Dict(items) = self.top_mut()? {
                        items.extend(pairs_of(new_items));
                    }
                }
                b'q' => {
                    let idx = self.u8()? as u32;
                    let top = self.stack.last().context("memo of empty stack")?.clone();
                    self.memo.insert(idx, top);
                }
                b'r' => {
                    let idx = self.u32()?;
                    let top = self.stack.last().context("memo of empty stack")?.clone();
                    self.memo.insert(idx, top);
                }
                0x94 => {
                    let idx = self.memo.len() as u32;
                    let top = self.stack.last().context("memo of empty stack")?.clone();
                    self.memo.insert(idx, top);
                }
                b'h' => {
                    let idx = self.u8()? as u32;
                    self.stack.push(self.memo.get(&idx).context("bad memo index")?.clone());
                }
                b'j' => {
                    let idx = self.u32()?;
                    self.stack.push(self.memo.get(&idx).context("bad memo index")?.clone());
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(persistent_storage(pid)?);
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    self.stack.push(reduce(func, args)?);
                }
                0x81 => {
                    let _args = self.pop()?;
                    let _cls = self.pop()?;
                    self.stack.push(Value::Opaque); // NEWOBJ
                }
                b'b' => {
                    self.pop()?; // BUILD: state (e.g. `_metadata`) is not needed
                }
                other => bail!("unsupported pickle opcode 0x{other:02x} at byte {}", self.pos - 1),
            }
        }
    }
}

fn pairs_of(items: Vec<Value>) -> Vec<(Value, Value)> {
    let mut iter = items.into_iter();
    let mut pairs = Vec::new();
    while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
        pairs.push((k, v));
    }
    pairs
}

fn persistent_storage(pid: Value) -> Result<Value> {
    let Value::Tuple(fields) = pid else { bail!("unexpected persistent id {pid:?}") };
    match fields.as_slice() {
        [Value::Str(tag), Value::Global(dtype), key, ..] if tag == "storage" => {
            let kind = storage_kind(dtype).with_context(|| format!("unsupported storage type {dtype}"))?;
            Ok(Value::Storage { kind, key: key.as_str()?.to_owned() })
        }
        _ => bail!("unexpected persistent id {fields:?}"),
    }
}

fn reduce(func: Value, args: Value) -> Result<Value> {
    let Value::Global(name) = &func else {
        return Ok(Value::Opaque);
    };
    let Value::Tuple(args) = args else {
        return Ok(Value::Opaque);
    };
    match name.as_str() {
        "collections OrderedDict" => Ok(Value::Dict(Vec::new())),
        "torch._utils _rebuild_tensor_v2" | "torch._utils _rebuild_tensor" => {
            let [storage, offset, size, stride, ..] = args.as_slice() else {
                bail!("_rebuild_tensor with {} arguments", args.len())
            };
            let Value::Storage { kind, key } = storage else { bail!("tensor without storage") };
            Ok(Value::Tensor(TensorSpec {
                storage_key: key.clone(),
                kind: *kind,
                offset: offset.as_int()?,
                size: size.as_ints()?,
                stride: stride.as_ints()?,
            }))
        }
        _ => Ok(Value::Opaque),
    }
}
