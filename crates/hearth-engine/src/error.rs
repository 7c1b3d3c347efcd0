//! Engine errors: each names the model field, tensor or limit at fault.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Gguf(#[from] hearth_gguf::GgufError),
    #[error("unsupported architecture {0:?} (supported: llama, qwen2, qwen3, gemma3)")]
    UnknownArchitecture(String),
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("tensor {name:?} has type {ty}, which {why}")]
    TensorType {
        name: String,
        ty: hearth_gguf::GgmlType,
        why: &'static str,
    },
    #[error("invalid hyperparameter {key}: {why}")]
    Hyperparameter { key: String, why: String },
    #[error("the sequence would reach {needed} tokens, over the context of {n_ctx}")]
    ContextFull { needed: usize, n_ctx: usize },
    #[error(
        "the KV pool is full: {needed} bytes of blocks needed, {free} free of a capacity of {capacity}"
    )]
    KvPoolFull {
        needed: usize,
        free: usize,
        capacity: usize,
    },
    #[error("the KV cache has shape {found}, but this model's is {expected}")]
    CacheShape { found: String, expected: String },
    #[error("KV prefix: {0}")]
    Prefix(String),
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    BadToken { id: u32, n_vocab: usize },
    #[error(transparent)]
    Lora(#[from] crate::lora::LoraError),
    #[error("empty batch item: every sequence in a batch needs at least one token")]
    EmptyItem,
}

pub type Result<T> = std::result::Result<T, EngineError>;
