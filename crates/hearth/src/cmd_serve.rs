//! `hearth serve` and `hearth ps`: arguments and printing; the daemon is
//! `hearth-serve`'s.

use anyhow::{bail, Result};
use clap::Args;
use hearth_serve::bench::{ScratchDaemon, ServeBench, Target};
use hearth_serve::{Flags, ServeConfig};
use hearth_store::{Home, Progress, Store};

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

#[derive(Args)]
pub struct BenchServeArgs {
    /// The model to load (a stored name).
    #[arg(short = 'm', long = "model", default_value = "smollm2")]
    model: String,
    /// Tokens each stream generates.
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    streams: Vec<usize>,
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    reps: usize,
    /// Engine threads of the daemon started for the benchmark.
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Measure a daemon that is already running instead (needs --token).
    #[arg(long, requires = "token")]
    url: Option<String>,
    /// An app token for --url.
    #[arg(long)]
    token: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn bench_serve(a: BenchServeArgs) -> Result<()> {
    if a.threads == Some(0) {
        bail!("-t 0: the thread count must be at least 1");
    }
    let b = ServeBench {
        model: a.model.clone(),
        n_gen: a.n_gen,
        streams: a.streams,
        reps: a.reps,
    };
    let mut scratch = None;
    let target = match (a.url, a.token) {
        (Some(url), Some(token)) => Target { url, token },
        _ => {
            let store = Store::open_default()?;
            store.ensure(&a.model, Progress::Bar)?;
            let exe = std::env::current_exe()?;
            let d = ScratchDaemon::start(&exe, &store, &a.model, a.threads)?;
            let t = d.target.clone();
            scratch = Some(d);
            t
        }
    };
    let r = hearth_serve::bench::run(&target, &b)?;
    drop(scratch);
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let single = r
        .levels
        .iter()
        .find(|l| l.streams == 1)
        .map(|l| l.aggregate_tps);
    println!(
        "{:>7} {:>12} {:>10} {:>10} {:>10} {:>12} {:>8}",
        "streams", "total t/s", "t/s each", "ttft p50", "ttft max", "new req ttft", "vs 1"
    );
    for l in &r.levels {
        let ratio = single.map_or(String::new(), |s| format!("{:.2}x", l.aggregate_tps / s));
        let probe = l
            .probe_ttft_ms_p50
            .map_or("-".to_string(), |p| format!("{p:.0}ms"));
        println!(
            "{:>7} {:>12.1} {:>10.1} {:>8.0}ms {:>8.0}ms {:>12} {:>8}",
            l.streams, l.aggregate_tps, l.stream_tps, l.ttft_ms_p50, l.ttft_ms_max, probe, ratio
        );
    }
    Ok(())
}
