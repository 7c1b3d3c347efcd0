//! Views of weight tensors inside the mapped GGUF file, checked once at load
//! time so the forward pass can slice without checks that could fail.

use std::sync::Arc;

use hearth_gguf::{GgmlType, GgufFile, TensorInfo};

use crate::error::{EngineError, Result};

/// A 2-D weight matrix: `n_out` rows of `n_in` elements in `ty`'s block layout.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub name: String,
    pub ty: GgmlType,
    pub n_in: usize,
    pub n_out: usize,
    pub range: std::ops::Range<usize>,
}

impl Matrix {
    pub fn row_bytes(&self) -> usize {
        self.range.len() / self.n_out
    }
}

/// Looks tensors up by name and checks their shapes against what an
/// architecture expects.
pub struct Loader<'a> {
    pub file: &'a Arc<GgufFile>,
}

impl<'a> Loader<'a> {
    pub fn info(&self, name: &str) -> Result<&'a TensorInfo> {
        Ok(self.file.require_tensor(name)?)
    }

    pub fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    /// A matrix of `n_out` rows of `n_in`.
    pub fn matrix(&self, name: &str, n_in: usize, n_out: usize) -> Result<Matrix> {
        let t = self.info(name)?;
        if t.dims != [n_in as u64, n_out as u64] {
            return Err(EngineError::Shape {
                name: name.into(),
                found: t.dims.clone(),
                expected: vec![n_in as u64, n_out as u64],
            });
        }
        if matches!(t.ggml_type, GgmlType::Q8_1 | GgmlType::Q8_K) {
            return Err(EngineError::TensorType {
                name: name.into(),
                ty: t.ggml_type,
                why: "is an activation format, not a weight format",
            });
        }
        Ok(Matrix {
            name: name.into(),
            ty: t.ggml_type,
            n_in,
            n_out,
            range: t.range.clone(),
        })
    }

    /// A vector of `n` values (norm weights, biases), dequantised to f32.
    pub fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let t = self.info(name)?;
        if t.dims != [n as u64] {
            return Err(EngineError::Shape {
                name: name.into(),
                found: t.dims.clone(),
                expected: vec![n as u64],
            });
        }
        if !n.is_multiple_of(t.ggml_type.block_size()) {
            return Err(EngineError::TensorType {
                name: name.into(),
                ty: t.ggml_type,
                why: "does not fit the vector's length",
            });
        }
        let mut out = vec![0f32; n];
        hearth_kernels::dequantize_row(t.ggml_type, self.file.tensor_data(t), &mut out);
        Ok(out)
    }

    pub fn optional_vector(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.vector(name, n).map(Some)
        } else {
            Ok(None)
        }
    }
}
