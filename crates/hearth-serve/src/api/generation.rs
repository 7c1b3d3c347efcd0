//! The path every generation request takes, whatever its API: check the
//! app may use the model and has room under its limits, load the model,
//! turn the prompt into tokens, start a sequence and hand it to the model's
//! scheduler. The OpenAI and Ollama handlers differ only in the JSON around
//! this.

use std::sync::Arc;

use axum::http::StatusCode;
use hearth_runtime::{Message, Runtime, SeqParams, Step, StopReason};
use tokio::sync::mpsc;

use super::error::ApiError;
use crate::audit::Audit;
use crate::auth::Caller;
use crate::experts::{self, Defaults};
use crate::governor::KeepAlive;
use crate::models::{canonical, ChatModel};
use crate::scheduler::{Event, Job, SubmitError, Summary};
use crate::state::AppState;
use crate::tools::{Choice, Function, Turn};

pub enum Prompt {
    /// Rendered through the model's chat template, with the generation prompt.
    Chat(Vec<Message>),
    /// Raw text: BOS added where the model adds one, special tokens parsed.
    Text(String),
    /// Token ids as given.
    Tokens(Vec<u32>),
    /// A conversation with tool calls and results, and the tools offered
    /// (rendered as `crate::tools` says).
    Turns {
        turns: Vec<Turn>,
        tools: Vec<Function>,
        choice: Choice,
    },
}

pub struct Begun {
    pub model: Arc<ChatModel>,
    /// The name responses carry: the expert that served, or the model.
    pub served: String,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub prompt_tokens: usize,
}

/// Check the caller may use `model`, returning its canonical name.
pub fn permit_model(caller: &Caller, model: &str) -> Result<String, ApiError> {
    let name = canonical(model).to_string();
    if name.is_empty() {
        return Err(ApiError::field("model", "`model` is required"));
    }
    if !caller.may_use(&name) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("app {} may not use model {name:?}", caller.app),
        ));
    }
    Ok(name)
}

/// What a request may say beyond its prompt and sampling.
#[derive(Clone, Copy, Debug, Default)]
pub struct BeginOpts {
    /// The context it asks for (the daemon's default otherwise).
    pub n_ctx: Option<usize>,
    /// How long its model stays loaded once idle (Ollama's `keep_alive`).
    pub keep_alive: Option<KeepAlive>,
}

/// Start a generation. `params` builds the request's settings over the
/// defaults of the expert that serves it (none for a plain model).
pub async fn begin(
    st: &Arc<AppState>,
    caller: &Caller,
    audit: &Audit,
    model: &str,
    prompt: Prompt,
    params: impl FnOnce(&Defaults) -> Result<SeqParams, ApiError>,
    opts: BeginOpts,
) -> Result<Begun, ApiError> {
    begin_with(st, caller, audit, model, prompt, |d, _| params(d), opts).await
}

/// [`begin`] for requests whose settings need the model that serves them
/// (a classification's labels are tokenised by it).
pub async fn begin_with(
    st: &Arc<AppState>,
    caller: &Caller,
    audit: &Audit,
    model: &str,
    prompt: Prompt,
    params: impl FnOnce(&Defaults, &Runtime) -> Result<SeqParams, ApiError>,
    opts: BeginOpts,
) -> Result<Begun, ApiError> {
    let BeginOpts { n_ctx, keep_alive } = opts;
    let request = match &prompt {
        Prompt::Chat(ms) => ms
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.clone()),
        Prompt::Text(t) => Some(t.clone()),
        Prompt::Tokens(_) => None,
        Prompt::Turns { turns, .. } => turns
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.clone()),
    };
    let served = experts::resolve(st, caller, model, request.as_deref()).await?;
    audit.model(&served.name);
    audit.hold(st.limits.acquire(caller)?);
    let m = st
        .models
        .chat_kept(&st.store, &st.config, &served.base, keep_alive)
        .await?;
    let mut params = params(&served.defaults, &m.rt)?;
    params.adapter = experts::adapter(st, &served, &m, keep_alive).await?;
    let ids = match prompt {
        Prompt::Chat(mut messages) => {
            if messages.is_empty() {
                return Err(ApiError::field("messages", "`messages` is empty"));
            }
            if let Some(system) = &served.defaults.system {
                if !messages.iter().any(|m| m.role == "system") {
                    messages.insert(0, Message::new("system", system));
                }
            }
            m.rt.chat_prompt(&messages)?
        }
        Prompt::Turns {
            mut turns,
            tools,
            choice,
        } => {
            if turns.is_empty() {
                return Err(ApiError::field("messages", "`messages` is empty"));
            }
            if let Some(system) = &served.defaults.system {
                if !turns.iter().any(|m| m.role == "system") {
                    turns.insert(0, Turn::plain("system", system));
                }
            }
            crate::tools::prompt_ids(&m.rt, &turns, &tools, &choice)?
        }
        Prompt::Text(text) => m.rt.tokenize(&text, true, true)?,
        Prompt::Tokens(ids) => ids,
    };
    let n_ctx = Some(n_ctx.unwrap_or(st.config.default_ctx));
    let seq = m.rt.start(ids, params, n_ctx)?;
    // The positions this sequence can reach: its prompt and every token it
    // may generate, never past its context.
    let reach = seq
        .prompt()
        .len()
        .saturating_add(seq.params().max_tokens)
        .min(seq.cache().n_ctx());
    let pinned = m.estimate.total() + seq.adapter().map_or(0, |a| a.bytes() as u64);
    let kv = st.models.reserve_kv(&m, reach, pinned).await?;
    let prompt_tokens = seq.prompt().len();
    audit.tokens(prompt_tokens, 0);
    let (tx, rx) = mpsc::unbounded_channel();
    let job = Job {
        app: caller.app.clone(),
        priority: caller.priority,
        seq,
        events: tx,
        arrived: std::time::Instant::now(),
        kv: Some(kv),
    };
    m.sched.submit(job, &served.base).map_err(|e| match e {
        SubmitError::QueueFull { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).retry_after(1)
        }
        SubmitError::Closed(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    })?;
    Ok(Begun {
        model: m,
        served: served.name,
        events: rx,
        prompt_tokens,
    })
}

/// A whole generation, for non-streaming responses.
pub struct Collected {
    pub text: String,
    pub steps: Vec<Step>,
    pub summary: Summary,
}

pub async fn collect(b: &mut Begun, audit: &Audit) -> Result<Collected, ApiError> {
    let mut text = String::new();
    let mut steps = Vec::new();
    while let Some(ev) = b.events.recv().await {
        match ev {
            Event::Delta { text: t, steps: s } => {
                text.push_str(&t);
                steps.extend(s);
            }
            Event::Done(summary) => {
                audit.tokens(summary.prompt_tokens, summary.completion_tokens);
                return Ok(Collected {
                    text,
                    steps,
                    summary,
                });
            }
            Event::Error(e) => return Err(ApiError::internal(e)),
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the model stopped before the generation ended (the daemon is shutting down)",
    ))
}

/// The text of a token for logprobs: its bytes as UTF-8 where they are.
pub fn token_text(m: &ChatModel, id: u32) -> (String, Vec<u8>) {
    let bytes = m.rt.tokenizer.piece(id, true).to_vec();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// Ollama's and OpenAI's name for why a generation ended.
pub fn finish_reason(r: StopReason) -> &'static str {
    r.finish_reason()
}
