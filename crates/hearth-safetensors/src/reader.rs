//! Reading a safetensors file: the header is parsed and every tensor entry
//! checked (dtype known, shape product and byte size overflow-checked and
//! equal to its offsets, offsets inside the data section, no two tensors
//! overlapping, no unindexed bytes) before any view is handed out.
//!
//! This module owns: parsing and validation, the mapped or owned bytes and
//! the views into them. It must not interpret tensors beyond widening float
//! types to f32.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::path::Path;

use half::{bf16, f16};
use memmap2::Mmap;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::error::{Result, SafetensorsError as E};
use crate::Dtype;

/// The largest header accepted (the reference implementation's limit too):
/// a header is a few kilobytes per thousand tensors, and a hostile length
/// field must not make us parse gigabytes of JSON.
pub const MAX_HEADER_LEN: u64 = 100 * 1024 * 1024;

const METADATA_KEY: &str = "__metadata__";

enum Backing {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// One tensor's header entry, validated.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range relative to the start of the data section.
    begin: usize,
    end: usize,
}

/// A parsed and validated safetensors file.
pub struct SafeTensors {
    backing: Backing,
    /// Offset of the data section in the file (8 + header length).
    data_start: usize,
    /// In header order.
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

/// A view of one tensor's bytes, borrowed from its [`SafeTensors`].
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    name: &'a str,
    dtype: Dtype,
    shape: &'a [usize],
    data: &'a [u8],
}

impl SafeTensors {
    /// Map and validate a file.
    pub fn open(path: &Path) -> Result<SafeTensors> {
        let io = |source| E::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        // Mapping an empty file fails on some platforms with an unhelpful
        // message; the format's own error is clearer.
        if len < 8 {
            return Err(E::InFile {
                path: path.to_path_buf(),
                source: Box::new(E::TooShort { len }),
            });
        }
        // SAFETY: the map is read-only and every offset read through it is
        // validated first. A file changed underneath us by another process
        // could change bytes we already validated; the store only hands out
        // immutable, content-addressed blobs, which is the contract here.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(Backing::Mapped(map)).map_err(|e| E::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Parse a file held in memory (tests, small adapters).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<SafeTensors> {
        Self::parse(Backing::Owned(bytes))
    }

    fn parse(backing: Backing) -> Result<SafeTensors> {
        let bytes = backing.bytes();
        let file_len = bytes.len() as u64;
        let Some(len_field) = bytes.get(..8) else {
            return Err(E::TooShort { len: file_len });
        };
        let mut le = [0u8; 8];
        le.copy_from_slice(len_field);
        let header_len = u64::from_le_bytes(le);
        if header_len > MAX_HEADER_LEN {
            return Err(E::HeaderTooLarge {
                header_len,
                max: MAX_HEADER_LEN,
            });
        }
        let available = file_len - 8;
        if header_len > available {
            return Err(E::HeaderBeyondFile {
                header_len,
                available,
            });
        }
        // Both fit in usize: header_len <= MAX_HEADER_LEN and the file is in memory.
        let data_start = 8 + header_len as usize;
        let header = &bytes[8..data_start];
        let data_len = bytes.len() - data_start;

        let raw: Entries =
            serde_json::from_slice(header).map_err(|e| E::HeaderJson(e.to_string()))?;
        let mut seen = HashSet::new();
        let mut metadata = BTreeMap::new();
        let mut entries = Vec::with_capacity(raw.0.len());
        for (name, value) in raw.0 {
            if !seen.insert(name.clone()) {
                return Err(E::DuplicateKey(name));
            }
            if name == METADATA_KEY {
                metadata = parse_metadata(value)?;
            } else {
                entries.push(parse_entry(name, value, data_len)?);
            }
        }
        check_layout(&entries, data_len)?;
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Ok(SafeTensors {
            backing,
            data_start,
            entries,
            index,
            metadata,
        })
    }

    /// The `__metadata__` map (empty when the file has none).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Tensor names in header order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// Every tensor, in header order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorView<'_>> {
        self.entries.iter().map(|e| self.view(e))
    }

    /// The tensor called `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<TensorView<'_>> {
        self.index.get(name).map(|&i| self.view(&self.entries[i]))
    }

    /// The tensor called `name`, or an error naming it.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        self.get(name)
            .ok_or_else(|| E::MissingTensor(name.to_string()))
    }

    fn view<'a>(&'a self, e: &'a Entry) -> TensorView<'a> {
        // In range: `check_layout` and `parse_entry` proved `end <= data_len`.
        let data = &self.backing.bytes()[self.data_start + e.begin..self.data_start + e.end];
        TensorView {
            name: &e.name,
            dtype: e.dtype,
            shape: &e.shape,
            data,
        }
    }
}

impl fmt::Debug for SafeTensors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafeTensors")
            .field("tensors", &self.entries.len())
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl<'a> TensorView<'a> {
    pub fn name(&self) -> &'a str {
        self.name
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// The raw little-endian bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Number of elements (1 for a scalar, 0 if any dimension is 0).
    pub fn n_elements(&self) -> usize {
        // Cannot overflow: the product was checked when the header was parsed.
        self.shape.iter().product()
    }

    /// The elements widened to f32. F32 is copied exactly; F16 and BF16
    /// widen exactly; other dtypes are an error naming the tensor.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.n_elements());
        match self.dtype {
            Dtype::F32 => out.extend(
                self.data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            Dtype::F16 => out.extend(
                self.data
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
            ),
            Dtype::BF16 => out.extend(
                self.data
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
            ),
            dtype => {
                return Err(E::Dtype {
                    name: self.name.to_string(),
                    dtype,
                    why: "cannot be read as floats (F32, F16 and BF16 can)",
                })
            }
        }
        Ok(out)
    }

    /// [`Self::to_f32`] after checking the shape is exactly `expected`.
    pub fn to_f32_shaped(&self, expected: &[usize]) -> Result<Vec<f32>> {
        if self.shape != expected {
            return Err(E::Tensor {
                name: self.name.to_string(),
                why: format!("has shape {:?}, expected {:?}", self.shape, expected),
            });
        }
        self.to_f32()
    }
}

/// The top-level header object as a list, so a key given twice is seen
/// (a map would silently keep the last one).
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Entries, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Entries, A::Error> {
                let mut v = Vec::new();
                while let Some(kv) = m.next_entry::<String, Value>()? {
                    v.push(kv);
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

fn parse_metadata(value: Value) -> Result<BTreeMap<String, String>> {
    let Value::Object(map) = value else {
        return Err(E::Metadata(format!(
            "expected an object, found {}",
            kind(&value)
        )));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(E::Metadata(format!(
                "value of {k:?} must be a string, found {}",
                kind(&other)
            ))),
        })
        .collect()
}

fn parse_entry(name: String, value: Value, data_len: usize) -> Result<Entry> {
    let bad = |why: String| E::Tensor {
        name: name.clone(),
        why,
    };
    let Value::Object(map) = value else {
        return Err(bad(format!(
            "entry must be an object, found {}",
            kind(&value)
        )));
    };
    for key in map.keys() {
        if !matches!(key.as_str(), "dtype" | "shape" | "data_offsets") {
            return Err(bad(format!("unknown field {key:?}")));
        }
    }
    let dtype = match map.get("dtype") {
        None => return Err(bad("missing field \"dtype\"".into())),
        Some(Value::String(s)) => {
            Dtype::from_name(s).ok_or_else(|| bad(format!("unknown dtype {s:?}")))?
        }
        Some(v) => return Err(bad(format!("dtype must be a string, found {}", kind(v)))),
    };
    let shape = match map.get("shape") {
        None => return Err(bad("missing field \"shape\"".into())),
        Some(Value::Array(dims)) => dims
            .iter()
            .map(|d| {
                d.as_u64()
                    .and_then(|d| usize::try_from(d).ok())
                    .ok_or_else(|| {
                        bad(format!("shape dimension {d} is not a non-negative integer"))
                    })
            })
            .collect::<Result<Vec<usize>>>()?,
        Some(v) => return Err(bad(format!("shape must be an array, found {}", kind(v)))),
    };
    let (begin, end) = match map.get("data_offsets") {
        None => return Err(bad("missing field \"data_offsets\"".into())),
        Some(Value::Array(o)) if o.len() == 2 => {
            let off = |v: &Value| {
                v.as_u64()
                    .and_then(|x| usize::try_from(x).ok())
                    .ok_or_else(|| bad(format!("data offset {v} is not a non-negative integer")))
            };
            (off(&o[0])?, off(&o[1])?)
        }
        Some(v) => {
            return Err(bad(format!(
                "data_offsets must be an array of two integers, found {v}"
            )))
        }
    };
    if begin > end {
        return Err(bad(format!("data_offsets [{begin}, {end}] run backwards")));
    }
    if end > data_len {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] run past the end of the data section ({data_len} bytes)"
        )));
    }
    let n_bytes = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| {
            bad(format!(
                "shape {shape:?} of {dtype} overflows the byte count"
            ))
        })?;
    if n_bytes != end - begin {
        return Err(bad(format!(
            "shape {shape:?} of {dtype} needs {n_bytes} bytes but data_offsets [{begin}, {end}] hold {}",
            end - begin
        )));
    }
    Ok(Entry {
        name,
        dtype,
        shape,
        begin,
        end,
    })
}

/// No two tensors may share a byte (empty tensors share none, so they may
/// sit anywhere in range), and (as the format requires, so that a
/// file cannot hide a second payload) every data byte belongs to a tensor.
fn check_layout(entries: &[Entry], data_len: usize) -> Result<()> {
    let mut order: Vec<&Entry> = entries.iter().filter(|e| e.begin < e.end).collect();
    order.sort_by_key(|e| e.begin);
    let mut covered = 0usize;
    let mut last: Option<&Entry> = None;
    for e in order {
        if e.begin < covered {
            return Err(E::Overlap {
                first: last.map(|p| p.name.clone()).unwrap_or_default(),
                second: e.name.clone(),
            });
        }
        if e.begin > covered {
            return Err(E::Coverage {
                len: data_len,
                why: format!(
                    "nothing between bytes {covered} and {} (before tensor {:?})",
                    e.begin, e.name
                ),
            });
        }
        covered = e.end;
        last = Some(e);
    }
    if covered != data_len {
        return Err(E::Coverage {
            len: data_len,
            why: format!("only the first {covered} bytes"),
        });
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
