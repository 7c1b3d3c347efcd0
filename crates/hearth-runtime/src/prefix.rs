//! Reusing prompt prefixes: the keys and values of prompts recently
//! prefilled, so a new prompt that starts the same way (the same system
//! prompt, the same conversation so far) copies them instead of computing
//! them again.
//!
//! This module owns which prefixes are kept (the most recently used, up to a
//! count and a byte budget) and the match; the copy is the engine's
//! [`KvCache::copy_prefix`](hearth_engine::KvCache::copy_prefix). Reuse never
//! changes an answer: a position's keys and values depend only on the tokens
//! up to it, and the engine computes them bit-identically in any batch.
//! Entries are told apart by the sequence's LoRA adapter (its id; none is
//! its own class) and by a key the caller chooses for anything else that
//! shapes the keys and values, so a prefix computed under one adapter never
//! serves another.

use hearth_engine::KvCache;

use crate::error::Result;
use crate::sequence::Sequence;

struct Entry {
    key: u64,
    /// Id of the adapter the keys and values were computed under.
    adapter: Option<u64>,
    tokens: Vec<u32>,
    cache: KvCache,
    last_used: u64,
}

pub struct PrefixCache {
    entries: Vec<Entry>,
    max_entries: usize,
    max_bytes: usize,
    /// Shorter shared prefixes are cheaper to recompute than to look after.
    min_tokens: usize,
    clock: u64,
}

fn adapter_id(seq: &Sequence) -> Option<u64> {
    seq.adapter().map(|a| a.id())
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    pub fn new(max_entries: usize, max_bytes: usize, min_tokens: usize) -> PrefixCache {
        PrefixCache {
            entries: Vec::new(),
            max_entries,
            max_bytes,
            min_tokens: min_tokens.max(1),
            clock: 0,
        }
    }

    /// Seed a fresh sequence with the longest kept prefix of its prompt;
    /// returns how many prompt tokens it will not have to compute.
    pub fn seed(&mut self, seq: &mut Sequence, key: u64) -> Result<usize> {
        let adapter = adapter_id(seq);
        let prompt = seq.prompt();
        let best = self
            .entries
            .iter_mut()
            .filter(|e| e.key == key && e.adapter == adapter)
            .map(|e| {
                let n = common_prefix(&e.tokens, prompt).min(prompt.len() - 1);
                (n, e)
            })
            .max_by_key(|(n, _)| *n);
        let Some((n, entry)) = best else { return Ok(0) };
        if n < self.min_tokens {
            return Ok(0);
        }
        self.clock += 1;
        entry.last_used = self.clock;
        seq.reuse_prefix(&entry.cache, n)?;
        Ok(n)
    }

    /// Keep the prompt of `seq`, whose prefill has just finished (its cache
    /// holds exactly the prompt), unless a kept entry already covers it.
    pub fn remember(&mut self, seq: &Sequence, key: u64) {
        let tokens = seq.prompt();
        if tokens.len() < self.min_tokens || seq.cache().len() != tokens.len() {
            return;
        }
        self.clock += 1;
        let adapter = adapter_id(seq);
        let same = |e: &Entry| e.key == key && e.adapter == adapter;
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| same(e) && common_prefix(&e.tokens, tokens) == tokens.len())
        {
            e.last_used = self.clock;
            return;
        }
        // A longer prompt replaces the entries it extends.
        self.entries
            .retain(|e| !(same(e) && common_prefix(&e.tokens, tokens) == e.tokens.len()));
        let src = seq.cache();
        let mut cache = KvCache::like(src, tokens.len());
        if cache.copy_prefix(src, tokens.len()).is_err() {
            return;
        }
        self.entries.push(Entry {
            key,
            adapter,
            tokens: tokens.to_vec(),
            cache,
            last_used: self.clock,
        });
        while self.entries.len() > self.max_entries || self.bytes() > self.max_bytes {
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            self.entries.remove(oldest);
        }
    }

    /// Bytes of the kept keys and values.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.cache.bytes()).sum()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
