//! The two default models against llama.cpp's reference outputs in
//! `shared/golden/`, with the tolerances written there. The models come from
//! hearth's own store (pulled by the test command); a missing model fails
//! loudly.

mod common;

use common::{check_mean, check_steps, golden, ids, runtime, shared, Tolerance, README, STEPS};
use hearth_runtime::{GenOptions, Message};
use hearth_sample::SamplerConfig;

fn check_greedy(model: &str, file: &str, tol: Tolerance) {
    let rt = runtime(model);
    let g = golden(file);
    let mut errors = Vec::new();
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
            top_logprobs: 40,
            n_ctx: Some(512),
            ..GenOptions::default()
        };
        let out = rt
            .generate(&prompt_ids, &opts, |_| std::ops::ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(
            out.completion_ids.len(),
            16,
            "{model}: --ignore-eos gives exactly N tokens"
        );
        check_steps(
            &format!("{model} {prompt:?}"),
            &out.steps,
            &case["steps"],
            rt.tokenizer.eog_ids(),
            tol,
            &mut errors,
        );
    }
    check_mean(model, &errors, tol, 5 * 20);
}

#[test]
fn smollm2_greedy_matches_llama_cpp() {
    check_greedy("smollm2", "smollm2-135m-instruct-q4_1", README);
}

#[test]
fn gemma3_greedy_matches_llama_cpp() {
    check_greedy("gemma3", "gemma3-270m-q4_k_m", README);
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

/// The reference's log-probabilities against ours on the reference's own
/// tokens (teacher forcing: the prompt in one batch, then one token a step,
/// as llama-server decodes), over the first [`STEPS`] steps of every case:
/// every |ours - reference| of the reference's top 5, looked up by id.
fn forced_errors(model: &str, file: &str) -> Vec<f64> {
    let rt = runtime(model);
    let g = golden(file);
    let mut errors = Vec::new();
    for case in g["greedy"].as_array().unwrap() {
        let completion = ids(&case["completion_ids"]);
        let mut cache = rt.model.new_cache(512);
        let mut feed = ids(&case["prompt_ids"]);
        cache.plan_prompt(feed.len());
        for (i, step) in case["steps"]
            .as_array()
            .unwrap()
            .iter()
            .take(STEPS)
            .enumerate()
        {
            let mut items = [hearth_engine::BatchItem {
                cache: &mut cache,
                tokens: &feed,
                want: hearth_engine::Want::Last,
                adapter: None,
            }];
            let logits = rt.model.forward(&mut items).unwrap().remove(0);
            let lp = hearth_sample::log_softmax(&logits);
            for t in step["top"].as_array().unwrap() {
                let id = t["id"].as_u64().unwrap() as usize;
                errors.push((lp[id] as f64 - t["logprob"].as_f64().unwrap()).abs());
            }
            feed = vec![completion[i]];
        }
    }
    errors
}

fn check_forced(model: &str, file: &str, tol: Tolerance) {
    let e = forced_errors(model, file);
    assert_eq!(
        e.len(),
        5 * STEPS * 5,
        "{model}: every case, step and candidate"
    );
    let (mean, max) = check_mean(model, &e, tol, e.len());
    eprintln!("{model}: teacher-forced top-5 log-probability error: mean {mean:.4}, max {max:.4}");
    assert!(max <= tol.max, "{model}: worst error {max:.4}");
}

#[test]
fn smollm2_forced_logprobs_match_llama_cpp() {
    check_forced("smollm2", "smollm2-135m-instruct-q4_1", README);
}

#[test]
fn gemma3_forced_logprobs_match_llama_cpp() {
    check_forced("gemma3", "gemma3-270m-q4_k_m", README);
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
