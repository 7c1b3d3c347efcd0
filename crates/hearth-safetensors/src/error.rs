//! Errors of this crate: each names the file, tensor or header field at fault.
//!
//! This module owns: the error type every fallible function here returns.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SafetensorsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A parse or validation error, with the file it came from.
    #[error("{path}: {source}")]
    InFile {
        path: PathBuf,
        source: Box<SafetensorsError>,
    },
    #[error("file is {len} bytes, too short for the 8-byte header length")]
    TooShort { len: u64 },
    #[error("header length {header_len} is over the limit of {max} bytes")]
    HeaderTooLarge { header_len: u64, max: u64 },
    #[error("header length {header_len} runs past the end of the file ({available} bytes after the length field)")]
    HeaderBeyondFile { header_len: u64, available: u64 },
    #[error("header is not a valid JSON object: {0}")]
    HeaderJson(String),
    #[error("header names {0:?} twice")]
    DuplicateKey(String),
    #[error("__metadata__: {0}")]
    Metadata(String),
    #[error("tensor {name:?}: {why}")]
    Tensor { name: String, why: String },
    #[error("tensors {first:?} and {second:?} overlap in the data section")]
    Overlap { first: String, second: String },
    #[error("the data section has {len} bytes but the tensors cover {why}")]
    Coverage { len: usize, why: String },
    #[error("no tensor named {0:?}")]
    MissingTensor(String),
    #[error("tensor {name:?} has dtype {dtype}, which {why}")]
    Dtype {
        name: String,
        dtype: crate::Dtype,
        why: &'static str,
    },
    #[error("cannot write tensor {name:?}: {why}")]
    Write { name: String, why: String },
}

pub type Result<T> = std::result::Result<T, SafetensorsError>;
