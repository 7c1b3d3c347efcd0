//! Classification's label scores against a brute force: each label's
//! log-likelihood from one full forward pass of prompt + label with a fresh
//! cache, summed position by position, on the real smollm2.

use hearth_engine::{BatchItem, Want};
use hearth_runtime::tasks::{classify_messages, softmax};
use hearth_runtime::Runtime;

fn runtime(model: &str) -> Runtime {
    let path = hearth_store::Store::open_default()
        .and_then(|s| s.ensure(model, hearth_store::Progress::Quiet))
        .unwrap_or_else(|e| panic!("this test needs the default model {model}: {e}"));
    Runtime::load(&path, 2).expect("load")
}

fn brute_force(rt: &Runtime, prompt: &[u32], cand: &[u32]) -> f64 {
    let n_vocab = rt.model.hyper().n_vocab;
    let all: Vec<u32> = prompt.iter().chain(cand).copied().collect();
    let mut cache = rt.model.new_cache(all.len());
    let mut items = [BatchItem {
        cache: &mut cache,
        tokens: &all,
        want: Want::From(prompt.len() - 1),
        adapter: None,
    }];
    let logits = rt.model.forward(&mut items).expect("forward").remove(0);
    let mut sum = 0f64;
    for (j, row) in logits.chunks_exact(n_vocab).enumerate().take(cand.len()) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        sum += row[cand[j] as usize] as f64 - max - z.ln();
    }
    sum
}

#[test]
fn label_logprobs_match_a_full_forward_per_label() {
    let rt = runtime("smollm2");
    let labels: Vec<String> = ["positive", "negative", "neutral", "mixed feelings"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let text = "I loved this film, the acting was wonderful.";
    let prompt = rt.chat_prompt(&classify_messages(&labels, text)).unwrap();
    let cands: Vec<Vec<u32>> = labels.iter().map(|l| rt.label_tokens(l)).collect();
    assert!(cands.iter().any(|c| c.len() > 2), "a multi-token label");
    let fast = rt.label_logprobs(&prompt, &cands, None, None).unwrap();
    for (i, c) in cands.iter().enumerate() {
        let slow = brute_force(&rt, &prompt, c);
        assert!(
            (fast[i] - slow).abs() < 1e-3 * (1.0 + slow.abs()),
            "label {:?}: scored {} vs brute force {slow}",
            labels[i],
            fast[i]
        );
        assert!(fast[i] < 0.0);
    }
    let c = rt.classify(&labels, text, None, None).unwrap();
    let total: f64 = c.labels.iter().map(|l| l.probability).sum();
    assert!((total - 1.0).abs() < 1e-9, "probabilities sum to {total}");
    let p = softmax(&fast);
    for (l, p) in c.labels.iter().zip(&p) {
        assert!((l.probability - p).abs() < 1e-9);
    }
    let best = fast
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| labels[i].clone())
        .unwrap();
    assert_eq!(c.label, best);
    // The input checks.
    assert!(rt.classify(&[], text, None, None).is_err());
    let dup = vec!["a".to_string(), "a".to_string()];
    assert!(rt.classify(&dup, text, None, None).is_err());
}
