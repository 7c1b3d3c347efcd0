//! Constrained output through the daemon: the schema suite
//! (`data/schemas.json`, simple to hard) on both default models, streamed
//! and not, every output checked against its schema by the `jsonschema`
//! crate (formats included); Ollama's `format` on both endpoints; and the
//! 400s for schemas that cannot be used and malformed `response_format`s.
//!
//! The suite's requests go out all at once per model, so the daemon's
//! continuous batching decodes them together (greedy): the cost of the
//! suite is about that of its longest answer, not the sum.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/tiny.rs"]
mod tiny_model;

use std::io::{BufRead, BufReader};
use std::time::Instant;

use daemon::{Daemon, Home};
use serde_json::{json, Value};

/// POST a streaming request and join its text: SSE `data:` lines (OpenAI)
/// or NDJSON (Ollama). Returns the text and the last finish reason seen.
fn post_stream(d: &Daemon, token: &str, path: &str, body: &Value) -> (String, String) {
    let resp = d.send(token, path, body);
    let status = resp.status().as_u16();
    assert_eq!(status, 200, "{path} stream: status {status}");
    let mut text = String::new();
    let mut reason = String::new();
    for line in BufReader::new(resp.into_body().into_reader()).lines() {
        let line = line.expect("line");
        let payload = line.strip_prefix("data:").unwrap_or(&line).trim();
        // SSE also carries `event:` lines, comments and `[DONE]`.
        if !payload.starts_with('{') {
            continue;
        }
        let v: Value = serde_json::from_str(payload).expect("JSON line");
        let c = &v["choices"][0];
        for piece in [
            &c["delta"]["content"],
            &c["text"],
            &v["message"]["content"],
            &v["response"],
        ] {
            if let Some(s) = piece.as_str() {
                text.push_str(s);
            }
        }
        for r in [&c["finish_reason"], &v["done_reason"]] {
            if let Some(s) = r.as_str() {
                reason = s.to_string();
            }
        }
    }
    (text, reason)
}

struct Case {
    name: String,
    prompt: String,
    schema: Value,
}

fn cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/schemas.json");
    let text = std::fs::read_to_string(path).expect("the schema suite");
    let v: Vec<Value> = serde_json::from_str(&text).expect("the suite is JSON");
    v.into_iter()
        .map(|c| Case {
            name: c["name"].as_str().expect("name").to_string(),
            prompt: c["prompt"].as_str().expect("prompt").to_string(),
            schema: c["schema"].clone(),
        })
        .collect()
}

/// Enough for the largest answer the suite's schemas allow (every string
/// and array is bounded, and every number by `multipleOf`: a bare
/// `number` admits digits without end, and a greedy model can take them),
/// with room to spare.
const MAX_TOKENS: u32 = 320;

fn chat_request(model: &str, c: &Case, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": format!("{} Answer in JSON.", c.prompt)}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": stream,
        "response_format": {"type": "json_schema", "json_schema": {"name": c.name, "schema": c.schema, "strict": true}},
    })
}

/// Why `text` is not a valid answer to `schema`, if it is not.
fn invalid(schema: &Value, text: &str) -> Option<String> {
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("the suite's schema does not compile: {e}"));
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Some(format!("not JSON ({e})")),
    };
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

fn home_and_daemon(n_cases: usize) -> (Home, Daemon, String) {
    let home = Home::with_models(&["smollm2", "gemma3"]);
    // The whole suite, both modes, in one batch, each in a short context.
    home.config(&format!(
        "max_batch = {}\nmax_queue = {}\ndefault_ctx = 768\n",
        2 * n_cases,
        4 * n_cases
    ));
    let token = home.add_app("constrain", &[]);
    let d = Daemon::start(&home, &[]);
    (home, d, token)
}

#[test]
fn schema_suite_on_both_models_streamed_and_not() {
    let cases = cases();
    assert!(cases.len() >= 40, "the suite has {} schemas", cases.len());
    let (_home, d, token) = home_and_daemon(cases.len());
    let mut failures = Vec::new();
    let t_all = Instant::now();
    for model in ["smollm2", "gemma3"] {
        let t0 = Instant::now();
        let results: Vec<(String, bool, String, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = cases
                .iter()
                .flat_map(|c| [(c, false), (c, true)])
                .map(|(c, stream)| {
                    let (d, token) = (&d, &token);
                    s.spawn(move || {
                        let body = chat_request(model, c, stream);
                        let (text, reason) = if stream {
                            post_stream(d, token, "/v1/chat/completions", &body)
                        } else {
                            let (status, v) = d.post(token, "/v1/chat/completions", &body);
                            assert_eq!(status, 200, "{model} {}: {v}", c.name);
                            let ch = &v["choices"][0];
                            (
                                ch["message"]["content"].as_str().unwrap_or("").to_string(),
                                ch["finish_reason"].as_str().unwrap_or("").to_string(),
                            )
                        };
                        (c.name.clone(), stream, text, reason)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("request thread"))
                .collect()
        });
        for ((name, stream, text, reason), c) in
            results.iter().zip(cases.iter().flat_map(|c| [c, c]))
        {
            let mode = if *stream { "stream" } else { "whole" };
            if reason != "stop" {
                failures.push(format!(
                    "{model} {name} ({mode}): finish_reason {reason:?}, output {text:?}"
                ));
            } else if let Some(why) = invalid(&c.schema, text) {
                failures.push(format!("{model} {name} ({mode}): {why}: {text:?}"));
            }
        }
        // Greedy decoding: the streamed answer is the whole one, piece by piece.
        for pair in results.chunks(2) {
            if pair[0].2 != pair[1].2 {
                failures.push(format!(
                    "{model} {}: streamed {:?} differs from whole {:?}",
                    pair[0].0, pair[1].2, pair[0].2
                ));
            }
        }
        eprintln!(
            "{model}: {} constrained requests in {:.1} s",
            results.len(),
            t0.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "schema suite: {:.1} s in all",
        t_all.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        d.log()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn ollama_format_and_bad_requests() {
    let (_home, d, token) = home_and_daemon(4);
    let schema = json!({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"], "additionalProperties": false});
    let prompt = "Describe a person as JSON.";
    let chat = |format: &Value, stream: bool| {
        json!({"model": "smollm2", "messages": [{"role": "user", "content": prompt}],
               "format": format, "stream": stream, "options": {"temperature": 0, "num_predict": 120}})
    };
    let gen = |format: &Value, stream: bool| {
        json!({"model": "gemma3", "prompt": prompt, "format": format, "stream": stream,
               "options": {"temperature": 0, "num_predict": 120}})
    };
    for stream in [false, true] {
        for (path, body) in [
            ("/api/chat", chat(&schema, stream)),
            ("/api/generate", gen(&schema, stream)),
        ] {
            let text = if stream {
                post_stream(&d, &token, path, &body).0
            } else {
                let (status, v) = d.post(&token, path, &body);
                assert_eq!(status, 200, "{path}: {v}");
                v["message"]["content"]
                    .as_str()
                    .or(v["response"].as_str())
                    .unwrap_or_else(|| panic!("{path}: no text in {v}"))
                    .to_string()
            };
            assert_eq!(
                invalid(&schema, &text),
                None,
                "{path} stream={stream}: {text}"
            );
        }
        // `"json"`: any JSON object. Nothing bounds its length but the
        // model, so the prompt asks for a short one.
        let any = json!({"type": "object"});
        let mut body = chat(&json!("json"), stream);
        body["messages"][0]["content"] =
            json!("Reply with exactly this JSON object: {\"ok\": true}");
        let text = if stream {
            post_stream(&d, &token, "/api/chat", &body).0
        } else {
            let (s, v) = d.post(&token, "/api/chat", &body);
            assert_eq!(s, 200, "{v}");
            v["message"]["content"].as_str().unwrap_or("").to_string()
        };
        assert_eq!(invalid(&any, &text), None, "format json: {text}");
    }
    // OpenAI's json_object: any JSON object, on the legacy endpoint too.
    let (s, v) = d.post(&token,
        "/v1/completions",
        &json!({"model": "smollm2", "prompt": "{\"a\": 1}\n{\"b\": 2}\n{\"c\": 3}\n", "max_tokens": 120,
                "temperature": 0, "response_format": {"type": "json_object"}}),
    );
    assert_eq!(s, 200, "{v}");
    let text = v["choices"][0]["text"].as_str().unwrap_or("");
    assert_eq!(invalid(&json!({"type": "object"}), text), None, "{text}");

    // A schema the engine cannot handle: 400 naming the feature, both APIs.
    let unsupported = json!({"type": "object", "properties": {"a": {"type": "string"}},
                             "dependentSchemas": {"a": {"required": ["b"]}}});
    let (s, v) = d.post(&token,
        "/v1/chat/completions",
        &json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": unsupported}}}),
    );
    assert_eq!(s, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("dependentSchemas"), "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "response_format.json_schema.schema");
    let (s, v) = d.post(&token, "/api/chat", &chat(&unsupported, false));
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("dependentSchemas"),
        "{v}"
    );
    let (s, v) = d.post(
        &token,
        "/api/generate",
        &gen(&json!({"type": "string", "format": "ipv9"}), false),
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("ipv9"), "{v}");
    let (s, v) = d.post(&token, "/api/generate", &gen(&json!("yaml"), false));
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("yaml"), "{v}");

    // Malformed response_format: 400 naming the field.
    for (rf, field) in [
        (json!({"type": "xml"}), "response_format.type"),
        (json!({"kind": "json_object"}), "response_format.type"),
        (
            json!({"type": "json_schema"}),
            "response_format.json_schema",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}),
            "response_format.json_schema.name",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}),
            "response_format.json_schema.schema",
        ),
    ] {
        let (s, v) = d.post(
            &token,
            "/v1/chat/completions",
            &json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}],
                    "response_format": rf}),
        );
        assert_eq!(s, 400, "{rf}: {v}");
        assert_eq!(v["error"]["param"], field, "{rf}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(field),
            "{rf}: {v}"
        );
    }
}

/// A model whose vocabulary cannot spell what the schema needs next (this
/// tiny model has no token for `9`) ends the answer with an error, whole or
/// streamed: never a normal stop that passes incomplete JSON off as done.
#[test]
fn a_constraint_the_vocabulary_cannot_follow_is_an_error() {
    let home = Home::with_models(&[]);
    let mut t = tiny_model::tiny();
    for (k, v) in t.meta.iter_mut() {
        if let (true, hearth_gguf::Value::Array(tokens)) = (k == "tokenizer.ggml.tokens", v) {
            tokens[b'9' as usize] = hearth_gguf::Value::String("zz".into());
        }
    }
    let path = home.path().join("nine-less.gguf");
    tiny_model::write(&t, &path);
    home.hearth_ok(&["import", path.to_str().unwrap(), "--name", "tiny"]);
    let token = home.add_app("tiny", &[]);
    let d = Daemon::start(&home, &[]);
    let schema = json!({"type": "object", "required": ["n"], "additionalProperties": false,
                        "properties": {"n": {"type": "string", "pattern": "^9+$"}}});
    let mut body = json!({"model": "tiny", "max_tokens": 40,
        "messages": [{"role": "user", "content": "a string of nines"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}});

    let (status, v) = d.post(&token, "/v1/chat/completions", &body);
    assert_eq!(status, 500, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("constraint could not be satisfied") && msg.contains("vocabulary"),
        "{msg}"
    );

    body["stream"] = json!(true);
    let resp = d.send(&token, "/v1/chat/completions", &body);
    assert_eq!(resp.status().as_u16(), 200);
    let mut error = None;
    for line in BufReader::new(resp.into_body().into_reader()).lines() {
        let line = line.expect("line");
        let Some(payload) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(payload) else {
            continue;
        };
        assert!(
            v["choices"][0]["finish_reason"].is_null(),
            "the stream must not end as finished: {v}"
        );
        if let Some(m) = v["error"]["message"].as_str() {
            error = Some(m.to_string());
        }
    }
    let error = error.expect("the stream ends with an error event");
    assert!(
        error.contains("constraint could not be satisfied"),
        "{error}"
    );
}
