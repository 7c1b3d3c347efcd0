//! Gemma 3: embeddings scaled by sqrt(n_embd); GeGLU (tanh GELU); RMS norms on
//! query and key heads; extra norms on the attention and FFN outputs before
//! the residual adds; NeoX RoPE. Layers alternate five sliding-window layers
//! (window `sliding_window`, RoPE base 10 000) with one global layer (the
//! file's `rope.freq_base`). Queries are scaled by 1/sqrt(head size).
//!
//! The GGUF converter already adds Gemma's "+1" to the norm weights, so the
//! norms here are plain `x · w`.

use std::sync::Arc;

use hearth_gguf::GgufFile;

use super::{build, LayerOptions};
use crate::error::{EngineError, Result};
use crate::transformer::{Activation, Transformer};

/// Every sixth layer attends globally; the rest use the sliding window.
const PATTERN: usize = 6;
/// RoPE base of the sliding-window layers (not stored in the file).
const LOCAL_ROPE_BASE: f32 = 10_000.0;

pub fn load(file: Arc<GgufFile>) -> Result<Transformer> {
    let window = file.get_u32("gemma3.attention.sliding_window")? as usize;
    if window == 0 {
        return Err(EngineError::Hyperparameter {
            key: "gemma3.attention.sliding_window".into(),
            why: "is zero".into(),
        });
    }
    let opt = LayerOptions {
        qk_norm: true,
        post_norms: true,
        ..LayerOptions::default()
    };
    let mut t = build(file, "gemma3", true, Activation::GeluTanh, opt)?;
    t.hp.embed_scale = Some((t.hp.n_embd as f32).sqrt());
    t.hp.q_scale = Some(t.hp.kq_scale);
    t.hp.kq_scale = 1.0;
    for (i, layer) in t.layers.iter_mut().enumerate() {
        if (i + 1) % PATTERN != 0 {
            layer.window = Some(window);
            layer.rope_base = LOCAL_ROPE_BASE;
        }
    }
    Ok(t)
}
