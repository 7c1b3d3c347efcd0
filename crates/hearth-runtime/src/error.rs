//! Runtime errors: what a user did wrong (empty prompt, prompt over the
//! context) is told apart from what the model or its files did.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Engine(#[from] hearth_engine::EngineError),
    #[error(transparent)]
    Gguf(#[from] hearth_gguf::GgufError),
    #[error("tokenizer: {0}")]
    Text(String),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {n_prompt} tokens, over the context of {n_ctx}")]
    PromptTooLong { n_prompt: usize, n_ctx: usize },
    #[error("{0}")]
    Invalid(String),
    /// A constraint (JSON schema, regex, grammar) that cannot be compiled
    /// or followed; the message is the constraint engine's.
    #[error("constraint: {0}")]
    Constraint(String),
    /// The message carries the cause itself, so it is not also a `source`
    /// (an error chain would print it twice).
    #[error("adapter {}: {error}", path.display())]
    Adapter {
        path: std::path::PathBuf,
        error: hearth_engine::LoraError,
    },
}

pub type Result<T> = std::result::Result<T, RuntimeError>;
