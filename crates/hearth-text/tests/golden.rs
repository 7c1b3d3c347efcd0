//! Tokenisation, detokenisation and chat templates against llama.cpp's
//! outputs on the project's two default models (exact match required).

mod common;

use common::*;
use hearth_text::{ChatTemplate, Message, Tokenizer};

fn check_tokenize(tok: &Tokenizer, golden_name: &str) {
    let g = golden(golden_name);
    let cases = g["tokenize"].as_array().expect("tokenize[]");
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let want = ids(&case["ids"]);
        let got = tok.encode(text, false, false);
        if got != want {
            failures.push(format!(
                "ids for {text:?}:\n  want {want:?}\n  got  {got:?}"
            ));
        }
        let want_sp = ids(&case["ids_add_special_parse_special"]);
        let got_sp = tok.encode(text, true, true);
        if got_sp != want_sp {
            failures.push(format!("ids_add_special_parse_special for {text:?}:\n  want {want_sp:?}\n  got  {got_sp:?}"));
        }
        let pieces: Vec<Vec<u8>> = case["pieces"]
            .as_array()
            .expect("pieces")
            .iter()
            .map(piece_bytes)
            .collect();
        let got_pieces: Vec<Vec<u8>> = want
            .iter()
            .map(|&id| tok.piece_bytes(id).to_vec())
            .collect();
        if pieces != got_pieces {
            failures.push(format!(
                "pieces for {text:?}:\n  want {pieces:?}\n  got  {got_pieces:?}"
            ));
        }
        let detok = case["detokenized"].as_str().expect("detokenized");
        let got_detok = tok.decode(&want);
        if got_detok != detok {
            failures.push(format!(
                "detokenized for {text:?}:\n  want {detok:?}\n  got  {got_detok:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn check_chat(file: &hearth_gguf::GgufFile, golden_name: &str) {
    let g = golden(golden_name);
    let tmpl = ChatTemplate::from_gguf(file).expect("chat template");
    for case in g["chat_template"].as_array().expect("chat_template[]") {
        let messages: Vec<Message> =
            serde_json::from_value(case["messages"].clone()).expect("messages");
        let agp = case["add_generation_prompt"].as_bool().unwrap_or(true);
        let want = case["prompt"].as_str().expect("prompt");
        let got = tmpl.render(&messages, agp).expect("render");
        assert_eq!(got, want, "chat prompt for {messages:?}");
    }
}

#[test]
fn smollm_tokenize_golden() {
    check_tokenize(&tokenizer(SMOLLM), SMOLLM_GOLDEN);
}

#[test]
fn gemma_tokenize_golden() {
    check_tokenize(&tokenizer(GEMMA), GEMMA_GOLDEN);
}

#[test]
fn smollm_chat_template_golden() {
    let f = open_model(SMOLLM);
    assert!(!ChatTemplate::from_gguf(&f).unwrap().is_chatml_fallback());
    check_chat(&f, SMOLLM_GOLDEN);
}

#[test]
fn gemma_chat_template_golden_falls_back_to_chatml() {
    let f = open_model(GEMMA);
    assert!(ChatTemplate::from_gguf(&f).unwrap().is_chatml_fallback());
    check_chat(&f, GEMMA_GOLDEN);
}

#[test]
fn greedy_prompts_tokenize_like_the_reference() {
    for (model, golden_name) in [(SMOLLM, SMOLLM_GOLDEN), (GEMMA, GEMMA_GOLDEN)] {
        let tok = tokenizer(model);
        let g = golden(golden_name);
        for case in g["greedy"].as_array().expect("greedy[]") {
            let prompt = case["prompt"].as_str().expect("prompt");
            assert_eq!(
                tok.encode(prompt, true, true),
                ids(&case["prompt_ids"]),
                "{model}: {prompt:?}"
            );
            let completion = ids(&case["completion_ids"]);
            let text = case["completion_text"].as_str().expect("completion_text");
            assert_eq!(tok.decode(&completion), text, "{model}: completion text");
        }
    }
}

#[test]
fn special_ids_and_eog() {
    let s = tokenizer(SMOLLM);
    assert_eq!(
        (s.bos(), s.eos(), s.vocab_size()),
        (Some(1), Some(2), 49152)
    );
    assert!(!s.add_bos());
    assert!(s.is_eog(2) && s.is_eog(0));
    assert!(!s.is_eog(1) && !s.is_eog(19556));
    assert_eq!(s.token_text(1), Some("<|im_start|>"));
    assert_eq!(s.pre_tokenizer(), Some("smollm"));

    let g = tokenizer(GEMMA);
    assert_eq!(
        (g.bos(), g.eos(), g.vocab_size()),
        (Some(2), Some(1), 262144)
    );
    assert!(g.add_bos() && !g.add_space_prefix());
    assert!(g.is_eog(1) && g.is_eog(106));
    assert!(!g.is_eog(105) && !g.is_eog(2));
    assert_eq!(g.eot(), Some(106));
}
