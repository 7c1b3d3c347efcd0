//! Importing, showing and removing models, with no network: files are made
//! by the tests. Each test has its own temporary HEARTH_HOME.

mod common;

use std::path::Path;

use common::*;
use hearth_store::{Error, ImportMethod, ImportOptions, Progress};

fn opts(copy: bool, force: bool) -> ImportOptions {
    ImportOptions {
        force,
        copy,
        progress: Progress::Quiet,
    }
}

#[cfg(unix)]
fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        std::fs::metadata(a).expect("stat"),
        std::fs::metadata(b).expect("stat"),
    );
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[test]
fn import_by_link_on_the_same_file_system() {
    let (dir, store) = temp_store();
    let src = dir.path().join("mine.gguf");
    write_bytes(&src, 3 << 20, 1);
    let sha = sha256_file(&src);

    let done = must(store.import(&src, "mine", &opts(false, false)));
    assert_eq!(done.method, ImportMethod::Linked);
    assert_eq!(done.path, blob(dir.path(), &sha));
    #[cfg(unix)]
    assert!(same_inode(&src, &done.path), "a hard link shares the inode");
    assert_eq!(sha256_file(&done.path), sha);
    let m = &done.manifest;
    assert_eq!(m.name, "mine");
    assert_eq!(m.digest, format!("sha256:{sha}"));
    assert_eq!(m.size, 3 << 20);
    assert_eq!(m.file_name, "mine.gguf");
    assert!(m.source.starts_with("file:"), "{}", m.source);
    assert_eq!(m.files, None);

    assert_eq!(must(store.resolve("mine")), done.path);
    let list = must(store.list());
    assert_eq!(list.len(), 1);
    assert_eq!(&list[0], m);
    assert!(entries(&dir.path().join("tmp")).is_empty());

    let info = must(store.show("mine"));
    assert_eq!(info.path, done.path);
    assert_eq!(info.size, 3 << 20);
    assert!(info.present);
    assert_eq!(info.blobs, std::slice::from_ref(&done.path));
}

#[test]
fn import_by_copy_is_independent_of_the_source() {
    let (dir, store) = temp_store();
    let src = dir.path().join("mine.gguf");
    write_bytes(&src, 2 << 20, 2);
    let sha = sha256_file(&src);
    let done = must(store.import(&src, "mine", &opts(true, false)));
    assert_eq!(done.method, ImportMethod::Copied);
    #[cfg(unix)]
    assert!(!same_inode(&src, &done.path));
    assert_eq!(sha256_file(&done.path), sha);
    // Changing the source afterwards does not touch the stored copy.
    write_bytes(&src, 2 << 20, 3);
    assert_eq!(sha256_file(&done.path), sha);
    assert_eq!(must(store.resolve("mine")), done.path);
}

#[test]
fn two_imports_of_the_same_bytes_store_one_blob() {
    for copy in [false, true] {
        let (dir, store) = temp_store();
        let src = dir.path().join("m.gguf");
        write_bytes(&src, 1 << 20, 4);
        let a = must(store.import(&src, "a", &opts(copy, false)));
        let b = must(store.import(&src, "b", &opts(copy, false)));
        assert_eq!(b.method, ImportMethod::Deduplicated, "copy={copy}");
        assert_eq!(a.path, b.path);
        assert_eq!(entries(&dir.path().join("blobs")).len(), 1);
        assert_eq!(entries(&dir.path().join("manifests")), ["a.json", "b.json"]);
        assert!(entries(&dir.path().join("tmp")).is_empty());
    }
}

#[test]
fn names_are_checked() {
    let (dir, store) = temp_store();
    let src = dir.path().join("m.gguf");
    write_bytes(&src, 1000, 5);
    must(store.import(&src, "taken", &opts(false, false)));

    let e = store
        .import(&src, "taken", &opts(false, false))
        .expect_err("exists");
    assert!(matches!(e, Error::ModelExists { .. }), "{e:?}");
    assert!(e.to_string().contains("`taken` already exists"), "{e}");

    for default in ["smollm2", "gemma3", "minilm"] {
        let e = store
            .import(&src, default, &opts(false, true))
            .expect_err("reserved even with force");
        assert!(matches!(e, Error::ReservedName { .. }), "{e:?}");
    }
    for bad in ["../x", "a/b", ".hidden", ""] {
        let e = store
            .import(&src, bad, &opts(false, false))
            .expect_err("invalid");
        assert!(matches!(e, Error::InvalidName { .. }), "{bad}: {e:?}");
    }
    let e = store
        .import(&dir.path().join("nope.gguf"), "x", &opts(false, false))
        .expect_err("missing file");
    assert!(matches!(e, Error::FileNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("nope.gguf"), "{e}");
    assert_eq!(entries(&dir.path().join("manifests")), ["taken.json"]);
}

#[test]
fn forced_import_replaces_and_frees_the_old_blob() {
    let (dir, store) = temp_store();
    let one = dir.path().join("one.gguf");
    let two = dir.path().join("two.gguf");
    write_bytes(&one, 5000, 6);
    write_bytes(&two, 6000, 7);
    let first = must(store.import(&one, "m", &opts(true, false)));
    let second = must(store.import(&two, "m", &opts(true, true)));
    assert_ne!(first.path, second.path);
    assert!(!first.path.exists(), "the replaced blob is freed");
    assert_eq!(must(store.resolve("m")), second.path);
    assert_eq!(entries(&dir.path().join("blobs")).len(), 1);
}

#[test]
fn rm_keeps_a_blob_another_model_uses() {
    let (dir, store) = temp_store();
    let src = dir.path().join("m.gguf");
    write_bytes(&src, 1 << 20, 8);
    let a = must(store.import(&src, "a", &opts(true, false)));
    must(store.import(&src, "b", &opts(true, false)));

    let r = must(store.remove("a"));
    assert_eq!(r.name, "a");
    assert!(r.freed.is_empty());
    assert_eq!(r.kept, std::slice::from_ref(&a.path));
    assert!(a.path.exists());
    assert_eq!(must(store.resolve("b")), a.path);
    assert!(matches!(store.show("a"), Err(Error::NotInStore { .. })));

    let r = must(store.remove("b"));
    assert_eq!(r.freed, std::slice::from_ref(&a.path));
    assert_eq!(r.freed_bytes, 1 << 20);
    assert!(r.kept.is_empty());
    assert!(entries(&dir.path().join("blobs")).is_empty());
    assert!(entries(&dir.path().join("manifests")).is_empty());

    let e = store.remove("b").expect_err("gone");
    assert!(matches!(e, Error::NotInStore { .. }), "{e:?}");
    assert!(e.to_string().contains("no model `b`"), "{e}");
    // A default model that was never pulled is not in the store either.
    assert!(matches!(
        store.remove("smollm2"),
        Err(Error::NotInStore { .. })
    ));
}

#[test]
fn a_first_release_manifest_still_reads() {
    let (dir, store) = temp_store();
    let data = dir.path().join("data");
    write_bytes(&data, 4096, 9);
    let sha = sha256_file(&data);
    std::fs::rename(&data, blob(dir.path(), &sha)).expect("place blob");
    // Exactly what the first release wrote (no `files`).
    let old = format!(
        "{{\n  \"schema\": 1,\n  \"name\": \"legacy\",\n  \"kind\": \"model\",\n  \
         \"digest\": \"sha256:{sha}\",\n  \"size\": 4096,\n  \"source\": \"pypi:x\",\n  \
         \"file_name\": \"legacy.gguf\",\n  \"created\": \"2024-01-01T00:00:00Z\"\n}}\n"
    );
    std::fs::write(dir.path().join("manifests/legacy.json"), old).expect("write");

    assert_eq!(must(store.resolve("legacy")), blob(dir.path(), &sha));
    let list = must(store.list());
    assert_eq!(list[0].name, "legacy");
    assert_eq!(list[0].files, None);
    let info = must(store.show("legacy"));
    assert!(info.present);
    assert_eq!(info.size, 4096);
    let r = must(store.remove("legacy"));
    assert_eq!(r.freed, [blob(dir.path(), &sha)]);
}

#[test]
fn show_reports_a_damaged_model_without_failing() {
    let (dir, store) = temp_store();
    let src = dir.path().join("m.gguf");
    write_bytes(&src, 10_000, 10);
    let done = must(store.import(&src, "m", &opts(true, false)));
    std::fs::remove_file(&done.path).expect("rm blob");
    let info = must(store.show("m"));
    assert!(!info.present);
    let e = store.resolve("m").expect_err("blob gone");
    assert!(matches!(e, Error::MissingBlob { .. }), "{e:?}");
}

#[test]
fn leftovers_of_killed_imports_are_cleaned_by_the_next_write() {
    let (dir, store) = temp_store();
    let home = dir.path();
    // A killed import of `m` itself, one of another name, and a stray file
    // the store did not write.
    std::fs::write(home.join("tmp/m.import.partial"), vec![1u8; 1 << 16]).expect("w");
    std::fs::write(home.join("tmp/other.import.partial"), vec![2u8; 1 << 16]).expect("w");
    std::fs::create_dir_all(home.join("tmp/gone.dir.partial/1_Pooling")).expect("mkdir");
    std::fs::write(home.join("tmp/stray"), b"x").expect("w");
    let src = home.join("m.gguf");
    write_bytes(&src, 1 << 16, 11);
    let done = must(store.import(&src, "m", &opts(true, false)));
    assert_eq!(sha256_file(&done.path), sha256_file(&src));
    assert_eq!(entries(&home.join("tmp")), ["stray"]);
    assert_eq!(entries(&home.join("blobs")).len(), 1);
}
