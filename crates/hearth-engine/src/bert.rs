//! The `bert` architecture: a bidirectional encoder (BERT, MiniLM and the
//! sentence-transformers models built on them) read from safetensors with a
//! Hugging Face `config.json`, for embeddings.
//!
//! Forward pass, as Hugging Face's `BertModel` computes it: the sum of word,
//! token-type and position embeddings, a LayerNorm, then per layer
//! self-attention over the whole sequence (no causal mask), output
//! projection, residual and LayerNorm, then the FFN (`gelu`, the erf form),
//! residual and LayerNorm.
//!
//! Batching: the sequences of a batch are packed one after another (no pad
//! tokens) and attention only looks within a token's own sequence. That is
//! exactly what padding plus an attention mask computes (masked scores
//! become exp(-inf) = 0) without spending work on pad positions. Every
//! matmul goes through `hearth_kernels::gemm`, which is bit-identical per
//! (row, token) whatever the number of tokens, and everything else is per
//! token or per sequence, so a text's vector does not depend on what it was
//! batched with.
//!
//! Numerics: weights are kept in f32 (F16/BF16 files are widened at load)
//! and activations are never quantised: embeddings are compared by cosine
//! and must track the reference closely.
//!
//! This module owns the encoder and its config. It must not know about
//! tokenisers, pooling configs or files other than the safetensors it is
//! given; the runtime strings those together.

use std::fmt;

use hearth_kernels::{self as k, GgmlType};
use hearth_safetensors::{SafeTensors, SafetensorsError};
use serde::Deserialize;
use thiserror::Error;

use crate::pool::{SharedMut, ThreadPool};

/// Errors of the BERT encoder: each names the config key, tensor or input at fault.
#[derive(Debug, Error)]
pub enum BertError {
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    #[error("config.json is not a valid BERT config: {0}")]
    ConfigJson(String),
    #[error("config.json: {key} {why}")]
    Config { key: &'static str, why: String },
    #[error("tensor {name:?} has shape {found:?}, but config.json implies {expected:?}")]
    Shape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    BadToken { id: u32, n_vocab: usize },
    #[error("sequence {index} has {len} tokens, over the model's {max} positions")]
    TooLong {
        index: usize,
        len: usize,
        max: usize,
    },
    #[error("sequence {index} is empty: a BERT input needs at least one token")]
    EmptySequence { index: usize },
}

pub type BertResult<T> = std::result::Result<T, BertError>;

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

/// The fields of a Hugging Face BERT `config.json` the forward pass uses.
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    #[serde(default)]
    pub model_type: Option<String>,
}

impl BertConfig {
    /// Parse and check a `config.json`.
    pub fn from_json(text: &str) -> BertResult<BertConfig> {
        let c: BertConfig =
            serde_json::from_str(text).map_err(|e| BertError::ConfigJson(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> BertResult<()> {
        let bad = |key, why: String| Err(BertError::Config { key, why });
        if let Some(t) = &self.model_type {
            if t != "bert" {
                return bad(
                    "model_type",
                    format!("is {t:?}; only \"bert\" is supported"),
                );
            }
        }
        if let Some(p) = &self.position_embedding_type {
            if p != "absolute" {
                return bad(
                    "position_embedding_type",
                    format!("is {p:?}; only \"absolute\" is supported"),
                );
            }
        }
        if self.hidden_act != "gelu" {
            return bad(
                "hidden_act",
                format!(
                    "is {:?}; only \"gelu\" (the erf form) is supported",
                    self.hidden_act
                ),
            );
        }
        for (key, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            // Far beyond any BERT; keeps the weight-size products from overflowing.
            if v == 0 || v > 1 << 24 {
                return bad(key, format!("is {v}, expected 1..={}", 1 << 24));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(
                "num_attention_heads",
                format!(
                    "({}) does not divide hidden_size ({})",
                    self.num_attention_heads, self.hidden_size
                ),
            );
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return bad(
                "layer_norm_eps",
                format!("is {}, expected a positive number", self.layer_norm_eps),
            );
        }
        Ok(())
    }
}

/// `y = x Wᵀ + b` with `W` stored as PyTorch does, `[n_out, n_in]` row-major.
struct Linear {
    w: Vec<f32>,
    b: Vec<f32>,
    n_in: usize,
    n_out: usize,
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    /// Query, key and value stacked into one `[3h, h]` matrix: one pass over
    /// the activations instead of three.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

/// A loaded BERT encoder with its own thread pool.
pub struct BertModel {
    config: BertConfig,
    pool: ThreadPool,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
}

impl fmt::Debug for BertModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BertModel")
            .field("config", &self.config)
            .field("threads", &self.pool.n_threads())
            .finish()
    }
}

/// Reads tensors by their Hugging Face names, with or without the `bert.`
/// prefix that task-head checkpoints (`BertForMaskedLM`, …) add.
struct Reader<'a> {
    st: &'a SafeTensors,
    prefix: &'static str,
}

impl Reader<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> BertResult<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let t = self.st.tensor(&full)?;
        if t.shape() != shape {
            return Err(BertError::Shape {
                name: full,
                found: t.shape().to_vec(),
                expected: shape.to_vec(),
            });
        }
        Ok(t.to_f32()?)
    }

    fn linear(&self, name: &str, n_out: usize, n_in: usize) -> BertResult<Linear> {
        Ok(Linear {
            w: self.get(&format!("{name}.weight"), &[n_out, n_in])?,
            b: self.get(&format!("{name}.bias"), &[n_out])?,
            n_in,
            n_out,
        })
    }

    fn norm(&self, name: &str, n: usize) -> BertResult<Norm> {
        Ok(Norm {
            w: self.get(&format!("{name}.weight"), &[n])?,
            b: self.get(&format!("{name}.bias"), &[n])?,
        })
    }
}

#[derive(Clone, Copy)]
enum Act {
    None,
    Gelu,
}

impl BertModel {
    /// Build the encoder from a validated config and a safetensors file,
    /// checking every tensor's shape against the config.
    pub fn load(st: &SafeTensors, config: BertConfig, threads: usize) -> BertResult<BertModel> {
        config.validate()?;
        let prefix = if st.get("embeddings.word_embeddings.weight").is_none()
            && st.get("bert.embeddings.word_embeddings.weight").is_some()
        {
            "bert."
        } else {
            ""
        };
        let r = Reader { st, prefix };
        let h = config.hidden_size;
        let ff = config.intermediate_size;
        let word = r.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position = r.get(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type = r.get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let emb_norm = r.norm("embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let q = r.linear(&format!("{p}.attention.self.query"), h, h)?;
            let kk = r.linear(&format!("{p}.attention.self.key"), h, h)?;
            let v = r.linear(&format!("{p}.attention.self.value"), h, h)?;
            let qkv = Linear {
                w: [q.w, kk.w, v.w].concat(),
                b: [q.b, kk.b, v.b].concat(),
                n_in: h,
                n_out: 3 * h,
            };
            layers.push(Layer {
                qkv,
                attn_out: r.linear(&format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: r.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                up: r.linear(&format!("{p}.intermediate.dense"), ff, h)?,
                down: r.linear(&format!("{p}.output.dense"), h, ff)?,
                out_norm: r.norm(&format!("{p}.output.LayerNorm"), h)?,
            });
        }
        Ok(BertModel {
            config,
            pool: ThreadPool::new(threads),
            word,
            position,
            token_type,
            emb_norm,
            layers,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Width of a token's hidden state (and of a pooled embedding).
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }

    /// The last hidden states of each sequence (`len × hidden_size`,
    /// row-major), all sequences in one forward pass. Token types are all 0
    /// (single-segment input, as for sentence embeddings).
    pub fn forward(&self, seqs: &[&[u32]]) -> BertResult<Vec<Vec<f32>>> {
        let h = self.config.hidden_size;
        let mut spans = Vec::with_capacity(seqs.len());
        let mut n_tok = 0usize;
        for (index, s) in seqs.iter().enumerate() {
            if s.is_empty() {
                return Err(BertError::EmptySequence { index });
            }
            if s.len() > self.config.max_position_embeddings {
                return Err(BertError::TooLong {
                    index,
                    len: s.len(),
                    max: self.config.max_position_embeddings,
                });
            }
            if let Some(&id) = s.iter().find(|&&id| id as usize >= self.config.vocab_size) {
                return Err(BertError::BadToken {
                    id,
                    n_vocab: self.config.vocab_size,
                });
            }
            spans.push((n_tok, s.len()));
            n_tok += s.len();
        }
        if n_tok == 0 {
            return Ok(vec![Vec::new(); seqs.len()]);
        }

        let mut x = vec![0f32; n_tok * h];
        for (s, &(start, _)) in seqs.iter().zip(&spans) {
            for (p, &id) in s.iter().enumerate() {
                let row = &mut x[(start + p) * h..(start + p + 1) * h];
                let w = &self.word[id as usize * h..(id as usize + 1) * h];
                let t = &self.token_type[..h];
                let pe = &self.position[p * h..(p + 1) * h];
                // Hugging Face's order: (word + token type) + position.
                for i in 0..h {
                    row[i] = (w[i] + t[i]) + pe[i];
                }
            }
        }
        self.norm_rows(&mut x, None, &self.emb_norm);

        let ff = self.config.intermediate_size;
        let mut qkv = vec![0f32; n_tok * 3 * h];
        let mut ctx = vec![0f32; n_tok * h];
        let mut proj = vec![0f32; n_tok * h];
        let mut inter = vec![0f32; n_tok * ff];
        for layer in &self.layers {
            self.linear(&x, n_tok, &layer.qkv, Act::None, &mut qkv);
            self.attention(&qkv, &spans, &mut ctx);
            self.linear(&ctx, n_tok, &layer.attn_out, Act::None, &mut proj);
            self.norm_rows(&mut x, Some(&proj), &layer.attn_norm);
            self.linear(&x, n_tok, &layer.up, Act::Gelu, &mut inter);
            self.linear(&inter, n_tok, &layer.down, Act::None, &mut proj);
            self.norm_rows(&mut x, Some(&proj), &layer.out_norm);
        }
        Ok(spans
            .iter()
            .map(|&(start, len)| x[start * h..(start + len) * h].to_vec())
            .collect())
    }

    /// Mean of each sequence's last hidden states, L2-normalised: the
    /// sentence-transformers "mean pooling + Normalize" embedding.
    pub fn embed_mean(&self, seqs: &[&[u32]]) -> BertResult<Vec<Vec<f32>>> {
        let h = self.config.hidden_size;
        let hidden = self.forward(seqs)?;
        Ok(hidden
            .iter()
            .map(|states| {
                let mut v = mean_rows(states, h);
                l2_normalize(&mut v);
                v
            })
            .collect())
    }

    /// `out = act(x Wᵀ + b)` for `n_tok` rows of `x`, the output rows split
    /// over the pool.
    fn linear(&self, x: &[f32], n_tok: usize, lin: &Linear, act: Act, out: &mut [f32]) {
        let (n_in, n_out) = (lin.n_in, lin.n_out);
        debug_assert!(x.len() == n_tok * n_in && out.len() == n_tok * n_out);
        let xb = f32_bytes(x);
        let wb = f32_bytes(&lin.w);
        let mut scratch = vec![0f32; n_out * n_tok];
        let scratch_s = SharedMut::new(&mut scratch);
        let out_s = SharedMut::new(out);
        self.pool.for_chunks(n_out, 16, 4, &|rows| {
            let len = rows.len();
            // SAFETY: each task owns the scratch block of its own output rows.
            let y = unsafe { scratch_s.slice(rows.start * n_tok..rows.end * n_tok) };
            k::gemm(GgmlType::F32, n_in, wb, rows.clone(), xb, n_tok, y);
            let bias = &lin.b[rows.clone()];
            for t in 0..n_tok {
                let base = t * n_out;
                // SAFETY: columns `rows` of output row `t` belong to this task alone.
                let dst = unsafe { out_s.slice(base + rows.start..base + rows.end) };
                let src = &y[t * len..(t + 1) * len];
                for ((d, &s), &b) in dst.iter_mut().zip(src).zip(bias) {
                    let v = s + b;
                    *d = match act {
                        Act::None => v,
                        Act::Gelu => gelu_erf(v),
                    };
                }
            }
        });
    }

    /// Scaled dot-product attention of every token over the tokens of its
    /// own sequence, one task per (sequence, head).
    fn attention(&self, qkv: &[f32], spans: &[(usize, usize)], ctx: &mut [f32]) {
        let h = self.config.hidden_size;
        let n_head = self.config.num_attention_heads;
        let dh = h / n_head;
        let scale = 1.0 / (dh as f32).sqrt();
        let ctx_s = SharedMut::new(ctx);
        self.pool.run(spans.len() * n_head, &|task| {
            let (start, len) = spans[task / n_head];
            let head = task % n_head;
            let at = |tok: usize, part: usize| {
                let o = (start + tok) * 3 * h + part * h + head * dh;
                &qkv[o..o + dh]
            };
            let mut scores = vec![0f32; len];
            for qi in 0..len {
                let q = at(qi, 0);
                for (kj, s) in scores.iter_mut().enumerate() {
                    *s = dot(q, at(kj, 1)) * scale;
                }
                k::softmax_inplace(&mut scores);
                let o = (start + qi) * h + head * dh;
                // SAFETY: (token, head) blocks are disjoint and each belongs
                // to the one task of its sequence and head.
                let dst = unsafe { ctx_s.slice(o..o + dh) };
                dst.fill(0.0);
                for (kj, &p) in scores.iter().enumerate() {
                    for (d, &v) in dst.iter_mut().zip(at(kj, 2)) {
                        *d += p * v;
                    }
                }
            }
        });
    }

    /// `x = LayerNorm(x + residual)` (or of `x` alone) for every token row.
    fn norm_rows(&self, x: &mut [f32], residual: Option<&[f32]>, norm: &Norm) {
        let h = self.config.hidden_size;
        let eps = self.config.layer_norm_eps;
        let n_rows = x.len() / h;
        let x_s = SharedMut::new(x);
        self.pool.for_chunks(n_rows, 16, 1, &|rows| {
            // SAFETY: each task owns its own token rows.
            let block = unsafe { x_s.slice(rows.start * h..rows.end * h) };
            for (i, row) in block.chunks_exact_mut(h).enumerate() {
                if let Some(res) = residual {
                    let r = &res[(rows.start + i) * h..(rows.start + i + 1) * h];
                    for (v, &a) in row.iter_mut().zip(r) {
                        *v += a;
                    }
                }
                layer_norm(row, &norm.w, &norm.b, eps);
            }
        });
    }
}

/// LayerNorm with statistics accumulated in f64 (PyTorch accumulates in f32
/// with a more careful order; f64 keeps us at least as close to the exact value).
fn layer_norm(row: &mut [f32], w: &[f32], b: &[f32], eps: f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, &g), &bb) in row.iter_mut().zip(w).zip(b) {
        *v = ((*v as f64 - mean) * inv) as f32 * g + bb;
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums: lets the compiler vectorise without reassociating.
    let mut l = [0f32; 8];
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        l[i % 8] += x * y;
    }
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

/// The mean of the `dim`-wide rows of `states` (zeros if there are none).
pub fn mean_rows(states: &[f32], dim: usize) -> Vec<f32> {
    let n = states.len() / dim.max(1);
    let mut acc = vec![0f64; dim];
    for row in states.chunks_exact(dim.max(1)) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v as f64;
        }
    }
    let n = n.max(1) as f64;
    acc.iter().map(|&a| (a / n) as f32).collect()
}

/// Scale to unit L2 norm; a zero vector stays zero (as `F.normalize` does,
/// with its floor of 1e-12 on the norm).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    let inv = 1.0 / norm.max(1e-12);
    for x in v.iter_mut() {
        *x = (*x as f64 * inv) as f32;
    }
}

/// Hugging Face's `gelu`: `x · Φ(x) = 0.5 x (1 + erf(x / √2))`.
pub fn gelu_erf(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

/// erf to within 1.5e-7 absolute (Abramowitz & Stegun 7.1.26), which is below
/// the f32 rounding of GELU's output for the activations BERT produces; the
/// unit test checks it against the Taylor series.
fn erf(x: f64) -> f64 {
    const P: f64 = 0.327_591_1;
    const A: [f64; 5] = [
        0.254_829_592,
        -0.284_496_736,
        1.421_413_741,
        -1.453_152_027,
        1.061_405_429,
    ];
    let s = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + P * x);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    s * (1.0 - poly * (-x * x).exp())
}

/// The bytes of an f32 slice, as `hearth_kernels::gemm` takes F32 operands.
fn f32_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and every byte of it is initialised; u8 has
    // alignment 1; the length is the same memory in bytes and the borrow
    // keeps `v` alive and unmodified for the result's lifetime.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

#[cfg(test)]
mod tests {
    //! The encoder against an independent naive reference: f64 throughout,
    //! a padded batch with an additive attention mask (as Hugging Face runs
    //! it), erf from its Taylor series. Tiny models are written by the tests.

    use super::*;
    use hearth_safetensors::{serialize, Dtype, TensorData};
    use rand::{Rng, SeedableRng};
    use std::borrow::Cow;
    use std::collections::{BTreeMap, HashMap};

    fn tiny_config() -> BertConfig {
        BertConfig::from_json(
            r#"{"model_type": "bert", "vocab_size": 23, "hidden_size": 12,
                "num_hidden_layers": 2, "num_attention_heads": 3,
                "intermediate_size": 20, "max_position_embeddings": 16,
                "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
                "position_embedding_type": "absolute"}"#,
        )
        .unwrap()
    }

    type Weights = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

    fn tiny_weights(c: &BertConfig, seed: u64) -> Weights {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (h, ff) = (c.hidden_size, c.intermediate_size);
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            (
                "embeddings.word_embeddings.weight".into(),
                vec![c.vocab_size, h],
            ),
            (
                "embeddings.position_embeddings.weight".into(),
                vec![c.max_position_embeddings, h],
            ),
            (
                "embeddings.token_type_embeddings.weight".into(),
                vec![c.type_vocab_size, h],
            ),
            ("embeddings.LayerNorm.weight".into(), vec![h]),
            ("embeddings.LayerNorm.bias".into(), vec![h]),
        ];
        for l in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            for (n, o, i) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", ff, h),
                ("output.dense", h, ff),
            ] {
                shapes.push((format!("{p}.{n}.weight"), vec![o, i]));
                shapes.push((format!("{p}.{n}.bias"), vec![o]));
            }
            for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
                shapes.push((format!("{p}.{n}.weight"), vec![h]));
                shapes.push((format!("{p}.{n}.bias"), vec![h]));
            }
        }
        shapes
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let is_gain = name.ends_with("LayerNorm.weight");
                let v = (0..n)
                    .map(|_| {
                        let r: f32 = rng.gen_range(-1.0..1.0);
                        if is_gain {
                            1.0 + 0.2 * r
                        } else {
                            0.5 * r
                        }
                    })
                    .collect();
                (name, (shape, v))
            })
            .collect()
    }

    fn file(w: &Weights, prefix: &str) -> SafeTensors {
        let names: Vec<String> = w.keys().map(|k| format!("{prefix}{k}")).collect();
        let tensors: Vec<TensorData> = w
            .values()
            .zip(&names)
            .map(|((shape, v), name)| TensorData::from_f32(name, shape, v))
            .collect();
        SafeTensors::from_bytes(serialize(&tensors, &BTreeMap::new()).unwrap()).unwrap()
    }

    /// erf(x) = 2/√π · e^(−x²) · Σ x (2x²)^n / (1·3·…·(2n+1)): every term is
    /// positive, so there is no cancellation at any x.
    fn erf_series(x: f64) -> f64 {
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0.0;
        while n < 400.0 {
            sum += term;
            n += 1.0;
            term *= 2.0 * x * x / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp()
    }

    /// Hugging Face's BertModel, written out naively over a padded batch.
    fn reference(c: &BertConfig, w: &Weights, seqs: &[&[u32]]) -> Vec<Vec<f64>> {
        let g = |n: &str| -> Vec<f64> { w[n].1.iter().map(|&v| v as f64).collect() };
        let (h, nh) = (c.hidden_size, c.num_attention_heads);
        let dh = h / nh;
        let max_len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let ln = |x: &mut [f64], wn: &str| {
            let (gw, gb) = (g(&format!("{wn}.weight")), g(&format!("{wn}.bias")));
            let mean = x.iter().sum::<f64>() / h as f64;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / h as f64;
            for i in 0..h {
                x[i] = (x[i] - mean) / (var + c.layer_norm_eps).sqrt() * gw[i] + gb[i];
            }
        };
        let lin = |x: &[f64], name: &str, n_out: usize| -> Vec<f64> {
            let (wm, b) = (g(&format!("{name}.weight")), g(&format!("{name}.bias")));
            let n_in = x.len();
            (0..n_out)
                .map(|o| b[o] + (0..n_in).map(|i| wm[o * n_in + i] * x[i]).sum::<f64>())
                .collect()
        };
        let mut out = Vec::new();
        for s in seqs {
            // Pad to the batch's longest sequence with token 0 and mask it out.
            let mut ids = s.to_vec();
            ids.resize(max_len, 0);
            let mask: Vec<f64> = (0..max_len)
                .map(|i| if i < s.len() { 0.0 } else { f64::NEG_INFINITY })
                .collect();
            let (we, pe, te) = (
                g("embeddings.word_embeddings.weight"),
                g("embeddings.position_embeddings.weight"),
                g("embeddings.token_type_embeddings.weight"),
            );
            let mut x: Vec<Vec<f64>> = ids
                .iter()
                .enumerate()
                .map(|(p, &id)| {
                    let mut r: Vec<f64> = (0..h)
                        .map(|i| we[id as usize * h + i] + te[i] + pe[p * h + i])
                        .collect();
                    ln(&mut r, "embeddings.LayerNorm");
                    r
                })
                .collect();
            for l in 0..c.num_hidden_layers {
                let p = format!("encoder.layer.{l}");
                let q: Vec<_> = x
                    .iter()
                    .map(|r| lin(r, &format!("{p}.attention.self.query"), h))
                    .collect();
                let kk: Vec<_> = x
                    .iter()
                    .map(|r| lin(r, &format!("{p}.attention.self.key"), h))
                    .collect();
                let v: Vec<_> = x
                    .iter()
                    .map(|r| lin(r, &format!("{p}.attention.self.value"), h))
                    .collect();
                let mut ctx = vec![vec![0f64; h]; max_len];
                for hd in 0..nh {
                    for i in 0..max_len {
                        let sc: Vec<f64> = (0..max_len)
                            .map(|j| {
                                (0..dh)
                                    .map(|d| q[i][hd * dh + d] * kk[j][hd * dh + d])
                                    .sum::<f64>()
                                    / (dh as f64).sqrt()
                                    + mask[j]
                            })
                            .collect();
                        let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let e: Vec<f64> = sc.iter().map(|s| (s - m).exp()).collect();
                        let z: f64 = e.iter().sum();
                        for d in 0..dh {
                            ctx[i][hd * dh + d] =
                                (0..max_len).map(|j| e[j] / z * v[j][hd * dh + d]).sum();
                        }
                    }
                }
                for i in 0..max_len {
                    let a = lin(&ctx[i], &format!("{p}.attention.output.dense"), h);
                    let mut r: Vec<f64> = (0..h).map(|d| a[d] + x[i][d]).collect();
                    ln(&mut r, &format!("{p}.attention.output.LayerNorm"));
                    let up: Vec<f64> =
                        lin(&r, &format!("{p}.intermediate.dense"), c.intermediate_size)
                            .into_iter()
                            .map(|u| 0.5 * u * (1.0 + erf_series(u / 2f64.sqrt())))
                            .collect();
                    let dn = lin(&up, &format!("{p}.output.dense"), h);
                    let mut o: Vec<f64> = (0..h).map(|d| dn[d] + r[d]).collect();
                    ln(&mut o, &format!("{p}.output.LayerNorm"));
                    x[i] = o;
                }
            }
            out.push(x[..s.len()].concat());
        }
        out
    }

    fn batch() -> Vec<Vec<u32>> {
        vec![
            vec![1, 5, 9, 2],
            vec![1, 22, 3, 3, 7, 0, 14, 2],
            vec![4],
            vec![1, 2],
        ]
    }

    #[test]
    fn matches_the_naive_reference() {
        let c = tiny_config();
        let w = tiny_weights(&c, 7);
        let m = BertModel::load(&file(&w, ""), c.clone(), 2).unwrap();
        let seqs = batch();
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let got = m.forward(&refs).unwrap();
        let want = reference(&c, &w, &refs);
        let mut worst = 0f64;
        for (g, r) in got.iter().zip(&want) {
            assert_eq!(g.len(), r.len());
            for (&a, &b) in g.iter().zip(r) {
                worst = worst.max((a as f64 - b).abs());
            }
        }
        assert!(
            worst < 1e-4,
            "largest difference from the reference: {worst}"
        );

        let emb = m.embed_mean(&refs).unwrap();
        for (e, r) in emb.iter().zip(&want) {
            let n = r.len() / c.hidden_size;
            let mut mean: Vec<f64> = (0..c.hidden_size)
                .map(|d| (0..n).map(|t| r[t * c.hidden_size + d]).sum::<f64>() / n as f64)
                .collect();
            let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
            mean.iter_mut().for_each(|v| *v /= norm);
            let cos: f64 = e.iter().zip(&mean).map(|(&a, b)| a as f64 * b).sum();
            assert!(cos > 0.99999, "cosine {cos}");
            let en: f64 = e.iter().map(|&v| (v as f64).powi(2)).sum();
            assert!((en - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn batching_and_threads_do_not_change_results() {
        let c = tiny_config();
        let w = tiny_weights(&c, 11);
        let st = file(&w, "");
        let m1 = BertModel::load(&st, c.clone(), 1).unwrap();
        let m3 = BertModel::load(&st, c, 3).unwrap();
        let seqs = batch();
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let together = m3.forward(&refs).unwrap();
        assert_eq!(together, m1.forward(&refs).unwrap());
        for (s, t) in refs.iter().zip(&together) {
            assert_eq!(&m3.forward(&[s]).unwrap()[0], t, "sequence {s:?}");
        }
    }

    #[test]
    fn prefixed_and_half_precision_checkpoints_load() {
        let c = tiny_config();
        let w = tiny_weights(&c, 3);
        let seqs = batch();
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let plain = BertModel::load(&file(&w, ""), c.clone(), 1).unwrap();
        let prefixed = BertModel::load(&file(&w, "bert."), c.clone(), 1).unwrap();
        assert_eq!(
            plain.forward(&refs).unwrap(),
            prefixed.forward(&refs).unwrap()
        );

        // F16 weights: widened at load, so the result equals an F32 model
        // holding the same (rounded) values.
        let rounded: Weights = w
            .iter()
            .map(|(k, (s, v))| {
                let r = v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
                (k.clone(), (s.clone(), r))
            })
            .collect();
        let tensors: Vec<TensorData> = w
            .iter()
            .map(|(k, (s, v))| TensorData {
                name: k,
                dtype: Dtype::F16,
                shape: s.clone(),
                data: Cow::Owned(
                    v.iter()
                        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                        .collect(),
                ),
            })
            .collect();
        let st16 = SafeTensors::from_bytes(serialize(&tensors, &BTreeMap::new()).unwrap()).unwrap();
        let m16 = BertModel::load(&st16, c.clone(), 1).unwrap();
        let m32 = BertModel::load(&file(&rounded, ""), c, 1).unwrap();
        assert_eq!(m16.forward(&refs).unwrap(), m32.forward(&refs).unwrap());
    }

    #[test]
    fn shape_mismatch_and_missing_tensors_are_named() {
        let c = tiny_config();
        let mut w = tiny_weights(&c, 5);
        let mut big = c.clone();
        big.intermediate_size = 24;
        let e = BertModel::load(&file(&w, ""), big, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("encoder.layer.0.intermediate.dense.weight") && e.contains("[24, 12]"),
            "{e}"
        );

        w.remove("encoder.layer.1.output.dense.bias");
        let e = BertModel::load(&file(&w, ""), c, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("encoder.layer.1.output.dense.bias"), "{e}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let c = tiny_config();
        let m = BertModel::load(&file(&tiny_weights(&c, 1), ""), c, 1).unwrap();
        assert!(matches!(
            m.forward(&[&[1, 23]]),
            Err(BertError::BadToken { id: 23, .. })
        ));
        assert!(matches!(
            m.forward(&[&[1], &[]]),
            Err(BertError::EmptySequence { index: 1 })
        ));
        let long = vec![1u32; 17];
        assert!(matches!(
            m.forward(&[&long]),
            Err(BertError::TooLong {
                len: 17,
                max: 16,
                ..
            })
        ));
        assert!(m.forward(&[]).unwrap().is_empty());
    }

    #[test]
    fn bad_configs_are_refused() {
        let base = r#""vocab_size": 5, "hidden_size": 12, "num_hidden_layers": 1,
            "intermediate_size": 4, "max_position_embeddings": 8"#;
        let cases: HashMap<&str, &str> = [
            (r#""num_attention_heads": 5"#, "does not divide"),
            (
                r#""num_attention_heads": 3, "hidden_act": "relu""#,
                "hidden_act",
            ),
            (
                r#""num_attention_heads": 3, "model_type": "gpt2""#,
                "model_type",
            ),
            (
                r#""num_attention_heads": 3, "position_embedding_type": "relative_key""#,
                "relative_key",
            ),
            (
                r#""num_attention_heads": 3, "layer_norm_eps": -1"#,
                "layer_norm_eps",
            ),
            (r#""num_attention_heads": 0"#, "num_attention_heads"),
        ]
        .into_iter()
        .collect();
        for (extra, want) in cases {
            let e = BertConfig::from_json(&format!("{{{base}, {extra}}}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{extra}: {e}");
        }
        let e = BertConfig::from_json(r#"{"hidden_size": 4}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("vocab_size"), "{e}");
    }

    #[test]
    fn erf_matches_its_series() {
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = i as f64 / 1000.0;
            worst = worst.max((erf(x) - erf_series(x)).abs());
        }
        assert!(worst < 2e-7, "largest erf error {worst}");
        assert!((gelu_erf(1.0) - 0.841_344_7).abs() < 1e-6);
        assert_eq!(gelu_erf(0.0), 0.0);
    }
}
