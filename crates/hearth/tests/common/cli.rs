//! Checks on a finished `hearth` command, shared by the command-line tests.
#![allow(dead_code)]

use std::process::Output;

/// The command fails, and its message contains every one of `needles`.
pub fn fails_with(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    assert!(
        !err.contains("panicked"),
        "a panic is not an error message: {err}"
    );
}
