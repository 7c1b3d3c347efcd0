//! `hearth expert …` as scripts use it, over the real SmolLM2 and the real
//! adapters of `shared/adapters`: created in either format, listed, shown
//! and removed with `--json`, used with `-m`, and every bad adapter refused
//! at creation with a message that names the problem.

#[path = "common/cli.rs"]
mod cli_common;
#[path = "common/daemon.rs"]
mod daemon;

use cli_common::fails_with;
use daemon::Home;
use serde_json::Value;

fn adapters() -> std::path::PathBuf {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/adapters");
    assert!(p.is_dir(), "shared/adapters is missing: {}", p.display());
    p
}

fn ok_json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn experts_are_created_used_and_removed() {
    let home = Home::with_models(&["smollm2"]);
    let gguf = adapters().join("sentiment/sentiment.gguf");
    let peft = adapters().join("sentiment/peft");
    let e = ok_json(&home.hearth(&[
        "expert",
        "create",
        "sentiment",
        "--base",
        "smollm2",
        "--adapter",
        gguf.to_str().unwrap(),
        "--description",
        "classify the sentiment of a review as positive or negative",
        "--temperature",
        "0",
        "--json",
    ]));
    assert_eq!(e["name"], "sentiment");
    assert_eq!(e["spec"]["adapter"], "gguf");
    ok_json(&home.hearth(&[
        "expert",
        "create",
        "sentiment-peft",
        "--base",
        "smollm2",
        "--adapter",
        peft.to_str().unwrap(),
        "--system",
        "You classify reviews.",
        "--json",
    ]));
    let list = ok_json(&home.hearth(&["expert", "list", "--json"]));
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sentiment", "sentiment-peft"]);
    let shown = ok_json(&home.hearth(&["expert", "show", "sentiment-peft", "--json"]));
    assert_eq!(shown["spec"]["system"], "You classify reviews.");
    assert_eq!(shown["spec"]["adapter"], "peft");

    // The golden prompt of the sentiment adapter, through -m with the
    // expert's temperature 0.
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(adapters().join("golden-sentiment.json")).expect("golden"),
    )
    .expect("JSON");
    let case = &golden["greedy"][0];
    let user = case["messages"][0]["content"].as_str().unwrap();
    let out = ok_json(&home.hearth(&["generate", "-m", "sentiment", "-n", "8", "--json", user]));
    assert_eq!(
        out["text"].as_str().unwrap().trim(),
        case["expected"].as_str().unwrap()
    );

    let r = ok_json(&home.hearth(&["expert", "rm", "sentiment", "--json"]));
    assert_eq!(r["name"], "sentiment");
    fails_with(
        &home.hearth(&["expert", "show", "sentiment"]),
        &["no expert `sentiment`"],
    );
    fails_with(
        &home.hearth(&["generate", "-m", "sentiment", "hi"]),
        &["sentiment"],
    );
    // A model is not an expert to remove.
    fails_with(
        &home.hearth(&["expert", "rm", "smollm2"]),
        &["no expert `smollm2`"],
    );
}

#[test]
fn bad_adapters_are_refused_at_creation() {
    let home = Home::with_models(&["smollm2", "gemma3"]);
    let gguf = adapters().join("sentiment/sentiment.gguf");
    let create = |name: &str, base: &str, adapter: &std::path::Path| {
        home.hearth(&[
            "expert",
            "create",
            name,
            "--base",
            base,
            "--adapter",
            adapter.to_str().unwrap(),
        ])
    };
    // For another base.
    fails_with(&create("x", "gemma3", &gguf), &["llama", "gemma3"]);
    fails_with(
        &create("x", "gemma3", &adapters().join("sentiment/peft")),
        &["layer"],
    );
    // Truncated.
    let bytes = std::fs::read(&gguf).expect("adapter");
    let cut = home.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    fails_with(&create("x", "smollm2", &cut), &["cut.gguf"]);
    // Not an adapter at all: the base model itself.
    let base = daemon::model_path("smollm2");
    fails_with(&create("x", "smollm2", &base), &["adapter"]);
    // A PEFT directory without its weights.
    let dir = home.path().join("peft");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(
        adapters().join("sentiment/peft/adapter_config.json"),
        dir.join("adapter_config.json"),
    )
    .unwrap();
    fails_with(
        &create("x", "smollm2", &dir),
        &["adapter_model.safetensors"],
    );
    fails_with(
        &create("x", "smollm2", &home.path().join("nope.gguf")),
        &["nope.gguf", "does not exist"],
    );
    // Nothing was stored.
    let list = ok_json(&home.hearth(&["expert", "list", "--json"]));
    assert_eq!(list, serde_json::json!([]));
}
