//! The KV block pool: one per model, the only place KV memory comes from.
//!
//! KV memory is handed out in fixed-size blocks, each holding the keys and
//! values of `block_positions` consecutive positions for every layer, in
//! F16. A sequence's [`KvCache`] is a table of blocks; blocks are
//! reference-counted, so sequences with a common prompt prefix (and the
//! runtime's prefix cache) hold the same full blocks instead of copies.
//!
//! The pool owns the byte accounting the memory governor needs: a capacity
//! (set at creation, changeable at any time), the bytes in use (blocks some
//! cache holds), the bytes reserved (in use plus freed blocks kept for
//! reuse, so steady-state decoding never goes to the allocator) and what is
//! free. Asking for more than the capacity allows is an error naming the
//! numbers ([`EngineError::KvPoolFull`]), never a silent truncation; before
//! refusing, the pool asks its registered [`KvReclaim`] holders (the prefix
//! cache) to let go of blocks they keep only as an optimisation.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use half::f16;

use crate::error::{EngineError, Result};
use crate::kv_cache::KvCache;

/// Positions per block when the model does not choose: small enough that a
/// shared prompt wastes little in its partial last block, large enough that
/// attention makes few kernel calls per key run.
pub const DEFAULT_BLOCK_POSITIONS: usize = 32;

/// The shape of the keys and values one position stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvGeometry {
    pub n_layer: usize,
    /// KV heads; `k_dim` and `v_dim` are whole multiples of it.
    pub n_head_kv: usize,
    /// Elements of one position's keys in one layer (KV heads × key head size).
    pub k_dim: usize,
    /// Elements of one position's values in one layer.
    pub v_dim: usize,
    /// Positions per block.
    pub block_positions: usize,
}

impl KvGeometry {
    /// F16 elements of one block.
    pub fn block_elems(&self) -> usize {
        self.n_layer * self.block_positions * (self.k_dim + self.v_dim)
    }

    pub fn block_bytes(&self) -> usize {
        self.block_elems() * std::mem::size_of::<f16>()
    }

    /// Blocks needed to hold `positions` positions.
    pub fn blocks_for(&self, positions: usize) -> usize {
        positions.div_ceil(self.block_positions)
    }

    /// Bytes of the blocks a sequence of `positions` positions holds.
    pub fn bytes_for(&self, positions: usize) -> usize {
        self.blocks_for(positions) * self.block_bytes()
    }

    /// Where layer `layer`'s keys start inside a block; its values follow
    /// them. Each layer's keys (and values) are stored head by head: KV
    /// head `h`'s `block_positions` rows of one head's size lie together
    /// ([`Self::key_offset`], [`Self::value_offset`]). One attention task
    /// reads one KV head, so its rows are one contiguous run per block,
    /// which the hardware prefetcher streams; rows of whole positions
    /// (every head side by side) left it 128 of every 384 bytes, in short
    /// runs it did not follow, and attention waited on memory.
    pub(crate) fn layer_offset(&self, layer: usize) -> usize {
        layer * self.block_positions * (self.k_dim + self.v_dim)
    }

    /// Elements of one KV head's key (value) at one position.
    pub fn head_dims(&self) -> (usize, usize) {
        let h = self.n_head_kv.max(1);
        (self.k_dim / h, self.v_dim / h)
    }

    /// Offset of KV head `head`'s key at `slot` inside layer `layer` of a block.
    pub(crate) fn key_offset(&self, layer: usize, head: usize, slot: usize) -> usize {
        let (hk, _) = self.head_dims();
        self.layer_offset(layer) + (head * self.block_positions + slot) * hk
    }

    /// Per KV head, where one position's key and value lie in a block:
    /// the element ranges of head `h`'s key and value at `slot` of layer
    /// `layer`, in head order (what a write stores, or a prefetch asks for).
    pub(crate) fn slot_heads(
        &self,
        layer: usize,
        slot: usize,
    ) -> impl Iterator<Item = (std::ops::Range<usize>, std::ops::Range<usize>)> + '_ {
        let (hk, hv) = self.head_dims();
        (0..self.n_head_kv).map(move |h| {
            let (kb, vb) = (
                self.key_offset(layer, h, slot),
                self.value_offset(layer, h, slot),
            );
            (kb..kb + hk, vb..vb + hv)
        })
    }

    /// Offset of KV head `head`'s value at `slot` inside layer `layer` of a block.
    pub(crate) fn value_offset(&self, layer: usize, head: usize, slot: usize) -> usize {
        let (_, hv) = self.head_dims();
        self.layer_offset(layer)
            + self.block_positions * self.k_dim
            + (head * self.block_positions + slot) * hv
    }
}

/// A snapshot of the pool's accounting, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvPoolStats {
    /// What the pool may hand out (`usize::MAX` when unbounded).
    pub capacity: usize,
    /// Bytes of blocks some cache holds.
    pub in_use: usize,
    /// Bytes allocated from the system: in use plus freed blocks kept for reuse.
    pub reserved: usize,
    /// Bytes that may still be handed out: capacity minus in use.
    pub free: usize,
    pub block_bytes: usize,
    pub block_positions: usize,
}

/// A holder of blocks it could give up (a cache of prompt prefixes). When an
/// allocation would fail, the pool asks each holder to release about `bytes`
/// bytes of blocks and returns how many it dropped; the pool then retries.
///
/// The pool calls this without holding its own lock. A holder whose state is
/// busy (locked by the very caller that is allocating) should skip rather
/// than wait, or it would deadlock.
pub trait KvReclaim: Send + Sync {
    fn reclaim(&self, bytes: usize) -> usize;
}

struct State {
    capacity: usize,
    /// Blocks handed out and not yet returned.
    in_use: usize,
    /// Returned blocks, kept for the next allocation.
    free: Vec<Box<[f16]>>,
    reclaimers: Vec<Weak<dyn KvReclaim>>,
}

impl State {
    fn reserved(&self) -> usize {
        self.in_use + self.free.len()
    }
}

pub(crate) struct Shared {
    geom: KvGeometry,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the counters half-updated (each
        // update is one statement), so a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn capacity_blocks(&self, capacity: usize) -> usize {
        capacity / self.geom.block_bytes().max(1)
    }
}

/// One block of the pool. Dropping the last reference returns its memory
/// to the pool's free list.
pub(crate) struct Block {
    data: Box<[f16]>,
    pool: Arc<Shared>,
}

impl Block {
    pub(crate) fn data(&self) -> &[f16] {
        &self.data
    }

    pub(crate) fn data_mut(&mut self) -> &mut [f16] {
        &mut self.data
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        let mut st = self.pool.lock();
        st.in_use -= 1;
        // Keep the memory for reuse only while it fits the capacity (which
        // may have shrunk since the block was handed out).
        if st.reserved() < self.pool.capacity_blocks(st.capacity) {
            st.free.push(data);
        }
    }
}

/// A handle on a model's block pool; clones share the pool.
#[derive(Clone)]
pub struct KvPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KvPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvPool")
            .field("geometry", &self.shared.geom)
            .field("stats", &self.stats())
            .finish()
    }
}

impl KvPool {
    /// A pool of blocks of shape `geom` that hands out at most
    /// `capacity` bytes (`usize::MAX`: no limit).
    pub fn new(geom: KvGeometry, capacity: usize) -> Result<KvPool> {
        let why = if geom.block_positions == 0 || geom.n_layer == 0 || geom.k_dim + geom.v_dim == 0
        {
            Some("holds nothing")
        } else if geom.n_head_kv == 0
            || !geom.k_dim.is_multiple_of(geom.n_head_kv)
            || !geom.v_dim.is_multiple_of(geom.n_head_kv)
        {
            Some("cannot be split into whole KV heads")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(EngineError::Hyperparameter {
                key: "kv block".into(),
                why: format!("a KV block of shape {geom:?} {why}"),
            });
        }
        Ok(KvPool {
            shared: Arc::new(Shared {
                geom,
                state: Mutex::new(State {
                    capacity,
                    in_use: 0,
                    free: Vec::new(),
                    reclaimers: Vec::new(),
                }),
            }),
        })
    }

    pub fn geometry(&self) -> KvGeometry {
        self.shared.geom
    }

    pub fn block_bytes(&self) -> usize {
        self.shared.geom.block_bytes()
    }

    pub fn block_positions(&self) -> usize {
        self.shared.geom.block_positions
    }

    /// Bytes a sequence of `positions` positions holds (whole blocks).
    pub fn bytes_for(&self, positions: usize) -> usize {
        self.shared.geom.bytes_for(positions)
    }

    pub fn stats(&self) -> KvPoolStats {
        let st = self.shared.lock();
        let bb = self.block_bytes();
        let in_use = st.in_use * bb;
        KvPoolStats {
            capacity: st.capacity,
            in_use,
            reserved: st.reserved() * bb,
            free: st.capacity.saturating_sub(in_use),
            block_bytes: bb,
            block_positions: self.block_positions(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.shared.lock().capacity
    }

    pub fn in_use(&self) -> usize {
        self.shared.lock().in_use * self.block_bytes()
    }

    pub fn reserved(&self) -> usize {
        self.shared.lock().reserved() * self.block_bytes()
    }

    /// Capacity minus the bytes in use.
    pub fn free(&self) -> usize {
        let st = self.shared.lock();
        st.capacity.saturating_sub(st.in_use * self.block_bytes())
    }

    /// Change what the pool may hand out. Kept free blocks beyond the new
    /// capacity go back to the system at once. Blocks in use are never
    /// taken away: if they already exceed the capacity, allocations fail
    /// until enough are dropped. Returns the bytes in use afterwards.
    pub fn set_capacity(&self, bytes: usize) -> usize {
        let mut st = self.shared.lock();
        st.capacity = bytes;
        let cap = self.shared.capacity_blocks(bytes);
        let keep = cap.saturating_sub(st.in_use);
        st.free.truncate(keep);
        st.free.shrink_to_fit();
        st.in_use * self.block_bytes()
    }

    /// Give the kept free blocks back to the system; returns the bytes released.
    pub fn trim(&self) -> usize {
        let mut st = self.shared.lock();
        let n = st.free.len();
        st.free = Vec::new();
        n * self.block_bytes()
    }

    /// Ask `holder` for blocks when the pool runs short. The pool keeps only
    /// a weak reference: dropping the holder unregisters it.
    pub fn register_reclaim(&self, holder: Weak<dyn KvReclaim>) {
        let mut st = self.shared.lock();
        st.reclaimers.retain(|w| w.strong_count() > 0);
        if !st.reclaimers.iter().any(|w| w.ptr_eq(&holder)) {
            st.reclaimers.push(holder);
        }
    }

    /// Whether two handles are the same pool.
    pub fn same_pool(&self, other: &KvPool) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// An empty cache for one sequence of up to `n_ctx` positions.
    pub fn cache(&self, n_ctx: usize) -> KvCache {
        KvCache::new_in(self.clone(), n_ctx)
    }

    /// `n` fresh blocks, all or none. When the capacity does not allow them,
    /// the registered holders are asked to release blocks first.
    pub(crate) fn alloc(&self, n: usize) -> Result<Vec<Block>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        match self.try_alloc(n) {
            Ok(blocks) => return Ok(blocks),
            Err(short) => {
                let holders: Vec<Arc<dyn KvReclaim>> = self
                    .shared
                    .lock()
                    .reclaimers
                    .iter()
                    .filter_map(Weak::upgrade)
                    .collect();
                let mut want = short;
                for h in holders {
                    if want == 0 {
                        break;
                    }
                    want = want.saturating_sub(h.reclaim(want));
                }
            }
        }
        self.try_alloc(n).map_err(|_| {
            let st = self.shared.lock();
            let bb = self.block_bytes();
            EngineError::KvPoolFull {
                needed: n * bb,
                free: st.capacity.saturating_sub(st.in_use * bb),
                capacity: st.capacity,
            }
        })
    }

    /// `Err(bytes short)` when `n` blocks do not fit.
    fn try_alloc(&self, n: usize) -> std::result::Result<Vec<Block>, usize> {
        let geom = self.shared.geom;
        let mut st = self.shared.lock();
        let cap = self.shared.capacity_blocks(st.capacity);
        if st.in_use + n > cap {
            return Err((st.in_use + n - cap) * geom.block_bytes());
        }
        st.in_use += n;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let data = st
                .free
                .pop()
                .unwrap_or_else(|| vec![f16::ZERO; geom.block_elems()].into_boxed_slice());
            out.push(Block {
                data,
                pool: self.shared.clone(),
            });
        }
        Ok(out)
    }
}
