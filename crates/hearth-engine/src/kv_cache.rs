//! The per-sequence key/value cache: a table of blocks from the model's
//! [`KvPool`], in F16.
//!
//! Each sequence has its own table, so sequences in one batch never reorder
//! each other's memory: that is half of the batch-invariance promise (the
//! other half is the kernels' fixed reduction order). Blocks may be shared
//! between tables (a common prompt prefix): a shared block is only read;
//! before a sequence writes into a block someone else also holds, it takes
//! its own copy (copy on write), so sharing never changes what anyone reads.
//!
//! Blocks for a forward pass are taken up front ([`KvCache::reserve`]), so
//! a pool that cannot supply them fails the pass before anything is written,
//! and the hot path writes into blocks it already owns.

use std::sync::Arc;

use half::f16;

use crate::error::{EngineError, Result};
use crate::kv_pool::{Block, KvGeometry, KvPool};
use crate::prompt_plan::{Forms, PromptPlan};

pub struct KvCache {
    pool: KvPool,
    geom: KvGeometry,
    n_ctx: usize,
    len: usize,
    /// Block `b` holds positions `b·block_positions ..`.
    blocks: Vec<Arc<Block>>,
    /// Which arithmetic each prompt position takes ([`KvCache::plan_prompt`]).
    plan: PromptPlan,
    /// The model has sliding-window layers, which llama-server batches
    /// differently ([`PromptPlan::server`]).
    sliding_window: bool,
}

impl KvCache {
    pub(crate) fn new_in(pool: KvPool, n_ctx: usize) -> KvCache {
        KvCache {
            geom: pool.geometry(),
            pool,
            n_ctx,
            len: 0,
            blocks: Vec::new(),
            plan: PromptPlan::none(),
            sliding_window: false,
        }
    }

    /// Mark the cache as one of a model with sliding-window layers.
    pub(crate) fn with_sliding_window(mut self, yes: bool) -> KvCache {
        self.sliding_window = yes;
        self
    }

    /// An empty cache from `other`'s pool holding up to `n_ctx` positions.
    pub fn like(other: &KvCache, n_ctx: usize) -> KvCache {
        KvCache::new_in(other.pool.clone(), n_ctx).with_sliding_window(other.sliding_window)
    }

    /// Positions already stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn pool(&self) -> &KvPool {
        &self.pool
    }

    pub fn geometry(&self) -> KvGeometry {
        self.geom
    }

    /// Declares that positions `0..prompt_len` hold a request's prompt, so
    /// that they take the arithmetic llama-server gives it
    /// ([`PromptPlan::server`]): the batches it would cut the prompt into
    /// decide each position's forms, whatever passes hearth actually feeds
    /// it in. Positions after the prompt take the one-row forms of
    /// decoding. Without a plan every position takes them.
    pub fn plan_prompt(&mut self, prompt_len: usize) {
        self.plan = PromptPlan::server(prompt_len, self.sliding_window);
    }

    /// As [`Self::plan_prompt`], for a prompt llama.cpp decodes in one call
    /// (`llama-perplexity`, `llama-bench`; [`PromptPlan::one_call`]).
    pub fn plan_one_call(&mut self, prompt_len: usize) {
        self.plan = PromptPlan::one_call(prompt_len);
    }

    /// The plan the positions follow.
    pub fn plan(&self) -> &PromptPlan {
        &self.plan
    }

    /// The forms position `pos` takes.
    pub fn forms_at(&self, pos: usize) -> Forms {
        self.plan.forms_at(pos)
    }

    /// Forget everything from position `n` on; blocks no longer needed go
    /// back to the pool (or stay with whoever else holds them).
    pub fn truncate(&mut self, n: usize) {
        if n < self.len {
            self.len = n;
        }
        self.release_unused();
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Drop blocks beyond the stored positions (taken by a [`Self::reserve`]
    /// whose pass did not run).
    pub(crate) fn release_unused(&mut self) {
        self.blocks.truncate(self.geom.blocks_for(self.len));
    }

    /// Start this empty cache from the first `n` positions of `other`, a
    /// prompt prefix computed once. The blocks are shared, not copied: a
    /// block both hold is copied only when this cache first writes into it
    /// (the partial last block). Keys and values of a position depend only
    /// on the tokens up to it, so a sequence started this way sees exactly
    /// what it would have computed itself.
    pub fn copy_prefix(&mut self, other: &KvCache, n: usize) -> Result<()> {
        if !self.pool.same_pool(&other.pool) && self.geom != other.geom {
            return Err(EngineError::Prefix(
                "the cache it comes from has another shape".into(),
            ));
        }
        if !self.is_empty() || n > other.len || n > self.n_ctx {
            return Err(EngineError::Prefix(format!(
                "cannot take {n} positions of a cache of {} into one of {} holding {}",
                other.len, self.n_ctx, self.len
            )));
        }
        if !self.pool.same_pool(&other.pool) {
            // Another model's pool of the same shape: blocks cannot move
            // between pools' accounts, so copy them into this one.
            let nb = self.geom.blocks_for(n);
            let mut fresh = self.pool.alloc(nb)?;
            for (dst, src) in fresh.iter_mut().zip(&other.blocks) {
                dst.data_mut().copy_from_slice(src.data());
            }
            self.blocks = fresh.into_iter().map(Arc::new).collect();
        } else {
            self.blocks = other.blocks[..self.geom.blocks_for(n)].to_vec();
        }
        self.len = n;
        Ok(())
    }

    /// Bytes of the blocks this cache holds (shared ones included).
    pub fn bytes(&self) -> usize {
        self.blocks.len() * self.geom.block_bytes()
    }

    /// Blocks this cache holds.
    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks this cache shares with another holder.
    pub fn shared_blocks(&self) -> usize {
        self.blocks
            .iter()
            .filter(|b| Arc::strong_count(b) > 1)
            .count()
    }

    /// Whether both caches hold the very same block `b` (for tests and
    /// accounting).
    pub fn same_block(&self, other: &KvCache, b: usize) -> bool {
        match (self.blocks.get(b), other.blocks.get(b)) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => false,
        }
    }

    /// Addresses of the blocks held, to count memory held by several caches once.
    pub fn block_ids(&self) -> impl Iterator<Item = usize> + '_ {
        self.blocks.iter().map(|b| Arc::as_ptr(b) as usize)
    }

    pub(crate) fn check_room(&self, n_new: usize) -> Result<()> {
        let needed = self.len + n_new;
        if needed > self.n_ctx {
            return Err(EngineError::ContextFull {
                needed,
                n_ctx: self.n_ctx,
            });
        }
        Ok(())
    }

    /// Blocks a [`Self::reserve`] of `n_new` positions would take from the pool.
    pub fn blocks_needed(&self, n_new: usize) -> usize {
        let bs = self.geom.block_positions;
        let have = self.blocks.len();
        let new = self.geom.blocks_for(self.len + n_new).saturating_sub(have);
        let cow = usize::from(
            n_new > 0
                && !self.len.is_multiple_of(bs)
                && self
                    .blocks
                    .get(self.len / bs)
                    .is_some_and(|b| Arc::strong_count(b) > 1),
        );
        new + cow
    }

    /// Make room for `n_new` more positions: own the block the next position
    /// goes to (copying it if shared) and take the blocks after it, all or
    /// nothing from the pool.
    pub(crate) fn reserve(&mut self, n_new: usize) -> Result<()> {
        if n_new == 0 {
            return Ok(());
        }
        let bs = self.geom.block_positions;
        let cur = self.len / bs;
        let cow = !self.len.is_multiple_of(bs)
            && self
                .blocks
                .get(cur)
                .is_some_and(|b| Arc::strong_count(b) > 1);
        let new = self
            .geom
            .blocks_for(self.len + n_new)
            .saturating_sub(self.blocks.len());
        let mut fresh = self.pool.alloc(new + usize::from(cow))?;
        if cow {
            let mut own = fresh.pop().expect("allocated one block for the copy");
            own.data_mut().copy_from_slice(self.blocks[cur].data());
            self.blocks[cur] = Arc::new(own);
        }
        self.blocks.extend(fresh.into_iter().map(Arc::new));
        Ok(())
    }

    /// Store the keys and values of position `pos` for one layer; the
    /// position's block was taken by [`Self::reserve`].
    pub(crate) fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let g = self.geom;
        let (b, slot) = (pos / g.block_positions, pos % g.block_positions);
        let block = Arc::get_mut(&mut self.blocks[b])
            .expect("reserve() made the written block this cache's own");
        let data = block.data_mut();
        let (hk, hv) = g.head_dims();
        for (h, (kr, vr)) in g.slot_heads(layer, slot).enumerate() {
            hearth_kernels::f32_to_f16_row(&k[h * hk..(h + 1) * hk], &mut data[kr]);
            hearth_kernels::f32_to_f16_row(&v[h * hv..(h + 1) * hv], &mut data[vr]);
        }
    }

    /// Asks the CPU for the lines that [`Self::write`] of `pos` in `layer`
    /// will store into. A new position's lines were last touched long ago
    /// (if ever), so each store missed in every cache: 6.8 µs a layer for
    /// eight decoding sequences, on one thread while the others waited.
    /// Asked for a pass ahead, they are there when the write comes.
    pub(crate) fn prefetch_slot(&self, layer: usize, pos: usize) {
        let g = self.geom;
        let (b, slot) = (pos / g.block_positions, pos % g.block_positions);
        let Some(block) = self.blocks.get(b) else {
            return;
        };
        let data = block.data();
        for (kr, vr) in g.slot_heads(layer, slot) {
            hearth_kernels::prefetch(&data[kr]);
            hearth_kernels::prefetch(&data[vr]);
        }
    }

    /// Mark `n` more positions as complete in every layer.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// KV head `head`'s keys of layer `layer` in block `b`:
    /// `block_positions` rows of one head's key size, one after another.
    pub(crate) fn key_rows(&self, layer: usize, b: usize, head: usize) -> &[f16] {
        let g = self.geom;
        let base = g.key_offset(layer, head, 0);
        &self.blocks[b].data()[base..base + g.block_positions * g.head_dims().0]
    }

    /// KV head `head`'s values of layer `layer` in block `b`:
    /// `block_positions` rows of one head's value size, one after another.
    pub(crate) fn value_rows(&self, layer: usize, b: usize, head: usize) -> &[f16] {
        let g = self.geom;
        let base = g.value_offset(layer, head, 0);
        &self.blocks[b].data()[base..base + g.block_positions * g.head_dims().1]
    }
}
