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
    /// Bytes the daemon may use for weights, adapters, KV caches and scratch
    /// (e.g. 512MiB, 2GiB; default: half of the machine's memory).
    #[arg(long = "memory-budget")]
    memory_budget: Option<String>,
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
        memory_budget: a.memory_budget,
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
    print!("{}", ps_table(&v));
    Ok(())
}

/// `/api/ps` as a table: one row per loaded thing, then the budget line.
fn ps_table(v: &serde_json::Value) -> String {
    use hearth_serve::governor::human;
    let bytes = |x: &serde_json::Value| x.as_u64().map_or("-".to_string(), human);
    let models = v["models"].as_array().cloned().unwrap_or_default();
    let width = models
        .iter()
        .filter_map(|m| m["name"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!(
        "{:<width$}  {:<9}  {:<10}  {:>9}  {:>9}  {:>9}  {:<20}  {:<20}  REQUESTS\n",
        "NAME", "KIND", "BASE", "ESTIMATED", "RESIDENT", "KV", "LOADED SINCE", "UNTIL"
    );
    for m in &models {
        let requests = format!(
            "{} running, {} waiting",
            m["running"].as_u64().unwrap_or(0),
            m["waiting"].as_u64().unwrap_or(0)
        );
        let until = match m["expires_at"].as_str() {
            Some(t) => t.to_string(),
            None => "forever".to_string(),
        };
        out.push_str(&format!(
            "{:<width$}  {:<9}  {:<10}  {:>9}  {:>9}  {:>9}  {:<20}  {:<20}  {requests}\n",
            m["name"].as_str().unwrap_or(""),
            m["kind"].as_str().unwrap_or(""),
            m["base"].as_str().unwrap_or(""),
            bytes(&m["estimated_bytes"]),
            bytes(&m["resident_bytes"]),
            bytes(&m["kv_bytes"]),
            m["loaded_at"].as_str().unwrap_or(""),
            until,
        ));
    }
    let h = &v["hearth"];
    out.push_str(&format!(
        "budget {}, reserved {} (weights {}, adapters {}, kv {}, scratch {}); process resident {}\n",
        bytes(&h["budget_bytes"]),
        bytes(&h["used_bytes"]),
        bytes(&h["used"]["weights"]),
        bytes(&h["used"]["adapters"]),
        bytes(&h["used"]["kv"]),
        bytes(&h["used"]["scratch"]),
        bytes(&h["process_resident_bytes"]),
    ));
    out
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
    println!(
        "{:>7} {:>12} {:>10} {:>10} {:>10} {:>12} {:>8}",
        "streams", "total t/s", "t/s each", "ttft p50", "ttft max", "new req ttft", "vs 1"
    );
    for l in &r.levels {
        let ratio = l.vs_single.map_or(String::new(), |v| format!("{v:.2}x"));
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

#[derive(Args)]
pub struct BenchExpertsArgs {
    /// The base model (a stored name).
    #[arg(short = 'm', long = "model", default_value = "smollm2")]
    model: String,
    /// An adapter for the base (GGUF file or PEFT directory); repeat for
    /// more. The benchmark's experts cycle through them.
    #[arg(long = "adapter", required = true)]
    adapters: Vec<std::path::PathBuf>,
    /// Tokens each of the 8 streams generates.
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    n_gen: usize,
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    reps: usize,
    /// Engine threads (the daemon's and the in-process measurement's).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    #[arg(long)]
    json: bool,
}

pub fn bench_experts(a: BenchExpertsArgs) -> Result<()> {
    if a.threads == Some(0) {
        bail!("-t 0: the thread count must be at least 1");
    }
    let store = Store::open_default()?;
    store.ensure(&a.model, Progress::Bar)?;
    let exe = std::env::current_exe()?;
    let b = hearth_serve::bench::ExpertsBench {
        model: a.model,
        adapters: a.adapters,
        n_gen: a.n_gen,
        reps: a.reps,
        threads: a.threads,
    };
    let r = hearth_serve::bench::run_experts(&exe, &store, &b)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    use hearth_serve::governor::human;
    println!(
        "ttft: expert not loaded {:.1} ms, loaded {:.1} ms (+{:.1} ms)",
        r.cold_ttft_ms,
        r.warm_ttft_ms,
        r.cold_ttft_ms - r.warm_ttft_ms
    );
    println!(
        "adapter switch between passes: {:.1} us in process; scheduler's plan {:.1} us",
        r.switch_us, r.scheduler_swap_us
    );
    println!(
        "8 streams: 8 adapters {:.1} t/s, 1 adapter {:.1} t/s ({:.2}x), bare base {:.1} t/s ({:.2}x)",
        r.tps_8_adapters,
        r.tps_1_adapter,
        r.tps_8_adapters / r.tps_1_adapter.max(1e-9),
        r.tps_base,
        r.tps_8_adapters / r.tps_base.max(1e-9)
    );
    println!(
        "daemon resident {} vs governor {}; load average {} -> {}",
        human(r.rss_bytes),
        human(r.governor_bytes),
        r.loadavg_before,
        r.loadavg_after
    );
    Ok(())
}
