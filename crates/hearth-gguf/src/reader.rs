//! Parsing and validating a GGUF file.
//!
//! Every count, length, offset, type and shape is checked against the bytes
//! actually present before anything is allocated or sliced, so a truncated or
//! hostile file yields a [`GgufError`] naming the field, never a panic, an
//! out-of-bounds read or an allocation the file cannot back.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{GgufError, Result};
use crate::types::GgmlType;
use crate::value::{type_id, Value};

/// Alignment of the tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;
/// Arrays nest at most this deep; real files use one level.
const MAX_ARRAY_DEPTH: usize = 4;

/// Where a tensor lives and what it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (contiguous).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte range in the whole file.
    pub range: Range<usize>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row length (`dims[0]`) and number of rows (product of the rest).
    pub fn rows(&self) -> (usize, usize) {
        let n = self.dims.first().copied().unwrap_or(1) as usize;
        let rows = self.dims.iter().skip(1).product::<u64>() as usize;
        (n, rows)
    }
}

enum Backing {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

/// A parsed GGUF file whose tensor data stays in the mapping (or buffer) it
/// was read from.
pub struct GgufFile {
    backing: Backing,
    version: u32,
    alignment: u64,
    metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    data_start: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Map and parse a file. The weights are not read: pages come in as the
    /// engine touches them.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let io = |source| GgufError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process. A file
        // changed underneath us by another process could change bytes we
        // already validated; the store only hands out immutable,
        // content-addressed blobs, which is the contract for this call.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(Backing::Mapped(map))
    }

    /// Parse a file held in memory (tests, fuzzing, small adapters).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        Self::parse(Backing::Owned(bytes))
    }

    fn parse(backing: Backing) -> Result<GgufFile> {
        let bytes: &[u8] = match &backing {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        };
        let mut c = Cursor { bytes, pos: 0 };
        let magic: [u8; 4] = c.take(4, || "magic".into())?.try_into().expect("4 bytes");
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic(magic));
        }
        let version = c.u32(|| "version".into())?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = c.u64(|| "tensor_count".into())?;
        let n_kv = c.u64(|| "metadata_kv_count".into())?;
        // Each key-value pair takes at least 8 (key length) + 4 (type) + 1 bytes,
        // each tensor info at least 8 + 4 + 4 + 8; a count the file cannot hold
        // is refused before anything is allocated for it.
        c.check_count(n_kv, 13, "metadata_kv_count")?;
        c.check_count(n_tensors, 24, "tensor_count")?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut index = HashMap::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let key = c.string(|| format!("metadata key #{i}"))?;
            let ty = c.u32(|| format!("type of metadata {key:?}"))?;
            let value = c.value(ty, &key, 0)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::invalid(
                    format!("metadata {key:?}"),
                    "key appears twice",
                ));
            }
            metadata.push((key, value));
        }

        let alignment = match index.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => {
                let a = metadata[i].1.as_u64().ok_or_else(|| {
                    GgufError::invalid("general.alignment", "not an unsigned integer")
                })?;
                if a == 0 || !a.is_power_of_two() || a > 1 << 20 {
                    return Err(GgufError::invalid(
                        "general.alignment",
                        format!("{a} is not a power of two up to 1 MiB"),
                    ));
                }
                a
            }
        };

        struct Raw {
            name: String,
            dims: Vec<u64>,
            ty: GgmlType,
            offset: u64,
        }
        let mut raws = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = c.string(|| format!("tensor #{i} name"))?;
            let what = |f: &str| format!("tensor {name:?} {f}");
            let n_dims = c.u32(|| what("n_dims"))? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::invalid(
                    what("n_dims"),
                    format!("{n_dims} is outside 1..={MAX_DIMS}"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for d in 0..n_dims {
                let v = c.u64(|| what(&format!("dims[{d}]")))?;
                if v == 0 {
                    return Err(GgufError::invalid(what(&format!("dims[{d}]")), "is zero"));
                }
                dims.push(v);
            }
            let type_raw = c.u32(|| what("type"))?;
            let ty = GgmlType::from_id(type_raw).ok_or_else(|| {
                GgufError::invalid(what("type"), format!("unsupported ggml type id {type_raw}"))
            })?;
            let offset = c.u64(|| what("offset"))?;
            if offset % alignment != 0 {
                return Err(GgufError::invalid(
                    what("offset"),
                    format!("{offset} is not a multiple of the alignment {alignment}"),
                ));
            }
            raws.push(Raw {
                name,
                dims,
                ty,
                offset,
            });
        }

        let data_start = align_up(c.pos as u64, alignment);
        let file_len = bytes.len() as u64;
        if data_start > file_len && n_tensors > 0 {
            return Err(GgufError::Truncated {
                what: "tensor data section".into(),
                start: data_start,
                end: data_start,
                len: file_len,
            });
        }

        let mut tensors = Vec::with_capacity(raws.len());
        let mut tensor_index = HashMap::with_capacity(raws.len());
        for raw in raws {
            let what = |f: &str| format!("tensor {:?} {f}", raw.name);
            let n_elements = raw
                .dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| GgufError::invalid(what("dims"), "element count overflows"))?;
            if raw.dims[0] % raw.ty.block_size() as u64 != 0 {
                return Err(GgufError::invalid(
                    what("dims[0]"),
                    format!(
                        "{} is not a multiple of the {} block size {}",
                        raw.dims[0],
                        raw.ty,
                        raw.ty.block_size()
                    ),
                ));
            }
            let size = (n_elements / raw.ty.block_size() as u64)
                .checked_mul(raw.ty.type_size() as u64)
                .ok_or_else(|| GgufError::invalid(what("dims"), "byte size overflows"))?;
            let start = data_start
                .checked_add(raw.offset)
                .ok_or_else(|| GgufError::invalid(what("offset"), "overflows"))?;
            let end = start
                .checked_add(size)
                .ok_or_else(|| GgufError::invalid(what("offset"), "overflows"))?;
            if end > file_len {
                return Err(GgufError::Truncated {
                    what: format!("tensor {:?} data", raw.name),
                    start,
                    end,
                    len: file_len,
                });
            }
            if tensor_index
                .insert(raw.name.clone(), tensors.len())
                .is_some()
            {
                return Err(GgufError::invalid(what("name"), "appears twice"));
            }
            tensors.push(TensorInfo {
                name: raw.name,
                dims: raw.dims,
                ggml_type: raw.ty,
                range: start as usize..end as usize,
            });
        }

        // Overlapping tensors are not out of bounds, but no writer produces
        // them; they mean a corrupted or crafted file.
        let mut by_start: Vec<&TensorInfo> = tensors.iter().collect();
        by_start.sort_by_key(|t| t.range.start);
        for pair in by_start.windows(2) {
            if pair[1].range.start < pair[0].range.end {
                return Err(GgufError::invalid(
                    format!("tensor {:?} offset", pair[1].name),
                    format!("overlaps tensor {:?}", pair[0].name),
                ));
            }
        }

        Ok(GgufFile {
            backing,
            version,
            alignment,
            metadata,
            index,
            tensors,
            tensor_index,
            data_start: data_start as usize,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Offset of the tensor data section in the file.
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }

    /// Whether the tensor data is memory-mapped (as opposed to held in a buffer).
    pub fn is_mapped(&self) -> bool {
        matches!(self.backing, Backing::Mapped(_))
    }

    /// All metadata, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<T> {
        let v = self.require(key)?;
        f(v).ok_or_else(|| GgufError::WrongType {
            key: key.to_string(),
            found: v.type_name(),
            expected,
        })
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.typed(key, "string", Value::as_str)
    }

    /// Any integer type whose value fits a u32.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.typed(key, "u32", |v| {
            v.as_u64().and_then(|x| u32::try_from(x).ok())
        })
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.typed(key, "u64", Value::as_u64)
    }

    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.typed(key, "f32", Value::as_f32)
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.typed(key, "bool", Value::as_bool)
    }

    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        self.typed(key, "array", Value::as_array)
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's info, or an error naming the missing tensor.
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name)
            .ok_or_else(|| GgufError::MissingTensor(name.to_string()))
    }

    /// The bytes of a tensor (bounds were checked at parse time).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        &self.bytes()[t.range.clone()]
    }
}

pub(crate) fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a).saturating_mul(a)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: impl Fn() -> String) -> Result<&'a [u8]> {
        let len = self.bytes.len() as u64;
        let start = self.pos as u64;
        let end = start.checked_add(n).filter(|&e| e <= len);
        match end {
            Some(end) => {
                self.pos = end as usize;
                Ok(&self.bytes[start as usize..end as usize])
            }
            None => Err(GgufError::Truncated {
                what: what(),
                start,
                end: start.saturating_add(n),
                len,
            }),
        }
    }

    fn check_count(&self, count: u64, min_each: u64, what: &str) -> Result<()> {
        let remaining = (self.bytes.len() - self.pos) as u64;
        if count.saturating_mul(min_each) > remaining {
            return Err(GgufError::invalid(
                what,
                format!("{count} entries cannot fit in the {remaining} bytes left"),
            ));
        }
        Ok(())
    }

    fn u8(&mut self, what: impl Fn() -> String) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: impl Fn() -> String) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2"),
        ))
    }
    fn u32(&mut self, what: impl Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4"),
        ))
    }
    fn u64(&mut self, what: impl Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8"),
        ))
    }

    fn string(&mut self, what: impl Fn() -> String) -> Result<String> {
        let n = self.u64(|| format!("{} length", what()))?;
        let raw = self.take(n, &what)?;
        String::from_utf8(raw.to_vec())
            .map_err(|e| GgufError::invalid(what(), format!("not valid UTF-8: {e}")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        // Error texts are only built when an error happens: a vocabulary
        // array has hundreds of thousands of values.
        let w = |s: &'static str| move || format!("metadata {key:?} {s}");
        Ok(match ty {
            type_id::U8 => Value::U8(self.u8(w("value"))?),
            type_id::I8 => Value::I8(self.u8(w("value"))? as i8),
            type_id::U16 => Value::U16(self.u16(w("value"))?),
            type_id::I16 => Value::I16(self.u16(w("value"))? as i16),
            type_id::U32 => Value::U32(self.u32(w("value"))?),
            type_id::I32 => Value::I32(self.u32(w("value"))? as i32),
            type_id::U64 => Value::U64(self.u64(w("value"))?),
            type_id::I64 => Value::I64(self.u64(w("value"))? as i64),
            type_id::F32 => Value::F32(f32::from_bits(self.u32(w("value"))?)),
            type_id::F64 => Value::F64(f64::from_bits(self.u64(w("value"))?)),
            type_id::BOOL => match self.u8(w("value"))? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(GgufError::invalid(w("value")(), format!("bool byte {b}"))),
            },
            type_id::STRING => Value::String(self.string(w("value"))?),
            type_id::ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::invalid(w("value")(), "arrays nested too deep"));
                }
                let elem = self.u32(w("array element type"))?;
                let n = self.u64(w("array length"))?;
                let min_each = match elem {
                    type_id::U8 | type_id::I8 | type_id::BOOL => 1,
                    type_id::U16 | type_id::I16 => 2,
                    type_id::U32 | type_id::I32 | type_id::F32 => 4,
                    type_id::U64 | type_id::I64 | type_id::F64 | type_id::STRING => 8,
                    type_id::ARRAY => 12,
                    other => {
                        return Err(GgufError::invalid(
                            w("array element type")(),
                            format!("unknown type id {other}"),
                        ))
                    }
                };
                self.check_count(n, min_each, &w("array length")())?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                Value::Array(items)
            }
            other => {
                return Err(GgufError::invalid(
                    w("type")(),
                    format!("unknown type id {other}"),
                ))
            }
        })
    }
}
