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
//! - Pickle globals are checked against an allow-list (`allowed_global`) as
//!   soon as GLOBAL, STACK_GLOBAL or INST names them, so `posix.system`,
//!   `builtins.eval` or `subprocess.Popen` are refused by name whatever
//!   REDUCE, BUILD, NEWOBJ or OBJ would do with them. Nothing is ever called.
//! - Pickle values share their contents (`Rc`), so memo GET and DUP cost one
//!   node; containers are copied on write, and every node and copied element
//!   is charged to a budget of `2 × bytes read + 4096` nodes, so DUP/memo
//!   chains cannot grow memory beyond a fixed multiple of the pickle. Nesting
//!   is capped at `MAX_DEPTH` (dropping deep values recurses).
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

mod archive;
mod pickle;
mod tensors;
#[cfg(test)]
mod tests;

use archive::*;
use pickle::*;
use tensors::*;

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
