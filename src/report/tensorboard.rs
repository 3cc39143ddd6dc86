//! TensorBoard event files: scalars per epoch, written next to `metrics.csv`
//! so that `tensorboard --logdir RUNS` shows the curves while a run trains.
//!
//! The format is small enough to write by hand (no protobuf compiler, no
//! generated code): a TFRecord file of `Event` protobufs.
//! - Record framing: `u64` payload length (little-endian), masked CRC-32C
//!   of those 8 bytes (`u32` LE), the payload, masked CRC-32C of the payload.
//! - `Event { wall_time: double = 1, step: int64 = 2, file_version: string = 3,
//!   summary: Summary = 5 }`; the first event of a file carries `wall_time`
//!   and `file_version = "brain.Event:2"`, each later one a wall time, a
//!   step and a summary with one value.
//! - `Summary { repeated Value value = 1 }`, `Value { tag: string = 1,
//!   simple_value: float = 2 }`.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `file_version` of the first event, as TensorFlow and PyTorch write it.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Appends scalar events to a new `events.out.tfevents.<unix seconds>.<hostname>`
/// file in a run folder.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use tchlab::report::tensorboard::EventWriter;
/// let mut events = EventWriter::create(std::path::Path::new("runs/ants-bees"))?;
/// for epoch in 0..25 {
///     // … train and validate one epoch …
///     events.scalar("loss/train", 0.42, epoch)?;
///     events.scalar("accuracy/val", 0.93, epoch)?;
///     events.flush()?; // a running `tensorboard --logdir runs` shows it now
/// }
/// # Ok(())
/// # }
/// ```
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Creates a new events file in `run_dir` (created if missing) and writes
    /// the file-version event. An existing file is never overwritten: when
    /// the name is taken (two writers in the same second), `.1`, `.2`, …
    /// is appended (TensorBoard reads any file whose name contains `tfevents`).
    pub fn create(run_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(run_dir).with_context(|| format!("creating the run folder {}", run_dir.display()))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let base = format!("events.out.tfevents.{}.{}", now.as_secs(), hostname());
        let (path, file) = (0..100)
            .find_map(|n| {
                let name = if n == 0 { base.clone() } else { format!("{base}.{n}") };
                let path = run_dir.join(name);
                match OpenOptions::new().write(true).create_new(true).open(&path) {
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => None,
                    result => Some(result.map(|file| (path, file))),
                }
            })
            .unwrap_or_else(|| Err(std::io::Error::new(ErrorKind::AlreadyExists, "100 files of that name exist")))
            .with_context(|| format!("creating a TensorBoard events file {}", run_dir.join(&base).display()))?;
        let mut writer = EventWriter { path, file: BufWriter::new(file) };
        let mut event = Vec::new();
        put_double(&mut event, 1, now.as_secs_f64());
        put_bytes(&mut event, 3, FILE_VERSION.as_bytes());
        writer.record(&event)?;
        writer.flush()?;
        Ok(writer)
    }

    /// The events file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one scalar (stored as a 32-bit float, as TensorBoard keeps
    /// `simple_value`) at `step`. Buffered: call [`EventWriter::flush`] to
    /// make it visible.
    pub fn scalar(&mut self, tag: &str, value: f64, step: i64) -> Result<()> {
        let mut summary_value = Vec::new();
        put_bytes(&mut summary_value, 1, tag.as_bytes());
        put_float(&mut summary_value, 2, value as f32);
        let mut summary = Vec::new();
        put_bytes(&mut summary, 1, &summary_value);
        let mut event = Vec::new();
        put_double(&mut event, 1, unix_seconds());
        put_varint_field(&mut event, 2, step as u64);
        put_bytes(&mut event, 5, &summary);
        self.record(&event)
    }

    /// Hands everything written so far to the OS, so that a running
    /// TensorBoard sees it (call after each epoch).
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().with_context(|| format!("writing {}", self.path.display()))
    }

    fn record(&mut self, payload: &[u8]) -> Result<()> {
        let length = (payload.len() as u64).to_le_bytes();
        let mut framed = Vec::with_capacity(payload.len() + 16);
        framed.extend_from_slice(&length);
        framed.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
        framed.extend_from_slice(payload);
        framed.extend_from_slice(&masked_crc32c(payload).to_le_bytes());
        self.file.write_all(&framed).with_context(|| format!("writing {}", self.path.display()))
    }
}

/// An events file made when the first scalars come (so a run that fails
/// before its first epoch leaves none).
pub struct LazyEvents {
    dir: PathBuf,
    writer: Option<EventWriter>,
}

impl LazyEvents {
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned(), writer: None }
    }

    /// Writes `values` at `step` and flushes them.
    pub fn scalars(&mut self, step: i64, values: &[(String, f64)]) -> Result<()> {
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => self.writer.insert(EventWriter::create(&self.dir)?),
        };
        for (tag, value) in values {
            writer.scalar(tag, *value, step)?;
        }
        writer.flush()
    }
}

/// CRC-32C (Castagnoli) of `data`, masked as TFRecord stores it.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn unix_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// The host name, as in TensorFlow's file names; `localhost` when unknown.
fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it on success (we also stop at the end if it does not).
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let name = String::from_utf8_lossy(&buffer[..end]);
    // A file name: keep it to characters that are safe everywhere.
    let name: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    if ok && !name.is_empty() {
        name
    } else {
        "localhost".to_owned()
    }
}

// Protobuf wire format: a key is `(field << 3) | wire_type`, as a varint.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    put_varint(out, u64::from(field) << 3);
    put_varint(out, value);
}

fn put_double(out: &mut Vec<u8>, field: u32, value: f64) {
    put_varint(out, (u64::from(field) << 3) | 1);
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_float(out: &mut Vec<u8>, field: u32, value: f32) {
    put_varint(out, (u64::from(field) << 3) | 5);
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC-32C of "123456789" is 0xE3069283 (RFC 3720's check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // ((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xa282ead8, mod 2^32.
        assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
    }

    #[test]
    fn varints_and_fields_encode_as_protobuf_does() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        let mut out = Vec::new();
        put_varint_field(&mut out, 2, -1i64 as u64);
        assert_eq!(out, [0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        let mut out = Vec::new();
        put_bytes(&mut out, 3, b"ab");
        assert_eq!(out, [0x1a, 2, b'a', b'b']);
        let mut out = Vec::new();
        put_float(&mut out, 2, 1.0);
        assert_eq!(out, [0x15, 0, 0, 0x80, 0x3f]);
        let mut out = Vec::new();
        put_double(&mut out, 1, 1.0);
        assert_eq!(out, [0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
    }

    #[test]
    fn hostname_is_a_plain_file_name_part() {
        let name = hostname();
        assert!(!name.is_empty() && !name.contains('/'), "{name:?}");
    }
}
