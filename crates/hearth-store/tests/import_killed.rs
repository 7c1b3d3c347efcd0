//! An import killed half-way (SIGKILL, no chance to clean up) leaves no blob
//! and no manifest, and the store stays usable: the next import works and
//! sweeps the half-written temp file. The test re-runs its own binary as the
//! child that gets killed.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hearth_store::{ImportOptions, Progress, Store, HEARTH_HOME_ENV};

const CHILD_ENV: &str = "HEARTH_STORE_TEST_IMPORT_CHILD";
const TEST_NAME: &str = "a_killed_import_leaves_no_half_blob";

#[test]
fn a_killed_import_leaves_no_half_blob() {
    if let Some(src) = std::env::var_os(CHILD_ENV) {
        let opts = ImportOptions {
            force: false,
            copy: true,
            progress: Progress::Quiet,
        };
        let store = must(Store::open_default());
        must(store.import(std::path::Path::new(&src), "big", &opts));
        return;
    }

    let (dir, store) = temp_store();
    let home = dir.path();
    let src_dir = tempfile::tempdir().expect("tempdir");
    let src = src_dir.path().join("big.gguf");
    // Sparse, so making it is instant, but copying it takes long enough
    // (several GiB of writes) to be caught in the middle.
    let f = std::fs::File::create(&src).expect("create");
    f.set_len(8 << 30).expect("set_len");
    drop(f);

    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(&exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &src)
        .env(HEARTH_HOME_ENV, home)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let partial = home.join("tmp/big.import.partial");
    let start = Instant::now();
    loop {
        let written = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if written >= 16 << 20 {
            break;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("the child finished ({status}) before it could be killed mid-copy");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the child never started copying"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "killed child must not succeed");

    // Killed mid-copy: the half file is only in tmp/, never in blobs/.
    assert!(
        partial.exists(),
        "the half-written temp file is what is left"
    );
    assert!(entries(&home.join("blobs")).is_empty(), "no half blob");
    assert!(entries(&home.join("manifests")).is_empty(), "no manifest");
    assert!(matches!(
        store.show("big"),
        Err(hearth_store::Error::NotInStore { .. })
    ));

    // Still usable: another import works and sweeps the dead one's file.
    let small = src_dir.path().join("small.gguf");
    write_bytes(&small, 1 << 20, 12);
    let opts = ImportOptions {
        force: false,
        copy: true,
        progress: Progress::Quiet,
    };
    let done = must(store.import(&small, "small", &opts));
    assert_eq!(sha256_file(&done.path), sha256_file(&small));
    assert!(entries(&home.join("tmp")).is_empty(), "swept");
    assert_eq!(entries(&home.join("blobs")).len(), 1);
    assert_eq!(entries(&home.join("manifests")), ["small.json"]);
}
