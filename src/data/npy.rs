//! Reads NumPy `.npy` arrays of numbers (uint8, int/uint 16/32/64, float
//! 32/64, either byte order, C or Fortran order) into an f64 tensor in C
//! order. The header is parsed as data (a literal dict, never evaluated),
//! and the shape it claims is checked against the file's length before
//! anything is allocated. It reads arrays; what they mean is the caller's.

use anyhow::{Context, Result};
use std::io::Read;
use std::path::Path;
use tch::{Kind, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";
/// numpy's own default limit on the header it will parse.
const MAX_HEADER_BYTES: u64 = 10_000;

/// An array read from a `.npy` file: C-ordered f64 values and the shape.
pub struct NpyArray {
    pub values: Tensor,
    pub shape: Vec<i64>,
    /// The element type as the header names it (`<f8`, `|u1`, …).
    pub dtype: String,
}

/// The element types read, by their numpy kind and size.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Element {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl Element {
    fn size(self) -> usize {
        match self {
            Element::U8 | Element::I8 => 1,
            Element::I16 | Element::U16 => 2,
            Element::I32 | Element::U32 | Element::F32 => 4,
            Element::I64 | Element::U64 | Element::F64 => 8,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Element::F32 | Element::F64)
    }

    /// The libtorch kind holding this element in this machine's byte
    /// order; `None` for the unsigned kinds libtorch has no arithmetic for.
    fn libtorch_kind(self) -> Option<Kind> {
        match self {
            Element::U8 => Some(Kind::Uint8),
            Element::I8 => Some(Kind::Int8),
            Element::I16 => Some(Kind::Int16),
            Element::I32 => Some(Kind::Int),
            Element::I64 => Some(Kind::Int64),
            Element::F32 => Some(Kind::Float),
            Element::F64 => Some(Kind::Double),
            Element::U16 | Element::U32 | Element::U64 => None,
        }
    }

    fn value(self, bytes: &[u8], big_endian: bool) -> f64 {
        let mut word = [0u8; 8];
        let n = self.size();
        word[..n].copy_from_slice(&bytes[..n]);
        if big_endian {
            word[..n].reverse();
        }
        let le = |w: &[u8; 8]| u64::from_le_bytes(*w);
        match self {
            Element::U8 => word[0] as f64,
            Element::I8 => word[0] as i8 as f64,
            Element::I16 => i16::from_le_bytes([word[0], word[1]]) as f64,
            Element::U16 => u16::from_le_bytes([word[0], word[1]]) as f64,
            Element::I32 => i32::from_le_bytes([word[0], word[1], word[2], word[3]]) as f64,
            Element::U32 => u32::from_le_bytes([word[0], word[1], word[2], word[3]]) as f64,
            Element::I64 => le(&word) as i64 as f64,
            Element::U64 => le(&word) as f64,
            Element::F32 => f32::from_le_bytes([word[0], word[1], word[2], word[3]]) as f64,
            Element::F64 => f64::from_bits(le(&word)),
        }
    }
}

/// The dtype string `descr` as (element, big-endian?), or a reason it is refused.
fn parse_descr(descr: &str) -> Result<(Element, bool), String> {
    let (order, code) = match descr.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
        _ => ('=', descr),
    };
    let element = match code {
        "u1" | "B" => Element::U8,
        "i1" | "b" => Element::I8,
        "i2" => Element::I16,
        "u2" => Element::U16,
        "i4" => Element::I32,
        "u4" => Element::U32,
        "i8" => Element::I64,
        "u8" => Element::U64,
        "f4" => Element::F32,
        "f8" => Element::F64,
        _ => return Err(format!("dtype {descr} is not read (uint8, int/uint 8-64 or float32/64 numbers only)")),
    };
    Ok((element, order == '>' && element.size() > 1))
}

/// What the header dict says.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// Parses numpy's header, a Python dict literal such as
/// `{'descr': '<f8', 'fortran_order': False, 'shape': (200, 25, 25), }`.
fn parse_header(text: &str) -> Result<Header, String> {
    let body = text.trim().strip_prefix('{').and_then(|t| t.strip_suffix('}')).ok_or("header is not a dict")?;
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    let mut rest = body.trim();
    while !rest.is_empty() {
        let (key, after_key) = quoted(rest).ok_or("header keys must be quoted strings")?;
        let after_colon =
            after_key.trim_start().strip_prefix(':').ok_or("expected ':' after a header key")?.trim_start();
        let after_value = match key {
            "descr" => {
                let (value, after) =
                    quoted(after_colon).ok_or("'descr' must be a string (structured dtypes are not read)")?;
                descr = Some(value.to_owned());
                after
            }
            "fortran_order" => {
                let (value, after) = if let Some(after) = after_colon.strip_prefix("True") {
                    (true, after)
                } else if let Some(after) = after_colon.strip_prefix("False") {
                    (false, after)
                } else {
                    return Err("'fortran_order' must be True or False".into());
                };
                fortran_order = Some(value);
                after
            }
            "shape" => {
                let inner = after_colon.strip_prefix('(').ok_or("'shape' must be a tuple")?;
                let close = inner.find(')').ok_or("'shape' tuple is not closed")?;
                let dims = inner[..close]
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(|d| {
                        d.trim_end_matches('L').parse::<u64>().map_err(|_| format!("shape entry {d:?} is not a size"))
                    })
                    .collect::<Result<Vec<u64>, String>>()?;
                shape = Some(dims);
                &inner[close + 1..]
            }
            other => return Err(format!("unknown header key {other:?}")),
        };
        let after_value = after_value.trim_start();
        rest = after_value.strip_prefix(',').unwrap_or(after_value).trim_start();
        if !rest.is_empty() && rest.len() == after_value.len() {
            return Err("expected ',' between header entries".into());
        }
    }
    Ok(Header {
        descr: descr.ok_or("header has no 'descr'")?,
        fortran_order: fortran_order.ok_or("header has no 'fortran_order'")?,
        shape: shape.ok_or("header has no 'shape'")?,
    })
}

/// A leading 'single' or "double" quoted string and what follows it.
fn quoted(text: &str) -> Option<(&str, &str)> {
    let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let end = text[1..].find(quote)? + 1;
    Some((&text[1..end], &text[end + 1..]))
}

/// Reads `path` as a `.npy` array of numbers, converted to f64.
pub fn read(path: &Path) -> Result<NpyArray> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let file_len = file.metadata().with_context(|| format!("{}: cannot read", path.display()))?.len();
    let mut reader = std::io::BufReader::new(file);
    let bad = |why: String| anyhow::anyhow!("{}: not a readable .npy array ({why})", path.display());
    let mut preamble = [0u8; 8];
    reader.read_exact(&mut preamble).map_err(|_| bad("shorter than the .npy preamble".into()))?;
    if &preamble[..6] != MAGIC {
        return Err(bad("no \\x93NUMPY magic at the start".into()));
    }
    let header_len = match preamble[6] {
        1 => {
            let mut len = [0u8; 2];
            reader.read_exact(&mut len).map_err(|_| bad("truncated header length".into()))?;
            u16::from_le_bytes(len) as u64
        }
        2 | 3 => {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len).map_err(|_| bad("truncated header length".into()))?;
            u32::from_le_bytes(len) as u64
        }
        v => return Err(bad(format!("format version {v} is not 1, 2 or 3"))),
    };
    let data_offset = 8 + if preamble[6] == 1 { 2 } else { 4 } + header_len;
    if header_len > MAX_HEADER_BYTES || data_offset > file_len {
        return Err(bad(format!("header length {header_len} is past the file or over {MAX_HEADER_BYTES} bytes")));
    }
    let mut header = vec![0u8; header_len as usize];
    reader.read_exact(&mut header).map_err(|_| bad("truncated header".into()))?;
    let header = std::str::from_utf8(&header).map_err(|_| bad("header is not text".into()))?;
    let header = parse_header(header).map_err(bad)?;
    let (element, big_endian) = parse_descr(&header.descr).map_err(bad)?;
    let count = header
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad("shape overflows".into()))?;
    let data_len = count.checked_mul(element.size() as u64).ok_or_else(|| bad("shape overflows".into()))?;
    if data_len != file_len - data_offset {
        return Err(bad(format!(
            "shape {:?} of {} needs {data_len} data bytes, the file holds {}",
            header.shape,
            header.descr,
            file_len - data_offset
        )));
    }
    let mut bytes = Vec::with_capacity(data_len as usize);
    reader.take(data_len).read_to_end(&mut bytes).with_context(|| format!("{}: cannot read", path.display()))?;
    if bytes.len() as u64 != data_len {
        return Err(bad(format!("the file changed while it was read ({} of {data_len} data bytes)", bytes.len())));
    }
    let native = element.libtorch_kind().filter(|_| big_endian == cfg!(target_endian = "big"));
    let values = match native {
        Some(kind) => Tensor::f_from_data_size(&bytes, &[count as i64], kind)
            .with_context(|| format!("{}: cannot hold {count} values", path.display()))?
            .to_kind(Kind::Double),
        None => Tensor::from_slice(
            &bytes.chunks_exact(element.size()).map(|b| element.value(b, big_endian)).collect::<Vec<f64>>(),
        ),
    };
    drop(bytes);
    if element.is_float() && values.isfinite().all().int64_value(&[]) == 0 {
        return Err(bad("holds NaN or infinite values".into()));
    }
    let shape: Vec<i64> = header.shape.iter().map(|&d| d as i64).collect();
    let values = if header.fortran_order {
        // Fortran order of shape (a, b, c) is C order of shape (c, b, a), transposed.
        let reversed: Vec<i64> = shape.iter().rev().copied().collect();
        let dims: Vec<i64> = (0..shape.len() as i64).rev().collect();
        values.reshape(&reversed).permute(&dims).contiguous()
    } else {
        values.reshape(&shape)
    };
    Ok(NpyArray { values, shape, dtype: header.descr })
}

/// Writes a C-ordered f64 array as a version 1.0 `.npy` file (for test
/// fixtures and the bench's data, not results: a plain write).
pub fn write_f64(path: &Path, values: &[f64], shape: &[usize]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let dims = if dims.len() == 1 { format!("{},", dims[0]) } else { dims.join(", ") };
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({dims}), }}");
    // Pad so that the data starts on a 64-byte boundary, ending with '\n'.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = MAGIC.to_vec();
    bytes.extend([1u8, 0]);
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in values {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy_bytes(header: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend([1u8, 0]);
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        bytes
    }

    fn read_bytes(bytes: &[u8]) -> Result<NpyArray> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        std::fs::write(&path, bytes).unwrap();
        read(&path)
    }

    fn error_of(bytes: &[u8]) -> String {
        format!("{:#}", read_bytes(bytes).err().expect("should be refused"))
    }

    #[test]
    fn uint8_c_order_is_read_with_its_shape() {
        let a = read_bytes(&npy_bytes(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }\n",
            &[0, 1, 2, 3, 4, 255],
        ))
        .unwrap();
        assert_eq!(a.shape, [2, 3]);
        assert_eq!(a.dtype, "|u1");
        assert_eq!(Vec::<f64>::try_from(a.values.flatten(0, -1)).unwrap(), [0.0, 1.0, 2.0, 3.0, 4.0, 255.0]);
    }

    #[test]
    fn fortran_order_is_transposed_into_c_order() {
        // [[1, 2, 3], [4, 5, 6]] stored column by column.
        let data: Vec<u8> = [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = read_bytes(&npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }\n", &data)).unwrap();
        assert_eq!(Vec::<f64>::try_from(a.values.flatten(0, -1)).unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn big_endian_values_are_swapped() {
        let data: Vec<u8> = [1.5f64, -2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let a = read_bytes(&npy_bytes("{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }\n", &data)).unwrap();
        assert_eq!(Vec::<f64>::try_from(a.values).unwrap(), [1.5, -2.0]);
    }

    #[test]
    fn written_files_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.npy");
        write_f64(&path, &[0.5, 1.5, 2.5, 3.5, 4.5, 5.5], &[3, 2]).unwrap();
        let a = read(&path).unwrap();
        assert_eq!(a.shape, [3, 2]);
        assert_eq!(Vec::<f64>::try_from(a.values.flatten(0, -1)).unwrap(), [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]);
        assert_eq!((std::fs::read(&path).unwrap().len() - 6 * 8) % 64, 0, "data starts on a 64-byte boundary");
    }

    #[test]
    fn a_shape_larger_than_the_file_is_refused_before_allocating() {
        let e = error_of(&npy_bytes(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 1000), }\n",
            &[0; 16],
        ));
        assert!(e.contains("needs 800000000000000 data bytes, the file holds 16"), "{e}");
        let e =
            error_of(&npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", &[]));
        assert!(e.contains("shape overflows"), "{e}");
    }

    #[test]
    fn bad_headers_get_one_line_reasons() {
        let cases: [(&[u8], &str); 8] = [
            (b"PK\x03\x04 not numpy at all", "no \\x93NUMPY magic"),
            (b"\x93NUM", "shorter than the .npy preamble"),
            (
                &npy_bytes("{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }", &[0; 16]),
                "dtype <c16 is not read",
            ),
            (
                &npy_bytes("{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1,), }", &[0; 8]),
                "structured dtypes",
            ),
            (&npy_bytes("{'descr': '<f8', 'fortran_order': False, }", &[0; 8]), "no 'shape'"),
            (&npy_bytes("{'descr': '<f8', 'fortran_order': 0, 'shape': (1,), }", &[0; 8]), "True or False"),
            (&npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }", &[0; 8]), "is not a size"),
            (&npy_bytes("__import__('os').system('x')", &[]), "header is not a dict"),
        ];
        for (bytes, expected) in cases {
            let e = error_of(bytes);
            assert!(e.contains(expected) && !e.contains('\n'), "expected {expected:?} in {e:?}");
        }
        let mut huge = MAGIC.to_vec();
        huge.extend([1u8, 0, 0xff, 0xff]);
        assert!(error_of(&huge).contains("header length 65535 is past the file"));
    }

    #[test]
    fn nan_values_are_refused() {
        let data: Vec<u8> = [1.0f64, f64::NAN].iter().flat_map(|v| v.to_le_bytes()).collect();
        let e = error_of(&npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n", &data));
        assert!(e.contains("NaN"), "{e}");
    }
}
