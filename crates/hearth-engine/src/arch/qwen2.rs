//! Qwen2: a Llama with biases on Q, K and V and NeoX-style RoPE.

use std::sync::Arc;

use hearth_gguf::GgufFile;

use super::{build, LayerOptions};
use crate::error::Result;
use crate::transformer::{Activation, Transformer};

pub fn load(file: Arc<GgufFile>) -> Result<Transformer> {
    let opt = LayerOptions {
        qkv_bias: true,
        ..LayerOptions::default()
    };
    build(file, "qwen2", true, Activation::Silu, opt)
}
