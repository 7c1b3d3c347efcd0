//! Text in and out of a model, matching llama.cpp.
//!
//! - [`Tokenizer`]: GGUF vocabularies — byte-level BPE (`gpt2`, with the
//!   pre-tokenisers named by `tokenizer.ggml.pre`) and SentencePiece-style
//!   (`llama`) — with llama.cpp's special-token handling, BOS/EOS rules and
//!   end-of-generation set. Build it from a [`VocabSpec`] or a GGUF file.
//! - [`Detokenizer`]: streaming ids → text that never splits a character.
//! - [`ChatTemplate`]: a model's Jinja chat template (or the ChatML fallback).
//! - [`HfTokenizer`]: a Hugging Face `tokenizer.json` (through the
//!   `tokenizers` crate), for the safetensors embedding models.
//!
//! Modules, one concern each: `unicode` (categories, lenient UTF-8),
//! `pretokenize` (BPE word splitting), `bpe`, `spm` (the two merge
//! algorithms), `special` (special-token splitting), `vocab` (the plain
//! spec), `gguf` (reading the spec from metadata), `tokenizer` (tables and
//! entry points), `detok` (streaming), `chat` (templates), `hf` (`tokenizer.json`).

mod bpe;
mod chat;
mod detok;
mod error;
mod fxhash;
mod gguf;
mod hf;
mod pretokenize;
mod special;
mod spm;
mod tokenizer;
mod unicode;
mod vocab;

pub use chat::{ChatTemplate, Message};
pub use detok::Detokenizer;
pub use error::TextError;
pub use hf::{HfEncoding, HfError, HfTokenizer};
pub use pretokenize::PreTokenizer;
pub use tokenizer::Tokenizer;
pub use vocab::{ModelKind, SpecialIds, TokenType, VocabSpec};
