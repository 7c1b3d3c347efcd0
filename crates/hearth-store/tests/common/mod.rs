//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use hearth_store::{Home, Result, Store};
use sha2::{Digest, Sha256};

pub const SMOLLM2_SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
pub const SMOLLM2_SIZE: u64 = 98_362_432;
pub const GEMMA3_SHA: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";

/// A store in a fresh temporary home (removed when the guard drops).
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::Builder::new()
        .prefix("hearth-store-test-")
        .tempdir()
        .expect("creating a temp dir for HEARTH_HOME");
    let store = must(Store::open(Home::at(dir.path())));
    (dir, store)
}

/// Unwraps with the error's Display text, so a missing pip or a failed
/// download fails the test with the store's own explanation.
#[track_caller]
pub fn must<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("hearth-store error: {e}"),
    }
}

/// Independent full-file sha256, to check what the store claims.
pub fn sha256_file(path: &Path) -> String {
    let mut f = File::open(path).expect("open blob");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read blob");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Names of the entries of a directory, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn blob(home: &Path, sha: &str) -> PathBuf {
    home.join("blobs").join(format!("sha256-{sha}"))
}

pub const MINILM_TREE_SHA: &str =
    "cc316a0885c7b5be8b7a4ddeef418d3693ae09662bc7298eabf2e930622de7e4";
pub const MINILM_SAFETENSORS_SHA: &str =
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

/// Writes `len` pseudo-random bytes (deterministic per `seed`) to `path`.
pub fn write_bytes(path: &Path, len: usize, seed: u64) {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let data: Vec<u8> = (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u8
        })
        .collect();
    std::fs::write(path, data).expect("write test file");
}
