//! Ollama-compatible endpoints: `/api/chat`, `/api/generate` (NDJSON
//! streaming, on by default as in Ollama), `/api/tags`, `/api/show`,
//! `/api/ps`, `/api/delete`, `/api/version` (and `/api/embed`, in `embed`).
//!
//! This module owns Ollama's shapes and defaults (`options` with
//! temperature 0.8, top_k 40, top_p 0.9, repeat_penalty 1.1; durations in
//! nanoseconds); the flow itself is `generation`'s.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream;
use hearth_runtime::{Message, SeqParams};
use hearth_sample::SamplerConfig;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{parse, OllamaBody};
use super::error::{ApiError, OllamaError};
use super::generation::{begin, collect, permit_model, BeginOpts, Begun, Prompt};
use super::Call;
use crate::audit::Audit;
use crate::auth::Caller;
use crate::experts::Defaults;
use crate::governor::{self, parse_keep_alive, KeepAlive};
use crate::models::{canonical, details_of, store_error};
use crate::scheduler::{Event, Summary};
use crate::state::AppState;
use crate::tools::{self, Call as ToolCall, Turn};

#[derive(Deserialize, Default)]
pub struct Options {
    num_predict: Option<i64>,
    temperature: Option<f32>,
    top_k: Option<i64>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    seed: Option<i64>,
    stop: Option<Vec<String>>,
    repeat_penalty: Option<f32>,
    repeat_last_n: Option<i64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    num_ctx: Option<i64>,
}

impl Options {
    fn params(&self, expert: &Defaults) -> Result<(SeqParams, Option<usize>), ApiError> {
        let max_tokens = match self.num_predict {
            None => expert.max_tokens.map_or(usize::MAX, |m| m as usize),
            Some(-1) | Some(-2) => usize::MAX,
            Some(n) if n >= 0 => n as usize,
            Some(n) => {
                return Err(ApiError::field(
                    "options.num_predict",
                    format!("num_predict {n}: use a count, -1 (no limit) or -2 (fill the context)"),
                ))
            }
        };
        let n_ctx = match self.num_ctx {
            None => None,
            Some(n) if n > 0 => Some(n as usize),
            Some(n) => {
                return Err(ApiError::field(
                    "options.num_ctx",
                    format!("num_ctx {n} must be positive"),
                ))
            }
        };
        let nonneg = |name: &str, v: Option<i64>| -> Result<Option<usize>, ApiError> {
            match v {
                Some(n) if n < 0 => Err(ApiError::field(
                    name,
                    format!("{name} must not be negative"),
                )),
                other => Ok(other.map(|n| n as usize)),
            }
        };
        let d = SamplerConfig::default();
        Ok((
            SeqParams {
                max_tokens,
                sampler: SamplerConfig {
                    temperature: self.temperature.or(expert.temperature).unwrap_or(0.8),
                    top_k: nonneg("options.top_k", self.top_k)?.unwrap_or(40),
                    top_p: self.top_p.or(expert.top_p).unwrap_or(0.9),
                    min_p: self.min_p.unwrap_or(0.0),
                    repeat_penalty: self.repeat_penalty.unwrap_or(1.1),
                    repeat_last_n: nonneg("options.repeat_last_n", self.repeat_last_n)?
                        .unwrap_or(64),
                    presence_penalty: self.presence_penalty.unwrap_or(0.0),
                    frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
                    seed: self.seed.map(|s| s as u64),
                    ..d
                },
                stop: self.stop.clone().unwrap_or_default(),
                ..SeqParams::default()
            },
            n_ctx,
        ))
    }
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
struct OMessage {
    role: String,
    #[serde(default)]
    content: String,
    images: Option<Vec<Value>>,
    /// An assistant turn's calls (arguments as an object, Ollama's form).
    tool_calls: Option<Vec<OToolCall>>,
    /// A tool result's function.
    tool_name: Option<String>,
}

#[derive(Deserialize)]
struct OToolCall {
    function: OFunctionCall,
}

#[derive(Deserialize)]
struct OFunctionCall {
    name: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Vec<OMessage>,
    #[serde(default = "default_true")]
    stream: bool,
    #[serde(default)]
    options: Options,
    format: Option<Value>,
    tools: Option<Value>,
    keep_alive: Option<Value>,
}

#[derive(Deserialize)]
struct GenerateRequest {
    model: String,
    #[serde(default)]
    prompt: String,
    system: Option<String>,
    #[serde(default)]
    raw: bool,
    #[serde(default = "default_true")]
    stream: bool,
    #[serde(default)]
    options: Options,
    format: Option<Value>,
    images: Option<Vec<Value>>,
    suffix: Option<String>,
    keep_alive: Option<Value>,
}

/// A request's `keep_alive`, checked.
fn keep_alive(v: &Option<Value>) -> Result<Option<KeepAlive>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_keep_alive(v)
            .map(Some)
            .map_err(|e| ApiError::field("keep_alive", e)),
    }
}

fn now() -> String {
    hearth_store::manifest::now_rfc3339()
}

fn ns(ms: f64) -> u64 {
    (ms * 1e6) as u64
}

fn images(i: &Option<Vec<Value>>, field: &str) -> Result<(), ApiError> {
    match i {
        Some(v) if !v.is_empty() => Err(ApiError::field(
            field,
            "images are not supported by hearth's models",
        )),
        _ => Ok(()),
    }
}

pub async fn chat(call: Call) -> Response {
    call.run("/api/chat", chat_inner).await
}

async fn chat_inner(
    st: &Arc<AppState>,
    caller: &Caller,
    audit: &Audit,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(body)?;
    let format = super::format::ollama_format(&req.format)?;
    let offered = match &req.tools {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => tools::parse_tools(v, "tools")?,
    };
    // Ollama has no tool_choice: the model decides.
    let choice = tools::Choice::Auto;
    let calls = tools::constraint(&offered, &choice);
    let calling = calls.is_some();
    if calling && format.is_some() {
        return Err(ApiError::field(
            "format",
            "format cannot be combined with tools (the answer may be a call)",
        ));
    }
    let constraint = calls.or(format);
    for (i, m) in req.messages.iter().enumerate() {
        images(&m.images, &format!("messages[{i}].images"))?;
    }
    let keep = keep_alive(&req.keep_alive)?;
    if req.messages.is_empty() {
        // Ollama loads the model and answers at once.
        return load_only(st, caller, audit, &req.model, true, keep).await;
    }
    // Checked here so a bad option is a 400 before any model loads.
    let (_, n_ctx) = req.options.params(&Defaults::default())?;
    let options = &req.options;
    let params = |d: &Defaults| {
        options.params(d).map(|(mut p, _)| {
            p.constraint = constraint;
            p
        })
    };
    let turns = req
        .messages
        .into_iter()
        .map(|m| Turn {
            role: m.role,
            content: m.content,
            calls: m
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(|c| ToolCall {
                    id: tools::call_id(),
                    name: c.function.name,
                    arguments: match c.function.arguments {
                        Value::Null => json!({}),
                        v => v,
                    },
                })
                .collect(),
            call_id: None,
            name: m.tool_name,
        })
        .collect();
    let prompt = Prompt::Turns {
        turns,
        tools: offered,
        choice,
    };
    let opts = BeginOpts {
        n_ctx,
        keep_alive: keep,
    };
    let b = begin(st, caller, audit, &req.model, prompt, params, opts).await?;
    if calling {
        return respond_tools(b, audit.clone(), req.stream).await;
    }
    respond(b, audit.clone(), req.stream, true).await
}

pub async fn generate(call: Call) -> Response {
    call.run("/api/generate", generate_inner).await
}

async fn generate_inner(
    st: &Arc<AppState>,
    caller: &Caller,
    audit: &Audit,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: GenerateRequest = parse(body)?;
    let constraint = super::format::ollama_format(&req.format)?;
    images(&req.images, "images")?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::field(
            "suffix",
            "suffix (fill-in-the-middle) is not supported",
        ));
    }
    let keep = keep_alive(&req.keep_alive)?;
    if req.prompt.is_empty() {
        return load_only(st, caller, audit, &req.model, false, keep).await;
    }
    let (_, n_ctx) = req.options.params(&Defaults::default())?;
    let options = &req.options;
    let params = |d: &Defaults| {
        options.params(d).map(|(mut p, _)| {
            p.constraint = constraint;
            p
        })
    };
    let prompt = if req.raw {
        Prompt::Text(req.prompt)
    } else {
        let mut msgs = Vec::new();
        if let Some(s) = req.system {
            msgs.push(Message::new("system", s));
        }
        msgs.push(Message::new("user", req.prompt));
        Prompt::Chat(msgs)
    };
    let opts = BeginOpts {
        n_ctx,
        keep_alive: keep,
    };
    let b = begin(st, caller, audit, &req.model, prompt, params, opts).await?;
    respond(b, audit.clone(), req.stream, false).await
}

/// An empty request: load the model and say so, as Ollama does; with
/// `keep_alive` 0, unload it instead (once its requests end).
async fn load_only(
    st: &Arc<AppState>,
    caller: &Caller,
    audit: &Audit,
    model: &str,
    chat: bool,
    keep: Option<KeepAlive>,
) -> Result<Response, ApiError> {
    let name = permit_model(caller, model)?;
    audit.model(&name);
    let (name, reason) = if keep == Some(KeepAlive::For(std::time::Duration::ZERO)) {
        st.models.expire(&name);
        (name, "unload")
    } else {
        let m = st
            .models
            .chat_kept(&st.store, &st.config, &name, keep)
            .await?;
        (m.name.clone(), "load")
    };
    audit.ok();
    let mut v = json!({"model": name, "created_at": now(), "done": true, "done_reason": reason});
    if chat {
        v["message"] = json!({"role": "assistant", "content": ""});
    } else {
        v["response"] = json!("");
    }
    Ok(Json(v).into_response())
}

fn piece(model: &str, text: String, chat: bool) -> Value {
    let mut v = json!({"model": model, "created_at": now(), "done": false});
    if chat {
        v["message"] = json!({"role": "assistant", "content": text});
    } else {
        v["response"] = json!(text);
    }
    v
}

fn last(model: &str, text: String, chat: bool, s: &Summary, total_ms: f64) -> Value {
    let mut v = piece(model, text, chat);
    v["done"] = json!(true);
    v["done_reason"] = json!(s.reason.finish_reason());
    v["total_duration"] = json!(ns(total_ms));
    v["load_duration"] = json!(0);
    v["prompt_eval_count"] = json!(s.prompt_tokens);
    v["prompt_eval_duration"] = json!(ns(s.prefill_ms));
    v["eval_count"] = json!(s.completion_tokens);
    v["eval_duration"] = json!(ns(s.decode_ms));
    v
}

async fn respond(
    mut b: Begun,
    audit: Audit,
    stream_it: bool,
    chat: bool,
) -> Result<Response, ApiError> {
    let model = b.served.clone();
    if !stream_it {
        let out = collect(&mut b, &audit).await?;
        audit.ok();
        let total = audit.elapsed_ms();
        return Ok(Json(last(&model, out.text, chat, &out.summary, total)).into_response());
    }
    let state = (b, audit, false);
    let lines = stream::unfold(state, move |(mut b, audit, ended)| {
        let model = model.clone();
        async move {
            if ended {
                return None;
            }
            loop {
                let (v, end) = match b.events.recv().await {
                    Some(Event::Delta { text, .. }) if text.is_empty() => continue,
                    Some(Event::Delta { text, .. }) => (piece(&model, text, chat), false),
                    Some(Event::Done(s)) => {
                        audit.tokens(s.prompt_tokens, s.completion_tokens);
                        audit.ok();
                        (
                            last(&model, String::new(), chat, &s, audit.elapsed_ms()),
                            true,
                        )
                    }
                    Some(Event::Error(msg)) => {
                        audit.broke(&msg);
                        (json!({"error": msg}), true)
                    }
                    None => {
                        audit.broke("the model stopped before the generation ended");
                        (json!({"error": "the daemon is shutting down"}), true)
                    }
                };
                let mut line = v.to_string();
                line.push('\n');
                return Some((Ok::<_, Infallible>(Bytes::from(line)), (b, audit, end)));
            }
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|e| ApiError::internal(e.to_string()).into_ollama()))
}

/// `/api/chat` with tools: text streams as usual unless it may be a call,
/// which is held to the end and sent as `message.tool_calls` (arguments as
/// objects, Ollama's form).
async fn respond_tools(mut b: Begun, audit: Audit, stream_it: bool) -> Result<Response, ApiError> {
    let model = b.served.clone();
    let message = |content: Option<String>, calls: &[ToolCall]| {
        let mut m = json!({"role": "assistant", "content": content.unwrap_or_default()});
        if !calls.is_empty() {
            m["tool_calls"] = calls
                .iter()
                .map(|c| json!({"function": {"name": c.name, "arguments": c.arguments}}))
                .collect();
        }
        m
    };
    if !stream_it {
        let out = collect(&mut b, &audit).await?;
        audit.ok();
        let (content, calls) = tools::parse_output(&out.text);
        let mut v = last(
            &model,
            String::new(),
            true,
            &out.summary,
            audit.elapsed_ms(),
        );
        v["message"] = message(content, &calls);
        return Ok(Json(v).into_response());
    }
    struct S {
        b: Begun,
        audit: Audit,
        held: Option<String>,
        queue: Vec<Value>,
        ended: bool,
    }
    let s = S {
        b,
        audit,
        held: Some(String::new()),
        queue: Vec::new(),
        ended: false,
    };
    let lines = stream::unfold(s, move |mut s| {
        let model = model.clone();
        async move {
            loop {
                if !s.queue.is_empty() {
                    let mut line = s.queue.remove(0).to_string();
                    line.push('\n');
                    return Some((Ok::<_, Infallible>(Bytes::from(line)), s));
                }
                if s.ended {
                    return None;
                }
                match s.b.events.recv().await {
                    Some(Event::Delta { text, .. }) => {
                        let text = match &mut s.held {
                            Some(held) => {
                                held.push_str(&text);
                                if tools::may_be_call(held) {
                                    continue;
                                }
                                let t = std::mem::take(held);
                                s.held = None;
                                t
                            }
                            None => text,
                        };
                        if !text.is_empty() {
                            s.queue.push(piece(&model, text, true));
                        }
                    }
                    Some(Event::Done(sum)) => {
                        s.audit.tokens(sum.prompt_tokens, sum.completion_tokens);
                        s.audit.ok();
                        if let Some(held) = s.held.take() {
                            let (content, calls) = tools::parse_output(&held);
                            let mut v = piece(&model, String::new(), true);
                            v["message"] = message(content, &calls);
                            s.queue.push(v);
                        }
                        s.queue.push(last(
                            &model,
                            String::new(),
                            true,
                            &sum,
                            s.audit.elapsed_ms(),
                        ));
                        s.ended = true;
                    }
                    Some(Event::Error(msg)) => {
                        s.audit.broke(&msg);
                        s.queue.push(json!({"error": msg}));
                        s.ended = true;
                    }
                    None => {
                        s.audit
                            .broke("the model stopped before the generation ended");
                        s.queue
                            .push(json!({"error": "the daemon is shutting down"}));
                        s.ended = true;
                    }
                }
            }
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|e| ApiError::internal(e.to_string()).into_ollama()))
}

fn tag_entry(m: &hearth_store::Manifest, path: Option<&std::path::Path>) -> Value {
    let details = path.and_then(details_of);
    json!({
        "name": m.name,
        "model": m.name,
        "modified_at": m.created,
        "size": m.size,
        "digest": m.sha256_hex().unwrap_or_default(),
        "details": details,
    })
}

pub async fn tags(
    State(st): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Value>, OllamaError> {
    let ms = st.store.list().map_err(|e| store_error("", e))?;
    let models: Vec<Value> = ms
        .iter()
        .filter(|m| caller.may_use(&m.name))
        .map(|m| tag_entry(m, st.store.resolve(&m.name).ok().as_deref()))
        .collect();
    Ok(Json(json!({ "models": models })))
}

#[derive(Deserialize)]
pub struct NameRequest {
    #[serde(alias = "name")]
    model: String,
}

pub async fn show(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    OllamaBody(req): OllamaBody<NameRequest>,
) -> Result<Json<Value>, OllamaError> {
    let name = permit_model(&caller, &req.model)?;
    let path = st.store.resolve(&name).map_err(|e| store_error(&name, e))?;
    let m = st
        .store
        .list()
        .map_err(|e| store_error(&name, e))?
        .into_iter()
        .find(|m| m.name == name)
        .ok_or_else(|| ApiError::not_found(format!("model {name:?} not found")))?;
    if path.is_dir() {
        return Ok(Json(json!({
            "modelfile": "", "parameters": "", "template": "",
            "details": {"format": "safetensors", "family": "bert", "families": ["bert"]},
            "model_info": {}, "capabilities": ["embedding"], "modified_at": m.created,
        })));
    }
    let f = hearth_gguf::GgufFile::open(&path)
        .map_err(|e| ApiError::internal(format!("reading model {name:?}: {e}")))?;
    let mut info = serde_json::Map::new();
    for (k, v) in f.metadata() {
        // Vocabularies are huge and say nothing a client shows.
        if k.starts_with("tokenizer.ggml.") || k == "tokenizer.chat_template" {
            continue;
        }
        let jv = match (v.as_str(), v.as_u64(), v.as_i64(), v.as_f32(), v.as_bool()) {
            (Some(s), ..) => json!(s),
            (_, Some(u), ..) => json!(u),
            (_, _, Some(i), ..) => json!(i),
            (_, _, _, Some(x), _) => json!(x),
            (.., Some(b)) => json!(b),
            _ => continue,
        };
        info.insert(k.clone(), jv);
    }
    let template = f
        .get("tokenizer.chat_template")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    Ok(Json(json!({
        "modelfile": format!("FROM {}\n", m.name),
        "parameters": "",
        "template": template,
        "details": crate::models::details(&f),
        "model_info": info,
        "capabilities": ["completion"],
        "modified_at": m.created,
    })))
}

/// Ollama's fields for each loaded thing (`name`, `model`, `size`,
/// `size_vram`, `expires_at`, `details`), hearth's own beside them (`kind`,
/// `base`, estimated and measured bytes, requests), and a `hearth` object
/// with the budget and what is in use.
pub async fn ps(State(st): State<Arc<AppState>>, caller: Caller) -> Json<Value> {
    let rfc =
        |t: std::time::SystemTime| hearth_store::manifest::rfc3339_utc(crate::models::unix_secs(t));
    let chat_details: std::collections::HashMap<String, Value> = st
        .models
        .loaded()
        .iter()
        .map(|m| (m.name.clone(), json!(m.details)))
        .collect();
    let entries = st.models.entries();
    let models: Vec<Value> = entries
        .iter()
        .filter(|e| caller.may_use(&e.name))
        .map(|e| {
            let details = match e.kind {
                "base" => chat_details.get(&e.name).cloned().unwrap_or(Value::Null),
                "expert" => json!({"parent_model": e.base, "format": "lora", "kind": "expert"}),
                _ => json!({"format": "safetensors", "family": "bert", "families": ["bert"]}),
            };
            json!({
                "name": e.name,
                "model": e.name,
                "size": e.estimated,
                "digest": "",
                "details": details,
                "expires_at": e.expires_at.map(rfc),
                "size_vram": 0,
                "kind": e.kind,
                "base": e.base,
                "estimated_bytes": e.estimated,
                "resident_bytes": e.resident,
                "kv_bytes": e.kv,
                "file_bytes": e.size,
                "loaded_at": rfc(e.loaded_at),
                "running": e.running,
                "waiting": e.waiting,
                "in_use": e.in_use,
                "path": e.path,
            })
        })
        .collect();
    let used = st.models.gov.used();
    Json(json!({
        "models": models,
        "hearth": {
            "budget_bytes": st.models.gov.budget(),
            "used_bytes": used.total(),
            "used": used,
            "process_resident_bytes": governor::process_rss(),
        },
    }))
}

/// Deleting a model takes it from every app, so only hearth's own command
/// line (the admin token) may do it.
pub async fn delete(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    OllamaBody(req): OllamaBody<NameRequest>,
) -> Result<Response, OllamaError> {
    if !caller.admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "app {} may not delete models (use `hearth rm` on the device)",
                caller.app
            ),
        )
        .into());
    }
    let name = canonical(&req.model).to_string();
    st.models.unload(&name);
    st.store.remove(&name).map_err(|e| store_error(&name, e))?;
    Ok(StatusCode::OK.into_response())
}

pub async fn version(_caller: Caller) -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION") }))
}
