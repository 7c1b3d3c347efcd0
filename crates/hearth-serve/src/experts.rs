//! What a request's `model` names: a model, an expert over a model, or
//! `auto` (the router chooses among the experts the app may use).
//!
//! This module owns that resolution, the defaults an expert lends a request
//! (system prompt, sampling settings, the adapter) and the cache of the
//! router. Loading bases and adapters is [`crate::models`]'s; the choice
//! itself is [`crate::router`]'s.
//!
//! An expert is read from the store on every request, so one created with
//! the CLI while the daemon runs is usable at once, and one deleted is gone
//! for new requests (404) while requests already running keep their
//! adapter to the end.

use std::sync::Arc;

use axum::http::StatusCode;
use hearth_runtime::Adapter;
use hearth_store::Expert;

use crate::api::error::ApiError;
use crate::auth::Caller;
use crate::models::{canonical, store_error};
use crate::router::{Router, DEFAULT_THRESHOLD};
use crate::state::AppState;

/// The model name that asks the router to choose.
pub const AUTO: &str = "auto";

/// The embedding model the router runs on.
pub const ROUTER_EMBEDDER: &str = "minilm";

/// Settings a request gets from its expert where it does not set its own.
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    pub system: Option<String>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
}

/// Who serves a request.
pub struct Served {
    /// The name responses carry: the expert's, or the model's.
    pub name: String,
    /// The model whose weights run.
    pub base: String,
    pub defaults: Defaults,
    /// The expert, when one serves.
    pub expert: Option<Expert>,
}

impl Served {
    fn model(name: String) -> Served {
        Served {
            base: name.clone(),
            name,
            defaults: Defaults::default(),
            expert: None,
        }
    }

    fn expert(e: Expert) -> Served {
        Served {
            name: e.name.clone(),
            base: e.spec.base.clone(),
            defaults: Defaults {
                system: e.spec.system.clone(),
                temperature: e.spec.temperature,
                top_p: e.spec.top_p,
                max_tokens: e.spec.max_tokens,
            },
            expert: Some(e),
        }
    }
}

fn forbidden(caller: &Caller, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!("app {} may not use model {name:?}", caller.app),
    )
}

/// Resolve `model` for `caller`. `request` is the text the router reads
/// (the user's last turn), needed only for `auto`.
pub async fn resolve(
    st: &Arc<AppState>,
    caller: &Caller,
    model: &str,
    request: Option<&str>,
) -> Result<Served, ApiError> {
    let name = canonical(model).to_string();
    if name.is_empty() {
        return Err(ApiError::field("model", "`model` is required"));
    }
    if name == AUTO {
        return route(st, caller, request).await;
    }
    if !caller.may_use(&name) {
        return Err(forbidden(caller, &name));
    }
    match read_expert(st, &name).await? {
        Some(e) => Ok(Served::expert(e)),
        None => Ok(Served::model(name)),
    }
}

async fn read_expert(st: &Arc<AppState>, name: &str) -> Result<Option<Expert>, ApiError> {
    let (store, owned) = (st.store.clone(), name.to_string());
    tokio::task::spawn_blocking(move || store.expert(&owned))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| store_error(name, e))
}

async fn route(
    st: &Arc<AppState>,
    caller: &Caller,
    request: Option<&str>,
) -> Result<Served, ApiError> {
    let Some(text) = request.filter(|t| !t.trim().is_empty()) else {
        return Err(ApiError::field(
            "model",
            "`auto` routes by the request's text; this request has none (token prompts cannot be routed)",
        ));
    };
    let store = st.store.clone();
    let experts = tokio::task::spawn_blocking(move || store.experts())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| store_error(AUTO, e))?;
    let allowed: Vec<Expert> = experts
        .into_iter()
        .filter(|e| caller.may_use(&e.name))
        .collect();
    let chosen = if allowed.is_empty() {
        None
    } else {
        let emb = st
            .models
            .embedder(&st.store, &st.config, ROUTER_EMBEDDER)
            .await?;
        let router = router_for(st, &allowed, &emb.name).await?;
        let text = text.to_string();
        let decision = tokio::task::spawn_blocking(move || {
            let e = emb.emb.lock().unwrap_or_else(|p| p.into_inner());
            router.route(&e, &text)
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("routing: {e}")))?;
        tracing::debug!(?decision, "routed");
        decision.expert
    };
    match chosen.and_then(|n| allowed.into_iter().find(|e| e.name == n)) {
        Some(e) => Ok(Served::expert(e)),
        None => {
            let base = st.config.auto_base.clone();
            if !caller.may_use(&base) {
                return Err(forbidden(caller, &base));
            }
            Ok(Served::model(base))
        }
    }
}

/// The router over `experts`, rebuilt only when the experts (or their
/// creation times) changed since the last request.
async fn router_for(
    st: &Arc<AppState>,
    experts: &[Expert],
    embedder: &str,
) -> Result<Arc<Router>, ApiError> {
    let key: Vec<(String, String)> = experts
        .iter()
        .map(|e| (e.name.clone(), e.created.clone()))
        .collect();
    let mut cached = st.router.lock().await;
    if let Some((k, r)) = cached.as_ref() {
        if *k == key {
            return Ok(r.clone());
        }
    }
    let emb = st.models.embedder(&st.store, &st.config, embedder).await?;
    let list = experts.to_vec();
    let router = tokio::task::spawn_blocking(move || {
        let e = emb.emb.lock().unwrap_or_else(|p| p.into_inner());
        Router::build(&e, &list, DEFAULT_THRESHOLD)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(format!("building the router: {e}")))?;
    let router = Arc::new(router);
    *cached = Some((key, router.clone()));
    Ok(router)
}

/// The adapter of `served`'s expert, loaded for its base (cached).
pub async fn adapter(
    st: &Arc<AppState>,
    served: &Served,
    base: &Arc<crate::models::ChatModel>,
    keep_alive: Option<crate::governor::KeepAlive>,
) -> Result<Option<Arc<Adapter>>, ApiError> {
    match &served.expert {
        Some(e) if e.adapter_path.is_some() => {
            Ok(Some(st.models.adapter(e, base, keep_alive).await?))
        }
        _ => Ok(None),
    }
}
