//! Per-app limits: requests in flight and tokens per minute.
//!
//! A request takes a [`Permit`] before it touches a model; the permit gives
//! its place back when dropped, however the request ends (finished, failed
//! or abandoned by its client). Tokens are counted when a request ends, over
//! a sliding minute.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::api::error::ApiError;
use crate::auth::Caller;

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
struct AppUse {
    in_flight: u32,
    /// (when, tokens) of requests that ended within the window.
    recent: VecDeque<(Instant, u64)>,
}

#[derive(Default)]
pub struct Limits {
    apps: Mutex<HashMap<String, AppUse>>,
}

pub struct Permit {
    limits: Arc<Limits>,
    app: String,
}

impl Limits {
    /// Admit one more request of `caller`, or say why not (429).
    pub fn acquire(self: &Arc<Self>, caller: &Caller) -> Result<Permit, ApiError> {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let u = apps.entry(caller.app.clone()).or_default();
        let now = Instant::now();
        while u
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
        {
            u.recent.pop_front();
        }
        if let Some(max) = caller.max_concurrent {
            if u.in_flight >= max {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "app {} already has {} requests in flight (its limit is {max})",
                        caller.app, u.in_flight
                    ),
                )
                .retry_after(1));
            }
        }
        if let Some(tpm) = caller.tokens_per_minute {
            let used: u64 = u.recent.iter().map(|(_, n)| n).sum();
            if used >= u64::from(tpm) {
                // Wait until enough of the window has passed to fall below the limit.
                let mut freed = used;
                let mut wait = WINDOW;
                for (t, n) in &u.recent {
                    freed -= n;
                    if freed < u64::from(tpm) {
                        wait = WINDOW.saturating_sub(now.duration_since(*t));
                        break;
                    }
                }
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "app {} used {used} tokens in the last minute (its limit is {tpm} per minute)",
                        caller.app
                    ),
                )
                .retry_after(wait.as_secs_f64().ceil() as u64));
            }
        }
        u.in_flight += 1;
        Ok(Permit {
            limits: self.clone(),
            app: caller.app.clone(),
        })
    }

    /// Requests in flight now, by app.
    pub fn in_flight(&self) -> Vec<(String, u32)> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.iter().map(|(k, v)| (k.clone(), v.in_flight)).collect()
    }
}

impl Permit {
    /// Count `tokens` against the app's minute.
    pub fn spend(&self, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let mut apps = self.limits.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.entry(self.app.clone())
            .or_default()
            .recent
            .push_back((Instant::now(), tokens));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut apps = self.limits.apps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = apps.get_mut(&self.app) {
            u.in_flight = u.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(max: Option<u32>, tpm: Option<u32>) -> Caller {
        Caller {
            app: "a".into(),
            models: None,
            max_concurrent: max,
            tokens_per_minute: tpm,
            priority: 0,
            admin: false,
        }
    }

    #[test]
    fn in_flight_limit_frees_on_drop() {
        let l = Arc::new(Limits::default());
        let c = caller(Some(1), None);
        let p = l.acquire(&c).unwrap();
        let e = l.acquire(&c).err().unwrap();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(e.retry_after.is_some());
        drop(p);
        assert!(l.acquire(&c).is_ok());
    }

    #[test]
    fn tokens_per_minute_limit() {
        let l = Arc::new(Limits::default());
        let c = caller(None, Some(100));
        let p = l.acquire(&c).unwrap();
        p.spend(60);
        drop(p);
        let p = l.acquire(&c).unwrap();
        p.spend(50);
        drop(p);
        let e = l.acquire(&c).err().unwrap();
        assert!(e.message.contains("110 tokens"), "{}", e.message);
        let wait = e.retry_after.unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
    }
}
