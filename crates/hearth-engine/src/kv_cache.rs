//! The per-sequence key/value cache, in F16.
//!
//! Each sequence owns its cache, so sequences in one batch never share or
//! reorder each other's memory: that is half of the batch-invariance promise
//! (the other half is the kernels' fixed reduction order). The cache grows
//! as positions are written, up to the context length fixed at creation.

use half::f16;

use crate::error::{EngineError, Result};

pub struct KvCache {
    n_ctx: usize,
    k_dim: usize,
    v_dim: usize,
    len: usize,
    /// One growing buffer per layer, `[pos][k_dim]`.
    k: Vec<Vec<f16>>,
    v: Vec<Vec<f16>>,
}

impl KvCache {
    pub fn new(n_layer: usize, k_dim: usize, v_dim: usize, n_ctx: usize) -> KvCache {
        KvCache {
            n_ctx,
            k_dim,
            v_dim,
            len: 0,
            k: vec![Vec::new(); n_layer],
            v: vec![Vec::new(); n_layer],
        }
    }

    /// An empty cache of `other`'s shape holding up to `n_ctx` positions.
    pub fn like(other: &KvCache, n_ctx: usize) -> KvCache {
        KvCache::new(other.k.len(), other.k_dim, other.v_dim, n_ctx)
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

    /// Forget everything from position `n` on.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len {
            self.len = n;
            for buf in &mut self.k {
                buf.truncate(n * self.k_dim);
            }
            for buf in &mut self.v {
                buf.truncate(n * self.v_dim);
            }
        }
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Fill this empty cache with the first `n` positions of `other`: a
    /// prompt prefix computed once and shared. The copy is exact, and keys
    /// and values of a position depend only on the tokens up to it, so a
    /// sequence started this way sees what it would have computed itself.
    pub fn copy_prefix(&mut self, other: &KvCache, n: usize) -> Result<()> {
        let shape = (self.k.len(), self.k_dim, self.v_dim);
        if shape != (other.k.len(), other.k_dim, other.v_dim) {
            return Err(EngineError::Prefix(
                "the cache it comes from has another shape".into(),
            ));
        }
        if !self.is_empty() || n > other.len || n > self.n_ctx {
            return Err(EngineError::Prefix(format!(
                "cannot copy {n} positions of a cache of {} into one of {} holding {}",
                other.len, self.n_ctx, self.len
            )));
        }
        for (dst, src) in self.k.iter_mut().zip(&other.k) {
            dst.extend_from_slice(&src[..n * self.k_dim]);
        }
        for (dst, src) in self.v.iter_mut().zip(&other.v) {
            dst.extend_from_slice(&src[..n * self.v_dim]);
        }
        self.len = n;
        Ok(())
    }

    /// Bytes held by the cache now.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|b| b.capacity() * 2).sum()
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

    /// Store the keys and values of position `pos` (which must be the next
    /// unwritten one in this layer) for one layer.
    pub(crate) fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        debug_assert_eq!(self.k[layer].len(), pos * self.k_dim);
        let kb = &mut self.k[layer];
        kb.resize((pos + 1) * self.k_dim, f16::ZERO);
        hearth_kernels::f32_to_f16_row(k, &mut kb[pos * self.k_dim..]);
        let vb = &mut self.v[layer];
        vb.resize((pos + 1) * self.v_dim, f16::ZERO);
        hearth_kernels::f32_to_f16_row(v, &mut vb[pos * self.v_dim..]);
    }

    /// Mark `n` more positions as complete in every layer.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    pub(crate) fn keys(&self, layer: usize) -> &[f16] {
        &self.k[layer]
    }

    pub(crate) fn values(&self, layer: usize) -> &[f16] {
        &self.v[layer]
    }
}
