//! Choosing the next token from a model's logits.
//!
//! Modules, one concern each: `config` ([`SamplerConfig`], serialisable
//! settings with llama.cpp's defaults), `rng` ([`Rng`], the seedable
//! generator), `candidates` (the working set the filters shrink),
//! `penalties` (repetition, presence, frequency), `filters` (top-k, top-p,
//! min-p, temperature), `logprobs` (log-softmax and top-K log-probabilities),
//! `constraint` ([`Constraint`], grammar masks over the logits on
//! llguidance), `sampler` ([`Sampler`], the stateful chain in llama.cpp's default order:
//! penalties → top-k → top-p → min-p → temperature → draw).

mod candidates;
mod config;
mod constraint;
mod filters;
mod logprobs;
mod penalties;
mod rng;
mod sampler;

pub use candidates::{Candidate, Candidates};
pub use config::SamplerConfig;
pub use constraint::{Constraint, ConstraintError, ConstraintSpec, ConstraintVocab, VocabEntry};
pub use filters::{min_p, temperature, top_k, top_p};
pub use logprobs::{log_softmax, top_logprobs};
pub use penalties::{apply_penalties, Penalties};
pub use rng::Rng;
pub use sampler::{argmax, ban, Sampler};
