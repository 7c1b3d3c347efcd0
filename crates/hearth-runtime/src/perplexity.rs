//! Perplexity as llama.cpp's `llama-perplexity` computes it: the text cut
//! into chunks of `n_ctx` tokens, each scored on its second half.

use hearth_engine::{BatchItem, Want};
use serde::Serialize;

use crate::error::{Result, RuntimeError};
use crate::Runtime;

#[derive(Clone, Debug, Serialize)]
pub struct Perplexity {
    pub ppl: f64,
    pub chunks: usize,
}

/// Tokenise all of `text` (BOS first where the model adds one), cut it into
/// consecutive chunks of `n_ctx` tokens dropping the remainder, put BOS in
/// each chunk's first place where the model adds one, and score tokens
/// `n_ctx/2 .. n_ctx` of each chunk given all earlier tokens of the chunk.
pub fn perplexity(rt: &Runtime, text: &str, n_ctx: usize) -> Result<Perplexity> {
    if n_ctx < 4 {
        return Err(RuntimeError::Invalid(format!(
            "context {n_ctx} is too small to score"
        )));
    }
    let tokens = rt.tokenize(text, true, false)?;
    let chunks = tokens.len() / n_ctx;
    if chunks == 0 {
        return Err(RuntimeError::Invalid(format!(
            "the text has {} tokens, fewer than one chunk of {n_ctx}",
            tokens.len()
        )));
    }
    let bos = rt.tokenizer.add_bos().then(|| rt.tokenizer.bos()).flatten();
    let first = n_ctx / 2;
    let n_vocab = rt.model.hyper().n_vocab;
    let mut nll = 0f64;
    let mut count = 0usize;
    for c in 0..chunks {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        let mut cache = rt.model.new_cache(n_ctx);
        cache.plan_one_call(n_ctx);
        // Logits at position p predict token p + 1.
        let mut items = [BatchItem {
            cache: &mut cache,
            tokens: &chunk,
            want: Want::From(first - 1),
            adapter: None,
        }];
        let logits = rt.model.forward(&mut items)?.remove(0);
        for (r, row) in logits.chunks_exact(n_vocab).enumerate() {
            let p = first - 1 + r;
            if p + 1 >= n_ctx {
                break;
            }
            let target = chunk[p + 1] as usize;
            nll -= log_softmax_at(row, target);
            count += 1;
        }
    }
    Ok(Perplexity {
        ppl: (nll / count as f64).exp(),
        chunks,
    })
}

fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[i] as f64 - max - z.ln()
}
