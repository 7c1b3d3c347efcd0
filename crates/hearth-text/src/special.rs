//! Splitting text around special tokens before the tokeniser proper runs.
//!
//! This module owns: finding control, user-defined and unknown-type tokens in
//! raw text, in llama.cpp's order. llama.cpp takes the special tokens longest
//! first and, for each, splits every remaining text fragment at all of its
//! (non-overlapping, leftmost) occurrences; so a longer token wins even where
//! a shorter one starts earlier. A byte trie over all special texts first
//! finds which of them occur in the text at all, so only those few are
//! searched for (the Gemma vocabulary has over 6 000 special tokens).

use std::ops::Range;

/// A piece of the input after special-token splitting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

#[derive(Default)]
struct Node {
    /// Sorted by byte, so lookups can binary-search.
    children: Vec<(u8, u32)>,
    token: Option<u32>,
}

/// The special tokens of a vocabulary in matching order, with a trie of
/// their texts.
pub(crate) struct SpecialMatcher {
    /// Ids in llama.cpp's order: longest text first (ties by lower id).
    ordered: Vec<u32>,
    /// Position of each id in `ordered`, to sort the found set cheaply.
    rank: std::collections::HashMap<u32, usize>,
    nodes: Vec<Node>,
}

impl SpecialMatcher {
    /// `specials` are (id, text) pairs.
    pub(crate) fn new(specials: Vec<(u32, &[u8])>) -> SpecialMatcher {
        let mut sorted = specials;
        sorted.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        let mut nodes = vec![Node::default()];
        for &(id, text) in &sorted {
            if text.is_empty() {
                continue;
            }
            let mut cur = 0usize;
            for &b in text {
                cur = match nodes[cur].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => nodes[cur].children[i].1 as usize,
                    Err(i) => {
                        let new = nodes.len();
                        nodes.push(Node::default());
                        nodes[cur].children.insert(i, (b, new as u32));
                        new
                    }
                };
            }
            nodes[cur].token.get_or_insert(id);
        }
        let ordered: Vec<u32> = sorted.iter().map(|s| s.0).collect();
        let rank = ordered.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        SpecialMatcher {
            ordered,
            rank,
            nodes,
        }
    }

    /// Ids of the special tokens that occur anywhere in `text`, in matching order.
    fn occurring(&self, text: &[u8], allowed: impl Fn(u32) -> bool) -> Vec<u32> {
        let mut found: Vec<u32> = Vec::new();
        for start in 0..text.len() {
            let mut cur = 0usize;
            for &b in &text[start..] {
                match self.nodes[cur].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => cur = self.nodes[cur].children[i].1 as usize,
                    Err(_) => break,
                }
                if let Some(id) = self.nodes[cur].token {
                    if allowed(id) && !found.contains(&id) {
                        found.push(id);
                    }
                }
            }
        }
        found.sort_by_key(|id| self.rank.get(id).copied().unwrap_or(usize::MAX));
        found
    }

    /// Splits `text` into fragments. `allowed` says which special ids take
    /// part (llama.cpp skips control and unknown tokens unless special-token
    /// parsing was requested); `text_of` gives a token's text.
    pub(crate) fn partition<'t>(
        &self,
        text: &[u8],
        allowed: impl Fn(u32) -> bool,
        text_of: impl Fn(u32) -> &'t [u8],
    ) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut frags = vec![Fragment::Text(0..text.len())];
        if self.ordered.is_empty() {
            return frags;
        }
        for id in self.occurring(text, allowed) {
            let needle = text_of(id);
            let mut next = Vec::with_capacity(frags.len() + 2);
            for frag in frags {
                match frag {
                    Fragment::Token(_) => next.push(frag),
                    Fragment::Text(range) => {
                        let mut pos = range.start;
                        while let Some(m) = find(&text[pos..range.end], needle) {
                            let at = pos + m;
                            if at > pos {
                                next.push(Fragment::Text(pos..at));
                            }
                            next.push(Fragment::Token(id));
                            pos = at + needle.len();
                        }
                        if pos < range.end {
                            next.push(Fragment::Text(pos..range.end));
                        }
                    }
                }
            }
            frags = next;
        }
        frags
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    if hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).find(|&i| hay[i] == first && hay[i..].starts_with(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_first_even_when_later() {
        let texts: Vec<(u32, &[u8])> = vec![(0, b"ab"), (1, b"bcd")];
        let m = SpecialMatcher::new(texts.clone());
        let text_of = |id: u32| texts[id as usize].1;
        let frags = m.partition(b"abcdab", |_| true, text_of);
        assert_eq!(
            frags,
            vec![Fragment::Text(0..1), Fragment::Token(1), Fragment::Token(0),]
        );
        let none = m.partition(b"abcdab", |_| false, text_of);
        assert_eq!(none, vec![Fragment::Text(0..6)]);
    }
}
