//! `hearth bench serve`: the daemon under concurrent load, measured from the
//! outside the way an app sees it.
//!
//! A real `hearth serve` runs as its own process on a scratch home that
//! borrows the model from the user's store by hard link (so the user's own
//! daemon, if any, is left alone), or the caller points at a running daemon
//! with a URL and token. Then 1, 4, 8, ... clients each stream one greedy
//! completion of `n_gen` tokens at the same moment, over HTTP with SSE, and
//! we record when each asked, when its first token arrived and when its
//! last did.
//!
//! Reported per level (the median over repetitions, which visit the levels
//! in turn): aggregate tokens per second (all completion tokens over the
//! wall time from the first request to the last end), its ratio to one
//! stream's (the median of the ratios within each round), time to first
//! token (p50 and worst), and each stream's own decode rate. Then one more
//! run of the level adds probes: short requests sent one after another
//! while the streams decode, whose time to first token is what a new caller
//! waits under that load. The probes run apart from the measured
//! repetitions because each joins the batch with a prompt to prefill, which
//! slows the streams, and slows one stream by a larger share of its run
//! than eight. This module owns the load generator and its arithmetic; the
//! daemon it measures is the ordinary one, unchanged.
//!
//! `hearth bench experts` ([`run_experts`]) measures the on-demand experts
//! the same way, plus one in-process figure: time to first token of an
//! expert whose adapter is not loaded against the same request once it is,
//! the cost of switching adapters between forward passes, aggregate decode
//! of 8 streams on 8 adapters against 8 on one and 8 on the bare base, and
//! the daemon's resident memory against the governor's reservations.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hearth_store::{Home, NewApp, StateDb, Store};
use serde::Serialize;
use serde_json::{json, Value};

/// What to measure.
#[derive(Clone, Debug)]
pub struct ServeBench {
    pub model: String,
    pub n_gen: usize,
    pub streams: Vec<usize>,
    pub reps: usize,
}

/// Where the daemon under test listens.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub token: String,
}

/// One level of concurrency, the median over repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct Level {
    pub streams: usize,
    pub aggregate_tps: f64,
    pub ttft_ms_p50: f64,
    pub ttft_ms_max: f64,
    /// Mean over streams of (tokens after the first) / (time after the first).
    pub stream_tps: f64,
    /// Time to first token of one more short request sent while the
    /// streams decode (the median of a few, one after another): what a new
    /// caller waits under this load.
    pub probe_ttft_ms_p50: Option<f64>,
    pub completion_tokens: usize,
    /// This level's aggregate rate over the single stream's, taken within
    /// each round and then the median over rounds (so a drift in the host's
    /// speed between rounds cancels); `None` when 1 is not among the levels.
    pub vs_single: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServeBenchResult {
    pub model: String,
    pub n_gen: usize,
    pub levels: Vec<Level>,
}

/// One stream's timeline.
struct Timed {
    ttft: f64,
    end: f64,
    tokens: usize,
}

/// Prompts that differ from their first words on, so no stream is served
/// from another's cached prefix.
const TOPICS: [&str; 8] = [
    "lighthouse keeper who collects seashells",
    "robot learning to bake bread",
    "fox crossing a frozen river",
    "librarian who finds a secret map",
    "child building a kite from newspapers",
    "old sailor teaching knots",
    "cat who guards a bakery at night",
    "gardener growing giant pumpkins",
];

fn prompt(i: usize) -> String {
    let topic = TOPICS[i % TOPICS.len()];
    // The topic leads, so prompts part at their first token.
    format!("{topic}, story {}: once upon a time", i / TOPICS.len() + 1)
}

/// A scratch daemon: its own home and process, removed when dropped.
pub struct ScratchDaemon {
    child: Child,
    home: PathBuf,
    pub target: Target,
}

impl ScratchDaemon {
    /// The scratch home (experts can be created in it while it runs).
    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Start `exe serve` on a new home under the system's temporary folder,
    /// holding `model` adopted from `from` and one unrestricted app.
    pub fn start(exe: &Path, from: &Store, model: &str, threads: Option<usize>) -> Result<Self> {
        let home = std::env::temp_dir().join(format!("hearth-bench-{}", std::process::id()));
        if home.exists() {
            std::fs::remove_dir_all(&home)
                .with_context(|| format!("clearing {}", home.display()))?;
        }
        std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
        let mine = Store::open(Home::at(&home))?;
        mine.adopt(from, model)
            .with_context(|| format!("borrowing {model} for the benchmark's home"))?;
        let db = StateDb::open(&Home::at(&home))?;
        let (_, token) = db.add_app(&NewApp {
            name: "bench".into(),
            models: None,
            max_concurrent: None,
            tokens_per_minute: None,
            priority: 0,
            uid: None,
        })?;
        drop(db);
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--port", "0", "--socket", "none"])
            .env("HEARTH_HOME", &home)
            .env("HEARTH_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(t) = threads {
            cmd.args(["-t", &t.to_string()]);
        }
        let mut child = cmd.spawn().context("starting hearth serve")?;
        let stdout = child.stdout.take().context("the daemon's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the daemon's first line")?;
        let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&home);
            bail!("the daemon did not start (it printed {line:?})");
        };
        Ok(ScratchDaemon {
            target: Target {
                url: url.to_string(),
                token,
            },
            child,
            home,
        })
    }
}

impl Drop for ScratchDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// Run every level against `target`.
pub fn run(target: &Target, b: &ServeBench) -> Result<ServeBenchResult> {
    if b.n_gen == 0 || b.reps == 0 || b.streams.contains(&0) {
        bail!("the token count, repetitions and stream counts must each be at least 1");
    }
    // One short request first, so the model is loaded before any clock runs.
    stream_one(target, &b.model, &prompt(0), 4, Instant::now(), None)
        .context("the warm-up request failed")?;
    // Rounds visit every level in turn, rather than all repetitions of one
    // level and then the next: a host whose speed drifts over minutes then
    // slows every level alike, and the ratios between levels stay fair.
    let mut runs: Vec<Vec<Level>> = vec![Vec::new(); b.streams.len()];
    for _ in 0..b.reps {
        for (i, &n) in b.streams.iter().enumerate() {
            runs[i].push(level_once(target, b, n, false)?);
        }
    }
    let single: Option<Vec<f64>> = b
        .streams
        .iter()
        .position(|&n| n == 1)
        .map(|i| runs[i].iter().map(|l| l.aggregate_tps).collect());
    let mut levels = Vec::new();
    for (mut reps, &n) in runs.into_iter().zip(&b.streams) {
        let vs_single = single.as_ref().map(|one| {
            let rates: Vec<f64> = reps.iter().map(|l| l.aggregate_tps).collect();
            paired_ratio(&rates, one)
        });
        reps.sort_by(|a, b| a.aggregate_tps.total_cmp(&b.aggregate_tps));
        let mut level = reps.swap_remove(reps.len() / 2);
        level.probe_ttft_ms_p50 = level_once(target, b, n, true)?.probe_ttft_ms_p50;
        level.vs_single = vs_single;
        levels.push(level);
    }
    Ok(ServeBenchResult {
        model: b.model.clone(),
        n_gen: b.n_gen,
        levels,
    })
}

/// One run of `n` streams; with `probe`, probes sent while they decode.
fn level_once(target: &Target, b: &ServeBench, n: usize, probe: bool) -> Result<Level> {
    let barrier = Arc::new(Barrier::new(n + 1));
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..n {
        let (t, model) = (target.clone(), b.model.clone());
        let (barrier, started, finished) = (barrier.clone(), started.clone(), finished.clone());
        let n_gen = b.n_gen;
        handles.push(std::thread::spawn(move || {
            barrier.wait();
            let r = stream_one(
                &t,
                &model,
                &prompt(i),
                n_gen,
                Instant::now(),
                Some(&started),
            );
            finished.fetch_add(1, Ordering::SeqCst);
            r
        }));
    }
    let probe = probe.then(|| {
        let (t, model) = (target.clone(), b.model.clone());
        let (started, finished) = (started.clone(), finished.clone());
        std::thread::spawn(move || probes(&t, &model, n, &started, &finished))
    });
    barrier.wait();
    let t0 = Instant::now();
    let mut timed = Vec::new();
    for h in handles {
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        timed.push(r?);
    }
    let wall = t0.elapsed().as_secs_f64();
    let mut level = summarise(n, &timed, wall);
    if let Some(probe) = probe {
        let mut probe = probe
            .join()
            .map_err(|_| anyhow::anyhow!("the probe thread panicked"))??;
        probe.sort_by(f64::total_cmp);
        level.probe_ttft_ms_p50 = (!probe.is_empty()).then(|| median(&probe));
    }
    Ok(level)
}

/// Once every stream has its first token, send one-token requests one
/// after another while the streams still run (at most `MAX_PROBES`);
/// their times to first token, in ms.
fn probes(
    t: &Target,
    model: &str,
    n: usize,
    started: &AtomicUsize,
    finished: &AtomicUsize,
) -> Result<Vec<f64>> {
    const MAX_PROBES: usize = 5;
    let t0 = Instant::now();
    while started.load(Ordering::SeqCst) < n {
        if finished.load(Ordering::SeqCst) > 0 || t0.elapsed() > Duration::from_secs(600) {
            return Ok(Vec::new());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut out = Vec::new();
    for k in 0..MAX_PROBES {
        if finished.load(Ordering::SeqCst) > 0 {
            break;
        }
        let p = format!("{} probe {k}", prompt(n + k));
        let r = stream_one(t, model, &p, 1, Instant::now(), None)?;
        // A probe that outlived the load measured something else.
        if finished.load(Ordering::SeqCst) == 0 {
            out.push(r.ttft * 1e3);
        }
    }
    Ok(out)
}

fn summarise(n: usize, timed: &[Timed], wall: f64) -> Level {
    let tokens: usize = timed.iter().map(|t| t.tokens).sum();
    let mut ttft: Vec<f64> = timed.iter().map(|t| t.ttft * 1e3).collect();
    ttft.sort_by(f64::total_cmp);
    let stream_tps = timed
        .iter()
        .map(|t| (t.tokens.saturating_sub(1)) as f64 / (t.end - t.ttft).max(1e-9))
        .sum::<f64>()
        / timed.len().max(1) as f64;
    Level {
        streams: n,
        aggregate_tps: tokens as f64 / wall.max(1e-9),
        ttft_ms_p50: median(&ttft),
        ttft_ms_max: ttft.last().copied().unwrap_or(0.0),
        stream_tps,
        probe_ttft_ms_p50: None,
        completion_tokens: tokens,
        vs_single: None,
    }
}

/// The median over rounds of `rates[i] / single[i]`, each pair measured in
/// the same round.
fn paired_ratio(rates: &[f64], single: &[f64]) -> f64 {
    let mut r: Vec<f64> = rates
        .iter()
        .zip(single)
        .map(|(a, s)| a / s.max(1e-9))
        .collect();
    r.sort_by(f64::total_cmp);
    median(&r)
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Stream one greedy completion of exactly `n_gen` tokens; times are
/// seconds from `start`. `started` counts streams that have their first token.
fn stream_one(
    t: &Target,
    model: &str,
    prompt: &str,
    n_gen: usize,
    start: Instant,
    started: Option<&AtomicUsize>,
) -> Result<Timed> {
    let body = json!({
        "model": model,
        "prompt": prompt,
        "max_tokens": n_gen,
        "temperature": 0,
        "ignore_eos": true,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    let resp = agent
        .post(&format!("{}/v1/completions", t.url))
        .header("Authorization", &format!("Bearer {}", t.token))
        .send_json(&body)
        .context("the completion request failed")?;
    let reader = BufReader::new(resp.into_body().into_reader());
    let mut first = None;
    let mut tokens = None;
    for line in reader.lines() {
        let line = line.context("reading the stream")?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).context("a stream event is not JSON")?;
        if let Some(e) = v.get("error") {
            bail!("the daemon reported an error mid-stream: {e}");
        }
        if first.is_none() && v["choices"].as_array().is_some_and(|c| !c.is_empty()) {
            first = Some(start.elapsed().as_secs_f64());
            if let Some(s) = started {
                s.fetch_add(1, Ordering::SeqCst);
            }
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            tokens = Some(n as usize);
        }
    }
    let end = start.elapsed().as_secs_f64();
    let tokens = tokens.context("the stream ended without a usage record")?;
    Ok(Timed {
        ttft: first.context("the stream carried no token")?,
        end,
        tokens,
    })
}

/// What `hearth bench experts` measures.
#[derive(Clone, Debug)]
pub struct ExpertsBench {
    /// The base (a stored name).
    pub model: String,
    /// Adapter files for that base; experts cycle through them, each expert
    /// loading its own copy (so the engine sees distinct adapters).
    pub adapters: Vec<PathBuf>,
    pub n_gen: usize,
    pub reps: usize,
    pub threads: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExpertsBenchResult {
    pub model: String,
    /// Median time to first token of a request whose expert is not loaded.
    pub cold_ttft_ms: f64,
    /// The same kind of request once the expert is loaded.
    pub warm_ttft_ms: f64,
    /// Median per-pass cost of a different adapter than the previous pass
    /// (in process: alternating adapters minus one adapter, decode passes).
    pub switch_us: f64,
    /// The daemon's own `hearth_adapter_swap_seconds`: mean over passes
    /// whose adapter set changed, microseconds.
    pub scheduler_swap_us: f64,
    pub tps_8_adapters: f64,
    pub tps_1_adapter: f64,
    pub tps_base: f64,
    /// The daemon's VmRSS after the streams, and what the governor held.
    pub rss_bytes: u64,
    pub governor_bytes: u64,
    pub loadavg_before: String,
    pub loadavg_after: String,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn pid_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            let l = t.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Create expert `name` over `base` with the adapter at `path` in `store`.
fn make_expert(store: &Store, name: &str, base: &str, path: &Path) -> Result<()> {
    let format = if path.is_dir() {
        hearth_store::AdapterFormat::Peft
    } else {
        hearth_store::AdapterFormat::Gguf
    };
    let spec = hearth_store::ExpertSpec {
        base: base.to_string(),
        adapter: Some(format),
        description: format!("benchmark expert {name}"),
        ..Default::default()
    };
    store
        .create_expert(name, spec, Some(path), hearth_store::Progress::Quiet)
        .with_context(|| format!("creating the benchmark's expert {name}"))?;
    Ok(())
}

/// Aggregate completion tokens per second of streams to `models` (one
/// stream each), all started together.
fn streams_tps(target: &Target, models: &[String], n_gen: usize) -> Result<f64> {
    let barrier = Arc::new(Barrier::new(models.len() + 1));
    let mut handles = Vec::new();
    for (i, model) in models.iter().enumerate() {
        let (t, model, barrier) = (target.clone(), model.clone(), barrier.clone());
        handles.push(std::thread::spawn(move || {
            barrier.wait();
            stream_one(&t, &model, &prompt(i), n_gen, Instant::now(), None)
        }));
    }
    barrier.wait();
    let t0 = Instant::now();
    let mut tokens = 0;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        tokens += r.tokens;
    }
    Ok(tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9))
}

/// The in-process adapter switch: decode passes of one sequence at a time,
/// alternating between two adapters, against alternating between two
/// sequences of one adapter. The difference per pass is what a change of
/// adapter costs (unmerged adapters: no weights are rewritten, so it is
/// the cost of another adapter's matrices coming into cache).
fn switch_cost_us(rt: &hearth_runtime::Runtime, a: &Path, b: &Path, reps: usize) -> Result<f64> {
    use hearth_runtime::{SeqParams, Sequence};
    let (ad_a, ad_b) = (rt.load_adapter(a)?, rt.load_adapter(b)?);
    let start = |ad: &Arc<hearth_runtime::Adapter>| -> Result<Sequence> {
        let ids = rt.tokenize("The quick brown fox jumps over the lazy dog.", true, true)?;
        let params = SeqParams {
            max_tokens: 100_000,
            ignore_eos: true,
            adapter: Some(ad.clone()),
            ..SeqParams::default()
        };
        let mut s = rt.start(ids, params, Some(2048))?;
        while s.prefilling() {
            rt.step_batch(&mut [&mut s], 256)?;
        }
        Ok(s)
    };
    const PASSES: usize = 48;
    // Per-pass times, the median of each configuration: a busy machine's
    // stalls land in the tails, not in the figure. The two configurations
    // take turns so drifting load hits both alike.
    let (mut alt, mut same) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        for k in 0..2 {
            let mut s1 = start(&ad_a)?;
            let mut s2 = start(if k == 0 { &ad_b } else { &ad_a })?;
            for p in 0..PASSES {
                let s = if p % 2 == 0 { &mut s1 } else { &mut s2 };
                let t0 = Instant::now();
                rt.step_batch(&mut [s], 256)?;
                let dt = t0.elapsed().as_secs_f64() * 1e6;
                if k == 0 {
                    alt.push(dt)
                } else {
                    same.push(dt)
                }
            }
        }
    }
    alt.sort_by(f64::total_cmp);
    same.sort_by(f64::total_cmp);
    Ok(median(&alt) - median(&same))
}

/// Run `hearth bench experts` on a scratch daemon started from `exe`.
pub fn run_experts(exe: &Path, from: &Store, b: &ExpertsBench) -> Result<ExpertsBenchResult> {
    if b.adapters.is_empty() {
        bail!(
            "give at least one adapter file (--adapter PATH) for {}",
            b.model
        );
    }
    if b.n_gen == 0 || b.reps == 0 {
        bail!("the token count and repetitions must each be at least 1");
    }
    let loadavg_before = loadavg();
    let d = ScratchDaemon::start(exe, from, &b.model, b.threads)?;
    let store = Store::open(Home::at(d.home()))?;
    let t = d.target.clone();
    let adapter = |i: usize| &b.adapters[i % b.adapters.len()];
    // The base loaded before any clock runs.
    stream_one(&t, &b.model, &prompt(0), 2, Instant::now(), None)
        .context("the warm-up request failed")?;

    // (a) Cold against warm: a fresh expert per repetition; the warm
    // request leads with another word so no prompt cache serves it.
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for k in 0..b.reps.max(3) {
        let name = format!("cold{k}");
        make_expert(&store, &name, &b.model, adapter(k))?;
        cold.push(stream_one(&t, &name, &prompt(k), 1, Instant::now(), None)?.ttft * 1e3);
        warm.push(stream_one(&t, &name, &prompt(k + 1), 1, Instant::now(), None)?.ttft * 1e3);
    }
    cold.sort_by(f64::total_cmp);
    warm.sort_by(f64::total_cmp);

    // (c) Eight streams on eight adapters, on one, on none.
    let experts: Vec<String> = (0..8).map(|i| format!("e{i}")).collect();
    for (i, e) in experts.iter().enumerate() {
        make_expert(&store, e, &b.model, adapter(i))?;
        stream_one(&t, e, &prompt(i), 1, Instant::now(), None)?;
    }
    let one: Vec<String> = vec![experts[0].clone(); 8];
    let base: Vec<String> = vec![b.model.clone(); 8];
    let (mut t8, mut t1, mut t0) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..b.reps {
        t8.push(streams_tps(&t, &experts, b.n_gen)?);
        t1.push(streams_tps(&t, &one, b.n_gen)?);
        t0.push(streams_tps(&t, &base, b.n_gen)?);
    }
    for v in [&mut t8, &mut t1, &mut t0] {
        v.sort_by(f64::total_cmp);
    }

    // (d) What the kernel says against what the governor holds.
    let rss_bytes = pid_rss(d.pid());
    let ps: Value = ureq::get(&format!("{}/api/ps", t.url))
        .header("Authorization", &format!("Bearer {}", t.token))
        .call()
        .context("asking the daemon for /api/ps")?
        .into_body()
        .read_json()
        .context("/api/ps is not JSON")?;
    let governor_bytes = ps["hearth"]["used_bytes"].as_u64().unwrap_or(0);
    let metrics = ureq::get(&format!("{}/metrics", t.url))
        .header("Authorization", &format!("Bearer {}", t.token))
        .call()
        .context("asking the daemon for /metrics")?
        .into_body()
        .read_to_string()?;
    let series = |suffix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("hearth_adapter_swap_seconds_{suffix}")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let scheduler_swap_us = series("sum") / series("count").max(1.0) * 1e6;
    drop(d);

    // (b) In process, with the daemon gone so it does not compete.
    let path = from.ensure(&b.model, hearth_store::Progress::Quiet)?;
    let rt = hearth_runtime::Runtime::load(
        &path,
        b.threads.unwrap_or_else(hearth_engine::physical_cores),
    )?;
    let switch_us = switch_cost_us(&rt, adapter(0), adapter(1), b.reps)?;

    Ok(ExpertsBenchResult {
        model: b.model.clone(),
        cold_ttft_ms: median(&cold),
        warm_ttft_ms: median(&warm),
        switch_us,
        scheduler_swap_us,
        tps_8_adapters: median(&t8),
        tps_1_adapter: median(&t1),
        tps_base: median(&t0),
        rss_bytes,
        governor_bytes,
        loadavg_before,
        loadavg_after: loadavg(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_arithmetic() {
        let timed = [
            Timed {
                ttft: 0.1,
                end: 1.1,
                tokens: 11,
            },
            Timed {
                ttft: 0.3,
                end: 2.3,
                tokens: 21,
            },
        ];
        let l = summarise(2, &timed, 2.5);
        assert_eq!(l.completion_tokens, 32);
        assert!((l.aggregate_tps - 32.0 / 2.5).abs() < 1e-9);
        assert!((l.ttft_ms_p50 - 200.0).abs() < 1e-9);
        assert!((l.ttft_ms_max - 300.0).abs() < 1e-9);
        assert!((l.stream_tps - 10.0).abs() < 1e-9);
    }

    /// A host twice as fast in one round doubles both levels there, and
    /// the paired ratio still sees 3. In the second case the rounds say
    /// 2.5, 2.0 and 3.0, whose median is 2.5, where the ratio of the
    /// medians would say 3.0 (300 / 100).
    #[test]
    fn paired_ratio_cancels_drift_between_rounds() {
        let single = [100.0, 200.0, 100.0];
        let eight = [300.0, 600.0, 300.0];
        assert!((paired_ratio(&eight, &single) - 3.0).abs() < 1e-12);
        assert!((paired_ratio(&[250.0, 400.0, 300.0], &single) - 2.5).abs() < 1e-12);
    }

    #[test]
    fn prompts_differ_from_the_first_word() {
        let first: std::collections::HashSet<String> = (0..TOPICS.len())
            .map(|i| {
                prompt(i)
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(first.len(), TOPICS.len());
        let all: std::collections::HashSet<String> = (0..32).map(prompt).collect();
        assert_eq!(all.len(), 32);
    }
}
