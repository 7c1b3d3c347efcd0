//! A tiny llama-architecture GGUF model with random weights and a byte-level
//! vocabulary (every byte a token, plus ChatML's two specials), written by
//! the tests themselves so they need no download.
#![allow(dead_code)]

use std::path::Path;

use hearth_gguf::{GgufWriter, Value};

pub const N_EMBD: u64 = 32;
pub const N_FF: u64 = 64;

/// GPT-2's byte-to-character table, so the vocabulary covers every byte.
pub fn byte_chars() -> Vec<char> {
    let mut keep: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut extra = 0;
    let mut out = vec!['\0'; 256];
    for b in 0..256u32 {
        if keep.contains(&b) {
            out[b as usize] = char::from_u32(b).unwrap();
        } else {
            out[b as usize] = char::from_u32(256 + extra).unwrap();
            extra += 1;
        }
    }
    keep.clear();
    out
}

pub struct Tiny {
    pub meta: Vec<(String, Value)>,
    pub tensors: Vec<(String, Vec<u64>, Vec<f32>)>,
}

pub fn tiny() -> Tiny {
    let mut tokens: Vec<Value> = byte_chars()
        .into_iter()
        .map(|c| Value::String(c.to_string()))
        .collect();
    let mut types = vec![Value::I32(1); 256];
    for special in ["<|im_start|>", "<|im_end|>"] {
        tokens.push(Value::String(special.into()));
        types.push(Value::I32(3));
    }
    let n_vocab = tokens.len() as u64;
    let meta = vec![
        (
            "general.architecture".to_string(),
            Value::String("llama".into()),
        ),
        ("llama.block_count".into(), Value::U32(2)),
        ("llama.embedding_length".into(), Value::U32(N_EMBD as u32)),
        ("llama.feed_forward_length".into(), Value::U32(N_FF as u32)),
        ("llama.attention.head_count".into(), Value::U32(4)),
        ("llama.attention.head_count_kv".into(), Value::U32(2)),
        ("llama.context_length".into(), Value::U32(64)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(vec![Value::String("h i".into())]),
        ),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(257)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
    ];
    let mut state = 12345u32;
    let mut rnd = move |n: u64, scale: f32, offset: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                offset + scale * ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
            })
            .collect()
    };
    let mut tensors = vec![
        (
            "token_embd.weight".to_string(),
            vec![N_EMBD, n_vocab],
            rnd(N_EMBD * n_vocab, 1.0, 0.0),
        ),
        (
            "output_norm.weight".into(),
            vec![N_EMBD],
            rnd(N_EMBD, 0.1, 1.0),
        ),
    ];
    // Each layer's tensors in file order: norms near 1, matrices around 0.
    let layer: [(&str, Vec<u64>); 9] = [
        ("attn_norm", vec![N_EMBD]),
        ("attn_q", vec![N_EMBD, N_EMBD]),
        ("attn_k", vec![N_EMBD, N_EMBD / 2]),
        ("attn_v", vec![N_EMBD, N_EMBD / 2]),
        ("attn_output", vec![N_EMBD, N_EMBD]),
        ("ffn_norm", vec![N_EMBD]),
        ("ffn_gate", vec![N_EMBD, N_FF]),
        ("ffn_up", vec![N_EMBD, N_FF]),
        ("ffn_down", vec![N_FF, N_EMBD]),
    ];
    for i in 0..2 {
        for (name, dims) in &layer {
            let n: u64 = dims.iter().product();
            let (scale, offset) = if dims.len() == 1 {
                (0.1, 1.0)
            } else {
                (0.5, 0.0)
            };
            tensors.push((
                format!("blk.{i}.{name}.weight"),
                dims.clone(),
                rnd(n, scale, offset),
            ));
        }
    }
    Tiny { meta, tensors }
}

pub fn write(t: &Tiny, path: &Path) {
    let mut w = GgufWriter::new();
    for (k, v) in &t.meta {
        w.add(k, v.clone());
    }
    for (name, dims, data) in &t.tensors {
        w.add_f32(name, dims, data).unwrap();
    }
    w.write(path).unwrap();
}
