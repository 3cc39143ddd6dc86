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
    let file = zip_file(&[("m/data.pkl", &pickle, false), ("m/byteorder", b"big", false), ("m/data/0", &data, false)]);
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
