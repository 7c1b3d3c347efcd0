//! The parser against files this test writes: round trips, and every kind of
//! damage a file can carry, each of which must be a named error.

use hearth_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value};

fn sample() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("llama".into()))
        .add("llama.block_count", Value::U32(2))
        .add("llama.rope.freq_base", Value::F32(10000.0))
        .add("flag", Value::Bool(true))
        .add(
            "tokenizer.ggml.tokens",
            Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
        )
        .add("i64", Value::I64(-5))
        .add("f64", Value::F64(0.25));
    w.add_f32("norm.weight", &[4], &[1.0, 2.0, 3.0, 4.0])
        .unwrap();
    w.add_tensor("q8.weight", &[32, 2], GgmlType::Q8_0, vec![7u8; 68])
        .unwrap();
    w
}

#[test]
fn round_trip_keeps_metadata_and_tensors() {
    let f = GgufFile::from_bytes(sample().to_bytes()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 2);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 10000.0);
    assert!(f.get_bool("flag").unwrap());
    assert_eq!(f.get_array("tokenizer.ggml.tokens").unwrap().len(), 2);
    assert_eq!(f.get("i64").unwrap().as_i64(), Some(-5));
    let t = f.require_tensor("norm.weight").unwrap();
    assert_eq!(t.ggml_type, GgmlType::F32);
    let data = f.tensor_data(t);
    assert_eq!(&data[4..8], &2.0f32.to_le_bytes());
    let q = f.require_tensor("q8.weight").unwrap();
    assert_eq!(q.rows(), (32, 2));
    assert_eq!(f.tensor_data(q), &[7u8; 68][..]);
    assert_eq!(q.range.start % 32, 0, "tensor data is aligned");
}

#[test]
fn typed_getters_name_the_key() {
    let f = GgufFile::from_bytes(sample().to_bytes()).unwrap();
    let e = f.get_u32("general.architecture").unwrap_err();
    assert!(e.to_string().contains("general.architecture"), "{e}");
    let e = f.get_str("no.such.key").unwrap_err();
    assert!(matches!(e, GgufError::MissingKey(ref k) if k == "no.such.key"));
    let e = f.get_u32("i64").unwrap_err();
    assert!(e.to_string().contains("i64"));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let bytes = sample().to_bytes();
    for cut in 0..bytes.len() {
        let r = GgufFile::from_bytes(bytes[..cut].to_vec());
        assert!(r.is_err(), "file cut at {cut} of {} parsed", bytes.len());
    }
}

#[test]
fn truncated_tensor_data_names_the_tensor() {
    let bytes = sample().to_bytes();
    let e = GgufFile::from_bytes(bytes[..bytes.len() - 1].to_vec()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("q8.weight") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn bad_magic_and_version() {
    let mut bytes = sample().to_bytes();
    bytes[0] = b'X';
    assert!(matches!(
        GgufFile::from_bytes(bytes).unwrap_err(),
        GgufError::BadMagic(_)
    ));
    let mut bytes = sample().to_bytes();
    bytes[4] = 7;
    assert!(matches!(
        GgufFile::from_bytes(bytes).unwrap_err(),
        GgufError::UnsupportedVersion(7)
    ));
}

#[test]
fn absurd_counts_are_refused_before_allocation() {
    let mut bytes = sample().to_bytes();
    // metadata_kv_count sits at byte 16.
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = GgufFile::from_bytes(bytes).unwrap_err();
    assert!(e.to_string().contains("metadata_kv_count"), "{e}");
    let mut bytes = sample().to_bytes();
    bytes[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = GgufFile::from_bytes(bytes).unwrap_err();
    assert!(e.to_string().contains("tensor_count"), "{e}");
}

/// Find `needle` after the header so a test can corrupt a specific field.
fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

#[test]
fn unknown_tensor_type_is_named() {
    let mut bytes = sample().to_bytes();
    // The tensor info of "q8.weight": name, n_dims=2, dims 32 and 2, type 8.
    let at = find(&bytes, b"q8.weight") + "q8.weight".len() + 4 + 16;
    assert_eq!(&bytes[at..at + 4], &8u32.to_le_bytes());
    bytes[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let e = GgufFile::from_bytes(bytes).unwrap_err().to_string();
    assert!(e.contains("q8.weight") && e.contains("99"), "{e}");
}

#[test]
fn oversized_dims_and_offsets_are_errors() {
    let bytes = sample().to_bytes();
    let dims_at = find(&bytes, b"q8.weight") + "q8.weight".len() + 4;
    let mut b = bytes.clone();
    b[dims_at + 8..dims_at + 16].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let e = GgufFile::from_bytes(b).unwrap_err().to_string();
    assert!(e.contains("q8.weight"), "{e}");
    let mut b = bytes.clone();
    b[dims_at..dims_at + 8].copy_from_slice(&33u64.to_le_bytes());
    let e = GgufFile::from_bytes(b).unwrap_err().to_string();
    assert!(e.contains("block size"), "{e}");
    let off_at = dims_at + 16 + 4;
    let mut b = bytes.clone();
    b[off_at..off_at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    assert!(GgufFile::from_bytes(b).is_err());
    let mut b = bytes;
    b[off_at..off_at + 8].copy_from_slice(&0u64.to_le_bytes());
    let e = GgufFile::from_bytes(b).unwrap_err().to_string();
    assert!(e.contains("overlaps"), "{e}");
}

#[test]
fn duplicate_keys_and_tensors_are_refused() {
    let mut w = GgufWriter::new();
    w.add("k", Value::U32(1)).add("k", Value::U32(2));
    let e = GgufFile::from_bytes(w.to_bytes()).unwrap_err().to_string();
    assert!(e.contains("\"k\"") && e.contains("twice"), "{e}");
    let mut w = GgufWriter::new();
    w.add_f32("t", &[1], &[1.0]).unwrap();
    w.add_f32("t", &[1], &[1.0]).unwrap();
    assert!(GgufFile::from_bytes(w.to_bytes()).is_err());
}

#[test]
fn invalid_utf8_and_bool_are_named() {
    let mut w = GgufWriter::new();
    w.add("name", Value::String("abc".into()));
    let mut bytes = w.to_bytes();
    let at = find(&bytes, b"abc");
    bytes[at] = 0xff;
    let e = GgufFile::from_bytes(bytes).unwrap_err().to_string();
    assert!(e.contains("UTF-8"), "{e}");
    let mut w = GgufWriter::new();
    w.add("flag", Value::Bool(true));
    let mut bytes = w.to_bytes();
    let at = find(&bytes, b"flag") + 4 + 4;
    assert_eq!(bytes[at], 1);
    bytes[at] = 5;
    let e = GgufFile::from_bytes(bytes).unwrap_err().to_string();
    assert!(e.contains("flag"), "{e}");
}

#[test]
fn writer_refuses_wrong_sizes() {
    let mut w = GgufWriter::new();
    assert!(w
        .add_tensor("x", &[32, 2], GgmlType::Q4_0, vec![0; 10])
        .is_err());
}

#[test]
fn open_maps_a_file() {
    let dir = std::env::temp_dir().join(format!("hearth-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("t.gguf");
    sample().write(&p).unwrap();
    let f = GgufFile::open(&p).unwrap();
    assert!(f.is_mapped());
    assert_eq!(f.tensors().len(), 2);
    let e = GgufFile::open(&dir.join("missing.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.gguf"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn version_2_files_parse_like_version_3() {
    // Versions 2 and 3 share the layout (64-bit counts and lengths); 3 only
    // added big-endian files, which carry a different version word.
    let mut bytes = sample().to_bytes();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.tensors().len(), 2);
}
