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
//! Reported per level (the median over repetitions): aggregate tokens per
//! second (all completion tokens over the wall time from the first request
//! to the last end), time to first token (p50 and worst), and each stream's
//! own decode rate. This module owns the load generator and its arithmetic;
//! the daemon it measures is the ordinary one, unchanged.

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
    let mut levels = Vec::new();
    for &n in &b.streams {
        let mut reps = Vec::new();
        for _ in 0..b.reps {
            reps.push(level_once(target, b, n)?);
        }
        reps.sort_by(|a, b| a.aggregate_tps.total_cmp(&b.aggregate_tps));
        levels.push(reps.swap_remove(reps.len() / 2));
    }
    Ok(ServeBenchResult {
        model: b.model.clone(),
        n_gen: b.n_gen,
        levels,
    })
}

fn level_once(target: &Target, b: &ServeBench, n: usize) -> Result<Level> {
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
    let probe = {
        let (t, model) = (target.clone(), b.model.clone());
        let (started, finished) = (started.clone(), finished.clone());
        std::thread::spawn(move || probes(&t, &model, n, &started, &finished))
    };
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
    let mut probe = probe
        .join()
        .map_err(|_| anyhow::anyhow!("the probe thread panicked"))??;
    probe.sort_by(f64::total_cmp);
    level.probe_ttft_ms_p50 = (!probe.is_empty()).then(|| median(&probe));
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
    }
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
