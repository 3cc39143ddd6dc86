//! TensorBoard event files: read back by an independent decoder here (both
//! CRCs of every record checked, protobuf fields decoded), and by
//! TensorBoard's own reader in the venv.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use tchlab::report::tensorboard::EventWriter;

/// Bitwise CRC-32C (reflected polynomial 0x82F63B78), written apart from the
/// writer's so that the check does not share its code.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}

#[allow(clippy::manual_rotate)] // as TFRecord's spec writes it
fn masked(crc: u32) -> u32 {
    ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8)
}

/// The payloads of a TFRecord file, each record's two CRCs checked.
fn records(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        assert!(bytes.len() - at >= 12, "truncated header at byte {at}");
        let header = &bytes[at..at + 8];
        let length = u64::from_le_bytes(header.try_into().unwrap()) as usize;
        let header_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        assert_eq!(header_crc, masked(crc32c(header)), "length CRC of the record at byte {at}");
        let start = at + 12;
        assert!(bytes.len() >= start + length + 4, "truncated record at byte {at}");
        let payload = &bytes[start..start + length];
        let payload_crc = u32::from_le_bytes(bytes[start + length..start + length + 4].try_into().unwrap());
        assert_eq!(payload_crc, masked(crc32c(payload)), "payload CRC of the record at byte {at}");
        out.push(payload);
        at = start + length + 4;
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

fn varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = bytes[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return value;
        }
    }
    panic!("varint longer than 10 bytes");
}

/// A protobuf message as (field number, value) pairs in file order.
fn fields(bytes: &[u8]) -> Vec<(u64, Field<'_>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = varint(bytes, &mut at);
        let field = match key & 7 {
            0 => Field::Varint(varint(bytes, &mut at)),
            1 => {
                at += 8;
                Field::Fixed64(bytes[at - 8..at].try_into().unwrap())
            }
            2 => {
                let len = varint(bytes, &mut at) as usize;
                at += len;
                Field::Bytes(&bytes[at - len..at])
            }
            5 => {
                at += 4;
                Field::Fixed32(bytes[at - 4..at].try_into().unwrap())
            }
            wire => panic!("unexpected wire type {wire}"),
        };
        out.push((key >> 3, field));
    }
    assert_eq!(at, bytes.len(), "message overran its length");
    out
}

fn one<'a>(message: &[(u64, Field<'a>)], number: u64) -> Field<'a> {
    let found: Vec<_> = message.iter().filter(|(n, _)| *n == number).collect();
    assert_eq!(found.len(), 1, "field {number} in {message:?}");
    found[0].1.clone()
}

#[derive(Debug, PartialEq)]
struct Scalar {
    tag: String,
    step: i64,
    value: f32,
}

fn events_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// Decodes an events file: checks the file-version event, returns the scalars.
fn read_scalars(path: &Path) -> Vec<Scalar> {
    let bytes = std::fs::read(path).unwrap();
    let records = records(&bytes);
    assert!(!records.is_empty());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let wall_time = |message: &[(u64, Field)]| match one(message, 1) {
        Field::Fixed64(b) => f64::from_le_bytes(b),
        other => panic!("wall_time {other:?}"),
    };
    let first = fields(records[0]);
    assert_eq!(one(&first, 3), Field::Bytes(b"brain.Event:2"));
    assert!((now - wall_time(&first)).abs() < 600.0);
    records[1..]
        .iter()
        .map(|record| {
            let event = fields(record);
            assert!((now - wall_time(&event)).abs() < 600.0);
            let Field::Varint(step) = one(&event, 2) else { panic!("step in {event:?}") };
            let Field::Bytes(summary) = one(&event, 5) else { panic!("summary in {event:?}") };
            let Field::Bytes(value) = one(&fields(summary), 1) else { panic!("value in {summary:?}") };
            let value = fields(value);
            let Field::Bytes(tag) = one(&value, 1) else { panic!("tag in {value:?}") };
            let Field::Fixed32(simple) = one(&value, 2) else { panic!("simple_value in {value:?}") };
            Scalar {
                tag: String::from_utf8(tag.to_vec()).unwrap(),
                step: step as i64,
                value: f32::from_le_bytes(simple),
            }
        })
        .collect()
}

/// What a 3-epoch run writes: loss and accuracy per phase per epoch.
fn write_run(dir: &Path) -> Vec<Scalar> {
    let mut writer = EventWriter::create(dir).unwrap();
    let mut expected = Vec::new();
    for epoch in 0..3i64 {
        for (tag, value) in [
            ("loss/train", 0.62 - 0.1 * epoch as f64),
            ("loss/val", 0.41 - 0.05 * epoch as f64),
            ("accuracy/train", 0.66 + 0.07 * epoch as f64),
            ("accuracy/val", 0.81 + 0.04 * epoch as f64),
        ] {
            writer.scalar(tag, value, epoch).unwrap();
            expected.push(Scalar { tag: tag.to_owned(), step: epoch, value: value as f32 });
        }
        writer.flush().unwrap();
    }
    expected
}

#[test]
fn scalars_read_back_with_both_crcs_checked() {
    let dir = tempfile::tempdir().unwrap();
    let expected = write_run(dir.path());
    let path = events_file(dir.path());
    let name = path.file_name().unwrap().to_str().unwrap();
    let parts: Vec<&str> = name.splitn(5, '.').collect();
    assert_eq!(&parts[..3], ["events", "out", "tfevents"], "{name}");
    assert!(parts[3].parse::<u64>().is_ok() && !parts[4].is_empty(), "{name}");
    assert_eq!(read_scalars(&path), expected);
}

#[test]
fn flush_makes_each_epoch_visible_while_the_writer_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = EventWriter::create(dir.path()).unwrap();
    let path = events_file(dir.path());
    assert_eq!(writer.path(), path);
    assert_eq!(read_scalars(&path), []);
    writer.scalar("loss/train", 1.5, 0).unwrap();
    writer.flush().unwrap();
    assert_eq!(read_scalars(&path), [Scalar { tag: "loss/train".into(), step: 0, value: 1.5 }]);
    writer.scalar("loss/train", 1.25, 1).unwrap();
    writer.flush().unwrap();
    assert_eq!(read_scalars(&path).len(), 2);
}

#[test]
fn two_writers_in_one_folder_never_share_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = EventWriter::create(dir.path()).unwrap();
    let mut b = EventWriter::create(dir.path()).unwrap();
    assert_ne!(a.path(), b.path());
    a.scalar("x", 1.0, 0).unwrap();
    b.scalar("x", 2.0, 0).unwrap();
    a.flush().unwrap();
    b.flush().unwrap();
    assert_eq!(read_scalars(a.path())[0].value, 1.0);
    assert_eq!(read_scalars(b.path())[0].value, 2.0);
}

#[test]
fn a_run_folder_that_cannot_be_created_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"").unwrap();
    let err = EventWriter::create(&blocker.join("run")).err().expect("a file is in the way");
    let message = format!("{err:#}");
    assert!(message.contains("not-a-folder/run"), "{message}");
}

/// TensorBoard's own reader (its record reader checks both CRCs and stops at
/// a bad record) sees every scalar, with the right tags, steps and values.
#[test]
fn tensorboard_reads_the_scalars() {
    let dir = tempfile::tempdir().unwrap();
    let expected = write_run(dir.path());
    let script = r#"
import json, struct, sys
from tensorboard.backend.event_processing import event_accumulator, event_file_loader
path = sys.argv[1]
events = list(event_file_loader.LegacyEventFileLoader(path).Load())
assert events[0].file_version == "brain.Event:2", events[0]
acc = event_accumulator.EventAccumulator(sys.argv[2])
acc.Reload()
out = {"events": len(events), "scalars": []}
for tag in sorted(acc.Tags()["scalars"]):
    for s in acc.Scalars(tag):
        # The value as float32 bits: exact, whatever the JSON float parsing.
        bits = struct.unpack("<I", struct.pack("<f", s.value))[0]
        out["scalars"].append([tag, s.step, bits])
print(json.dumps(out))
"#;
    let path = events_file(dir.path());
    let output = common::run_ok(Command::new(common::python()).arg("-c").arg(script).arg(&path).arg(dir.path()));
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["events"], 1 + expected.len());
    let mut expected: Vec<(String, i64, u32)> =
        expected.into_iter().map(|s| (s.tag, s.step, s.value.to_bits())).collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let seen: Vec<(String, i64, u32)> = seen["scalars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s[0].as_str().unwrap().to_owned(), s[1].as_i64().unwrap(), s[2].as_u64().unwrap() as u32))
        .collect();
    assert_eq!(seen, expected);
}
