//! The models the daemon holds in memory, loaded on first use and unloaded
//! when idle or when the memory budget needs their room.
//!
//! This module owns the table of loaded things (chat bases with their
//! scheduler threads, experts' adapters, embedding models), the
//! one-at-a-time loading (two requests for an unloaded model load it once),
//! admission under the memory budget and eviction, and what `/api/ps`
//! reports of each. The bytes themselves are [`crate::governor`]'s: every
//! loaded thing holds a [`Reservation`] of its estimated cost, and a
//! request holds one for its KV cache.
//!
//! In use means referenced beyond this table: a request holds the
//! `Arc<ChatModel>` (or the adapter's `Arc<Adapter>`, inside its sequence)
//! from admission to its end, and a base with queued or running sequences
//! counts too. Only what is not in use is ever evicted, least recently used
//! first; idle things also unload once their `keep_alive` runs out.
//! Unloading a base drops the table's handle: its scheduler thread ends,
//! the last `Arc<Runtime>` goes and the file's mapping with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use hearth_gguf::GgufFile;
use hearth_runtime::{Adapter, Embedder, Runtime};
use hearth_store::{Error as StoreError, Expert, Store};
use serde::Serialize;

use crate::api::error::ApiError;
use crate::config::ServeConfig;
use crate::governor::{self, human, Cost, Governor, KeepAlive, Reservation};
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

/// When a loaded thing was last used and how long it may stay idle.
#[derive(Clone, Copy, Debug)]
pub struct Keep {
    pub last_used: Instant,
    pub keep_alive: KeepAlive,
}

impl Keep {
    fn new(keep_alive: KeepAlive) -> Mutex<Keep> {
        Mutex::new(Keep {
            last_used: Instant::now(),
            keep_alive,
        })
    }

    /// When it unloads if it stays idle from now; `None`: never for idleness.
    pub fn expires(&self) -> Option<Instant> {
        match self.keep_alive {
            KeepAlive::For(d) => Some(self.last_used + d),
            KeepAlive::Forever => None,
        }
    }
}

fn touch(k: &Mutex<Keep>, keep_alive: Option<KeepAlive>) {
    let mut k = k.lock().unwrap_or_else(|p| p.into_inner());
    k.last_used = Instant::now();
    if let Some(ka) = keep_alive {
        k.keep_alive = ka;
    }
}

fn keep_of(k: &Mutex<Keep>) -> Keep {
    *k.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct ChatModel {
    pub name: String,
    pub rt: Arc<Runtime>,
    pub sched: Scheduler,
    pub path: PathBuf,
    pub size: u64,
    pub details: Details,
    pub loaded_at: SystemTime,
    /// Weights and scratch as estimated before loading.
    pub estimate: Cost,
    pub keep: Mutex<Keep>,
    /// Last: the bytes are given back after everything above is dropped
    /// (the scheduler thread holds a clone until it has let go of `rt`).
    hold: Arc<Reservation>,
}

/// A sentence-embedding model. Its engine runs one call at a time (the
/// mutex), on a blocking thread.
pub struct EmbedModel {
    pub name: String,
    pub emb: Mutex<Embedder>,
    pub dir: PathBuf,
    pub size: u64,
    pub loaded_at: SystemTime,
    pub keep: Mutex<Keep>,
    hold: Reservation,
}

/// An expert's adapter in memory, for the base it was checked against.
pub struct LoadedAdapter {
    pub expert: String,
    pub base: String,
    /// The expert's creation time: a re-created expert loads anew.
    pub created: String,
    pub adapter: Arc<Adapter>,
    pub loaded_at: SystemTime,
    pub keep: Mutex<Keep>,
    hold: Reservation,
}

/// One loaded thing as `hearth ps` and `/api/ps` show it.
#[derive(Clone, Debug, Serialize)]
pub struct PsEntry {
    pub name: String,
    /// `base`, `expert` or `embedding`.
    pub kind: &'static str,
    /// The base an expert's adapter runs on (the model itself for a base).
    pub base: String,
    /// What the governor reserved for it.
    pub estimated: u64,
    /// What the kernel says is resident of its mapping (bases, embedding
    /// models), or what its matrices occupy (adapters).
    pub resident: u64,
    /// KV bytes its running sequences and prefix cache hold (bases).
    pub kv: u64,
    pub loaded_at: SystemTime,
    /// When it unloads if it stays idle; `None`: kept loaded.
    pub expires_at: Option<SystemTime>,
    pub running: usize,
    pub waiting: usize,
    pub size: u64,
    pub path: Option<PathBuf>,
    pub in_use: bool,
}

pub struct Models {
    chat: Mutex<BTreeMap<String, Arc<ChatModel>>>,
    adapters: Mutex<BTreeMap<String, Arc<LoadedAdapter>>>,
    embed: Mutex<BTreeMap<String, Arc<EmbedModel>>>,
    /// Held while a model loads, so concurrent first requests load it once.
    loading: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
    pub gov: Arc<Governor>,
    keep_alive: KeepAlive,
    wait: Duration,
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

/// A base's cost read from its GGUF header before it is loaded: the mapped
/// tensor bytes and the scratch its shape implies.
pub fn estimate_base(path: &Path, config: &ServeConfig) -> Result<Cost, String> {
    let f = GgufFile::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let weights: u64 = f.tensors().iter().map(|t| t.range.len() as u64).sum();
    let arch = f
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or("llama")
        .to_string();
    let get = |k: &str| {
        f.get(&format!("{arch}.{k}"))
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    };
    let n_vocab = f
        .get_array("tokenizer.ggml.tokens")
        .map(|a| a.len() as u64)
        .unwrap_or(0);
    let shape = governor::ScratchShape {
        n_vocab,
        n_embd: get("embedding_length"),
        n_ff: get("feed_forward_length"),
        max_batch: config.max_batch as u64,
        prefill_chunk: config.prefill_chunk as u64,
        prefix_cache: governor::prefix_cache_bytes(config.memory_budget),
    };
    Ok(Cost {
        weights,
        scratch: governor::scratch_estimate(&shape),
        ..Cost::default()
    })
}

/// An embedding model's cost: its files (mapped) and a fixed scratch.
fn estimate_embed(dir: &Path) -> Cost {
    Cost {
        weights: dir_bytes(dir),
        scratch: 16 * governor::MIB,
        ..Cost::default()
    }
}

/// An adapter's cost before it is loaded: its matrices become f32 in
/// memory, so twice the stored size covers files in f16 (and f32 files
/// with room to spare). Corrected to the measured size once loaded.
fn estimate_adapter(e: &Expert) -> Cost {
    Cost {
        adapters: 2 * e.adapter_bytes.max(1),
        ..Cost::default()
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// A candidate for eviction.
struct Victim {
    kind: &'static str,
    name: String,
    last_used: Instant,
}

impl Models {
    pub fn new(metrics: Arc<Metrics>, config: &ServeConfig) -> Models {
        Models {
            chat: Mutex::new(BTreeMap::new()),
            adapters: Mutex::new(BTreeMap::new()),
            embed: Mutex::new(BTreeMap::new()),
            loading: tokio::sync::Mutex::new(()),
            gov: Governor::new(config.memory_budget, metrics.clone()),
            metrics,
            keep_alive: config.keep_alive,
            wait: Duration::from_secs(config.memory_wait_secs),
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
        self.chat_kept(store, config, name, None).await
    }

    /// [`Models::chat`], and the request's `keep_alive` for the model.
    pub async fn chat_kept(
        &self,
        store: &Store,
        config: &ServeConfig,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Arc<ChatModel>, ApiError> {
        if let Some(m) = self.get(name) {
            touch(&m.keep, keep_alive);
            return Ok(m);
        }
        if !hearth_store::manifest::valid_name(name) {
            return Err(ApiError::not_found(format!("model {name:?} not found")));
        }
        let _guard = self.loading.lock().await;
        if let Some(m) = self.get(name) {
            touch(&m.keep, keep_alive);
            return Ok(m);
        }
        let path = {
            let (store, owned) = (store.clone(), name.to_string());
            tokio::task::spawn_blocking(move || store.ensure(&owned, hearth_store::Progress::Quiet))
                .await
                .map_err(|e| ApiError::internal(format!("loading {name}: {e}")))?
                .map_err(|e| store_error(name, e))?
        };
        if path.is_dir() {
            return Err(ApiError::bad_request(format!(
                "model {name:?} is an embedding model; use /v1/embeddings or /api/embed"
            )));
        }
        let estimate = estimate_base(&path, config)
            .map_err(|e| ApiError::internal(format!("loading model {name:?}: {e}")))?;
        let hold = self
            .reserve(&format!("loading model {name}"), estimate, 0)
            .await?;
        let (config, owned) = (config.clone(), name.to_string());
        let metrics = self.metrics.clone();
        let keep = keep_alive.unwrap_or(self.keep_alive);
        let m = tokio::task::spawn_blocking(move || {
            load_chat(&path, &config, &owned, metrics, estimate, hold, keep)
        })
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
            touch(&m.keep, None);
            return Ok(m);
        }
        if !hearth_store::manifest::valid_name(name) {
            return Err(ApiError::not_found(format!("model {name:?} not found")));
        }
        let _guard = self.loading.lock().await;
        if let Some(m) = get() {
            touch(&m.keep, None);
            return Ok(m);
        }
        let dir = {
            let (store, owned) = (store.clone(), name.to_string());
            tokio::task::spawn_blocking(move || store.ensure(&owned, hearth_store::Progress::Quiet))
                .await
                .map_err(|e| ApiError::internal(format!("loading {name}: {e}")))?
                .map_err(|e| store_error(name, e))?
        };
        if !dir.is_dir() {
            return Err(unsupported(name, "embeddings (it is a generative model)"));
        }
        let hold = self
            .reserve(&format!("loading model {name}"), estimate_embed(&dir), 0)
            .await?;
        let (threads, owned) = (config.threads, name.to_string());
        let metrics = self.metrics.clone();
        let keep = self.keep_alive;
        let m = tokio::task::spawn_blocking(move || {
            load_embed(&dir, threads, &owned, metrics, hold, keep)
        })
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

    /// Expert `e`'s adapter, loaded for (and checked against) `base`, on
    /// first use.
    pub async fn adapter(
        &self,
        e: &Expert,
        base: &Arc<ChatModel>,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Arc<Adapter>, ApiError> {
        let get = || {
            let a = self.adapters.lock().unwrap_or_else(|p| p.into_inner());
            a.get(&e.name)
                .filter(|l| l.created == e.created && l.base == e.spec.base)
                .map(|l| {
                    touch(&l.keep, keep_alive);
                    l.adapter.clone()
                })
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
        let estimate = estimate_adapter(e);
        // The base this request runs on is in use (we hold it), so it is
        // never the one evicted for its own adapter.
        let mut hold = self
            .reserve(
                &format!("expert {}'s adapter", e.name),
                estimate,
                base.hold.cost().total(),
            )
            .await?;
        let t0 = Instant::now();
        let rt = base.rt.clone();
        let adapter = tokio::task::spawn_blocking(move || rt.load_adapter(&path))
            .await
            .map_err(|err| ApiError::internal(format!("loading expert {}: {err}", e.name)))?
            .map_err(|err| ApiError::internal(format!("expert {:?}: {err}", e.name)))?;
        let measured = Cost {
            adapters: adapter.bytes() as u64,
            ..Cost::default()
        };
        // Charge what it really holds: shrink to it, or take the rest.
        if !hold.resize(measured) {
            let extra = Cost {
                adapters: measured.adapters - estimate.adapters,
                ..Cost::default()
            };
            let more = self
                .reserve(
                    &format!("expert {}'s adapter", e.name),
                    extra,
                    base.hold.cost().total() + estimate.total(),
                )
                .await?;
            hold.absorb(more);
        }
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
        // A stale adapter of a re-created expert is replaced; its bytes go
        // when the last sequence using it ends.
        a.insert(
            e.name.clone(),
            Arc::new(LoadedAdapter {
                expert: e.name.clone(),
                base: e.spec.base.clone(),
                created: e.created.clone(),
                adapter: adapter.clone(),
                loaded_at: SystemTime::now(),
                keep: Keep::new(keep_alive.unwrap_or(self.keep_alive)),
                hold,
            }),
        );
        Ok(adapter)
    }

    /// Reserve the KV cache of a sequence of `model` that may reach
    /// `positions` positions.
    pub async fn reserve_kv(
        &self,
        model: &ChatModel,
        positions: usize,
        pinned: u64,
    ) -> Result<Reservation, ApiError> {
        let cost = Cost {
            kv: model.rt.kv_bytes_for(positions) as u64,
            ..Cost::default()
        };
        self.reserve(
            &format!(
                "this request's KV cache ({positions} positions of {})",
                model.name
            ),
            cost,
            pinned,
        )
        .await
    }

    /// Reserve `cost` for `what`, evicting idle things (least recently used
    /// first) and waiting for running requests to give memory back, for at
    /// most the configured wait. `pinned` is what the caller already holds
    /// and will not give up (its own base): when `cost` cannot fit even
    /// beside it alone, the answer is an immediate 503.
    pub async fn reserve(
        &self,
        what: &str,
        cost: Cost,
        pinned: u64,
    ) -> Result<Reservation, ApiError> {
        let budget = self.gov.budget();
        if cost.total() + pinned > budget {
            return Err(self.full(what, cost, true));
        }
        let deadline = Instant::now() + self.wait;
        loop {
            if let Some(r) = self.gov.try_reserve(cost) {
                return Ok(r);
            }
            match self.evict_lru() {
                Some(pending) => {
                    // A base's bytes come back when its thread has let go
                    // of it; wait for that before judging again, so one
                    // eviction is not mistaken for too little.
                    while pending.upgrade().is_some() && Instant::now() < deadline {
                        self.gov.wait_for_release(Duration::from_millis(5)).await;
                    }
                    governor::trim_allocator();
                    continue;
                }
                None if Instant::now() >= deadline => return Err(self.full(what, cost, false)),
                None => self.gov.wait_for_release(Duration::from_millis(50)).await,
            }
        }
    }

    /// The 503 of a reservation that does not fit.
    fn full(&self, what: &str, cost: Cost, never: bool) -> ApiError {
        let used = self.gov.used();
        let holders: Vec<String> = self
            .entries()
            .iter()
            .map(|e| {
                format!(
                    "{} {} ({}{})",
                    e.kind,
                    e.name,
                    human(e.estimated),
                    if e.in_use { ", in use" } else { "" }
                )
            })
            .collect();
        let held = if holders.is_empty() {
            String::new()
        } else {
            format!(" by {}", holders.join(", "))
        };
        let kv = if used.kv > 0 {
            format!("; running requests' KV caches hold {}", human(used.kv))
        } else {
            String::new()
        };
        let tail = if never {
            "; it can never fit: ask for fewer tokens or a smaller context, or raise --memory-budget"
        } else {
            "; try again when running requests end, or raise --memory-budget"
        };
        let status = StatusCode::SERVICE_UNAVAILABLE;
        let e = ApiError::new(
            status,
            format!(
                "memory budget {} is full: {what} needs {}, and {} is held{held}{kv}{tail}",
                human(self.gov.budget()),
                human(cost.total()),
                human(used.total()),
            ),
        );
        if never {
            e
        } else {
            e.retry_after(5)
        }
    }

    /// Unload the least recently used thing that is not in use. For a
    /// base, the returned handle lives until its bytes are given back;
    /// `None` when there was nothing to evict.
    fn evict_lru(&self) -> Option<Weak<Reservation>> {
        let victim = self.idle().into_iter().min_by_key(|v| v.last_used)?;
        tracing::info!(kind = victim.kind, name = %victim.name, "evicting for room");
        self.evict(&victim, "room")
    }

    /// Everything loaded and not in use, with when it was last used.
    fn idle(&self) -> Vec<Victim> {
        let mut out = Vec::new();
        {
            let chat = self.chat.lock().unwrap_or_else(|p| p.into_inner());
            for (name, m) in chat.iter() {
                let (waiting, running) = m.sched.load();
                if Arc::strong_count(m) == 1 && waiting == 0 && running == 0 {
                    out.push(Victim {
                        kind: "base",
                        name: name.clone(),
                        last_used: keep_of(&m.keep).last_used,
                    });
                }
            }
        }
        {
            let a = self.adapters.lock().unwrap_or_else(|p| p.into_inner());
            for (name, l) in a.iter() {
                if Arc::strong_count(&l.adapter) == 1 {
                    out.push(Victim {
                        kind: "expert",
                        name: name.clone(),
                        last_used: keep_of(&l.keep).last_used,
                    });
                }
            }
        }
        let embed = self.embed.lock().unwrap_or_else(|p| p.into_inner());
        for (name, m) in embed.iter() {
            if Arc::strong_count(m) == 1 {
                out.push(Victim {
                    kind: "embedding",
                    name: name.clone(),
                    last_used: keep_of(&m.keep).last_used,
                });
            }
        }
        out
    }

    /// Take `v` out of the table, unless it came into use meanwhile.
    fn evict(&self, v: &Victim, reason: &str) -> Option<Weak<Reservation>> {
        let pending = match v.kind {
            "base" => {
                let mut chat = self.chat.lock().unwrap_or_else(|p| p.into_inner());
                let m = chat.get(&v.name)?;
                let (waiting, running) = m.sched.load();
                if Arc::strong_count(m) > 1 || waiting + running > 0 {
                    return None;
                }
                let m = chat.remove(&v.name)?;
                let pending = Arc::downgrade(&m.hold);
                drop(m);
                self.metrics
                    .remove(Metric::ModelBytes, &[("model", &v.name)]);
                self.publish(&chat);
                pending
            }
            "expert" => {
                let mut a = self.adapters.lock().unwrap_or_else(|p| p.into_inner());
                if a.get(&v.name)
                    .is_none_or(|l| Arc::strong_count(&l.adapter) > 1)
                {
                    return None;
                }
                a.remove(&v.name);
                self.metrics
                    .remove(Metric::AdapterBytes, &[("expert", &v.name)]);
                Weak::new()
            }
            _ => {
                let mut embed = self.embed.lock().unwrap_or_else(|p| p.into_inner());
                if embed.get(&v.name).is_none_or(|m| Arc::strong_count(m) > 1) {
                    return None;
                }
                embed.remove(&v.name);
                self.metrics
                    .remove(Metric::ModelBytes, &[("model", &v.name)]);
                Weak::new()
            }
        };
        let (metric, label) = match v.kind {
            "expert" => (Metric::ExpertEvictions, "expert"),
            _ => (Metric::ModelEvictions, "model"),
        };
        self.metrics
            .add(metric, &[(label, &v.name), ("reason", reason)], 1.0);
        Some(pending)
    }

    /// Let `name` (a base, an expert's adapter or an embedding model)
    /// unload as soon as it is idle: Ollama's empty request with
    /// `keep_alive: 0`.
    pub fn expire(&self, name: &str) {
        let now = Some(KeepAlive::For(Duration::ZERO));
        if let Some(m) = self.get(name) {
            touch(&m.keep, now);
        }
        if let Some(l) = self
            .adapters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            touch(&l.keep, now);
        }
        if let Some(m) = self
            .embed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            touch(&m.keep, now);
        }
    }

    /// Unload what has been idle past its `keep_alive`. Run periodically.
    pub fn reap(&self) {
        let now = Instant::now();
        let mut expired: Vec<Victim> = Vec::new();
        for v in self.idle() {
            let keep = match v.kind {
                "base" => self.get(&v.name).map(|m| keep_of(&m.keep)),
                "expert" => {
                    let a = self.adapters.lock().unwrap_or_else(|p| p.into_inner());
                    a.get(&v.name).map(|l| keep_of(&l.keep))
                }
                _ => {
                    let e = self.embed.lock().unwrap_or_else(|p| p.into_inner());
                    e.get(&v.name).map(|m| keep_of(&m.keep))
                }
            };
            if keep.and_then(|k| k.expires()).is_some_and(|t| t <= now) {
                expired.push(v);
            }
        }
        let mut any = false;
        for v in &expired {
            // `self.get` above cloned the Arc only for a moment; it is gone.
            if self.evict(v, "keep_alive").is_some() {
                tracing::info!(kind = v.kind, name = %v.name, "unloaded after keep_alive");
                any = true;
            }
        }
        if any {
            governor::trim_allocator();
        }
    }

    /// Mark the in-use things as used now, so that their keep_alive counts
    /// from the end of their last request.
    pub fn touch_in_use(&self) {
        {
            let chat = self.chat.lock().unwrap_or_else(|p| p.into_inner());
            for m in chat.values() {
                let (w, r) = m.sched.load();
                if Arc::strong_count(m) > 1 || w + r > 0 {
                    touch(&m.keep, None);
                }
            }
        }
        {
            let a = self.adapters.lock().unwrap_or_else(|p| p.into_inner());
            for l in a.values() {
                if Arc::strong_count(&l.adapter) > 1 {
                    touch(&l.keep, None);
                }
            }
        }
        let embed = self.embed.lock().unwrap_or_else(|p| p.into_inner());
        for m in embed.values() {
            if Arc::strong_count(m) > 1 {
                touch(&m.keep, None);
            }
        }
    }

    /// What is loaded, what each costs and until when it stays.
    pub fn entries(&self) -> Vec<PsEntry> {
        let now_i = Instant::now();
        let now_s = SystemTime::now();
        let expiry = |k: Keep, in_use: bool| {
            let k = if in_use {
                Keep {
                    last_used: now_i,
                    ..k
                }
            } else {
                k
            };
            k.expires()
                .map(|t| now_s + t.saturating_duration_since(now_i))
        };
        let mut out = Vec::new();
        for m in self.loaded() {
            let (waiting, running) = m.sched.load();
            // One count is the table's, one ours (`loaded` cloned it).
            let in_use = Arc::strong_count(&m) > 2 || waiting + running > 0;
            out.push(PsEntry {
                name: m.name.clone(),
                kind: "base",
                base: m.name.clone(),
                estimated: m.estimate.total(),
                resident: governor::mapped_resident(&m.path).unwrap_or(0),
                kv: m.sched.kv_bytes(),
                loaded_at: m.loaded_at,
                expires_at: expiry(keep_of(&m.keep), in_use),
                running,
                waiting,
                size: m.size,
                path: Some(m.path.clone()),
                in_use,
            });
        }
        for a in self.loaded_adapters() {
            let in_use = Arc::strong_count(&a.adapter) > 1;
            out.push(PsEntry {
                name: a.expert.clone(),
                kind: "expert",
                base: a.base.clone(),
                estimated: a.hold.cost().total(),
                resident: a.adapter.bytes() as u64,
                kv: 0,
                loaded_at: a.loaded_at,
                expires_at: expiry(keep_of(&a.keep), in_use),
                running: 0,
                waiting: 0,
                size: a.adapter.bytes() as u64,
                path: None,
                in_use,
            });
        }
        for m in self.loaded_embedders() {
            let in_use = Arc::strong_count(&m) > 2;
            out.push(PsEntry {
                name: m.name.clone(),
                kind: "embedding",
                base: m.name.clone(),
                estimated: m.hold.cost().total(),
                resident: governor::mapped_resident(&m.dir.join("model.safetensors")).unwrap_or(0),
                kv: 0,
                loaded_at: m.loaded_at,
                expires_at: expiry(keep_of(&m.keep), in_use),
                running: 0,
                waiting: 0,
                size: m.size,
                path: Some(m.dir.clone()),
                in_use,
            });
        }
        out
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
    path: &Path,
    config: &ServeConfig,
    name: &str,
    metrics: Arc<Metrics>,
    estimate: Cost,
    hold: Reservation,
    keep_alive: KeepAlive,
) -> Result<ChatModel, ApiError> {
    let t0 = Instant::now();
    let rt = Runtime::load(path, config.threads)
        .map_err(|e| ApiError::internal(format!("loading model {name:?}: {e}")))?;
    let rt = Arc::new(rt);
    let details = details(rt.model.file());
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let hold = Arc::new(hold);
    let sched = Scheduler::spawn(
        name.to_string(),
        rt.clone(),
        SchedConfig {
            max_batch: config.max_batch,
            max_queue: config.max_queue,
            prefill_chunk: config.prefill_chunk,
            prefix_bytes: governor::prefix_cache_bytes(config.memory_budget) as usize,
        },
        metrics.clone(),
        hold.clone(),
    )
    .map_err(|e| ApiError::internal(format!("starting the scheduler for {name}: {e}")))?;
    metrics.observe(
        Metric::ModelLoadSeconds,
        &[("model", name)],
        t0.elapsed().as_secs_f64(),
    );
    tracing::info!(model = name, path = %path.display(), ms = t0.elapsed().as_millis() as u64,
        reserved = %human(estimate.total()), "loaded");
    Ok(ChatModel {
        name: name.to_string(),
        rt,
        sched,
        path: path.to_path_buf(),
        size,
        details,
        loaded_at: SystemTime::now(),
        estimate,
        keep: Keep::new(keep_alive),
        hold,
    })
}

fn load_embed(
    dir: &Path,
    threads: usize,
    name: &str,
    metrics: Arc<Metrics>,
    hold: Reservation,
    keep_alive: KeepAlive,
) -> Result<EmbedModel, ApiError> {
    let t0 = Instant::now();
    let emb = Embedder::load(dir, threads)
        .map_err(|e| ApiError::internal(format!("loading model {name:?}: {e}")))?
        .with_name(name);
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
        dir: dir.to_path_buf(),
        size: dir_bytes(dir),
        loaded_at: SystemTime::now(),
        keep: Keep::new(keep_alive),
        hold,
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
