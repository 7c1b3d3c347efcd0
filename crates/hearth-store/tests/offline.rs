//! Store behaviour that needs no network: resolving, errors, layout.

mod common;

use common::*;
use hearth_store::{Error, Progress, Store};

#[test]
fn open_creates_the_layout() {
    let (dir, _store) = temp_store();
    assert_eq!(
        entries(dir.path()),
        ["blobs", "cache", "locks", "manifests", "models", "tmp"]
    );
    assert!(dir.path().join("cache/pip").is_dir());
}

#[test]
fn an_existing_path_passes_through() {
    let (dir, store) = temp_store();
    let f = dir.path().join("my-model.gguf");
    std::fs::write(&f, b"GGUF").expect("write");
    let s = f.to_str().expect("utf-8 temp path");
    assert_eq!(must(store.resolve(s)), f);
    // ensure must not try to pull a file.
    assert_eq!(must(store.ensure(s, Progress::Quiet)), f);
}

#[test]
fn a_missing_path_says_so() {
    let (dir, store) = temp_store();
    let f = dir.path().join("nope.gguf");
    let e = store
        .resolve(f.to_str().expect("utf-8"))
        .expect_err("must fail");
    assert!(matches!(e, Error::FileNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("nope.gguf"), "{e}");
}

#[test]
fn unknown_names_are_named_and_known_ones_listed() {
    let (_dir, store) = temp_store();
    for name in ["llama9000", "../../etc/passwd"] {
        let e = store.resolve(name).expect_err("must fail");
        let msg = e.to_string();
        assert!(msg.contains(name), "{msg}");
        if let Error::UnknownModel { known, .. } = &e {
            assert!(
                known.contains("smollm2") && known.contains("gemma3"),
                "{msg}"
            );
        }
    }
    let e = store
        .pull("llama9000", Progress::Quiet)
        .expect_err("must fail");
    assert!(matches!(e, Error::UnknownModel { .. }), "{e:?}");
    assert!(e.to_string().contains("smollm2, gemma3"), "{e}");
}

#[test]
fn known_but_not_pulled() {
    let (_dir, store) = temp_store();
    for name in ["smollm2", "gemma3", "minilm"] {
        let e = store.resolve(name).expect_err("not pulled yet");
        assert!(
            matches!(&e, Error::NotPulled { name: n } if n == name),
            "{e:?}"
        );
        assert!(e.to_string().contains("not pulled"), "{e}");
    }
    assert!(must(store.list()).is_empty());
}

#[test]
fn known_models_table() {
    let names: Vec<_> = Store::known_models().iter().map(|m| m.name).collect();
    assert_eq!(names, ["smollm2", "gemma3", "minilm"]);
}
