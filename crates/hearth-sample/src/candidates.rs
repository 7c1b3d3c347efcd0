//! The candidate set the filters work on.
//!
//! This module owns: [`Candidates`], a list of (id, logit) pairs built from a
//! logits slice, with a flag recording whether it is sorted by logit
//! (descending, ties by lower id) so filters can skip re-sorting, and the
//! softmax over what remains.

/// One token and its (possibly adjusted) logit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
}

/// The tokens still in the running.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidates {
    pub(crate) items: Vec<Candidate>,
    pub(crate) sorted: bool,
}

impl Candidates {
    /// Every token of `logits`, in id order.
    pub fn from_logits(logits: &[f32]) -> Candidates {
        Candidates {
            items: logits
                .iter()
                .enumerate()
                .map(|(i, &logit)| Candidate {
                    id: i as u32,
                    logit,
                })
                .collect(),
            sorted: false,
        }
    }

    pub fn items(&self) -> &[Candidate] {
        &self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn ids(&self) -> Vec<u32> {
        self.items.iter().map(|c| c.id).collect()
    }

    /// Sorts by logit, highest first; equal logits by lower id.
    pub fn sort(&mut self) {
        if !self.sorted {
            self.items
                .sort_by(|a, b| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id)));
            self.sorted = true;
        }
    }

    /// Probabilities of the remaining candidates (softmax of their logits),
    /// in the candidates' order. All `-inf` gives all zeros.
    pub fn probs(&self) -> Vec<f64> {
        let max = self
            .items
            .iter()
            .map(|c| c.logit)
            .fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return vec![0.0; self.items.len()];
        }
        let exps: Vec<f64> = self
            .items
            .iter()
            .map(|c| ((c.logit - max) as f64).exp())
            .collect();
        let sum: f64 = exps.iter().sum();
        exps.into_iter().map(|e| e / sum).collect()
    }
}
