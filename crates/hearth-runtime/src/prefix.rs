//! Reusing prompt prefixes: the keys and values of prompts recently
//! prefilled, so a new prompt that starts the same way (the same system
//! prompt, the same conversation so far) shares them instead of computing
//! them again.
//!
//! This module owns which prefixes are kept (the most recently used, up to a
//! count and a byte budget) and the match. What is kept is a table of the
//! engine's KV blocks, held by reference: remembering a prompt copies
//! nothing, and a sequence seeded from it holds the same full blocks
//! ([`KvCache::copy_prefix`](hearth_engine::KvCache::copy_prefix)); only the
//! partial last block is copied, when the sequence first writes into it.
//! The blocks come from the model's pool and count against its capacity, so
//! the cache registers with the pool as a [`KvReclaim`] holder: under pool
//! pressure its least recently used prefixes are released before any
//! request is refused.
//!
//! Reuse never changes an answer: a position's keys and values depend only
//! on the tokens up to it and on which arithmetic each position took (which
//! follows the length of the prompt that computed it; see
//! [`KvCache::plan_prompt`]), and the engine computes them bit-identically
//! in any batch. A match is cut to the positions whose arithmetic agrees.
//! Entries are told apart by the sequence's LoRA adapter (its
//! id; none is its own class) and by a key the caller chooses for anything
//! else that shapes the keys and values, so a prefix computed under one
//! adapter never serves another.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use hearth_engine::{KvCache, KvReclaim, PromptPlan};

use crate::error::Result;
use crate::sequence::Sequence;

struct Entry {
    key: u64,
    /// Id of the adapter the keys and values were computed under.
    adapter: Option<u64>,
    tokens: Vec<u32>,
    cache: KvCache,
    /// The source's plan: which positions took which arithmetic.
    plan: PromptPlan,
    last_used: u64,
}

struct State {
    entries: Vec<Entry>,
    max_entries: usize,
    max_bytes: usize,
    /// Shorter shared prefixes are cheaper to recompute than to look after.
    min_tokens: usize,
    clock: u64,
}

impl State {
    /// Bytes of the blocks the entries hold, each block counted once.
    fn bytes(&self) -> usize {
        let mut seen = HashSet::new();
        let mut total = 0;
        for e in &self.entries {
            let bb = e.cache.geometry().block_bytes();
            total += e.cache.block_ids().filter(|&id| seen.insert(id)).count() * bb;
        }
        total
    }

    /// Drop the least recently used entry; returns the bytes its pool got
    /// back (nothing for blocks someone else still holds), or `None` when
    /// there was none.
    fn evict_oldest(&mut self) -> Option<usize> {
        let (i, _) = self
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.last_used)?;
        let pool = self.entries[i].cache.pool().clone();
        let before = pool.in_use();
        self.entries.remove(i);
        Some(before.saturating_sub(pool.in_use()))
    }
}

/// The part of the cache the pool may call back into.
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    /// Drop least recently used entries until about `bytes` bytes of pool
    /// blocks are free again (blocks also held by running sequences free
    /// nothing until those end); returns the bytes the pool got back.
    fn release(state: &mut State, bytes: usize) -> usize {
        let mut freed = 0;
        while freed < bytes {
            match state.evict_oldest() {
                Some(n) => freed += n,
                None => break,
            }
        }
        freed
    }
}

impl KvReclaim for Shared {
    fn reclaim(&self, bytes: usize) -> usize {
        // The caller may be this cache itself, mid-operation: skip then
        // rather than wait for a lock that thread holds.
        match self.state.try_lock() {
            Ok(mut st) => Shared::release(&mut st, bytes),
            Err(_) => 0,
        }
    }
}

pub struct PrefixCache {
    shared: Arc<Shared>,
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
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    entries: Vec::new(),
                    max_entries,
                    max_bytes,
                    min_tokens: min_tokens.max(1),
                    clock: 0,
                }),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Entries are only pushed or removed whole, so a panic elsewhere
        // cannot leave them half-written.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seed a fresh sequence with the longest kept prefix of its prompt;
    /// returns how many prompt tokens it will not have to compute.
    pub fn seed(&mut self, seq: &mut Sequence, key: u64) -> Result<usize> {
        let adapter = adapter_id(seq);
        let prompt = seq.prompt();
        let plan = seq.cache().plan();
        let mut guard = self.state();
        let st = &mut *guard;
        let best = st
            .entries
            .iter_mut()
            .filter(|e| e.key == key && e.adapter == adapter)
            .map(|e| {
                let n = common_prefix(&e.tokens, prompt).min(prompt.len() - 1);
                (e.plan.agrees_for(plan, n), e)
            })
            .max_by_key(|(n, _)| *n);
        let Some((n, entry)) = best else { return Ok(0) };
        if n < st.min_tokens {
            return Ok(0);
        }
        // Taking references to the entry's blocks; the lock is released
        // before the sequence holds them.
        let mut from = KvCache::like(&entry.cache, n);
        from.copy_prefix(&entry.cache, n)?;
        st.clock += 1;
        entry.last_used = st.clock;
        drop(guard);
        seq.reuse_prefix(&from, n)?;
        Ok(n)
    }

    /// Keep the prompt of `seq`, whose prefill has just finished (its cache
    /// holds exactly the prompt), unless a kept entry already covers it.
    /// The entry holds the sequence's blocks by reference.
    pub fn remember(&mut self, seq: &Sequence, key: u64) {
        let tokens = seq.prompt();
        let src = seq.cache();
        let mut st = self.state();
        if tokens.len() < st.min_tokens || src.len() != tokens.len() {
            return;
        }
        st.clock += 1;
        let clock = st.clock;
        let adapter = adapter_id(seq);
        let same = |e: &Entry| e.key == key && e.adapter == adapter;
        if let Some(e) = st
            .entries
            .iter_mut()
            .find(|e| same(e) && common_prefix(&e.tokens, tokens) == tokens.len())
        {
            e.last_used = clock;
            return;
        }
        // A longer prompt replaces the entries it extends.
        st.entries
            .retain(|e| !(same(e) && common_prefix(&e.tokens, tokens) == e.tokens.len()));
        let mut cache = KvCache::like(src, tokens.len());
        if cache.copy_prefix(src, tokens.len()).is_err() {
            return;
        }
        src.pool()
            .register_reclaim(Arc::downgrade(&self.shared) as Weak<dyn KvReclaim>);
        st.entries.push(Entry {
            key,
            adapter,
            tokens: tokens.to_vec(),
            cache,
            plan: src.plan().clone(),
            last_used: clock,
        });
        while st.entries.len() > st.max_entries || st.bytes() > st.max_bytes {
            if st.evict_oldest().is_none() {
                break;
            }
        }
    }

    /// Let go of least recently used prefixes until about `bytes` bytes of
    /// KV pool blocks are free again; returns what the pool got back.
    pub fn release(&mut self, bytes: usize) -> usize {
        Shared::release(&mut self.state(), bytes)
    }

    /// Forget every kept prefix.
    pub fn clear(&mut self) {
        self.state().entries.clear();
    }

    /// Bytes of the blocks the kept prefixes hold, each block once (blocks
    /// running sequences also hold are counted too).
    pub fn bytes(&self) -> usize {
        self.state().bytes()
    }

    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state().entries.is_empty()
    }
}
