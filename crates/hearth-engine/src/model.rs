//! A loaded model: the mapped file, its transformer, the thread pool that
//! runs it and the KV block pool its sequences' caches come from.

use std::path::Path;
use std::sync::Arc;

use hearth_gguf::GgufFile;

use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::kv_pool::{KvPool, DEFAULT_BLOCK_POSITIONS};
use crate::pool::ThreadPool;
use crate::transformer::{BatchItem, Hyper, Transformer};

pub struct Model {
    transformer: Transformer,
    pool: ThreadPool,
    kv: KvPool,
}

impl Model {
    /// Map `path` and build its architecture, running on `threads` threads.
    pub fn load(path: &Path, threads: usize) -> Result<Model> {
        let file = Arc::new(GgufFile::open(path)?);
        Self::from_file(file, threads)
    }

    /// The model of `file`, with an unbounded KV pool of
    /// [`DEFAULT_BLOCK_POSITIONS`]-position blocks (whoever owns the
    /// memory budget sets its capacity: [`KvPool::set_capacity`]).
    pub fn from_file(file: Arc<GgufFile>, threads: usize) -> Result<Model> {
        let transformer = crate::arch::load(file)?;
        let kv = KvPool::new(transformer.kv_geometry(DEFAULT_BLOCK_POSITIONS), usize::MAX)?;
        Ok(Model {
            transformer,
            pool: ThreadPool::new(threads),
            kv,
        })
    }

    /// Replace the KV pool by a new one of `block_positions`-position blocks
    /// and `capacity` bytes. Caches made before keep their old pool.
    pub fn with_kv_pool(mut self, block_positions: usize, capacity: usize) -> Result<Model> {
        self.kv = KvPool::new(self.transformer.kv_geometry(block_positions), capacity)?;
        Ok(self)
    }

    pub fn hyper(&self) -> &Hyper {
        &self.transformer.hp
    }

    pub fn file(&self) -> &Arc<GgufFile> {
        &self.transformer.file
    }

    pub fn threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// The pool every cache of this model takes its blocks from.
    pub fn kv_pool(&self) -> &KvPool {
        &self.kv
    }

    /// A fresh cache for one sequence of up to `n_ctx` tokens. It holds no
    /// memory until positions are written.
    pub fn new_cache(&self, n_ctx: usize) -> KvCache {
        let windowed = self.transformer.layers.iter().any(|l| l.window.is_some());
        self.kv.cache(n_ctx).with_sliding_window(windowed)
    }

    /// One forward pass over a batch; see [`Transformer::forward`].
    pub fn forward(&self, items: &mut [BatchItem]) -> Result<Vec<Vec<f32>>> {
        self.transformer.forward(&self.pool, items)
    }

    /// Hand back a logits vector from [`Self::forward`] once it is read, so
    /// that a later pass on this thread reuses its memory.
    pub fn recycle_logits(&self, v: Vec<f32>) {
        self.transformer.recycle_logits(v)
    }
}
