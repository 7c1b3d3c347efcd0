//! Hugging Face `tokenizer.json` tokenisers (BERT's WordPiece and the rest
//! the `tokenizers` crate reads), for the safetensors models such as the
//! sentence-embedding encoders.
//!
//! A thin wrapper: the file's own normaliser, pre-tokeniser, model and
//! post-processor (which adds `[CLS]` … `[SEP]` for BERT) do the work. Two
//! things are overridden on purpose: the file's padding is switched off
//! (the engine batches without pad tokens) and its truncation is replaced
//! by the caller's limit, because `tokenizer.json` files carry whatever the
//! exporter last used (all-MiniLM-L6-v2's says 128, while sentence-transformers
//! cuts at the model's `max_seq_length`, 256).
//!
//! This module owns: loading `tokenizer.json` and encoding text to ids. It
//! must not know about models, pooling or the GGUF tokenisers of this crate.

use std::path::{Path, PathBuf};

use thiserror::Error;
use tokenizers::{Tokenizer as HfInner, TruncationDirection, TruncationParams, TruncationStrategy};

#[derive(Debug, Error)]
pub enum HfError {
    #[error("{path}: cannot load tokenizer.json: {why}")]
    Load { path: PathBuf, why: String },
    #[error("tokenizer.json: {0}")]
    Invalid(String),
    #[error("tokenizing failed: {0}")]
    Encode(String),
}

/// A `tokenizer.json` tokeniser with a caller-chosen length limit.
pub struct HfTokenizer {
    inner: HfInner,
    max_len: Option<usize>,
}

/// The ids of one text, special tokens included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfEncoding {
    pub ids: Vec<u32>,
    /// Whether word pieces were dropped to fit the length limit.
    pub truncated: bool,
}

impl HfTokenizer {
    /// Load a `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<HfTokenizer, HfError> {
        let bytes = std::fs::read(path).map_err(|e| HfError::Load {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        Self::from_bytes(&bytes).map_err(|e| HfError::Load {
            path: path.to_path_buf(),
            why: match e {
                HfError::Invalid(w) => w,
                other => other.to_string(),
            },
        })
    }

    /// Load a `tokenizer.json` held in memory.
    pub fn from_bytes(json: &[u8]) -> Result<HfTokenizer, HfError> {
        let mut inner = HfInner::from_bytes(json).map_err(|e| HfError::Invalid(e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| HfError::Invalid(e.to_string()))?;
        Ok(HfTokenizer {
            inner,
            max_len: None,
        })
    }

    /// Cut every encoding to at most `max_len` ids, special tokens included
    /// (word pieces are dropped from the end, the specials kept), or lift
    /// the limit with `None`.
    pub fn set_max_len(&mut self, max_len: Option<usize>) -> Result<(), HfError> {
        let params = max_len.map(|max_length| TruncationParams {
            direction: TruncationDirection::Right,
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        });
        self.inner
            .with_truncation(params)
            .map_err(|e| HfError::Invalid(format!("length limit {max_len:?}: {e}")))?;
        self.max_len = max_len;
        Ok(())
    }

    pub fn max_len(&self) -> Option<usize> {
        self.max_len
    }

    /// Tokenise `text` with the special tokens the file's post-processor
    /// adds (`[CLS]` … `[SEP]` for BERT), cut to the length limit.
    pub fn encode(&self, text: &str) -> Result<HfEncoding, HfError> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| HfError::Encode(e.to_string()))?;
        Ok(HfEncoding {
            ids: enc.get_ids().to_vec(),
            truncated: !enc.get_overflowing().is_empty(),
        })
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token, e.g. `"[CLS]"`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The text of an id (for debugging and tests).
    pub fn id_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("max_len", &self.max_len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BERT-style tokenizer.json: the same component types as
    /// all-MiniLM-L6-v2's, a vocabulary of a dozen pieces, and the file's
    /// own truncation/padding set (which must be overridden).
    const TINY: &str = r###"{
      "version": "1.0",
      "truncation": {"max_length": 4, "strategy": "LongestFirst", "stride": 0},
      "padding": {"strategy": {"Fixed": 8}, "direction": "Right", "pad_to_multiple_of": null,
                  "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
      "added_tokens": [
        {"id": 0, "special": true, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false},
        {"id": 1, "special": true, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false},
        {"id": 2, "special": true, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false},
        {"id": 3, "special": true, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false}
      ],
      "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
      "pre_tokenizer": {"type": "BertPreTokenizer"},
      "post_processor": {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
        "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
      "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
      "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
        "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4, "world": 5, "un": 6, "##able": 7, ",": 8, "the": 9, "cafe": 10}}
    }"###;

    #[test]
    fn encodes_with_specials_and_no_file_limits() {
        let t = HfTokenizer::from_bytes(TINY.as_bytes()).unwrap();
        assert_eq!(t.vocab_size(), 11);
        assert_eq!(t.token_id("[CLS]"), Some(2));
        let e = t.encode("Hello, WORLD unable the world").unwrap();
        // The file's own 4-token truncation and 8-token padding are off.
        assert_eq!(e.ids, [2, 4, 8, 5, 6, 7, 9, 5, 3]);
        assert!(!e.truncated);
        // strip_accents null follows lowercase (true): "Café" becomes "cafe".
        assert_eq!(t.encode("Café xyz").unwrap().ids, [2, 10, 1, 3]);
        assert_eq!(t.encode("").unwrap().ids, [2, 3]);
    }

    #[test]
    fn truncation_keeps_the_specials() {
        let mut t = HfTokenizer::from_bytes(TINY.as_bytes()).unwrap();
        t.set_max_len(Some(5)).unwrap();
        let e = t.encode("hello world hello world hello").unwrap();
        assert_eq!(e.ids, [2, 4, 5, 4, 3]);
        assert!(e.truncated);
        let e = t.encode("hello world").unwrap();
        assert_eq!(e.ids, [2, 4, 5, 3]);
        assert!(!e.truncated);
        t.set_max_len(None).unwrap();
        assert_eq!(
            t.encode("hello world hello world hello").unwrap().ids.len(),
            7
        );
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let e = HfTokenizer::from_bytes(b"{").unwrap_err().to_string();
        assert!(e.starts_with("tokenizer.json:"), "{e}");
        let e = HfTokenizer::from_file(Path::new("/nonexistent/tokenizer.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/tokenizer.json"), "{e}");
    }
}
