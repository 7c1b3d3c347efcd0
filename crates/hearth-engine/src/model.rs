//! A loaded model: the mapped file, its transformer and the pool that runs it.

use std::path::Path;
use std::sync::Arc;

use hearth_gguf::GgufFile;

use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::pool::ThreadPool;
use crate::transformer::{BatchItem, Hyper, Transformer};

pub struct Model {
    transformer: Transformer,
    pool: ThreadPool,
}

impl Model {
    /// Map `path` and build its architecture, running on `threads` threads.
    pub fn load(path: &Path, threads: usize) -> Result<Model> {
        let file = Arc::new(GgufFile::open(path)?);
        Self::from_file(file, threads)
    }

    pub fn from_file(file: Arc<GgufFile>, threads: usize) -> Result<Model> {
        let transformer = crate::arch::load(file)?;
        Ok(Model {
            transformer,
            pool: ThreadPool::new(threads),
        })
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

    /// A fresh cache for one sequence of up to `n_ctx` tokens.
    pub fn new_cache(&self, n_ctx: usize) -> KvCache {
        self.transformer.new_cache(n_ctx)
    }

    /// One forward pass over a batch; see [`Transformer::forward`].
    pub fn forward(&self, items: &mut [BatchItem]) -> Result<Vec<Vec<f32>>> {
        self.transformer.forward(&self.pool, items)
    }
}
