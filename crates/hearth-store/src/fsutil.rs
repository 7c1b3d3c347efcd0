//! File-system mechanics shared by pulls, imports and removals: temp files
//! that clean up after themselves, flock-based locks, streaming hashes, and
//! sweeping the leftovers of killed writers out of `tmp/`.
//!
//! Owns how bytes reach the disk safely; it must not decide what is stored
//! (that is `store`, `import` and `inventory`) and knows no file formats.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::home::Home;
use crate::manifest::{is_sha256_hex, valid_name};
use crate::progress::Progress;
use crate::wheel::hex;

/// Read size for hashing and copying.
const BUF_SIZE: usize = 1 << 20;

/// Suffix of every temp entry the store writes, so a sweep never touches
/// anything else a user may have put in `tmp/`.
pub(crate) const PARTIAL: &str = ".partial";

/// A file in `tmp/` that is removed on drop unless persisted, so every error
/// path (including disk full) cleans up after itself.
pub(crate) struct TempFile {
    pub path: PathBuf,
    pub file: File,
    persisted: bool,
}

impl TempFile {
    /// Creates (truncating a leftover of the same name) a temp file.
    pub fn create(path: PathBuf) -> Result<TempFile> {
        let file = File::create(&path).map_err(|e| Error::io("creating", &path, e))?;
        Ok(TempFile {
            path,
            file,
            persisted: false,
        })
    }

    /// Takes ownership of an existing file at `path` (a fresh hard link),
    /// removing it if it cannot even be opened.
    pub fn adopt(path: PathBuf) -> Result<TempFile> {
        match File::open(&path) {
            Ok(file) => Ok(TempFile {
                path,
                file,
                persisted: false,
            }),
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(Error::io("opening", &path, e))
            }
        }
    }

    /// Flushes to disk and renames into place. The data is synced before the
    /// rename so a crash cannot leave a correctly named file with missing
    /// contents; the directory is synced after so the rename itself survives.
    pub fn persist(mut self, dest: &Path) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("syncing", &self.path, e))?;
        fs::rename(&self.path, dest).map_err(|e| Error::io("moving into place", dest, e))?;
        self.persisted = true;
        // rename(2) of a hard link onto another link of the same inode does
        // nothing and leaves the source name; it must not linger in tmp/.
        let _ = fs::remove_file(&self.path);
        sync_parent(dest);
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            // Best effort: a leftover is swept or overwritten later anyway.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// fsync a file's directory (Unix only; Windows cannot open directories this
/// way and its rename durability works differently). Best effort: the data is
/// already safe, only the name's durability across a power cut is at stake.
pub(crate) fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Removes a file or a directory tree; absent is fine.
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Lock modes of [`lock`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Shared,
    Exclusive,
}

/// Takes a flock on `path` (created if needed), blocking with a spinner that
/// says `waiting` while someone else holds it. Released when the returned file
/// is dropped, including when the holder is killed (the OS drops flocks on
/// exit), so a lock can never be left stale.
pub(crate) fn lock(path: &Path, mode: Mode, progress: Progress, waiting: &str) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("opening lock file", path, e))?;
    let tried = match mode {
        Mode::Shared => file.try_lock_shared(),
        Mode::Exclusive => file.try_lock(),
    };
    match tried {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => {
            let spinner = progress.spinner(waiting.to_string());
            let r = match mode {
                Mode::Shared => file.lock_shared(),
                Mode::Exclusive => file.lock(),
            };
            spinner.finish_and_clear();
            r.map_err(|e| Error::io("locking", path, e))?;
            Ok(file)
        }
        Err(TryLockError::Error(e)) => Err(Error::io("locking", path, e)),
    }
}

/// The per-model write lock.
pub(crate) fn name_lock_path(home: &Home, name: &str) -> PathBuf {
    home.locks_dir().join(format!("{name}.lock"))
}

/// The store-wide blob lock. Its name starts with `.`, which no model name
/// can, so it never collides with a per-model lock.
pub(crate) fn blobs_lock_path(home: &Home) -> PathBuf {
    home.locks_dir().join(".blobs.lock")
}

/// What [`hash_stream`] saw.
pub(crate) struct Hashed {
    pub sha256_hex: String,
    pub size: u64,
}

/// Reads `src` to the end, hashing it and (if given) writing it to `out`.
/// `src_path` / `out_path` name the files in errors; a failed write is
/// reported against the output (so a full disk says where).
pub(crate) fn hash_stream(
    src: &mut impl Read,
    src_path: &Path,
    mut out: Option<(&mut File, &Path)>,
    bar: &ProgressBar,
) -> Result<Hashed> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut size = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("reading", src_path, e)),
        };
        let chunk = &buf[..n];
        hasher.update(chunk);
        if let Some((f, p)) = out.as_mut() {
            f.write_all(chunk)
                .map_err(|e| Error::io("writing", *p, e))?;
        }
        size += n as u64;
        bar.inc(n as u64);
    }
    Ok(Hashed {
        sha256_hex: hex(&hasher.finalize()),
        size,
    })
}

/// The model name a temp entry belongs to, from the names the store gives
/// them: `<name>.sha256-<hex>.partial`, `<name>.manifest.json.partial`,
/// `<name>.import.partial`, `<name>.dir.partial`, `<name>.dir.old.partial`.
/// `None` for anything else, which a sweep then leaves alone.
pub(crate) fn temp_owner(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix(PARTIAL)?;
    let owner = [".manifest.json", ".import", ".dir.old", ".dir"]
        .iter()
        .find_map(|s| stem.strip_suffix(s))
        .or_else(|| {
            let (owner, hex) = stem.rsplit_once(".sha256-")?;
            is_sha256_hex(hex).then_some(owner)
        })?;
    valid_name(owner).then_some(owner)
}

/// Removes what killed pulls and imports left in `tmp/`, for every model
/// whose lock nobody holds right now (if its lock is held, its writer is
/// alive and the entry may be in use). Entries of models whose lock the
/// caller holds are skipped the same way and reused by name instead. Best
/// effort: a sweep that cannot remove something leaves it for the next one.
pub(crate) fn sweep_tmp(home: &Home) {
    let Ok(entries) = fs::read_dir(home.tmp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(temp_owner) else {
            continue;
        };
        let lock_path = name_lock_path(home, owner);
        let Ok(lock) = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
        else {
            continue;
        };
        if lock.try_lock().is_ok() {
            let _ = remove_any(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_during_a_copy_is_disk_full_and_the_temp_file_goes() {
        let d = tempfile::tempdir().expect("tempdir");
        let src_path = d.path().join("src");
        std::fs::write(&src_path, vec![7u8; 3 << 20]).expect("write");
        // The temp file's handle writes to /dev/full (ENOSPC on every write),
        // standing in for a file system that fills up mid-import.
        let tmp_path = d.path().join("x.import.partial");
        std::fs::write(&tmp_path, b"").expect("create");
        let mut tmp = TempFile::adopt(tmp_path.clone()).expect("adopt");
        tmp.file = OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let mut src = File::open(&src_path).expect("open");
        let out = tmp_path.clone();
        let e = hash_stream(
            &mut src,
            &src_path,
            Some((&mut tmp.file, &out)),
            &ProgressBar::hidden(),
        )
        .err()
        .expect("must fail");
        drop(tmp);
        assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
        assert!(e.to_string().contains("x.import.partial"), "{e}");
        assert!(!tmp_path.exists(), "temp file removed on error");
    }

    #[test]
    fn temp_owners() {
        let hexs = "ab".repeat(32);
        assert_eq!(
            temp_owner(&format!("smollm2.sha256-{hexs}.partial")),
            Some("smollm2")
        );
        assert_eq!(temp_owner("a.b.manifest.json.partial"), Some("a.b"));
        assert_eq!(temp_owner("mine.import.partial"), Some("mine"));
        assert_eq!(temp_owner("minilm.dir.partial"), Some("minilm"));
        assert_eq!(temp_owner("minilm.dir.old.partial"), Some("minilm"));
        for other in [
            "some-stray-file",
            "x.partial",
            "x.sha256-zz.partial",
            ".import.partial",
            "x.import",
        ] {
            assert_eq!(temp_owner(other), None, "{other}");
        }
    }
}
