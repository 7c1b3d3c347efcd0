//! The plain description a tokeniser is built from.
//!
//! This module owns: [`VocabSpec`] (tokens, scores, token types, merges,
//! model kind, pre-tokeniser name, special ids and flags) and the token-type
//! codes GGUF stores. Nothing here reads files: `gguf.rs` fills a spec from a
//! GGUF file, and tests fill one by hand.

/// Which tokenisation algorithm the vocabulary uses (`tokenizer.ggml.model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// `gpt2`: byte-level BPE with ranked merges and a pre-tokeniser.
    Bpe,
    /// `llama`: SentencePiece-style, score-ranked bigram merges with byte fallback.
    Spm,
}

/// Token type codes as GGUF stores them in `tokenizer.ggml.token_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum TokenType {
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl TokenType {
    /// Maps a GGUF code to a type; unknown codes are `Undefined`, as in llama.cpp.
    pub fn from_code(code: i64) -> TokenType {
        match code {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }
}

/// Special token ids a vocabulary may declare. `None` means "not declared":
/// the model kind's default applies where llama.cpp has one (see
/// [`VocabSpec`]), and some are found by their text (end-of-turn, FIM).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// Everything needed to build a [`crate::Tokenizer`].
///
/// Defaults follow llama.cpp when a field is `None`:
/// - SPM: bos 1, eos 2, unk 0; `add_bos` true, `add_space_prefix` true.
/// - BPE: bos and eos 11 (if in range), no unk; `add_bos` false except for
///   llama3-style pre-tokenisers; `add_space_prefix` false.
/// - `add_eos` false.
#[derive(Clone, Debug, PartialEq)]
pub struct VocabSpec {
    pub model: ModelKind,
    /// `tokenizer.ggml.pre` (BPE only; ignored for SPM). Empty means `default`.
    pub pre: String,
    /// Token texts, indexed by id.
    pub tokens: Vec<String>,
    /// Per-token scores (SPM merge priority); empty means all zero.
    pub scores: Vec<f32>,
    /// Per-token types; empty means all `Normal`.
    pub token_types: Vec<TokenType>,
    /// BPE merges, `"left right"`, in rank order.
    pub merges: Vec<String>,
    pub special: SpecialIds,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
}

impl VocabSpec {
    /// A spec with the given model and tokens and everything else defaulted.
    pub fn new(model: ModelKind, tokens: Vec<String>) -> VocabSpec {
        VocabSpec {
            model,
            pre: String::new(),
            tokens,
            scores: Vec::new(),
            token_types: Vec::new(),
            merges: Vec::new(),
            special: SpecialIds::default(),
            add_bos: None,
            add_eos: None,
            add_space_prefix: None,
        }
    }
}

/// Token attributes as llama.cpp derives them from the type (a bit set, since
/// the loader adds bits such as "control" to end-of-generation tokens).
pub(crate) mod attr {
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;

    pub fn from_type(t: super::TokenType) -> u16 {
        use super::TokenType::*;
        match t {
            Undefined => 0,
            Normal => NORMAL,
            Unknown => UNKNOWN,
            Control => CONTROL,
            UserDefined => USER_DEFINED,
            Unused => UNUSED,
            Byte => BYTE,
        }
    }
}
