//! The two default models against llama.cpp's reference outputs in
//! `shared/golden/`, with the tolerances written there. The models come from
//! hearth's own store (pulled by the test command); a missing model fails
//! loudly.

use std::path::PathBuf;
use std::sync::OnceLock;

use hearth_runtime::{GenOptions, Message, Runtime};
use hearth_sample::SamplerConfig;
use serde_json::Value;

fn shared() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let p = here.join("../../../shared");
    assert!(
        p.is_dir(),
        "shared/ is missing beside the checkout: {}",
        p.display()
    );
    p
}

fn golden(name: &str) -> Value {
    let p = shared().join("golden").join(format!("{name}.json"));
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).expect("golden JSON")
}

fn runtime(model: &str) -> &'static Runtime {
    static SMOL: OnceLock<Runtime> = OnceLock::new();
    static GEMMA: OnceLock<Runtime> = OnceLock::new();
    let cell = if model == "smollm2" { &SMOL } else { &GEMMA };
    cell.get_or_init(|| {
        let store = hearth_store::Store::open_default().expect("hearth home");
        let path = store
            .ensure(model, hearth_store::Progress::Quiet)
            .unwrap_or_else(|e| panic!("model {model} is not available: {e}"));
        Runtime::load(&path, 2).expect("model loads")
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn check_greedy(model: &str, file: &str) {
    let rt = runtime(model);
    let g = golden(file);
    for case in g["greedy"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let prompt_ids = rt.tokenize(prompt, true, true).unwrap();
        assert_eq!(
            prompt_ids,
            ids(&case["prompt_ids"]),
            "{model}: prompt ids of {prompt:?}"
        );
        let opts = GenOptions {
            max_tokens: 16,
            sampler: SamplerConfig::greedy(),
            ignore_eos: true,
            top_logprobs: 20,
            n_ctx: Some(512),
        };
        let out = rt
            .generate(&prompt_ids, &opts, |_| std::ops::ControlFlow::Continue(()))
            .unwrap();
        let steps = case["steps"].as_array().unwrap();
        let mut compared = 0;
        for (i, step) in steps.iter().take(16).enumerate() {
            let top = step["top"].as_array().unwrap();
            let lp = |j: usize| top[j]["logprob"].as_f64().unwrap();
            let mine = &out.steps[i];
            // Log-probabilities of the reference's top 5, looked up by id.
            for t in top {
                let id = t["id"].as_u64().unwrap() as u32;
                let want = t["logprob"].as_f64().unwrap();
                let got = mine
                    .top
                    .iter()
                    .find(|e| e.id == id)
                    .unwrap_or_else(|| {
                        panic!("{model} {prompt:?} step {i}: id {id} not in our top 20")
                    })
                    .logprob as f64;
                assert!(
                    (got - want).abs() <= 0.05,
                    "{model} {prompt:?} step {i}: logprob of {id} is {got}, reference {want}"
                );
            }
            let near_tie = top.len() > 1 && (lp(0) - lp(1)).abs() < 0.01;
            let want_tok = step["token"].as_u64().unwrap() as u32;
            if near_tie {
                break;
            }
            assert_eq!(
                mine.token, want_tok,
                "{model} {prompt:?}: token at step {i}"
            );
            compared += 1;
        }
        assert!(compared > 0, "{model} {prompt:?}: nothing compared");
    }
}

#[test]
fn smollm2_greedy_matches_llama_cpp() {
    check_greedy("smollm2", "smollm2-135m-instruct-q4_1");
}

#[test]
fn gemma3_greedy_matches_llama_cpp() {
    check_greedy("gemma3", "gemma3-270m-q4_k_m");
}

fn check_perplexity(model: &str, key: &str) {
    let rt = runtime(model);
    let spec = golden("perplexity");
    let want = spec["ppl"][key].as_f64().unwrap();
    let tol = spec["tolerance_relative"].as_f64().unwrap();
    let text = std::fs::read_to_string(shared().join("golden/corpus-gpl3.txt")).unwrap();
    let got = hearth_runtime::perplexity(rt, &text, 512).unwrap();
    assert_eq!(
        got.chunks as u64,
        spec["chunks"].as_u64().unwrap(),
        "{model} chunk count"
    );
    let rel = (got.ppl - want).abs() / want;
    assert!(
        rel <= tol,
        "{model}: perplexity {} vs reference {want} ({:.3} %)",
        got.ppl,
        rel * 100.0
    );
}

#[test]
fn smollm2_perplexity_matches() {
    check_perplexity("smollm2", "smollm2-135m-instruct-q4_1");
}

#[test]
fn gemma3_perplexity_matches() {
    check_perplexity("gemma3", "gemma3-270m-q4_k_m");
}

#[test]
fn prompt_over_context_is_an_error() {
    let rt = runtime("smollm2");
    let ids = vec![1u32; 40];
    let opts = GenOptions {
        max_tokens: 4,
        n_ctx: Some(32),
        ..GenOptions::default()
    };
    let e = rt
        .generate(&ids, &opts, |_| std::ops::ControlFlow::Continue(()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("40") && e.contains("32"), "{e}");
    let e = rt
        .generate(&[], &opts, |_| std::ops::ControlFlow::Continue(()))
        .unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}

#[test]
fn same_seed_same_output() {
    let rt = runtime("smollm2");
    let ids = rt
        .chat_prompt(&[Message::new("user", "Tell me a story.")])
        .unwrap();
    let opts = GenOptions {
        max_tokens: 24,
        sampler: SamplerConfig {
            temperature: 1.0,
            seed: Some(42),
            ..SamplerConfig::default()
        },
        ..GenOptions::default()
    };
    let go = || {
        rt.generate(&ids, &opts, |_| std::ops::ControlFlow::Continue(()))
            .unwrap()
            .completion_ids
    };
    assert_eq!(go(), go());
}
