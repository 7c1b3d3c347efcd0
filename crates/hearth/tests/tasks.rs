//! Typed tasks and tool calls through a real daemon (one for the whole
//! file, to keep CI short) and the matching CLI verbs in-process: classify's
//! probabilities sum to one and equal the CLI's (which the runtime's test
//! checks against a brute force), summaries keep to their word budget,
//! extraction and tool-call arguments validate against their schemas (the
//! `jsonschema` crate), and bad input is a 400 naming the field.

#[path = "common/daemon.rs"]
mod daemon;

use std::io::{BufRead, BufReader};

use daemon::{Daemon, Home};
use serde_json::{json, Value};

fn sse(d: &Daemon, token: &str, path: &str, body: &Value) -> Vec<Value> {
    let resp = d.send(token, path, body);
    let mut out = Vec::new();
    for line in BufReader::new(resp.into_body().into_reader()).lines() {
        let line = line.expect("line");
        let Some(p) = line.strip_prefix("data: ") else {
            continue;
        };
        if p.trim() != "[DONE]" {
            out.push(serde_json::from_str(p).expect("JSON chunk"));
        }
    }
    out
}

fn cli_json(home: &Home, args: &[&str]) -> Value {
    let out = home.hearth(args);
    assert!(
        out.status.success(),
        "hearth {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json output")
}

fn param(r: &(u16, Value)) -> String {
    assert_eq!(r.0, 400, "{}", r.1);
    r.1["error"]["param"].as_str().unwrap_or("").to_string()
}

const PERSON: &str = r#"{"type":"object","properties":{"name":{"type":"string","maxLength":40},"age":{"type":"integer","minimum":0,"maximum":150}},"required":["name","age"],"additionalProperties":false}"#;

/// What the `jsonschema` crate finds wrong with `v` (formats included);
/// empty when it validates.
fn schema_errors(schema: &Value, v: &Value) -> Vec<String> {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("the test's schema does not compile: {e}"))
        .iter_errors(v)
        .map(|e| e.to_string())
        .collect()
}

fn valid_person(v: &Value) -> bool {
    let schema: Value = serde_json::from_str(PERSON).expect("the person schema");
    schema_errors(&schema, v).is_empty()
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": false}
    }}])
}

fn valid_weather_args(v: &Value) -> bool {
    schema_errors(&weather_tool()[0]["function"]["parameters"], v).is_empty()
}

#[test]
fn tasks_and_tools() {
    let home = Home::with_models(&["smollm2"]);
    let token = home.add_app("tasks", &[]);
    let d = Daemon::start(&home, &[]);
    let text = "I loved this film, the acting was wonderful.";

    // classify: over HTTP and in-process, the same numbers.
    let body =
        json!({"model": "smollm2", "labels": ["positive", "negative", "neutral"], "text": text});
    let (status, r) = d.post(&token, "/v1/tasks/classify", &body);
    assert_eq!(status, 200, "{r}");
    let labels = r["labels"].as_array().expect("labels");
    assert_eq!(labels.len(), 3);
    let total: f64 = labels
        .iter()
        .map(|l| l["probability"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-9, "probabilities sum to {total}");
    let best = labels
        .iter()
        .max_by(|a, b| {
            a["probability"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["probability"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(r["label"], best["label"]);
    let cli = cli_json(
        &home,
        &[
            "classify",
            "-t",
            "2",
            "--labels",
            "positive,negative,neutral",
            "--json",
            text,
        ],
    );
    for (h, c) in labels.iter().zip(cli["labels"].as_array().unwrap()) {
        assert_eq!(h["label"], c["label"]);
        let (a, b) = (
            h["logprob"].as_f64().unwrap(),
            c["logprob"].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-3,
            "HTTP {a} vs CLI {b} for {}",
            h["label"]
        );
    }
    for (bad, field) in [
        (
            json!({"model": "smollm2", "labels": [], "text": text}),
            "labels",
        ),
        (
            json!({"model": "smollm2", "labels": ["a", "a"], "text": text}),
            "labels",
        ),
        (
            json!({"model": "smollm2", "labels": ["a", "b"], "text": " "}),
            "text",
        ),
    ] {
        assert_eq!(
            param(&d.post(&token, "/v1/tasks/classify", &bad)),
            field,
            "{bad}"
        );
    }

    // summarize: never past the word budget.
    let long = "The city council met on Tuesday to discuss the new budget. After a long debate, members voted to increase funding for parks and libraries.";
    let (status, r) = d.post(
        &token,
        "/v1/tasks/summarize",
        &json!({"model": "smollm2", "text": long, "max_words": 6}),
    );
    assert_eq!(status, 200, "{r}");
    let words = r["summary"].as_str().unwrap().split_whitespace().count();
    assert!(words <= 6 && words > 0, "{r}");
    let cli = cli_json(
        &home,
        &["summarize", "-t", "2", "--max-words", "6", "--json", long],
    );
    assert!(cli["words"].as_u64().unwrap() <= 6, "{cli}");
    assert_eq!(
        param(&d.post(
            &token,
            "/v1/tasks/summarize",
            &json!({"text": long, "max_words": 0})
        )),
        "max_words"
    );

    // extract: the object validates against the schema (which the
    // validator does enforce: a missing age and a negative one fail).
    assert!(!valid_person(&json!({"name": "Ann"})));
    assert!(!valid_person(&json!({"name": "Ann", "age": -3})));
    let schema: Value = serde_json::from_str(PERSON).unwrap();
    let who = "Alice is a 34 year old engineer from Oslo.";
    let (status, r) = d.post(
        &token,
        "/v1/tasks/extract",
        &json!({"model": "smollm2", "schema": schema, "text": who, "max_tokens": 64}),
    );
    assert_eq!(status, 200, "{r}");
    assert!(valid_person(&r["data"]), "{r}");
    let file = home.path().join("person.json");
    std::fs::write(&file, PERSON).unwrap();
    let cli = cli_json(
        &home,
        &[
            "extract",
            "-t",
            "2",
            "--schema",
            file.to_str().unwrap(),
            "-n",
            "64",
            "--json",
            who,
        ],
    );
    assert!(valid_person(&cli["data"]), "{cli}");
    let bad = json!({"schema": {"type": "object", "properties": {"a": {"type": "no-such-type"}}}, "text": who});
    assert_eq!(param(&d.post(&token, "/v1/tasks/extract", &bad)), "schema");

    // Tools: required and named calls parse and validate, none gives text.
    let msgs = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    for choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "get_weather"}}),
    ] {
        let body = json!({"model": "smollm2", "messages": msgs, "tools": weather_tool(), "tool_choice": choice, "temperature": 0, "max_tokens": 60});
        let (status, r) = d.post(&token, "/v1/chat/completions", &body);
        assert_eq!(status, 200, "{r}");
        let c = &r["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls", "{r}");
        let call = &c["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        assert!(call["id"].as_str().is_some_and(|s| !s.is_empty()));
        let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap())
            .expect("arguments are JSON");
        assert!(valid_weather_args(&args), "{args}");
        // Streamed: the same call, as delta.tool_calls chunks.
        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        let chunks = sse(&d, &token, "/v1/chat/completions", &sbody);
        let mut name = String::new();
        let mut arguments = String::new();
        let mut finish = Value::Null;
        for ch in &chunks {
            let c = &ch["choices"][0];
            for tc in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                name.push_str(tc["function"]["name"].as_str().unwrap_or(""));
                arguments.push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
            }
            if !c["finish_reason"].is_null() {
                finish = c["finish_reason"].clone();
            }
        }
        assert_eq!(name, "get_weather");
        assert_eq!(finish, "tool_calls");
        assert_eq!(
            serde_json::from_str::<Value>(&arguments).unwrap(),
            args,
            "greedy: streamed equals whole"
        );
    }
    let body = json!({"model": "smollm2", "messages": msgs, "tools": weather_tool(), "tool_choice": "none", "temperature": 0, "max_tokens": 8});
    let (status, r) = d.post(&token, "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{r}");
    assert!(r["choices"][0]["message"]["tool_calls"].is_null(), "{r}");
    assert!(r["choices"][0]["message"]["content"].is_string());

    // Ollama: arguments as an object.
    let body = json!({"model": "smollm2", "messages": msgs, "tools": weather_tool(), "stream": false, "options": {"temperature": 0, "num_predict": 60}});
    let (status, r) = d.post(&token, "/api/chat", &body);
    assert_eq!(status, 200, "{r}");
    if let Some(calls) = r["message"]["tool_calls"].as_array() {
        assert!(
            valid_weather_args(&calls[0]["function"]["arguments"]),
            "{r}"
        );
    } else {
        assert!(r["message"]["content"].is_string(), "{r}");
    }

    // Bad tools and choices name the field.
    let named = |n: &str| json!({"model": "smollm2", "messages": msgs, "tools": weather_tool(), "tool_choice": {"type": "function", "function": {"name": n}}});
    assert_eq!(
        param(&d.post(&token, "/v1/chat/completions", &named("nope"))),
        "tool_choice.function.name"
    );
    let malformed = json!({"model": "smollm2", "messages": msgs, "tools": [{"type": "function"}]});
    assert_eq!(
        param(&d.post(&token, "/v1/chat/completions", &malformed)),
        "tools[0].function"
    );
    let malformed = json!({"model": "smollm2", "messages": msgs, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "no-such-type"}}}}}]});
    assert_eq!(
        param(&d.post(&token, "/v1/chat/completions", &malformed)),
        "tools[0].function.parameters"
    );
    let bad_args = json!({"model": "smollm2", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{not json"}}]}
    ]});
    assert_eq!(
        param(&d.post(&token, "/v1/chat/completions", &bad_args)),
        "messages[1].tool_calls[0].function.arguments"
    );
}
