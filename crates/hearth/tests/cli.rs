//! The command line as scripts use it: exact output forms, and a clear error
//! with a non-zero exit for every kind of bad input. Models are tiny GGUF
//! files this test writes, so nothing here needs the network.

#[path = "common/cli.rs"]
mod cli_common;
use cli_common::fails_with;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hearth_gguf::{GgufFile, GgufWriter, Value};

const N_EMBD: u64 = 32;
const N_FF: u64 = 64;

/// GPT-2's byte-to-character table, so the vocabulary covers every byte.
fn byte_chars() -> Vec<char> {
    let mut keep: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut extra = 0;
    let mut out = vec!['\0'; 256];
    for b in 0..256u32 {
        if keep.contains(&b) {
            out[b as usize] = char::from_u32(b).unwrap();
        } else {
            out[b as usize] = char::from_u32(256 + extra).unwrap();
            extra += 1;
        }
    }
    keep.clear();
    out
}

struct Tiny {
    meta: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, Vec<f32>)>,
}

fn tiny() -> Tiny {
    let mut tokens: Vec<Value> = byte_chars()
        .into_iter()
        .map(|c| Value::String(c.to_string()))
        .collect();
    let mut types = vec![Value::I32(1); 256];
    for special in ["<|im_start|>", "<|im_end|>"] {
        tokens.push(Value::String(special.into()));
        types.push(Value::I32(3));
    }
    let n_vocab = tokens.len() as u64;
    let meta = vec![
        (
            "general.architecture".to_string(),
            Value::String("llama".into()),
        ),
        ("llama.block_count".into(), Value::U32(2)),
        ("llama.embedding_length".into(), Value::U32(N_EMBD as u32)),
        ("llama.feed_forward_length".into(), Value::U32(N_FF as u32)),
        ("llama.attention.head_count".into(), Value::U32(4)),
        ("llama.attention.head_count_kv".into(), Value::U32(2)),
        ("llama.context_length".into(), Value::U32(64)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(vec![Value::String("h i".into())]),
        ),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(257)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
    ];
    let mut state = 12345u32;
    let mut rnd = move |n: u64, scale: f32, offset: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                offset + scale * ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
            })
            .collect()
    };
    let mut tensors = vec![
        (
            "token_embd.weight".to_string(),
            vec![N_EMBD, n_vocab],
            rnd(N_EMBD * n_vocab, 1.0, 0.0),
        ),
        (
            "output_norm.weight".into(),
            vec![N_EMBD],
            rnd(N_EMBD, 0.1, 1.0),
        ),
    ];
    for i in 0..2 {
        let n = |s: &str| format!("blk.{i}.{s}");
        tensors.push((n("attn_norm.weight"), vec![N_EMBD], rnd(N_EMBD, 0.1, 1.0)));
        tensors.push((
            n("attn_q.weight"),
            vec![N_EMBD, N_EMBD],
            rnd(N_EMBD * N_EMBD, 0.5, 0.0),
        ));
        tensors.push((
            n("attn_k.weight"),
            vec![N_EMBD, N_EMBD / 2],
            rnd(N_EMBD * N_EMBD / 2, 0.5, 0.0),
        ));
        tensors.push((
            n("attn_v.weight"),
            vec![N_EMBD, N_EMBD / 2],
            rnd(N_EMBD * N_EMBD / 2, 0.5, 0.0),
        ));
        tensors.push((
            n("attn_output.weight"),
            vec![N_EMBD, N_EMBD],
            rnd(N_EMBD * N_EMBD, 0.5, 0.0),
        ));
        tensors.push((n("ffn_norm.weight"), vec![N_EMBD], rnd(N_EMBD, 0.1, 1.0)));
        tensors.push((
            n("ffn_gate.weight"),
            vec![N_EMBD, N_FF],
            rnd(N_EMBD * N_FF, 0.5, 0.0),
        ));
        tensors.push((
            n("ffn_up.weight"),
            vec![N_EMBD, N_FF],
            rnd(N_EMBD * N_FF, 0.5, 0.0),
        ));
        tensors.push((
            n("ffn_down.weight"),
            vec![N_FF, N_EMBD],
            rnd(N_EMBD * N_FF, 0.5, 0.0),
        ));
    }
    Tiny { meta, tensors }
}

fn write(t: &Tiny, path: &Path) {
    let mut w = GgufWriter::new();
    for (k, v) in &t.meta {
        w.add(k, v.clone());
    }
    for (name, dims, data) in &t.tensors {
        w.add_f32(name, dims, data).unwrap();
    }
    w.write(path).unwrap();
}

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
