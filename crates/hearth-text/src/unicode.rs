//! Unicode facts the pre-tokenisers need, with llama.cpp's conventions.
//!
//! This module owns: the general-category class of a code point (letter,
//! number, punctuation, symbol, mark, other) and its white-space flag, and the
//! lenient UTF-8 decoding llama.cpp applies to tokeniser input (an invalid
//! byte becomes U+FFFD and decoding resumes at the next byte).
//!
//! The category data come from `regex-syntax`'s Unicode tables (`\p{L}` …),
//! expanded once into a flat per-code-point table so lookups in the hot loop
//! are a single index.

use std::sync::OnceLock;

/// Category of a code point, collapsed the way llama.cpp's `unicode_cpt_flags`
/// groups the Unicode general categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Cat {
    /// Anything not listed below: controls, format characters, separators,
    /// private use, unassigned.
    Other = 0,
    Letter = 1,
    Number = 2,
    Punctuation = 3,
    Symbol = 4,
    Mark = 5,
}

const WS_BIT: u8 = 0x80;
const CAT_MASK: u8 = 0x7f;
const N_CODEPOINTS: usize = 0x110000;

fn table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(build_table)
}

fn class_ranges(pattern: &str) -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class, HirKind};
    // The patterns are fixed literals in this file, so a parse failure is a
    // programming error caught by the unit tests, not a user-facing one.
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .expect("built-in Unicode class pattern parses");
    match hir.kind() {
        HirKind::Class(Class::Unicode(cls)) => cls
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        other => panic!("pattern {pattern} did not produce a Unicode class: {other:?}"),
    }
}

fn build_table() -> Vec<u8> {
    let mut t = vec![Cat::Other as u8; N_CODEPOINTS];
    for (pattern, cat) in [
        (r"\p{L}", Cat::Letter),
        (r"\p{N}", Cat::Number),
        (r"\p{P}", Cat::Punctuation),
        (r"\p{S}", Cat::Symbol),
        (r"\p{M}", Cat::Mark),
    ] {
        for (lo, hi) in class_ranges(pattern) {
            for cp in lo..=hi {
                t[cp as usize] = cat as u8;
            }
        }
    }
    // llama.cpp's white-space set is exactly Unicode's White_Space property,
    // which is what `char::is_whitespace` implements.
    for cp in 0..N_CODEPOINTS as u32 {
        if let Some(c) = char::from_u32(cp) {
            if c.is_whitespace() {
                t[cp as usize] |= WS_BIT;
            }
        }
    }
    t
}

/// Flags of one code point (out-of-range values are `Other`, not white space).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flags(u8);

impl Flags {
    #[inline]
    pub(crate) fn of(cp: u32) -> Flags {
        Flags(
            table()
                .get(cp as usize)
                .copied()
                .unwrap_or(Cat::Other as u8),
        )
    }
    #[inline]
    pub(crate) fn cat(self) -> Cat {
        match self.0 & CAT_MASK {
            1 => Cat::Letter,
            2 => Cat::Number,
            3 => Cat::Punctuation,
            4 => Cat::Symbol,
            5 => Cat::Mark,
            _ => Cat::Other,
        }
    }
    #[inline]
    pub(crate) fn is_letter(self) -> bool {
        self.cat() == Cat::Letter
    }
    #[inline]
    pub(crate) fn is_number(self) -> bool {
        self.cat() == Cat::Number
    }
    #[inline]
    pub(crate) fn is_whitespace(self) -> bool {
        self.0 & WS_BIT != 0
    }
}

/// Length of the UTF-8 sequence a lead byte announces, as llama.cpp computes
/// it from the high nibble alone (continuation bytes count as length 1).
#[inline]
pub(crate) fn utf8_len(lead: u8) -> usize {
    const LOOKUP: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LOOKUP[(lead >> 4) as usize]
}

/// Decodes `bytes` into code points the way llama.cpp does before
/// pre-tokenising: a malformed sequence yields U+FFFD and skips one byte.
///
/// Returns the code points together with the byte offset each starts at
/// (plus a final entry for the end), so callers can slice the input.
pub(crate) fn decode_lenient(bytes: &[u8]) -> (Vec<u32>, Vec<usize>) {
    let mut cps = Vec::with_capacity(bytes.len());
    let mut offs = Vec::with_capacity(bytes.len() + 1);
    let mut i = 0;
    while i < bytes.len() {
        offs.push(i);
        match decode_one(&bytes[i..]) {
            Some((cp, n)) => {
                cps.push(cp);
                i += n;
            }
            None => {
                cps.push(0xFFFD);
                i += 1;
            }
        }
    }
    offs.push(bytes.len());
    (cps, offs)
}

/// One code point from the front of `b`, with llama.cpp's acceptance rules
/// (structure only: overlong forms and surrogates are not rejected there
/// either).
fn decode_one(b: &[u8]) -> Option<(u32, usize)> {
    let b0 = *b.first()? as u32;
    let cont = |k: usize| -> Option<u32> {
        let c = *b.get(k)?;
        (c & 0xC0 == 0x80).then_some((c & 0x3F) as u32)
    };
    if b0 & 0x80 == 0 {
        Some((b0, 1))
    } else if b0 & 0x40 == 0 {
        None
    } else if b0 & 0x20 == 0 {
        Some((((b0 & 0x1F) << 6) | cont(1)?, 2))
    } else if b0 & 0x10 == 0 {
        Some((((b0 & 0x0F) << 12) | (cont(1)? << 6) | cont(2)?, 3))
    } else if b0 & 0x08 == 0 {
        Some((
            ((b0 & 0x07) << 18) | (cont(1)? << 12) | (cont(2)? << 6) | cont(3)?,
            4,
        ))
    } else {
        None
    }
}

/// Appends the UTF-8 encoding of `cp` (any value up to 0x10FFFF, surrogates
/// included, as llama.cpp's encoder allows).
pub(crate) fn push_utf8(out: &mut Vec<u8>, cp: u32) {
    if cp <= 0x7F {
        out.push(cp as u8);
    } else if cp <= 0x7FF {
        out.push(0xC0 | (cp >> 6) as u8);
        out.push(0x80 | (cp & 0x3F) as u8);
    } else if cp <= 0xFFFF {
        out.push(0xE0 | (cp >> 12) as u8);
        out.push(0x80 | ((cp >> 6) & 0x3F) as u8);
        out.push(0x80 | (cp & 0x3F) as u8);
    } else {
        out.push(0xF0 | ((cp >> 18) & 0x07) as u8);
        out.push(0x80 | ((cp >> 12) & 0x3F) as u8);
        out.push(0x80 | ((cp >> 6) & 0x3F) as u8);
        out.push(0x80 | (cp & 0x3F) as u8);
    }
}

/// Simple lower-casing of one code point (for the case-insensitive
/// contraction rule of llama3-style pre-tokenisers).
pub(crate) fn to_lower(cp: u32) -> u32 {
    match char::from_u32(cp) {
        Some(c) => {
            let mut it = c.to_lowercase();
            match (it.next(), it.next()) {
                (Some(l), None) => l as u32,
                _ => cp,
            }
        }
        None => cp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories() {
        assert!(Flags::of('a' as u32).is_letter());
        assert!(Flags::of('日' as u32).is_letter());
        assert!(Flags::of('5' as u32).is_number());
        assert!(Flags::of('½' as u32).is_number());
        assert_eq!(Flags::of('!' as u32).cat(), Cat::Punctuation);
        assert_eq!(Flags::of('$' as u32).cat(), Cat::Symbol);
        assert_eq!(Flags::of(0x301).cat(), Cat::Mark);
        assert_eq!(Flags::of(0x200D).cat(), Cat::Other);
        assert!(Flags::of(' ' as u32).is_whitespace());
        assert!(Flags::of(0x3000).is_whitespace());
        assert!(!Flags::of(0x200B).is_whitespace());
        assert!(!Flags::of(0x11_0000).is_whitespace());
    }

    #[test]
    fn lenient_decoding() {
        let (cps, offs) = decode_lenient(b"a\xC3\xA9\xFFb\xE2\x82");
        assert_eq!(cps, vec![0x61, 0xE9, 0xFFFD, 0x62, 0xFFFD, 0xFFFD]);
        assert_eq!(offs, vec![0, 1, 3, 4, 5, 6, 7]);
    }
}
