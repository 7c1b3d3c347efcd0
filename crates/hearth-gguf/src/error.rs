//! Errors of the container layer. Each names the field or tensor at fault, so
//! that a user holding a broken file knows what is broken, not just that it is.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum GgufError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a GGUF file: magic is {0:?}, expected \"GGUF\"")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    #[error("truncated GGUF file: {what} needs bytes {start}..{end} but the file has {len}")]
    Truncated {
        what: String,
        start: u64,
        end: u64,
        len: u64,
    },
    #[error("invalid GGUF field {what}: {why}")]
    Invalid { what: String, why: String },
    #[error("metadata key {0:?} is missing")]
    MissingKey(String),
    #[error("metadata key {key:?} has type {found}, expected {expected}")]
    WrongType {
        key: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("tensor {0:?} is missing")]
    MissingTensor(String),
}

impl GgufError {
    pub(crate) fn invalid(what: impl Into<String>, why: impl Into<String>) -> Self {
        GgufError::Invalid {
            what: what.into(),
            why: why.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, GgufError>;
