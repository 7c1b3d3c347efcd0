//! Errors of this crate.
//!
//! This module owns: the error type every fallible function here returns.

use thiserror::Error;

/// Everything that can go wrong building a tokeniser or rendering a chat.
#[derive(Debug, Error)]
pub enum TextError {
    /// The GGUF metadata lacked a key or had it with the wrong type.
    #[error("GGUF metadata: {0}")]
    Gguf(#[from] hearth_gguf::GgufError),
    /// `tokenizer.ggml.model` names a tokeniser this crate does not implement.
    #[error("unsupported tokenizer model '{0}' (supported: 'gpt2' byte-level BPE, 'llama' SentencePiece)")]
    UnknownModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokeniser this crate does not implement.
    #[error("unsupported pre-tokenizer '{0}' (tokenizer.ggml.pre)")]
    UnknownPreTokenizer(String),
    /// The vocabulary is inconsistent (lengths differ, duplicate tokens, ids out of range, …).
    #[error("invalid vocabulary: {0}")]
    InvalidVocab(String),
    /// The chat template failed to parse or render; carries the template's own message.
    #[error("chat template: {0}")]
    Template(String),
}
