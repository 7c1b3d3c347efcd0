//! Hand-built vocabularies: the algorithms' rules in isolation.

use hearth_text::{ModelKind, SpecialIds, TokenType, Tokenizer, VocabSpec};

/// GPT-2 spelling of a string (space → Ġ, newline → Ċ).
fn g(s: &str) -> String {
    s.replace(' ', "\u{120}").replace('\n', "\u{10A}")
}

fn tiny_bpe(pre: &str) -> Tokenizer {
    // ids: 0 <|eot|> (control), 1..: single characters, then merged tokens.
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|user|>".into()];
    for c in [
        "a", "b", "c", "d", "h", "e", "l", "o", " ", "\n", "1", "2", "'", "s", "!",
    ] {
        tokens.push(g(c));
    }
    for t in [
        "ab", "abc", " a", "he", "ll", "llo", "hello", " hello", "'s",
    ] {
        tokens.push(g(t));
    }
    let merges: Vec<String> = [
        ("a", "b"),
        ("ab", "c"),
        (" ", "a"),
        ("h", "e"),
        ("l", "l"),
        ("ll", "o"),
        ("he", "llo"),
        (" ", "hello"),
        ("'", "s"),
    ]
    .iter()
    .map(|(l, r)| format!("{} {}", g(l), g(r)))
    .collect();
    let mut types = vec![TokenType::Normal; tokens.len()];
    types[0] = TokenType::Control;
    types[1] = TokenType::Control;
    let spec = VocabSpec {
        pre: pre.into(),
        scores: Vec::new(),
        token_types: types,
        merges,
        special: SpecialIds {
            bos: Some(1),
            eos: Some(0),
            ..Default::default()
        },
        add_bos: Some(false),
        ..VocabSpec::new(ModelKind::Bpe, tokens)
    };
    Tokenizer::from_spec(spec).unwrap()
}

fn texts(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&i| String::from_utf8_lossy(tok.piece_bytes(i)).into_owned())
        .collect()
}

#[test]
fn bpe_merges_by_rank() {
    let tok = tiny_bpe("gpt-2");
    let ids = tok.encode("abc hello's abd", false, false);
    // (a, b) outranks ( , a), so " abd" becomes " " + "ab" + "d".
    assert_eq!(
        texts(&tok, &ids),
        vec!["abc", " hello", "'s", " ", "ab", "d"]
    );
    assert_eq!(tok.decode(&ids), "abc hello's abd");
}

#[test]
fn bpe_rank_beats_position() {
    // "hell": ("h","e") has rank 3 and ("l","l") rank 4, so "he" forms first;
    // ("he","ll") is not a merge, so the result is "he" + "ll".
    let tok = tiny_bpe("gpt-2");
    assert_eq!(
        texts(&tok, &tok.encode("hell", false, false)),
        vec!["he", "ll"]
    );
}

#[test]
fn bpe_missing_bytes_are_dropped_like_llama_cpp() {
    // 'z' has no token at all: llama.cpp emits nothing for it.
    let tok = tiny_bpe("gpt-2");
    assert_eq!(
        texts(&tok, &tok.encode("azb", false, false)),
        vec!["a", "b"]
    );
}

#[test]
fn bpe_special_tokens_only_when_asked() {
    let tok = tiny_bpe("gpt-2");
    let plain = tok.encode("<|user|>ab", true, false);
    assert!(!plain.contains(&1));
    let parsed = tok.encode("<|user|>ab<|endoftext|>", true, true);
    assert_eq!(parsed.first(), Some(&1));
    assert_eq!(parsed.last(), Some(&0));
    assert_eq!(texts(&tok, &parsed[1..parsed.len() - 1]), vec!["ab"]);
    assert!(tok.is_eog(0));
    assert!(!tok.is_eog(1));
}

#[test]
fn bpe_smollm_pre_splits_digits() {
    let tok = tiny_bpe("smollm");
    assert_eq!(texts(&tok, &tok.encode("12", false, false)), vec!["1", "2"]);
}

#[test]
fn bpe_pre_tokenizer_names() {
    for name in ["default", "gpt-2", "smollm", "llama-bpe", "qwen2", "llama3"] {
        tiny_bpe(name);
    }
    let spec = VocabSpec {
        pre: "no-such-pre".into(),
        ..VocabSpec::new(ModelKind::Bpe, vec!["a".into()])
    };
    let err = Tokenizer::from_spec(spec).unwrap_err().to_string();
    assert!(err.contains("no-such-pre"), "{err}");
}

#[test]
fn llama3_defaults_add_bos() {
    let spec = VocabSpec {
        pre: "llama-bpe".into(),
        special: SpecialIds {
            bos: Some(0),
            ..Default::default()
        },
        ..VocabSpec::new(ModelKind::Bpe, vec!["<s>".into(), "a".into()])
    };
    let tok = Tokenizer::from_spec(spec).unwrap();
    assert!(tok.add_bos());
    assert_eq!(tok.encode("a", true, false), vec![0, 1]);
}

fn tiny_spm(add_space_prefix: bool) -> Tokenizer {
    let mut tokens: Vec<String> = vec![
        "<unk>".into(),
        "<s>".into(),
        "</s>".into(),
        "<ctl>".into(),
        "\n\n".into(),
    ];
    let mut types = vec![
        TokenType::Unknown,
        TokenType::Control,
        TokenType::Control,
        TokenType::Control,
        TokenType::UserDefined,
    ];
    let mut scores = vec![0.0; 5];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TokenType::Byte);
        scores.push(0.0);
    }
    for (t, s) in [
        ("▁", -1.0),
        ("a", -2.0),
        ("b", -2.0),
        ("c", -2.0),
        ("ab", -3.0),
        ("bc", -1.5),
        ("▁a", -2.5),
        ("▁ab", -4.0),
        ("abc", -5.0),
    ] {
        tokens.push(t.into());
        types.push(TokenType::Normal);
        scores.push(s);
    }
    let spec = VocabSpec {
        scores,
        token_types: types,
        special: SpecialIds {
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            ..Default::default()
        },
        add_space_prefix: Some(add_space_prefix),
        ..VocabSpec::new(ModelKind::Spm, tokens)
    };
    Tokenizer::from_spec(spec).unwrap()
}

#[test]
fn spm_merges_by_score() {
    let tok = tiny_spm(false);
    // "abc": pairs ab (-3) and bc (-1.5): bc wins, then "a"+"bc" = "abc" (-5).
    assert_eq!(texts(&tok, &tok.encode("abc", false, false)), vec!["abc"]);
    // "ab a": "ab" forms; "▁a" forms.
    assert_eq!(
        texts(&tok, &tok.encode("ab a", false, false)),
        vec!["ab", " a"]
    );
}

#[test]
fn spm_space_prefix_and_bos() {
    let tok = tiny_spm(true);
    assert!(tok.add_bos());
    let ids = tok.encode("ab", true, false);
    assert_eq!(ids[0], 1);
    assert_eq!(texts(&tok, &ids[1..]), vec![" ab"]);
    // llama_detokenize drops the prefixed space only when no BOS was removed.
    assert_eq!(tok.detokenize(&ids[1..], false, false), "ab");
    assert_eq!(tok.detokenize(&ids, true, false), " ab");
    assert_eq!(tok.decode(&ids), "<s> ab");
    // The prefix follows every special token too, as in llama.cpp.
    let ids = tok.encode("a<ctl>a", false, true);
    assert_eq!(texts(&tok, &ids), vec![" a", "<ctl>", " a"]);
}

#[test]
fn spm_byte_fallback() {
    let tok = tiny_spm(false);
    let ids = tok.encode("aé", false, false);
    assert_eq!(tok.token_text(ids[1]), Some("<0xC3>"));
    assert_eq!(tok.token_text(ids[2]), Some("<0xA9>"));
    assert_eq!(tok.decode(&ids), "aé");
}

#[test]
fn user_defined_tokens_match_without_parse_special() {
    let tok = tiny_spm(false);
    let ids = tok.encode("a\n\nb", false, false);
    assert_eq!(ids[1], 4);
    assert_eq!(tok.decode(&ids), "a\n\nb");
    // Control tokens stay text unless parsing is asked for.
    let ids = tok.encode("<ctl>", false, false);
    assert!(!ids.contains(&3));
}

#[test]
fn invalid_specs_are_errors() {
    let dup = VocabSpec::new(ModelKind::Spm, vec!["a".into(), "a".into()]);
    assert!(Tokenizer::from_spec(dup)
        .unwrap_err()
        .to_string()
        .contains("duplicate"));
    let empty = VocabSpec::new(ModelKind::Spm, vec![]);
    assert!(Tokenizer::from_spec(empty).is_err());
    let short = VocabSpec {
        scores: vec![0.0],
        ..VocabSpec::new(ModelKind::Spm, vec!["a".into(), "b".into()])
    };
    assert!(Tokenizer::from_spec(short).is_err());
}

#[test]
fn shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
    assert_send_sync::<hearth_text::ChatTemplate>();
    assert_send_sync::<hearth_text::Detokenizer>();
}
