//! Reads PyTorch `torch.save(state_dict)` files without Python.
//!
//! Owns the two on-disk formats torch has used: the zip archive (torch ≥ 1.6:
//! `*/data.pkl` plus one raw file per storage under `*/data/`) and the legacy
//! stream (magic number, protocol, sys-info pickles, the state_dict pickle, the
//! storage keys, then each storage's element count and bytes). Only the small
//! pickle subset that a state_dict uses is interpreted: a dict of
//! `_rebuild_tensor_v2` calls over persistent storage ids. It knows nothing
//! about models.
//!
//! Files are untrusted input. The reader never panics and never allocates
//! past what the file holds: every malformed input is a one-line error that
//! names the file and what is wrong.
//! - Pickle globals are checked against an allow-list ([`allowed_global`]) as
//!   soon as GLOBAL, STACK_GLOBAL or INST names them, so `posix.system`,
//!   `builtins.eval` or `subprocess.Popen` are refused by name whatever
//!   REDUCE, BUILD, NEWOBJ or OBJ would do with them. Nothing is ever called.
//! - Pickle values share their contents (`Rc`), so memo GET and DUP cost one
//!   node; containers are copied on write, and every node and copied element
//!   is charged to a budget of `2 × bytes read + 4096` nodes, so DUP/memo
//!   chains cannot grow memory beyond a fixed multiple of the pickle. Nesting
//!   is capped at [`MAX_DEPTH`] (dropping deep values recurses).
//! - Storage sizes claimed by legacy headers, zip directory entries and
//!   persistent ids are checked against the bytes really present before any
//!   buffer is made; deflated zip entries are read through `take(limit)` with
//!   the limit from the file's size; a tensor view must lie inside its
//!   storage, and copies made for non-contiguous views share the same
//!   file-size budget.
//! - The zip container is parsed here (end record, zip64 records, central
//!   directory, local headers, CRC-32), borrowing stored entries straight from
//!   the file's bytes.
//!
//! Why not the `pytorch-reader` crate (burn's reader, checked at 0.22.1 and
//! 0.23.0-pre.1, see `notes/pth-reader.md`): it reads both formats and did
//! not panic on corrupted files, but it keeps any call it does not interpret
//! as an opaque object "so a checkpoint carrying numpy scalars still loads",
//! i.e. it does not refuse `posix.system` & co. by name (a state_dict holding
//! one loads, minus that entry), and it pulls zip 9 (a second zip major next to
//! our zip 2), tar and serde into the build.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::rc::Rc;
use tch::{Kind, Tensor};

/// How deeply pickle containers may nest (a state_dict needs about 4).
const MAX_DEPTH: u32 = 64;
/// Most dimensions a tensor may have.
const MAX_DIMS: usize = 32;
/// Longest integer (LONG1/LONG4) accepted, in bytes: an i128.
const MAX_INT_BYTES: usize = 16;
/// Longest error detail kept, in characters.
const MAX_MESSAGE: usize = 300;

/// Reads every tensor of a state_dict file, in file order.
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let source = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| anyhow!("{}: cannot read the file: {e}", one_line(&source)))?;
    read_state_dict_bytes(&bytes, &source)
}

/// Reads every tensor of a state_dict held in memory; `source` names it in
/// errors (a path, or a description). Errors are one line:
/// `SOURCE: not a readable PyTorch state_dict: WHAT`.
pub fn read_state_dict_bytes(bytes: &[u8], source: &str) -> Result<Vec<(String, Tensor)>> {
    let parsed = if bytes.starts_with(b"PK") { read_zip(bytes) } else { read_legacy(bytes) };
    parsed.map_err(|e| {
        anyhow!("{}: not a readable PyTorch state_dict: {}", one_line(source), one_line(&format!("{e:#}")))
    })
}

/// `text` with control characters escaped and its length capped.
fn one_line(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_MESSAGE {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A file-controlled string for an error message: quoted, escaped, short.
fn quoted(text: &str) -> String {
    let short: String = text.chars().take(60).collect();
    let tail = if short.len() < text.len() { "…" } else { "" };
    format!("{short:?}{tail}")
}

// ---------------------------------------------------------------------------
// Containers
// ---------------------------------------------------------------------------

fn read_zip(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let zip = Zip::parse(bytes)?;
    let pickles: Vec<&[u8]> = zip.names().filter(|n| n.ends_with(b"data.pkl")).collect();
    let pickle_name = match pickles.as_slice() {
        [one] => *one,
        [] => bail!("zip archive has no data.pkl"),
        _ => bail!("zip archive has {} data.pkl entries", pickles.len()),
    };
    let prefix = pickle_name.strip_suffix(b"data.pkl").context("data.pkl name")?;
    let mut budget = Budget::new(bytes.len());
    let entry_name = |tail: &[u8]| [prefix, tail].concat();
    if let Some(order) = zip.entry(&entry_name(b"byteorder")) {
        let order = zip.read(order, &mut budget)?;
        if order.as_ref() != b"little" {
            bail!("byteorder is {}, only little-endian files are supported", quoted(&String::from_utf8_lossy(&order)));
        }
    }
    let pickle_entry = zip.entry(pickle_name).context("data.pkl vanished")?;
    let pickle = zip.read(pickle_entry, &mut budget)?;
    let (root, _, storages) = Unpickler::new(&pickle).run()?;
    let tensors = state_dict_entries(&root)?;
    let mut data = HashMap::new();
    for key in referenced_storages(&tensors) {
        let info = storage_info(&storages, &key)?;
        let name = entry_name(format!("data/{key}").as_bytes());
        let entry =
            zip.entry(&name).with_context(|| format!("storage {} is missing from the archive", quoted(&key)))?;
        if entry.size != info.byte_len {
            bail!(
                "storage {}: the archive holds {} bytes, the pickle says {} elements of {} bytes",
                quoted(&key),
                entry.size,
                info.numel,
                element_size(info.kind)
            );
        }
        data.insert(key, zip.read(entry, &mut budget)?);
    }
    let storage_bytes = |key: &str| data.get(key).map(|d| d.as_ref());
    build_tensors(&tensors, &storages, storage_bytes, bytes.len())
}

/// torch's magic number for the legacy format.
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL: i128 = 1001;

fn read_legacy(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let mut offset = 0;
    let mut next_pickle = |what: &str| -> Result<(Value, HashMap<Rc<str>, StorageInfo>)> {
        let rest = bytes.get(offset..).context("file ends early")?;
        let (value, used, storages) = Unpickler::new(rest).run().with_context(|| format!("{what} pickle"))?;
        offset += used;
        Ok((value, storages))
    };
    match next_pickle("first") {
        Ok((Value::Int(LEGACY_MAGIC), _)) => {}
        // A pickle, or a refused global: say what is wrong with it.
        Err(e) if bytes.first() == Some(&0x80) || e.root_cause().is::<Refused>() => return Err(e),
        _ => bail!("unknown file format (neither a zip archive nor the legacy PyTorch magic number)"),
    }
    match next_pickle("protocol")?.0 {
        Value::Int(LEGACY_PROTOCOL) => {}
        other => bail!("unsupported legacy protocol version {}", other.describe()),
    }
    check_sys_info(&next_pickle("sys_info")?.0)?;
    let (root, storages) = next_pickle("state_dict")?;
    let keys = match next_pickle("storage key list")?.0 {
        Value::List(keys) => keys,
        other => bail!("storage key list is a {}, not a list", other.describe()),
    };
    let tensors = state_dict_entries(&root)?;
    let mut data: HashMap<Rc<str>, &[u8]> = HashMap::new();
    for key in keys.items.iter() {
        let Value::Str(key) = key else { bail!("storage key list holds a {}", key.describe()) };
        let info =
            storage_info(&storages, key).with_context(|| format!("storage key {} in the key list", quoted(key)))?;
        let header = read_u64(bytes, offset).with_context(|| format!("storage {}", quoted(key)))?;
        offset += 8;
        let remaining = bytes.len() - offset.min(bytes.len());
        if header != info.numel {
            bail!("storage {}: header says {header} elements, the pickle says {}", quoted(key), info.numel);
        }
        if info.byte_len > remaining as u64 {
            bail!(
                "storage {} claims {} elements ({} bytes) but only {remaining} bytes remain",
                quoted(key),
                info.numel,
                info.byte_len
            );
        }
        let len = info.byte_len as usize; // ≤ remaining, a usize
        let slice = bytes.get(offset..offset + len).context("storage runs past the end of the file")?;
        if data.insert(key.clone(), slice).is_some() {
            bail!("storage key {} is listed twice", quoted(key));
        }
        offset += len;
    }
    if offset != bytes.len() {
        bail!("{} unexpected bytes after the last storage", bytes.len() - offset.min(bytes.len()));
    }
    let storage_bytes = |key: &str| data.get(key).copied();
    build_tensors(&tensors, &storages, storage_bytes, bytes.len())
}

fn read_u64(bytes: &[u8], at: usize) -> Result<u64> {
    let raw = bytes.get(at..).and_then(|rest| rest.first_chunk::<8>()).context("file ends inside a storage header")?;
    Ok(u64::from_le_bytes(*raw))
}

/// The legacy sys_info dict: refuses big-endian files.
fn check_sys_info(info: &Value) -> Result<()> {
    let Value::Dict(items) = info else { bail!("sys_info is a {}, not a dict", info.describe()) };
    for pair in items.items.chunks(2) {
        if let [Value::Str(key), value] = pair {
            if key.as_ref() == "little_endian" && !matches!(value, Value::Bool(true)) {
                bail!("the file was written on a big-endian machine, which is not supported");
            }
        }
    }
    Ok(())
}

/// Caps the bytes materialized from a file at the file's own length: one
/// budget for inflated zip entries, one for storages, one for copies of
/// non-contiguous views. Zip entries may overlap, so this is what bounds a
/// crafted archive whose entries all claim the same bytes.
struct Budget {
    left: u64,
}

impl Budget {
    fn new(file_len: usize) -> Self {
        Self { left: file_len as u64 }
    }
    fn spend(&mut self, bytes: u64, what: impl FnOnce() -> String) -> Result<()> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => bail!("{} needs {bytes} bytes, more than the file holds", what()),
        }
    }
}

// ---------------------------------------------------------------------------
// Zip
// ---------------------------------------------------------------------------

/// One entry of a zip's central directory, checked against the file.
#[derive(Clone, Copy)]
struct ZipEntry<'a> {
    name: &'a [u8],
    /// The entry's stored (possibly deflated) bytes, inside the file.
    raw: &'a [u8],
    deflated: bool,
    /// Uncompressed size, as claimed by the directory.
    size: u64,
    crc: u32,
}

/// The zip subset torch writes: one disk, stored or deflated entries, with or
/// without zip64 records. Entries borrow from the file's bytes.
struct Zip<'a> {
    entries: Vec<ZipEntry<'a>>,
    by_name: HashMap<&'a [u8], usize>,
}

fn le<const N: usize>(bytes: &[u8], at: usize, what: &str) -> Result<[u8; N]> {
    bytes.get(at..).and_then(|rest| rest.first_chunk::<N>()).copied().with_context(|| format!("{what} is cut short"))
}
fn le16(bytes: &[u8], at: usize, what: &str) -> Result<u64> {
    Ok(u16::from_le_bytes(le(bytes, at, what)?).into())
}
fn le32(bytes: &[u8], at: usize, what: &str) -> Result<u64> {
    Ok(u32::from_le_bytes(le(bytes, at, what)?).into())
}
fn le64(bytes: &[u8], at: usize, what: &str) -> Result<u64> {
    Ok(u64::from_le_bytes(le(bytes, at, what)?))
}
/// `bytes[at..at + len]` with the bounds checked in u64.
fn span<'a>(bytes: &'a [u8], at: u64, len: u64, what: &str) -> Result<&'a [u8]> {
    let end = at.checked_add(len).filter(|&end| end <= bytes.len() as u64);
    match end {
        Some(end) => Ok(&bytes[at as usize..end as usize]),
        None => bail!("{what} ({len} bytes at offset {at}) runs past the end of the file ({} bytes)", bytes.len()),
    }
}

const EOCD_SIG: &[u8; 4] = b"PK\x05\x06";
const EOCD64_LOCATOR_SIG: &[u8; 4] = b"PK\x06\x07";
const EOCD64_SIG: &[u8; 4] = b"PK\x06\x06";
const CENTRAL_SIG: &[u8; 4] = b"PK\x01\x02";
const LOCAL_SIG: &[u8; 4] = b"PK\x03\x04";

impl<'a> Zip<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self> {
        // The end record is the last 22 bytes plus a comment of up to 64 KiB.
        let search_from = bytes.len().saturating_sub(22 + 0xffff);
        let eocd = (search_from..=bytes.len().saturating_sub(22))
            .rev()
            .find(|&at| bytes.get(at..at + 4) == Some(EOCD_SIG) && at + 22 <= bytes.len())
            .context("no zip end-of-central-directory record")?;
        let what = "zip end record";
        let comment_len = le16(bytes, eocd + 20, what)?;
        if eocd as u64 + 22 + comment_len != bytes.len() as u64 {
            bail!("zip end record does not end the file (truncated or trailing bytes)");
        }
        if le16(bytes, eocd + 4, what)? != 0 || le16(bytes, eocd + 6, what)? != 0 {
            bail!("multi-disk zip archives are not supported");
        }
        let mut count = le16(bytes, eocd + 10, what)?;
        let on_disk = le16(bytes, eocd + 8, what)?;
        let mut dir_size = le32(bytes, eocd + 12, what)?;
        let mut dir_offset = le32(bytes, eocd + 16, what)?;
        let mut dir_end = eocd as u64;
        let saturated = count == 0xffff || dir_size == 0xffff_ffff || dir_offset == 0xffff_ffff;
        // zip64 (torch writes it even for small files): a locator just before the
        // end record points at the zip64 end record, whose values are authoritative.
        let locator = eocd.checked_sub(20).filter(|&l| bytes.get(l..l + 4) == Some(EOCD64_LOCATOR_SIG));
        if saturated && locator.is_none() {
            bail!("zip64 locator missing");
        }
        if let Some(locator) = locator {
            let record = le64(bytes, locator + 8, "zip64 locator")?;
            let record = usize::try_from(record)
                .ok()
                .filter(|&r| r.checked_add(56).is_some_and(|end| end <= locator))
                .context("bad zip64 end offset")?;
            if bytes.get(record..record + 4) != Some(EOCD64_SIG) {
                bail!("zip64 end record missing");
            }
            let what = "zip64 end record";
            count = le64(bytes, record + 32, what)?;
            if le64(bytes, record + 24, what)? != count {
                bail!("multi-disk zip archives are not supported");
            }
            dir_size = le64(bytes, record + 40, what)?;
            dir_offset = le64(bytes, record + 48, what)?;
            dir_end = record as u64;
        } else if on_disk != count {
            bail!("multi-disk zip archives are not supported");
        }
        if dir_offset.checked_add(dir_size) != Some(dir_end) {
            bail!("zip central directory ({dir_size} bytes at {dir_offset}) does not end where the end record starts");
        }
        // Each directory entry takes at least 46 bytes: refuse impossible counts before allocating.
        if count.saturating_mul(46) > dir_size {
            bail!("zip claims {count} entries in a {dir_size}-byte directory");
        }
        let directory = span(bytes, dir_offset, dir_size, "zip central directory")?;
        let mut entries = Vec::with_capacity(count as usize); // ≤ dir_size / 46
        let mut by_name = HashMap::with_capacity(count as usize);
        let mut at = 0usize;
        for index in 0..count {
            let what = "zip directory entry";
            if directory.get(at..at + 4) != Some(CENTRAL_SIG) {
                bail!("zip directory entry {index} has a bad signature");
            }
            let flags = le16(directory, at + 8, what)?;
            let method = le16(directory, at + 10, what)?;
            let crc = le32(directory, at + 16, what)? as u32;
            let mut packed = le32(directory, at + 20, what)?;
            let mut size = le32(directory, at + 24, what)?;
            let name_len = le16(directory, at + 28, what)? as usize;
            let extra_len = le16(directory, at + 30, what)? as usize;
            let comment_len = le16(directory, at + 32, what)? as usize;
            let mut local = le32(directory, at + 42, what)?;
            let name = directory.get(at + 46..at + 46 + name_len).context("zip entry name is cut short")?;
            let extra = directory
                .get(at + 46 + name_len..at + 46 + name_len + extra_len)
                .context("zip entry extra field is cut short")?;
            at += 46 + name_len + extra_len + comment_len;
            let entry_name = String::from_utf8_lossy(name);
            if flags & 1 != 0 {
                bail!("zip entry {} is encrypted", quoted(&entry_name));
            }
            // zip64 extended information: the 64-bit values whose 32-bit fields are saturated.
            let mut field = 0;
            while field + 4 <= extra.len() {
                let id = le16(extra, field, "zip extra field")?;
                let len = le16(extra, field + 2, "zip extra field")? as usize;
                let body = extra.get(field + 4..field + 4 + len).context("zip extra field is cut short")?;
                if id == 1 {
                    let mut values = body.chunks_exact(8).map(|c| c.first_chunk::<8>().map(|a| u64::from_le_bytes(*a)));
                    for target in [&mut size, &mut packed, &mut local] {
                        if *target == 0xffff_ffff {
                            *target = values.next().flatten().context("zip64 extra field is cut short")?;
                        }
                    }
                }
                field += 4 + len;
            }
            let what = "zip local header";
            let local_at = usize::try_from(local)
                .ok()
                .filter(|&l| l < bytes.len())
                .context("zip local header offset past the end")?;
            if bytes.get(local_at..local_at + 4) != Some(LOCAL_SIG) {
                bail!("zip entry {}: no local header at offset {local}", quoted(&entry_name));
            }
            let local_name_len = le16(bytes, local_at + 26, what)?;
            let local_extra_len = le16(bytes, local_at + 28, what)?;
            let local_name = span(bytes, local as u64 + 30, local_name_len, "zip local name")?;
            if local_name != name {
                bail!("zip entry {}: local header names another file", quoted(&entry_name));
            }
            let start = local + 30 + local_name_len + local_extra_len;
            let raw = span(bytes, start, packed, &format!("zip entry {}", quoted(&entry_name)))?;
            let deflated = match method {
                0 if packed == size => false,
                0 => bail!("zip entry {}: stored with {packed} bytes but claims {size}", quoted(&entry_name)),
                8 => true,
                other => bail!("zip entry {}: unsupported compression method {other}", quoted(&entry_name)),
            };
            if by_name.insert(name, entries.len()).is_some() {
                bail!("zip holds two entries named {}", quoted(&entry_name));
            }
            entries.push(ZipEntry { name, raw, deflated, size, crc });
        }
        Ok(Self { entries, by_name })
    }

    fn names(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.entries.iter().map(|e| e.name)
    }

    fn entry(&self, name: &[u8]) -> Option<ZipEntry<'a>> {
        self.by_name.get(name).and_then(|&i| self.entries.get(i)).copied()
    }

    /// An entry's bytes, borrowed when stored; inflation is bounded by the
    /// claimed size and by `budget`. Checks the CRC-32 (torch writes 0 when
    /// CRCs are switched off; 0 is then taken as "not recorded").
    fn read(&self, entry: ZipEntry<'a>, budget: &mut Budget) -> Result<std::borrow::Cow<'a, [u8]>> {
        let name = || quoted(&String::from_utf8_lossy(entry.name));
        let data = if entry.deflated {
            budget.spend(entry.size, || format!("zip entry {}", name()))?;
            let mut out = Vec::new();
            out.try_reserve_exact(entry.size as usize).map_err(|_| anyhow!("zip entry {} is too large", name()))?;
            flate2::read::DeflateDecoder::new(entry.raw)
                .take(entry.size + 1)
                .read_to_end(&mut out)
                .with_context(|| format!("zip entry {}: bad deflate data", name()))?;
            if out.len() as u64 != entry.size {
                bail!("zip entry {} inflates to {} bytes, the directory says {}", name(), out.len(), entry.size);
            }
            std::borrow::Cow::Owned(out)
        } else {
            std::borrow::Cow::Borrowed(entry.raw)
        };
        if entry.crc != 0 {
            let mut crc = flate2::Crc::new();
            crc.update(&data);
            if crc.sum() != entry.crc {
                bail!("zip entry {} fails its CRC-32 check (corrupted)", name());
            }
        }
        Ok(data)
    }
}

// ---------------------------------------------------------------------------
// Tensors
// ---------------------------------------------------------------------------

/// A storage named by a persistent id: its element type and element count.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StorageInfo {
    kind: Kind,
    numel: u64,
    /// `numel × element size`, checked.
    byte_len: u64,
}

#[derive(Debug)]
struct StorageRef {
    key: Rc<str>,
    info: StorageInfo,
}

#[derive(Debug)]
struct TensorSpec {
    storage: Rc<StorageRef>,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

fn storage_info(storages: &HashMap<Rc<str>, StorageInfo>, key: &str) -> Result<StorageInfo> {
    storages.get(key).copied().with_context(|| format!("storage {} is not named by the pickle", quoted(key)))
}

fn storage_kind(name: &str) -> Option<Kind> {
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

fn element_size(kind: Kind) -> u64 {
    match kind {
        Kind::Double | Kind::Int64 => 8,
        Kind::Float | Kind::Int => 4,
        Kind::Half | Kind::BFloat16 | Kind::Int16 => 2,
        _ => 1,
    }
}

/// The root dict's entries: every key a string, every value a tensor, no
/// name twice.
fn state_dict_entries(root: &Value) -> Result<Vec<(Rc<str>, Rc<TensorSpec>)>> {
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
fn referenced_storages(tensors: &[(Rc<str>, Rc<TensorSpec>)]) -> Vec<Rc<str>> {
    let mut seen = HashSet::new();
    tensors.iter().map(|(_, spec)| spec.storage.key.clone()).filter(|key| seen.insert(key.clone())).collect()
}

/// Makes the tensors: one tensor per storage (a copy of its bytes), each
/// entry a strided view of it, copied only when the view is not contiguous.
/// Storages, and copies of non-contiguous views, are each capped at
/// `file_len` bytes in all.
fn build_tensors<'d>(
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
fn check_view(spec: &TensorSpec) -> Result<u64> {
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

// ---------------------------------------------------------------------------
// Pickle
// ---------------------------------------------------------------------------

/// The pickle globals a state_dict may name.
#[derive(Debug, Clone, Copy)]
enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    Storage(Kind),
}

/// The allow-list: `collections.OrderedDict`, torch's tensor and parameter
/// rebuild functions, and the typed storage classes (`torch.FloatStorage`…).
fn allowed_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => Some(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch", storage) => storage_kind(storage).map(Global::Storage),
        _ => None,
    }
}

/// The error for a global outside the allow-list.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refusing pickle global {}", self.0)
    }
}

impl std::error::Error for Refused {}

fn global(module: &str, name: &str) -> Result<Value> {
    match allowed_global(module, name) {
        Some(g) => Ok(Value::Global(g)),
        None => Err(Refused(one_line(&format!("{}.{}", short(module), short(name)))).into()),
    }
}

fn short(text: &str) -> String {
    if text.chars().count() > 80 {
        text.chars().take(80).chain(['…']).collect()
    } else {
        text.to_owned()
    }
}

/// A value on the pickle stack; only what state_dicts contain. Containers
/// share their contents and are copied on write.
#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i128),
    Float,
    Str(Rc<str>),
    Bytes,
    Tuple(Seq),
    List(Seq),
    /// Keys and values alternate.
    Dict(Seq),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorSpec>),
}

#[derive(Debug, Clone, Default)]
struct Seq(Rc<SeqData>);

#[derive(Debug, Clone, Default)]
struct SeqData {
    /// 1 + the deepest item's depth.
    depth: u32,
    items: Vec<Value>,
}

impl std::ops::Deref for Seq {
    type Target = SeqData;
    fn deref(&self) -> &SeqData {
        &self.0
    }
}

impl Seq {
    fn new(items: Vec<Value>) -> Result<Self> {
        let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            bail!("pickle nests containers deeper than {MAX_DEPTH}");
        }
        Ok(Seq(Rc::new(SeqData { depth, items })))
    }
}

impl Value {
    fn depth(&self) -> u32 {
        match self {
            Value::Tuple(s) | Value::List(s) | Value::Dict(s) => s.depth,
            _ => 0,
        }
    }
    fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("bool {b}"),
            Value::Int(i) => format!("integer {i}"),
            Value::Float => "float".into(),
            Value::Str(s) => format!("string {}", quoted(s)),
            Value::Bytes => "bytes".into(),
            Value::Tuple(s) => format!("tuple of {}", s.items.len()),
            Value::List(s) => format!("list of {}", s.items.len()),
            Value::Dict(s) => format!("dict of {}", s.items.len() / 2),
            Value::Global(g) => format!("global {g:?}"),
            Value::Storage(_) => "storage".into(),
            Value::Tensor(_) => "tensor".into(),
        }
    }
    fn as_int(&self) -> Result<i64> {
        match self {
            Value::Int(i) => i64::try_from(*i).map_err(|_| anyhow!("integer {i} is out of range")),
            other => bail!("expected an integer, found a {}", other.describe()),
        }
    }
    fn as_ints(&self) -> Result<Vec<i64>> {
        match self {
            Value::Tuple(s) | Value::List(s) if s.items.len() <= MAX_DIMS => {
                s.items.iter().map(Value::as_int).collect()
            }
            Value::Tuple(s) | Value::List(s) => bail!("{} dimensions, at most {MAX_DIMS} are supported", s.items.len()),
            other => bail!("expected a tuple of integers, found a {}", other.describe()),
        }
    }
}

/// The pickle virtual machine, restricted to the opcodes of protocols 0 to 5
/// that `torch.save` emits (and a few neighbours).
struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack lengths at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Values made or copied so far (the memory budget).
    nodes: usize,
    storages: HashMap<Rc<str>, StorageInfo>,
}

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            nodes: 0,
            storages: HashMap::new(),
        }
    }

    /// Charges `n` values to the budget: at most 2 per byte read, plus 4096.
    fn charge(&mut self, n: usize) -> Result<()> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > 2 * self.pos + 4096 {
            bail!("pickle builds more values than its size allows (memo or DUP bomb?) at byte {}", self.pos);
        }
        Ok(())
    }
    fn push(&mut self, value: Value) -> Result<()> {
        self.charge(1)?;
        self.stack.push(value);
        Ok(())
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.data.len());
        let Some(end) = end else { bail!("pickle ends early (wants {n} bytes at byte {})", self.pos) };
        let slice = &self.data[self.pos..end];
        self.pos = end;
        Ok(slice)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.take(N)?.first_chunk::<N>().copied().context("pickle ends early")
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn len32(&mut self) -> Result<usize> {
        Ok(self.u32()? as usize)
    }
    fn len64(&mut self) -> Result<usize> {
        usize::try_from(self.u64()?).context("length out of range")
    }
    fn line(&mut self) -> Result<&'a str> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == b'\n').context("pickle ends inside a text line")?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| anyhow!("pickle text line is not UTF-8"))
    }
    fn text(&mut self, n: usize) -> Result<Value> {
        let raw = self.take(n)?;
        let s = std::str::from_utf8(raw).map_err(|_| anyhow!("pickle string at byte {} is not UTF-8", self.pos))?;
        Ok(Value::Str(Rc::from(s)))
    }
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }
    fn pop(&mut self) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            bail!("pickle stack underflow at byte {}", self.pos);
        }
        self.stack.pop().context("pickle stack underflow")
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().context("pickle MARK missing")?;
        if mark > self.stack.len() {
            bail!("pickle MARK past the stack");
        }
        Ok(self.stack.split_off(mark))
    }
    fn top(&self) -> Result<&Value> {
        if self.stack.len() <= self.floor() {
            bail!("pickle stack empty at byte {}", self.pos);
        }
        self.stack.last().context("pickle stack empty")
    }
    /// Appends to the list or dict on top of the stack (copying it first
    /// when it is shared, charged per element).
    fn extend_top(&mut self, new_items: Vec<Value>, want_dict: bool) -> Result<()> {
        if want_dict && !new_items.len().is_multiple_of(2) {
            bail!("SETITEMS with an odd number of items");
        }
        let shared = match self.top()? {
            Value::List(s) if !want_dict => Rc::strong_count(&s.0) > 1,
            Value::Dict(s) if want_dict => Rc::strong_count(&s.0) > 1,
            other => {
                bail!("cannot add items to a {} at byte {}", other.describe(), self.pos)
            }
        };
        let top_len = match self.stack.last() {
            Some(Value::List(s) | Value::Dict(s)) => s.items.len(),
            _ => 0,
        };
        self.charge(new_items.len() + if shared { top_len } else { 0 })?;
        let depth = 1 + new_items.iter().map(Value::depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            bail!("pickle nests containers deeper than {MAX_DEPTH}");
        }
        if let Some(Value::List(s) | Value::Dict(s)) = self.stack.last_mut() {
            let data = Rc::make_mut(&mut s.0);
            data.depth = data.depth.max(depth);
            data.items.extend(new_items);
        }
        Ok(())
    }
    fn memo_put(&mut self, idx: u32) -> Result<()> {
        let top = self.top()?.clone();
        self.charge(1)?;
        self.memo.insert(idx, top);
        Ok(())
    }
    fn memo_get(&mut self, idx: u32) -> Result<()> {
        let value = self.memo.get(&idx).with_context(|| format!("pickle memo {idx} is not set"))?.clone();
        self.push(value)
    }
    fn int(&mut self, v: i128) -> Result<()> {
        self.push(Value::Int(v))
    }
    fn long(&mut self, n: usize) -> Result<()> {
        if n > MAX_INT_BYTES {
            bail!("pickle integer of {n} bytes is too long");
        }
        let raw = self.take(n)?;
        let fill = if raw.last().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 };
        let mut full = [fill; MAX_INT_BYTES];
        full[..n].copy_from_slice(raw);
        self.int(i128::from_le_bytes(full))
    }
    fn text_int(&mut self) -> Result<()> {
        let line = self.line()?;
        let v = match line {
            "00" => return self.push(Value::Bool(false)),
            "01" => return self.push(Value::Bool(true)),
            other => other
                .trim_end_matches('L')
                .parse::<i128>()
                .map_err(|_| anyhow!("bad pickle integer {}", quoted(other)))?,
        };
        self.int(v)
    }
    /// Builds an instance of `class` from `args` (NEWOBJ, OBJ, INST).
    fn instantiate(&mut self, class: Value, args: Vec<Value>) -> Result<()> {
        match class {
            Value::Global(Global::OrderedDict) if args.is_empty() => self.push(Value::Dict(Seq::default())),
            other => bail!("cannot instantiate {} at byte {}", other.describe(), self.pos),
        }
    }

    /// Runs to STOP; returns the value, the bytes consumed and the storages
    /// named by persistent ids.
    fn run(mut self) -> Result<(Value, usize, HashMap<Rc<str>, StorageInfo>)> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        bail!("unsupported pickle protocol {proto}");
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a hint only
                }
                b'.' => {
                    let value = self.pop()?;
                    if !self.marks.is_empty() {
                        bail!("pickle stops inside a MARK");
                    }
                    return Ok((value, self.pos, self.storages));
                }
                b'(' => {
                    self.charge(1)?;
                    self.marks.push(self.stack.len());
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'0' => {
                    self.pop()?;
                }
                b'2' => {
                    let top = self.top()?.clone();
                    self.push(top)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.int(v.into())?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.int(v.into())?;
                }
                b'M' => {
                    let v = self.u16()?;
                    self.int(v.into())?;
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    self.long(n)?;
                }
                0x8b => {
                    let n = self.len32()?;
                    self.long(n)?;
                }
                b'I' | b'L' => self.text_int()?,
                b'G' => {
                    self.take(8)?;
                    self.push(Value::Float)?;
                }
                b'F' => {
                    self.line()?;
                    self.push(Value::Float)?;
                }
                b'X' => {
                    let n = self.len32()?;
                    let s = self.text(n)?;
                    self.push(s)?;
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.text(n)?;
                    self.push(s)?;
                }
                0x8d => {
                    let n = self.len64()?;
                    let s = self.text(n)?;
                    self.push(s)?;
                }
                b'S' | b'V' => {
                    // STRING / UNICODE (protocol 0): a text line; only its length matters.
                    let line = self.line()?;
                    self.push(Value::Str(Rc::from(line)))?;
                }
                b'T' | b'B' => {
                    let n = self.len32()?;
                    self.take(n)?;
                    self.push(Value::Bytes)?;
                }
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    self.take(n)?;
                    self.push(Value::Bytes)?;
                }
                0x8e => {
                    let n = self.len64()?;
                    self.take(n)?;
                    self.push(Value::Bytes)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = global(module, name)?;
                    self.push(g)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let g = match (&module, &name) {
                        (Value::Str(module), Value::Str(name)) => global(module, name)?,
                        _ => bail!("STACK_GLOBAL of a {} and a {}", module.describe(), name.describe()),
                    };
                    self.push(g)?;
                }
                b'i' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let class = global(module, name)?;
                    let args = self.pop_mark()?;
                    self.instantiate(class, args)?;
                }
                b'o' => {
                    let mut items = self.pop_mark()?.into_iter();
                    let class = items.next().context("OBJ without a class")?;
                    self.instantiate(class, items.collect())?;
                }
                0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let args = match args {
                        Value::Tuple(s) => s.items.clone(),
                        other => bail!("NEWOBJ arguments are a {}", other.describe()),
                    };
                    self.instantiate(class, args)?;
                }
                b')' => self.push(Value::Tuple(Seq::default()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    let seq = Seq::new(items)?;
                    self.push(Value::Tuple(seq))?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let at = self.stack.len().checked_sub(n).filter(|&at| at >= self.floor());
                    let at = at.context("pickle stack underflow")?;
                    let items = self.stack.split_off(at);
                    let seq = Seq::new(items)?;
                    self.push(Value::Tuple(seq))?;
                }
                b']' => self.push(Value::List(Seq::default()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    let seq = Seq::new(items)?;
                    self.push(Value::List(seq))?;
                }
                b'a' => {
                    let item = self.pop()?;
                    self.extend_top(vec![item], false)?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, false)?;
                }
                b'}' => self.push(Value::Dict(Seq::default()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    if !items.len().is_multiple_of(2) {
                        bail!("DICT with an odd number of items");
                    }
                    let seq = Seq::new(items)?;
                    self.push(Value::Dict(seq))?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.extend_top(vec![key, value], true)?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, true)?;
                }
                b'p' => {
                    let idx = self.line()?.parse().map_err(|_| anyhow!("bad PUT index"))?;
                    self.memo_put(idx)?;
                }
                b'q' => {
                    let idx = self.u8()?.into();
                    self.memo_put(idx)?;
                }
                b'r' => {
                    let idx = self.u32()?;
                    self.memo_put(idx)?;
                }
                0x94 => {
                    let idx = u32::try_from(self.memo.len()).context("memo full")?;
                    self.memo_put(idx)?;
                }
                b'g' => {
                    let idx = self.line()?.parse().map_err(|_| anyhow!("bad GET index"))?;
                    self.memo_get(idx)?;
                }
                b'h' => {
                    let idx = self.u8()?.into();
                    self.memo_get(idx)?;
                }
                b'j' => {
                    let idx = self.u32()?;
                    self.memo_get(idx)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_storage(pid)?;
                    self.push(storage)?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let value = reduce(func, args)?;
                    self.push(value)?;
                }
                b'b' => {
                    // BUILD: the state (e.g. a state_dict's `_metadata`) is not needed;
                    // every global in it has passed the allow-list.
                    self.pop()?;
                    self.top()?;
                }
                other => bail!("unsupported pickle opcode 0x{other:02x} at byte {}", self.pos - 1),
            }
        }
    }

    /// A persistent id: ("storage", storage type, key, location, numel[, view]).
    fn persistent_storage(&mut self, pid: Value) -> Result<Value> {
        let Value::Tuple(fields) = &pid else { bail!("persistent id is a {}, not a tuple", pid.describe()) };
        let (kind, key, numel) = match fields.items.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(kind)), Value::Str(key), _location, numel, rest @ ..]
                if tag.as_ref() == "storage" && rest.iter().all(|v| matches!(v, Value::None)) =>
            {
                (*kind, key.clone(), numel.as_int()?)
            }
            _ => bail!("unsupported persistent id ({})", pid.describe()),
        };
        if key.len() > 64 {
            bail!("storage key {} is too long", quoted(&key));
        }
        let numel = u64::try_from(numel).map_err(|_| anyhow!("storage {} has {numel} elements", quoted(&key)))?;
        let byte_len = numel.checked_mul(element_size(kind)).context("storage size overflows")?;
        let info = StorageInfo { kind, numel, byte_len };
        if let Some(seen) = self.storages.insert(key.clone(), info) {
            if seen != info {
                bail!("storage {} is named with two different types or sizes", quoted(&key));
            }
        }
        Ok(Value::Storage(Rc::new(StorageRef { key, info })))
    }
}

fn reduce(func: Value, args: Value) -> Result<Value> {
    let Value::Global(global) = func else { bail!("REDUCE calls a {}, not a global", func.describe()) };
    let Value::Tuple(args) = args else { bail!("REDUCE arguments are a {}, not a tuple", args.describe()) };
    match global {
        Global::OrderedDict if args.items.is_empty() => Ok(Value::Dict(Seq::default())),
        Global::RebuildTensor => {
            let [storage, offset, size, stride, ..] = args.items.as_slice() else {
                bail!("_rebuild_tensor with {} arguments", args.items.len())
            };
            let Value::Storage(storage) = storage else { bail!("tensor over a {}, not a storage", storage.describe()) };
            let size = size.as_ints()?;
            let stride = stride.as_ints()?;
            if size.len() != stride.len() {
                bail!("tensor with {} sizes and {} strides", size.len(), stride.len());
            }
            Ok(Value::Tensor(Rc::new(TensorSpec { storage: storage.clone(), offset: offset.as_int()?, size, stride })))
        }
        Global::RebuildParameter => match args.items.first() {
            Some(tensor @ Value::Tensor(_)) => Ok(tensor.clone()),
            _ => bail!("_rebuild_parameter without a tensor"),
        },
        other => bail!("unsupported call to {other:?} with {} arguments", args.items.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// `BINUNICODE s`.
    fn s(text: &str) -> Vec<u8> {
        let mut out = vec![b'X'];
        out.extend((text.len() as u32).to_le_bytes());
        out.extend(text.as_bytes());
        out
    }

    /// (name, storage key, storage numel, size, stride, offset).
    type Entry<'a> = (&'a str, &'a str, u8, &'a [u8], &'a [u8], u8);

    /// A state_dict pickle `{name: tensor(size, stride, offset) over storage key of numel floats}`.
    fn state_dict_pickle(entries: &[Entry]) -> Vec<u8> {
        let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)R(".to_vec();
        for (name, key, numel, size, stride, offset) in entries {
            p.extend(s(name));
            p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            p.extend(s("storage"));
            p.extend(b"ctorch\nFloatStorage\n");
            p.extend(s(key));
            p.extend(s("cpu"));
            p.extend([b'K', *numel, b'N', b't', b'Q', b'K', *offset, b'(']);
            for d in *size {
                p.extend([b'K', *d]);
            }
            p.extend(b"t(");
            for d in *stride {
                p.extend([b'K', *d]);
            }
            p.extend(b"t\x89h\x00)RtR");
        }
        p.extend(b"u.");
        p
    }

    fn legacy_file(root: &[u8], keys: &[&str], storages: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut f = b"\x80\x02\x8a\x0a".to_vec();
        f.extend(&LEGACY_MAGIC.to_le_bytes()[..10]);
        f.extend(b".\x80\x02M\xe9\x03.\x80\x02}(");
        f.extend(s("little_endian"));
        f.extend(b"\x88u.");
        f.extend(root);
        f.extend(b"\x80\x02(");
        for key in keys {
            f.extend(s(key));
        }
        f.extend(b"l.");
        for (numel, data) in storages {
            f.extend(numel.to_le_bytes());
            f.extend(data);
        }
        f
    }

    fn floats(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn one_tensor_file() -> Vec<u8> {
        let root = state_dict_pickle(&[("w", "0", 3, &[3], &[1], 0)]);
        legacy_file(&root, &["0"], &[(3, floats(&[1.0, 2.0, 3.0]))])
    }

    fn error(bytes: &[u8]) -> String {
        match read_state_dict_bytes(bytes, "test.pth") {
            Ok(tensors) => panic!("read {} tensors, expected an error", tensors.len()),
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(msg.starts_with("test.pth: "), "{msg}");
                assert!(!msg.contains('\n'), "{msg}");
                msg
            }
        }
    }

    fn assert_error(bytes: &[u8], wanted: &str) {
        let msg = error(bytes);
        assert!(msg.contains(wanted), "{msg:?} lacks {wanted:?}");
    }

    #[test]
    fn reads_a_legacy_file() {
        let tensors = read_state_dict_bytes(&one_tensor_file(), "test.pth").unwrap();
        assert_eq!(tensors.len(), 1);
        assert_eq!(tensors[0].0, "w");
        assert_eq!(Vec::<f32>::try_from(&tensors[0].1).unwrap(), [1.0, 2.0, 3.0]);
    }

    #[test]
    fn reads_strided_views_and_shared_storages() {
        // a = storage[1..3], b = storage viewed as 2x2 transposed.
        let root = state_dict_pickle(&[("a", "0", 4, &[2], &[1], 1), ("b", "0", 4, &[2, 2], &[1, 2], 0)]);
        let file = legacy_file(&root, &["0"], &[(4, floats(&[1.0, 2.0, 3.0, 4.0]))]);
        let tensors = read_state_dict_bytes(&file, "test.pth").unwrap();
        assert_eq!(Vec::<f32>::try_from(&tensors[0].1).unwrap(), [2.0, 3.0]);
        assert_eq!(Vec::<f32>::try_from(&tensors[1].1.flatten(0, 1)).unwrap(), [1.0, 3.0, 2.0, 4.0]);
    }

    #[test]
    fn legacy_storage_defects_are_errors() {
        let root = state_dict_pickle(&[("w", "0", 3, &[3], &[1], 0)]);
        let data = floats(&[1.0, 2.0, 3.0]);
        // A key the tensors use but the key list lacks (used to panic).
        assert_error(&legacy_file(&root, &[], &[]), "storage \"0\" is missing from the file");
        // A listed key no persistent id named (used to guess 4 bytes per element).
        assert_error(&legacy_file(&root, &["0", "9"], &[(3, data.clone()), (1, vec![0; 4])]), "\"9\"");
        assert_error(&legacy_file(&root, &["0", "0"], &[(3, data.clone()), (3, data.clone())]), "listed twice");
        // Inflated and inconsistent element counts, refused before allocating.
        let root_big = state_dict_pickle(&[("w", "0", 255, &[3], &[1], 0)]);
        assert_error(&legacy_file(&root_big, &["0"], &[(255, data.clone())]), "claims 255 elements");
        assert_error(&legacy_file(&root, &["0"], &[(u64::MAX, data.clone())]), "header says");
        let mut file = legacy_file(&root, &["0"], &[(3, data.clone())]);
        file.extend(b"junk");
        assert_error(&file, "4 unexpected bytes");
        let file = one_tensor_file();
        for cut in [0, 5, 40, file.len() - 20, file.len() - 1] {
            error(&file[..cut]);
        }
    }

    #[test]
    fn views_outside_their_storage_are_errors() {
        let data = floats(&[1.0, 2.0, 3.0]);
        let root = state_dict_pickle(&[("w", "0", 3, &[4], &[1], 0)]);
        assert_error(&legacy_file(&root, &["0"], &[(3, data.clone())]), "needs 4 elements");
        let root = state_dict_pickle(&[("w", "0", 3, &[2], &[1], 2)]);
        assert_error(&legacy_file(&root, &["0"], &[(3, data.clone())]), "needs 4 elements");
        let root = state_dict_pickle(&[("w", "0", 3, &[2], &[], 0)]);
        assert_error(&legacy_file(&root, &["0"], &[(3, data.clone())]), "1 sizes and 0 strides");
        // A zero stride expands a 1-element storage: the copy would exceed the file.
        let root = state_dict_pickle(&[("w", "0", 3, &[255, 255, 255], &[0, 0, 0], 0)]);
        assert_error(&legacy_file(&root, &["0"], &[(3, data.clone())]), "more than the file holds");
        // Empty tensors are fine whatever their other sizes.
        let root = state_dict_pickle(&[("w", "0", 3, &[0, 255], &[255, 1], 0)]);
        let tensors = read_state_dict_bytes(&legacy_file(&root, &["0"], &[(3, data)]), "t").unwrap();
        assert_eq!(tensors[0].1.size(), [0, 255]);
    }

    #[test]
    fn disallowed_globals_are_refused_by_name() {
        let cases: [(&[u8], &str); 7] = [
            (b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00echo\x85R.", "posix.system"),
            (b"\x80\x02cos\nsystem\n(X\x04\x00\x00\x00echotR.", "os.system"),
            (b"\x80\x02c__builtin__\neval\nX\x03\x00\x00\x001+1\x85R.", "__builtin__.eval"),
            (b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93X\x01\x00\x00\x001\x85R.", "builtins.eval"),
            (b"\x80\x04\x8c\nsubprocess\x8c\x05Popen\x93)R}b.", "subprocess.Popen"),
            (b"(S'echo pwned'\nios\nsystem\n.", "os.system"),
            (b"(X\x04\x00\x00\x00trueisubprocess\nPopen\n.", "subprocess.Popen"),
        ];
        for (pickle, name) in cases {
            assert_error(pickle, &format!("refusing pickle global {name}"));
            // Also as the state_dict pickle of a legacy file.
            let file = legacy_file(pickle, &[], &[]);
            assert_error(&file, &format!("refusing pickle global {name}"));
        }
        // A refused global inside BUILD state of the root dict.
        let mut root = b"\x80\x02ccollections\nOrderedDict\n)R}(".to_vec();
        root.extend(s("_metadata"));
        root.extend(b"cposix\nsystem\nX\x01\x00\x00\x00x\x85Rub.");
        assert_error(&legacy_file(&root, &[], &[]), "refusing pickle global posix.system");
    }

    #[test]
    fn integers_are_bounded_not_truncated() {
        // LONG1 of 17 bytes used to overflow a shift.
        let mut p = b"\x80\x02\x8a\x11".to_vec();
        p.extend([0xff; 17]);
        p.push(b'.');
        assert_error(&legacy_file(&p, &[], &[]), "integer of 17 bytes is too long");
        // A 16-byte LONG1 as a size used to be truncated to i64 by `as`.
        let mut root = state_dict_pickle(&[("w", "0", 3, &[3], &[1], 0)]);
        let at = root.windows(3).position(|w| w == b"K\x03t").unwrap();
        let mut big = vec![0x8a, 16];
        big.extend((1i128 << 64 | 3).to_le_bytes());
        root.splice(at..at + 2, big);
        assert_error(&legacy_file(&root, &["0"], &[(3, floats(&[1.0, 2.0, 3.0]))]), "out of range");
    }

    #[test]
    fn memo_and_dup_bombs_stay_small() {
        // Each step makes a list of two copies of the previous one: 2^50 leaves
        // if copied, 50 nodes when shared.
        let mut p = b"\x80\x02]q\x00".to_vec();
        for _ in 0..50 {
            p.extend(b"(h\x00h\x00lq\x00");
        }
        p.push(b'.');
        assert_error(&legacy_file(&p, &[], &[]), "not a dict");
        // Deeper nesting is refused before dropping it could overflow the stack.
        let mut p = b"\x80\x02]q\x00".to_vec();
        for _ in 0..100 {
            p.extend(b"(h\x00h\x00lq\x00");
        }
        p.push(b'.');
        assert_error(&legacy_file(&p, &[], &[]), "deeper than 64");
        let mut p = b"\x80\x02".to_vec();
        p.extend([b'('; 200_000]);
        p.extend([b'l'; 200_000]);
        p.push(b'.');
        assert_error(&legacy_file(&p, &[], &[]), "deeper than 64");
        // Appending to a memoized (shared) list copies it: charged per element.
        let mut p = b"\x80\x02]q\x00".to_vec();
        for _ in 0..20_000 {
            p.extend(b"h\x00K\x01aq\x00");
        }
        p.push(b'.');
        assert_error(&legacy_file(&p, &[], &[]), "more values than its size allows");
        // DUP chains.
        let mut p = b"\x80\x02]".to_vec();
        p.extend([b'2'; 100_000]);
        p.push(b'.');
        assert_error(&legacy_file(&p, &[], &[]), "not a dict");
    }

    #[test]
    fn malformed_pickles_are_errors() {
        for p in [
            &b""[..],
            b"\x80\x02.",
            b"\x80\x02(.",
            b"\x80\x02a.",
            b"\x80\x02K\x01a.",
            b"\x80\x02)K\x01a.",
            b"\x80\x02h\x05.",
            b"\x80\x02(K\x01K\x02K\x03d.",
            b"\x80\x02}K\x01s.",
            b"\x80\x02\xff.",
            b"\x80\x09}.",
            b"\x80\x02X\xff\xff\xff\xff.",
            b"\x80\x02X\x02\x00\x00\x00\xff\xfe.",
            b"\x80\x02(K\x01\x85.",
            b"\x80\x02K\x01(0.",
            b"\x80\x02)Q.",
        ] {
            error(p);
        }
    }

    fn zip_file(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data, deflate) in entries {
            let method = if *deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
            zip.start_file(*name, zip::write::SimpleFileOptions::default().compression_method(method)).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    #[test]
    fn reads_zip_archives_stored_or_deflated() {
        let pickle = state_dict_pickle(&[("w", "0", 3, &[3], &[1], 0)]);
        let data = floats(&[1.0, 2.0, 3.0]);
        for deflate in [false, true] {
            let file = zip_file(&[
                ("m/data.pkl", &pickle, deflate),
                ("m/byteorder", b"little", false),
                ("m/data/0", &data, deflate),
            ]);
            let tensors = read_state_dict_bytes(&file, "test.pth").unwrap();
            assert_eq!(Vec::<f32>::try_from(&tensors[0].1).unwrap(), [1.0, 2.0, 3.0]);
        }
        let file =
            zip_file(&[("m/data.pkl", &pickle, false), ("m/byteorder", b"big", false), ("m/data/0", &data, false)]);
        assert_error(&file, "only little-endian");
        let file = zip_file(&[("m/data.pkl", &pickle, false)]);
        assert_error(&file, "storage \"0\" is missing from the archive");
        let file = zip_file(&[("m/data.pkl", &pickle, false), ("m/data/0", &data[..8], false)]);
        assert_error(&file, "the archive holds 8 bytes");
        let evil = b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00echo\x85R.";
        assert_error(&zip_file(&[("m/data.pkl", evil, true)]), "refusing pickle global posix.system");
        // A deflate bomb: 1 MB of zeros claimed as 16 bytes, and a size claim past the file.
        let zeros = vec![0u8; 1 << 20];
        let mut file = zip_file(&[("m/data.pkl", &zeros, true)]);
        let cd = file.windows(4).rposition(|w| w == CENTRAL_SIG).unwrap();
        file[cd + 24..cd + 28].copy_from_slice(&16u32.to_le_bytes());
        assert_error(&file, "inflates to 17 bytes");
        file[cd + 24..cd + 28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_error(&file, "more than the file holds");
    }
}
