//! One file per architecture: each reads its hyperparameters and tensor names
//! from the GGUF file and builds a [`Transformer`]. What they share (reading
//! `{arch}.*` keys, the usual per-layer tensor names) lives here.

pub mod gemma3;
pub mod llama;
pub mod qwen2;
pub mod qwen3;

use std::sync::Arc;

use hearth_gguf::GgufFile;

use crate::error::{EngineError, Result};
use crate::transformer::{Activation, Hyper, Layer, Transformer};
use crate::weights::{Loader, Matrix};

/// Build the transformer for whatever architecture the file declares.
pub fn load(file: Arc<GgufFile>) -> Result<Transformer> {
    let arch = file.get_str("general.architecture")?.to_string();
    match arch.as_str() {
        "llama" => llama::load(file),
        "qwen2" => qwen2::load(file),
        "qwen3" => qwen3::load(file),
        "gemma3" => gemma3::load(file),
        _ => Err(EngineError::UnknownArchitecture(arch)),
    }
}

fn key(arch: &str, k: &str) -> String {
    format!("{arch}.{k}")
}

fn positive(file: &GgufFile, name: &str) -> Result<usize> {
    let v = file.get_u32(name)? as usize;
    if v == 0 {
        return Err(EngineError::Hyperparameter {
            key: name.into(),
            why: "is zero".into(),
        });
    }
    Ok(v)
}

fn optional_positive(file: &GgufFile, name: &str, default: usize) -> Result<usize> {
    if file.get(name).is_some() {
        positive(file, name)
    } else {
        Ok(default)
    }
}

/// Read the hyperparameters under the `{arch}.` prefix that every
/// architecture has, with the defaults llama.cpp uses for the optional ones.
/// Returns them with the file's RoPE base, which layers may override.
pub(crate) fn read_hyper(
    file: &GgufFile,
    arch: &str,
    rope_neox: bool,
    activation: Activation,
) -> Result<(Hyper, f32)> {
    let n_embd = positive(file, &key(arch, "embedding_length"))?;
    let n_layer = positive(file, &key(arch, "block_count"))?;
    let n_head = positive(file, &key(arch, "attention.head_count"))?;
    let n_head_kv = optional_positive(file, &key(arch, "attention.head_count_kv"), n_head)?;
    if !n_head.is_multiple_of(n_head_kv) {
        return Err(EngineError::Hyperparameter {
            key: key(arch, "attention.head_count_kv"),
            why: format!("{n_head_kv} does not divide head_count {n_head}"),
        });
    }
    if !n_embd.is_multiple_of(n_head) && file.get(&key(arch, "attention.key_length")).is_none() {
        return Err(EngineError::Hyperparameter {
            key: key(arch, "attention.head_count"),
            why: format!("{n_head} does not divide embedding_length {n_embd}"),
        });
    }
    let head_dim_k = optional_positive(file, &key(arch, "attention.key_length"), n_embd / n_head)?;
    let head_dim_v = optional_positive(file, &key(arch, "attention.value_length"), head_dim_k)?;
    let n_ff = positive(file, &key(arch, "feed_forward_length"))?;
    let n_ctx_train = positive(file, &key(arch, "context_length"))?;
    let rms_eps = file.get_f32(&key(arch, "attention.layer_norm_rms_epsilon"))?;
    if !(rms_eps > 0.0 && rms_eps < 1.0) {
        return Err(EngineError::Hyperparameter {
            key: key(arch, "attention.layer_norm_rms_epsilon"),
            why: format!("{rms_eps} is not in (0, 1)"),
        });
    }
    let rope_base = match file.get(&key(arch, "rope.freq_base")) {
        Some(_) => file.get_f32(&key(arch, "rope.freq_base"))?,
        None => 10000.0,
    };
    let n_rot = optional_positive(file, &key(arch, "rope.dimension_count"), head_dim_k)?;
    if n_rot > head_dim_k || !n_rot.is_multiple_of(2) {
        return Err(EngineError::Hyperparameter {
            key: key(arch, "rope.dimension_count"),
            why: format!("{n_rot} must be even and at most the head size {head_dim_k}"),
        });
    }
    if let Some(v) = file.get(&key(arch, "rope.scaling.type")) {
        let t = v.as_str().unwrap_or("?");
        if t != "none" {
            return Err(EngineError::Hyperparameter {
                key: key(arch, "rope.scaling.type"),
                why: format!("RoPE scaling {t:?} is not supported yet"),
            });
        }
    }
    let hp = Hyper {
        arch: arch.into(),
        n_vocab: n_vocab(file)?,
        n_embd,
        n_layer,
        n_head,
        n_head_kv,
        head_dim_k,
        head_dim_v,
        n_ff,
        n_ctx_train,
        rms_eps,
        n_rot,
        rope_neox,
        q_scale: None,
        kq_scale: 1.0 / (head_dim_k as f32).sqrt(),
        embed_scale: None,
        activation,
    };
    Ok((hp, rope_base))
}

/// Which optional per-layer tensors an architecture reads.
#[derive(Clone, Copy, Default)]
pub(crate) struct LayerOptions {
    pub qkv_bias: bool,
    pub qk_norm: bool,
    pub post_norms: bool,
}

/// Load layer `i` under the usual `blk.{i}.*` names.
pub(crate) fn load_layer(
    ld: &Loader,
    c: &Hyper,
    rope_base: f32,
    i: usize,
    opt: LayerOptions,
) -> Result<Layer> {
    let n = |s: &str| format!("blk.{i}.{s}");
    let q_dim = c.n_head * c.head_dim_k;
    let k_dim = c.n_head_kv * c.head_dim_k;
    let v_dim = c.n_head_kv * c.head_dim_v;
    let o_dim = c.n_head * c.head_dim_v;
    let bias = |s: &str, len: usize| -> Result<Option<Vec<f32>>> {
        if opt.qkv_bias {
            ld.vector(&n(s), len).map(Some)
        } else {
            ld.optional_vector(&n(s), len)
        }
    };
    let norm = |s: &str, len: usize, on: bool| -> Result<Option<Vec<f32>>> {
        if on {
            ld.vector(&n(s), len).map(Some)
        } else {
            Ok(None)
        }
    };
    Ok(Layer {
        attn_norm: ld.vector(&n("attn_norm.weight"), c.n_embd)?,
        wq: ld.matrix(&n("attn_q.weight"), c.n_embd, q_dim)?,
        wk: ld.matrix(&n("attn_k.weight"), c.n_embd, k_dim)?,
        wv: ld.matrix(&n("attn_v.weight"), c.n_embd, v_dim)?,
        wo: ld.matrix(&n("attn_output.weight"), o_dim, c.n_embd)?,
        bq: bias("attn_q.bias", q_dim)?,
        bk: bias("attn_k.bias", k_dim)?,
        bv: bias("attn_v.bias", v_dim)?,
        q_norm: norm("attn_q_norm.weight", c.head_dim_k, opt.qk_norm)?,
        k_norm: norm("attn_k_norm.weight", c.head_dim_k, opt.qk_norm)?,
        post_attn_norm: norm("post_attention_norm.weight", c.n_embd, opt.post_norms)?,
        ffn_norm: ld.vector(&n("ffn_norm.weight"), c.n_embd)?,
        w_gate: ld.matrix(&n("ffn_gate.weight"), c.n_embd, c.n_ff)?,
        w_up: ld.matrix(&n("ffn_up.weight"), c.n_embd, c.n_ff)?,
        w_down: ld.matrix(&n("ffn_down.weight"), c.n_ff, c.n_embd)?,
        post_ffn_norm: norm("post_ffw_norm.weight", c.n_embd, opt.post_norms)?,
        rope_base,
        window: None,
    })
}

/// The vocabulary size, taken from the token list (the embedding matrix must agree).
pub(crate) fn n_vocab(file: &GgufFile) -> Result<usize> {
    let tokens = file.get_array("tokenizer.ggml.tokens")?;
    if tokens.is_empty() {
        return Err(EngineError::Hyperparameter {
            key: "tokenizer.ggml.tokens".into(),
            why: "is empty".into(),
        });
    }
    Ok(tokens.len())
}

/// Token embeddings, final norm and output matrix (tied to the embeddings when
/// the file has no `output.weight`).
pub(crate) fn load_ends(ld: &Loader, c: &Hyper) -> Result<(Matrix, Vec<f32>, Matrix)> {
    let n_vocab = c.n_vocab;
    let token_embd = ld.matrix("token_embd.weight", c.n_embd, n_vocab)?;
    let output_norm = ld.vector("output_norm.weight", c.n_embd)?;
    let output = if ld.has("output.weight") {
        ld.matrix("output.weight", c.n_embd, n_vocab)?
    } else {
        token_embd.clone()
    };
    Ok((token_embd, output_norm, output))
}

/// The common skeleton: read hyperparameters and all layers, then let the
/// architecture adjust the result.
pub(crate) fn build(
    file: Arc<GgufFile>,
    arch: &str,
    rope_neox: bool,
    activation: Activation,
    opt: LayerOptions,
) -> Result<Transformer> {
    let (hp, rope_base) = read_hyper(&file, arch, rope_neox, activation)?;
    let ld = Loader { file: &file };
    let (token_embd, output_norm, output) = load_ends(&ld, &hp)?;
    let layers = (0..hp.n_layer)
        .map(|i| load_layer(&ld, &hp, rope_base, i, opt))
        .collect::<Result<Vec<_>>>()?;
    Ok(Transformer {
        file: Arc::clone(&file),
        hp,
        token_embd,
        output_norm,
        output,
        layers,
    })
}
