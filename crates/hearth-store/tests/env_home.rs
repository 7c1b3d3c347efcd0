//! `open_default` honours HEARTH_HOME. Its own test binary because it sets a
//! process-wide environment variable.

mod common;

use common::*;
use hearth_store::{Home, Store, HEARTH_HOME_ENV};

#[test]
fn open_default_uses_hearth_home() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("nested/home");
    // Mutating the environment races with threads reading it; this binary
    // has a single test, so there are none.
    std::env::set_var(HEARTH_HOME_ENV, &home);
    assert_eq!(must(Home::from_env()).root(), home.as_path());
    let store = must(Store::open_default());
    assert_eq!(store.home().root(), home.as_path());
    assert!(home.join("blobs").is_dir(), "home is created on demand");
}
