//! The memory governor seen from outside: a real `hearth serve` under a
//! `--memory-budget`, driven over real HTTP.
//!
//! - twenty experts over two bases through a budget that holds one base
//!   and a few adapters: the process's resident memory stays under the
//!   budget plus a measured allowance, evictions happen, every request
//!   succeeds;
//! - a request that cannot fit even after evicting is a 503 naming the
//!   budget, and a budget too small for any model refuses to start;
//! - `keep_alive: 0` unloads after the request, and `/api/ps` and
//!   `hearth ps` show estimated and measured bytes;
//! - an expert deleted while its request runs: that request finishes, new
//!   ones get 404.

#[path = "common/daemon.rs"]
mod daemon;

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use daemon::{Daemon, Home};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

fn ps(d: &Daemon, token: &str) -> Value {
    let (status, text) = d.get(token, "/api/ps");
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).expect("ps JSON")
}

fn metrics(d: &Daemon, token: &str) -> String {
    d.get(token, "/metrics").1
}

/// The sum of a metric's samples whose line starts with `prefix`.
fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number");
    kb * 1024
}

fn adapters_dir() -> std::path::PathBuf {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/adapters");
    assert!(p.is_dir(), "shared/adapters is missing: {}", p.display());
    p
}

fn create(home: &Home, args: &[&str]) {
    home.hearth_ok(&[&["expert", "create"], args].concat());
}

/// An expert on smollm2 with one of the shared adapters (GGUF form).
fn adapter_expert(home: &Home, name: &str, adapter: &str) {
    let gguf = adapters_dir().join(format!("{adapter}/{adapter}.gguf"));
    create(
        home,
        &[
            name,
            "--base",
            "smollm2",
            "--adapter",
            gguf.to_str().unwrap(),
        ],
    );
}

fn chat(model: &str, prompt: &str, n: u32) -> Value {
    json!({"model": model, "max_tokens": n, "temperature": 0,
           "messages": [{"role": "user", "content": prompt}]})
}

/// Twenty experts over two bases, each requested in turn (alternating
/// bases, so every turn needs the other base's room) through a budget of
/// 448 MiB: it holds gemma3 (about 370 MiB reserved: 253 MB of weights and
/// its 262k-token vocabulary's scratch) or smollm2 with adapters, never
/// both.
///
/// The process's resident memory is sampled throughout and must stay under
/// the budget plus an allowance for what the governor does not budget: the
/// process itself (binary, tokio, the allocator's arenas, thread stacks),
/// measured here as the resident set of the idle daemon before any request,
/// plus 48 MiB for the allocator's slack (freed memory it has not handed
/// back yet) and for the router-free request path's small buffers.
#[test]
fn resident_memory_stays_under_the_budget_across_twenty_experts() {
    let home = Home::with_models(&["smollm2", "gemma3"]);
    let adapters = ["sentiment", "shout", "extract"];
    for i in 0..10 {
        let file = adapters_dir().join(format!("{0}/{0}.gguf", adapters[i % adapters.len()]));
        let (name, system) = (format!("s{i}"), format!("You are helper number {i}."));
        create(
            &home,
            &[
                &name,
                "--base",
                "smollm2",
                "--adapter",
                file.to_str().unwrap(),
                "--system",
                &system,
            ],
        );
        let (name, system) = (format!("g{i}"), format!("You are assistant number {i}."));
        create(&home, &[&name, "--base", "gemma3", "--system", &system]);
    }
    let token = home.add_app("turns", &[]);
    let budget = 448 * MIB;
    let d = Daemon::start(&home, &["--memory-budget", "448MiB", "-t", "2"]);
    let pid = d.child.as_ref().expect("running").id();
    let idle = rss(pid);
    let allowance = idle + 48 * MIB;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut max = 0;
            while !stop.load(Ordering::SeqCst) {
                max = max.max(rss(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            max
        })
    };
    for i in 0..10 {
        for base in ["s", "g"] {
            let name = format!("{base}{i}");
            let (status, body) = d.post(
                &token,
                "/v1/chat/completions",
                &chat(&name, "Say hello.", 3),
            );
            assert_eq!(status, 200, "{name}: {body}\n{}", d.log());
            assert_eq!(body["model"], name.as_str());
        }
    }
    stop.store(true, Ordering::SeqCst);
    let max = sampler.join().expect("sampler");
    eprintln!(
        "peak resident {} MiB; budget {} MiB; idle daemon {} MiB",
        max / MIB,
        budget / MIB,
        idle / MIB
    );
    assert!(
        max <= budget + allowance,
        "resident memory peaked at {} MiB, over the budget {} MiB + allowance {} MiB (idle {} MiB)",
        max / MIB,
        budget / MIB,
        allowance / MIB,
        idle / MIB
    );
    let m = metrics(&d, &token);
    assert!(
        metric_sum(&m, "hearth_model_evictions_total{") >= 10.0,
        "each turn evicts the other base:\n{m}"
    );
    assert!(
        metric_sum(&m, "hearth_expert_evictions_total{") >= 1.0,
        "adapters are evicted too:\n{m}"
    );
    assert!(metric_sum(&m, "hearth_expert_loads_total{") >= 10.0, "{m}");
    let used = metric_sum(&m, "hearth_governor_used_bytes{");
    assert!(used > 0.0 && used <= budget as f64, "{m}");
    assert!(
        m.contains(&format!("hearth_governor_budget_bytes {budget}")),
        "{m}"
    );
    // Never both bases at once.
    let p = ps(&d, &token);
    let bases = p["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "base")
        .count();
    assert_eq!(bases, 1, "{p}");
    assert!(p["hearth"]["used_bytes"].as_u64().unwrap() <= budget, "{p}");
}

/// A request whose KV cache alone cannot fit beside its base is refused at
/// once with a 503 that names the budget; a short one still runs. A budget
/// too small for any model is refused at start; an unknown expert is 404.
#[test]
fn what_cannot_fit_is_refused_by_name() {
    let home = Home::with_models(&["smollm2"]);
    let out = home.hearth(&["serve", "--port", "0", "--memory-budget", "64MiB"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("64 MiB") && err.contains("smollm2") && err.contains("--memory-budget"),
        "{err}"
    );
    let out = home.hearth(&["serve", "--port", "0", "--memory-budget", "lots"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--memory-budget"),
        "{err}"
    );

    let token = home.add_app("fits", &[]);
    let d = Daemon::start(&home, &["--memory-budget", "256MiB"]);
    // 8192 positions of SmolLM2's KV cache do not fit in 256 MiB with it.
    let (status, body) = d.post(
        &token,
        "/api/generate",
        &json!({"model": "smollm2", "prompt": "Tell me everything.", "stream": false,
               "options": {"num_ctx": 8192, "num_predict": -1}}),
    );
    assert_eq!(status, 503, "{body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("memory budget 256 MiB") && msg.contains("KV cache"),
        "{msg}"
    );
    let (status, body) = d.post(&token, "/v1/chat/completions", &chat("smollm2", "Hi", 4));
    assert_eq!(status, 200, "{body}");
    let (status, body) = d.post(
        &token,
        "/v1/chat/completions",
        &chat("no-such-expert", "Hi", 4),
    );
    assert_eq!(status, 404, "{body}");
}

/// `keep_alive: 0` unloads the model once the request ends; while loaded,
/// `/api/ps` and `hearth ps` show what each thing was estimated to cost
/// and what was measured.
#[test]
fn keep_alive_and_ps_bytes() {
    let home = Home::with_models(&["smollm2"]);
    adapter_expert(&home, "sentiment", "sentiment");
    let token = home.add_app("keep", &[]);
    let d = Daemon::start(&home, &["--memory-budget", "1GiB"]);
    let (status, body) = d.post(
        &token,
        "/api/chat",
        &json!({"model": "sentiment", "stream": false, "keep_alive": "5m",
               "messages": [{"role": "user", "content": "Great film!"}],
               "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200, "{body}");
    let p = ps(&d, &token);
    assert_eq!(p["hearth"]["budget_bytes"], 1u64 << 30, "{p}");
    let models = p["models"].as_array().expect("models");
    let base = models
        .iter()
        .find(|m| m["name"] == "smollm2")
        .expect("the base is loaded");
    assert_eq!(base["kind"], "base");
    assert_eq!(base["size_vram"], 0);
    assert!(base["expires_at"].is_string(), "{base}");
    let est = base["estimated_bytes"].as_u64().unwrap();
    let res = base["resident_bytes"].as_u64().unwrap();
    assert!(res > 50 * MIB, "the mapping is resident: {base}");
    assert!(est >= res, "the estimate covers the mapping: {base}");
    let expert = models
        .iter()
        .find(|m| m["name"] == "sentiment")
        .expect("the expert's adapter is loaded");
    assert_eq!(expert["kind"], "expert");
    assert_eq!(expert["base"], "smollm2");
    let a_est = expert["estimated_bytes"].as_u64().unwrap();
    assert!(a_est > 0 && a_est == expert["resident_bytes"].as_u64().unwrap());
    let used = p["hearth"]["used_bytes"].as_u64().unwrap();
    assert!(used >= est + a_est, "{p}");

    let out = home.hearth_ok(&["ps", "--json"]);
    let cli: Value = serde_json::from_slice(&out.stdout).expect("ps --json");
    assert!(cli["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "smollm2" && m["resident_bytes"].as_u64() > Some(0)));
    let out = home.hearth(&["ps"]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    for col in [
        "NAME",
        "KIND",
        "BASE",
        "ESTIMATED",
        "RESIDENT",
        "KV",
        "UNTIL",
        "REQUESTS",
    ] {
        assert!(table.contains(col), "{table}");
    }
    assert!(
        table.contains("sentiment") && table.contains("expert"),
        "{table}"
    );
    assert!(table.contains("budget 1.00 GiB"), "{table}");

    // keep_alive 0: gone once the request is done.
    let (status, body) = d.post(
        &token,
        "/api/generate",
        &json!({"model": "smollm2", "prompt": "Hi", "stream": false, "keep_alive": 0,
               "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200, "{body}");
    let t0 = Instant::now();
    loop {
        let p = ps(&d, &token);
        if !p["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "smollm2")
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "still loaded: {p}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = metrics(&d, &token);
    assert!(
        m.contains("hearth_model_evictions_total{model=\"smollm2\",reason=\"keep_alive\"} 1"),
        "{m}"
    );
    // A bad keep_alive is the client's error.
    let (status, body) = d.post(
        &token,
        "/api/generate",
        &json!({"model": "smollm2", "prompt": "Hi", "keep_alive": "soon"}),
    );
    assert_eq!(status, 400, "{body}");
}

/// An expert removed while its request streams: that request runs to its
/// end; the next one is a 404.
#[test]
fn an_expert_deleted_mid_request_finishes_then_is_gone() {
    let home = Home::with_models(&["smollm2"]);
    adapter_expert(&home, "shout", "shout");
    let token = home.add_app("rm", &[]);
    let d = Daemon::start(&home, &[]);
    let mut body = chat("shout", "Write a long story about the sea.", 200);
    body["stream"] = json!(true);
    body["ignore_eos"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = d.send(&token, "/v1/chat/completions", &body);
    assert_eq!(resp.status().as_u16(), 200);
    let mut lines = BufReader::new(resp.into_body().into_reader()).lines();
    // The first event: the request is admitted and running.
    let first = lines.next().expect("a first line").expect("line");
    assert!(first.starts_with("data: "), "{first}");
    home.hearth_ok(&["expert", "rm", "shout"]);
    let mut completion = None;
    for line in lines {
        let line = line.expect("line");
        if let Some(data) = line.strip_prefix("data: ") {
            if data == "[DONE]" {
                break;
            }
            let v: Value = serde_json::from_str(data).expect("JSON");
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                completion = Some(n);
            }
        }
    }
    assert_eq!(completion, Some(200), "the running request finished");
    let (status, body) = d.post(&token, "/v1/chat/completions", &chat("shout", "hi", 2));
    assert_eq!(status, 404, "{body}");
}

/// The configured default keep_alive unloads an idle model whose requests
/// did not say; Ollama's empty request with `keep_alive: 0` unloads at once.
#[test]
fn default_keep_alive_and_the_unload_request() {
    let home = Home::with_models(&["smollm2"]);
    home.config("keep_alive = \"1s\"\n");
    let token = home.add_app("idle", &[]);
    let d = Daemon::start(&home, &[]);
    let loaded = |d: &Daemon| {
        ps(d, &token)["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "smollm2")
    };
    let wait_unloaded = |d: &Daemon| {
        let t0 = Instant::now();
        while loaded(d) {
            assert!(t0.elapsed() < Duration::from_secs(30), "never unloaded");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (status, body) = d.post(&token, "/v1/chat/completions", &chat("smollm2", "Hi", 2));
    assert_eq!(status, 200, "{body}");
    wait_unloaded(&d);

    // Loaded by an empty request (keep it), then unloaded by one with 0.
    let (status, body) = d.post(
        &token,
        "/api/generate",
        &json!({"model": "smollm2", "keep_alive": -1}),
    );
    assert_eq!(
        (status, body["done_reason"].clone()),
        (200, json!("load")),
        "{body}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(loaded(&d), "a negative keep_alive keeps it");
    let (status, body) = d.post(
        &token,
        "/api/generate",
        &json!({"model": "smollm2", "keep_alive": 0}),
    );
    assert_eq!(
        (status, body["done_reason"].clone()),
        (200, json!("unload")),
        "{body}"
    );
    wait_unloaded(&d);
    let m = metrics(&d, &token);
    assert!(
        m.contains("hearth_model_evictions_total{model=\"smollm2\",reason=\"keep_alive\"} 2"),
        "{m}"
    );
}
