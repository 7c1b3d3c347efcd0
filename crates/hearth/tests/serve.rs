//! `hearth serve` driven over real HTTP (and its Unix socket): the OpenAI and
//! Ollama shapes, every error class, identity and limits, batching seen
//! from outside, cancellation, the bounded queue and the lifecycle.
//!
//! Each test starts its own daemon on a free port in a temporary home that
//! links in the default SmolLM2 model from the developer's store.

#[path = "common/daemon.rs"]
mod daemon;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use daemon::{agent, Daemon, Home};
use serde_json::{json, Value};

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn call(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> Reply {
    let a = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let resp = match (method, body) {
        ("GET", _) => {
            let mut r = a.get(url);
            if let Some(h) = &auth {
                r = r.header("Authorization", h);
            }
            r.call()
        }
        ("DELETE", Some(b)) => {
            let mut r = a.delete(url).force_send_body();
            if let Some(h) = &auth {
                r = r.header("Authorization", h);
            }
            r.content_type("application/json").send(b)
        }
        (_, b) => {
            let mut r = a.post(url);
            if let Some(h) = &auth {
                r = r.header("Authorization", h);
            }
            r.content_type("application/json").send(b.unwrap_or(""))
        }
    }
    .expect("HTTP request");
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = resp.into_body().read_to_string().expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        body,
    }
}

fn post(d: &Daemon, token: &str, path: &str, body: Value) -> Reply {
    call("POST", &d.url(path), Some(token), Some(&body.to_string()))
}

/// Stream a request and return its lines (SSE `data:` payloads or NDJSON).
fn stream_lines(d: &Daemon, token: &str, path: &str, body: Value) -> Vec<Value> {
    let resp = d.send(token, path, &body);
    assert_eq!(resp.status().as_u16(), 200);
    let reader = BufReader::new(resp.into_body().into_reader());
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line.expect("line");
        let payload = line.strip_prefix("data: ").unwrap_or(&line).trim();
        if payload.is_empty() {
            continue;
        }
        if payload == "[DONE]" {
            out.push(Value::String("[DONE]".into()));
            continue;
        }
        out.push(serde_json::from_str(payload).expect("JSON line"));
    }
    out
}

fn chat_body(prompt: &str, n: u32) -> Value {
    json!({"model": "smollm2", "messages": [{"role": "user", "content": prompt}], "max_tokens": n, "temperature": 0})
}

fn content(r: &Reply) -> String {
    r.body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {}", r.body))
        .to_string()
}

#[test]
fn openai_and_ollama_shapes() {
    let home = Home::with_models(&["smollm2"]);
    let token = home.add_app("shapes", &[]);
    let d = Daemon::start(&home, &[]);

    let r = post(
        &d,
        &token,
        "/v1/chat/completions",
        chat_body("Why is the sky blue?", 12),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["object"], "chat.completion");
    assert_eq!(r.body["model"], "smollm2");
    assert_eq!(r.body["choices"][0]["finish_reason"], "length");
    let u = &r.body["usage"];
    assert_eq!(u["completion_tokens"], 12);
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + 12)
    );
    let whole = content(&r);
    assert!(!whole.is_empty());

    // Streaming gives the same greedy text, then usage, then [DONE].
    let mut body = chat_body("Why is the sky blue?", 12);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let lines = stream_lines(&d, &token, "/v1/chat/completions", body);
    assert_eq!(lines.last().unwrap(), "[DONE]");
    let usage = &lines[lines.len() - 2];
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"]["completion_tokens"], 12);
    let streamed: String = lines
        .iter()
        .filter_map(|l| l["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, whole);
    assert_eq!(lines[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(lines
        .iter()
        .any(|l| l["choices"][0]["finish_reason"] == "length"));

    // A stop string ends the text before it.
    let cut = whole
        .split_whitespace()
        .nth(2)
        .expect("three words")
        .to_string();
    let mut body = chat_body("Why is the sky blue?", 12);
    body["stop"] = json!([cut.clone()]);
    let r = post(&d, &token, "/v1/chat/completions", body);
    assert_eq!(r.body["choices"][0]["finish_reason"], "stop", "{}", r.body);
    let stopped = content(&r);
    assert!(
        whole.starts_with(&stopped) && !stopped.contains(&cut),
        "{stopped:?} vs {whole:?}"
    );

    // Log-probabilities: greedy picks the top candidate.
    let mut body = chat_body("Hello", 4);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(3);
    let r = post(&d, &token, "/v1/chat/completions", body);
    let lp = r.body["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("logprobs")
        .clone();
    assert_eq!(lp.len(), 4);
    for e in &lp {
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["token"], e["token"]);
        assert!(e["logprob"].as_f64().unwrap() <= 0.0);
        assert!(top[0]["logprob"].as_f64() >= top[1]["logprob"].as_f64());
    }

    // Completions.
    let r = post(
        &d,
        &token,
        "/v1/completions",
        json!({"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["object"], "text_completion");
    assert!(r.body["choices"][0]["text"].as_str().is_some());
    assert_eq!(r.body["usage"]["completion_tokens"], 5);

    // Ollama: NDJSON stream equals the one-shot answer.
    let g = json!({"model": "smollm2:latest", "prompt": "Name a colour.", "options": {"num_predict": 8, "temperature": 0}});
    let lines = stream_lines(&d, &token, "/api/generate", g.clone());
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true);
    assert_eq!(last["eval_count"], 8);
    assert!(last["prompt_eval_count"].as_u64().unwrap() > 0);
    let streamed: String = lines
        .iter()
        .filter_map(|l| l["response"].as_str())
        .collect();
    let mut once = g.clone();
    once["stream"] = json!(false);
    let r = post(&d, &token, "/api/generate", once);
    assert_eq!(
        r.body["response"].as_str(),
        Some(streamed.as_str()),
        "{}",
        r.body
    );

    let r = post(
        &d,
        &token,
        "/api/chat",
        json!({"model": "smollm2", "stream": false, "messages": [{"role": "user", "content": "Hi"}], "options": {"num_predict": 4, "temperature": 0}}),
    );
    assert_eq!(r.body["message"]["role"], "assistant", "{}", r.body);
    assert_eq!(r.body["done"], true);

    let tags = call("GET", &d.url("/api/tags"), Some(&token), None);
    let m = &tags.body["models"][0];
    assert_eq!(m["name"], "smollm2");
    assert_eq!(m["details"]["quantization_level"], "Q4_1");
    assert_eq!(m["details"]["family"], "llama");
    let show = post(&d, &token, "/api/show", json!({"model": "smollm2"}));
    assert_eq!(
        show.body["model_info"]["general.architecture"], "llama",
        "{}",
        show.body
    );
    assert!(show.body["template"].as_str().unwrap().contains("im_start"));
    let ps = call("GET", &d.url("/api/ps"), Some(&token), None);
    assert_eq!(ps.body["models"][0]["name"], "smollm2");
    // `hearth ps` asks the daemon over its socket with the admin token.
    let out = home.hearth_ok(&["ps", "--json"]);
    let ps: Value = serde_json::from_slice(&out.stdout).expect("ps --json");
    assert_eq!(ps["models"][0]["name"], "smollm2");
    let out = home.hearth(&["ps"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("smollm2"));
    let v = call("GET", &d.url("/api/version"), None, None);
    assert_eq!(v.status, 401, "identity is needed even for the version");
    let v = call("GET", &d.url("/api/version"), Some(&token), None);
    assert!(v.body["version"].is_string());
    let models = call("GET", &d.url("/v1/models"), Some(&token), None);
    assert_eq!(models.body["data"][0]["id"], "smollm2");

    // Metrics name the app and model; the request id comes back.
    let m = call("GET", &d.url("/metrics"), Some(&token), None);
    let text = m.body.as_str().unwrap_or_default().to_string();
    assert!(
        text.contains("hearth_requests_total{app=\"shapes\",model=\"smollm2\",endpoint=\"/v1/chat/completions\",status=\"200\"}"),
        "{text}"
    );
    assert!(
        text.contains("hearth_time_to_first_token_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("hearth_tokens_total{app=\"shapes\",model=\"smollm2\",kind=\"completion\"}")
    );
    assert!(text.contains("hearth_loaded_models 1"));
    assert!(m
        .header("x-request-id")
        .is_some_and(|v| v.starts_with("req-")));
}

#[test]
fn errors_auth_and_limits() {
    let home = Home::with_models(&["smollm2"]);
    let token = home.add_app("errs", &[]);
    let other = home.add_app("gemma-only", &["--models", "gemma3"]);
    let tpm = home.add_app("thrifty", &["--tokens-per-minute", "10"]);
    let d = Daemon::start(&home, &[]);
    let chat = chat_body("Hi", 4).to_string();
    let url = d.url("/v1/chat/completions");

    let r = call("POST", &url, None, Some(&chat));
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["type"], "authentication_error");
    let r = call("POST", &url, Some("hth_wrong"), Some(&chat));
    assert_eq!(r.status, 401);
    let r = call("POST", &url, Some(&other), Some(&chat));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("smollm2"));

    let r = call(
        "POST",
        &url,
        Some(&token),
        Some("{\"model\": \"smollm2\", "),
    );
    assert_eq!(r.status, 400);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("JSON"));
    let r = post(
        &d,
        &token,
        "/v1/chat/completions",
        json!({"model": "smollm2", "messages": [], "temperature": "warm"}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "temperature", "{}", r.body);
    let r = post(
        &d,
        &token,
        "/v1/chat/completions",
        json!({"model": "smollm2", "messages": [{"role": "user", "content": 7}]}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body["error"]["param"], "messages[0].content",
        "{}",
        r.body
    );
    let r = post(
        &d,
        &token,
        "/v1/chat/completions",
        json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    // Unknown fields are ignored.
    let mut b = chat_body("Hi", 2);
    b["user"] = json!("someone");
    b["x_future"] = json!({"a": 1});
    assert_eq!(post(&d, &token, "/v1/chat/completions", b).status, 200);

    // A prompt over the context is a 400, never a truncation.
    let long = "word ".repeat(6000);
    let r = post(&d, &token, "/v1/chat/completions", chat_body(&long, 4));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("context"),
        "{}",
        r.body
    );

    // Ollama's error form, identity failures included.
    let r = call("GET", &d.url("/api/tags"), None, None);
    assert_eq!(r.status, 401);
    assert!(r.body["error"].is_string(), "{}", r.body);
    let r = post(
        &d,
        &token,
        "/api/generate",
        json!({"model": "nope", "prompt": "x"}),
    );
    assert_eq!(r.status, 404);
    assert!(r.body["error"].is_string(), "{}", r.body);
    let r = call(
        "DELETE",
        &d.url("/api/delete"),
        Some(&token),
        Some(r#"{"model":"smollm2"}"#),
    );
    assert_eq!(r.status, 403, "apps may not delete models: {}", r.body);
    let r = call("GET", &d.url("/v1/nothing"), Some(&token), None);
    assert_eq!(r.status, 404);

    // Tokens per minute: the first request spends the minute, the next waits.
    let r = post(&d, &tpm, "/v1/chat/completions", chat_body("Hi", 4));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(&d, &tpm, "/v1/chat/completions", chat_body("Hi", 4));
    assert_eq!(r.status, 429, "{}", r.body);
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait));

    // The audit has rows for these requests but never their text.
    let marker = "zebra-marker-in-a-prompt";
    assert_eq!(
        post(&d, &token, "/v1/chat/completions", chat_body(marker, 2)).status,
        200
    );
    drop(d);
    let mut db = Vec::new();
    for f in ["state.sqlite3", "state.sqlite3-wal"] {
        if let Ok(b) = std::fs::read(home.path().join(f)) {
            db.extend(b);
        }
    }
    assert!(!db.is_empty(), "no state database");
    assert!(
        !db.windows(marker.len()).any(|w| w == marker.as_bytes()),
        "prompt text reached the database"
    );
    let rid = b"/v1/chat/completions";
    assert!(db.windows(rid.len()).any(|w| w == rid), "no audit rows");
}

#[test]
fn concurrency_limit_is_429() {
    let home = Home::with_models(&["smollm2"]);
    let one = home.add_app("one-at-a-time", &["--max-concurrent", "1"]);
    let d = Daemon::start(&home, &[]);
    let url = d.url("/v1/chat/completions");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut b = chat_body("Tell me a long story about a dragon.", 200);
            b["stream"] = json!(true);
            let resp = agent()
                .post(&url)
                .header("Authorization", &format!("Bearer {one}"))
                .send(&b.to_string())
                .unwrap();
            let mut r = BufReader::new(resp.into_body().into_reader());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            tx.send(()).unwrap();
            let mut rest = String::new();
            let _ = r.read_to_string(&mut rest);
        });
        rx.recv().unwrap();
        let r = post(&d, &one, "/v1/chat/completions", chat_body("Hi", 2));
        assert_eq!(r.status, 429, "{}", r.body);
        assert!(r.header("retry-after").is_some());
    });
}

#[test]
fn batching_never_changes_an_answer() {
    let home = Home::with_models(&["smollm2"]);
    let token = home.add_app("batch", &[]);
    let d = Daemon::start(&home, &[]);
    let prompts: Vec<String> = (0..8)
        .map(|i| format!("Write one sentence about the number {i}."))
        .collect();
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| content(&post(&d, &token, "/v1/chat/completions", chat_body(p, 24))))
        .collect();
    let together: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = prompts
            .iter()
            .map(|p| {
                let (d, token) = (&d, &token);
                s.spawn(move || content(&post(d, token, "/v1/chat/completions", chat_body(p, 24))))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(alone, together);
    // And they did share passes.
    let m = call("GET", &d.url("/metrics"), Some(&token), None);
    let text = m.body.as_str().unwrap_or_default().to_string();
    let count = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {text}"))
    };
    let single = count("hearth_batch_size_bucket{model=\"smollm2\",le=\"1\"}");
    let all = count("hearth_batch_size_count{model=\"smollm2\"}");
    assert!(single < all, "no forward pass held more than one sequence");
    // The prompts share the template's system prompt, computed once.
    assert!(count("hearth_prefix_tokens_reused_total{model=\"smollm2\"}") > 0.0);
}

/// Raw HTTP over the Unix socket: the request and the status line.
fn unix_get(socket: &std::path::Path, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = UnixStream::connect(socket).expect("connect to the socket");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, out)
}

#[test]
fn unix_socket_identity_by_uid_and_anonymous() {
    use std::os::unix::fs::MetadataExt;
    let home = Home::with_models(&["smollm2"]);
    let uid = std::fs::metadata(home.path()).unwrap().uid().to_string();
    let _ = home.add_app("local-user", &["--uid", &uid]);
    let d = Daemon::start(&home, &[]);
    let (status, _) = unix_get(&d.socket, "/v1/models", None);
    assert_eq!(status, 200, "the peer's uid maps to an app");
    let r = call("GET", &d.url("/v1/models"), None, None);
    assert_eq!(r.status, 401, "on TCP there is no uid to go by");
    drop(d);

    let home = Home::with_models(&["smollm2"]);
    let mut d = Daemon::start(&home, &["--allow-anonymous"]);
    let r = call("GET", &d.url("/v1/models"), None, None);
    assert_eq!(r.status, 200);
    assert!(
        d.log().contains("allow-anonymous"),
        "no warning: {}",
        d.log()
    );
    let st = d.terminate(Duration::from_secs(20));
    assert!(st.success(), "{st:?}\n{}", d.log());
}

/// SIGTERM as soon as the daemon says it listens ends it gracefully
/// (exit 0): the handlers are in place before the listeners answer. They
/// once were installed after, and a busy machine let the default action
/// kill a daemon that had already served a request.
#[test]
fn sigterm_right_after_listening_exits_cleanly() {
    let home = Home::with_models(&["smollm2"]);
    for round in 0..5 {
        let mut d = Daemon::start(&home, &["--allow-anonymous"]);
        let st = d.terminate(Duration::from_secs(20));
        assert!(st.success(), "round {round}: {st:?}\n{}", d.log());
    }
}

#[test]
fn cancellation_queue_and_lifecycle() {
    let home = Home::with_models(&["smollm2"]);
    home.config("max_batch = 1\nmax_queue = 1\n");
    let token = home.add_app("life", &[]);
    let mut d = Daemon::start(&home, &[]);

    // A second daemon on the same home refuses, naming the first.
    let out = home.hearth(&["serve", "--port", "0", "--socket", "none"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");

    let running = |d: &Daemon| -> (u64, u64) {
        let ps = call("GET", &d.url("/api/ps"), Some(&token), None);
        let m = &ps.body["models"][0];
        (
            m["running"].as_u64().unwrap_or(0),
            m["waiting"].as_u64().unwrap_or(0),
        )
    };
    let open_stream = |n: u32| {
        let mut b = chat_body("Tell me a long story about a lighthouse keeper.", n);
        b["stream"] = json!(true);
        let resp = agent()
            .post(&d.url("/v1/chat/completions"))
            .header("Authorization", &format!("Bearer {token}"))
            .send(&b.to_string())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        // Past the role chunk (sent at once) to the first token, so the
        // sequence is surely in the batch, not still in the queue.
        let mut r = BufReader::new(resp.into_body().into_reader());
        loop {
            let mut line = String::new();
            assert!(
                r.read_line(&mut line).unwrap() > 0,
                "the stream ended early"
            );
            if line.starts_with("data: ") && !line.contains("\"role\"") {
                break;
            }
        }
        r
    };

    // A client that goes away cancels its generation at the next step.
    let r = open_stream(4000);
    assert_eq!(running(&d).0, 1);
    drop(r);
    let t0 = Instant::now();
    while running(&d).0 != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the abandoned generation kept running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // One running, one waiting: the next is a 503 naming the queue.
    let a = open_stream(4000);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| post(&d, &token, "/v1/chat/completions", chat_body("Hi", 2)));
        let t0 = Instant::now();
        while running(&d).1 != 1 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the second request never queued"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let r = post(&d, &token, "/v1/chat/completions", chat_body("Hi", 2));
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("queue"));
        drop(a);
        let w = waiter.join().unwrap();
        assert_eq!(w.status, 200, "{}", w.body);
    });

    // SIGTERM lets a stream in flight finish, then exits 0.
    let mut r = open_stream(40);
    std::thread::sleep(Duration::from_millis(100));
    let pid = d.child.as_ref().unwrap().id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    assert!(
        rest.trim_end().ends_with("data: [DONE]"),
        "the stream was cut: {rest}"
    );
    let st = d.terminate(Duration::from_secs(30));
    assert!(st.success(), "exit status {st:?}\n{}", d.log());
    assert!(!d.socket.exists(), "the socket was left behind");
}

#[test]
fn one_apps_flood_does_not_starve_another() {
    let home = Home::with_models(&["smollm2"]);
    home.config("max_batch = 1\n");
    let flood = home.add_app("flood", &[]);
    let single = home.add_app("single", &[]);
    let d = Daemon::start(&home, &[]);
    let load = || -> (u64, u64) {
        let ps = call("GET", &d.url("/api/ps"), Some(&flood), None);
        let m = &ps.body["models"][0];
        (
            m["running"].as_u64().unwrap_or(0),
            m["waiting"].as_u64().unwrap_or(0),
        )
    };
    // Load the model first so the queue forms behind a running request.
    assert_eq!(
        post(&d, &flood, "/v1/chat/completions", chat_body("Hi", 1)).status,
        200
    );
    let (tx, rx) = std::sync::mpsc::channel::<&str>();
    std::thread::scope(|s| {
        for i in 0..3 {
            let (tx, d, flood) = (tx.clone(), &d, &flood);
            s.spawn(move || {
                let r = post(
                    d,
                    flood,
                    "/v1/chat/completions",
                    chat_body(&format!("Tell me a long story about the number {i}."), 60),
                );
                assert_eq!(r.status, 200);
                tx.send("flood").unwrap();
            });
            // Submitted in order, so the flood's first request runs and the rest wait.
            let t0 = Instant::now();
            while load() != (1, i) {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "the flood did not queue"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let (tx2, d2, single) = (tx.clone(), &d, &single);
        s.spawn(move || {
            let r = post(d2, single, "/v1/chat/completions", chat_body("Hi", 30));
            assert_eq!(r.status, 200);
            tx2.send("single").unwrap();
        });
        drop(tx);
        let order: Vec<&str> = rx.iter().collect();
        // The single request takes the first free place, ahead of the flood's
        // second and third, though it arrived after them.
        assert_eq!(order, ["flood", "single", "flood", "flood"], "{order:?}");
    });
}

#[test]
fn embeddings_match_the_reference() {
    let home = Home::with_models(&["smollm2", "minilm"]);
    let token = home.add_app("embed", &[]);
    let d = Daemon::start(&home, &[]);
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/golden/embeddings-all-minilm-l6-v2.json"
        ))
        .expect("golden embeddings"),
    )
    .unwrap();
    let items: Vec<&Value> = golden["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| !i["text"].as_str().unwrap().is_empty())
        .collect();
    let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
    let cosine = |a: &[f64], b: &Value| -> f64 {
        let b: Vec<f64> = b
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
        dot / (na * nb)
    };
    let r = post(
        &d,
        &token,
        "/v1/embeddings",
        json!({"model": "minilm", "input": texts}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    for (i, item) in items.iter().enumerate() {
        let v: Vec<f64> = r.body["data"][i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), 384);
        let c = cosine(&v, &item["embedding"]);
        assert!(c >= 0.999, "item {i}: cosine {c}");
    }
    // The base64 form (the openai package's default) carries the same floats.
    let r64 = post(
        &d,
        &token,
        "/v1/embeddings",
        json!({"model": "minilm", "input": texts[0], "encoding_format": "base64"}),
    );
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r64.body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f64> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
        .collect();
    assert!(cosine(&floats, &items[0]["embedding"]) >= 0.999);

    let r = post(
        &d,
        &token,
        "/api/embed",
        json!({"model": "minilm", "input": texts[1]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Vec<f64> = r.body["embeddings"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!(cosine(&v, &items[1]["embedding"]) >= 0.999);

    // Errors: empty text, a chat model, an embedding model asked to chat, too long without truncation.
    let r = post(
        &d,
        &token,
        "/v1/embeddings",
        json!({"model": "minilm", "input": ["a", ""]}),
    );
    assert_eq!(
        (r.status, r.body["error"]["param"].as_str()),
        (400, Some("input[1]")),
        "{}",
        r.body
    );
    let r = post(
        &d,
        &token,
        "/v1/embeddings",
        json!({"model": "smollm2", "input": "a"}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(
        &d,
        &token,
        "/v1/chat/completions",
        json!({"model": "minilm", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let long = "word ".repeat(400);
    let r = post(
        &d,
        &token,
        "/api/embed",
        json!({"model": "minilm", "input": long, "truncate": false}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(
        &d,
        &token,
        "/api/embed",
        json!({"model": "minilm", "input": long}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn ps_without_a_daemon_is_a_clear_error() {
    let home = Home::with_models(&[]);
    let out = home.hearth(&["ps"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no hearth daemon is running"), "{err}");
}

/// `ignore_eos` (llama.cpp's server extension) gives exactly `max_tokens`.
#[test]
fn ignore_eos_gives_exactly_max_tokens() {
    let home = Home::with_models(&["smollm2"]);
    let token = home.add_app("notes", &[]);
    let d = Daemon::start(&home, &[]);
    // A prompt SmolLM2 answers briefly, then ends its turn.
    let body = |ignore: bool| {
        json!({"model": "smollm2", "max_tokens": 48, "temperature": 0, "ignore_eos": ignore,
               "messages": [{"role": "user", "content": "Say hi."}]})
    };
    let short = post(&d, &token, "/v1/chat/completions", body(false));
    assert_eq!(short.status, 200, "{}", short.body);
    assert_eq!(
        short.body["choices"][0]["finish_reason"], "stop",
        "{}",
        short.body
    );
    let long = post(&d, &token, "/v1/chat/completions", body(true));
    assert_eq!(long.status, 200, "{}", long.body);
    assert_eq!(long.body["usage"]["completion_tokens"], 48, "{}", long.body);
    assert_eq!(long.body["choices"][0]["finish_reason"], "length");
}

/// `hearth bench serve` starts its own daemon, streams from it at each
/// level, and counts every token it asked for.
#[test]
fn bench_serve_measures_each_level() {
    let out = std::process::Command::new(daemon::hearth_bin())
        .args([
            "bench",
            "serve",
            "-n",
            "6",
            "--streams",
            "1,3",
            "-r",
            "1",
            "--json",
        ])
        .output()
        .expect("running hearth bench serve");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let levels = v["levels"].as_array().expect("levels");
    assert_eq!(levels.len(), 2);
    for (l, n) in levels.iter().zip([1u64, 3]) {
        assert_eq!(l["streams"], n);
        assert_eq!(l["completion_tokens"], n * 6, "{l}");
        assert!(l["aggregate_tps"].as_f64().unwrap() > 0.0, "{l}");
        let (p50, max) = (
            l["ttft_ms_p50"].as_f64().unwrap(),
            l["ttft_ms_max"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= max, "{l}");
        let vs_single = l["vs_single"].as_f64().expect("vs_single");
        assert!(vs_single > 0.0, "{l}");
        if n == 1 {
            assert_eq!(vs_single, 1.0, "{l}");
        }
    }
}

fn shared_dir() -> std::path::PathBuf {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    assert!(p.is_dir(), "shared/ is missing: {}", p.display());
    p
}

/// `hearth expert create NAME` over SmolLM2 with one of shared/adapters'
/// adapters, its description from shared/routing and 32 example requests
/// from its training data.
fn create_expert(home: &Home, name: &str, format: &str) {
    let shared = shared_dir();
    let adapter = match format {
        "gguf" => shared.join(format!("adapters/{name}/{name}.gguf")),
        _ => shared.join(format!("adapters/{name}/peft")),
    };
    let experts: Value = serde_json::from_str(
        &std::fs::read_to_string(shared.join("routing/experts.json")).expect("experts.json"),
    )
    .expect("JSON");
    let description = experts
        .as_array()
        .expect("list")
        .iter()
        .find(|e| e["name"] == name)
        .expect("described")["description"]
        .as_str()
        .expect("text")
        .to_string();
    let train = std::fs::read_to_string(shared.join(format!("adapters/data/{name}-train.jsonl")))
        .expect("training data");
    let examples: Vec<String> = train
        .lines()
        .take(32)
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON line");
            v["messages"][0]["content"]
                .as_str()
                .expect("text")
                .replace('\n', " ")
        })
        .collect();
    let file = home.path().join(format!("{name}-examples.txt"));
    std::fs::write(&file, examples.join("\n")).expect("examples");
    let out = home.hearth(&[
        "expert",
        "create",
        name,
        "--base",
        "smollm2",
        "--adapter",
        adapter.to_str().expect("path"),
        "--description",
        &description,
        "--temperature",
        "0",
        "--examples",
        file.to_str().expect("path"),
    ]);
    assert!(
        out.status.success(),
        "expert create {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Experts by name (both adapter formats) and through `auto`, with the
/// app's permissions applied to them, `/api/ps` showing them, and an
/// expert deleted under a running daemon gone for new requests.
#[test]
fn experts_by_name_and_by_router() {
    let home = Home::with_models(&["smollm2", "minilm"]);
    create_expert(&home, "sentiment", "gguf");
    create_expert(&home, "shout", "peft");
    let token = home.add_app("notes", &[]);
    let narrow = home.add_app("narrow", &["--models", "smollm2"]);
    let d = Daemon::start(&home, &[]);

    // The golden prompt of the sentiment adapter: the expert answers as
    // llama.cpp did with the adapter applied (temperature 0 is the expert's
    // default; the request does not say).
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(shared_dir().join("adapters/golden-sentiment.json"))
            .expect("golden"),
    )
    .expect("JSON");
    let case = &golden["greedy"][0];
    let r = post(
        &d,
        &token,
        "/v1/chat/completions",
        json!({"model": "sentiment", "messages": case["messages"], "max_tokens": 8}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["model"], "sentiment");
    assert_eq!(content(&r).trim(), case["expected"].as_str().unwrap());

    // The PEFT-format expert, through Ollama's API (greedy, no penalty).
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(shared_dir().join("adapters/golden-shout.json")).expect("golden"),
    )
    .expect("JSON");
    let case = &golden["greedy"][0];
    let r = post(
        &d,
        &token,
        "/api/chat",
        json!({"model": "shout", "stream": false, "messages": case["messages"],
               "options": {"num_predict": 24, "repeat_penalty": 1.0}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["model"], "shout");
    let text = r.body["message"]["content"].as_str().unwrap().to_string();
    assert_eq!(text.trim(), case["expected"].as_str().unwrap(), "{text:?}");

    // The router.
    let auto = |tok: &str, prompt: &str| {
        post(
            &d,
            tok,
            "/v1/chat/completions",
            json!({"model": "auto", "max_tokens": 4,
                   "messages": [{"role": "user", "content": prompt}]}),
        )
    };
    let r = auto(
        &token,
        "Is this review positive or negative? The pasta was cold and the service slow.",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["model"], "sentiment");
    let r = auto(&token, "Rewrite in all caps: please close the door");
    assert_eq!(r.body["model"], "shout", "{}", r.body);
    let r = auto(&token, "What is the capital of Italy?");
    assert_eq!(r.body["model"], "smollm2", "{}", r.body);
    // An app that may not use the experts gets the base from the router,
    // and a 403 by name.
    let r = auto(
        &narrow,
        "Is this review positive or negative? The pasta was cold.",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["model"], "smollm2");
    let r = post(
        &d,
        &narrow,
        "/v1/chat/completions",
        json!({"model": "sentiment", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // Token prompts cannot be routed.
    let r = post(
        &d,
        &token,
        "/v1/completions",
        json!({"model": "auto", "prompt": [1, 2, 3]}),
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // What is loaded.
    let ps = call("GET", &d.url("/api/ps"), Some(&token), None);
    let names: Vec<&str> = ps.body["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter(|m| m["details"]["format"] == "lora")
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"sentiment") && names.contains(&"shout"),
        "{}",
        ps.body
    );

    // Deleted while the daemon runs: new requests get 404.
    home.hearth_ok(&["expert", "rm", "shout"]);
    let r = post(
        &d,
        &token,
        "/v1/chat/completions",
        json!({"model": "shout", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 404, "{}", r.body);
}
