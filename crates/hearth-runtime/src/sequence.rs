//! One generation in progress, and the step that advances many of them in a
//! single forward pass.
//!
//! A [`Sequence`] owns everything one request's generation needs between
//! steps: its KV cache, the prompt tokens not yet fed, its sampler, its
//! streaming detokeniser and the stop strings it must watch for. Both the
//! command line's single generation ([`Runtime::generate`]) and the daemon's
//! continuous-batching scheduler drive sequences through
//! [`Runtime::step_batch`], so the rules of generation live here once.
//!
//! Prompts may be fed in chunks (`prefill_budget`): the engine writes each
//! chunk's keys and values to the cache before attending, so a prompt fed in
//! pieces gives exactly the logits of a prompt fed whole.
//!
//! A sequence may also *score* instead of generate ([`SeqParams::score`]):
//! after its prompt it teacher-forces each candidate continuation in turn
//! over the prompt's keys and values (computed once; the cache is cut back
//! to the prompt after each candidate) and reports every candidate token's
//! log-probability as a [`Step`]. Scoring runs through the same
//! [`Runtime::step_batch`] as generation, so the daemon's scheduler batches
//! it with other requests and the engine's pool is only ever driven from one
//! thread.

use std::sync::Arc;

use hearth_engine::{Adapter, BatchItem, KvCache, Want};
use hearth_sample::{Constraint, ConstraintSpec, Sampler, SamplerConfig};
use hearth_text::Detokenizer;
use serde::Serialize;

use crate::error::{Result, RuntimeError};
use crate::Runtime;

/// What a request asks of its generation.
#[derive(Clone, Debug)]
pub struct SeqParams {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Ban end-of-generation tokens (their logits set to −∞) so that exactly
    /// `max_tokens` come, as the golden references were made.
    pub ignore_eos: bool,
    /// Report the chosen token's log-probability at each step.
    pub logprobs: bool,
    /// Report the top K log-probabilities at each step, from the raw logits.
    pub top_logprobs: usize,
    /// Text that ends the generation; it is not part of the output.
    pub stop: Vec<String>,
    /// The LoRA adapter to run with (applied unmerged, so sequences with
    /// different adapters share a batch). It must have been loaded for this
    /// runtime's model ([`Runtime::load_adapter`]).
    pub adapter: Option<Arc<Adapter>>,
    /// Candidate continuations to score instead of generating. When not
    /// empty, nothing is sampled: each candidate's tokens are fed after the
    /// prompt and the sequence reports, as its steps, the log-probability of
    /// every candidate token in order (candidate 0's tokens, then candidate
    /// 1's, …), then ends with [`StopReason::Stop`]. `max_tokens`, the
    /// sampler and stop strings do not apply.
    pub score: Vec<Vec<u32>>,
    /// Output the generation must follow (JSON schema, regex, grammar): the
    /// logits of every token it does not allow are masked before sampling,
    /// and the sequence ends when it is complete. [`Runtime::start`]
    /// compiles it; one that cannot compile is
    /// [`RuntimeError::Constraint`].
    pub constraint: Option<ConstraintSpec>,
}

impl Default for SeqParams {
    fn default() -> Self {
        SeqParams {
            max_tokens: 512,
            sampler: SamplerConfig::default(),
            ignore_eos: false,
            logprobs: false,
            top_logprobs: 0,
            stop: Vec::new(),
            adapter: None,
            score: Vec::new(),
            constraint: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TopEntry {
    pub id: u32,
    pub logprob: f32,
}

/// One sampled token. `top` and `logprob` are filled only when asked for.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub token: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprob: Option<f32>,
    pub top: Vec<TopEntry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    Eos,
    /// A stop string appeared.
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The context is full.
    Context,
    /// The caller asked to stop.
    Cancelled,
}

impl StopReason {
    /// OpenAI's `finish_reason` (and Ollama's `done_reason`).
    pub fn finish_reason(self) -> &'static str {
        match self {
            StopReason::Eos | StopReason::Stop | StopReason::Cancelled => "stop",
            StopReason::Length | StopReason::Context => "length",
        }
    }
}

pub struct Sequence {
    params: SeqParams,
    prompt: Vec<u32>,
    cache: KvCache,
    /// Prompt tokens already in the cache.
    fed: usize,
    /// The last sampled token, not yet fed back.
    pending: Option<u32>,
    sampler: Sampler,
    detok: Detokenizer,
    completion: Vec<u32>,
    steps: Vec<Step>,
    /// Steps not yet taken by the caller.
    new_steps: usize,
    /// Text ready for the caller.
    ready: String,
    /// Text that might be the start of a stop string, held back until it
    /// is known not to be.
    held: String,
    /// All text released so far.
    text: String,
    stop: Option<StopReason>,
    /// Progress of a scoring sequence (`params.score` not empty).
    scoring: Option<Scoring>,
    /// The compiled [`SeqParams::constraint`].
    constraint: Option<Constraint>,
    /// Why the constraint could not go on, when it failed mid-generation
    /// (the sequence then ended with [`StopReason::Stop`]).
    constraint_error: Option<String>,
}

/// Where a scoring sequence is: which candidate is being fed and the
/// log-probabilities found so far.
struct Scoring {
    /// The candidate whose tokens (all but its last) go in the next pass;
    /// `None` until the prompt's logits have come.
    next: Option<usize>,
    logprobs: Vec<Vec<f32>>,
}

impl Sequence {
    pub fn prompt(&self) -> &[u32] {
        &self.prompt
    }

    pub fn completion(&self) -> &[u32] {
        &self.completion
    }

    /// Every sampled token, including an end-of-generation token that ended
    /// the sequence (which is not part of the completion).
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// All text released so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn params(&self) -> &SeqParams {
        &self.params
    }

    /// The adapter it runs with, if any.
    pub fn adapter(&self) -> Option<&Arc<Adapter>> {
        self.params.adapter.as_ref()
    }

    /// Why the sequence ended; `None` while it runs.
    pub fn finished(&self) -> Option<StopReason> {
        self.stop
    }

    /// The constraint's engine failed mid-generation; the sequence ended
    /// there. `None` when it did not (or there is no constraint).
    pub fn constraint_error(&self) -> Option<&str> {
        self.constraint_error.as_deref()
    }

    /// Time spent computing constraint masks so far and how many were
    /// computed (zero without a constraint).
    pub fn constraint_stats(&self) -> (std::time::Duration, u64) {
        self.constraint
            .as_ref()
            .map_or((std::time::Duration::ZERO, 0), |c| c.mask_stats())
    }

    /// Whether the prompt is not yet fully in the cache.
    pub fn prefilling(&self) -> bool {
        self.fed < self.prompt.len()
    }

    /// Bytes of its KV cache.
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Its KV cache (the prompt's keys and values once prefill is done).
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// Start from the first `n` prompt positions of `from` instead of
    /// computing them: `from` must hold the same first `n` tokens (the
    /// caller's [`PrefixCache`](crate::PrefixCache) checks). At least one
    /// prompt token is always left to feed, for the logits.
    pub fn reuse_prefix(&mut self, from: &KvCache, n: usize) -> Result<()> {
        if self.fed != 0 || n >= self.prompt.len() {
            return Err(RuntimeError::Invalid(format!(
                "a prefix of {n} tokens does not fit a fresh prompt of {}",
                self.prompt.len()
            )));
        }
        self.cache.copy_prefix(from, n)?;
        self.fed = n;
        Ok(())
    }

    /// End the sequence at the caller's request; held-back text is dropped.
    pub fn cancel(&mut self) {
        if self.stop.is_none() {
            self.stop = Some(StopReason::Cancelled);
            self.held.clear();
        }
    }

    /// The text released since the last call.
    pub fn take_text(&mut self) -> String {
        std::mem::take(&mut self.ready)
    }

    /// The steps sampled since the last call.
    pub fn take_steps(&mut self) -> &[Step] {
        let from = self.steps.len() - self.new_steps;
        self.new_steps = 0;
        &self.steps[from..]
    }

    /// The tokens to feed in this step, at most `budget` of the prompt.
    fn next_input(&self, budget: usize) -> Option<(&[u32], Want)> {
        if self.stop.is_some() {
            return None;
        }
        if self.prefilling() {
            let n = (self.prompt.len() - self.fed).min(budget);
            if n == 0 {
                return None;
            }
            let end = self.fed + n;
            let want = if end == self.prompt.len() {
                Want::Last
            } else {
                Want::None
            };
            return Some((&self.prompt[self.fed..end], want));
        }
        if let Some(sc) = &self.scoring {
            let c = sc.next?;
            let cand = &self.params.score[c];
            return Some((&cand[..cand.len() - 1], Want::All));
        }
        self.pending
            .as_ref()
            .map(|t| (std::slice::from_ref(t), Want::Last))
    }

    fn finish(&mut self, reason: StopReason) {
        self.stop = Some(reason);
        let rest = self.detok.finish();
        self.release(&rest);
        if self.stop == Some(reason) {
            let held = std::mem::take(&mut self.held);
            self.ready.push_str(&held);
            self.text.push_str(&held);
        }
    }

    /// Move new text towards the caller, watching for stop strings.
    fn release(&mut self, piece: &str) {
        if piece.is_empty() {
            return;
        }
        if self.params.stop.is_empty() {
            self.ready.push_str(piece);
            self.text.push_str(piece);
            return;
        }
        self.held.push_str(piece);
        // A stop string anywhere in the held text ends the sequence there.
        let hit = self
            .params
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = hit {
            let keep = self.held[..at].to_string();
            self.ready.push_str(&keep);
            self.text.push_str(&keep);
            self.held.clear();
            self.stop = Some(StopReason::Stop);
            return;
        }
        // Release all but the longest tail that could still begin a stop string.
        let hold = self
            .params
            .stop
            .iter()
            .map(|s| longest_prefix_suffix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - hold;
        let out: String = self.held.drain(..cut).collect();
        self.ready.push_str(&out);
        self.text.push_str(&out);
    }

    /// The next candidate after `after` (or the first) that needs a pass:
    /// one of a single token is scored from the prompt's logits alone.
    fn next_candidate(&self, after: Option<usize>) -> Option<usize> {
        let from = after.map_or(0, |c| c + 1);
        (from..self.params.score.len()).find(|&c| self.params.score[c].len() > 1)
    }

    /// Scoring: take the logits of the prompt's last position (which score
    /// every candidate's first token) or of a candidate's fed tokens (which
    /// score its later tokens), and move on.
    fn on_score_logits(&mut self, n_vocab: usize, logits: &[f32]) {
        let Some(mut sc) = self.scoring.take() else {
            return;
        };
        match sc.next {
            None if sc.logprobs.is_empty() => {
                let row = LogSoftmax::new(logits);
                sc.logprobs = self
                    .params
                    .score
                    .iter()
                    .map(|cand| vec![row.at(logits, cand[0])])
                    .collect();
            }
            None => {}
            Some(c) => {
                let cand = &self.params.score[c];
                for (j, row) in logits.chunks_exact(n_vocab).enumerate() {
                    let ls = LogSoftmax::new(row);
                    sc.logprobs[c].push(ls.at(row, cand[j + 1]));
                }
                // Back to the prompt alone for the next candidate.
                self.cache.truncate(self.prompt.len());
            }
        }
        sc.next = self.next_candidate(sc.next);
        if sc.next.is_none() {
            for (cand, lps) in self.params.score.iter().zip(&sc.logprobs) {
                for (&token, &lp) in cand.iter().zip(lps) {
                    self.steps.push(Step {
                        token,
                        logprob: Some(lp),
                        top: Vec::new(),
                    });
                    self.new_steps += 1;
                }
            }
            self.stop = Some(StopReason::Stop);
        }
        self.scoring = Some(sc);
    }

    /// Take the logits of this sequence's last fed position.
    fn on_logits(&mut self, rt: &Runtime, logits: &mut [f32]) {
        let (logprob_of, top) = if self.params.logprobs || self.params.top_logprobs > 0 {
            let lp = hearth_sample::log_softmax(logits);
            let top = hearth_sample::top_logprobs(logits, self.params.top_logprobs)
                .into_iter()
                .map(|(id, logprob)| TopEntry { id, logprob })
                .collect();
            (Some(lp), top)
        } else {
            (None, Vec::new())
        };
        if self.params.ignore_eos {
            hearth_sample::ban(logits, rt.tokenizer.eog_ids());
        }
        // The grammar's mask goes first, so penalties and filters only ever
        // see (and renormalise over) tokens it allows.
        let mut token = None;
        if let Some(c) = self.constraint.as_mut() {
            match c.mask_logits(logits) {
                Ok(true) => {}
                // Only ending is allowed: the output is complete.
                Ok(false) => {
                    self.finish(StopReason::Eos);
                    return;
                }
                Err(e) => {
                    self.constraint_error = Some(e.0);
                    self.finish(StopReason::Stop);
                    return;
                }
            }
            let t = self.sampler.sample(logits);
            // Sampling falls back to the raw arg-max when every candidate
            // has lost its mass; keep to the mask even then.
            let t = match c.allows(t) {
                Ok(true) => Some(t),
                _ => c.first_allowed_text().ok().flatten(),
            };
            match t.map(|t| (t, c.accept(t))) {
                Some((t, Ok(()))) => token = Some(t),
                Some((_, Err(e))) => self.constraint_error = Some(e.0),
                None => self.constraint_error = Some("no token is allowed".into()),
            }
            if self.constraint_error.is_some() {
                self.finish(StopReason::Stop);
                return;
            }
        }
        let token = token.unwrap_or_else(|| self.sampler.sample(logits));
        self.sampler.accept(token);
        let logprob = match (&logprob_of, self.params.logprobs) {
            (Some(lp), true) => lp.get(token as usize).copied(),
            _ => None,
        };
        self.steps.push(Step {
            token,
            logprob,
            top,
        });
        self.new_steps += 1;
        if rt.tokenizer.is_eog(token) && !self.params.ignore_eos {
            self.finish(StopReason::Eos);
            return;
        }
        self.completion.push(token);
        let piece = self.detok.push(&rt.tokenizer, token);
        self.release(&piece);
        if self.stop.is_some() {
            return;
        }
        if self.constraint.as_ref().is_some_and(|c| c.is_finished()) {
            self.finish(StopReason::Eos);
        } else if self.completion.len() >= self.params.max_tokens {
            self.finish(StopReason::Length);
        } else if self.cache.len() + 1 > self.cache.n_ctx() {
            self.finish(StopReason::Context);
        } else {
            self.pending = Some(token);
        }
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`,
/// cut at a character boundary of `text`.
fn longest_prefix_suffix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| {
            let at = text.len() - n;
            text.is_char_boundary(at) && stop.as_bytes().starts_with(&text.as_bytes()[at..])
        })
        .unwrap_or(0)
}

impl Runtime {
    /// Start a generation from `prompt` with a context of `n_ctx` tokens (the
    /// model's default when `None`). A prompt that is empty or does not fit
    /// with room for one generated token is an error, never a truncation.
    pub fn start(
        &self,
        prompt: Vec<u32>,
        params: SeqParams,
        n_ctx: Option<usize>,
    ) -> Result<Sequence> {
        if prompt.is_empty() {
            return Err(RuntimeError::EmptyPrompt);
        }
        let n_ctx = self.context(n_ctx);
        if prompt.len() > n_ctx {
            return Err(RuntimeError::PromptTooLong {
                n_prompt: prompt.len(),
                n_ctx,
            });
        }
        let n_vocab = self.model.hyper().n_vocab;
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(RuntimeError::Invalid(format!(
                "token id {bad} is outside the vocabulary of {n_vocab}"
            )));
        }
        if params.score.iter().any(Vec::is_empty) {
            return Err(RuntimeError::Invalid(
                "a candidate to score has no tokens".into(),
            ));
        }
        if let Some(&bad) = params
            .score
            .iter()
            .flatten()
            .find(|&&t| t as usize >= n_vocab)
        {
            return Err(RuntimeError::Invalid(format!(
                "candidate token id {bad} is outside the vocabulary of {n_vocab}"
            )));
        }
        let longest = params.score.iter().map(Vec::len).max().unwrap_or(0);
        // The last candidate token is scored, never fed.
        if prompt.len() + longest.saturating_sub(1) > n_ctx {
            return Err(RuntimeError::PromptTooLong {
                n_prompt: prompt.len() + longest - 1,
                n_ctx,
            });
        }
        let mut sampler = Sampler::new(params.sampler.clone());
        for &t in &prompt {
            sampler.accept(t);
        }
        let scoring = (!params.score.is_empty()).then(|| Scoring {
            next: None,
            logprobs: Vec::new(),
        });
        let stop = (params.max_tokens == 0 && scoring.is_none()).then_some(StopReason::Length);
        let constraint = match &params.constraint {
            Some(spec) => Some(self.constraint(spec)?),
            None => None,
        };
        let mut cache = self.model.new_cache(n_ctx);
        cache.plan_prompt(prompt.len());
        Ok(Sequence {
            constraint,
            constraint_error: None,
            cache,
            params,
            prompt,
            fed: 0,
            pending: None,
            sampler,
            detok: Detokenizer::new(false),
            completion: Vec::new(),
            steps: Vec::new(),
            new_steps: 0,
            ready: String::new(),
            held: String::new(),
            text: String::new(),
            stop,
            scoring,
        })
    }

    /// Advance every unfinished sequence by one forward pass: decoding ones
    /// by one token, prefilling ones by a chunk of their prompt, with at most
    /// `prefill_budget` prompt tokens in the pass (taken in the order of
    /// `seqs`; at least one token goes when nothing else would run).
    /// Returns how many sequences took part.
    pub fn step_batch(&self, seqs: &mut [&mut Sequence], prefill_budget: usize) -> Result<usize> {
        let mut budget = prefill_budget.max(1);
        let mut plan: Vec<(usize, usize, Want)> = Vec::new();
        for (i, s) in seqs.iter().enumerate() {
            let b = if s.prefilling() { budget } else { usize::MAX };
            if let Some((toks, want)) = s.next_input(b) {
                if s.prefilling() {
                    budget -= toks.len();
                }
                plan.push((i, toks.len(), want));
            }
        }
        if plan.is_empty() {
            return Ok(0);
        }
        let inputs: Vec<Vec<u32>> = plan
            .iter()
            .map(|&(i, n, _)| {
                let s = &seqs[i];
                if s.prefilling() {
                    s.prompt[s.fed..s.fed + n].to_vec()
                } else if let Some(c) = s.scoring.as_ref().and_then(|sc| sc.next) {
                    s.params.score[c][..n].to_vec()
                } else {
                    s.pending.into_iter().collect()
                }
            })
            .collect();
        let logits = {
            let mut chosen: Vec<Option<&mut Sequence>> =
                seqs.iter_mut().map(|s| Some(&mut **s)).collect();
            let mut items: Vec<BatchItem> = Vec::with_capacity(plan.len());
            for (&(i, _, want), toks) in plan.iter().zip(inputs.iter()) {
                let seq = chosen[i].take().ok_or_else(|| {
                    RuntimeError::Invalid("a sequence appears twice in one batch".into())
                })?;
                items.push(BatchItem {
                    cache: &mut seq.cache,
                    tokens: toks,
                    want,
                    adapter: seq.params.adapter.as_deref(),
                });
            }
            self.model.forward(&mut items)?
        };
        for (&(i, n, _), mut out) in plan.iter().zip(logits) {
            let s = &mut *seqs[i];
            if s.prefilling() {
                s.fed += n;
            } else {
                s.pending = None;
            }
            if !s.prefilling() && !out.is_empty() {
                if s.scoring.is_some() {
                    s.on_score_logits(self.model.hyper().n_vocab, &out);
                } else {
                    s.on_logits(self, &mut out);
                }
            }
            self.model.recycle_logits(out);
        }
        Ok(plan.len())
    }
}

/// A row's log-softmax normaliser, in f64 so that long rows sum without
/// losing the small terms.
struct LogSoftmax {
    max: f64,
    log_z: f64,
}

impl LogSoftmax {
    fn new(row: &[f32]) -> LogSoftmax {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        LogSoftmax { max, log_z: z.ln() }
    }

    fn at(&self, row: &[f32], token: u32) -> f32 {
        (row[token as usize] as f64 - self.max - self.log_z) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::longest_prefix_suffix;

    #[test]
    fn held_tail_is_the_longest_possible_stop_start() {
        assert_eq!(longest_prefix_suffix("hello wor", "world"), 3);
        assert_eq!(longest_prefix_suffix("hello", "world"), 0);
        assert_eq!(longest_prefix_suffix("abcab", "abc"), 2);
        assert_eq!(longest_prefix_suffix("ax", "xy"), 1);
        assert_eq!(longest_prefix_suffix("caf\u{e9}", "\u{e9}t\u{e9}"), 2);
    }
}
