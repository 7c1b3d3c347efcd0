//! Pre-tokenisers for byte-level BPE vocabularies, chosen by the GGUF key
//! `tokenizer.ggml.pre`.
//!
//! This module owns: mapping a pre-tokeniser name to its splitting rules, and
//! splitting text into the words BPE merges run inside. llama.cpp expresses
//! each pre-tokeniser as a list of regexes applied in turn (each one splits
//! the pieces left by the previous one; text between matches stays a piece of
//! its own). Two of those regexes (GPT-2's and llama3's) it runs through
//! hand-written matchers, the rest through `std::regex` over a text whose
//! non-ASCII code points are collapsed to one placeholder per category. The
//! matchers here reproduce both behaviours directly on code points.

use crate::error::TextError;
use crate::unicode::{to_lower, Cat, Flags};

/// One splitting pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
    Gpt2,
    /// llama3 / qwen2 family: `(?i:'s|…)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Llama3 { max_digits: usize },
    /// Every number code point on its own (`\p{N}`).
    EachDigit,
    /// Runs of number code points (`\p{N}+`).
    DigitRuns,
    /// Groups of three ASCII digits (`[0-9][0-9][0-9]`).
    AsciiTriples,
    /// Runs of punctuation plus `$+<=>^~|` (`[\p{P}\$\+<=>\^~\|]+`).
    PunctRuns,
}

/// A named pre-tokeniser: the passes llama.cpp runs for that name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreTokenizer {
    name: String,
    passes: Vec<Pass>,
    /// llama3-style vocabularies look a whole word up before merging.
    pub(crate) ignore_merges: bool,
    /// Whether llama.cpp's detokeniser tidies spaces before punctuation.
    pub(crate) clean_spaces: bool,
    /// llama.cpp turns `add_bos` on by default for these.
    pub(crate) default_add_bos: bool,
}

impl PreTokenizer {
    /// The pre-tokeniser llama.cpp uses for `tokenizer.ggml.pre = name`.
    ///
    /// An empty name means `default`, as in llama.cpp. Names this crate does
    /// not implement are an error naming them.
    pub fn from_name(name: &str) -> Result<PreTokenizer, TextError> {
        use Pass::*;
        let (passes, ignore_merges, clean_spaces, default_add_bos) = match name {
            "" | "default" => (
                vec![PunctRuns, Gpt2, DigitRuns, AsciiTriples],
                false,
                true,
                false,
            ),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => {
                (vec![Llama3 { max_digits: 3 }], true, true, true)
            }
            "dbrx" | "smaug-bpe" => (vec![Llama3 { max_digits: 3 }], false, true, false),
            "qwen2" | "deepseek-r1-qwen" => (vec![Llama3 { max_digits: 1 }], false, false, false),
            "stablelm2" | "megrez" => (vec![Llama3 { max_digits: 1 }], false, true, false),
            "smollm" | "command-r" => (vec![EachDigit, Gpt2], false, false, false),
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" => {
                (vec![EachDigit, Gpt2], false, true, false)
            }
            "gpt-2" | "gpt2" | "phi-2" | "jina-es" | "jina-de" | "mpt" | "olmo" | "jais"
            | "exaone4" => (vec![Gpt2], false, true, false),
            other => return Err(TextError::UnknownPreTokenizer(other.to_string())),
        };
        Ok(PreTokenizer {
            name: if name.is_empty() { "default" } else { name }.to_string(),
            passes,
            ignore_merges,
            clean_spaces,
            default_add_bos,
        })
    }

    /// The name this pre-tokeniser was built from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Splits decoded code points into words, returned as lengths in code
    /// points that add up to `cps.len()`.
    pub(crate) fn split(&self, cps: &[u32]) -> Vec<usize> {
        if cps.is_empty() {
            return Vec::new();
        }
        let mut pieces = vec![cps.len()];
        for pass in &self.passes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            let mut start = 0;
            for &len in &pieces {
                let chunk = &cps[start..start + len];
                split_chunk(*pass, chunk, &mut next);
                start += len;
            }
            pieces = next;
        }
        pieces
    }
}

fn split_chunk(pass: Pass, chunk: &[u32], out: &mut Vec<usize>) {
    match pass {
        Pass::Gpt2 => Matcher::new(chunk, out).gpt2(),
        Pass::Llama3 { max_digits } => Matcher::new(chunk, out).llama3(max_digits),
        Pass::EachDigit => split_by_runs(chunk, out, |c| Flags::of(c).is_number(), Some(1)),
        Pass::DigitRuns => split_by_runs(chunk, out, |c| Flags::of(c).is_number(), None),
        Pass::AsciiTriples => split_ascii_triples(chunk, out),
        Pass::PunctRuns => split_by_runs(chunk, out, is_default_punct, None),
    }
}

/// The class `[\p{P}\$\+<=>\^~\|]` as llama.cpp's collapsed regex sees it:
/// non-ASCII punctuation by category, ASCII by a fixed list (which leaves out
/// the backquote).
fn is_default_punct(cp: u32) -> bool {
    if cp < 128 {
        matches!(cp as u8,
            b'!'..=b'#' | b'%'..=b'*' | b','..=b'/' | b':' | b';' | b'?' | b'@'
            | b'['..=b']' | b'_' | b'{' | b'}'
            | b'$' | b'+' | b'<' | b'=' | b'>' | b'^' | b'~' | b'|')
    } else {
        Flags::of(cp).cat() == Cat::Punctuation
    }
}

/// Regex-iterator style split: matches are runs of code points satisfying
/// `pred` (at most `max` long), and the gaps between matches are pieces too.
fn split_by_runs(
    chunk: &[u32],
    out: &mut Vec<usize>,
    pred: impl Fn(u32) -> bool,
    max: Option<usize>,
) {
    let mut gap_start = 0;
    let mut i = 0;
    while i < chunk.len() {
        if pred(chunk[i]) {
            let mut j = i + 1;
            while j < chunk.len() && pred(chunk[j]) && max.is_none_or(|m| j - i < m) {
                j += 1;
            }
            if i > gap_start {
                out.push(i - gap_start);
            }
            out.push(j - i);
            i = j;
            gap_start = j;
        } else {
            i += 1;
        }
    }
    if chunk.len() > gap_start {
        out.push(chunk.len() - gap_start);
    }
}

fn split_ascii_triples(chunk: &[u32], out: &mut Vec<usize>) {
    let is_digit = |c: u32| (b'0' as u32..=b'9' as u32).contains(&c);
    let mut gap_start = 0;
    let mut i = 0;
    while i + 3 <= chunk.len() {
        if is_digit(chunk[i]) && is_digit(chunk[i + 1]) && is_digit(chunk[i + 2]) {
            if i > gap_start {
                out.push(i - gap_start);
            }
            out.push(3);
            i += 3;
            gap_start = i;
        } else {
            i += 1;
        }
    }
    if chunk.len() > gap_start {
        out.push(chunk.len() - gap_start);
    }
}

/// State for the two hand-written matchers; positions outside the chunk read
/// as "no character", which is how the patterns' look-aheads end at a chunk
/// boundary.
struct Matcher<'a> {
    cps: &'a [u32],
    out: &'a mut Vec<usize>,
    prev_end: usize,
}

impl<'a> Matcher<'a> {
    fn new(cps: &'a [u32], out: &'a mut Vec<usize>) -> Self {
        Matcher {
            cps,
            out,
            prev_end: 0,
        }
    }

    #[inline]
    fn cp(&self, pos: usize) -> Option<u32> {
        self.cps.get(pos).copied()
    }

    #[inline]
    fn flags(&self, pos: usize) -> Option<Flags> {
        self.cps.get(pos).map(|&c| Flags::of(c))
    }

    fn letter(&self, pos: usize) -> bool {
        self.flags(pos).is_some_and(|f| f.is_letter())
    }

    fn number(&self, pos: usize) -> bool {
        self.flags(pos).is_some_and(|f| f.is_number())
    }

    fn space(&self, pos: usize) -> bool {
        self.flags(pos).is_some_and(|f| f.is_whitespace())
    }

    /// A character of `[^\s\p{L}\p{N}]` at `pos` (inside the chunk).
    fn other(&self, pos: usize) -> bool {
        self.flags(pos)
            .is_some_and(|f| !(f.is_whitespace() || f.is_letter() || f.is_number()))
    }

    /// The first position from `pos` on whose character is not in `class`.
    fn skip(&self, mut pos: usize, class: fn(&Self, usize) -> bool) -> usize {
        while class(self, pos) {
            pos += 1;
        }
        pos
    }

    fn emit(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }

    /// Length of a contraction (`'s`, `'re`, …) starting at `pos`, if any.
    fn contraction(&self, pos: usize, fold_case: bool) -> Option<usize> {
        if self.cp(pos) != Some('\'' as u32) {
            return None;
        }
        let norm = |c: Option<u32>| c.map(|c| if fold_case { to_lower(c) } else { c });
        let c1 = norm(self.cp(pos + 1))?;
        if [b's', b't', b'm', b'd'].iter().any(|&b| c1 == b as u32) {
            return Some(2);
        }
        let c2 = norm(self.cp(pos + 2))?;
        let pair = |a: u8, b: u8| c1 == a as u32 && c2 == b as u32;
        (pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l')).then_some(3)
    }

    fn gpt2(mut self) {
        let n = self.cps.len();
        let mut pos = 0;
        while pos < n {
            if let Some(len) = self.contraction(pos, false) {
                pos += self.emit(pos + len);
                continue;
            }
            let is_space = self.cp(pos) == Some(' ' as u32);
            let probe = if is_space { pos + 1 } else { pos };
            if self.letter(probe) {
                pos = self.skip(probe, Self::letter);
                self.emit(pos);
                continue;
            }
            if self.number(probe) {
                pos = self.skip(probe, Self::number);
                self.emit(pos);
                continue;
            }
            if self.other(probe) {
                pos = self.skip(probe, Self::other);
                self.emit(pos);
                continue;
            }
            let mut n_ws = 0;
            while self.space(pos + n_ws) {
                n_ws += 1;
            }
            // `\s+(?!\S)`: leave the last white space to prefix the next word.
            if n_ws > 1 && pos + n_ws < n {
                pos += n_ws - 1;
                self.emit(pos);
                continue;
            }
            if n_ws > 0 {
                pos += n_ws;
                self.emit(pos);
                continue;
            }
            pos += 1;
            self.emit(pos);
        }
    }

    fn llama3(mut self, max_digits: usize) {
        let n = self.cps.len();
        let is_crlf = |c: Option<u32>| c == Some('\r' as u32) || c == Some('\n' as u32);
        let mut pos = 0;
        while pos < n {
            if let Some(len) = self.contraction(pos, true) {
                pos += self.emit(pos + len);
                continue;
            }
            let cp = self.cp(pos);
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if !(is_crlf(cp) || self.number(pos)) && (self.letter(pos) || self.letter(pos + 1)) {
                pos = self.skip(pos + 1, Self::letter);
                self.emit(pos);
                continue;
            }
            // `\p{N}{1,max}`
            if self.number(pos) {
                let mut start = pos;
                while self.number(pos) {
                    pos += 1;
                    if pos - start >= max_digits {
                        self.emit(pos);
                        start = pos;
                    }
                }
                self.emit(pos);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            let probe = if cp == Some(' ' as u32) { pos + 1 } else { pos };
            let lone_space_at_end = cp == Some(' ' as u32) && probe >= n;
            if self.other(probe) || lone_space_at_end {
                pos = self.skip(probe, Self::other);
                while is_crlf(self.cp(pos)) {
                    pos += 1;
                }
                self.emit(pos);
                continue;
            }
            let mut n_ws = 0;
            let mut last_crlf_end = None;
            while self.space(pos + n_ws) {
                if is_crlf(self.cp(pos + n_ws)) {
                    last_crlf_end = Some(pos + n_ws + 1);
                }
                n_ws += 1;
            }
            // `\s*[\r\n]+`
            if let Some(end) = last_crlf_end {
                pos = end;
                self.emit(pos);
                continue;
            }
            // `\s+(?!\S)`
            if n_ws > 1 && pos + n_ws < n {
                pos += n_ws - 1;
                self.emit(pos);
                continue;
            }
            // `\s+`
            if n_ws > 0 {
                pos += n_ws;
                self.emit(pos);
                continue;
            }
            pos += 1;
            self.emit(pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: &str, text: &str) -> Vec<String> {
        let p = PreTokenizer::from_name(pre).unwrap();
        let cps: Vec<u32> = text.chars().map(|c| c as u32).collect();
        let mut start = 0;
        p.split(&cps)
            .into_iter()
            .map(|len| {
                let w: String = cps[start..start + len]
                    .iter()
                    .map(|&c| char::from_u32(c).unwrap())
                    .collect();
                start += len;
                w
            })
            .collect()
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            words("gpt-2", "Hello  world's 123 !!\tx  "),
            vec!["Hello", " ", " world", "'s", " 123", " !!", "\t", "x", "  "]
        );
    }

    #[test]
    fn smollm_isolates_digits() {
        assert_eq!(
            words("smollm", "it's 12345 or 3.14"),
            vec!["it", "'s", " ", "1", "2", "3", "4", "5", " or", " ", "3", ".", "1", "4"]
        );
    }

    #[test]
    fn llama3_words() {
        assert_eq!(
            words("llama-bpe", "Don'T 12345\n\n  hi!!\n x "),
            vec!["Don", "'T", " ", "123", "45", "\n\n", " ", " hi", "!!\n", " x", " "]
        );
    }

    #[test]
    fn qwen2_single_digits() {
        assert_eq!(words("qwen2", "a 123"), vec!["a", " ", "1", "2", "3"]);
    }

    #[test]
    fn default_passes() {
        assert_eq!(
            words("default", "a+b 12345"),
            vec!["a", "+", "b", " ", "123", "45"]
        );
    }

    #[test]
    fn unknown_name_is_an_error() {
        let err = PreTokenizer::from_name("martian").unwrap_err();
        assert!(err.to_string().contains("martian"), "{err}");
    }
}
