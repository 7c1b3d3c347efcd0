//! Behaviour on the real models beyond the golden list: streaming
//! detokenisation, malformed input, round trips and speed.

mod common;

use common::*;
use hearth_text::{Detokenizer, Tokenizer};

const MULTIBYTE: &[&str] = &[
    "emoji 🦀🔥 and ZWJ 👩\u{200d}👩\u{200d}👧 done",
    "日本語のテキストと中文，还有한국어",
    "café naïve — “quotes” ‘single’ ½ ∑ 𝔘𝔫𝔦",
];

/// Feeding ids one at a time yields exactly the whole decode, and no chunk
/// ever carries a replacement character (nothing was split).
fn check_streaming_by_token(tok: &Tokenizer) {
    for text in MULTIBYTE {
        let ids = tok.encode(text, false, false);
        let mut d = Detokenizer::new(true);
        let mut out = String::new();
        for &id in &ids {
            let chunk = d.push(tok, id);
            assert!(
                !chunk.contains('\u{FFFD}'),
                "split character in {chunk:?} for {text:?}"
            );
            out.push_str(&chunk);
        }
        assert!(d.pending().is_empty());
        out.push_str(&d.finish());
        assert_eq!(out, *text);
    }
}

/// The byte stream cut at every boundary into two pushes gives the same text.
fn check_streaming_by_byte(tok: &Tokenizer) {
    for text in MULTIBYTE {
        let ids = tok.encode(text, false, false);
        let bytes = tok.decode_bytes(&ids, true);
        for cut in 0..=bytes.len() {
            let mut d = Detokenizer::new(true);
            let mut out = d.push_bytes(&bytes[..cut]);
            assert!(!out.contains('\u{FFFD}'));
            out.push_str(&d.push_bytes(&bytes[cut..]));
            out.push_str(&d.finish());
            assert_eq!(out, *text, "cut at byte {cut}");
        }
        // And one byte at a time.
        let mut d = Detokenizer::new(true);
        let mut out = String::new();
        for b in &bytes {
            out.push_str(&d.push_bytes(std::slice::from_ref(b)));
        }
        out.push_str(&d.finish());
        assert_eq!(out, *text);
    }
}

#[test]
fn streaming_smollm() {
    let tok = tokenizer(SMOLLM);
    check_streaming_by_token(&tok);
    check_streaming_by_byte(&tok);
}

#[test]
fn streaming_gemma() {
    let tok = tokenizer(GEMMA);
    check_streaming_by_token(&tok);
    check_streaming_by_byte(&tok);
}

#[test]
fn detokenizer_can_hide_control_tokens() {
    let tok = tokenizer(SMOLLM);
    let ids = tok.encode("<|im_start|>user\nhi<|im_end|>", false, true);
    let mut shown = Detokenizer::new(true);
    let mut hidden = Detokenizer::new(false);
    let (mut a, mut b) = (String::new(), String::new());
    for &id in &ids {
        a.push_str(&shown.push(&tok, id));
        b.push_str(&hidden.push(&tok, id));
    }
    assert_eq!(a, "<|im_start|>user\nhi<|im_end|>");
    assert_eq!(b, "user\nhi");
}

/// Malformed UTF-8, handled as llama.cpp does (see `Tokenizer::encode_bytes`).
#[test]
fn invalid_utf8_input() {
    let gemma = tokenizer(GEMMA);
    // Stray continuation bytes and a truncated sequence at the very end are
    // spelled with byte tokens and come back unchanged.
    let input: &[u8] = b"ok \x80\xBF end \xE6\x97";
    let ids = gemma.encode_bytes(input, false, false);
    assert!(ids.contains(&gemma.token_id("<0x80>").expect("byte token")));
    assert_eq!(gemma.decode_bytes(&ids, true), input);
    // A malformed lead byte swallows what follows it, escaped space included.
    let ids = gemma.encode_bytes(b"a\xC3 b", false, false);
    assert_eq!(gemma.decode_bytes(&ids, true), b"a\xC3\xE2\x96\x81b");

    // Byte-level BPE: every malformed byte becomes U+FFFD.
    let smol = tokenizer(SMOLLM);
    let input: &[u8] = b"ok \xFF\xC3( \xE6\x97 end\xF0";
    let ids = smol.encode_bytes(input, false, false);
    assert_eq!(
        smol.decode(&ids),
        "ok \u{FFFD}\u{FFFD}( \u{FFFD}\u{FFFD} end\u{FFFD}"
    );
}

#[test]
fn round_trips_without_special_parsing() {
    let corpus = std::fs::read_to_string(golden_dir().join("corpus-gpl3.txt")).expect("corpus");
    for model in [SMOLLM, GEMMA] {
        let tok = tokenizer(model);
        let sample = &corpus[..4000];
        let ids = tok.encode(sample, false, false);
        assert_eq!(tok.decode(&ids), sample, "{model}");
    }
}
