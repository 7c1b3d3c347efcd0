//! `hearth serve` and `hearth ps`: arguments and printing; the daemon is
//! `hearth-serve`'s.

use anyhow::Result;
use clap::Args;
use hearth_serve::{Flags, ServeConfig};
use hearth_store::Home;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; anything else is reachable from other machines).
    #[arg(long)]
    host: Option<String>,
    /// TCP port (default 11435; 0 picks a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Unix socket path (default: $HEARTH_HOME/hearth.sock; `none` disables it).
    #[arg(long)]
    socket: Option<String>,
    /// Serve callers without a token as the restricted app `anonymous`.
    #[arg(long = "allow-anonymous")]
    allow_anonymous: bool,
    /// Configuration file (default: $HEARTH_HOME/config.toml when present).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Engine threads per model (default: the physical cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let home = Home::from_env()?;
    let flags = Flags {
        config: a.config,
        host: a.host,
        port: a.port,
        socket: a.socket,
        allow_anonymous: a.allow_anonymous,
        threads: a.threads,
    };
    let config = ServeConfig::load(home.root(), &flags)?;
    hearth_serve::serve(config)
}

#[derive(Args)]
pub struct PsArgs {
    #[arg(long)]
    json: bool,
}

pub fn ps(a: PsArgs) -> Result<()> {
    let home = Home::from_env()?;
    let v = hearth_serve::client::get_json(home.root(), "/api/ps")?;
    if a.json {
        println!("{v}");
        return Ok(());
    }
    let models = v["models"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<20} {:>12} {:>8} {:>8}  LOADED",
        "NAME", "SIZE", "RUNNING", "WAITING"
    );
    for m in models {
        println!(
            "{:<20} {:>12} {:>8} {:>8}  {}",
            m["name"].as_str().unwrap_or(""),
            m["size"].as_u64().unwrap_or(0),
            m["running"].as_u64().unwrap_or(0),
            m["waiting"].as_u64().unwrap_or(0),
            m["loaded_at"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}
