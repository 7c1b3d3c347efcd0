//! Experts in the store: created over a stored base with an adapter in
//! either format (files the tests write; the store never reads them), listed,
//! shown, removed with their blobs, and every refusal named.

mod common;

use common::*;
use hearth_store::{AdapterFormat, Error, ExpertSpec, ImportOptions, Progress, Store};

fn with_base() -> (tempfile::TempDir, Store) {
    let (dir, store) = temp_store();
    let base = dir.path().join("base.gguf");
    write_bytes(&base, 1 << 16, 7);
    must(store.import(&base, "tiny", &ImportOptions::default()));
    (dir, store)
}

fn spec(adapter: Option<AdapterFormat>) -> ExpertSpec {
    ExpertSpec {
        base: "tiny".into(),
        adapter,
        system: Some("Answer in one word.".into()),
        temperature: Some(0.0),
        description: "classify reviews".into(),
        examples: vec!["Is this review positive?".into()],
        ..ExpertSpec::default()
    }
}

#[test]
fn gguf_and_peft_adapters_are_stored_laid_out_and_freed() {
    let (dir, store) = with_base();
    let gguf = dir.path().join("a.gguf");
    write_bytes(&gguf, 5000, 1);
    let peft = dir.path().join("peft");
    std::fs::create_dir(&peft).unwrap();
    std::fs::write(peft.join("adapter_config.json"), b"{\"r\": 8}").unwrap();
    write_bytes(&peft.join("adapter_model.safetensors"), 7000, 2);

    let a = must(store.create_expert(
        "a",
        spec(Some(AdapterFormat::Gguf)),
        Some(&gguf),
        Progress::Quiet,
    ));
    let path = a.adapter_path.clone().expect("an adapter path");
    assert_eq!(sha256_file(&path), sha256_file(&gguf));
    assert_eq!(a.adapter_bytes, 5000);
    let b = must(store.create_expert(
        "b",
        spec(Some(AdapterFormat::Peft)),
        Some(&peft),
        Progress::Quiet,
    ));
    let dir_b = b.adapter_path.clone().expect("an adapter dir");
    assert!(dir_b.join("adapter_config.json").is_file());
    assert_eq!(
        sha256_file(&dir_b.join("adapter_model.safetensors")),
        sha256_file(&peft.join("adapter_model.safetensors"))
    );
    // The same adapter twice is stored once.
    must(store.create_expert(
        "a2",
        spec(Some(AdapterFormat::Gguf)),
        Some(&gguf),
        Progress::Quiet,
    ));
    let plain = must(store.create_expert("plain", spec(None), None, Progress::Quiet));
    assert_eq!(plain.adapter_path, None);

    let names: Vec<String> = must(store.experts()).into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["a", "a2", "b", "plain"]);
    let shown = must(store.expert("a")).expect("expert a");
    assert_eq!(shown.spec, spec(Some(AdapterFormat::Gguf)));
    assert!(
        must(store.expert("tiny")).is_none(),
        "a model is not an expert"
    );
    assert!(must(store.expert("nope")).is_none());

    // Removing one of two users keeps the blob; the last frees it.
    let blobs_before = entries(&dir.path().join("blobs")).len();
    let r = must(store.remove("a"));
    assert!(r.freed.is_empty() && r.kept.len() == 1, "{r:?}");
    let r = must(store.remove("a2"));
    assert_eq!(r.freed.len(), 1, "{r:?}");
    assert_eq!(entries(&dir.path().join("blobs")).len(), blobs_before - 1);
    must(store.remove("b"));
    assert!(!dir_b.exists(), "the expert's directory goes with it");
}

#[test]
fn refusals_name_the_problem() {
    let (dir, store) = with_base();
    let gguf = dir.path().join("a.gguf");
    write_bytes(&gguf, 100, 1);
    let q = Progress::Quiet;
    let fmt = Some(AdapterFormat::Gguf);

    let e = store
        .create_expert("smollm2", spec(None), None, q)
        .unwrap_err();
    assert!(matches!(e, Error::ReservedName { .. }), "{e}");
    let e = store
        .create_expert("tiny", spec(None), None, q)
        .unwrap_err();
    assert!(matches!(e, Error::ModelExists { .. }), "{e}");
    let e = store
        .create_expert("bad name", spec(None), None, q)
        .unwrap_err();
    assert!(matches!(e, Error::InvalidName { .. }), "{e}");

    let mut other = spec(None);
    other.base = "missing".into();
    let e = store.create_expert("x", other, None, q).unwrap_err();
    assert!(
        e.to_string().contains("`missing` is not a stored model"),
        "{e}"
    );

    must(store.create_expert("first", spec(None), None, q));
    let mut on_expert = spec(None);
    on_expert.base = "first".into();
    let e = store.create_expert("x", on_expert, None, q).unwrap_err();
    assert!(e.to_string().contains("is itself an expert"), "{e}");

    let e = store.create_expert("x", spec(fmt), None, q).unwrap_err();
    assert!(e.to_string().contains("needs an adapter path"), "{e}");
    let e = store
        .create_expert("x", spec(Some(AdapterFormat::Peft)), Some(dir.path()), q)
        .unwrap_err();
    assert!(e.to_string().contains("adapter_config.json"), "{e}");
    let e = store
        .create_expert("x", spec(fmt), Some(&dir.path().join("gone.gguf")), q)
        .unwrap_err();
    assert!(e.to_string().contains("gone.gguf"), "{e}");
    // Nothing of the refused experts was left behind.
    assert!(must(store.expert("x")).is_none());
    assert!(entries(&dir.path().join("tmp")).is_empty());
}
