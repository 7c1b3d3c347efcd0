//! The GGUF container: parse and validate a file, map its weights, read its
//! metadata and hand out tensor views; and write files (for tests and adapters).
//!
//! This crate knows the container and the ggml type ids with their block
//! sizes (it needs them to check tensor sizes). It must not know about
//! architectures, tokenisers or the arithmetic of block formats: those live in
//! `hearth-engine`, `hearth-text` and `hearth-kernels`.

mod error;
mod reader;
pub mod types;
mod value;
mod writer;

pub use error::{GgufError, Result};
pub use reader::{GgufFile, TensorInfo, DEFAULT_ALIGNMENT, MAX_DIMS};
pub use types::GgmlType;
pub use value::Value;
pub use writer::GgufWriter;
