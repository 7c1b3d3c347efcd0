//! SentencePiece-style tokenisation (`tokenizer.ggml.model = llama`), as
//! llama.cpp's SPM tokeniser does it.
//!
//! This module owns: splitting an (already space-escaped) fragment into
//! characters, repeatedly merging the adjacent pair whose concatenation is the
//! highest-scoring vocabulary entry (ties to the leftmost pair), and falling
//! back to `<0xXX>` byte tokens for characters the vocabulary lacks.
//!
//! Characters are cut by the lead byte's announced length, not validated, so
//! malformed UTF-8 still tokenises (into byte tokens) instead of failing.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::unicode::utf8_len;

#[derive(Clone, Copy)]
struct Sym {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Tokenises `text` (spaces already replaced by U+2581) and appends ids to `out`.
pub(crate) fn encode(
    text: &[u8],
    lookup: &impl Fn(&[u8]) -> Option<u32>,
    score: &impl Fn(u32) -> f32,
    byte_token: &impl Fn(u8) -> Option<u32>,
    out: &mut Vec<u32>,
) {
    let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
    let mut off = 0;
    while off < text.len() {
        let len = utf8_len(text[off]).min(text.len() - off);
        let i = syms.len();
        syms.push(Sym {
            start: off,
            len,
            prev: i.checked_sub(1),
            next: None,
        });
        off += len;
        if off < text.len() {
            syms[i].next = Some(i + 1);
        }
    }
    if syms.is_empty() {
        return;
    }

    let mut heap = BinaryHeap::new();
    let try_add = |heap: &mut BinaryHeap<Bigram>, syms: &[Sym], l: usize, r: usize| {
        let size = syms[l].len + syms[r].len;
        let piece = &text[syms[l].start..syms[l].start + size];
        if let Some(id) = lookup(piece) {
            heap.push(Bigram {
                score: score(id),
                left: l,
                right: r,
                size,
            });
        }
    };
    for i in 1..syms.len() {
        try_add(&mut heap, &syms, i - 1, i);
    }
    while let Some(b) = heap.pop() {
        let (l, r) = (b.left, b.right);
        if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != b.size {
            continue;
        }
        syms[l].len += syms[r].len;
        syms[r].len = 0;
        syms[l].next = syms[r].next;
        if let Some(n) = syms[r].next {
            syms[n].prev = Some(l);
        }
        if let Some(p) = syms[l].prev {
            try_add(&mut heap, &syms, p, l);
        }
        if let Some(n) = syms[l].next {
            try_add(&mut heap, &syms, l, n);
        }
    }

    let mut i = Some(0);
    while let Some(idx) = i {
        let s = syms[idx];
        let piece = &text[s.start..s.start + s.len];
        match lookup(piece) {
            Some(id) => out.push(id),
            None => out.extend(piece.iter().filter_map(|&b| byte_token(b))),
        }
        i = s.next;
    }
}
