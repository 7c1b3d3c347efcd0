//! The safetensors container: parse and validate a file, map it, read its
//! `__metadata__` and hand out tensor views; and write files (for tests and
//! small adapters).
//!
//! The format is an 8-byte little-endian header length, a JSON header naming
//! every tensor's dtype, shape and `data_offsets` (relative to the end of the
//! header), then the tensor bytes. Everything in the header is checked
//! before a view is handed out (see [`SafeTensors`]), so a truncated or
//! hostile file is an error, never a panic or an out-of-range read.
//!
//! This crate knows the container and the element types. It must not know
//! about architectures, tokenisers or arithmetic: those live in
//! `hearth-engine`, `hearth-text` and `hearth-kernels`.

mod dtype;
mod error;
mod reader;
mod writer;

pub use dtype::Dtype;
pub use error::{Result, SafetensorsError};
pub use reader::{SafeTensors, TensorView, MAX_HEADER_LEN};
pub use writer::{serialize, TensorData};
