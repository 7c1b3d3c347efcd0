//! `hearth bench`: prompt processing and generation speed, as llama-bench
//! measures them (pp: one forward pass over a prompt of random tokens;
//! tg: one token per forward pass).

use std::time::Instant;

use hearth_engine::{Adapter, BatchItem, Want};
use serde::Serialize;

use crate::error::Result;
use crate::Runtime;

#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub pp_tps: f64,
    pub tg_tps: f64,
    pub load_ms: f64,
    pub threads: usize,
}

/// Median over `reps` runs of `n_prompt` tokens of prefill and `n_gen`
/// tokens of decode (each from a fresh cache, like llama-bench).
pub fn bench(rt: &Runtime, n_prompt: usize, n_gen: usize, reps: usize) -> Result<BenchResult> {
    bench_with_adapter(rt, None, n_prompt, n_gen, reps)
}

/// [`bench`] with every pass running under `adapter` (the cost of the
/// unmerged LoRA path).
pub fn bench_with_adapter(
    rt: &Runtime,
    adapter: Option<&Adapter>,
    n_prompt: usize,
    n_gen: usize,
    reps: usize,
) -> Result<BenchResult> {
    let n_vocab = rt.model.hyper().n_vocab as u64;
    // A fixed pseudo-random prompt: bench numbers must not depend on a seed.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n_vocab) as u32
    };
    let prompt: Vec<u32> = (0..n_prompt.max(8)).map(|_| next()).collect();
    let (warm_up, prompt) = (&prompt[..8], &prompt[..n_prompt]);
    let reps = reps.max(1);
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    // One untimed warm-up pass touches every weight page.
    let mut warm = rt.model.new_cache(16);
    rt.step(&mut warm, warm_up, adapter)?;
    for _ in 0..reps {
        if n_prompt > 0 {
            let mut cache = rt.model.new_cache(n_prompt);
            cache.plan_one_call(n_prompt);
            let t = Instant::now();
            let mut items = [BatchItem {
                cache: &mut cache,
                tokens: prompt,
                want: Want::Last,
                adapter,
            }];
            rt.model.forward(&mut items)?;
            pp.push(n_prompt as f64 / t.elapsed().as_secs_f64());
        }
        if n_gen > 0 {
            let mut cache = rt.model.new_cache(n_gen + 1);
            let mut tok = warm_up[0];
            let t = Instant::now();
            for _ in 0..n_gen {
                let logits = rt.step(&mut cache, &[tok], adapter)?;
                tok = argmax(&logits);
            }
            tg.push(n_gen as f64 / t.elapsed().as_secs_f64());
        }
    }
    Ok(BenchResult {
        pp_tps: median(&mut pp),
        tg_tps: median(&mut tg),
        load_ms: rt.load_ms,
        threads: rt.model.threads(),
    })
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Decode speed while another process keeps one core busy: a device's
/// service shares its cores with the user's programs, and this is what it
/// keeps of its quiet speed then.
pub fn bench_contended(rt: &Runtime, n_gen: usize, reps: usize) -> Result<f64> {
    let mut hog = std::process::Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| crate::RuntimeError::Invalid(format!("cannot start the busy process: {e}")))?;
    // Give the scheduler a moment to see the hog as a steady load.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let r = bench(rt, 0, n_gen, reps);
    let _ = hog.kill();
    let _ = hog.wait();
    Ok(r?.tg_tps)
}

/// What a constraint costs per generated token (`hearth bench --json-schema`).
#[derive(Clone, Debug, Serialize)]
pub struct ConstraintBench {
    /// Tokens the constrained generation produced (median run).
    pub tokens: usize,
    /// Decode speed without the constraint, same prompt, same token count.
    pub free_tps: f64,
    /// Decode speed with it.
    pub constrained_tps: f64,
    /// Mask computation per generated token, measured directly (less
    /// noisy than the difference of two speeds on a shared machine).
    pub mask_us_per_token: f64,
    /// Mask time as a share of constrained decode time.
    pub mask_share: f64,
    /// Building the vocabulary's tables (once per model).
    pub vocab_ms: f64,
    /// Compiling the specification (once per request).
    pub compile_ms: f64,
    pub threads: usize,
}

/// Median over `reps` of a greedy constrained generation of at most
/// `n_gen` tokens from `prompt`, against an unconstrained one of the same
/// length (end tokens banned so it runs as long).
pub fn bench_constraint(
    rt: &Runtime,
    prompt: &[u32],
    spec: &hearth_sample::ConstraintSpec,
    n_gen: usize,
    reps: usize,
) -> Result<ConstraintBench> {
    use crate::generate::GenOptions;
    use std::ops::ControlFlow;
    let t = Instant::now();
    rt.constraint_vocab()?;
    let vocab_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    rt.constraint(spec)?;
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let greedy = hearth_sample::SamplerConfig::greedy();
    let (mut free, mut cons, mut mask, mut share, mut toks) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        let opts = GenOptions {
            max_tokens: n_gen,
            sampler: greedy.clone(),
            constraint: Some(spec.clone()),
            ..GenOptions::default()
        };
        let c = rt.generate(prompt, &opts, |_| ControlFlow::Continue(()))?;
        let n = c.completion_ids.len();
        // The first token comes with the prefill; speeds count the rest.
        let decoded = n.saturating_sub(1).max(1) as f64;
        let opts = GenOptions {
            max_tokens: n.max(2),
            sampler: greedy.clone(),
            ignore_eos: true,
            ..GenOptions::default()
        };
        let f = rt.generate(prompt, &opts, |_| ControlFlow::Continue(()))?;
        cons.push(decoded / (c.decode_ms / 1e3).max(1e-9));
        free.push(decoded / (f.decode_ms / 1e3).max(1e-9));
        mask.push(c.mask_ms * 1e3 / c.masks.max(1) as f64);
        share.push(c.mask_ms / (c.decode_ms + c.prefill_ms).max(1e-9));
        toks.push(n as f64);
    }
    Ok(ConstraintBench {
        tokens: median(&mut toks) as usize,
        free_tps: median(&mut free),
        constrained_tps: median(&mut cons),
        mask_us_per_token: median(&mut mask),
        mask_share: median(&mut share),
        vocab_ms,
        compile_ms,
        threads: rt.model.threads(),
    })
}
