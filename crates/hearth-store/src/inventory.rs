//! Looking at, sharing and removing stored models: `show`, `adopt` and `rm`.
//!
//! Removal deletes the manifest first and then each blob no other manifest
//! refers to, holding the model's lock and the store-wide blob lock
//! exclusively (see `store`), so a pull or import that is about to refer to
//! a blob cannot lose it. A removal killed between the two steps leaves
//! only unreferenced blobs, which cost space but no correctness (a later
//! pull adopts them).
//!
//! This module must not know file formats or fetch anything.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fsutil::{self, Mode};
use crate::manifest::{valid_name, Manifest};
use crate::progress::Progress;
use crate::store::Store;

/// What [`Store::remove`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Removed {
    pub name: String,
    /// The removed manifest; `None` if it was unreadable (then no blob is
    /// freed, since what it referred to cannot be known).
    pub manifest: Option<Manifest>,
    /// Blobs deleted because nothing else referred to them.
    pub freed: Vec<PathBuf>,
    /// Blobs kept because another model refers to them (or because some
    /// manifest could not be read, which makes every blob possibly used).
    pub kept: Vec<PathBuf>,
    /// Bytes freed on disk (as far as the store knows: a blob hard-linked
    /// from an imported file keeps that file's data alive).
    pub freed_bytes: u64,
}

/// What [`Store::free_unreferenced`] did.
#[derive(Default)]
pub(crate) struct Freed {
    pub freed: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
    pub bytes: u64,
}

/// What [`Store::show`] reports about one model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub manifest: Manifest,
    /// What `resolve` returns for it: the blob, or the directory of a
    /// multi-file model.
    pub path: PathBuf,
    /// Total bytes (all files of a multi-file model).
    pub size: u64,
    /// Whether every blob is there with its recorded size.
    pub present: bool,
    /// The blob(s) behind it.
    pub blobs: Vec<PathBuf>,
}

impl Store {
    /// Removes model `name`: its manifest, its directory if it has one, and
    /// each of its blobs that no other manifest refers to. Waits for pulls
    /// and imports in progress. [`Error::NotInStore`] if there is no such
    /// model (a default model that was never pulled included).
    pub fn remove(&self, name: &str) -> Result<Removed> {
        if !valid_name(name) {
            return Err(Error::InvalidName {
                what: "model",
                name: name.to_string(),
            });
        }
        let _lock = self.name_lock(name, Progress::Quiet)?;
        let _blobs = self.blobs_lock(Mode::Exclusive, Progress::Quiet)?;
        let manifest = match self.read_manifest(name) {
            Ok(Some(m)) => Some(m),
            Ok(None) => {
                return Err(Error::NotInStore {
                    name: name.to_string(),
                })
            }
            Err(Error::BadManifest { .. }) => None,
            Err(e) => return Err(e),
        };
        let path = self.home.manifest_path(name);
        fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
        fsutil::sync_parent(&path);
        let dir = self.home.model_dir(name);
        fsutil::remove_any(&dir).map_err(|e| Error::io("removing", &dir, e))?;
        let freed = match &manifest {
            Some(m) => self.free_unreferenced(&blob_hexes(m))?,
            None => Freed::default(),
        };
        Ok(Removed {
            name: name.to_string(),
            manifest,
            freed: freed.freed,
            kept: freed.kept,
            freed_bytes: freed.bytes,
        })
    }

    /// The manifest of `name` with where its data is and whether it is all
    /// there. Read-only: a damaged model is reported, not repaired.
    pub fn show(&self, name: &str) -> Result<ModelInfo> {
        if !valid_name(name) {
            return Err(Error::InvalidName {
                what: "model",
                name: name.to_string(),
            });
        }
        let m = self.read_manifest(name)?.ok_or_else(|| Error::NotInStore {
            name: name.to_string(),
        })?;
        let (blobs, present) = match self.manifest_files(&m)? {
            Some(files) => (
                files
                    .iter()
                    .map(|f| self.home.blob_path(&f.sha256_hex))
                    .collect(),
                files
                    .iter()
                    .all(|f| self.intact_blob(&f.sha256_hex, f.size).is_some()),
            ),
            None => match m.sha256_hex() {
                Some(hex) => (
                    vec![self.home.blob_path(hex)],
                    self.intact_blob(hex, m.size).is_some(),
                ),
                None => (Vec::new(), false),
            },
        };
        Ok(ModelInfo {
            path: self.data_path(&m),
            size: m.size,
            present,
            blobs,
            manifest: m,
        })
    }

    /// Deletes each blob of `hexes` that no manifest refers to. Caller holds
    /// the blob lock exclusively.
    pub(crate) fn free_unreferenced(&self, hexes: &[String]) -> Result<Freed> {
        let mut out = Freed::default();
        let Some(used) = self.referenced()? else {
            out.kept = hexes.iter().map(|h| self.home.blob_path(h)).collect();
            return Ok(out);
        };
        let mut seen = HashSet::new();
        for hex in hexes {
            if !seen.insert(hex) {
                continue;
            }
            let blob = self.home.blob_path(hex);
            if used.contains(hex) {
                out.kept.push(blob);
                continue;
            }
            let size = fs::metadata(&blob).map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(&blob) {
                Ok(()) => {
                    out.bytes += size;
                    out.freed.push(blob);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("removing", &blob, e)),
            }
        }
        Ok(out)
    }

    /// Every blob digest some manifest refers to; `None` if some manifest
    /// cannot be read (then nothing may be deleted).
    fn referenced(&self) -> Result<Option<HashSet<String>>> {
        let dir = self.home.manifests_dir();
        let mut used = HashSet::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("reading", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("reading", &dir, e))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(text) = fs::read_to_string(&path) else {
                return Ok(None);
            };
            let Ok(m) = serde_json::from_str::<Manifest>(&text) else {
                return Ok(None);
            };
            used.extend(blob_hexes(&m));
        }
        Ok(Some(used))
    }
}

impl Store {
    /// Takes model `name` as it is stored in `from` (another home): its
    /// blobs hard-linked in (copied where a link is impossible) and its
    /// manifest written last, so the model is there exactly when a pull
    /// would have left it. For a benchmark's or a test's private home, with
    /// nothing downloaded twice. Returns what [`Store::resolve`] gives.
    pub fn adopt(&self, from: &Store, name: &str) -> Result<PathBuf> {
        let m = from.read_manifest(name)?.ok_or_else(|| Error::NotInStore {
            name: name.to_string(),
        })?;
        let lock = self.name_lock(name, Progress::Quiet)?;
        for hex in blob_hexes(&m) {
            let src = from.home().blob_path(&hex);
            let dst = self.home().blob_path(&hex);
            if dst.exists() {
                continue;
            }
            let tmp = self.home().tmp_dir().join(format!("{name}.adopt.partial"));
            let _ = fs::remove_file(&tmp);
            if fs::hard_link(&src, &tmp).is_err() {
                fs::copy(&src, &tmp).map_err(|e| Error::io("copying", &src, e))?;
            }
            fsutil::TempFile::adopt(tmp)?.persist(&dst)?;
        }
        self.write_manifest(&m)?;
        // `resolve` may lay out a multi-file model's directory under the
        // same lock, so it is released first.
        drop(lock);
        self.resolve(name)
    }
}

/// The blob digests `m` refers to (invalid ones cannot name a blob).
pub(crate) fn blob_hexes(m: &Manifest) -> Vec<String> {
    match &m.files {
        Some(files) => files
            .iter()
            .filter_map(|f| f.sha256_hex().map(str::to_string))
            .collect(),
        None => m.sha256_hex().map(str::to_string).into_iter().collect(),
    }
}
