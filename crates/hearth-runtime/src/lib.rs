//! A runnable model: the engine's model with the tokeniser and chat template
//! read from the same GGUF file, and the loops that use them: generation
//! (streamed, one sequence or many in a batch), scoring of candidate
//! continuations, the typed tasks built on them (`tasks`), perplexity and
//! benchmarks.
//!
//! This crate strings the parts together; it owns no maths (that is the
//! engine's and the kernels'), no text rules (`hearth-text`) and no sampling
//! rules (`hearth-sample`). The CLI and, later, the daemon's scheduler call it.

mod bench;
mod embed;
mod error;
mod generate;
mod perplexity;
mod prefix;
mod sequence;
pub mod tasks;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use hearth_engine::Model;
use hearth_sample::VocabEntry;
use hearth_text::{ChatTemplate, TokenType, Tokenizer};

pub use bench::{
    bench, bench_constraint, bench_contended, bench_with_adapter, BenchResult, ConstraintBench,
};
pub use embed::{Embedder, Embeddings};
pub use error::{Result, RuntimeError};
pub use generate::{GenOptions, GenOutput};
pub use hearth_engine::{Adapter, AdapterFormat, KvPool, KvPoolStats};
pub use hearth_sample::{Constraint, ConstraintError, ConstraintSpec, ConstraintVocab};
pub use hearth_text::Message;
pub use perplexity::{perplexity, Perplexity};
pub use prefix::PrefixCache;
pub use sequence::{SeqParams, Sequence, Step, StopReason, TopEntry};

/// The context used when the caller does not choose one: long enough for a
/// chat, small enough that the cache of a 2-core device stays modest.
pub const DEFAULT_CTX: usize = 4096;

pub struct Runtime {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    pub path: PathBuf,
    /// Wall time of mapping the file and building model, tokeniser and template.
    pub load_ms: f64,
    /// The vocabulary as the constraint engine sees it, built on the first
    /// constrained request (it walks the whole vocabulary) and kept.
    constraint_vocab: OnceLock<Arc<ConstraintVocab>>,
}

impl Runtime {
    pub fn load(path: &Path, threads: usize) -> Result<Runtime> {
        if threads == 0 {
            return Err(RuntimeError::Invalid(
                "thread count must be at least 1".into(),
            ));
        }
        let t0 = Instant::now();
        let model = Model::load(path, threads)?;
        let tokenizer =
            Tokenizer::from_gguf(model.file()).map_err(|e| RuntimeError::Text(e.to_string()))?;
        if tokenizer.vocab_size() != model.hyper().n_vocab {
            return Err(RuntimeError::Invalid(format!(
                "the tokenizer has {} tokens but the model's vocabulary has {}",
                tokenizer.vocab_size(),
                model.hyper().n_vocab
            )));
        }
        let template =
            ChatTemplate::from_gguf(model.file()).map_err(|e| RuntimeError::Text(e.to_string()))?;
        Ok(Runtime {
            model,
            tokenizer,
            template,
            path: path.to_path_buf(),
            load_ms: t0.elapsed().as_secs_f64() * 1e3,
            constraint_vocab: OnceLock::new(),
        })
    }

    /// Load a LoRA adapter for this model and check it against it: a
    /// llama.cpp GGUF adapter file, or a PEFT directory holding
    /// `adapter_config.json` and `adapter_model.safetensors`.
    pub fn load_adapter(&self, path: &Path) -> Result<Arc<Adapter>> {
        let hp = self.model.hyper();
        let wrap = |error| RuntimeError::Adapter {
            path: path.to_path_buf(),
            error,
        };
        let adapter = if path.is_dir() {
            let config_path = path.join("adapter_config.json");
            let config = std::fs::read_to_string(&config_path).map_err(|e| {
                RuntimeError::Invalid(format!("cannot read {}: {e}", config_path.display()))
            })?;
            let st_path = path.join("adapter_model.safetensors");
            let st = hearth_safetensors::SafeTensors::open(&st_path).map_err(|e| wrap(e.into()))?;
            Adapter::from_peft(&config, &st, hp)
        } else {
            let file = hearth_gguf::GgufFile::open(path).map_err(|e| wrap(e.into()))?;
            Adapter::from_gguf(&file, hp)
        };
        Ok(Arc::new(adapter.map_err(wrap)?))
    }

    /// The model's KV block pool: every sequence's cache (and every prefix
    /// a [`PrefixCache`] keeps) takes its blocks from it. Clones of the
    /// handle share the pool, so the memory governor may keep one.
    pub fn kv_pool(&self) -> &KvPool {
        self.model.kv_pool()
    }

    /// The pool's capacity, bytes in use, reserved and free.
    pub fn kv_stats(&self) -> KvPoolStats {
        self.kv_pool().stats()
    }

    /// Bytes the KV pool may hand out (`usize::MAX`: unbounded, the default).
    pub fn kv_capacity(&self) -> usize {
        self.kv_pool().capacity()
    }

    /// Bytes of KV blocks held by sequences and kept prefixes.
    pub fn kv_in_use(&self) -> usize {
        self.kv_pool().in_use()
    }

    /// Set the KV pool's capacity in bytes; see [`KvPool::set_capacity`].
    /// Returns the bytes in use, which may exceed the new capacity (nothing
    /// held is taken away; new blocks are refused until it fits).
    pub fn set_kv_capacity(&self, bytes: usize) -> usize {
        self.kv_pool().set_capacity(bytes)
    }

    /// KV bytes a sequence holding `positions` positions needs, in whole
    /// blocks (an upper bound: shared prefix blocks are counted in full).
    pub fn kv_bytes_for(&self, positions: usize) -> usize {
        self.kv_pool().bytes_for(positions)
    }

    /// KV bytes a request needs at most: its prompt plus `max_tokens`
    /// generated tokens, capped by the context it gets.
    pub fn kv_bytes_for_request(
        &self,
        n_prompt: usize,
        max_tokens: usize,
        n_ctx: Option<usize>,
    ) -> usize {
        let n = n_prompt.saturating_add(max_tokens).min(self.context(n_ctx));
        self.kv_bytes_for(n)
    }

    /// The context a request gets: what it asked for, capped by what the
    /// model was trained on.
    pub fn context(&self, requested: Option<usize>) -> usize {
        let train = self.model.hyper().n_ctx_train;
        requested.unwrap_or(DEFAULT_CTX).min(train).max(1)
    }

    /// Tokenise raw text as the golden references do: BOS where the model
    /// adds one, special-token text parsed.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(text, add_special, parse_special))
    }

    /// Render a conversation through the model's chat template (with the
    /// generation prompt) and tokenise it. The template writes BOS itself
    /// where the model wants one, so none is added here.
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let text = self
            .template
            .render(messages, true)
            .map_err(|e| RuntimeError::Text(e.to_string()))?;
        self.tokenize(&text, false, true)
    }

    /// This model's vocabulary prepared for constrained decoding (built once,
    /// then shared by every constrained sequence).
    pub fn constraint_vocab(&self) -> Result<Arc<ConstraintVocab>> {
        if let Some(v) = self.constraint_vocab.get() {
            return Ok(v.clone());
        }
        let v = Arc::new(constraint_vocab_of(&self.tokenizer)?);
        // Two threads racing here build the same table; either may win.
        Ok(self.constraint_vocab.get_or_init(|| v).clone())
    }

    /// Compile `spec` for this model. A schema, pattern or grammar the
    /// engine cannot handle is [`RuntimeError::Constraint`] naming why.
    pub fn constraint(&self, spec: &ConstraintSpec) -> Result<Constraint> {
        let vocab = self.constraint_vocab()?;
        Constraint::new(&vocab, spec).map_err(|e| RuntimeError::Constraint(e.0))
    }
}

/// Every token's bytes as the streaming detokeniser emits them (so the
/// grammar sees exactly the text the caller gets): byte-level BPE pieces
/// are already raw bytes, SentencePiece pieces have `▁` as a space and
/// byte-fallback tokens as their byte. Control and unknown-type tokens emit
/// nothing in text, so they are special to the engine.
fn constraint_vocab_of(tok: &Tokenizer) -> Result<ConstraintVocab> {
    let entries: Vec<VocabEntry> = (0..tok.vocab_size() as u32)
        .map(|id| {
            let special = matches!(
                tok.token_type(id),
                Some(TokenType::Control | TokenType::Unknown)
            );
            VocabEntry {
                bytes: if special {
                    tok.piece_bytes(id).to_vec()
                } else {
                    tok.piece(id, false).to_vec()
                },
                special,
            }
        })
        .collect();
    ConstraintVocab::new(&entries, tok.eog_ids()).map_err(|e| RuntimeError::Constraint(e.0))
}
