//! The three LoRA adapters of `shared/adapters/` on SmolLM2, in both their
//! formats (llama.cpp GGUF and PEFT), against llama.cpp's greedy outputs with
//! and without each adapter, under `shared/golden/README.md`'s tolerances
//! ([`common::README`]): the adapters' products follow llama.cpp's F32
//! matmul orders (tinyBLAS for a prompt's batch, ggml's dot product for a
//! decoding step), so the log-probabilities land within ~0.0001 of the
//! reference's, as the base model's do. Also: the two formats of one adapter hold the same matrices
//! and give the same logits, and one batch mixing all three adapters and
//! none gives every sequence exactly what it gets alone.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{check_mean, check_steps, ids, read_json, runtime, shared, README, STEPS};
use hearth_engine::{Adapter, AdapterFormat, Role};
use hearth_runtime::{GenOptions, Message, Runtime, SeqParams, Sequence};
use hearth_sample::SamplerConfig;
use serde_json::Value;

const ADAPTERS: [&str; 3] = ["sentiment", "extract", "shout"];

fn dir(name: &str) -> PathBuf {
    shared().join("adapters").join(name)
}

fn load(rt: &Runtime, name: &str, format: AdapterFormat) -> Arc<Adapter> {
    let path = match format {
        AdapterFormat::Gguf => dir(name).join(format!("{name}.gguf")),
        AdapterFormat::Peft => dir(name).join("peft"),
    };
    let a = rt
        .load_adapter(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(a.format(), format);
    assert_eq!(
        a.n_matrices(),
        7 * 30,
        "{name}: every projection of every layer"
    );
    a
}

fn golden(name: &str) -> Value {
    read_json(
        &shared()
            .join("adapters")
            .join(format!("golden-{name}.json")),
    )
}

/// The case's prompt, rendered by our chat template and checked against the
/// reference's text and ids.
fn prompt_of(rt: &Runtime, case: &Value) -> Vec<u32> {
    let messages: Vec<Message> = case["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    let ids_ours = rt.chat_prompt(&messages).unwrap();
    assert_eq!(
        ids_ours,
        ids(&case["prompt_ids"]),
        "prompt ids of {messages:?}"
    );
    ids_ours
}

fn opts() -> GenOptions {
    GenOptions {
        max_tokens: STEPS,
        sampler: SamplerConfig::greedy(),
        // llama.cpp's ignore_eos bans <|im_end|> but still reports it in the top 5.
        ignore_eos: true,
        top_logprobs: 40,
        n_ctx: Some(512),
        ..GenOptions::default()
    }
}

/// Run every case of `cases` with `adapter` and compare; returns (mean, max) error.
fn check_cases(
    rt: &Runtime,
    label: &str,
    cases: &Value,
    adapter: Option<Arc<Adapter>>,
) -> (f64, f64) {
    let mut errors = Vec::new();
    for (i, case) in cases.as_array().unwrap().iter().enumerate() {
        let prompt = prompt_of(rt, case);
        let out = rt
            .generate_with_adapter(&prompt, &opts(), adapter.clone(), |_| {
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(
            out.completion_ids.len(),
            STEPS,
            "{label}: ignore_eos gives exactly N tokens"
        );
        check_steps(
            &format!("{label} case {i}"),
            &out.steps,
            &case["steps"],
            rt.tokenizer.eog_ids(),
            README,
            &mut errors,
        );
    }
    let (mean, max) = check_mean(label, &errors, README, 5 * 6 * 2);
    eprintln!(
        "{label}: {} log-probabilities, mean error {mean:.4}, max {max:.4}",
        errors.len()
    );
    (mean, max)
}

fn check_adapter(name: &str) {
    let rt = runtime("smollm2");
    let g = golden(name);
    for format in [AdapterFormat::Gguf, AdapterFormat::Peft] {
        let a = load(rt, name, format);
        check_cases(rt, &format!("{name} {format:?}"), &g["greedy"], Some(a));
    }
    check_cases(rt, &format!("{name} base"), &g["greedy_base"], None);
}

#[test]
fn sentiment_matches_llama_cpp() {
    check_adapter("sentiment");
}

#[test]
fn extract_matches_llama_cpp() {
    check_adapter("extract");
}

#[test]
fn shout_matches_llama_cpp() {
    check_adapter("shout");
}

/// llama.cpp's converter and our PEFT loader (with its Q/K row permutation)
/// must arrive at the same matrices, and so at the same logits.
#[test]
fn gguf_and_peft_forms_agree() {
    let rt = runtime("smollm2");
    for name in ADAPTERS {
        let g = load(rt, name, AdapterFormat::Gguf);
        let p = load(rt, name, AdapterFormat::Peft);
        assert_eq!(g.bytes(), p.bytes());
        let mut worst = 0f32;
        for layer in 0..rt.model.hyper().n_layer {
            for role in Role::ALL {
                let (mg, mp) = (
                    g.matrix(layer, role).unwrap(),
                    p.matrix(layer, role).unwrap(),
                );
                assert_eq!(
                    (mg.rank, mg.scale),
                    (mp.rank, mp.scale),
                    "{name} {layer} {role:?}"
                );
                for (x, y) in mg.a().iter().zip(mp.a()).chain(mg.b().iter().zip(mp.b())) {
                    worst = worst.max((x - y).abs());
                }
            }
        }
        assert!(
            worst <= 1e-6,
            "{name}: GGUF and PEFT matrices differ by {worst}"
        );
        let case = &golden(name)["greedy"][0];
        let prompt = prompt_of(rt, case);
        let logits = |a: &Arc<Adapter>| {
            let mut seq = rt
                .start(prompt.clone(), params(Some(a.clone()), 1), Some(512))
                .unwrap();
            rt.step_batch(&mut [&mut seq], usize::MAX).unwrap();
            serde_json::to_value(seq.steps()).unwrap()
        };
        let (lg, lp) = (logits(&g), logits(&p));
        let top = |v: &Value| -> Vec<(u64, f64)> {
            v[0]["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (t["id"].as_u64().unwrap(), t["logprob"].as_f64().unwrap()))
                .collect()
        };
        let (tg, tp) = (top(&lg), top(&lp));
        let diff = tg
            .iter()
            .zip(&tp)
            .map(|(a, b)| {
                assert_eq!(a.0, b.0, "{name}: top ids differ between the formats");
                (a.1 - b.1).abs()
            })
            .fold(0.0, f64::max);
        eprintln!("{name}: matrices differ by at most {worst}, top-40 logprobs by {diff}");
        assert!(
            diff <= 1e-4,
            "{name}: the formats' log-probabilities differ by {diff}"
        );
    }
}

fn params(adapter: Option<Arc<Adapter>>, max_tokens: usize) -> SeqParams {
    SeqParams {
        max_tokens,
        sampler: SamplerConfig::greedy(),
        ignore_eos: true,
        logprobs: true,
        top_logprobs: 5,
        adapter,
        ..SeqParams::default()
    }
}

/// The 6 prompts of each adapter under it, plus the 6 sentiment prompts
/// without one, all in one batch (prompts fed in chunks beside other
/// sequences' decoding): every sequence's tokens and log-probabilities are
/// exactly those it gets alone.
#[test]
fn one_batch_of_all_adapters_equals_each_alone() {
    let rt = runtime("smollm2");
    let mut jobs: Vec<(Vec<u32>, Option<Arc<Adapter>>)> = Vec::new();
    for name in ADAPTERS {
        let a = load(rt, name, AdapterFormat::Gguf);
        for case in golden(name)["greedy"].as_array().unwrap() {
            jobs.push((prompt_of(rt, case), Some(a.clone())));
        }
    }
    for case in golden("sentiment")["greedy_base"].as_array().unwrap() {
        jobs.push((prompt_of(rt, case), None));
    }
    let n = 8;
    let start = |(p, a): &(Vec<u32>, Option<Arc<Adapter>>)| {
        rt.start(p.clone(), params(a.clone(), n), Some(512))
            .unwrap()
    };
    let json = |s: &Sequence| serde_json::to_string(s.steps()).unwrap();
    let alone: Vec<String> = jobs
        .iter()
        .map(|j| {
            let mut s = start(j);
            while s.finished().is_none() {
                rt.step_batch(&mut [&mut s], usize::MAX).unwrap();
            }
            json(&s)
        })
        .collect();
    let mut seqs: Vec<Sequence> = jobs.iter().map(start).collect();
    while seqs.iter().any(|s| s.finished().is_none()) {
        let mut refs: Vec<&mut Sequence> = seqs.iter_mut().collect();
        rt.step_batch(&mut refs, 160).unwrap();
    }
    for (i, (s, want)) in seqs.iter().zip(&alone).enumerate() {
        assert_eq!(s.completion().len(), n);
        assert_eq!(&json(s), want, "sequence {i} changed in the mixed batch");
    }
    // The adapters matter: the same prompt gives other steps without one.
    assert_ne!(
        alone[0], alone[18],
        "sentiment prompt 0 with and without its adapter"
    );
}

/// A prefix kept under one adapter never seeds a sequence under another or
/// under none.
#[test]
fn prefix_cache_keys_on_the_adapter() {
    let rt = runtime("smollm2");
    let a = load(rt, "shout", AdapterFormat::Gguf);
    let b = load(rt, "shout", AdapterFormat::Peft);
    let prompt = prompt_of(rt, &golden("shout")["greedy"][0]);
    let mut cache = hearth_runtime::PrefixCache::new(4, 64 << 20, 4);
    let mut first = rt
        .start(prompt.clone(), params(Some(a.clone()), 1), Some(512))
        .unwrap();
    rt.step_batch(&mut [&mut first], usize::MAX).unwrap();
    cache.remember(&first, 0);
    let mut other_prompt = prompt.clone();
    other_prompt.push(198);
    for (adapter, expect_reuse) in [(None, false), (Some(b), false), (Some(a), true)] {
        let mut s = rt
            .start(other_prompt.clone(), params(adapter, 1), Some(512))
            .unwrap();
        let n = cache.seed(&mut s, 0).unwrap();
        assert_eq!(n > 0, expect_reuse, "reused {n} tokens");
        // Reuse is by reference to the first sequence's blocks, and only then.
        assert_eq!(
            s.cache().same_block(first.cache(), 0),
            expect_reuse,
            "block sharing across adapters"
        );
    }
}
