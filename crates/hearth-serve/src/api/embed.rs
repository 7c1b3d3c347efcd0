//! Embeddings: OpenAI's `POST /v1/embeddings` and Ollama's `POST /api/embed`
//! (and its older `POST /api/embeddings`), over the sentence-embedding
//! models (`minilm`).
//!
//! Embedding calls do not go through the generation scheduler: an encoder
//! pass has no steps to interleave. They run on a blocking thread, one call
//! per model at a time. Empty strings are refused with a 400, as OpenAI
//! does; a text over the model's limit is cut unless Ollama's `truncate`
//! is false, which makes it a 400.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use hearth_runtime::Embeddings;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::parse;
use super::error::ApiError;
use super::generation::permit_model;
use super::Call;
use crate::audit::Audit;
use crate::auth::Caller;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    /// Anything else (token arrays included), refused by name.
    Other(Value),
}

#[derive(Deserialize)]
struct OpenAiRequest {
    model: String,
    input: Input,
    encoding_format: Option<String>,
    dimensions: Option<u32>,
}

#[derive(Deserialize)]
struct OllamaRequest {
    model: String,
    input: Input,
    truncate: Option<bool>,
    dimensions: Option<u32>,
}

#[derive(Deserialize)]
struct OllamaLegacyRequest {
    model: String,
    prompt: String,
}

fn texts(input: Input) -> Result<Vec<String>, ApiError> {
    let v = match input {
        Input::One(s) => vec![s],
        Input::Many(v) => v,
        Input::Other(v) => {
            let what = if v.is_array() {
                "an array of non-strings (token arrays are not supported)"
            } else {
                "not text"
            };
            return Err(ApiError::field(
                "input",
                format!("`input` must be a string or an array of strings; it is {what}"),
            ));
        }
    };
    if v.is_empty() {
        return Err(ApiError::field("input", "`input` is empty"));
    }
    if let Some(i) = v.iter().position(|s| s.is_empty()) {
        return Err(ApiError::field(
            &format!("input[{i}]"),
            "an input text is empty",
        ));
    }
    Ok(v)
}

/// Load (if needed) and run the model on `texts`.
async fn run(
    st: &Arc<AppState>,
    caller: &Caller,
    audit: &Audit,
    model: &str,
    texts: Vec<String>,
    dimensions: Option<u32>,
) -> Result<(String, Embeddings), ApiError> {
    let name = permit_model(caller, model)?;
    audit.model(&name);
    audit.hold(st.limits.acquire(caller)?);
    let m = st.models.embedder(&st.store, &st.config, &name).await?;
    let dim = m.emb.lock().unwrap_or_else(|p| p.into_inner()).dim();
    if let Some(d) = dimensions {
        if d as usize != dim {
            return Err(ApiError::field(
                "dimensions",
                format!("model {name} gives {dim}-dimensional vectors; it cannot shorten them"),
            ));
        }
    }
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let emb = m.emb.lock().unwrap_or_else(|p| p.into_inner());
        emb.embed(&refs)
    })
    .await
    .map_err(|e| ApiError::internal(format!("embedding: {e}")))??;
    audit.tokens(out.prompt_tokens, 0);
    audit.ok();
    Ok((name, out))
}

pub async fn openai(call: Call) -> Response {
    call.run("/v1/embeddings", openai_inner).await
}

async fn openai_inner(
    st: &Arc<AppState>,
    caller: &Caller,
    audit: &Audit,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: OpenAiRequest = parse(body)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::field(
                "encoding_format",
                format!("unknown encoding_format {other:?} (float or base64)"),
            ))
        }
    };
    let texts = texts(req.input)?;
    let (name, out) = run(st, caller, audit, &req.model, texts, req.dimensions).await?;
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens},
    }))
    .into_response())
}

pub async fn ollama(call: Call) -> Response {
    call.run("/api/embed", ollama_inner).await
}

async fn ollama_inner(
    st: &Arc<AppState>,
    caller: &Caller,
    audit: &Audit,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: OllamaRequest = parse(body)?;
    let texts = texts(req.input)?;
    let (name, out) = run(st, caller, audit, &req.model, texts, req.dimensions).await?;
    if req.truncate == Some(false) {
        if let Some(i) = out.truncated.iter().position(|&t| t) {
            return Err(ApiError::field(
                &format!("input[{i}]"),
                "the input is longer than the model's context and truncate is false",
            ));
        }
    }
    Ok(Json(json!({
        "model": name,
        "embeddings": out.vectors,
        "total_duration": (audit.elapsed_ms() * 1e6) as u64,
        "load_duration": 0,
        "prompt_eval_count": out.prompt_tokens,
    }))
    .into_response())
}

/// Ollama's older single-prompt form.
pub async fn ollama_legacy(call: Call) -> Response {
    call.run("/api/embeddings", ollama_legacy_inner).await
}

async fn ollama_legacy_inner(
    st: &Arc<AppState>,
    caller: &Caller,
    audit: &Audit,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: OllamaLegacyRequest = parse(body)?;
    let texts = texts(Input::One(req.prompt))?;
    let (_, out) = run(st, caller, audit, &req.model, texts, None).await?;
    Ok(Json(json!({ "embedding": out.vectors[0] })).into_response())
}
