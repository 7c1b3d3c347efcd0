//! hearth's inference engine: architectures (one file each under `arch/`), the
//! paged KV cache (a block pool per model, a block table per sequence), the
//! plan of which arithmetic each prompt position takes (`prompt_plan`, so
//! that answers equal llama.cpp's however a prompt is fed), the batched
//! forward pass and the thread pool.
//!
//! It reads models only through `hearth-gguf` or `hearth-safetensors` and
//! does its arithmetic only through `hearth-kernels`; it knows nothing of
//! HTTP, apps, tokenisers or files other than the GGUF or safetensors it is
//! given. LoRA adapters (`lora`) are applied unmerged in the batched forward
//! pass, so one pass serves sequences with different adapters.

pub mod arch;
pub mod bert;
mod error;
pub mod kv_cache;
pub mod kv_pool;
pub mod lora;
mod model;
pub mod pool;
pub mod prompt_plan;
pub mod transformer;
pub mod weights;

pub use bert::{BertConfig, BertError, BertModel};
pub use error::{EngineError, Result};
pub use kv_cache::KvCache;
pub use kv_pool::{KvGeometry, KvPool, KvPoolStats, KvReclaim, DEFAULT_BLOCK_POSITIONS};
pub use lora::{Adapter, AdapterFormat, LoraError, Role};
pub use model::Model;
pub use pool::{physical_cores, ThreadPool};
pub use prompt_plan::{Forms, PromptPlan, PROMPT_UBATCH};
pub use transformer::{BatchItem, Hyper, Want};
