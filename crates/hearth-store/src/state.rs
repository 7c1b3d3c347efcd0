//! hearth's mutable state in SQLite (`<home>/state.sqlite3`): the apps allowed
//! to use the daemon, their tokens (only as sha256 hashes), the audit log of
//! requests (metadata only, never prompt or output text), and per-app usage
//! counters.
//!
//! The schema evolves by numbered migrations ([`MIGRATIONS`]), each applied
//! in order in its own `BEGIN IMMEDIATE` transaction together with the bump
//! of `PRAGMA user_version`, so two processes opening a fresh database at
//! once cannot both migrate, and a crash never leaves a half-applied step. A
//! database whose version is newer than this code knows is refused with
//! [`Error::StateTooNew`] rather than misread. The file is in WAL mode (the
//! daemon writes while CLI commands read) with a busy timeout.
//!
//! Owns the database schema and queries only; it must not know about HTTP,
//! scheduling or models beyond their names, and must not touch the model
//! store's files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::home::Home;
use crate::manifest::{now_rfc3339, valid_name};
use crate::wheel::hex;

/// How long a writer waits for another one before giving up with "database
/// is locked". Writes are single-row and short, so this is generous.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Prefix of every app token, so a leaked one is recognisable (secret
/// scanners, logs) and cannot be mistaken for anything else.
pub const TOKEN_PREFIX: &str = "hth_";

/// Schema migrations, in order: migration `i` takes `user_version` from `i`
/// to `i + 1`. Never edit a released entry; append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: apps, audit, usage.
    "CREATE TABLE apps (
        id                INTEGER PRIMARY KEY,
        name              TEXT    NOT NULL UNIQUE,
        token_sha256      TEXT    NOT NULL UNIQUE,
        models            TEXT,              -- JSON array of names; NULL = all
        max_concurrent    INTEGER,
        tokens_per_minute INTEGER,
        priority          INTEGER NOT NULL DEFAULT 0,
        uid               INTEGER UNIQUE,
        created           TEXT    NOT NULL
    );
    CREATE TABLE audit (
        id          INTEGER PRIMARY KEY,
        request_id  TEXT    NOT NULL,
        time        TEXT    NOT NULL,
        app         TEXT    NOT NULL,        -- by name: history outlives the app
        model       TEXT    NOT NULL,
        endpoint    TEXT    NOT NULL,
        tokens_in   INTEGER NOT NULL,
        tokens_out  INTEGER NOT NULL,
        latency_ms  REAL    NOT NULL,
        status      INTEGER NOT NULL,
        outcome     TEXT    NOT NULL
    );
    CREATE INDEX audit_by_app ON audit (app, id);
    CREATE TABLE usage (
        app        TEXT    PRIMARY KEY,
        requests   INTEGER NOT NULL DEFAULT 0,
        tokens_in  INTEGER NOT NULL DEFAULT 0,
        tokens_out INTEGER NOT NULL DEFAULT 0
    );",
];

/// The schema version this code writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The state database. One connection; `Send`, so the daemon can share it
/// behind a `Mutex`.
pub struct StateDb {
    conn: Connection,
    /// For error messages (`:memory:` for in-memory databases).
    path: PathBuf,
}

impl std::fmt::Debug for StateDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDb").field("path", &self.path).finish()
    }
}

/// What `hearth app add` asks for.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NewApp {
    pub name: String,
    /// Models the app may use; `None` means all.
    pub models: Option<Vec<String>>,
    pub max_concurrent: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub priority: i32,
    /// A local user whose connections (over the Unix socket) count as this
    /// app without a token.
    pub uid: Option<u32>,
}

/// A registered app. The token is not part of it: only its hash is stored.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct App {
    pub id: i64,
    pub name: String,
    pub models: Option<Vec<String>>,
    pub max_concurrent: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub priority: i32,
    pub uid: Option<u32>,
    /// RFC 3339 UTC.
    pub created: String,
}

impl App {
    /// Whether this app may use `model` (every model when unrestricted).
    pub fn may_use(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|ms| ms.iter().any(|m| m == model))
    }
}

/// One served request, as audited. Metadata only, by design: no prompt or
/// output text ever reaches the database.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AuditRow {
    pub request_id: String,
    /// RFC 3339 UTC, as the daemon saw the request.
    pub time: String,
    pub app: String,
    pub model: String,
    pub endpoint: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub latency_ms: f64,
    /// HTTP status.
    pub status: u16,
    /// `ok`, `error`, `cancelled`, `rejected`, ... (the daemon's words).
    pub outcome: String,
}

/// Running totals for one app.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub requests: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

const APP_COLUMNS: &str =
    "id, name, models, max_concurrent, tokens_per_minute, priority, uid, created";

impl StateDb {
    /// Opens (creating and migrating as needed) `<home>/state.sqlite3`.
    pub fn open(home: &Home) -> Result<StateDb> {
        let root = home.root();
        std::fs::create_dir_all(root).map_err(|e| Error::io("creating directory", root, e))?;
        let path = home.state_db_path();
        let conn = Connection::open(&path).map_err(|source| Error::State {
            path: path.clone(),
            context: "opening".into(),
            source,
        })?;
        StateDb::init(conn, path, true)
    }

    /// A fresh, private in-memory database (tests).
    pub fn open_in_memory() -> Result<StateDb> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| Error::State {
            path: path.clone(),
            context: "opening".into(),
            source,
        })?;
        StateDb::init(conn, path, false)
    }

    fn init(conn: Connection, path: PathBuf, wal: bool) -> Result<StateDb> {
        let db = StateDb { conn, path };
        db.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(db.err("setting the busy timeout"))?;
        // Refuse a newer database before changing anything about it.
        let found = db.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(db.too_new(found));
        }
        if wal {
            let mode = db.enable_wal()?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::State {
                    path: db.path.clone(),
                    context: format!("enabling WAL (the database stayed in `{mode}` mode)"),
                    source: rusqlite::Error::InvalidQuery,
                });
            }
            // In WAL mode NORMAL is durable against application crashes and
            // consistent across power loss; FULL would fsync every audit row.
            db.conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(db.err("setting synchronous"))?;
        }
        db.migrate()?;
        Ok(db)
    }

    /// Switches the file to WAL and returns the mode SQLite reports.
    ///
    /// Switching needs an exclusive lock, and when several processes open a
    /// new database at once SQLite can answer `SQLITE_BUSY` here without
    /// calling the busy handler (it refuses to wait where waiting could
    /// deadlock). So this waits itself, up to the same busy timeout.
    fn enable_wal(&self) -> Result<String> {
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match self
                .conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            {
                Ok(mode) => return Ok(mode),
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(self.err("enabling WAL")(e)),
            }
        }
    }

    /// Where the database is (`:memory:` for in-memory ones).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database's `PRAGMA user_version`.
    pub fn schema_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(self.err("reading the schema version"))
    }

    fn migrate(&self) -> Result<()> {
        loop {
            let tx = self.write_tx("starting a migration")?;
            // Re-read inside the write lock: another process may have
            // migrated while we waited for it.
            let v: i64 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(|source| Error::State {
                    path: self.path.clone(),
                    context: "reading the schema version".into(),
                    source,
                })?;
            if v > SCHEMA_VERSION {
                return Err(self.too_new(v));
            }
            let Some(step) = usize::try_from(v).ok().and_then(|i| MIGRATIONS.get(i)) else {
                return Ok(());
            };
            let ctx =
                |what: &str| format!("migrating the schema from version {v} to {}: {what}", v + 1);
            tx.execute_batch(step).map_err(|source| Error::State {
                path: self.path.clone(),
                context: ctx("applying"),
                source,
            })?;
            // PRAGMA takes no bound parameters; v + 1 is our own integer.
            tx.execute_batch(&format!("PRAGMA user_version = {}", v + 1))
                .map_err(|source| Error::State {
                    path: self.path.clone(),
                    context: ctx("recording the version"),
                    source,
                })?;
            tx.commit().map_err(|source| Error::State {
                path: self.path.clone(),
                context: ctx("committing"),
                source,
            })?;
        }
    }

    /// Registers an app and returns it with its new token. The token is
    /// returned once and stored only as a hash; losing it means removing and
    /// re-adding the app.
    pub fn add_app(&self, new: &NewApp) -> Result<(App, String)> {
        if !valid_name(&new.name) {
            return Err(Error::InvalidName {
                what: "app",
                name: new.name.clone(),
            });
        }
        if let Some(models) = &new.models {
            if let Some(bad) = models.iter().find(|m| !valid_name(m)) {
                return Err(Error::InvalidName {
                    what: "model",
                    name: bad.clone(),
                });
            }
        }
        let models_json = match &new.models {
            Some(ms) => Some(serde_json::to_string(ms).map_err(|e| Error::BadState {
                path: self.path.clone(),
                what: format!("models of app `{}`", new.name),
                detail: e.to_string(),
            })?),
            None => None,
        };
        let token = new_token();
        // Checks and insert in one write transaction, so two concurrent adds
        // of one name get one clear AppExists rather than a constraint error.
        let tx = self.write_tx("starting a transaction")?;
        if self.app(&new.name)?.is_some() {
            return Err(Error::AppExists {
                name: new.name.clone(),
            });
        }
        if let Some(uid) = new.uid {
            if let Some(other) = self.app_for_uid(uid)? {
                return Err(Error::UidTaken {
                    uid,
                    app: other.name,
                });
            }
        }
        tx.execute(
            "INSERT INTO apps (name, token_sha256, models, max_concurrent, tokens_per_minute,
                               priority, uid, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                new.name,
                token_hash(&token),
                models_json,
                new.max_concurrent,
                new.tokens_per_minute,
                new.priority,
                new.uid,
                now_rfc3339(),
            ],
        )
        .map_err(self.err(&format!("adding app `{}`", new.name)))?;
        tx.commit()
            .map_err(self.err(&format!("adding app `{}`", new.name)))?;
        let app = self.app(&new.name)?.ok_or_else(|| Error::BadState {
            path: self.path.clone(),
            what: format!("app `{}`", new.name),
            detail: "not found right after it was added".into(),
        })?;
        Ok((app, token))
    }

    /// The app called `name`.
    pub fn app(&self, name: &str) -> Result<Option<App>> {
        self.one_app("name = ?1", name, &format!("looking up app `{name}`"))
    }

    /// All apps, by name.
    pub fn apps(&self) -> Result<Vec<App>> {
        let ctx = "listing apps";
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY name"))
            .map_err(self.err(ctx))?;
        let rows = stmt
            .query_map([], |r| Ok(self.app_from_row(r)))
            .map_err(self.err(ctx))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.map_err(self.err(ctx))??);
        }
        Ok(out)
    }

    /// Removes app `name` and its usage counters (its audit rows stay: they
    /// are history). `false` if there was no such app.
    pub fn remove_app(&self, name: &str) -> Result<bool> {
        let ctx = format!("removing app `{name}`");
        let tx = self.write_tx(&ctx)?;
        let n = tx
            .execute("DELETE FROM apps WHERE name = ?1", [name])
            .map_err(self.err(&ctx))?;
        tx.execute("DELETE FROM usage WHERE app = ?1", [name])
            .map_err(self.err(&ctx))?;
        tx.commit().map_err(self.err(&ctx))?;
        Ok(n > 0)
    }

    /// The app whose token this is, compared by sha256 (the database never
    /// sees the plain token).
    pub fn app_for_token(&self, token: &str) -> Result<Option<App>> {
        self.one_app(
            "token_sha256 = ?1",
            &token_hash(token),
            "looking up a token",
        )
    }

    /// The app bound to local user `uid`.
    pub fn app_for_uid(&self, uid: u32) -> Result<Option<App>> {
        let ctx = format!("looking up uid {uid}");
        self.conn
            .query_row(
                &format!("SELECT {APP_COLUMNS} FROM apps WHERE uid = ?1"),
                [uid],
                |r| Ok(self.app_from_row(r)),
            )
            .optional()
            .map_err(self.err(&ctx))?
            .transpose()
    }

    /// Appends an audit row and adds it to the app's usage, atomically.
    pub fn record_request(&self, row: &AuditRow) -> Result<()> {
        let ctx = format!("recording request {}", row.request_id);
        let tin = to_i64(row.tokens_in);
        let tout = to_i64(row.tokens_out);
        let tx = self.write_tx(&ctx)?;
        tx.execute(
            "INSERT INTO audit (request_id, time, app, model, endpoint, tokens_in, tokens_out,
                                latency_ms, status, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                row.request_id,
                row.time,
                row.app,
                row.model,
                row.endpoint,
                tin,
                tout,
                row.latency_ms,
                row.status,
                row.outcome,
            ],
        )
        .map_err(self.err(&ctx))?;
        tx.execute(
            "INSERT INTO usage (app, requests, tokens_in, tokens_out) VALUES (?1, 1, ?2, ?3)
             ON CONFLICT (app) DO UPDATE SET
                requests   = requests + 1,
                tokens_in  = tokens_in + excluded.tokens_in,
                tokens_out = tokens_out + excluded.tokens_out",
            params![row.app, tin, tout],
        )
        .map_err(self.err(&ctx))?;
        tx.commit().map_err(self.err(&ctx))
    }

    /// The newest `limit` audit rows, newest first, of one app or of all.
    pub fn audit(&self, app: Option<&str>, limit: usize) -> Result<Vec<AuditRow>> {
        let ctx = "reading the audit log";
        let mut stmt = self
            .conn
            .prepare(
                "SELECT request_id, time, app, model, endpoint, tokens_in, tokens_out,
                        latency_ms, status, outcome
                 FROM audit WHERE ?1 IS NULL OR app = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(self.err(ctx))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![app, limit], |r| {
                Ok(AuditRow {
                    request_id: r.get(0)?,
                    time: r.get(1)?,
                    app: r.get(2)?,
                    model: r.get(3)?,
                    endpoint: r.get(4)?,
                    tokens_in: from_i64(r.get(5)?),
                    tokens_out: from_i64(r.get(6)?),
                    latency_ms: r.get(7)?,
                    status: r.get(8)?,
                    outcome: r.get(9)?,
                })
            })
            .map_err(self.err(ctx))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err(ctx))
    }

    /// Totals for `app` (zero if it never made a request).
    pub fn usage(&self, app: &str) -> Result<Usage> {
        let u = self
            .conn
            .query_row(
                "SELECT requests, tokens_in, tokens_out FROM usage WHERE app = ?1",
                [app],
                |r| {
                    Ok(Usage {
                        requests: from_i64(r.get(0)?),
                        tokens_in: from_i64(r.get(1)?),
                        tokens_out: from_i64(r.get(2)?),
                    })
                },
            )
            .optional()
            .map_err(self.err(&format!("reading usage of app `{app}`")))?;
        Ok(u.unwrap_or_default())
    }

    /// A `BEGIN IMMEDIATE` transaction: it takes the write lock up front (and
    /// waits for it under the busy timeout), so a read-then-write cannot fail
    /// half-way with SQLITE_BUSY when another process writes.
    fn write_tx(&self, ctx: &str) -> Result<Transaction<'_>> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(self.err(ctx))
    }

    fn one_app(&self, cond: &str, arg: &str, ctx: &str) -> Result<Option<App>> {
        self.conn
            .query_row(
                &format!("SELECT {APP_COLUMNS} FROM apps WHERE {cond}"),
                [arg],
                |r| Ok(self.app_from_row(r)),
            )
            .optional()
            .map_err(self.err(ctx))?
            .transpose()
    }

    /// Decodes a row of [`APP_COLUMNS`]. The outer `rusqlite::Result` is
    /// SQLite's; the inner one reports values that do not fit (a database
    /// edited by hand) by name.
    fn app_from_row(&self, r: &Row<'_>) -> Result<App> {
        let get = |i: usize| -> Result<rusqlite::types::Value> {
            r.get(i).map_err(self.err("reading an app"))
        };
        use rusqlite::types::Value as V;
        let name = match get(1)? {
            V::Text(s) => s,
            other => return Err(self.bad("app name", format!("{other:?}"))),
        };
        let bad =
            |field: &str, detail: String| self.bad(&format!("{field} of app `{name}`"), detail);
        let opt_u32 = |field: &str, v: V| -> Result<Option<u32>> {
            match v {
                V::Null => Ok(None),
                V::Integer(i) => u32::try_from(i)
                    .map(Some)
                    .map_err(|_| bad(field, format!("{i} is not a u32"))),
                other => Err(bad(field, format!("{other:?}"))),
            }
        };
        let models = match get(2)? {
            V::Null => None,
            V::Text(s) => Some(
                serde_json::from_str::<Vec<String>>(&s)
                    .map_err(|e| bad("models", format!("{s:?}: {e}")))?,
            ),
            other => return Err(bad("models", format!("{other:?}"))),
        };
        let id = match get(0)? {
            V::Integer(i) => i,
            other => return Err(bad("id", format!("{other:?}"))),
        };
        let priority = match get(5)? {
            V::Integer(i) => {
                i32::try_from(i).map_err(|_| bad("priority", format!("{i} is not an i32")))?
            }
            other => return Err(bad("priority", format!("{other:?}"))),
        };
        let created = match get(7)? {
            V::Text(s) => s,
            other => return Err(bad("created", format!("{other:?}"))),
        };
        Ok(App {
            id,
            models,
            max_concurrent: opt_u32("max_concurrent", get(3)?)?,
            tokens_per_minute: opt_u32("tokens_per_minute", get(4)?)?,
            priority,
            uid: opt_u32("uid", get(6)?)?,
            created,
            name,
        })
    }

    fn err(&self, context: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
        let context = context.to_string();
        move |source| Error::State {
            path: self.path.clone(),
            context,
            source,
        }
    }

    fn bad(&self, what: &str, detail: String) -> Error {
        Error::BadState {
            path: self.path.clone(),
            what: what.to_string(),
            detail,
        }
    }

    fn too_new(&self, found: i64) -> Error {
        Error::StateTooNew {
            path: self.path.clone(),
            found,
            supported: SCHEMA_VERSION,
        }
    }
}

/// A new app token: [`TOKEN_PREFIX`] + 32 bytes from the OS's CSPRNG as hex.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex(&bytes))
}

/// What the database stores instead of a token: its sha256, hex. Tokens
/// carry 256 random bits, so a plain (unsalted, fast) hash is enough: there
/// is nothing to brute-force.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Counters are u64 in Rust and i64 in SQLite; real values are far below
/// either limit, so clamping only guards against nonsense input.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_i64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

// The daemon keeps the database in a Mutex shared across threads.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<StateDb>();
};

/// Whether SQLite said another connection holds the lock.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_look_right_and_differ() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert!(a[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(token_hash(&a), token_hash(&b));
        assert_eq!(token_hash(&a).len(), 64);
    }

    #[test]
    fn may_use() {
        let mut app = App {
            id: 1,
            name: "a".into(),
            models: None,
            max_concurrent: None,
            tokens_per_minute: None,
            priority: 0,
            uid: None,
            created: String::new(),
        };
        assert!(app.may_use("anything"));
        app.models = Some(vec!["smollm2".into()]);
        assert!(app.may_use("smollm2"));
        assert!(!app.may_use("gemma3"));
        app.models = Some(vec![]);
        assert!(!app.may_use("smollm2"));
    }

    #[test]
    fn migrations_bring_an_empty_database_to_the_current_version() {
        let db = StateDb::open_in_memory().expect("open");
        assert_eq!(db.schema_version().expect("version"), SCHEMA_VERSION);
        assert!(db.apps().expect("apps").is_empty());
    }
}
