//! Streaming detokenisation.
//!
//! This module owns: turning a stream of token pieces into text without ever
//! splitting a character. Pieces are raw bytes (a byte-fallback or
//! byte-level token may carry half a character), so bytes that could still
//! become a valid character are held back until the next piece arrives.
//! Bytes that can no longer be valid become U+FFFD as soon as that is
//! certain; whatever is still held at the end becomes U+FFFD on `finish`.

use crate::tokenizer::Tokenizer;

/// Accumulates token pieces and hands out complete UTF-8 text.
#[derive(Clone, Debug, Default)]
pub struct Detokenizer {
    pending: Vec<u8>,
    render_special: bool,
}

impl Detokenizer {
    /// `render_special`: whether control tokens (e.g. `<|im_end|>`) appear as
    /// their text or as nothing.
    pub fn new(render_special: bool) -> Detokenizer {
        Detokenizer {
            pending: Vec::new(),
            render_special,
        }
    }

    /// Adds one token; returns the text that became complete (maybe empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        let piece = tok.piece(id, self.render_special);
        self.push_bytes(piece)
    }

    /// Adds raw bytes; returns the text that became complete (maybe empty).
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // `valid_up_to` guarantees `good` is UTF-8, so the fallback never applies.
                    out.push_str(std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &bad[n..];
                        }
                        None => {
                            rest = bad;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let start = self.pending.len() - keep;
        self.pending.drain(..start);
        out
    }

    /// Bytes held back waiting for the rest of a character.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Ends the stream: held-back bytes become U+FFFD (one per malformed
    /// sequence, as `String::from_utf8_lossy` counts them).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_partial_characters() {
        let mut d = Detokenizer::new(true);
        let bytes = "a🦀b".as_bytes();
        let mut out = String::new();
        for b in bytes {
            let s = d.push_bytes(std::slice::from_ref(b));
            out.push_str(&s);
        }
        out.push_str(&d.finish());
        assert_eq!(out, "a🦀b");
    }

    #[test]
    fn invalid_bytes_become_replacement_when_certain() {
        let mut d = Detokenizer::new(true);
        assert_eq!(d.push_bytes(b"x\xF0\x9F"), "x");
        assert_eq!(d.pending(), b"\xF0\x9F");
        // 'y' proves the sequence is broken.
        assert_eq!(d.push_bytes(b"y"), "\u{FFFD}y");
        assert_eq!(d.push_bytes(b"\xFF"), "\u{FFFD}");
        assert_eq!(d.push_bytes(b"\xE6\x97"), "");
        assert_eq!(d.finish(), "\u{FFFD}");
        assert_eq!(d.finish(), "");
    }
}
