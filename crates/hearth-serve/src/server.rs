//! Starting and stopping the daemon: one per home (an exclusive lock), the
//! TCP and Unix-socket listeners, the admin token for hearth's own command
//! line, and a graceful end on SIGTERM or Ctrl-C.
//!
//! On a signal the listeners stop accepting, requests in flight (streams
//! included) get `shutdown_grace_secs` to finish, and the process exits 0.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hearth_store::state::StateDb;
use hearth_store::{Home, Store};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::auth::Peer;
use crate::config::ServeConfig;
use crate::state::AppState;

/// What a running daemon tells hearth's command line about itself
/// (`<home>/serve.json`).
#[derive(Debug, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub url: String,
    pub socket: Option<PathBuf>,
}

pub fn info_path(home: &Path) -> PathBuf {
    home.join("serve.json")
}

pub fn admin_token_path(home: &Path) -> PathBuf {
    home.join("admin-token")
}

fn lock_path(home: &Path) -> PathBuf {
    home.join("serve.lock")
}

/// Take the home's daemon lock, or say who holds it.
fn take_lock(home: &Path) -> Result<File> {
    let path = lock_path(home);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(TryLockError::WouldBlock) => {
            let who = fs::read_to_string(info_path(home))
                .ok()
                .and_then(|t| serde_json::from_str::<DaemonInfo>(&t).ok())
                .map(|i| format!(" (pid {}, {})", i.pid, i.url))
                .unwrap_or_default();
            bail!(
                "another hearth serve is already running on the home {}{who}; stop it first or use another HEARTH_HOME",
                home.display()
            )
        }
        Err(TryLockError::Error(e)) => Err(anyhow!("locking {}: {e}", path.display())),
    }
}

/// Write a file readable by its owner only, by rename so no reader sees half.
fn write_private(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Run the daemon until SIGTERM or Ctrl-C. Blocks.
pub fn serve(config: ServeConfig) -> Result<()> {
    crate::governor::tune_allocator();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hearth-http")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(config))
}

async fn run(config: ServeConfig) -> Result<()> {
    // Signal handlers first: a SIGTERM that arrives once the listeners
    // answer must end the daemon gracefully, not by the default action.
    let signals = Signals::install()?;
    let home = Home::at(&config.home);
    let store = Store::open(home.clone())?;
    let _lock = take_lock(&config.home)?;
    check_budget(&store, &config)?;
    let db = StateDb::open(&home)?;
    if config.allow_anonymous {
        tracing::warn!(
            "--allow-anonymous: callers without a token are served as the app `anonymous`"
        );
        eprintln!(
            "warning: --allow-anonymous: callers without a token are served as the app `anonymous`"
        );
    }
    if config.is_exposed() {
        tracing::warn!(host = %config.host, "listening beyond loopback");
        eprintln!(
            "warning: listening on {}, reachable from other machines; every caller still needs an app token",
            config.host
        );
    }
    let admin_token = new_token();
    write_private(&admin_token_path(&config.home), &admin_token)?;

    let tcp = TcpListener::bind((config.host, config.port))
        .await
        .with_context(|| format!("listening on {}:{}", config.host, config.port))?;
    let addr = tcp.local_addr()?;
    let unix = match &config.socket {
        Some(p) => Some(bind_socket(p)?),
        None => None,
    };
    let url = format!("http://{addr}");
    let info = DaemonInfo {
        pid: std::process::id(),
        url: url.clone(),
        socket: config.socket.clone(),
    };
    write_private(&info_path(&config.home), &serde_json::to_string(&info)?)?;

    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let socket_path = config.socket.clone();
    let state = Arc::new(AppState::new(config, store, db, admin_token));
    let app = crate::api::router(state.clone());
    {
        // Idle models unload once their keep_alive runs out; in-use ones
        // are marked used, so keep_alive counts from their last request.
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                st.models.touch_in_use();
                st.models.reap();
            }
        });
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut servers = tokio::task::JoinSet::new();
    {
        let app = app.clone().into_make_service_with_connect_info::<Peer>();
        let rx = stop_rx.clone();
        servers.spawn(async move {
            axum::serve(tcp, app)
                .with_graceful_shutdown(stopped(rx))
                .await
        });
    }
    if let Some(l) = unix {
        let app = app.into_make_service_with_connect_info::<Peer>();
        let rx = stop_rx.clone();
        servers.spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(stopped(rx))
                .await
        });
    }
    match &socket_path {
        Some(p) => println!("hearth listening on {url} and unix:{}", p.display()),
        None => println!("hearth listening on {url}"),
    }
    let _ = std::io::stdout().flush();
    tracing::info!(%url, "listening");

    signals.wait().await;
    tracing::info!("stopping: no new connections; in-flight requests get {grace:?}");
    eprintln!(
        "hearth: stopping (in-flight requests get {}s)",
        grace.as_secs()
    );
    let _ = stop_tx.send(true);
    let finished = tokio::time::timeout(grace, async {
        while let Some(r) = servers.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::error!("server error: {e}");
            }
        }
    })
    .await;
    if finished.is_err() {
        tracing::warn!("requests still running after the grace period were ended");
    }
    for p in [
        info_path(&state.config.home),
        admin_token_path(&state.config.home),
    ] {
        let _ = fs::remove_file(p);
    }
    if let Some(p) = socket_path {
        let _ = fs::remove_file(p);
    }
    Ok(())
}

/// Refuse to start with a budget that cannot hold even the smallest stored
/// base model with one short request: every generation would be a 503.
fn check_budget(store: &Store, config: &ServeConfig) -> Result<()> {
    use crate::governor::{human, SHORT_REQUEST_KV};
    let budget = config.memory_budget;
    let mut smallest: Option<(String, u64)> = None;
    for m in store.list()? {
        if m.kind != "model" {
            continue;
        }
        let Ok(path) = store.resolve(&m.name) else {
            continue;
        };
        if path.is_dir() {
            continue;
        }
        let Ok(cost) = crate::models::estimate_base(&path, config) else {
            continue;
        };
        // Room for a few positions of KV as well: a rough per-position
        // figure is enough for this check.
        let need = cost.total() + SHORT_REQUEST_KV;
        if smallest.as_ref().is_none_or(|(_, n)| need < *n) {
            smallest = Some((m.name.clone(), need));
        }
    }
    match smallest {
        Some((name, need)) if need > budget => bail!(
            "the memory budget {} is too small for any model: the smallest, {name}, needs about {} (weights, scratch and a short request's KV cache); raise --memory-budget",
            human(budget),
            human(need)
        ),
        _ => {
            tracing::info!(budget = %human(budget), "memory budget");
            Ok(())
        }
    }
}

/// Bind the Unix socket, replacing a stale file (we hold the home's lock, so
/// no live daemon owns it). Any local user may connect; identity is still
/// required per request.
fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing the stale socket {}", path.display()))
        }
    }
    let l = UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))
        .with_context(|| format!("setting permissions of {}", path.display()))?;
    Ok(l)
}

/// SIGTERM and SIGINT, registered before the daemon listens.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
