//! `"model": "auto"`: which expert should serve a request.
//!
//! The router runs on the device's own sentence-embedding model (`minilm`):
//! each expert is represented by the vectors of its description and of its
//! example requests (an expert trained on the device has the requests it
//! was trained on); a request goes to the expert whose nearest vector is
//! most similar to the request's, if that similarity reaches the threshold,
//! and to no expert (the base model alone) otherwise. Nearest-neighbour
//! rather than an average, because an expert's requests come in several
//! phrasings and an average of them resembles none.
//!
//! This module owns the scoring and the decision; it does not load models
//! or know HTTP (the API layer asks it, with an embedder it was given).

use hearth_runtime::{Embedder, Result};
use hearth_store::Expert;
use serde::Serialize;

/// The similarity a request must reach to go to an expert: where requests
/// of an expert's task and the rest part on minilm's cosine scale. On
/// `shared/routing`'s visible set, with 32 examples per expert, every
/// in-task request scored at least 0.41 against its expert and no other
/// request more than 0.34 against any.
pub const DEFAULT_THRESHOLD: f32 = 0.4;

/// Example requests used per expert: enough for its phrasings, few enough
/// that building the router stays a fraction of a second.
const MAX_EXAMPLES: usize = 64;

struct Entry {
    expert: String,
    vectors: Vec<Vec<f32>>,
}

pub struct Router {
    entries: Vec<Entry>,
    threshold: f32,
}

/// What the router chose, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// `None`: no expert fits; the base model serves the request.
    pub expert: Option<String>,
    /// Each expert's best similarity, in the order they were given.
    pub scores: Vec<(String, f32)>,
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    // The embedder's vectors are unit length, so the dot product is the cosine.
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl Router {
    /// Embed every expert's description and examples.
    pub fn build(embedder: &Embedder, experts: &[Expert], threshold: f32) -> Result<Router> {
        let mut entries = Vec::new();
        for e in experts {
            let mut texts: Vec<&str> = Vec::new();
            if !e.spec.description.trim().is_empty() {
                texts.push(&e.spec.description);
            }
            texts.extend(
                e.spec
                    .examples
                    .iter()
                    .take(MAX_EXAMPLES)
                    .map(String::as_str),
            );
            // An expert with nothing to compare against is never chosen.
            if texts.is_empty() {
                continue;
            }
            entries.push(Entry {
                expert: e.name.clone(),
                vectors: embedder.embed(&texts)?.vectors,
            });
        }
        Ok(Router { entries, threshold })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Choose for `request` (the text of the user's turn).
    pub fn route(&self, embedder: &Embedder, request: &str) -> Result<Decision> {
        let v = embedder.embed(&[request])?.vectors.swap_remove(0);
        let scores: Vec<(String, f32)> = self
            .entries
            .iter()
            .map(|e| {
                let best = e
                    .vectors
                    .iter()
                    .map(|x| cosine(&v, x))
                    .fold(f32::NEG_INFINITY, f32::max);
                (e.expert.clone(), best)
            })
            .collect();
        let expert = scores
            .iter()
            .filter(|(_, s)| *s >= self.threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(n, _)| n.clone());
        Ok(Decision { expert, scores })
    }
}
