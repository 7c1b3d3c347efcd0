//! Typed tasks over HTTP: `POST /v1/tasks/classify`, `/v1/tasks/summarize`
//! and `/v1/tasks/extract`.
//!
//! This module owns the tasks' request and response shapes. The prompts and
//! the arithmetic are `hearth_runtime::tasks`' (shared with the command
//! line); the path every request takes (the app's permission on the model,
//! its limits, its audit row, the expert's adapter, the scheduler) is
//! `generation`'s, so a task is accounted exactly as a chat is.
//!
//! `model` or `expert` names what serves the task (either field; `expert`
//! wins when both are given); with neither, the router chooses (`auto`) by
//! the task's text.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_runtime::tasks::{self, Classification, WordLimit};
use hearth_runtime::{ConstraintSpec, Message, SeqParams};
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::parse;
use super::error::ApiError;
use super::generation::{begin, begin_with, collect, BeginOpts, Begun, Prompt};
use super::Call;
use crate::audit::Audit;
use crate::auth::Caller;
use crate::experts::AUTO;
use crate::scheduler::Event;
use crate::state::AppState;

/// The most words a summary may be asked for; longer "summaries" are
/// generations and belong on the chat endpoint.
const MAX_SUMMARY_WORDS: usize = 2000;

fn served_by(model: &Option<String>, expert: &Option<String>) -> String {
    expert
        .clone()
        .or_else(|| model.clone())
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| AUTO.to_string())
}

fn need_text(text: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::field("text", "`text` is empty"));
    }
    Ok(())
}

/// Starts a generating task (summary, extraction): the tasks' own sampler,
/// the given output limit and constraint, the defaults of everything else.
#[allow(clippy::too_many_arguments)]
async fn begin_task(
    st: &Arc<AppState>,
    caller: &Caller,
    audit: &Audit,
    model: &str,
    messages: Vec<Message>,
    max_tokens: usize,
    constraint: Option<ConstraintSpec>,
) -> Result<Begun, ApiError> {
    let params = |_: &_| {
        Ok(SeqParams {
            max_tokens,
            sampler: tasks::task_sampler(),
            constraint,
            ..SeqParams::default()
        })
    };
    let prompt = Prompt::Chat(messages);
    begin(
        st,
        caller,
        audit,
        model,
        prompt,
        params,
        BeginOpts::default(),
    )
    .await
}

#[derive(Deserialize)]
struct ClassifyRequest {
    labels: Vec<String>,
    text: String,
    model: Option<String>,
    expert: Option<String>,
}

pub async fn classify(call: Call) -> Response {
    call.run("/v1/tasks/classify", classify_inner).await
}

async fn classify_inner(
    st: &Arc<AppState>,
    caller: &Caller,
    audit: &Audit,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: ClassifyRequest = parse(body)?;
    tasks::check_labels(&req.labels).map_err(|m| ApiError::field("labels", m))?;
    need_text(&req.text)?;
    let model = served_by(&req.model, &req.expert);
    let mut cands: Vec<Vec<u32>> = Vec::new();
    let labels = &req.labels;
    let mut b = begin_with(
        st,
        caller,
        audit,
        &model,
        Prompt::Chat(tasks::classify_messages(labels, &req.text)),
        |_, rt| {
            cands = labels.iter().map(|l| rt.label_tokens(l)).collect();
            Ok(SeqParams {
                score: cands.clone(),
                ..SeqParams::default()
            })
        },
        BeginOpts::default(),
    )
    .await?;
    let out = collect(&mut b, audit).await?;
    let ll = tasks::sum_steps(&cands, &out.steps)?;
    let counts: Vec<usize> = cands.iter().map(Vec::len).collect();
    let c = Classification::new(labels, &ll, &counts);
    audit.ok();
    Ok(Json(json!({
        "object": "classification",
        "model": b.served,
        "label": c.label,
        "labels": c.labels,
        "usage": {"prompt_tokens": b.prompt_tokens, "scored_tokens": counts.iter().sum::<usize>()},
    }))
    .into_response())
}

#[derive(Deserialize)]
struct SummarizeRequest {
    text: String,
    max_words: usize,
    model: Option<String>,
    expert: Option<String>,
}

pub async fn summarize(call: Call) -> Response {
    call.run("/v1/tasks/summarize", summarize_inner).await
}

async fn summarize_inner(
    st: &Arc<AppState>,
    caller: &Caller,
    audit: &Audit,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: SummarizeRequest = parse(body)?;
    need_text(&req.text)?;
    if req.max_words == 0 || req.max_words > MAX_SUMMARY_WORDS {
        return Err(ApiError::field(
            "max_words",
            format!("`max_words` must be between 1 and {MAX_SUMMARY_WORDS}"),
        ));
    }
    let model = served_by(&req.model, &req.expert);
    let messages = tasks::summarize_messages(&req.text, req.max_words);
    let max_tokens = tasks::summary_max_tokens(req.max_words);
    let b = begin_task(st, caller, audit, &model, messages, max_tokens, None).await?;
    let (served, prompt_tokens) = (b.served.clone(), b.prompt_tokens);
    let mut events = b.events;
    let mut limit = WordLimit::new(req.max_words);
    let mut tokens = 0usize;
    let reason = loop {
        match events.recv().await {
            Some(Event::Delta { text, steps }) => {
                tokens += steps.len();
                if limit.push(&text) {
                    // Dropping the receiver ends the sequence at the next pass.
                    break "max_words";
                }
            }
            Some(Event::Done(s)) => break s.reason.finish_reason(),
            Some(Event::Error(e)) => return Err(ApiError::internal(e)),
            None => {
                return Err(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "the model stopped before the summary ended (the daemon is shutting down)",
                ))
            }
        }
    };
    drop(events);
    audit.tokens(prompt_tokens, tokens);
    audit.ok();
    let summary = limit.text();
    Ok(Json(json!({
        "object": "summary",
        "model": served,
        "summary": summary,
        "words": summary.split_whitespace().count(),
        "max_words": req.max_words,
        "finish_reason": reason,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens},
    }))
    .into_response())
}

#[derive(Deserialize)]
struct ExtractRequest {
    schema: Value,
    text: String,
    model: Option<String>,
    expert: Option<String>,
    /// Most tokens of output (default 512).
    max_tokens: Option<usize>,
}

pub async fn extract(call: Call) -> Response {
    call.run("/v1/tasks/extract", extract_inner).await
}

async fn extract_inner(
    st: &Arc<AppState>,
    caller: &Caller,
    audit: &Audit,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: ExtractRequest = parse(body)?;
    need_text(&req.text)?;
    if !req.schema.is_object() {
        return Err(ApiError::field(
            "schema",
            "`schema` must be a JSON schema object",
        ));
    }
    let spec = ConstraintSpec::JsonSchema(req.schema.clone());
    spec.check()
        .map_err(|e| ApiError::field("schema", format!("the schema is not supported: {e}")))?;
    let max_tokens = req.max_tokens.unwrap_or(tasks::EXTRACT_MAX_TOKENS);
    if max_tokens == 0 {
        return Err(ApiError::field(
            "max_tokens",
            "`max_tokens` must be at least 1",
        ));
    }
    let model = served_by(&req.model, &req.expert);
    let messages = tasks::extract_messages(&req.schema, &req.text);
    let mut b = begin_task(st, caller, audit, &model, messages, max_tokens, Some(spec)).await?;
    let out = collect(&mut b, audit).await?;
    let reason = out.summary.reason.finish_reason();
    // The constraint makes complete output valid; output cut by the token
    // limit is not complete, and is an error rather than half an object.
    let object: Value = serde_json::from_str(out.text.trim()).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the output ended ({reason}) before the object was complete ({e}); raise max_tokens"
            ),
        )
    })?;
    audit.ok();
    Ok(Json(json!({
        "object": "extraction",
        "model": b.served,
        "data": object,
        "finish_reason": reason,
        "usage": {"prompt_tokens": out.summary.prompt_tokens, "completion_tokens": out.summary.completion_tokens},
    }))
    .into_response())
}
