//! The stateful sampler chain.
//!
//! This module owns: [`Sampler`] (configuration, random generator, the
//! window of recent tokens the penalties see, banned ids) and the order of
//! the chain, which is llama.cpp's default: penalties → top-k → top-p →
//! min-p → temperature → draw. A temperature of 0 or below is greedy: the
//! arg-max after penalties and bans, lowest id on ties.

use std::collections::VecDeque;

use crate::candidates::Candidates;
use crate::config::SamplerConfig;
use crate::filters::{min_p, temperature, top_k, top_p};
use crate::penalties::{apply_penalties, Penalties};
use crate::rng::Rng;

/// Sets the logits of `ids` to `-inf` (ids outside the slice are ignored).
/// Used for `ignore_eos`: banning end-of-generation tokens.
pub fn ban(logits: &mut [f32], ids: &[u32]) {
    for &id in ids {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// Index of the largest logit, lowest index on ties (NaN never wins).
/// `None` for an empty slice.
///
/// Two passes that vectorise: the largest value over sixteen running
/// maxima (a comparison with NaN is false, so NaN never replaces one), then
/// the first index holding it. Greedy decoding runs this over the whole
/// vocabulary for every token of every stream; the one-pass loop, with its
/// branch per logit, cost about 1 ns a logit.
pub fn argmax(logits: &[f32]) -> Option<u32> {
    if logits.is_empty() {
        return None;
    }
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &l) in lanes.iter_mut().zip(chunk) {
            *m = if l > *m { l } else { *m };
        }
    }
    let mut best = f32::NEG_INFINITY;
    for &l in lanes.iter().chain(rest) {
        if l > best {
            best = l;
        }
    }
    // No match only when every logit is NaN: then index 0, as before.
    Some(logits.iter().position(|&l| l == best).unwrap_or(0) as u32)
}

/// Picks tokens according to a [`SamplerConfig`], remembering recent tokens.
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
    recent: VecDeque<u32>,
    banned: Vec<u32>,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Sampler {
        let seed = config.seed.unwrap_or_else(Rng::entropy_seed);
        Sampler {
            rng: Rng::new(seed),
            config,
            recent: VecDeque::new(),
            banned: Vec::new(),
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Ids whose logits are forced to `-inf` before every draw.
    pub fn set_banned(&mut self, ids: Vec<u32>) {
        self.banned = ids;
    }

    /// Records a token the penalties should see: the prompt's tokens and
    /// each generated one (as llama.cpp's server does).
    pub fn accept(&mut self, id: u32) {
        let n = self.config.repeat_last_n;
        if n == 0 {
            return;
        }
        if self.recent.len() == n {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }

    /// The recent-token window, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = u32> + '_ {
        self.recent.iter().copied()
    }

    /// Forgets recent tokens (not the random state).
    pub fn reset(&mut self) {
        self.recent.clear();
    }

    /// Chooses a token from `logits` (one per vocabulary entry). Does not
    /// record it; call [`Sampler::accept`] (or use [`Sampler::sample_and_accept`]).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let penalties = Penalties {
            repeat: self.config.repeat_penalty,
            presence: self.config.presence_penalty,
            frequency: self.config.frequency_penalty,
        };
        // Plain greedy needs no copy of the logits to change.
        if self.config.is_greedy()
            && self.banned.is_empty()
            && (penalties.is_noop() || self.recent.is_empty())
        {
            return argmax(logits).unwrap_or(0);
        }
        let mut logits = logits.to_vec();
        ban(&mut logits, &self.banned);
        let recent: Vec<u32> = self.recent.iter().copied().collect();
        apply_penalties(&mut logits, &recent, penalties);
        if self.config.is_greedy() {
            return argmax(&logits).unwrap_or(0);
        }
        let mut c = Candidates::from_logits(&logits);
        let keep = self.config.min_keep.max(1);
        top_k(&mut c, self.config.top_k, keep);
        top_p(&mut c, self.config.top_p, keep);
        min_p(&mut c, self.config.min_p, keep);
        temperature(&mut c, self.config.temperature);
        self.draw(&c)
            .unwrap_or_else(|| argmax(&logits).unwrap_or(0))
    }

    /// [`Sampler::sample`] followed by [`Sampler::accept`].
    pub fn sample_and_accept(&mut self, logits: &[f32]) -> u32 {
        let id = self.sample(logits);
        self.accept(id);
        id
    }

    fn draw(&mut self, c: &Candidates) -> Option<u32> {
        let probs = c.probs();
        let total: f64 = probs.iter().sum();
        if c.is_empty() || total.is_nan() || total <= 0.0 {
            return None;
        }
        let u = self.rng.next_f64() * total;
        let mut cum = 0.0;
        for (cand, p) in c.items().iter().zip(&probs) {
            cum += p;
            if u < cum {
                return Some(cand.id);
            }
        }
        // Rounding left `u` past the last boundary: take the last with mass.
        c.items()
            .iter()
            .zip(&probs)
            .rev()
            .find(|(_, &p)| p > 0.0)
            .map(|(c, _)| c.id)
    }
}
