//! One audit row per request that got past identity: app, model, endpoint,
//! tokens in and out, latency and outcome, never the prompt or the answer.
//!
//! A request's [`Audit`] is shared between the handler and, for streams, the
//! response body; the row is written when the last holder lets go, so a
//! stream abandoned by its client is recorded as `cancelled` with the tokens
//! it had produced. Dropping the audit also releases the app's in-flight
//! place and counts its tokens against the app's minute.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use hearth_store::state::AuditRow;

use crate::api::error::ApiError;
use crate::auth::Caller;
use crate::limits::Permit;
use crate::metrics::Metric;
use crate::state::AppState;

struct Inner {
    state: Arc<AppState>,
    request_id: String,
    app: String,
    model: String,
    endpoint: &'static str,
    started: Instant,
    tokens_in: u64,
    tokens_out: u64,
    status: u16,
    outcome: Option<String>,
    permit: Option<Permit>,
}

#[derive(Clone)]
pub struct Audit(Arc<Mutex<Inner>>);

impl Audit {
    pub fn new(
        state: &Arc<AppState>,
        caller: &Caller,
        endpoint: &'static str,
        request_id: &str,
    ) -> Audit {
        Audit(Arc::new(Mutex::new(Inner {
            state: state.clone(),
            request_id: request_id.to_string(),
            app: caller.app.clone(),
            model: String::new(),
            endpoint,
            started: Instant::now(),
            tokens_in: 0,
            tokens_out: 0,
            status: 200,
            outcome: None,
            permit: None,
        })))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub fn model(&self, model: &str) {
        self.with(|i| i.model = model.to_string());
    }

    pub fn hold(&self, permit: Permit) {
        self.with(|i| i.permit = Some(permit));
    }

    pub fn tokens(&self, tokens_in: usize, tokens_out: usize) {
        self.with(|i| {
            i.tokens_in = tokens_in as u64;
            i.tokens_out = tokens_out as u64;
        });
    }

    pub fn ok(&self) {
        self.with(|i| {
            i.status = 200;
            i.outcome = Some("ok".into());
        });
    }

    pub fn failed(&self, e: &ApiError) {
        self.with(|i| {
            i.status = e.status.as_u16();
            i.outcome = Some(format!("error: {}", e.message));
        });
    }

    /// The request broke off after its status was sent (a failed stream).
    pub fn broke(&self, why: &str) {
        self.with(|i| i.outcome = Some(format!("error: {why}")));
    }

    pub fn elapsed_ms(&self) -> f64 {
        self.with(|i| i.started.elapsed().as_secs_f64() * 1e3)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| "cancelled".into());
        let latency_ms = self.started.elapsed().as_secs_f64() * 1e3;
        if let Some(p) = &self.permit {
            p.spend(self.tokens_in + self.tokens_out);
        }
        let status = self.status.to_string();
        let m = &self.state.metrics;
        m.add(
            Metric::Requests,
            &[
                ("app", &self.app),
                ("model", &self.model),
                ("endpoint", self.endpoint),
                ("status", &status),
            ],
            1.0,
        );
        for (kind, n) in [("prompt", self.tokens_in), ("completion", self.tokens_out)] {
            if n > 0 {
                m.add(
                    Metric::Tokens,
                    &[("app", &self.app), ("model", &self.model), ("kind", kind)],
                    n as f64,
                );
            }
        }
        tracing::info!(
            request_id = %self.request_id,
            app = %self.app,
            model = %self.model,
            endpoint = self.endpoint,
            status = self.status,
            tokens_in = self.tokens_in,
            tokens_out = self.tokens_out,
            latency_ms = format!("{latency_ms:.1}"),
            outcome = %outcome,
            "request"
        );
        let row = AuditRow {
            request_id: self.request_id.clone(),
            time: hearth_store::manifest::now_rfc3339(),
            app: self.app.clone(),
            model: self.model.clone(),
            endpoint: self.endpoint.to_string(),
            tokens_in: self.tokens_in,
            tokens_out: self.tokens_out,
            latency_ms,
            status: self.status,
            outcome,
        };
        if let Err(e) = self.state.with_db(|db| db.record_request(&row)) {
            tracing::error!(request_id = %self.request_id, "could not write the audit row: {e}");
        }
    }
}
