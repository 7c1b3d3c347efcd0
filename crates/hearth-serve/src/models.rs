//! The models the daemon holds in memory, loaded on first use.
//!
//! This module owns the table of loaded models, the one-at-a-time loading
//! (two requests for an unloaded model load it once) and what `/api/ps`
//! reports of each. A chat model comes with its scheduler thread; unloading
//! drops the handle, which ends the thread when its last request is done.
//! Budgeted eviction is the memory governor's (a later issue); for now a
//! model stays until it is deleted or the daemon stops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use hearth_gguf::GgufFile;
use hearth_runtime::{Adapter, Embedder, Runtime};
use hearth_store::{Error as StoreError, Expert, Store};
use serde::Serialize;

use crate::api::error::ApiError;
use crate::config::ServeConfig;
use crate::metrics::{Metric, Metrics};
use crate::scheduler::{SchedConfig, Scheduler};

/// What Ollama's `details` say of a model.
#[derive(Clone, Debug, Serialize)]
pub struct Details {
    pub parent_model: String,
    pub format: String,
    pub family: String,
    pub families: Vec<String>,
    pub parameter_size: String,
    pub quantization_level: String,
}

pub struct ChatModel {
    pub name: String,
    pub rt: Arc<Runtime>,
    pub sched: Scheduler,
    pub path: PathBuf,
    pub size: u64,
    pub details: Details,
    pub loaded_at: SystemTime,
}

/// A sentence-embedding model. Its engine runs one call at a time (the
/// mutex), on a blocking thread.
pub struct EmbedModel {
    pub name: String,
    pub emb: Mutex<Embedder>,
    pub dir: PathBuf,
    pub size: u64,
    pub loaded_at: SystemTime,
}

/// An expert's adapter in memory, for the base it was checked against.
pub struct LoadedAdapter {
    pub expert: String,
    pub base: String,
    /// The expert's creation time: a re-created expert loads anew.
    pub created: String,
    pub adapter: Arc<Adapter>,
    pub loaded_at: SystemTime,
}

pub struct Models {
    chat: Mutex<BTreeMap<String, Arc<ChatModel>>>,
    adapters: Mutex<BTreeMap<String, Arc<LoadedAdapter>>>,
    embed: Mutex<BTreeMap<String, Arc<EmbedModel>>>,
    /// Held while a model loads, so concurrent first requests load it once.
    loading: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

/// Ollama clients say `name:latest`; hearth's names have no tags.
pub fn canonical(name: &str) -> &str {
    name.strip_suffix(":latest").unwrap_or(name)
}

/// The store's failures as the API reports them.
pub fn store_error(name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::UnknownModel { .. }
        | StoreError::NotInStore { .. }
        | StoreError::InvalidName { .. } => ApiError::not_found(format!(
            "model {name:?} not found; `hearth list` shows the models there are"
        )),
        other => ApiError::internal(format!("model {name:?}: {other}")),
    }
}

impl Models {
    pub fn new(metrics: Arc<Metrics>) -> Models {
        Models {
            chat: Mutex::new(BTreeMap::new()),
            adapters: Mutex::new(BTreeMap::new()),
            embed: Mutex::new(BTreeMap::new()),
            loading: tokio::sync::Mutex::new(()),
            metrics,
        }
    }

    fn get(&self, name: &str) -> Option<Arc<ChatModel>> {
        let chat = self.chat.lock().unwrap_or_else(|p| p.into_inner());
        chat.get(name).cloned()
    }

    /// The chat model `name`, loading it (and pulling a default model the
    /// first time) if it is not in memory.
    pub async fn chat(
        &self,
        store: &Store,
        config: &ServeConfig,
        name: &str,
    ) -> Result<Arc<ChatModel>, ApiError> {
        if let Some(m) = self.get(name) {
            return Ok(m);
        }
        if !hearth_store::manifest::valid_name(name) {
            return Err(ApiError::not_found(format!("model {name:?} not found")));
        }
        let _guard = self.loading.lock().await;
        if let Some(m) = self.get(name) {
            return Ok(m);
        }
        let (store, config, owned) = (store.clone(), config.clone(), name.to_string());
        let metrics = self.metrics.clone();
        let m = tokio::task::spawn_blocking(move || load_chat(&store, &config, &owned, metrics))
            .await
            .map_err(|e| ApiError::internal(format!("loading {name}: {e}")))??;
        let m = Arc::new(m);
        let mut chat = self.chat.lock().unwrap_or_else(|p| p.into_inner());
        chat.insert(name.to_string(), m.clone());
        self.publish(&chat);
        Ok(m)
    }

    /// The embedding model `name`, loading it (and pulling a default model
    /// the first time) if it is not in memory.
    pub async fn embedder(
        &self,
        store: &Store,
        config: &ServeConfig,
        name: &str,
    ) -> Result<Arc<EmbedModel>, ApiError> {
        let get = || {
            let embed = self.embed.lock().unwrap_or_else(|p| p.into_inner());
            embed.get(name).cloned()
        };
        if let Some(m) = get() {
            return Ok(m);
        }
        if !hearth_store::manifest::valid_name(name) {
            return Err(ApiError::not_found(format!("model {name:?} not found")));
        }
        let _guard = self.loading.lock().await;
        if let Some(m) = get() {
            return Ok(m);
        }
        let (store, threads, owned) = (store.clone(), config.threads, name.to_string());
        let metrics = self.metrics.clone();
        let m = tokio::task::spawn_blocking(move || load_embed(&store, threads, &owned, metrics))
            .await
            .map_err(|e| ApiError::internal(format!("loading {name}: {e}")))??;
        let m = Arc::new(m);
        let mut embed = self.embed.lock().unwrap_or_else(|p| p.into_inner());
        embed.insert(name.to_string(), m.clone());
        self.metrics
            .set(Metric::ModelBytes, &[("model", name)], m.size as f64);
        drop(embed);
        self.publish(&self.chat.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(m)
    }

    /// Expert `e`'s adapter, loaded for (and checked against) `rt`, its
    /// base, on first use.
    pub async fn adapter(&self, e: &Expert, rt: &Arc<Runtime>) -> Result<Arc<Adapter>, ApiError> {
        let get = || {
            let a = self.adapters.lock().unwrap_or_else(|p| p.into_inner());
            a.get(&e.name)
                .filter(|l| l.created == e.created && l.base == e.spec.base)
                .map(|l| l.adapter.clone())
        };
        if let Some(a) = get() {
            return Ok(a);
        }
        let Some(path) = e.adapter_path.clone() else {
            return Err(ApiError::internal(format!(
                "expert {:?} has no adapter",
                e.name
            )));
        };
        let _guard = self.loading.lock().await;
        if let Some(a) = get() {
            return Ok(a);
        }
        let t0 = Instant::now();
        let rt = rt.clone();
        let adapter = tokio::task::spawn_blocking(move || rt.load_adapter(&path))
            .await
            .map_err(|err| ApiError::internal(format!("loading expert {}: {err}", e.name)))?
            .map_err(|err| ApiError::internal(format!("expert {:?}: {err}", e.name)))?;
        let labels = [("expert", e.name.as_str())];
        self.metrics.add(Metric::ExpertLoads, &labels, 1.0);
        self.metrics.observe(
            Metric::ExpertLoadSeconds,
            &labels,
            t0.elapsed().as_secs_f64(),
        );
        self.metrics
            .set(Metric::AdapterBytes, &labels, adapter.bytes() as f64);
        let mut a = self.adapters.lock().unwrap_or_else(|p| p.into_inner());
        a.insert(
            e.name.clone(),
            Arc::new(LoadedAdapter {
                expert: e.name.clone(),
                base: e.spec.base.clone(),
                created: e.created.clone(),
                adapter: adapter.clone(),
                loaded_at: SystemTime::now(),
            }),
        );
        Ok(adapter)
    }

    pub fn loaded_adapters(&self) -> Vec<Arc<LoadedAdapter>> {
        let a = self.adapters.lock().unwrap_or_else(|p| p.into_inner());
        a.values().cloned().collect()
    }

    pub fn loaded_embedders(&self) -> Vec<Arc<EmbedModel>> {
        let embed = self.embed.lock().unwrap_or_else(|p| p.into_inner());
        embed.values().cloned().collect()
    }

    /// Drop a model from memory; requests already running finish first.
    pub fn unload(&self, name: &str) -> bool {
        let gone_embed = {
            let mut embed = self.embed.lock().unwrap_or_else(|p| p.into_inner());
            embed.remove(name).is_some()
        };
        let gone_adapter = {
            let mut a = self.adapters.lock().unwrap_or_else(|p| p.into_inner());
            // An expert's adapter, and the adapters of experts over this base.
            let before = a.len();
            a.retain(|k, l| k != name && l.base != name);
            before != a.len()
        };
        if gone_adapter {
            self.metrics
                .remove(Metric::AdapterBytes, &[("expert", name)]);
        }
        let mut chat = self.chat.lock().unwrap_or_else(|p| p.into_inner());
        let gone = chat.remove(name).is_some() || gone_embed || gone_adapter;
        if gone {
            self.metrics.remove(Metric::ModelBytes, &[("model", name)]);
        }
        self.publish(&chat);
        gone
    }

    pub fn loaded(&self) -> Vec<Arc<ChatModel>> {
        let chat = self.chat.lock().unwrap_or_else(|p| p.into_inner());
        chat.values().cloned().collect()
    }

    fn publish(&self, chat: &BTreeMap<String, Arc<ChatModel>>) {
        let n_embed = self.embed.lock().unwrap_or_else(|p| p.into_inner()).len();
        self.metrics
            .set(Metric::LoadedModels, &[], (chat.len() + n_embed) as f64);
        for m in chat.values() {
            self.metrics
                .set(Metric::ModelBytes, &[("model", &m.name)], m.size as f64);
        }
    }
}

fn load_chat(
    store: &Store,
    config: &ServeConfig,
    name: &str,
    metrics: Arc<Metrics>,
) -> Result<ChatModel, ApiError> {
    let t0 = Instant::now();
    let path = store
        .ensure(name, hearth_store::Progress::Quiet)
        .map_err(|e| store_error(name, e))?;
    if path.is_dir() {
        return Err(ApiError::bad_request(format!(
            "model {name:?} is an embedding model; use /v1/embeddings or /api/embed"
        )));
    }
    let rt = Runtime::load(&path, config.threads)
        .map_err(|e| ApiError::internal(format!("loading model {name:?}: {e}")))?;
    let rt = Arc::new(rt);
    let details = details(rt.model.file());
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let sched = Scheduler::spawn(
        name.to_string(),
        rt.clone(),
        SchedConfig {
            max_batch: config.max_batch,
            max_queue: config.max_queue,
            prefill_chunk: config.prefill_chunk,
        },
        metrics.clone(),
    )
    .map_err(|e| ApiError::internal(format!("starting the scheduler for {name}: {e}")))?;
    metrics.observe(
        Metric::ModelLoadSeconds,
        &[("model", name)],
        t0.elapsed().as_secs_f64(),
    );
    tracing::info!(model = name, path = %path.display(), ms = t0.elapsed().as_millis() as u64, "loaded");
    Ok(ChatModel {
        name: name.to_string(),
        rt,
        sched,
        path,
        size,
        details,
        loaded_at: SystemTime::now(),
    })
}

fn load_embed(
    store: &Store,
    threads: usize,
    name: &str,
    metrics: Arc<Metrics>,
) -> Result<EmbedModel, ApiError> {
    let t0 = Instant::now();
    let dir = store
        .ensure(name, hearth_store::Progress::Quiet)
        .map_err(|e| store_error(name, e))?;
    if !dir.is_dir() {
        return Err(unsupported(name, "embeddings (it is a generative model)"));
    }
    let emb = Embedder::load(&dir, threads)
        .map_err(|e| ApiError::internal(format!("loading model {name:?}: {e}")))?
        .with_name(name);
    let size = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    metrics.observe(
        Metric::ModelLoadSeconds,
        &[("model", name)],
        t0.elapsed().as_secs_f64(),
    );
    tracing::info!(
        model = name,
        ms = t0.elapsed().as_millis() as u64,
        "loaded embedding model"
    );
    Ok(EmbedModel {
        name: name.to_string(),
        emb: Mutex::new(emb),
        dir,
        size,
        loaded_at: SystemTime::now(),
    })
}

/// Ollama-style details read from a GGUF file's metadata.
pub fn details(f: &GgufFile) -> Details {
    let arch = f
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_string();
    let params: u64 = f.tensors().iter().map(|t| t.n_elements()).sum();
    let quant = f
        .get("general.file_type")
        .and_then(|v| v.as_u64())
        .map(file_type_name)
        .unwrap_or("unknown");
    Details {
        parent_model: String::new(),
        format: "gguf".into(),
        family: arch.clone(),
        families: vec![arch],
        parameter_size: human_count(params),
        quantization_level: quant.to_string(),
    }
}

/// Details of a stored model file without loading it; `None` if it is not GGUF.
pub fn details_of(path: &Path) -> Option<Details> {
    GgufFile::open(path).ok().map(|f| details(&f))
}

/// llama.cpp's `general.file_type` numbering.
fn file_type_name(t: u64) -> &'static str {
    match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => "unknown",
    }
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.0}M", n as f64 / 1e6),
        n => format!("{:.0}K", n as f64 / 1e3),
    }
}

/// Seconds since the Unix epoch.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A status for "this model cannot do that".
pub fn unsupported(name: &str, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("model {name:?} does not support {what}"),
    )
}
