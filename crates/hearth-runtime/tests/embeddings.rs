//! Sentence embeddings against the golden file
//! (`shared/golden/embeddings-all-minilm-l6-v2.json`, sentence-transformers'
//! own vectors), batching invariance, and load errors on broken model
//! directories. The model comes from the store (`ensure("minilm")`); a
//! missing model fails the test, it is never skipped.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use hearth_runtime::Embedder;
use serde_json::Value;

/// Cosine every golden vector must reach (the golden README's tolerance).
const MIN_COSINE: f64 = 0.999;

fn minilm_dir() -> PathBuf {
    let store = hearth_store::Store::open_default().expect("hearth home");
    store
        .ensure("minilm", hearth_store::Progress::Quiet)
        .unwrap_or_else(|e| panic!("model minilm is not available: {e}"))
}

fn embedder() -> &'static Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| Embedder::load(&minilm_dir(), 2).expect("minilm loads"))
}

/// `shared/` sits beside the checkout (here and in CI).
fn golden_path() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/golden/embeddings-all-minilm-l6-v2.json");
    assert!(
        p.exists(),
        "golden file missing beside the checkout: {}",
        p.display()
    );
    p
}

fn golden() -> Vec<(String, Vec<f64>)> {
    let path = golden_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("golden file is JSON");
    let items = v["items"].as_array().expect("golden items[]");
    assert!(!items.is_empty());
    items
        .iter()
        .map(|it| {
            let text = it["text"].as_str().expect("item text").to_string();
            let emb = it["embedding"]
                .as_array()
                .expect("item embedding")
                .iter()
                .map(|x| x.as_f64().expect("embedding float"))
                .collect();
            (text, emb)
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "vector lengths differ");
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn golden_vectors_match() {
    let e = embedder();
    let gold = golden();
    assert_eq!(e.dim(), 384);
    assert_eq!(e.max_seq_len(), 256);
    assert!(
        gold.iter().any(|(t, _)| t.is_empty()),
        "the golden set has the empty string"
    );
    let texts: Vec<&str> = gold.iter().map(|(t, _)| t.as_str()).collect();
    let t0 = Instant::now();
    let out = e.embed(&texts).expect("embedding works");
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    assert_eq!(out.vectors.len(), gold.len());
    assert_eq!(out.tokens.len(), gold.len());
    assert_eq!(out.prompt_tokens, out.tokens.iter().sum::<usize>());
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for ((text, want), got) in gold.iter().zip(&out.vectors) {
        assert_eq!(got.len(), want.len());
        let norm: f64 = got.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{text:?}: norm {norm}");
        let c = cosine(got, want);
        lo = lo.min(c);
        hi = hi.max(c);
        assert!(c >= MIN_COSINE, "{text:?}: cosine {c} < {MIN_COSINE}");
    }
    // The empty string is [CLS] [SEP], as sentence-transformers embeds it.
    let empty = gold.iter().position(|(t, _)| t.is_empty()).unwrap_or(0);
    assert_eq!(out.tokens[empty], 2);
    eprintln!(
        "{} golden texts, {} tokens in {ms:.1} ms; cosine min {lo:.9} max {hi:.9}",
        gold.len(),
        out.prompt_tokens
    );
}

#[test]
fn a_text_alone_equals_the_same_text_in_a_batch() {
    let e = embedder();
    let texts = [
        "hello",
        "The quick brown fox jumps over the lazy dog.",
        "",
        "def add(a, b):\n    return a + b",
    ];
    let together = e.embed(&texts).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let alone = e.embed(&[t]).unwrap();
        assert_eq!(alone.vectors[0], together.vectors[i], "text {t:?}");
        assert_eq!(alone.tokens[0], together.tokens[i]);
    }
    // Reordered, with a duplicate.
    let mixed = e.embed(&[texts[3], texts[0], texts[3]]).unwrap();
    assert_eq!(mixed.vectors[0], together.vectors[3]);
    assert_eq!(mixed.vectors[1], together.vectors[0]);
    assert_eq!(mixed.vectors[2], together.vectors[3]);
    assert!(e.embed(&[]).unwrap().vectors.is_empty());
}

#[test]
fn long_texts_are_cut_at_the_limit() {
    let e = embedder();
    let long = "tokens ".repeat(1000);
    let out = e.embed(&[&long, "short"]).unwrap();
    assert_eq!(out.tokens[0], 256);
    assert_eq!(e.tokenize(&long).unwrap().len(), 256);
    let ids = e.tokenize("hello").unwrap();
    assert_eq!(ids.len(), 3, "[CLS] hello [SEP]: {ids:?}");
    // Many texts past the per-pass token budget still come back in order.
    let many: Vec<&str> = std::iter::repeat_n(long.as_str(), 20)
        .chain(["hello"])
        .collect();
    let out = e.embed(&many).unwrap();
    assert_eq!(out.vectors.len(), 21);
    assert_eq!(out.vectors[0], out.vectors[19]);
    assert_eq!(out.vectors[20], e.embed(&["hello"]).unwrap().vectors[0]);
}

/// A copy of the model directory (the weights linked, not copied) that a
/// test may break.
fn scratch_copy() -> tempfile::TempDir {
    let src = minilm_dir();
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "config.json",
        "tokenizer.json",
        "sentence_bert_config.json",
        "modules.json",
    ] {
        if src.join(name).exists() {
            std::fs::copy(src.join(name), dir.path().join(name)).unwrap();
        }
    }
    std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
    std::fs::copy(
        src.join("1_Pooling/config.json"),
        dir.path().join("1_Pooling/config.json"),
    )
    .unwrap();
    let weights = src.join("model.safetensors");
    let link = dir.path().join("model.safetensors");
    if std::fs::hard_link(&weights, &link).is_err() {
        std::os::unix::fs::symlink(&weights, &link).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> String {
    match Embedder::load(dir, 1) {
        Ok(e) => panic!("expected an error, loaded {e:?}"),
        Err(e) => e.to_string(),
    }
}

fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn the_scratch_copy_loads() {
    let dir = scratch_copy();
    let e = Embedder::load(dir.path(), 1).unwrap().with_name("minilm");
    assert_eq!(e.name(), "minilm");
    let v = e.embed(&["hello"]).unwrap();
    assert_eq!(
        v.vectors[0],
        embedder().embed(&["hello"]).unwrap().vectors[0]
    );
}

#[test]
fn missing_files_are_named() {
    for name in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "1_Pooling/config.json",
    ] {
        let dir = scratch_copy();
        std::fs::remove_file(dir.path().join(name)).unwrap();
        let e = load_err(dir.path());
        assert!(e.contains(name), "without {name}: {e}");
    }
    let e = load_err(Path::new("/nonexistent/minilm"));
    assert!(e.contains("/nonexistent/minilm"), "{e}");
}

#[test]
fn config_that_disagrees_with_the_weights_is_refused() {
    let dir = scratch_copy();
    edit_json(&dir.path().join("config.json"), |v| {
        v["intermediate_size"] = 1024.into()
    });
    let e = load_err(dir.path());
    assert!(
        e.contains("encoder.layer.0.intermediate.dense.weight") && e.contains("[1024, 384]"),
        "{e}"
    );

    let dir = scratch_copy();
    edit_json(&dir.path().join("config.json"), |v| {
        v["num_hidden_layers"] = 7.into()
    });
    let e = load_err(dir.path());
    assert!(e.contains("encoder.layer.6"), "{e}");
}

#[test]
fn unsupported_pooling_and_modules_are_refused() {
    let dir = scratch_copy();
    edit_json(&dir.path().join("1_Pooling/config.json"), |v| {
        v["pooling_mode_mean_tokens"] = false.into();
        v["pooling_mode_cls_token"] = true.into();
    });
    let e = load_err(dir.path());
    assert!(e.contains("mean pooling"), "{e}");

    let dir = scratch_copy();
    edit_json(&dir.path().join("1_Pooling/config.json"), |v| {
        v["pooling_mode_max_tokens"] = true.into()
    });
    let e = load_err(dir.path());
    assert!(e.contains("pooling_mode_max_tokens"), "{e}");

    let dir = scratch_copy();
    let modules = dir.path().join("modules.json");
    if modules.exists() {
        edit_json(&modules, |v| {
            if let Some(list) = v.as_array_mut() {
                list.push(serde_json::json!({
                    "idx": 3, "name": "3", "path": "3_Dense",
                    "type": "sentence_transformers.models.Dense"
                }));
            }
        });
        let e = load_err(dir.path());
        assert!(e.contains("Dense"), "{e}");
    }
}

#[test]
fn a_broken_weights_file_is_an_error() {
    let dir = scratch_copy();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors"), "{e}");
}
