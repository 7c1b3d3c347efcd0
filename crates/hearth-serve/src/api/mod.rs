//! The HTTP surface: routes, the request id every request carries, and the
//! endpoints that are not an API family of their own (`/metrics`, `/health`).
//!
//! Handlers live with their API family (`openai`, `ollama`, the typed
//! `tasks`); what every
//! generation does is in `generation`; errors and body parsing in `error`
//! and `body`.

pub mod body;
pub mod embed;
pub mod error;
pub mod format;
pub mod generation;
pub mod ollama;
pub mod openai;
pub mod tasks;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tracing::Instrument;

use crate::audit::Audit;
use crate::auth::Caller;
use crate::state::AppState;
use error::ApiError;

/// The id of one request: the caller's `x-request-id` if it sent a sane one,
/// else a new one; echoed in the response and carried by every log line.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn new_request_id() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("req-{n:016x}")
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    resp
}

/// What every audited endpoint receives: the caller (already identified),
/// the request id and the body, read only after identity so that a caller
/// without one learns nothing from parse errors.
pub struct Call {
    st: Arc<AppState>,
    caller: Caller,
    rid: RequestId,
    body: axum::body::Bytes,
}

impl axum::extract::FromRequest<Arc<AppState>> for Call {
    type Rejection = Response;

    async fn from_request(req: Request, st: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        use axum::extract::FromRequestParts;
        let (mut parts, body) = req.into_parts();
        let caller = Caller::from_request_parts(&mut parts, st).await?;
        let rid = parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(new_request_id()));
        let ollama = is_ollama(parts.uri.path());
        let req = Request::from_parts(parts, body);
        let body = axum::body::Bytes::from_request(req, st)
            .await
            .map_err(|e| {
                let e = ApiError::new(e.status(), format!("could not read the request body: {e}"));
                render(e, ollama)
            })?;
        Ok(Call {
            st: st.clone(),
            caller,
            rid,
            body,
        })
    }
}

/// A handler's work: the shared state, the caller, the request's audit and
/// its body.
pub trait Handler:
    AsyncFnOnce(&Arc<AppState>, &Caller, &Audit, &[u8]) -> Result<Response, ApiError>
{
}
impl<F: AsyncFnOnce(&Arc<AppState>, &Caller, &Audit, &[u8]) -> Result<Response, ApiError>> Handler
    for F
{
}

impl Call {
    /// Run `f` under an audit row for `endpoint`; its error is rendered in
    /// the endpoint's API family's form.
    pub async fn run(self, endpoint: &'static str, f: impl Handler) -> Response {
        let audit = Audit::new(&self.st, &self.caller, endpoint, &self.rid.0);
        match f(&self.st, &self.caller, &audit, &self.body).await {
            Ok(r) => r,
            Err(e) => {
                audit.failed(&e);
                render(e, is_ollama(endpoint))
            }
        }
    }
}

/// Ollama's endpoints answer errors in Ollama's form.
pub fn is_ollama(path: &str) -> bool {
    path.starts_with("/api/")
}

pub fn render(e: ApiError, ollama: bool) -> Response {
    if ollama {
        e.into_ollama()
    } else {
        e.into_response()
    }
}

async fn metrics(State(st): State<Arc<AppState>>, _caller: Caller) -> Response {
    for (app, n) in st.limits.in_flight() {
        st.metrics.set(
            crate::metrics::Metric::InFlight,
            &[("app", &app)],
            f64::from(n),
        );
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

/// Liveness without identity, as Ollama's `GET /` answers.
async fn health() -> &'static str {
    "hearth is running"
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no endpoint {} {}", req.method(), req.uri().path()),
    )
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(health))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{id}", get(openai::get_model))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(embed::openai))
        .route("/v1/tasks/classify", post(tasks::classify))
        .route("/v1/tasks/summarize", post(tasks::summarize))
        .route("/v1/tasks/extract", post(tasks::extract))
        .route("/api/embed", post(embed::ollama))
        .route("/api/embeddings", post(embed::ollama_legacy))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/api/delete", delete(ollama::delete))
        .route("/api/version", get(ollama::version))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body::MAX_BODY))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}
