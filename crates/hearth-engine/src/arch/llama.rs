//! Llama (and SmolLM2, which is a Llama): pre-norm, SwiGLU, RoPE on adjacent
//! pairs (the GGUF converter permutes Q and K into that layout), optional
//! attention biases.

use std::sync::Arc;

use hearth_gguf::GgufFile;

use super::{build, LayerOptions};
use crate::error::{EngineError, Result};
use crate::transformer::{Activation, Transformer};

pub fn load(file: Arc<GgufFile>) -> Result<Transformer> {
    if file.tensor("rope_freqs.weight").is_some() {
        return Err(EngineError::Hyperparameter {
            key: "rope_freqs.weight".into(),
            why: "Llama 3 frequency scaling is not supported yet".into(),
        });
    }
    build(
        file,
        "llama",
        false,
        Activation::Silu,
        LayerOptions::default(),
    )
}
