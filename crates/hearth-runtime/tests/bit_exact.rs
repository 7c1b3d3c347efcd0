//! Both default models against llama.cpp's own logits, bit for bit.
//!
//! `data/llama-cpp-logits.json` holds what llama.cpp b11311 (the build the
//! golden files came from, compiled for AVX2 as its `source` field says)
//! computes for a few prompts (short ones, a 9-token one whose batch takes
//! the batched K-quant orders, an 85-token one whose batch takes the tiled
//! attention, and for Gemma 3 a 589-token one that spans two batches) and
//! three decoding steps after each: the sha256 of every step's full logit
//! vector, and its top 5 for a readable failure. The prompts were decoded
//! in the batches llama-server cuts a request's prompt into (for Gemma 3,
//! whose sliding-window layers make it hold back the last 4 and the 512
//! before them; see `hearth_engine::PromptPlan::server`). hearth must
//! produce the same bytes: its arithmetic is the reference's, operation for
//! operation (see `hearth-kernels`' numerics notes). The prompt is fed once
//! whole and once in chunks of 7 tokens, which must not change a bit either
//! (the arithmetic follows positions, not passes).

mod common;

use common::{read_json, runtime};
use hearth_engine::{BatchItem, Want};
use sha2::{Digest, Sha256};

fn sha256(logits: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in logits {
        h.update(v.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Every step's logits for `prompt` fed in pieces of `chunk`, then each of
/// `cont` alone.
fn run(model: &str, prompt: &[u32], cont: &[u32], chunk: usize) -> Vec<Vec<f32>> {
    let rt = runtime(model);
    let mut cache = rt.model.new_cache(1024);
    cache.plan_prompt(prompt.len());
    let mut steps = Vec::new();
    let mut last = Vec::new();
    for part in prompt.chunks(chunk) {
        let mut items = [BatchItem {
            cache: &mut cache,
            tokens: part,
            want: Want::Last,
            adapter: None,
        }];
        last = rt.model.forward(&mut items).unwrap().remove(0);
    }
    steps.push(last);
    for t in cont {
        let mut items = [BatchItem {
            cache: &mut cache,
            tokens: std::slice::from_ref(t),
            want: Want::Last,
            adapter: None,
        }];
        steps.push(rt.model.forward(&mut items).unwrap().remove(0));
    }
    steps
}

fn check(model: &str) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/llama-cpp-logits.json");
    let data = read_json(&path);
    let mut checked = 0;
    for case in data["cases"].as_array().unwrap() {
        if case["model"] != model {
            continue;
        }
        let prompt = ids(&case["prompt_ids"]);
        assert_eq!(
            runtime(model)
                .tokenize(case["prompt"].as_str().unwrap(), true, true)
                .unwrap(),
            prompt,
            "{model}: prompt ids"
        );
        let cont = ids(&case["continuation_ids"]);
        for chunk in [prompt.len(), 7] {
            let got = run(model, &prompt, &cont, chunk);
            for (i, (step, logits)) in case["steps"]
                .as_array()
                .unwrap()
                .iter()
                .zip(&got)
                .enumerate()
            {
                let want_top: Vec<String> = step["top"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| format!("{}:{}", t["id"], t["logit"]))
                    .collect();
                let got_top: Vec<String> = want_top
                    .iter()
                    .map(|t| {
                        let id: usize = t.split(':').next().unwrap().parse().unwrap();
                        format!("{id}:{}", logits[id])
                    })
                    .collect();
                assert_eq!(
                    sha256(logits),
                    step["sha256"].as_str().unwrap(),
                    "{model}, {} prompt tokens in pieces of {chunk}, step {i}: logits differ \
                     from llama.cpp's (reference top 5 {want_top:?}, ours at those ids {got_top:?})",
                    prompt.len()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 24, "{model}: only {checked} steps compared");
}

#[test]
fn smollm2_logits_equal_llama_cpp_bit_for_bit() {
    check("smollm2");
}

#[test]
fn gemma3_logits_equal_llama_cpp_bit_for_bit() {
    check("gemma3");
}
