//! Writing a safetensors file: used by tests (here and in the engine and
//! runtime, which build tiny models) and by small adapters.
//!
//! This module owns: serialising tensors and metadata into the format. It
//! must not read files.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Map, Value};

use crate::error::{Result, SafetensorsError as E};
use crate::Dtype;

/// One tensor to write.
#[derive(Clone, Debug)]
pub struct TensorData<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Little-endian element bytes, `product(shape) × dtype.size()` long.
    pub data: Cow<'a, [u8]>,
}

impl<'a> TensorData<'a> {
    /// An F32 tensor from values.
    pub fn from_f32(name: &'a str, shape: &[usize], values: &[f32]) -> TensorData<'a> {
        TensorData {
            name,
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            data: Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        }
    }
}

/// The bytes of a file holding `tensors` (data in the given order) and
/// `metadata`. The header is padded with spaces so the data section starts
/// 8-byte aligned, as the reference writer does.
pub fn serialize(
    tensors: &[TensorData<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut header = Map::new();
    if !metadata.is_empty() {
        let m: Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), Value::Object(m));
    }
    let mut names = HashSet::new();
    let mut offset = 0usize;
    for t in tensors {
        let bad = |why: String| E::Write {
            name: t.name.to_string(),
            why,
        };
        if t.name == "__metadata__" {
            return Err(bad("the name is reserved for metadata".into()));
        }
        if !names.insert(t.name) {
            return Err(bad("the name is given twice".into()));
        }
        let need = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(t.dtype.size()))
            .ok_or_else(|| bad(format!("shape {:?} overflows the byte count", t.shape)))?;
        if need != t.data.len() {
            return Err(bad(format!(
                "shape {:?} of {} needs {need} bytes, {} given",
                t.shape,
                t.dtype,
                t.data.len()
            )));
        }
        header.insert(
            t.name.to_string(),
            json!({
                "dtype": t.dtype.name(),
                "shape": t.shape,
                "data_offsets": [offset, offset + need],
            }),
        );
        offset += need;
    }
    let mut text = serde_json::to_vec(&Value::Object(header)).map_err(|e| E::Write {
        name: String::new(),
        why: e.to_string(),
    })?;
    while (8 + text.len()) % 8 != 0 {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    for t in tensors {
        out.extend_from_slice(&t.data);
    }
    Ok(out)
}
