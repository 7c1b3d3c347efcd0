//! Who is calling: every request is attributed to an app before any handler
//! runs.
//!
//! On TCP the caller shows a bearer token; on the Unix socket a token too,
//! or else the peer's uid (`SO_PEERCRED`) is looked up among the apps. The
//! daemon also writes an admin token into its home (readable only by its
//! owner) for hearth's own command line (`hearth ps`). Without any of these,
//! the caller is the restricted `anonymous` app when `--allow-anonymous` is
//! on, and is refused with 401 otherwise.
//!
//! This module owns identity only; what an app may do is checked where the
//! model is known (`api::generation`) and by `limits`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::serve::IncomingStream;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, UnixListener};

use crate::api::error::ApiError;
use crate::state::AppState;

/// Where a connection came from.
#[derive(Clone, Debug)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix { uid: Option<u32> },
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer::Tcp(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Peer::Unix {
            uid: stream.io().peer_cred().ok().map(|c| c.uid()),
        }
    }
}

/// What a caller is allowed, as the daemon sees it for one request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub app: String,
    /// Models it may use; `None` is all.
    pub models: Option<Vec<String>>,
    pub max_concurrent: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub priority: i32,
    /// hearth's own command line: may also delete models and see every app.
    pub admin: bool,
}

impl Caller {
    pub fn may_use(&self, model: &str) -> bool {
        self.admin
            || self
                .models
                .as_ref()
                .is_none_or(|ms| ms.iter().any(|m| m == model))
    }

    fn from_app(a: hearth_store::state::App) -> Caller {
        Caller {
            app: a.name,
            models: a.models,
            max_concurrent: a.max_concurrent,
            tokens_per_minute: a.tokens_per_minute,
            priority: a.priority,
            admin: false,
        }
    }
}

pub const ADMIN_APP: &str = "hearth-admin";
pub const ANONYMOUS_APP: &str = "anonymous";

/// Constant-time comparison of two secrets' digests, so the time a wrong
/// token takes tells nothing about the right one.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (da, db) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn bearer(parts: &Parts) -> Result<Option<String>, ApiError> {
    let Some(v) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not valid text"))?;
    let token = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?
        .trim();
    Ok((!token.is_empty()).then(|| token.to_string()))
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, msg)
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let ollama = crate::api::is_ollama(parts.uri.path());
        identify(parts, state).map_err(|e| crate::api::render(e, ollama))
    }
}

fn identify(parts: &Parts, state: &Arc<AppState>) -> Result<Caller, ApiError> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0.clone());
    if let Some(token) = bearer(parts)? {
        if same_secret(&token, &state.admin_token) {
            return Ok(state.admin_caller());
        }
        let app = state
            .with_db(|db| db.app_for_token(&token))
            .map_err(|e| ApiError::internal(format!("reading the app table: {e}")))?;
        return match app {
            Some(a) => Ok(Caller::from_app(a)),
            None => Err(unauthorized(
                "the token is not valid for any app (create one with `hearth app add NAME`)",
            )),
        };
    }
    if let Some(Peer::Unix { uid: Some(uid) }) = peer {
        let app = state
            .with_db(|db| db.app_for_uid(uid))
            .map_err(|e| ApiError::internal(format!("reading the app table: {e}")))?;
        if let Some(a) = app {
            return Ok(Caller::from_app(a));
        }
    }
    if state.config.allow_anonymous {
        return Ok(state.anonymous_caller());
    }
    Err(unauthorized(
        "no identity: send `Authorization: Bearer <token>` with an app's token (`hearth app add NAME` prints one)",
    ))
}
