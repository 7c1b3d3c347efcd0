//! Constrained decoding: output that a JSON schema, a regular expression or
//! a Lark grammar accepts, by construction.
//!
//! This module owns three things:
//! - [`ConstraintVocab`]: a vocabulary as the `llguidance` engine sees it
//!   (every token id's bytes, which ids are special, which end generation)
//!   and the engine's per-vocabulary tables. Building it walks the whole
//!   vocabulary, so a runtime builds one per model and shares it (`Arc`).
//! - [`ConstraintSpec`]: what a request asks for, as plain data (cheap to
//!   clone and carry in request settings).
//! - [`Constraint`]: one generation's matcher. Each step it turns the logits
//!   of every token the grammar cannot take next into `-inf`
//!   ([`Constraint::mask_logits`]), before penalties and filters, so the
//!   sampler draws only from valid continuations; then it consumes the token
//!   that was chosen ([`Constraint::accept`]).
//!
//! The engine is `llguidance` (an Earley parser over a lazily built
//! token-trie lexer). A schema it cannot compile is an error carrying its
//! message, never a silent fall-back to unconstrained output.

use std::fmt;
use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

/// Why a constraint could not be built or followed. The message is the
/// engine's, naming the unsupported feature or the point of failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConstraintError(pub String);

impl fmt::Display for ConstraintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConstraintError {}

/// One vocabulary entry as the constraint engine needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VocabEntry {
    /// The bytes the token adds to the output text (what the streaming
    /// detokeniser emits for it). Empty for tokens that add nothing.
    pub bytes: Vec<u8>,
    /// Control tokens (`<|im_end|>`, `<start_of_turn>`): never part of
    /// constrained text; `bytes` is then their name.
    pub special: bool,
}

/// A vocabulary prepared for constrained decoding; see the module docs.
pub struct ConstraintVocab {
    factory: ParserFactory,
    n_vocab: usize,
    eog: Vec<u32>,
}

impl fmt::Debug for ConstraintVocab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConstraintVocab")
            .field("n_vocab", &self.n_vocab)
            .field("eog", &self.eog)
            .finish_non_exhaustive()
    }
}

impl ConstraintVocab {
    /// Builds the engine's tables for `entries` (indexed by token id).
    /// `eog` lists every id that ends generation; at least one is needed,
    /// since a finished grammar allows only those.
    pub fn new(entries: &[VocabEntry], eog: &[u32]) -> Result<ConstraintVocab, ConstraintError> {
        let n = entries.len();
        if n == 0 {
            return Err(ConstraintError("the vocabulary is empty".into()));
        }
        let mut eog: Vec<u32> = eog.iter().copied().filter(|&t| (t as usize) < n).collect();
        eog.sort_unstable();
        eog.dedup();
        let Some(&first_eog) = eog.first() else {
            return Err(ConstraintError(
                "the vocabulary has no end-of-generation token, which a finished grammar needs"
                    .into(),
            ));
        };
        let words: Vec<Vec<u8>> = entries
            .iter()
            .enumerate()
            .map(|(id, e)| {
                if e.special || eog.binary_search(&(id as u32)).is_ok() {
                    // The engine marks special tokens by a leading 0xFF, a
                    // byte no UTF-8 text contains, so grammars never match them.
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    if e.bytes.is_empty() {
                        w.extend_from_slice(format!("<[{id}]>").as_bytes());
                    } else {
                        w.extend_from_slice(&e.bytes);
                    }
                    w
                } else {
                    e.bytes.clone()
                }
            })
            .collect();
        let info = TokRxInfo::new(n as u32, first_eog);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&eog);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(engine_error)?;
        factory.quiet();
        Ok(ConstraintVocab {
            factory,
            n_vocab: n,
            eog,
        })
    }

    /// A vocabulary of the 256 single bytes (and one end token): enough to
    /// check whether a specification compiles at all, without a model.
    fn bytes_only() -> &'static ConstraintVocab {
        static BYTES: OnceLock<ConstraintVocab> = OnceLock::new();
        BYTES.get_or_init(|| {
            let mut entries: Vec<VocabEntry> = (0..=255u8)
                .map(|b| VocabEntry {
                    bytes: vec![b],
                    special: false,
                })
                .collect();
            entries.push(VocabEntry {
                bytes: b"</s>".to_vec(),
                special: true,
            });
            // A fixed table of 257 entries with an end token always builds.
            ConstraintVocab::new(&entries, &[256]).expect("the byte vocabulary builds")
        })
    }

    /// Number of token ids.
    pub fn len(&self) -> usize {
        self.n_vocab
    }

    pub fn is_empty(&self) -> bool {
        self.n_vocab == 0
    }

    /// The ids that end generation, ascending.
    pub fn eog(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `id` ends generation.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }
}

/// What a generation must produce.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstraintSpec {
    /// Any JSON object (OpenAI's `json_object`, Ollama's `"json"`).
    JsonObject,
    /// A value valid against this JSON schema.
    JsonSchema(Value),
    /// Text the whole of which matches this regular expression (Rust
    /// `regex` syntax; anchored at both ends).
    Regex(String),
    /// Text in the language of this Lark grammar (llguidance's dialect).
    Lark(String),
}

/// The JSON layout used unless a schema chooses its own (llguidance's
/// `x-guidance` key): one space after `,` and `:`, no other whitespace.
/// Free whitespace — even bounded per gap — lets a small model whose
/// favourite next token (a code fence, say) was masked fall back to
/// newlines at every gap, spending its tokens on layout; a fixed layout
/// keeps every step on content and the output's length bounded by the
/// schema.
fn json_layout() -> Value {
    serde_json::json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    })
}

impl ConstraintSpec {
    fn grammar(&self) -> Result<TopLevelGrammar, ConstraintError> {
        Ok(match self {
            ConstraintSpec::JsonObject => {
                let mut s = serde_json::json!({"type": "object"});
                s["x-guidance"] = json_layout();
                TopLevelGrammar::from_json_schema(s)
            }
            ConstraintSpec::JsonSchema(schema) => {
                let Value::Object(map) = schema else {
                    // `true` is the one non-object schema worth accepting
                    // (anything); `false` accepts nothing.
                    return match schema {
                        Value::Bool(true) => {
                            ConstraintSpec::JsonSchema(serde_json::json!({})).grammar()
                        }
                        _ => Err(ConstraintError(format!(
                            "a JSON schema must be an object (or true), not {}",
                            kind_of(schema)
                        ))),
                    };
                };
                let mut map = map.clone();
                map.entry("x-guidance").or_insert_with(json_layout);
                TopLevelGrammar::from_json_schema(Value::Object(map))
            }
            ConstraintSpec::Regex(rx) => TopLevelGrammar::from_regex(rx),
            ConstraintSpec::Lark(g) => {
                if g.trim().is_empty() {
                    return Err(ConstraintError("the grammar is empty".into()));
                }
                TopLevelGrammar::from_lark(g.clone())
            }
        })
    }

    /// Whether the engine can compile this specification at all (on a
    /// byte-level vocabulary, so no model is needed). Servers call this to
    /// reject a bad schema before queueing any work.
    pub fn check(&self) -> Result<(), ConstraintError> {
        Constraint::new(ConstraintVocab::bytes_only(), self).map(|_| ())
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn engine_error(e: impl fmt::Display) -> ConstraintError {
    ConstraintError(e.to_string())
}

/// What a mask that allows nothing, not even ending, means.
const DEAD_END: &str = "no token of the model's vocabulary can continue the output here, \
     and the output so far is incomplete";

/// A failure to compute the next mask. The engine reports an empty mask as
/// `NoExtensionBias` followed by a dump of its state; say what it means,
/// and keep only the engine's first line.
fn mask_error(e: impl fmt::Display) -> ConstraintError {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default().trim();
    if first.starts_with("NoExtension") {
        ConstraintError(format!("{DEAD_END} ({first})"))
    } else {
        ConstraintError(text)
    }
}

/// One generation's grammar state; see the module docs.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    n_vocab: usize,
    eog: Vec<u32>,
    /// The mask of the current step, kept so `accept` can check the chosen
    /// token without recomputing it.
    mask: Option<SimpleVob>,
    /// Time spent computing masks, for benchmarks.
    mask_ns: u128,
    masks: u64,
}

impl fmt::Debug for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Constraint")
            .field("n_vocab", &self.n_vocab)
            .field("finished", &self.matcher.is_stopped())
            .finish_non_exhaustive()
    }
}

impl Constraint {
    /// Compiles `spec` for `vocab`. An unsupported feature or a malformed
    /// schema, pattern or grammar is an error with the engine's message.
    pub fn new(
        vocab: &ConstraintVocab,
        spec: &ConstraintSpec,
    ) -> Result<Constraint, ConstraintError> {
        let grammar = spec.grammar()?;
        let parser = vocab.factory.create_parser(grammar).map_err(engine_error)?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError(e));
        }
        Ok(Constraint {
            matcher,
            n_vocab: vocab.n_vocab,
            eog: vocab.eog.clone(),
            mask: None,
            mask_ns: 0,
            masks: 0,
        })
    }

    /// Whether the grammar is complete and admits nothing more: the
    /// generation should end now.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// Computes the tokens allowed next, as a bit set over the vocabulary,
    /// unless this step's is already known (it is kept until the next
    /// [`Constraint::accept`]).
    fn ensure_mask(&mut self) -> Result<&SimpleVob, ConstraintError> {
        if self.mask.is_none() {
            let t0 = std::time::Instant::now();
            let m = self.matcher.compute_mask_or_eos().map_err(mask_error)?;
            self.mask_ns += t0.elapsed().as_nanos();
            self.masks += 1;
            self.mask = Some(m);
        }
        Ok(self.mask.get_or_insert_with(SimpleVob::new))
    }

    /// Sets the logit of every token the grammar does not allow next to
    /// `-inf`. Returns whether any token other than an end-of-generation
    /// one is allowed (false: the grammar can only end here).
    pub fn mask_logits(&mut self, logits: &mut [f32]) -> Result<bool, ConstraintError> {
        let n = self.n_vocab.min(logits.len());
        self.ensure_mask()?;
        let (Some(mask), eog) = (&self.mask, &self.eog) else {
            return Err(ConstraintError("no mask was computed".into()));
        };
        let (mut any, mut any_text) = (false, false);
        for (id, l) in logits[..n].iter_mut().enumerate() {
            if !mask.is_allowed(id as u32) {
                *l = f32::NEG_INFINITY;
                continue;
            }
            any = true;
            if !any_text && eog.binary_search(&(id as u32)).is_err() {
                any_text = true;
            }
        }
        for l in &mut logits[n..] {
            *l = f32::NEG_INFINITY;
        }
        if !any {
            // Not even ending is allowed: this vocabulary cannot spell
            // what the grammar needs next.
            return Err(ConstraintError(DEAD_END.into()));
        }
        Ok(any_text)
    }

    /// Whether `id` is allowed as the next token.
    pub fn allows(&mut self, id: u32) -> Result<bool, ConstraintError> {
        Ok(self.ensure_mask()?.is_allowed(id))
    }

    /// The first allowed token that does not end generation, if any (a
    /// fall-back when sampling could not pick from the mask).
    pub fn first_allowed_text(&mut self) -> Result<Option<u32>, ConstraintError> {
        self.ensure_mask()?;
        let (Some(mask), eog) = (&self.mask, &self.eog) else {
            return Ok(None);
        };
        let mut found = None;
        mask.iter_set_entries(|i| {
            if found.is_none() && eog.binary_search(&(i as u32)).is_err() {
                found = Some(i as u32);
            }
        });
        Ok(found)
    }

    /// Whether the grammar accepts the text so far (ending here is valid).
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_stopped() || self.matcher.is_accepting().unwrap_or(false)
    }

    /// Consumes the chosen token. A token the grammar does not allow is an
    /// error (the sampler must only pick from the mask).
    pub fn accept(&mut self, id: u32) -> Result<(), ConstraintError> {
        if !self.allows(id)? {
            return Err(ConstraintError(format!(
                "token {id} is not allowed by the constraint here"
            )));
        }
        self.mask = None;
        if self.eog.binary_search(&id).is_ok() {
            // The end token closes the generation; the engine needs no record.
            return Ok(());
        }
        self.matcher.consume_token(id).map_err(engine_error)
    }

    /// Total time spent computing masks and how many were computed.
    pub fn mask_stats(&self) -> (std::time::Duration, u64) {
        (
            std::time::Duration::from_nanos(self.mask_ns.min(u64::MAX as u128) as u64),
            self.masks,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny vocabulary: every single byte of printable ASCII, a few
    /// multi-byte tokens, a special token and an end token.
    fn vocab() -> (Vec<VocabEntry>, u32) {
        let mut e: Vec<VocabEntry> = (0x20u8..0x7f)
            .map(|b| VocabEntry {
                bytes: vec![b],
                special: false,
            })
            .collect();
        for w in [
            "{\"", "\": ", "true", "false", "null", "ab", "\"}", ", \"", "12",
        ] {
            e.push(VocabEntry {
                bytes: w.as_bytes().to_vec(),
                special: false,
            });
        }
        e.push(VocabEntry {
            bytes: b"<start>".to_vec(),
            special: true,
        });
        e.push(VocabEntry {
            bytes: b"<end>".to_vec(),
            special: true,
        });
        let end = (e.len() - 1) as u32;
        (e, end)
    }

    fn build() -> (ConstraintVocab, Vec<VocabEntry>) {
        let (e, end) = vocab();
        (ConstraintVocab::new(&e, &[end]).unwrap(), e)
    }

    fn id_of(e: &[VocabEntry], s: &str) -> u32 {
        e.iter()
            .position(|x| x.bytes == s.as_bytes() && !x.special)
            .unwrap() as u32
    }

    fn allowed(c: &mut Constraint, n: usize) -> Vec<u32> {
        let mut logits = vec![0.0f32; n];
        c.mask_logits(&mut logits).unwrap();
        (0..n as u32)
            .filter(|&i| logits[i as usize] != f32::NEG_INFINITY)
            .collect()
    }

    /// Greedy walk choosing, at each step, the first allowed token from
    /// `prefer` in order; returns the text.
    fn drive(c: &mut Constraint, e: &[VocabEntry], prefer: &[&str], end: u32) -> String {
        let mut out = Vec::new();
        for _ in 0..200 {
            if c.is_finished() {
                break;
            }
            let ok = allowed(c, e.len());
            let pick = prefer
                .iter()
                .map(|p| id_of(e, p))
                .find(|id| ok.contains(id))
                .or_else(|| ok.iter().copied().find(|&i| i != end));
            let Some(id) = pick else { break };
            c.accept(id).unwrap();
            out.extend_from_slice(&e[id as usize].bytes);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn regex_mask_is_exact() {
        let (v, e) = build();
        let end = (e.len() - 1) as u32;
        let mut c = Constraint::new(&v, &ConstraintSpec::Regex("a[bc]+d".into())).unwrap();
        // `a` and `ab` both start a match; nothing else does.
        let ok = allowed(&mut c, e.len());
        let mut want = vec![id_of(&e, "a"), id_of(&e, "ab")];
        want.sort();
        assert_eq!(ok, want);
        c.accept(id_of(&e, "ab")).unwrap();
        let ok = allowed(&mut c, e.len());
        let mut want = vec![id_of(&e, "b"), id_of(&e, "c"), id_of(&e, "d")];
        want.sort();
        assert_eq!(ok, want, "after `ab`: b, c or d; not the end");
        c.accept(id_of(&e, "d")).unwrap();
        assert!(c.is_accepting());
        // Complete: only the end token (or the matcher already stopped).
        if !c.is_finished() {
            assert_eq!(allowed(&mut c, e.len()), vec![end]);
        }
        assert!(
            c.accept(id_of(&e, "x")).is_err(),
            "x is not allowed after d"
        );
    }

    #[test]
    fn special_tokens_never_allowed_in_text() {
        let (v, e) = build();
        let start = (e.len() - 2) as u32;
        let mut c = Constraint::new(&v, &ConstraintSpec::Regex("[a-z<>]*".into())).unwrap();
        let ok = allowed(&mut c, e.len());
        assert!(!ok.contains(&start));
        assert!(ok.contains(&id_of(&e, "<")));
    }

    #[test]
    fn lark_grammar() {
        let (v, e) = build();
        let end = (e.len() - 1) as u32;
        let g = "start: \"x\" num\nnum: /[0-9]{2}/\n";
        let mut c = Constraint::new(&v, &ConstraintSpec::Lark(g.into())).unwrap();
        assert_eq!(allowed(&mut c, e.len()), vec![id_of(&e, "x")]);
        let text = drive(&mut c, &e, &["x", "12", "9"], end);
        assert_eq!(text, "x12");
        assert!(c.is_accepting());
    }

    #[test]
    fn json_schema_output_is_valid() {
        let (v, e) = build();
        let end = (e.len() - 1) as u32;
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"ab": {"type": "boolean"}, "n": {"type": "integer", "minimum": 3, "maximum": 20}},
            "required": ["ab", "n"],
            "additionalProperties": false
        });
        let mut c = Constraint::new(&v, &ConstraintSpec::JsonSchema(schema)).unwrap();
        let ok = allowed(&mut c, e.len());
        assert!(ok.contains(&id_of(&e, "{")));
        assert!(!ok.contains(&id_of(&e, "[")));
        // Prefer tokens that would break the schema if they were allowed.
        let text = drive(
            &mut c,
            &e,
            &["{\"", "ab", "\": ", "false", ", \"", "n", "12", "9", "}"],
            end,
        );
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(v["ab"], Value::Bool(false));
        let n = v["n"].as_i64().unwrap();
        assert!((3..=20).contains(&n), "{text}");
        assert!(c.is_accepting());
    }

    #[test]
    fn json_layout_is_fixed() {
        let (v, e) = build();
        let mut c = Constraint::new(&v, &ConstraintSpec::JsonObject).unwrap();
        let space = id_of(&e, " ");
        assert!(!allowed(&mut c, e.len()).contains(&space));
        c.accept(id_of(&e, "{")).unwrap();
        assert!(!allowed(&mut c, e.len()).contains(&space));
        for t in ["\"", "a", "\": ", "1"] {
            c.accept(id_of(&e, t)).unwrap();
        }
        // After a value: the separator `, ` (whole or in parts) or `}`.
        let ok = allowed(&mut c, e.len());
        assert!(ok.contains(&id_of(&e, "}")));
        assert!(ok.contains(&id_of(&e, ", \"")));
        assert!(!ok.contains(&space));
        c.accept(id_of(&e, ",")).unwrap();
        assert_eq!(
            allowed(&mut c, e.len()),
            vec![space],
            "the separator is `, `"
        );
    }

    #[test]
    fn json_object_accepts_only_objects() {
        let (v, e) = build();
        let mut c = Constraint::new(&v, &ConstraintSpec::JsonObject).unwrap();
        let ok = allowed(&mut c, e.len());
        assert!(ok.contains(&id_of(&e, "{")));
        assert!(!ok.contains(&id_of(&e, "[")));
        assert!(!ok.contains(&id_of(&e, "true")));
    }

    #[test]
    fn unsupported_and_malformed_specs_are_errors() {
        // A schema feature llguidance does not implement is named.
        let err = ConstraintSpec::JsonSchema(serde_json::json!({
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "dependentSchemas": {"a": {"required": ["b"]}}
        }))
        .check()
        .unwrap_err();
        assert!(err.0.contains("dependentSchemas"), "{err}");
        let err = ConstraintSpec::JsonSchema(serde_json::json!({"type": "frobnicate"}))
            .check()
            .unwrap_err();
        assert!(err.0.contains("frobnicate"), "{err}");
        assert!(ConstraintSpec::JsonSchema(Value::String("x".into()))
            .check()
            .is_err());
        assert!(ConstraintSpec::Regex("a(".into()).check().is_err());
        assert!(ConstraintSpec::Lark("start: (".into()).check().is_err());
        assert!(ConstraintSpec::Lark("  ".into()).check().is_err());
        assert!(ConstraintSpec::JsonObject.check().is_ok());
        assert!(ConstraintSpec::JsonSchema(Value::Bool(true))
            .check()
            .is_ok());
    }

    #[test]
    fn vocab_needs_an_end_token() {
        let (e, _) = vocab();
        assert!(ConstraintVocab::new(&e, &[]).is_err());
        assert!(ConstraintVocab::new(&[], &[0]).is_err());
    }

    #[test]
    fn mask_leaves_allowed_logits_untouched() {
        let (v, e) = build();
        let mut c = Constraint::new(&v, &ConstraintSpec::Regex("[ab]".into())).unwrap();
        let mut logits: Vec<f32> = (0..e.len()).map(|i| i as f32 * 0.5 - 3.0).collect();
        let orig = logits.clone();
        assert!(c.mask_logits(&mut logits).unwrap());
        for (i, (&l, &o)) in logits.iter().zip(&orig).enumerate() {
            let allowed_here = e[i].bytes == b"a" || e[i].bytes == b"b" || e[i].bytes == b"ab";
            if allowed_here && !e[i].special {
                assert!(l == o || e[i].bytes == b"ab", "id {i}");
            }
            if !allowed_here {
                assert_eq!(l, f32::NEG_INFINITY, "id {i}");
            }
        }
        // `ab` is too long for [ab].
        assert_eq!(logits[id_of(&e, "ab") as usize], f32::NEG_INFINITY);
    }
}
