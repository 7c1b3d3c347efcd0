//! Reading a tokeniser's description out of GGUF metadata.
//!
//! This module owns: the `tokenizer.*` key names and their conversion into a
//! [`VocabSpec`]. A key that is present with the wrong type is an error
//! naming it; optional keys that are absent take llama.cpp's defaults.

use hearth_gguf::{GgufError, GgufFile, Value};

use crate::error::TextError;
use crate::tokenizer::Tokenizer;
use crate::vocab::{ModelKind, SpecialIds, TokenType, VocabSpec};

fn opt<'a, T>(
    f: &'a GgufFile,
    key: &str,
    get: impl FnOnce(&'a GgufFile, &str) -> Result<T, GgufError>,
) -> Result<Option<T>, TextError> {
    if f.get(key).is_none() {
        return Ok(None);
    }
    Ok(Some(get(f, key)?))
}

fn strings(f: &GgufFile, key: &str) -> Result<Vec<String>, TextError> {
    f.get_array(key)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().map(str::to_string).ok_or_else(|| {
                TextError::InvalidVocab(format!(
                    "{key}[{i}] is a {}, expected a string",
                    v.type_name()
                ))
            })
        })
        .collect()
}

fn id(f: &GgufFile, name: &str) -> Result<Option<u32>, TextError> {
    opt(f, &format!("tokenizer.ggml.{name}"), GgufFile::get_u32)
}

impl VocabSpec {
    /// Reads `tokenizer.ggml.*` from a GGUF file.
    pub fn from_gguf(f: &GgufFile) -> Result<VocabSpec, TextError> {
        let model = match f.get_str("tokenizer.ggml.model")? {
            "gpt2" => ModelKind::Bpe,
            "llama" => ModelKind::Spm,
            other => return Err(TextError::UnknownModel(other.to_string())),
        };
        let pre = opt(f, "tokenizer.ggml.pre", GgufFile::get_str)?
            .unwrap_or("")
            .to_string();
        let tokens = strings(f, "tokenizer.ggml.tokens")?;
        let scores = match opt(f, "tokenizer.ggml.scores", GgufFile::get_array)? {
            None => Vec::new(),
            Some(vals) => vals
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_f32().ok_or_else(|| {
                        TextError::InvalidVocab(format!(
                            "tokenizer.ggml.scores[{i}] is a {}, expected a number",
                            v.type_name()
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let token_types = match opt(f, "tokenizer.ggml.token_type", GgufFile::get_array)? {
            None => Vec::new(),
            Some(vals) => vals
                .iter()
                .map(|v: &Value| TokenType::from_code(v.as_i64().unwrap_or(0)))
                .collect(),
        };
        let merges = match model {
            ModelKind::Bpe => strings(f, "tokenizer.ggml.merges")?,
            ModelKind::Spm => Vec::new(),
        };
        let special = SpecialIds {
            bos: id(f, "bos_token_id")?,
            eos: id(f, "eos_token_id")?,
            eot: id(f, "eot_token_id")?,
            eom: id(f, "eom_token_id")?,
            unk: id(f, "unknown_token_id")?,
            // The key's spelling is llama.cpp's.
            sep: id(f, "seperator_token_id")?,
            pad: id(f, "padding_token_id")?,
            mask: id(f, "mask_token_id")?,
            fim_pre: id(f, "fim_pre_token_id")?.or(id(f, "prefix_token_id")?),
            fim_suf: id(f, "fim_suf_token_id")?.or(id(f, "suffix_token_id")?),
            fim_mid: id(f, "fim_mid_token_id")?.or(id(f, "middle_token_id")?),
            fim_pad: id(f, "fim_pad_token_id")?,
            fim_rep: id(f, "fim_rep_token_id")?,
            fim_sep: id(f, "fim_sep_token_id")?,
        };
        Ok(VocabSpec {
            model,
            pre,
            tokens,
            scores,
            token_types,
            merges,
            special,
            add_bos: opt(f, "tokenizer.ggml.add_bos_token", GgufFile::get_bool)?,
            add_eos: opt(f, "tokenizer.ggml.add_eos_token", GgufFile::get_bool)?,
            add_space_prefix: opt(f, "tokenizer.ggml.add_space_prefix", GgufFile::get_bool)?,
        })
    }
}

impl Tokenizer {
    /// Builds the tokeniser a GGUF file describes.
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer, TextError> {
        Tokenizer::from_spec(VocabSpec::from_gguf(f)?)
    }
}
