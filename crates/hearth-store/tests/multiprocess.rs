//! Several processes (like several test binaries of the lead's golden tests)
//! calling `Store::open_default()?.ensure(..)` on one HEARTH_HOME at once: one
//! downloads, the others wait on the lock and then find the model.
//!
//! The test re-runs its own binary as the child processes; a child is told
//! apart by an environment variable and only does the `ensure`.

mod common;

use std::process::Command;

use common::*;
use hearth_store::{Progress, Store, HEARTH_HOME_ENV};

const CHILD_ENV: &str = "HEARTH_STORE_TEST_CHILD";
const TEST_NAME: &str = "processes_share_one_pull";

#[test]
fn processes_share_one_pull() {
    if std::env::var_os(CHILD_ENV).is_some() {
        let path = must(must(Store::open_default()).ensure("smollm2", Progress::Bar));
        // The harness prints "test ... " on the same line; parsed with split.
        println!("BLOB={}", path.display());
        return;
    }

    let home = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current_exe");
    // All children are started before any is waited for, so they really
    // overlap (the download alone takes seconds).
    let handles: Vec<_> = (0..3)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, "1")
                .env(HEARTH_HOME_ENV, home.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let mut blobs = Vec::new();
    let mut downloads = 0;
    for h in handles {
        let out = h.wait_with_output().expect("wait child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        // Progress::Bar notes each download on stderr (bars themselves are
        // hidden off-terminal); with the lock working exactly one child
        // downloads, whatever the timing.
        downloads += String::from_utf8_lossy(&out.stderr)
            .matches("downloading smollm2")
            .count();
        assert!(
            out.status.success(),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let blob_line = stdout
            .lines()
            .find_map(|l| l.split_once("BLOB=").map(|(_, b)| b))
            .unwrap_or_else(|| panic!("child printed no BLOB= line:\n{stdout}"))
            .to_string();
        blobs.push(blob_line);
    }
    assert_eq!(downloads, 1, "the model must be downloaded once");
    assert!(blobs.iter().all(|b| *b == blobs[0]), "{blobs:?}");
    assert_eq!(
        blobs[0],
        blob(home.path(), SMOLLM2_SHA).display().to_string()
    );
    assert_eq!(entries(&home.path().join("blobs")).len(), 1);
    assert!(entries(&home.path().join("tmp")).is_empty());
}
