//! Good and bad files, written by the tests themselves: every bad file must
//! be an error naming the problem, never a panic.

use std::borrow::Cow;
use std::collections::BTreeMap;

use hearth_safetensors::{serialize, Dtype, SafeTensors, SafetensorsError, TensorData};

/// A file from a raw header string and data bytes.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn err(bytes: Vec<u8>) -> String {
    match SafeTensors::from_bytes(bytes) {
        Ok(st) => panic!("expected an error, parsed {st:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn round_trip_f32_f16_bf16_and_metadata() {
    let a = [1.0f32, -2.5, 3.25, 0.0, 1e-3, 7.0];
    let h: Vec<u8> = [0.5f32, -1.0, 65504.0]
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    let b: Vec<u8> = [1.0f32, -3.0]
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect();
    let tensors = vec![
        TensorData::from_f32("a", &[2, 3], &a),
        TensorData {
            name: "h",
            dtype: Dtype::F16,
            shape: vec![3],
            data: Cow::Owned(h),
        },
        TensorData {
            name: "b",
            dtype: Dtype::BF16,
            shape: vec![1, 2],
            data: Cow::Owned(b),
        },
        TensorData {
            name: "ids",
            dtype: Dtype::I64,
            shape: vec![2],
            data: Cow::Owned([5i64, 6].iter().flat_map(|v| v.to_le_bytes()).collect()),
        },
        TensorData::from_f32("empty", &[0, 4], &[]),
    ];
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let bytes = serialize(&tensors, &meta).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + header_len) % 8, 0, "data section is 8-byte aligned");

    let st = SafeTensors::from_bytes(bytes).unwrap();
    assert_eq!(st.len(), 5);
    assert_eq!(st.metadata().get("format").map(String::as_str), Some("pt"));
    let ta = st.tensor("a").unwrap();
    assert_eq!(ta.shape(), &[2, 3]);
    assert_eq!(ta.dtype(), Dtype::F32);
    assert_eq!(ta.to_f32().unwrap(), a);
    assert_eq!(ta.to_f32_shaped(&[2, 3]).unwrap(), a);
    assert!(ta
        .to_f32_shaped(&[3, 2])
        .unwrap_err()
        .to_string()
        .contains("\"a\""));
    assert_eq!(
        st.tensor("h").unwrap().to_f32().unwrap(),
        [0.5, -1.0, 65504.0]
    );
    assert_eq!(st.tensor("b").unwrap().to_f32().unwrap(), [1.0, -3.0]);
    assert_eq!(st.tensor("empty").unwrap().n_elements(), 0);
    let ids = st.tensor("ids").unwrap();
    assert_eq!(ids.data().len(), 16);
    let e = ids.to_f32().unwrap_err().to_string();
    assert!(e.contains("ids") && e.contains("I64"), "{e}");
    let e = st.tensor("nope").unwrap_err();
    assert!(matches!(e, SafetensorsError::MissingTensor(ref n) if n == "nope"));
}

#[test]
fn open_maps_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    let t = [TensorData::from_f32("w", &[2], &[1.0, 2.0])];
    std::fs::write(&good, serialize(&t, &BTreeMap::new()).unwrap()).unwrap();
    let st = SafeTensors::open(&good).unwrap();
    assert_eq!(st.tensor("w").unwrap().to_f32().unwrap(), [1.0, 2.0]);

    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, [1u8, 2, 3]).unwrap();
    let e = SafeTensors::open(&bad).unwrap_err().to_string();
    assert!(
        e.contains("bad.safetensors") && e.contains("too short"),
        "{e}"
    );

    let e = SafeTensors::open(&dir.path().join("missing.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.safetensors"), "{e}");
}

#[test]
fn truncated_files_are_errors_at_every_length() {
    let t = [
        TensorData::from_f32("x", &[3], &[1.0, 2.0, 3.0]),
        TensorData::from_f32("y", &[2, 2], &[4.0; 4]),
    ];
    let bytes = serialize(&t, &BTreeMap::new()).unwrap();
    assert!(SafeTensors::from_bytes(bytes.clone()).is_ok());
    for cut in 0..bytes.len() {
        assert!(
            SafeTensors::from_bytes(bytes[..cut].to_vec()).is_err(),
            "a file cut to {cut} bytes was accepted"
        );
    }
}

#[test]
fn header_length_is_checked() {
    let mut b = u64::MAX.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    assert!(err(b).contains("over the limit"));
    let mut b = 100u64.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    assert!(err(b).contains("past the end"));
    assert!(err(vec![]).contains("too short"));
}

#[test]
fn bad_headers_name_the_problem() {
    let cases: &[(&str, &[u8], &str)] = &[
        ("not json", &[], "not a valid JSON"),
        ("[1, 2]", &[], "JSON object"),
        ("{\"\u{0}", &[], "not a valid JSON"),
        (r#"{"t": 5}"#, &[], "\"t\": entry must be an object"),
        (
            r#"{"t": {"shape": [1], "data_offsets": [0, 4]}}"#,
            &[0; 4],
            "missing field \"dtype\"",
        ),
        (
            r#"{"t": {"dtype": "F32", "data_offsets": [0, 4]}}"#,
            &[0; 4],
            "missing field \"shape\"",
        ),
        (
            r#"{"t": {"dtype": "F32", "shape": [1]}}"#,
            &[0; 4],
            "missing field \"data_offsets\"",
        ),
        (
            r#"{"t": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 4]}}"#,
            &[0; 4],
            "unknown dtype \"Q4\"",
        ),
        (
            r#"{"t": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}}"#,
            &[0; 4],
            "dtype must be a string",
        ),
        (
            r#"{"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#,
            &[0; 4],
            "not a non-negative integer",
        ),
        (
            r#"{"t": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}"#,
            &[0; 4],
            "not a non-negative integer",
        ),
        (
            r#"{"t": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}}"#,
            &[0; 4],
            "shape must be an array",
        ),
        (
            r#"{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}"#,
            &[0; 4],
            "two integers",
        ),
        (
            r#"{"t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}"#,
            &[0; 4],
            "backwards",
        ),
        (
            r#"{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}"#,
            &[0; 4],
            "past the end of the data",
        ),
        (
            r#"{"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}"#,
            &[0; 4],
            "needs 8 bytes",
        ),
        (
            r#"{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}}"#,
            &[0; 4],
            "unknown field \"x\"",
        ),
        (
            r#"{"t": {"dtype": "F64", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}}"#,
            &[0; 4],
            "overflows",
        ),
        (
            r#"{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#,
            &[0; 4],
            "names \"t\" twice",
        ),
        (
            r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#,
            &[0; 8],
            "\"a\" and \"b\" overlap",
        ),
        (
            r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#,
            &[0; 8],
            "nothing between bytes 0 and 4",
        ),
        (
            r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#,
            &[0; 8],
            "only the first 4 bytes",
        ),
        (
            r#"{"__metadata__": 3}"#,
            &[],
            "__metadata__: expected an object",
        ),
        (
            r#"{"__metadata__": {"k": 1}}"#,
            &[],
            "value of \"k\" must be a string",
        ),
    ];
    for (header, data, want) in cases {
        let e = err(raw(header, data));
        assert!(
            e.contains(want),
            "header {header}: error {e:?} lacks {want:?}"
        );
    }
}

#[test]
fn header_may_be_padded_and_empty() {
    let st = SafeTensors::from_bytes(raw("{}      ", &[])).unwrap();
    assert!(st.is_empty());
    assert!(st.metadata().is_empty());
}

#[test]
fn writer_refuses_inconsistent_tensors() {
    let m = BTreeMap::new();
    let short = TensorData {
        name: "s",
        dtype: Dtype::F32,
        shape: vec![2],
        data: Cow::Borrowed(&[0u8; 4]),
    };
    assert!(serialize(&[short], &m)
        .unwrap_err()
        .to_string()
        .contains("needs 8 bytes"));
    let a = TensorData::from_f32("a", &[1], &[1.0]);
    assert!(serialize(&[a.clone(), a], &m)
        .unwrap_err()
        .to_string()
        .contains("twice"));
    let meta = TensorData::from_f32("__metadata__", &[1], &[1.0]);
    assert!(serialize(&[meta], &m).is_err());
}

/// Flipping any single header byte must never panic (it may still parse).
#[test]
fn corrupted_header_bytes_never_panic() {
    let t = [
        TensorData::from_f32("x", &[3], &[1.0, 2.0, 3.0]),
        TensorData::from_f32("y", &[2], &[4.0, 5.0]),
    ];
    let bytes = serialize(&t, &BTreeMap::new()).unwrap();
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for i in 0..header_end {
        for v in [0u8, b'9', b'"', b'}', 0xff] {
            let mut b = bytes.clone();
            b[i] = v;
            if let Ok(st) = SafeTensors::from_bytes(b) {
                for t in st.tensors() {
                    let _ = t.to_f32();
                }
            }
        }
    }
}
