//! The tokeniser: text → ids and ids → bytes, matching llama.cpp.
//!
//! This module owns: building the lookup tables from a [`VocabSpec`] once
//! (text→id, merge ranks, byte tokens, special-token matcher, rendered
//! pieces), llama.cpp's special-id defaults and end-of-generation rules, and
//! the `encode`/`decode` entry points that dispatch to `bpe` or `spm`.

use crate::bpe::{self, ByteMap, Merges};
use crate::error::TextError;
use crate::fxhash::{Arena, TextIndex};
use crate::pretokenize::PreTokenizer;
use crate::special::{Fragment, SpecialMatcher};
use crate::spm;
use crate::unicode::{decode_lenient, push_utf8};
use crate::vocab::{attr, ModelKind, TokenType, VocabSpec};

/// Texts llama.cpp treats as end of generation wherever they appear in a
/// vocabulary.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// A loaded tokeniser. Cheap to share (`&Tokenizer` is all encoding needs).
pub struct Tokenizer {
    model: ModelKind,
    pre: Option<PreTokenizer>,
    texts: Arena,
    scores: Vec<f32>,
    attrs: Vec<u16>,
    text_to_id: TextIndex,
    merges: Option<Merges>,
    byte_map: ByteMap,
    /// BPE: the token spelled by one raw byte; SPM: the `<0xXX>` token.
    byte_token: [Option<u32>; 256],
    specials: SpecialMatcher,
    /// `token_to_piece(id, special = true)` for every id.
    pieces: Arena,
    eog: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.model)
            .field("pre", &self.pre.as_ref().map(|p| p.name()))
            .field("vocab_size", &self.texts.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("add_space_prefix", &self.add_space_prefix)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds the tokeniser and all its lookup tables.
    pub fn from_spec(spec: VocabSpec) -> Result<Tokenizer, TextError> {
        let n = spec.tokens.len();
        if n == 0 {
            return Err(TextError::InvalidVocab("no tokens".into()));
        }
        if n > u32::MAX as usize {
            return Err(TextError::InvalidVocab(format!("{n} tokens is too many")));
        }
        if !spec.scores.is_empty() && spec.scores.len() < n {
            return Err(TextError::InvalidVocab(format!(
                "{} scores for {n} tokens",
                spec.scores.len()
            )));
        }
        if !spec.token_types.is_empty() && spec.token_types.len() < n {
            return Err(TextError::InvalidVocab(format!(
                "{} token types for {n} tokens",
                spec.token_types.len()
            )));
        }

        let total: usize = spec.tokens.iter().map(|t| t.len()).sum();
        let mut texts = Arena::with_capacity(n, total + 16);
        for (i, t) in spec.tokens.iter().enumerate() {
            if t.is_empty() {
                // llama.cpp renames empty entries so they cannot match text.
                texts.push(format!("[EMPTY_{i}]").as_bytes());
            } else {
                texts.push(t.as_bytes());
            }
        }
        let (text_to_id, dups) = TextIndex::build(&texts);
        if let Some(&(first, second)) = dups.first() {
            return Err(TextError::InvalidVocab(format!(
                "duplicate token '{}' has ids {first} and {second}",
                String::from_utf8_lossy(texts.get(second as usize).unwrap_or_default())
            )));
        }
        let scores = if spec.scores.is_empty() {
            vec![0.0; n]
        } else {
            spec.scores[..n].to_vec()
        };
        let mut attrs: Vec<u16> = if spec.token_types.is_empty() {
            vec![attr::NORMAL; n]
        } else {
            spec.token_types[..n]
                .iter()
                .map(|&t| attr::from_type(t))
                .collect()
        };

        let (pre, defaults) = match spec.model {
            ModelKind::Bpe => {
                let pre = PreTokenizer::from_name(&spec.pre)?;
                let d = Defaults {
                    bos: Some(11),
                    eos: Some(11),
                    unk: None,
                    add_bos: pre.default_add_bos,
                    add_space_prefix: false,
                    clean_spaces: pre.clean_spaces,
                };
                (Some(pre), d)
            }
            ModelKind::Spm => (
                None,
                Defaults {
                    bos: Some(1),
                    eos: Some(2),
                    unk: Some(0),
                    add_bos: true,
                    add_space_prefix: true,
                    clean_spaces: false,
                },
            ),
        };

        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        // A declared id out of range keeps the default, as llama.cpp does.
        let pick =
            |declared: Option<u32>, default: Option<u32>| in_range(declared).or(in_range(default));
        let sp = &spec.special;
        let bos = pick(sp.bos, defaults.bos);
        let eos = pick(sp.eos, defaults.eos);
        let unk = pick(sp.unk, defaults.unk);
        let pad = in_range(sp.pad);
        let mut eot = in_range(sp.eot);
        let mut eom = in_range(sp.eom);
        let mut fim = [
            in_range(sp.fim_pre),
            in_range(sp.fim_suf),
            in_range(sp.fim_mid),
            in_range(sp.fim_pad),
            in_range(sp.fim_rep),
            in_range(sp.fim_sep),
        ];

        let add_bos = spec.add_bos.unwrap_or(defaults.add_bos);
        let add_eos = spec.add_eos.unwrap_or(false);
        let add_space_prefix = spec.add_space_prefix.unwrap_or(defaults.add_space_prefix);
        if add_bos && bos.is_none() {
            return Err(TextError::InvalidVocab(
                "add_bos_token is true, but bos_token_id is not set".into(),
            ));
        }
        if add_eos && eos.is_none() {
            return Err(TextError::InvalidVocab(
                "add_eos_token is true, but eos_token_id is not set".into(),
            ));
        }

        // Undeclared end-of-turn and FIM ids are found by their text, and the
        // token found becomes a control token. llama.cpp walks a hash map, so
        // which of several candidates wins is unspecified there; the lowest id
        // wins here.
        let lookup_text = |s: &str| text_to_id.get(&texts, s.as_bytes());
        let detect = |slot: &mut Option<u32>, cands: &[&str], attrs: &mut Vec<u16>| {
            if slot.is_none() {
                if let Some(id) = cands.iter().filter_map(|c| lookup_text(c)).min() {
                    *slot = Some(id);
                    attrs[id as usize] |= attr::CONTROL;
                }
            }
        };
        detect(&mut eot, EOT_TEXTS, &mut attrs);
        detect(&mut eom, EOM_TEXTS, &mut attrs);
        for (slot, cands) in fim.iter_mut().zip([
            FIM_PRE_TEXTS,
            FIM_SUF_TEXTS,
            FIM_MID_TEXTS,
            FIM_PAD_TEXTS,
            FIM_REP_TEXTS,
            FIM_SEP_TEXTS,
        ]) {
            detect(slot, cands, &mut attrs);
        }

        let mut eog: Vec<u32> = Vec::new();
        let add_eog = |id: Option<u32>, eog: &mut Vec<u32>| {
            if let Some(id) = id {
                if !eog.contains(&id) {
                    eog.push(id);
                }
            }
        };
        add_eog(fim[3], &mut eog);
        add_eog(fim[4], &mut eog);
        add_eog(fim[5], &mut eog);
        for t in EOG_TEXTS {
            if let Some(id) = lookup_text(t) {
                add_eog(Some(id), &mut eog);
                attrs[id as usize] |= attr::CONTROL;
            }
        }
        // gpt-oss renders these as plain text.
        for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(id) = lookup_text(t) {
                attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        add_eog(eos, &mut eog);
        add_eog(eot, &mut eog);
        add_eog(eom, &mut eog);
        let text_is = |id: u32, s: &str| texts.get(id as usize) == Some(s.as_bytes());
        // Harmony-style vocabularies end a message with <|end|> but keep going.
        let has = |s: &str, eog: &[u32]| eog.iter().any(|&id| text_is(id, s));
        if (has("<|return|>", &eog) && has("<|call|>", &eog) && has("<|end|>", &eog))
            || ((has("<|call|>", &eog) || has("<|calls|>", &eog))
                && has("<|flush|>", &eog)
                && has("<|end|>", &eog))
        {
            if let Some(pos) = eog.iter().position(|&id| text_is(id, "<|end|>")) {
                let id = eog.remove(pos);
                attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        if has("<|tool_response>", &eog) {
            if let Some(pos) = eog.iter().position(|&id| text_is(id, "</s>")) {
                let id = eog.remove(pos);
                attrs[id as usize] = attr::NORMAL;
            }
        }
        eog.sort_unstable();

        let specials = SpecialMatcher::new(
            (0..n)
                .filter(|&i| attrs[i] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0)
                .map(|i| (i as u32, texts.get(i).unwrap_or_default()))
                .collect(),
        );

        let merges = match spec.model {
            ModelKind::Bpe => Some(Merges::new(&spec.merges, |t| text_to_id.get(&texts, t))),
            ModelKind::Spm => None,
        };

        let byte_map = ByteMap::new();
        let mut byte_token = [None; 256];
        for (b, slot) in byte_token.iter_mut().enumerate() {
            *slot = match spec.model {
                ModelKind::Bpe => text_to_id.get(&texts, &[b as u8]),
                ModelKind::Spm => text_to_id
                    .get(&texts, format!("<0x{b:02X}>").as_bytes())
                    .or_else(|| text_to_id.get(&texts, &[b as u8]))
                    .or(unk),
            };
        }

        let mut tok = Tokenizer {
            model: spec.model,
            pre,
            texts,
            scores,
            attrs,
            text_to_id,
            merges,
            byte_map,
            byte_token,
            specials,
            pieces: Arena::default(),
            eog,
            bos,
            eos,
            eot,
            unk,
            pad,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces: defaults.clean_spaces,
        };
        let mut pieces = Arena::with_capacity(n, total + 16);
        let mut buf = Vec::new();
        for id in 0..n as u32 {
            buf.clear();
            tok.render_piece(id, &mut buf);
            pieces.push(&buf);
        }
        tok.pieces = pieces;
        Ok(tok)
    }

    /// llama.cpp's `token_to_piece(id, special = true)`.
    fn render_piece(&self, id: u32, out: &mut Vec<u8>) {
        let a = self.attrs[id as usize];
        let text = self.texts.get(id as usize).unwrap_or_default();
        if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
            out.extend_from_slice(text);
        } else if a & attr::NORMAL != 0 {
            match self.model {
                ModelKind::Spm => replace_into(text, "\u{2581}".as_bytes(), b" ", out),
                ModelKind::Bpe => self.decode_gpt2(text, out),
            }
        } else if a & attr::BYTE != 0 {
            out.push(parse_byte_token(text));
        }
    }

    fn decode_gpt2(&self, text: &[u8], out: &mut Vec<u8>) {
        let (cps, _) = decode_lenient(text);
        for cp in cps {
            match self.byte_map.decode(cp) {
                Some(b) => out.push(b),
                None => {
                    // llama.cpp's marker for a character outside the byte map.
                    let mut utf8 = Vec::new();
                    push_utf8(&mut utf8, cp);
                    out.extend_from_slice(b"[UNK_BYTE_0x");
                    for b in utf8 {
                        out.extend_from_slice(format!("{b:02x}").as_bytes());
                    }
                    out.extend_from_slice(text);
                    out.push(b']');
                }
            }
        }
    }

    // ---- encoding -------------------------------------------------------

    /// Tokenises `text`. `add_special` adds BOS/EOS as the vocabulary asks;
    /// `parse_special` lets control-token text (e.g. `<|im_start|>`) become
    /// that token. User-defined tokens are always matched, as in llama.cpp.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        self.encode_bytes(text.as_bytes(), add_special, parse_special)
    }

    /// Like [`Tokenizer::encode`] for input that may not be valid UTF-8.
    ///
    /// Invalid bytes are handled as llama.cpp does:
    /// - byte-level BPE replaces each malformed byte with U+FFFD before
    ///   merging, so decoding gives U+FFFD where the bad bytes were;
    /// - SentencePiece cuts characters by the length their lead byte
    ///   announces, without checking the continuation bytes, and spells any
    ///   piece the vocabulary lacks with `<0xXX>` byte tokens. Stray
    ///   continuation bytes therefore come back unchanged, but a malformed
    ///   lead byte swallows the bytes after it into one byte-spelled piece,
    ///   and if one of those was an escaped space it decodes as U+2581
    ///   rather than a space.
    pub fn encode_bytes(&self, text: &[u8], add_special: bool, parse_special: bool) -> Vec<u32> {
        let allowed = |id: u32| {
            parse_special || self.attrs[id as usize] & (attr::CONTROL | attr::UNKNOWN) == 0
        };
        let frags = self.specials.partition(text, allowed, |id| {
            self.texts.get(id as usize).unwrap_or_default()
        });
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        match self.model {
            ModelKind::Spm => {
                let mut prev_special = true;
                let mut buf = Vec::new();
                for f in &frags {
                    match f {
                        Fragment::Token(id) => {
                            out.push(*id);
                            prev_special = true;
                        }
                        Fragment::Text(r) => {
                            buf.clear();
                            // llama.cpp prefixes a space to every fragment that
                            // follows a special token (or starts the text).
                            if self.add_space_prefix && prev_special {
                                buf.extend_from_slice("\u{2581}".as_bytes());
                            }
                            replace_into(&text[r.clone()], b" ", "\u{2581}".as_bytes(), &mut buf);
                            self.encode_spm(&buf, &mut out);
                            prev_special = false;
                        }
                    }
                }
            }
            ModelKind::Bpe => {
                for f in &frags {
                    match f {
                        Fragment::Token(id) => out.push(*id),
                        Fragment::Text(r) => self.encode_bpe(&text[r.clone()], &mut out),
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    fn lookup(&self, t: &[u8]) -> Option<u32> {
        self.text_to_id.get(&self.texts, t)
    }

    fn encode_spm(&self, text: &[u8], out: &mut Vec<u32>) {
        let lookup = |t: &[u8]| self.lookup(t);
        let score = |id: u32| self.scores[id as usize];
        let byte = |b: u8| self.byte_token[b as usize];
        spm::encode(text, &lookup, &score, &byte, out);
    }

    fn encode_bpe(&self, text: &[u8], out: &mut Vec<u32>) {
        let (Some(pre), Some(merges)) = (&self.pre, &self.merges) else {
            return;
        };
        let (cps, _) = decode_lenient(text);
        let lookup = |t: &[u8]| self.lookup(t);
        let mut start = 0;
        let mut raw = Vec::new();
        let mut word = Vec::new();
        for len in pre.split(&cps) {
            raw.clear();
            for &cp in &cps[start..start + len] {
                push_utf8(&mut raw, cp);
            }
            start += len;
            word.clear();
            self.byte_map.encode_into(&raw, &mut word);
            if pre.ignore_merges {
                if let Some(id) = self.lookup(&word) {
                    out.push(id);
                    continue;
                }
            }
            bpe::encode_word(&word, merges, &lookup, &self.byte_token, out);
        }
    }

    // ---- decoding -------------------------------------------------------

    /// The bytes of one token as llama.cpp's `token_to_piece` renders it
    /// with special tokens shown (control tokens as their text). Unknown ids
    /// give an empty slice.
    pub fn piece_bytes(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).unwrap_or_default()
    }

    /// The piece of one token; with `render_special` false, control and
    /// unknown-type tokens render as nothing (llama.cpp's `special = false`).
    pub fn piece(&self, id: u32, render_special: bool) -> &[u8] {
        if !render_special && self.is_control(id) {
            return &[];
        }
        self.piece_bytes(id)
    }

    fn is_control(&self, id: u32) -> bool {
        self.attrs
            .get(id as usize)
            .is_some_and(|a| a & (attr::CONTROL | attr::UNKNOWN) != 0)
    }

    /// The ids' pieces (special tokens as their text) joined and turned into
    /// text; malformed UTF-8 becomes U+FFFD. This is what llama-server's
    /// `/detokenize` returns.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids, true)).into_owned()
    }

    /// The raw bytes of the ids' pieces, joined.
    pub fn decode_bytes(&self, ids: &[u32], render_special: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for &id in ids {
            out.extend_from_slice(self.piece(id, render_special));
        }
        out
    }

    /// llama.cpp's `llama_detokenize`: optionally drops a leading BOS and a
    /// trailing EOS the vocabulary adds (`remove_special`), drops the space
    /// SentencePiece prefixes to the first word, renders control tokens only
    /// with `unparse_special`, and, for vocabularies that ask for it, removes
    /// the space before `?!.,` and English contractions.
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> String {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if remove_special && self.add_bos && ids.first().is_some_and(|&f| Some(f) == self.bos) {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special && self.add_eos && ids.last().is_some_and(|&l| Some(l) == self.eos) {
            ids = &ids[..ids.len() - 1];
        }
        let mut text = Vec::new();
        for &id in ids {
            let mut p = self.piece(id, unparse_special);
            if remove_space && p.first() == Some(&b' ') {
                p = &p[1..];
            }
            remove_space = false;
            text.extend_from_slice(p);
        }
        if self.clean_spaces {
            text = clean_up_spaces(&text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    // ---- vocabulary facts -------------------------------------------------

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.texts.len()
    }

    /// The token's text as stored in the vocabulary (GPT-2-encoded for BPE,
    /// with U+2581 for spaces for SPM); `None` for an unknown id.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts
            .get(id as usize)
            .and_then(|t| std::str::from_utf8(t).ok())
    }

    /// The id whose vocabulary text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.lookup(text.as_bytes())
    }

    /// The token's type as the vocabulary declared it, after llama.cpp's
    /// adjustments (end-of-generation tokens become control tokens).
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        let a = *self.attrs.get(id as usize)?;
        Some(if a & attr::CONTROL != 0 {
            TokenType::Control
        } else if a & attr::USER_DEFINED != 0 {
            TokenType::UserDefined
        } else if a & attr::UNKNOWN != 0 {
            TokenType::Unknown
        } else if a & attr::BYTE != 0 {
            TokenType::Byte
        } else if a & attr::NORMAL != 0 {
            TokenType::Normal
        } else if a & attr::UNUSED != 0 {
            TokenType::Unused
        } else {
            TokenType::Undefined
        })
    }

    /// The tokenisation algorithm.
    pub fn model(&self) -> ModelKind {
        self.model
    }

    /// The pre-tokeniser's name (BPE only).
    pub fn pre_tokenizer(&self) -> Option<&str> {
        self.pre.as_ref().map(|p| p.name())
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// End-of-turn token (declared, or found by its text).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }
    /// Whether `encode(…, add_special = true, …)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Whether `encode(…, add_special = true, …)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// Whether generating `id` ends generation (EOS, end-of-turn tokens and
    /// the other texts llama.cpp recognises).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }
}

struct Defaults {
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    add_bos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
}

fn replace_into(hay: &[u8], from: &[u8], to: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
}

/// The byte of a `<0xXX>` token (0 when malformed, like `strtol`).
fn parse_byte_token(text: &[u8]) -> u8 {
    text.get(3..5)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| u8::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

/// llama.cpp's `clean_up_tokenization_spaces`: drop the space before `?!.,`,
/// around a lone apostrophe, and before `'s 'm 're 've`.
fn clean_up_spaces(t: &[u8]) -> Vec<u8> {
    let mut a: Vec<u8> = Vec::with_capacity(t.len());
    for (i, &x) in t.iter().enumerate() {
        if i > 0 && t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            a.pop();
        }
        a.push(x);
    }
    let mut b: Vec<u8> = Vec::with_capacity(a.len());
    let mut i = 0;
    while i < a.len() {
        let x = a[i];
        if i > 0 && x == b'\'' && i + 1 < a.len() && a[i - 1] == b' ' && a[i + 1] == b' ' {
            b.pop();
            b.push(x);
            i += 2;
            continue;
        }
        b.push(x);
        i += 1;
    }
    let mut c: Vec<u8> = Vec::with_capacity(b.len());
    for i in 0..b.len() {
        let x = b[i];
        if i > 0 && b[i - 1] == b' ' && x == b'\'' && i + 1 < b.len() {
            let x1 = b[i + 1];
            let x2 = b.get(i + 2).copied();
            let drop = matches!(x1, b's' | b'm')
                || (i + 2 < b.len() && matches!((x1, x2), (b'r', Some(b'e')) | (b'v', Some(b'e'))));
            if drop {
                c.pop();
            }
        }
        c.push(x);
    }
    c
}
