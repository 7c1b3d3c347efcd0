//! `import`: storing a file the user already has as a named model.
//!
//! The file is hard-linked into `tmp/` when it is on the same file system
//! (instant, no extra space) and copied otherwise (or when asked to), hashed
//! either way, and renamed into `blobs/sha256-<hex>` only once hashed; a
//! second import of the same bytes finds the blob and stores nothing new.
//! A killed import leaves at most `tmp/<name>.import.partial`, which the
//! next import of that name truncates and any later pull or import sweeps.
//!
//! **Hard links share the inode.** After a linked import the blob *is* the
//! user's file: if they later edit it in place, the stored model changes too
//! (a size change is noticed by `resolve`, an in-place rewrite of the same
//! size is not). Ollama behaves the same way. Users who want an independent
//! copy ask for one (`ImportOptions::copy`, `hearth import --copy`), and
//! tools that replace files by renaming (most editors, downloaders, `cp` onto
//! a new name) do not affect the blob.
//!
//! This module must not know file formats: the CLI checks that a file is a
//! GGUF before calling [`Store::import`].

use std::fs::{self, File, Metadata};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fsutil::{self, hash_stream, Hashed, Mode, TempFile};
use crate::inventory::blob_hexes;
use crate::manifest::{now_rfc3339, valid_name, Manifest, MANIFEST_SCHEMA};
use crate::progress::Progress;
use crate::registry;
use crate::store::Store;

/// How [`Store::import`] behaves.
#[derive(Clone, Copy, Debug)]
pub struct ImportOptions {
    /// Replace an existing model of the same name (never a default model's).
    pub force: bool,
    /// Always copy, even where a hard link would work.
    pub copy: bool,
    pub progress: Progress,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            force: false,
            copy: false,
            progress: Progress::Quiet,
        }
    }
}

/// How the bytes got into the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportMethod {
    /// The blob is a hard link to the imported file.
    Linked,
    /// The blob is a copy.
    Copied,
    /// A blob with these bytes was already stored; only a manifest was added.
    Deduplicated,
}

/// What [`Store::import`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Imported {
    pub manifest: Manifest,
    /// The blob the model now resolves to.
    pub path: PathBuf,
    pub method: ImportMethod,
}

impl Store {
    /// Stores `file` as model `name` and returns its manifest.
    ///
    /// Errors: [`Error::InvalidName`], [`Error::ReservedName`] (a default
    /// model's name, even with `force`: its manifest belongs to `pull`),
    /// [`Error::ModelExists`] (without `force`), [`Error::FileNotFound`],
    /// [`Error::SourceChanged`] (the file changed while being read),
    /// [`Error::DiskFull`] and other I/O errors. On any error nothing new is
    /// left in the store.
    pub fn import(&self, file: &Path, name: &str, opts: &ImportOptions) -> Result<Imported> {
        if !valid_name(name) {
            return Err(Error::InvalidName {
                what: "model",
                name: name.to_string(),
            });
        }
        if registry::find(name).is_some() {
            return Err(Error::ReservedName {
                name: name.to_string(),
            });
        }
        let before = match fs::metadata(file) {
            Ok(md) if md.is_file() => md,
            _ => {
                return Err(Error::FileNotFound {
                    path: file.to_path_buf(),
                })
            }
        };
        let progress = opts.progress;
        let _lock = self.name_lock(name, progress)?;
        let blobs = self.blobs_lock(Mode::Shared, progress)?;
        fsutil::sweep_tmp(&self.home);
        let manifest_path = self.home.manifest_path(name);
        // Checked under the lock; a corrupt manifest counts as existing too.
        if !opts.force && fs::symlink_metadata(&manifest_path).is_ok() {
            return Err(Error::ModelExists {
                name: name.to_string(),
            });
        }
        // What a forced import replaces, so its blobs can be freed after.
        let replaced = match self.read_manifest(name) {
            Ok(m) => m,
            Err(Error::BadManifest { .. }) => None,
            Err(e) => return Err(e),
        };

        let (Hashed { sha256_hex, size }, method) = self.store_file(
            file,
            &before,
            &format!("{name}.import"),
            opts.copy,
            progress,
        )?;
        let blob = self.home.blob_path(&sha256_hex);
        let source = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        let manifest = Manifest {
            schema: MANIFEST_SCHEMA,
            name: name.to_string(),
            kind: "model".to_string(),
            digest: format!("sha256:{sha256_hex}"),
            size,
            source: format!("file:{}", source.display()),
            file_name: file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            created: now_rfc3339(),
            files: None,
            expert: None,
        };
        // A forced import over a multi-file model leaves no stale directory.
        let old_dir = self.home.model_dir(name);
        fsutil::remove_any(&old_dir).map_err(|e| Error::io("removing", &old_dir, e))?;
        self.write_manifest(&manifest)?;
        progress.note(format!("{name}: stored sha256:{sha256_hex} ({size} bytes)"));
        if let Some(old) = replaced {
            // Freeing needs the exclusive blob lock; the name lock is still
            // ours, so nothing can change this model in between.
            drop(blobs);
            // Best effort: the import itself is done; an orphaned blob only
            // costs space.
            if let Ok(_blobs) = self.blobs_lock(Mode::Exclusive, progress) {
                let _ = self.free_unreferenced(&blob_hexes(&old));
            }
        }
        Ok(Imported {
            manifest,
            path: blob,
            method,
        })
    }
}

impl Store {
    /// Puts one file's bytes into `blobs/` (hard link or copy, hashed on the
    /// way, deduplicated) and says how. `tmp_stem` names its temp file; the
    /// caller holds the lock of the name the file is stored under and the
    /// shared blob lock, and `before` is the file's metadata when the caller
    /// first looked at it.
    pub(crate) fn store_file(
        &self,
        file: &Path,
        before: &Metadata,
        tmp_stem: &str,
        copy: bool,
        progress: Progress,
    ) -> Result<(Hashed, ImportMethod)> {
        // Fixed temp name: we hold the name's lock, and a leftover from a
        // killed import is removed here before anything else.
        let tmp_path = self.home.tmp_dir().join(format!("{tmp_stem}.partial"));
        fsutil::remove_any(&tmp_path).map_err(|e| Error::io("removing", &tmp_path, e))?;
        let linked = !copy && fs::hard_link(file, &tmp_path).is_ok();
        let label = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Any link failure (another file system, protected_hardlinks on a file
        // we do not own, a link-count limit, no link support) means a copy.
        let (tmp, hashed) = if linked {
            let mut tmp = TempFile::adopt(tmp_path)?;
            let bar = progress.bytes(before.len());
            bar.set_message(format!("hashing {label}"));
            let hashed = hash_stream(&mut tmp.file, file, None, &bar);
            finish(&bar, &hashed);
            (tmp, hashed?)
        } else {
            let mut tmp = TempFile::create(tmp_path)?;
            let mut src = File::open(file).map_err(|e| Error::io("opening", file, e))?;
            let bar = progress.bytes(before.len());
            bar.set_message(format!("copying {label}"));
            let out_path = tmp.path.clone();
            let hashed = hash_stream(&mut src, file, Some((&mut tmp.file, &out_path)), &bar);
            finish(&bar, &hashed);
            (tmp, hashed?)
        };
        check_unchanged(file, before, &hashed)?;
        let blob = self.home.blob_path(&hashed.sha256_hex);
        let method = if self.intact_blob(&hashed.sha256_hex, hashed.size).is_some() {
            drop(tmp);
            ImportMethod::Deduplicated
        } else {
            // A blob of the wrong size is damaged; it is replaced below.
            if blob.exists() {
                fsutil::remove_any(&blob)
                    .map_err(|e| Error::io("removing damaged blob", &blob, e))?;
            }
            tmp.persist(&blob)?;
            if linked {
                ImportMethod::Linked
            } else {
                ImportMethod::Copied
            }
        };
        Ok((hashed, method))
    }
}

fn finish<T>(bar: &indicatif::ProgressBar, r: &Result<T>) {
    if r.is_ok() {
        bar.finish_and_clear();
    } else {
        bar.abandon();
    }
}

/// The file must have the size it had when we started, we must have read
/// exactly that many bytes, and its modification time must not have moved:
/// otherwise the digest may describe bytes that no longer exist.
fn check_unchanged(file: &Path, before: &Metadata, hashed: &Hashed) -> Result<()> {
    let after = fs::metadata(file).map_err(|e| Error::io("checking", file, e))?;
    let changed = |detail: String| Error::SourceChanged {
        path: file.to_path_buf(),
        detail,
    };
    if hashed.size != before.len() || after.len() != before.len() {
        return Err(changed(format!(
            "size was {} bytes, read {}, now {}",
            before.len(),
            hashed.size,
            after.len()
        )));
    }
    let mtime = |m: &Metadata| m.modified().ok();
    if mtime(before) != mtime(&after) {
        let fmt = |t: Option<SystemTime>| {
            t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or_else(|| "?".to_string(), |d| format!("{:.3}", d.as_secs_f64()))
        };
        return Err(changed(format!(
            "modified at {} while being read (was {})",
            fmt(mtime(&after)),
            fmt(mtime(before))
        )));
    }
    Ok(())
}
