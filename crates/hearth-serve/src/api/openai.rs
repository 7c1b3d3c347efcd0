//! OpenAI-compatible endpoints: `/v1/models`, `/v1/chat/completions`,
//! `/v1/completions` (and `/v1/embeddings`, in `embed`), with SSE streaming.
//!
//! This module owns OpenAI's request and response shapes and their defaults
//! (temperature 1, top_p 1, no top-k or min-p, no length limit but the
//! context); the flow itself is `generation`'s.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use hearth_runtime::{SeqParams, Step};
use hearth_sample::SamplerConfig;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{from_value, parse};
use super::error::ApiError;
use super::generation::{begin, collect, token_text, BeginOpts, Begun, Prompt};
use super::Call;
use crate::audit::Audit;
use crate::auth::Caller;
use crate::experts::Defaults;
use crate::models::{store_error, unix_secs, ChatModel};
use crate::scheduler::Event;
use crate::state::AppState;
use crate::tools::{self, Call as ToolCall, Turn};

#[derive(Deserialize, Default)]
#[serde(untagged)]
pub enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The sampling and length fields both endpoints share.
#[derive(Deserialize)]
struct Common {
    model: String,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    #[serde(default)]
    stop: OneOrMany,
    n: Option<u32>,
    /// llama.cpp server extensions, for callers that want them.
    top_k: Option<u32>,
    min_p: Option<f32>,
    repeat_penalty: Option<f32>,
    /// Keep generating past end-of-generation tokens (they are banned), so
    /// that exactly `max_tokens` come; benchmarks use it.
    #[serde(default)]
    ignore_eos: bool,
}

impl Common {
    fn params(
        &self,
        logprobs: bool,
        top_logprobs: usize,
        d: &Defaults,
    ) -> Result<SeqParams, ApiError> {
        if let Some(n) = self.n {
            if n != 1 {
                return Err(ApiError::field("n", "only n = 1 is supported"));
            }
        }
        let stop = match &self.stop {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        };
        if stop.len() > 4 {
            return Err(ApiError::field("stop", "at most 4 stop sequences"));
        }
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::field(
                    "temperature",
                    "temperature must be between 0 and 2",
                ));
            }
        }
        if let Some(p) = self.top_p {
            if !(0.0..=1.0).contains(&p) {
                return Err(ApiError::field("top_p", "top_p must be between 0 and 1"));
            }
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if v.is_some_and(|v| !(-2.0..=2.0).contains(&v)) {
                return Err(ApiError::field(
                    name,
                    format!("{name} must be between -2 and 2"),
                ));
            }
        }
        let max = self
            .max_completion_tokens
            .or(self.max_tokens)
            .or(d.max_tokens);
        Ok(SeqParams {
            max_tokens: max.map_or(usize::MAX, |m| m as usize),
            sampler: SamplerConfig {
                temperature: self.temperature.or(d.temperature).unwrap_or(1.0),
                top_k: self.top_k.unwrap_or(0) as usize,
                top_p: self.top_p.or(d.top_p).unwrap_or(1.0),
                min_p: self.min_p.unwrap_or(0.0),
                repeat_penalty: self.repeat_penalty.unwrap_or(1.0),
                presence_penalty: self.presence_penalty.unwrap_or(0.0),
                frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
                seed: self.seed.map(|s| s as u64),
                ..SamplerConfig::default()
            },
            logprobs,
            top_logprobs,
            stop,
            ignore_eos: self.ignore_eos,
            ..SeqParams::default()
        })
    }

    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
    /// An assistant turn's calls (arguments as a JSON string, OpenAI's form).
    tool_calls: Option<Vec<ToolCallIn>>,
    /// A tool result's call.
    tool_call_id: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct ToolCallIn {
    id: Option<String>,
    function: FunctionCallIn,
}

#[derive(Deserialize)]
struct FunctionCallIn {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(default)]
    logprobs: bool,
    top_logprobs: Option<u32>,
    response_format: Option<Value>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CompletionPrompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Deserialize)]
struct CompletionRequest {
    prompt: CompletionPrompt,
    /// The number of top log-probabilities per token (legacy form).
    logprobs: Option<u32>,
    #[serde(default)]
    echo: bool,
    suffix: Option<String>,
    /// Not in OpenAI's legacy API, but llama.cpp's server takes it here too.
    response_format: Option<Value>,
}

fn messages(ms: Vec<ChatMessage>) -> Result<Vec<Turn>, ApiError> {
    ms.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut s = String::new();
                    for (j, p) in parts.into_iter().enumerate() {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => s.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::field(
                                    &format!("messages[{i}].content[{j}]"),
                                    format!(
                                        "content of type {kind:?} is not supported (text only)"
                                    ),
                                ))
                            }
                        }
                    }
                    s
                }
            };
            if !matches!(
                m.role.as_str(),
                "system" | "developer" | "user" | "assistant" | "tool"
            ) {
                return Err(ApiError::field(
                    &format!("messages[{i}].role"),
                    format!("unknown role {:?}", m.role),
                ));
            }
            // OpenAI's newer name for the system role.
            let role = if m.role == "developer" {
                "system".to_string()
            } else {
                m.role
            };
            let mut calls = Vec::new();
            for (j, c) in m.tool_calls.unwrap_or_default().into_iter().enumerate() {
                let field = format!("messages[{i}].tool_calls[{j}].function.arguments");
                let arguments: Value = if c.function.arguments.trim().is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(&c.function.arguments).map_err(|e| {
                        ApiError::field(&field, format!("`{field}` is not JSON: {e}"))
                    })?
                };
                calls.push(ToolCall {
                    id: c.id.unwrap_or_else(tools::call_id),
                    name: c.function.name,
                    arguments,
                });
            }
            Ok(Turn {
                role,
                content,
                calls,
                call_id: m.tool_call_id,
                name: m.name,
            })
        })
        .collect()
}

/// OpenAI's `tool_calls` of a response message (arguments as JSON text).
fn tool_calls_json(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .map(|c| {
            json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments.to_string()}})
        })
        .collect()
}

fn top_logprobs_arg(n: Option<u32>, field: &str) -> Result<usize, ApiError> {
    match n {
        Some(n) if n > 20 => Err(ApiError::field(
            field,
            format!("{field} must be at most 20"),
        )),
        Some(n) => Ok(n as usize),
        None => Ok(0),
    }
}

pub async fn chat_completions(call: Call) -> Response {
    call.run("/v1/chat/completions", chat_inner).await
}

async fn chat_inner(
    st: &Arc<AppState>,
    caller: &Caller,
    audit: &Audit,
    body: &[u8],
) -> Result<Response, ApiError> {
    let v: Value = parse(body)?;
    let common: Common = from_value(&v)?;
    let req: ChatRequest = from_value(&v)?;
    let format = super::format::response_format(&req.response_format)?;
    let offered = match &req.tools {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => tools::parse_tools(v, "tools")?,
    };
    let choice = tools::parse_choice(req.tool_choice.as_ref(), &offered)?;
    let calls = tools::constraint(&offered, &choice);
    let calling = calls.is_some();
    if calling && format.is_some() {
        return Err(ApiError::field(
            "response_format",
            "response_format cannot be combined with tools the model may call (use tool_choice \"none\" for a formatted answer)",
        ));
    }
    let constraint = calls.or(format);
    let top = top_logprobs_arg(req.top_logprobs, "top_logprobs")?;
    if top > 0 && !req.logprobs {
        return Err(ApiError::field(
            "top_logprobs",
            "top_logprobs needs logprobs: true",
        ));
    }
    let turns = messages(req.messages)?;
    let b = begin(
        st,
        caller,
        audit,
        &common.model,
        Prompt::Turns {
            turns,
            tools: offered,
            choice,
        },
        |d| {
            let mut p = common.params(req.logprobs, top, d)?;
            p.constraint = constraint;
            Ok(p)
        },
        BeginOpts::default(),
    )
    .await?;
    let kind = if calling { Kind::Tools } else { Kind::Chat };
    answer(b, audit, &common, kind, req.logprobs, top).await
}

pub async fn completions(call: Call) -> Response {
    call.run("/v1/completions", completions_inner).await
}

async fn completions_inner(
    st: &Arc<AppState>,
    caller: &Caller,
    audit: &Audit,
    body: &[u8],
) -> Result<Response, ApiError> {
    let v: Value = parse(body)?;
    let common: Common = from_value(&v)?;
    let req: CompletionRequest = from_value(&v)?;
    if req.echo {
        return Err(ApiError::field("echo", "echo is not supported"));
    }
    if req.suffix.is_some() {
        return Err(ApiError::field(
            "suffix",
            "suffix (fill-in-the-middle) is not supported",
        ));
    }
    let prompt = match req.prompt {
        CompletionPrompt::Text(t) => Prompt::Text(t),
        CompletionPrompt::Tokens(ids) => Prompt::Tokens(ids),
        CompletionPrompt::Texts(mut v) if v.len() == 1 => Prompt::Text(v.remove(0)),
        CompletionPrompt::TokenLists(mut v) if v.len() == 1 => Prompt::Tokens(v.remove(0)),
        _ => {
            return Err(ApiError::field(
                "prompt",
                "only one prompt per request is supported",
            ))
        }
    };
    let top = top_logprobs_arg(req.logprobs, "logprobs")?;
    let logprobs = req.logprobs.is_some();
    let constraint = super::format::response_format(&req.response_format)?;
    let params = |d: &Defaults| {
        let mut p = common.params(logprobs, top, d)?;
        p.constraint = constraint;
        Ok(p)
    };
    let b = begin(
        st,
        caller,
        audit,
        &common.model,
        prompt,
        params,
        BeginOpts::default(),
    )
    .await?;
    answer(b, audit, &common, Kind::Text, req.logprobs.is_some(), top).await
}

/// Stream the generation, or wait for it and answer with the whole object.
async fn answer(
    mut b: Begun,
    audit: &Audit,
    common: &Common,
    kind: Kind,
    logprobs: bool,
    top: usize,
) -> Result<Response, ApiError> {
    let prefix = match kind {
        Kind::Chat | Kind::Tools => "chatcmpl",
        Kind::Text => "cmpl",
    };
    let ctx = Ctx {
        id: format!("{prefix}-{}", audit_id()),
        created: unix_secs(std::time::SystemTime::now()),
        model: b.served.clone(),
        logprobs,
        top,
    };
    if common.stream {
        return Ok(sse(b, audit.clone(), ctx, kind, common.include_usage()));
    }
    let out = collect(&mut b, audit).await?;
    audit.ok();
    let reason = out.summary.reason.finish_reason();
    let choice = match kind {
        Kind::Chat => {
            let lp = logprobs.then(|| chat_logprobs(&b.model, &out.steps, top));
            json!({
                "index": 0,
                "message": {"role": "assistant", "content": out.text, "refusal": Value::Null},
                "logprobs": lp,
                "finish_reason": reason,
            })
        }
        Kind::Tools => {
            let lp = logprobs.then(|| chat_logprobs(&b.model, &out.steps, top));
            let (content, calls) = tools::parse_output(&out.text);
            let mut message =
                json!({"role": "assistant", "content": content, "refusal": Value::Null});
            let reason = if calls.is_empty() {
                reason
            } else {
                message["tool_calls"] = tool_calls_json(&calls);
                "tool_calls"
            };
            json!({"index": 0, "message": message, "logprobs": lp, "finish_reason": reason})
        }
        Kind::Text => {
            let lp = logprobs.then(|| text_logprobs(&b.model, &out.steps, top));
            json!({"index": 0, "text": out.text, "logprobs": lp, "finish_reason": reason})
        }
    };
    Ok(Json(json!({
        "id": ctx.id,
        "object": match kind { Kind::Chat | Kind::Tools => "chat.completion", Kind::Text => "text_completion" },
        "created": ctx.created,
        "model": ctx.model,
        "system_fingerprint": Value::Null,
        "choices": [choice],
        "usage": usage(out.summary.prompt_tokens, out.summary.completion_tokens),
    }))
    .into_response())
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// A short random id for response objects.
fn audit_id() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

struct Ctx {
    id: String,
    created: u64,
    model: String,
    logprobs: bool,
    top: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    /// A chat whose output may hold tool calls.
    Tools,
    Text,
}

/// `choices[].logprobs` of a chat completion.
fn chat_logprobs(m: &ChatModel, steps: &[Step], top: usize) -> Value {
    let content: Vec<Value> = steps
        .iter()
        .map(|s| {
            let (text, bytes) = token_text(m, s.token);
            let tops: Vec<Value> = s
                .top
                .iter()
                .take(top)
                .map(|t| {
                    let (tt, tb) = token_text(m, t.id);
                    json!({"token": tt, "logprob": t.logprob, "bytes": tb})
                })
                .collect();
            json!({"token": text, "logprob": s.logprob.unwrap_or(f32::NEG_INFINITY), "bytes": bytes, "top_logprobs": tops})
        })
        .collect();
    json!({ "content": content })
}

/// The legacy `logprobs` object of a text completion.
fn text_logprobs(m: &ChatModel, steps: &[Step], top: usize) -> Value {
    let mut tokens = Vec::new();
    let mut lps = Vec::new();
    let mut tops = Vec::new();
    let mut offsets = Vec::new();
    let mut offset = 0usize;
    for s in steps {
        let (text, _) = token_text(m, s.token);
        offsets.push(offset);
        offset += text.len();
        tokens.push(text);
        lps.push(s.logprob.unwrap_or(f32::NEG_INFINITY));
        let map: serde_json::Map<String, Value> = s
            .top
            .iter()
            .take(top)
            .map(|t| (token_text(m, t.id).0, json!(t.logprob)))
            .collect();
        tops.push(Value::Object(map));
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

/// Stream a generation as server-sent events, ending with `[DONE]`.
fn sse(b: Begun, audit: Audit, ctx: Ctx, kind: Kind, include_usage: bool) -> Response {
    struct S {
        b: Begun,
        audit: Audit,
        ctx: Ctx,
        kind: Kind,
        include_usage: bool,
        started: bool,
        queue: Vec<SseEvent>,
        ended: bool,
        /// Tools: text held back while it may still be a call; `None` once
        /// it is known to be plain text (and streams as content).
        held: Option<String>,
    }
    let s = S {
        held: (kind == Kind::Tools).then(String::new),
        b,
        audit,
        ctx,
        kind,
        include_usage,
        started: false,
        queue: Vec::new(),
        ended: false,
    };
    let chunk = |s: &S, choice: Value, usage: Option<Value>| -> SseEvent {
        let object = match s.kind {
            Kind::Chat | Kind::Tools => "chat.completion.chunk",
            Kind::Text => "text_completion",
        };
        let mut v = json!({
            "id": s.ctx.id, "object": object, "created": s.ctx.created,
            "model": s.ctx.model, "system_fingerprint": Value::Null,
            "choices": if choice.is_null() { json!([]) } else { json!([choice]) },
        });
        if s.include_usage {
            v["usage"] = usage.unwrap_or(Value::Null);
        }
        SseEvent::default().data(v.to_string())
    };
    let stream = stream::unfold(s, move |mut s| async move {
        loop {
            if !s.queue.is_empty() {
                let e = s.queue.remove(0);
                return Some((Ok::<_, Infallible>(e), s));
            }
            if s.ended {
                return None;
            }
            if s.kind != Kind::Text && !s.started {
                s.started = true;
                let c = json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": Value::Null, "finish_reason": Value::Null});
                s.queue.push(chunk(&s, c, None));
                continue;
            }
            match s.b.events.recv().await {
                Some(Event::Delta { mut text, steps }) => {
                    if let Some(held) = &mut s.held {
                        held.push_str(&text);
                        if tools::may_be_call(held) {
                            continue;
                        }
                        // Plain text after all: it streams from here on.
                        text = std::mem::take(held);
                        s.held = None;
                    }
                    if text.is_empty() && !s.ctx.logprobs {
                        continue;
                    }
                    let lp = s.ctx.logprobs.then(|| match s.kind {
                        Kind::Chat | Kind::Tools => chat_logprobs(&s.b.model, &steps, s.ctx.top),
                        Kind::Text => text_logprobs(&s.b.model, &steps, s.ctx.top),
                    });
                    let c = match s.kind {
                        Kind::Chat | Kind::Tools => {
                            json!({"index": 0, "delta": {"content": text}, "logprobs": lp, "finish_reason": Value::Null})
                        }
                        Kind::Text => {
                            json!({"index": 0, "text": text, "logprobs": lp, "finish_reason": Value::Null})
                        }
                    };
                    s.queue.push(chunk(&s, c, None));
                }
                Some(Event::Done(sum)) => {
                    s.audit.tokens(sum.prompt_tokens, sum.completion_tokens);
                    s.audit.ok();
                    let mut reason = sum.reason.finish_reason();
                    if let Some(held) = s.held.take() {
                        let (content, calls) = tools::parse_output(&held);
                        if let Some(text) = content {
                            let c = json!({"index": 0, "delta": {"content": text}, "logprobs": Value::Null, "finish_reason": Value::Null});
                            s.queue.push(chunk(&s, c, None));
                        }
                        // OpenAI's form: each call opens with its id and name,
                        // then its arguments follow.
                        for (i, call) in calls.iter().enumerate() {
                            let open = json!({"index": i, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}});
                            let args = json!({"index": i, "function": {"arguments": call.arguments.to_string()}});
                            for tc in [open, args] {
                                let c = json!({"index": 0, "delta": {"tool_calls": [tc]}, "logprobs": Value::Null, "finish_reason": Value::Null});
                                s.queue.push(chunk(&s, c, None));
                            }
                        }
                        if !calls.is_empty() {
                            reason = "tool_calls";
                        }
                    }
                    let c = match s.kind {
                        Kind::Chat | Kind::Tools => {
                            json!({"index": 0, "delta": {}, "logprobs": Value::Null, "finish_reason": reason})
                        }
                        Kind::Text => {
                            json!({"index": 0, "text": "", "logprobs": Value::Null, "finish_reason": reason})
                        }
                    };
                    s.queue.push(chunk(&s, c, None));
                    if s.include_usage {
                        let u = usage(sum.prompt_tokens, sum.completion_tokens);
                        s.queue.push(chunk(&s, Value::Null, Some(u)));
                    }
                    s.queue.push(SseEvent::default().data("[DONE]"));
                    s.ended = true;
                }
                Some(Event::Error(msg)) => {
                    s.audit.broke(&msg);
                    let v = json!({"error": {"message": msg, "type": "server_error", "param": Value::Null, "code": Value::Null}});
                    s.queue.push(SseEvent::default().data(v.to_string()));
                    s.ended = true;
                }
                None => {
                    s.audit
                        .broke("the model stopped before the generation ended");
                    let v = json!({"error": {"message": "the daemon is shutting down", "type": "server_error", "param": Value::Null, "code": Value::Null}});
                    s.queue.push(SseEvent::default().data(v.to_string()));
                    s.ended = true;
                }
            }
        }
    });
    sse_response(stream)
}

fn sse_response(
    stream: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The models this caller may use, from the store.
pub async fn list_models(
    State(st): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let ms = st.store.list().map_err(|e| store_error("", e))?;
    let data: Vec<Value> = ms
        .into_iter()
        .filter(|m| caller.may_use(&m.name))
        .map(|m| json!({"id": m.name, "object": "model", "created": created_secs(&m.created), "owned_by": "hearth"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

pub async fn get_model(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ms = st.store.list().map_err(|e| store_error(&id, e))?;
    let name = crate::models::canonical(&id);
    ms.into_iter()
        .find(|m| m.name == name && caller.may_use(&m.name))
        .map(|m| Json(json!({"id": m.name, "object": "model", "created": created_secs(&m.created), "owned_by": "hearth"})))
        .ok_or_else(|| ApiError::not_found(format!("model {id:?} not found")))
}

/// Unix seconds of an RFC 3339 UTC time written by the store (0 if unreadable).
fn created_secs(rfc: &str) -> u64 {
    let p = |r: std::ops::Range<usize>| rfc.get(r).and_then(|s| s.parse::<i64>().ok());
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) =
        (p(0..4), p(5..7), p(8..10), p(11..13), p(14..16), p(17..19))
    else {
        return 0;
    };
    // Days from civil date (the inverse of the store's formatter).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + h * 3600 + mi * 60 + s).max(0) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn created_round_trips() {
        for t in [0u64, 951_782_400, 1_700_000_000, 4_107_542_400] {
            let s = hearth_store::manifest::rfc3339_utc(t);
            assert_eq!(super::created_secs(&s), t, "{s}");
        }
        assert_eq!(super::created_secs("garbage"), 0);
    }
}
