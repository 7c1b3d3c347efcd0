//! The command line as scripts use it: exact output forms, and a clear error
//! with a non-zero exit for every kind of bad input. Models are tiny GGUF
//! files this test writes, so nothing here needs the network.

#[path = "common/cli.rs"]
mod cli_common;
use cli_common::fails_with;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hearth_gguf::{GgufFile, Value};

#[path = "common/tiny.rs"]
mod tiny_model;
use tiny_model::{tiny, write, Tiny};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hearth-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn hearth(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .env("HEARTH_HOME", home.join("home"))
        .output()
        .expect("hearth runs")
}

fn model(d: &Path) -> String {
    let p = d.join("tiny.gguf");
    write(&tiny(), &p);
    p.to_string_lossy().into_owned()
}

#[test]
fn generate_json_has_the_documented_form() {
    let d = dir("gen");
    let m = model(&d);
    let out = hearth(
        &d,
        &[
            "generate",
            "-m",
            &m,
            "--raw",
            "-n",
            "5",
            "--temp",
            "0",
            "--ignore-eos",
            "--top-logprobs",
            "3",
            "--json",
            "hi there",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["completion_ids"].as_array().unwrap().len(), 5);
    assert!(!v["prompt_ids"].as_array().unwrap().is_empty());
    assert!(v["text"].is_string());
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5);
    for s in steps {
        let top = s["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert!(top[0]["logprob"].as_f64().unwrap() <= 0.0);
        // Greedy: the chosen token is the best one unless it was banned.
        assert!(s["token"].is_u64());
    }
    // Same command, same answer.
    let again = hearth(
        &d,
        &[
            "generate",
            "-m",
            &m,
            "--raw",
            "-n",
            "5",
            "--temp",
            "0",
            "--ignore-eos",
            "--top-logprobs",
            "3",
            "--json",
            "hi there",
        ],
    );
    assert_eq!(out.stdout, again.stdout);
}

#[test]
fn tokenize_json_prints_ids() {
    let d = dir("tok");
    let m = model(&d);
    let out = hearth(&d, &["tokenize", "-m", &m, "--json", "hi"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids.len(), 2, "two bytes, no merges apply: {ids:?}");
    let out = hearth(
        &d,
        &["tokenize", "-m", &m, "--special", "--json", "<|im_start|>"],
    );
    let ids: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids, vec![256]);
}

#[test]
fn run_streams_through_the_chatml_fallback() {
    let d = dir("run");
    let m = model(&d);
    let out = hearth(&d, &["run", "-m", &m, "-n", "4", "--temp", "0", "hello"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn truncated_file_is_named() {
    let d = dir("trunc");
    let m = model(&d);
    let bytes = std::fs::read(&m).unwrap();
    let cut = d.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    fails_with(
        &hearth(&d, &["run", "-m", cut.to_str().unwrap(), "hi"]),
        &["truncated", "blk.1.ffn_down.weight"],
    );
    let bad = d.join("bad.gguf");
    std::fs::write(&bad, b"this is not a model at all").unwrap();
    fails_with(
        &hearth(&d, &["run", "-m", bad.to_str().unwrap(), "hi"]),
        &["not a GGUF file"],
    );
}

fn rewrite(d: &Path, name: &str, f: impl Fn(&mut Tiny)) -> String {
    let mut t = tiny();
    f(&mut t);
    let p = d.join(name);
    write(&t, &p);
    p.to_string_lossy().into_owned()
}

#[test]
fn unknown_architecture_and_tensor_type_are_named() {
    let d = dir("arch");
    let m = rewrite(&d, "arch.gguf", |t| {
        t.meta[0].1 = Value::String("rwkv9".into());
    });
    fails_with(
        &hearth(&d, &["run", "-m", &m, "hi"]),
        &["rwkv9", "architecture"],
    );
    // Patch the type id of the first tensor to one ggml does not define.
    let src = model(&d);
    let mut bytes = std::fs::read(&src).unwrap();
    let f = GgufFile::open(Path::new(&src)).unwrap();
    let name = b"token_embd.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len() + 4 + 16;
    assert_eq!(
        &bytes[at..at + 4],
        &0u32.to_le_bytes(),
        "type of {}",
        f.tensors()[0].name
    );
    bytes[at..at + 4].copy_from_slice(&77u32.to_le_bytes());
    let p = d.join("type.gguf");
    std::fs::write(&p, bytes).unwrap();
    fails_with(
        &hearth(&d, &["run", "-m", p.to_str().unwrap(), "hi"]),
        &["token_embd.weight", "77"],
    );
}

#[test]
fn missing_tokenizer_field_is_named() {
    let d = dir("tokfield");
    let m = rewrite(&d, "notok.gguf", |t| {
        t.meta.retain(|(k, _)| k != "tokenizer.ggml.tokens")
    });
    fails_with(
        &hearth(&d, &["run", "-m", &m, "hi"]),
        &["tokenizer.ggml.tokens"],
    );
}

/// A constraint this vocabulary cannot follow (no token for `9`) is an
/// error of `generate`, not a short answer that looks finished.
#[test]
fn a_constraint_the_vocabulary_cannot_follow_fails() {
    let d = dir("nine-less");
    let m = rewrite(&d, "nine-less.gguf", |t| {
        for (k, v) in t.meta.iter_mut() {
            if let (true, Value::Array(tokens)) = (k == "tokenizer.ggml.tokens", v) {
                tokens[b'9' as usize] = Value::String("zz".into());
            }
        }
    });
    let args = ["generate", "-m", &m, "--raw", "-n", "20", "--regex", "ab9+"];
    fails_with(&hearth(&d, &[&args[..], &["go"]].concat()), &["vocabulary"]);
    // The same model follows a constraint it can spell.
    let out = hearth(
        &d,
        &[
            "generate", "-m", &m, "--raw", "-n", "20", "--regex", "ab8+", "go",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .trim()
        .starts_with("ab8"));
}

#[test]
fn empty_prompt_and_overlong_prompt_are_errors() {
    let d = dir("prompt");
    let m = model(&d);
    fails_with(&hearth(&d, &["run", "-m", &m, ""]), &["empty"]);
    fails_with(
        &hearth(&d, &["generate", "-m", &m, "--raw", "--json", ""]),
        &["empty"],
    );
    let long = "word ".repeat(40);
    fails_with(
        &hearth(
            &d,
            &["generate", "-m", &m, "--raw", "-c", "16", "-n", "2", &long],
        ),
        &["over the context of 16"],
    );
}

#[test]
fn zero_threads_and_bad_arguments_are_errors() {
    let d = dir("threads");
    let m = model(&d);
    fails_with(&hearth(&d, &["run", "-m", &m, "-t", "0", "hi"]), &["-t 0"]);
    fails_with(
        &hearth(&d, &["run", "-m", "no-such-model", "hi"]),
        &["no-such-model"],
    );
    fails_with(
        &hearth(&d, &["run", "-m", "/no/such/file.gguf", "hi"]),
        &["/no/such/file.gguf"],
    );
}

#[cfg(unix)]
#[test]
fn invalid_utf8_prompt_is_an_error() {
    use std::os::unix::ffi::OsStrExt;
    let d = dir("utf8");
    let m = model(&d);
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["run", "-m", &m])
        .arg(std::ffi::OsStr::from_bytes(b"caf\xe9"))
        .env("HEARTH_HOME", d.join("home"))
        .output()
        .unwrap();
    fails_with(&out, &["UTF-8"]);
}
