//! Sentence embeddings from a sentence-transformers model directory
//! (all-MiniLM-L6-v2 by default): `config.json` and `model.safetensors` for
//! the BERT encoder, `tokenizer.json`, `sentence_bert_config.json` for the
//! length limit, `modules.json` and `1_Pooling/config.json` for what is done
//! with the token states.
//!
//! Only what is implemented is accepted: a Transformer, mean pooling and
//! an optional Normalize module. A model that adds anything else (a Dense
//! projection, CLS or max pooling) would give different vectors, so it is
//! refused at load with the module named, rather than embedded wrongly.
//! Vectors are always L2-normalised (for cosine use that changes nothing,
//! and it is what the default model does).
//!
//! This module strings files, tokeniser and encoder together; it owns no
//! maths (the engine's `bert` module pools and normalises) and no text rules
//! (`hearth-text`'s `hf` module).

use std::path::{Path, PathBuf};
use std::time::Instant;

use hearth_engine::{BertConfig, BertModel};
use hearth_safetensors::SafeTensors;
use hearth_text::HfTokenizer;
use serde_json::Value;

use crate::error::{Result, RuntimeError};

/// Most tokens put through one forward pass: bounds the activations
/// (about 20 KB per token for MiniLM) when a caller sends many long texts.
const MAX_BATCH_TOKENS: usize = 4096;

/// A loaded embedding model.
pub struct Embedder {
    model: BertModel,
    tokenizer: HfTokenizer,
    max_seq_len: usize,
    name: String,
    dir: PathBuf,
    /// Wall time of reading the files and building encoder and tokeniser.
    pub load_ms: f64,
}

/// The result of [`Embedder::embed`].
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    /// One unit-length vector of [`Embedder::dim`] floats per text, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens each text was embedded from, special tokens included, after
    /// truncation to the model's limit.
    pub tokens: Vec<usize>,
    /// The sum of `tokens`: what an API reports as prompt tokens.
    pub prompt_tokens: usize,
    /// Whether each text was cut to the model's limit.
    pub truncated: Vec<bool>,
}

fn invalid(msg: String) -> RuntimeError {
    RuntimeError::Invalid(msg)
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| invalid(format!("{}: not valid JSON: {e}", path.display())))
}

impl Embedder {
    /// Load the model in `dir` (a sentence-transformers model directory)
    /// with a pool of `threads` threads.
    pub fn load(dir: &Path, threads: usize) -> Result<Embedder> {
        if threads == 0 {
            return Err(invalid("thread count must be at least 1".into()));
        }
        let t0 = Instant::now();
        if !dir.is_dir() {
            return Err(invalid(format!("{}: not a model directory", dir.display())));
        }

        let pooling_dir = check_modules(dir)?;
        let config_path = dir.join("config.json");
        let config_text = std::fs::read_to_string(&config_path)
            .map_err(|e| invalid(format!("{}: {e}", config_path.display())))?;
        let config = BertConfig::from_json(&config_text)
            .map_err(|e| invalid(format!("{}: {e}", config_path.display())))?;
        check_pooling(
            &dir.join(&pooling_dir).join("config.json"),
            config.hidden_size,
        )?;

        let max_seq_len = max_seq_len(dir, &config)?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer =
            HfTokenizer::from_file(&tok_path).map_err(|e| RuntimeError::Text(e.to_string()))?;
        tokenizer
            .set_max_len(Some(max_seq_len))
            .map_err(|e| RuntimeError::Text(e.to_string()))?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(invalid(format!(
                "{} has {} tokens but config.json's vocab_size is {}",
                tok_path.display(),
                tokenizer.vocab_size(),
                config.vocab_size
            )));
        }

        let st_path = dir.join("model.safetensors");
        let st = SafeTensors::open(&st_path).map_err(|e| invalid(e.to_string()))?;
        let model = BertModel::load(&st, config, threads)
            .map_err(|e| invalid(format!("{}: {e}", st_path.display())))?;

        Ok(Embedder {
            model,
            tokenizer,
            max_seq_len,
            name: default_name(dir),
            dir: dir.to_path_buf(),
            load_ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// The same embedder under the name callers should report (e.g. the
    /// store's model name, `minilm`).
    pub fn with_name(mut self, name: impl Into<String>) -> Embedder {
        self.name = name.into();
        self
    }

    /// The model's name: the one given to [`Self::with_name`], else taken
    /// from its directory.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Length of every vector.
    pub fn dim(&self) -> usize {
        self.model.dim()
    }

    /// Most tokens (special tokens included) a text is embedded from;
    /// longer texts are cut, as sentence-transformers does.
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// The ids a text is embedded from (`[CLS]` … `[SEP]`, truncated).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer
            .encode(text)
            .map(|e| e.ids)
            .map_err(|e| RuntimeError::Text(e.to_string()))
    }

    /// Embed `texts`, several per forward pass. The empty string is embedded
    /// as the reference does (from `[CLS]` and `[SEP]` alone); an API that
    /// wants to refuse it must do so itself. A text's vector does not depend
    /// on the other texts of the call.
    pub fn embed(&self, texts: &[&str]) -> Result<Embeddings> {
        let encoded = texts
            .iter()
            .map(|t| self.tokenizer.encode(t))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| RuntimeError::Text(e.to_string()))?;
        let truncated = encoded.iter().map(|e| e.truncated).collect();
        let ids: Vec<Vec<u32>> = encoded.into_iter().map(|e| e.ids).collect();
        let tokens: Vec<usize> = ids.iter().map(Vec::len).collect();
        let mut vectors = Vec::with_capacity(texts.len());
        let mut start = 0;
        while start < ids.len() {
            let mut end = start;
            let mut n_tok = 0;
            while end < ids.len() && (end == start || n_tok + ids[end].len() <= MAX_BATCH_TOKENS) {
                n_tok += ids[end].len();
                end += 1;
            }
            let batch: Vec<&[u32]> = ids[start..end].iter().map(Vec::as_slice).collect();
            let out = self
                .model
                .embed_mean(&batch)
                .map_err(|e| invalid(format!("embedding with {}: {e}", self.name)))?;
            vectors.extend(out);
            start = end;
        }
        Ok(Embeddings {
            vectors,
            prompt_tokens: tokens.iter().sum(),
            tokens,
            truncated,
        })
    }
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("dim", &self.dim())
            .field("max_seq_len", &self.max_seq_len)
            .finish()
    }
}

/// The directory's name, or its parent's when it is a generic one such as
/// the `model/` folder of a wheel.
fn default_name(dir: &Path) -> String {
    let base = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    match base(dir) {
        Some(n) if n != "model" && n != "models" => n,
        _ => dir
            .parent()
            .and_then(base)
            .unwrap_or_else(|| "embedding-model".into()),
    }
}

/// Checks `modules.json` (when present) lists only modules implemented here
/// and returns the pooling module's directory (`1_Pooling` by default).
fn check_modules(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("modules.json");
    if !path.exists() {
        return Ok(PathBuf::from("1_Pooling"));
    }
    let v = read_json(&path)?;
    let Some(modules) = v.as_array() else {
        return Err(invalid(format!(
            "{}: expected a list of modules",
            path.display()
        )));
    };
    let mut pooling = None;
    for m in modules {
        let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
        let kind = ty.rsplit('.').next().unwrap_or("");
        match kind {
            "Transformer" | "Normalize" => {}
            "Pooling" => {
                let p = m.get("path").and_then(Value::as_str).unwrap_or("1_Pooling");
                // The path comes from the file: keep it inside the model directory.
                let rel = Path::new(p);
                if rel.is_absolute() || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                    return Err(invalid(format!(
                        "{}: pooling path {p:?} leaves the model directory",
                        path.display()
                    )));
                }
                pooling = Some(rel.to_path_buf());
            }
            _ => {
                return Err(invalid(format!(
                    "{}: module {ty:?} is not supported (supported: Transformer, Pooling with mean tokens, Normalize)",
                    path.display()
                )))
            }
        }
    }
    pooling.ok_or_else(|| invalid(format!("{}: no Pooling module", path.display())))
}

/// Refuses any pooling but mean-of-tokens, and a width that is not the encoder's.
fn check_pooling(path: &Path, hidden: usize) -> Result<()> {
    let v = read_json(path)?;
    let Some(obj) = v.as_object() else {
        return Err(invalid(format!("{}: expected an object", path.display())));
    };
    if obj.get("pooling_mode_mean_tokens").and_then(Value::as_bool) != Some(true) {
        return Err(invalid(format!(
            "{}: pooling_mode_mean_tokens is not true; only mean pooling is implemented",
            path.display()
        )));
    }
    for (k, v) in obj {
        if k.starts_with("pooling_mode_")
            && k != "pooling_mode_mean_tokens"
            && v.as_bool() == Some(true)
        {
            return Err(invalid(format!(
                "{}: {k} is set; only mean pooling is implemented",
                path.display()
            )));
        }
    }
    if let Some(d) = obj.get("word_embedding_dimension").and_then(Value::as_u64) {
        if d as usize != hidden {
            return Err(invalid(format!(
                "{}: word_embedding_dimension is {d} but config.json's hidden_size is {hidden}",
                path.display()
            )));
        }
    }
    Ok(())
}

/// `sentence_bert_config.json`'s `max_seq_length`, capped by the model's
/// positions; the positions alone when the file is absent.
fn max_seq_len(dir: &Path, config: &BertConfig) -> Result<usize> {
    let path = dir.join("sentence_bert_config.json");
    let limit = config.max_position_embeddings;
    if !path.exists() {
        return Ok(limit);
    }
    let v = read_json(&path)?;
    match v.get("max_seq_length") {
        None | Some(Value::Null) => Ok(limit),
        Some(n) => match n.as_u64() {
            // Room for [CLS] and [SEP].
            Some(n) if n >= 2 => Ok((n as usize).min(limit)),
            _ => Err(invalid(format!(
                "{}: max_seq_length {n} is not an integer of at least 2",
                path.display()
            ))),
        },
    }
}
