//! `hearth app add|list|show|rm`: the apps allowed to use the daemon.
//!
//! Argument structs and printing only; the rows live in
//! `hearth_store::StateDb`. `app add` prints the new token alone on the last
//! line of stdout (everything else goes to stderr) so scripts can take it
//! with `tail -n1`. This file must not touch the model store.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use hearth_store::{App, Home, NewApp, StateDb};

/// `println!` that treats a closed stdout (`hearth list | head`) as the
/// reader being done rather than panicking.
macro_rules! out {
    ($($t:tt)*) => {
        crate::cmd_store::out(format_args!($($t)*))
    };
}

#[derive(Args)]
pub struct AppArgs {
    #[command(subcommand)]
    pub cmd: AppCmd,
}

#[derive(Subcommand)]
pub enum AppCmd {
    /// Register an app and print its token (shown once; only a hash is kept).
    Add(AddArgs),
    /// List the registered apps.
    List {
        /// Print a JSON array of apps.
        #[arg(long)]
        json: bool,
    },
    /// One app's settings and usage totals.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove an app (its token stops working; its audit rows stay).
    Rm {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct AddArgs {
    /// App name (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// Comma-separated models the app may use (default: all).
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Most requests of this app running at once.
    #[arg(long = "max-concurrent")]
    pub max_concurrent: Option<u32>,
    /// Token budget per minute (prompt + generated).
    #[arg(long = "tokens-per-minute")]
    pub tokens_per_minute: Option<u32>,
    /// Scheduling priority; higher goes first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Local user id whose socket connections count as this app.
    #[arg(long)]
    pub uid: Option<u32>,
    /// Print `{"app": ..., "token": ...}` instead.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: AppArgs) -> Result<()> {
    let db = StateDb::open(&Home::from_env()?)?;
    match a.cmd {
        AppCmd::Add(a) => add(&db, a),
        AppCmd::List { json } => list(&db, json),
        AppCmd::Show { name, json } => show(&db, &name, json),
        AppCmd::Rm { name, json } => rm(&db, &name, json),
    }
}

fn add(db: &StateDb, a: AddArgs) -> Result<()> {
    let models = a.models.map(|ms| {
        ms.into_iter()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect::<Vec<_>>()
    });
    let (app, token) = db.add_app(&NewApp {
        name: a.name,
        models,
        max_concurrent: a.max_concurrent,
        tokens_per_minute: a.tokens_per_minute,
        priority: a.priority,
        uid: a.uid,
    })?;
    if a.json {
        out!("{}", serde_json::json!({ "app": app, "token": token }));
    } else {
        eprintln!("added app {} ({})", app.name, describe(&app));
        eprintln!("its token follows; it is shown only this once:");
        out!("{token}");
    }
    Ok(())
}

fn list(db: &StateDb, json: bool) -> Result<()> {
    let apps = db.apps()?;
    if json {
        out!("{}", serde_json::to_string(&apps)?);
        return Ok(());
    }
    let width = apps
        .iter()
        .map(|a| a.name.len())
        .max()
        .unwrap_or(0)
        .max("NAME".len());
    let rows: Vec<(String, String, String)> = apps
        .into_iter()
        .map(|a| (describe(&a), a.name, a.created))
        .collect();
    let swidth = rows
        .iter()
        .map(|r| r.0.len())
        .max()
        .unwrap_or(0)
        .max("SETTINGS".len());
    out!("{:<width$}  {:<swidth$}  CREATED", "NAME", "SETTINGS");
    for (settings, name, created) in rows {
        out!("{name:<width$}  {settings:<swidth$}  {created}");
    }
    Ok(())
}

fn show(db: &StateDb, name: &str, json: bool) -> Result<()> {
    let Some(app) = db.app(name)? else {
        bail!("no app named `{name}` (see `hearth app list`)");
    };
    let usage = db.usage(name)?;
    if json {
        out!("{}", serde_json::json!({ "app": app, "usage": usage }));
        return Ok(());
    }
    let or_none = |v: Option<u32>| v.map_or_else(|| "unlimited".to_string(), |v| v.to_string());
    out!("name:               {}", app.name);
    out!(
        "models:             {}",
        app.models
            .as_ref()
            .map_or_else(|| "all".to_string(), |m| m.join(","))
    );
    out!("max concurrent:     {}", or_none(app.max_concurrent));
    out!("tokens per minute:  {}", or_none(app.tokens_per_minute));
    out!("priority:           {}", app.priority);
    out!(
        "uid:                {}",
        app.uid.map_or_else(|| "-".to_string(), |u| u.to_string())
    );
    out!("created:            {}", app.created);
    out!(
        "usage:              {} requests, {} tokens in, {} tokens out",
        usage.requests,
        usage.tokens_in,
        usage.tokens_out
    );
    Ok(())
}

fn rm(db: &StateDb, name: &str, json: bool) -> Result<()> {
    if !db.remove_app(name)? {
        bail!("no app named `{name}` (see `hearth app list`)");
    }
    if json {
        out!("{}", serde_json::json!({ "removed": name }));
    } else {
        out!("removed app {name}");
    }
    Ok(())
}

/// One-line summary of an app's limits.
fn describe(app: &App) -> String {
    let mut parts = vec![match &app.models {
        None => "all models".to_string(),
        Some(m) => format!("models {}", m.join(",")),
    }];
    if let Some(n) = app.max_concurrent {
        parts.push(format!("max {n} at once"));
    }
    if let Some(n) = app.tokens_per_minute {
        parts.push(format!("{n} tokens/min"));
    }
    if app.priority != 0 {
        parts.push(format!("priority {}", app.priority));
    }
    if let Some(u) = app.uid {
        parts.push(format!("uid {u}"));
    }
    parts.join(", ")
}
