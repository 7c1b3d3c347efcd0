//! Byte-level BPE (`tokenizer.ggml.model = gpt2`).
//!
//! This module owns: GPT-2's byte↔unicode mapping, the merge-rank table, and
//! merging one pre-tokenised word into token ids the way llama.cpp does
//! (lowest rank first, ties to the leftmost pair; a final symbol that is not
//! in the vocabulary falls back to single-byte tokens, silently dropping bytes
//! that have none).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::fxhash::FxHashMap;
use crate::unicode::utf8_len;

/// GPT-2's reversible map from bytes to printable code points.
pub(crate) struct ByteMap {
    /// UTF-8 of the code point standing for each byte.
    encode: [([u8; 2], u8); 256],
    /// Inverse: code point → byte, for code points below 0x144.
    decode: [Option<u8>; 0x144],
}

impl ByteMap {
    pub(crate) fn new() -> ByteMap {
        let printable = |b: u32| {
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
        };
        let mut encode = [([0u8; 2], 0u8); 256];
        let mut decode = [None; 0x144];
        let mut extra = 0u32;
        for b in 0u32..256 {
            let cp = if printable(b) {
                b
            } else {
                extra += 1;
                255 + extra
            };
            let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
            let mut buf = [0u8; 4];
            let s = c.encode_utf8(&mut buf);
            let mut two = [0u8; 2];
            two[..s.len()].copy_from_slice(s.as_bytes());
            encode[b as usize] = (two, s.len() as u8);
            decode[cp as usize] = Some(b as u8);
        }
        ByteMap { encode, decode }
    }

    /// Appends the GPT-2 encoding of `bytes`.
    pub(crate) fn encode_into(&self, bytes: &[u8], out: &mut Vec<u8>) {
        for &b in bytes {
            let (buf, len) = &self.encode[b as usize];
            out.extend_from_slice(&buf[..*len as usize]);
        }
    }

    /// The byte a mapped code point stands for.
    pub(crate) fn decode(&self, cp: u32) -> Option<u8> {
        self.decode.get(cp as usize).copied().flatten()
    }
}

/// The two halves of a merge, by text.
type TextPair = (Box<[u8]>, Box<[u8]>);

/// A merge candidate: rank, left and right symbol indices, and both
/// symbols' lengths when it was queued (to recognise stale entries).
type Pair = (u32, usize, usize, usize, usize);

/// Merge ranks, keyed by the token ids of both halves where both are tokens
/// (the usual case, and cheap to look up), else by their texts.
pub(crate) struct Merges {
    by_id: FxHashMap<(u32, u32), u32>,
    by_text: FxHashMap<TextPair, u32>,
}

impl Merges {
    pub(crate) fn new(merges: &[String], lookup: impl Fn(&[u8]) -> Option<u32>) -> Merges {
        let mut by_id = FxHashMap::default();
        let mut by_text = FxHashMap::default();
        for (rank, m) in merges.iter().enumerate() {
            let rank = rank as u32;
            // llama.cpp splits at the first space after the first byte, so a
            // left half may itself start with a space.
            let (left, right) = match m.as_bytes().iter().skip(1).position(|&b| b == b' ') {
                Some(p) => (&m.as_bytes()[..p + 1], &m.as_bytes()[p + 2..]),
                None => (&b""[..], &b""[..]),
            };
            match (lookup(left), lookup(right)) {
                (Some(l), Some(r)) => {
                    by_id.entry((l, r)).or_insert(rank);
                }
                _ => {
                    by_text.entry((left.into(), right.into())).or_insert(rank);
                }
            }
        }
        Merges { by_id, by_text }
    }

    fn rank(&self, left: (Option<u32>, &[u8]), right: (Option<u32>, &[u8])) -> Option<u32> {
        match (left.0, right.0) {
            (Some(l), Some(r)) => self.by_id.get(&(l, r)).copied(),
            _ if self.by_text.is_empty() => None,
            _ => self
                .by_text
                .get(&(Box::<[u8]>::from(left.1), Box::<[u8]>::from(right.1)))
                .copied(),
        }
    }
}

#[derive(Clone, Copy)]
struct Sym {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
    id: Option<u32>,
}

/// Merges one GPT-2-encoded word and appends its token ids to `out`.
pub(crate) fn encode_word(
    word: &[u8],
    merges: &Merges,
    lookup: &impl Fn(&[u8]) -> Option<u32>,
    byte_token: &[Option<u32>; 256],
    out: &mut Vec<u32>,
) {
    let mut syms: Vec<Sym> = Vec::with_capacity(word.len());
    let mut off = 0;
    while off < word.len() {
        let len = utf8_len(word[off]).min(word.len() - off);
        let i = syms.len();
        syms.push(Sym {
            start: off,
            len,
            prev: i.checked_sub(1),
            next: None,
            id: lookup(&word[off..off + len]),
        });
        off += len;
        if off < word.len() {
            syms[i].next = Some(i + 1);
        }
    }

    // (rank, left index) ordered smallest first; the lengths detect stale pairs.
    let mut heap: BinaryHeap<Reverse<Pair>> = BinaryHeap::new();
    let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: usize, r: usize| {
        let (a, b) = (&syms[l], &syms[r]);
        let lt = &word[a.start..a.start + a.len];
        let rt = &word[b.start..b.start + b.len];
        if let Some(rank) = merges.rank((a.id, lt), (b.id, rt)) {
            heap.push(Reverse((rank, l, r, a.len, b.len)));
        }
    };
    for i in 1..syms.len() {
        push(&mut heap, &syms, i - 1, i);
    }
    while let Some(Reverse((_, l, r, llen, rlen))) = heap.pop() {
        if syms[l].len == 0 || syms[r].len == 0 || syms[l].len != llen || syms[r].len != rlen {
            continue;
        }
        let new_len = syms[l].len + syms[r].len;
        syms[l].len = new_len;
        syms[l].id = lookup(&word[syms[l].start..syms[l].start + new_len]);
        syms[r].len = 0;
        syms[l].next = syms[r].next;
        if let Some(n) = syms[r].next {
            syms[n].prev = Some(l);
        }
        if let Some(p) = syms[l].prev {
            push(&mut heap, &syms, p, l);
        }
        if let Some(n) = syms[l].next {
            push(&mut heap, &syms, l, n);
        }
    }

    for s in syms.iter().filter(|s| s.len > 0) {
        match s.id {
            Some(id) => out.push(id),
            None => out.extend(
                word[s.start..s.start + s.len]
                    .iter()
                    .filter_map(|&b| byte_token[b as usize]),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_round_trips() {
        let m = ByteMap::new();
        let mut out = Vec::new();
        m.encode_into(b" a\n", &mut out);
        assert_eq!(std::str::from_utf8(&out).unwrap(), "\u{120}a\u{10A}");
        for b in 0u8..=255 {
            let mut e = Vec::new();
            m.encode_into(&[b], &mut e);
            let cp = std::str::from_utf8(&e).unwrap().chars().next().unwrap() as u32;
            assert_eq!(m.decode(cp), Some(b));
        }
    }
}
