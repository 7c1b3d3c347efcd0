//! hearth's daemon: one process per device that owns the models and serves
//! every app through OpenAI- and Ollama-compatible HTTP, on loopback and on
//! a Unix socket.
//!
//! - [`config`]: settings from file, environment and flags;
//! - [`server`]: listeners, the single-daemon lock, signals and shutdown;
//! - [`api`]: routes and handlers, per API family;
//! - [`auth`] and [`limits`]: who is calling and what it may still do;
//! - [`audit`]: the per-request record (never the prompt);
//! - [`experts`]: what a request's `model` names (a model, an expert, `auto`)
//!   and the defaults an expert lends it;
//! - [`models`]: models and adapters loaded on demand, evicted when idle
//!   or when the budget needs their room;
//! - [`governor`]: the memory budget in bytes, reservations and measurement;
//! - [`router`]: which expert serves a request for `"model": "auto"`;
//! - [`scheduler`]: continuous batching over the engine's batched forward pass;
//! - [`metrics`]: the Prometheus exposition;
//! - [`tools`]: tool calls (the fallback prompt format, the constraint that
//!   makes calls valid, reading calls back), for both API families;
//! - [`client`]: how hearth's own command line talks to a running daemon;
//! - [`bench`]: `hearth bench serve`, the daemon under concurrent load.
//!
//! It contains no kernels and no model maths: generation is the runtime's
//! [`Sequence`](hearth_runtime::Sequence), stepped in batches.

pub mod api;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod client;
pub mod config;
pub mod experts;
pub mod governor;
pub mod limits;
pub mod metrics;
pub mod models;
pub mod router;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod tools;

pub use config::{Flags, ServeConfig};
pub use server::serve;
