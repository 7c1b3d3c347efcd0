//! What every handler shares: settings, the store and its database, the
//! loaded models, limits and metrics.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use hearth_store::state::StateDb;
use hearth_store::Store;

use crate::auth::{Caller, ADMIN_APP, ANONYMOUS_APP};
use crate::config::ServeConfig;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::models::Models;
use crate::router::Router;

pub struct AppState {
    pub config: ServeConfig,
    pub store: Store,
    db: Mutex<StateDb>,
    pub models: Models,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    pub admin_token: String,
    pub started: Instant,
    /// The router of `auto`, with the experts (name, created) it was built on.
    pub router: RouterCache,
}

pub type RouterCache = tokio::sync::Mutex<Option<(Vec<(String, String)>, Arc<Router>)>>;

impl AppState {
    pub fn new(config: ServeConfig, store: Store, db: StateDb, admin_token: String) -> AppState {
        let metrics = Arc::new(Metrics::default());
        AppState {
            models: Models::new(metrics.clone(), &config),
            config,
            store,
            db: Mutex::new(db),
            metrics,
            limits: Arc::new(Limits::default()),
            admin_token,
            started: Instant::now(),
            router: tokio::sync::Mutex::new(None),
        }
    }

    /// Run `f` on the database. Calls are short (one indexed lookup or one
    /// insert), so they run inline rather than on a blocking thread.
    pub fn with_db<T>(
        &self,
        f: impl FnOnce(&StateDb) -> hearth_store::Result<T>,
    ) -> hearth_store::Result<T> {
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        f(&db)
    }

    pub fn admin_caller(&self) -> Caller {
        Caller {
            app: ADMIN_APP.to_string(),
            models: None,
            max_concurrent: None,
            tokens_per_minute: None,
            priority: 0,
            admin: true,
        }
    }

    /// The app unauthenticated callers become with `--allow-anonymous`:
    /// lowest priority, a few requests at a time, and only the models the
    /// configuration names (all when it names none).
    pub fn anonymous_caller(&self) -> Caller {
        let models = &self.config.anonymous_models;
        Caller {
            app: ANONYMOUS_APP.to_string(),
            models: (!models.is_empty()).then(|| models.clone()),
            max_concurrent: Some(4),
            tokens_per_minute: None,
            priority: -1,
            admin: false,
        }
    }
}
