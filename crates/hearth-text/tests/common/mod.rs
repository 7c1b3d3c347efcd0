//! Shared helpers for tests that need the real models and golden files.

#![allow(dead_code)]

use std::path::PathBuf;

use hearth_gguf::GgufFile;
use hearth_text::Tokenizer;

/// Store names of the two default models (pulled by the test command).
pub const SMOLLM: &str = "smollm2";
pub const GEMMA: &str = "gemma3";
pub const SMOLLM_GOLDEN: &str = "smollm2-135m-instruct-q4_1.json";
pub const GEMMA_GOLDEN: &str = "gemma3-270m-q4_k_m.json";

/// Directory of the golden files: `HEARTH_GOLDEN_DIR`, else `shared/golden`
/// beside the repository.
pub fn golden_dir() -> PathBuf {
    std::env::var_os("HEARTH_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"))
}

/// Open a default model from hearth's store, pulling it on first use; a
/// model that cannot be had fails the test loudly.
pub fn open_model(name: &str) -> GgufFile {
    let store = hearth_store::Store::open_default().expect("hearth home");
    let path = store
        .ensure(name, hearth_store::Progress::Quiet)
        .unwrap_or_else(|e| panic!("test model {name} is not available: {e}"));
    GgufFile::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

pub fn tokenizer(name: &str) -> Tokenizer {
    let f = open_model(name);
    Tokenizer::from_gguf(&f).unwrap_or_else(|e| panic!("cannot build tokenizer for {name}: {e}"))
}

pub fn golden(name: &str) -> serde_json::Value {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} is unreadable ({e}); set HEARTH_GOLDEN_DIR to the directory holding {name}",
            path.display()
        )
    });
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("golden file {} is not JSON: {e}", path.display()))
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// A golden piece: a string, or an array of byte values when not valid UTF-8.
pub fn piece_bytes(v: &serde_json::Value) -> Vec<u8> {
    match v {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        serde_json::Value::Array(a) => a.iter().map(|b| b.as_u64().expect("byte") as u8).collect(),
        other => panic!("unexpected piece {other}"),
    }
}
