//! Qwen3: no Q/K/V biases, but an RMS norm on each query and key head before
//! RoPE (NeoX style); the head size is given explicitly (`key_length`).

use std::sync::Arc;

use hearth_gguf::GgufFile;

use super::{build, LayerOptions};
use crate::error::Result;
use crate::transformer::{Activation, Transformer};

pub fn load(file: Arc<GgufFile>) -> Result<Transformer> {
    let opt = LayerOptions {
        qk_norm: true,
        ..LayerOptions::default()
    };
    build(file, "qwen3", true, Activation::Silu, opt)
}
