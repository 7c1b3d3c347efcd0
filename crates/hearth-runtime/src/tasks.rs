//! Typed tasks: classify, summarize and extract, as prompts and rules that
//! the command line and the daemon share.
//!
//! This module owns each task's instruction (the chat the model sees), the
//! validation of its inputs, and the arithmetic that turns the model's output
//! into the task's answer. Running the model is the caller's: the command
//! line drives a [`Sequence`](crate::Sequence) here in-process
//! ([`Runtime::label_logprobs`], [`Runtime::generate`]); the daemon hands the
//! same sequences to its scheduler.
//!
//! **Classify** scores each label as the continuation of the assistant turn
//! (the label's text, then the end-of-turn token, so that a label which is a
//! prefix of another is not favoured) by teacher forcing, never by sampling:
//! the prompt's keys and values are computed once, then each label's tokens
//! are fed over them. A label's log-likelihood is the *sum* of its tokens'
//! log-probabilities, and the probabilities are the softmax of those sums
//! over the labels. There is no length normalisation, on purpose: the sum is
//! the model's log-probability of the whole answer, so the softmax is exactly
//! the model's distribution over answers restricted to the given labels. A
//! per-token average would not be a probability of anything, and it would
//! favour long labels whose later tokens are forced once the first is chosen.
//!
//! **Summarize** is a generation under an instruction that names the word
//! budget; the budget is then enforced by stopping: [`WordLimit`] watches the
//! streamed text and ends the generation as soon as it holds more than
//! `max_words` words, keeping the first `max_words`. (A constraint would
//! also work but would bend the model's tokenisation of words; stopping
//! keeps the text the model wrote, cut at a word boundary.)
//!
//! **Extract** is a generation constrained to the caller's JSON schema; the
//! prompt is here, the constraint is `hearth-sample`'s.

use std::sync::Arc;

use hearth_engine::Adapter;
use hearth_sample::SamplerConfig;

use crate::error::{Result, RuntimeError};
use crate::sequence::SeqParams;
use crate::{Message, Runtime};

/// Check a classification's labels: at least one, none empty, none
/// repeated. The error names the offending label.
pub fn check_labels(labels: &[String]) -> std::result::Result<(), String> {
    if labels.is_empty() {
        return Err("`labels` is empty; give at least one label".into());
    }
    for (i, l) in labels.iter().enumerate() {
        if l.trim().is_empty() {
            return Err(format!("label {i} is empty"));
        }
        if let Some(j) = labels[..i].iter().position(|m| m == l) {
            return Err(format!("label {l:?} appears twice (at {j} and {i})"));
        }
    }
    Ok(())
}

/// The chat a classification scores labels after. The question sits in
/// the user's turn beside the text, not in a system prompt: the small
/// default models follow an instruction next to its text far better.
pub fn classify_messages(labels: &[String], text: &str) -> Vec<Message> {
    let list = match labels {
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
        [] => String::new(),
    };
    vec![
        Message::new("system", "You are a text classifier."),
        Message::new(
            "user",
            format!(
                "Text: {text}\n\nWhich label fits the text best: {list}? \
                 Answer with the label only."
            ),
        ),
    ]
}

/// Softmax of summed log-likelihoods, in f64 and shifted by the largest so
/// that very unlikely labels do not underflow the others.
pub fn softmax(logliks: &[f64]) -> Vec<f64> {
    let max = logliks.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logliks.iter().map(|&l| (l - max).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|x| x / z).collect()
}

/// One classification's answer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Classification {
    /// The most probable label.
    pub label: String,
    /// Every label with its probability, in the order given.
    pub labels: Vec<LabelScore>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct LabelScore {
    pub label: String,
    pub probability: f64,
    /// The summed log-probability of the label's tokens (and end of turn).
    pub logprob: f64,
    pub tokens: usize,
}

impl Classification {
    /// Build the answer from each label's log-likelihood and token count.
    pub fn new(labels: &[String], logliks: &[f64], tokens: &[usize]) -> Classification {
        let probs = softmax(logliks);
        let scores: Vec<LabelScore> = labels
            .iter()
            .zip(&probs)
            .zip(logliks.iter().zip(tokens))
            .map(|((l, &p), (&lp, &n))| LabelScore {
                label: l.clone(),
                probability: p,
                logprob: lp,
                tokens: n,
            })
            .collect();
        let best = scores
            .iter()
            .max_by(|a, b| a.probability.total_cmp(&b.probability))
            .map(|s| s.label.clone())
            .unwrap_or_default();
        Classification {
            label: best,
            labels: scores,
        }
    }
}

impl Runtime {
    /// A label's tokens as the assistant's answer: its text (no BOS, special
    /// tokens not parsed, so a label cannot smuggle in control tokens), then
    /// the end-of-turn token where the model has one.
    pub fn label_tokens(&self, label: &str) -> Vec<u32> {
        let mut ids = self.tokenizer.encode(label, false, false);
        if let Some(end) = self.tokenizer.eot().or(self.tokenizer.eos()) {
            ids.push(end);
        }
        ids
    }

    /// The log-likelihood of each candidate as the continuation of `prompt`:
    /// the sum of its tokens' log-probabilities, the prompt computed once and
    /// each candidate teacher-forced over it (a scoring
    /// [`Sequence`](crate::Sequence)).
    pub fn label_logprobs(
        &self,
        prompt: &[u32],
        candidates: &[Vec<u32>],
        adapter: Option<Arc<Adapter>>,
        n_ctx: Option<usize>,
    ) -> Result<Vec<f64>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let params = SeqParams {
            score: candidates.to_vec(),
            adapter,
            ..SeqParams::default()
        };
        let mut seq = self.start(prompt.to_vec(), params, n_ctx)?;
        while seq.finished().is_none() {
            if self.step_batch(&mut [&mut seq], usize::MAX)? == 0 {
                break;
            }
        }
        sum_steps(candidates, seq.steps())
    }

    /// Classify `text` into one of `labels` (checked with [`check_labels`]).
    pub fn classify(
        &self,
        labels: &[String],
        text: &str,
        adapter: Option<Arc<Adapter>>,
        n_ctx: Option<usize>,
    ) -> Result<Classification> {
        check_labels(labels).map_err(RuntimeError::Invalid)?;
        let prompt = self.chat_prompt(&classify_messages(labels, text))?;
        let cands: Vec<Vec<u32>> = labels.iter().map(|l| self.label_tokens(l)).collect();
        let ll = self.label_logprobs(&prompt, &cands, adapter, n_ctx)?;
        let counts: Vec<usize> = cands.iter().map(Vec::len).collect();
        Ok(Classification::new(labels, &ll, &counts))
    }
}

/// Sum a scoring sequence's steps back into one log-likelihood per
/// candidate (the steps come candidate by candidate, token by token).
pub fn sum_steps(candidates: &[Vec<u32>], steps: &[crate::Step]) -> Result<Vec<f64>> {
    let want: usize = candidates.iter().map(Vec::len).sum();
    if steps.len() != want {
        return Err(RuntimeError::Invalid(format!(
            "scoring returned {} token log-probabilities for {want} candidate tokens",
            steps.len()
        )));
    }
    let mut it = steps.iter();
    Ok(candidates
        .iter()
        .map(|c| {
            it.by_ref()
                .take(c.len())
                .map(|s| f64::from(s.logprob.unwrap_or(f32::NEG_INFINITY)))
                .sum()
        })
        .collect())
}

/// The chat a summary is generated from.
pub fn summarize_messages(text: &str, max_words: usize) -> Vec<Message> {
    vec![
        Message::new(
            "system",
            format!(
                "Summarize the user's text in at most {max_words} words. \
                 Write only the summary."
            ),
        ),
        Message::new("user", text),
    ]
}

/// A generous token budget for `max_words` words, so a model that never
/// ends still stops; the word limit usually ends it first.
pub fn summary_max_tokens(max_words: usize) -> usize {
    max_words.saturating_mul(4).saturating_add(16)
}

/// The greedy sampler the tasks use: a task's answer should not change from
/// one call to the next.
pub fn task_sampler() -> SamplerConfig {
    SamplerConfig::greedy()
}

/// Watches streamed text and says when it holds more than `max` words.
#[derive(Clone, Debug)]
pub struct WordLimit {
    max: usize,
    text: String,
}

impl WordLimit {
    pub fn new(max: usize) -> WordLimit {
        WordLimit {
            max,
            text: String::new(),
        }
    }

    /// Add a piece; true once the text has gone past the limit (a word
    /// beyond the `max`th has begun, so the `max`th is known to be whole).
    pub fn push(&mut self, piece: &str) -> bool {
        self.text.push_str(piece);
        self.text.split_whitespace().count() > self.max
    }

    /// The text so far, cut to its first `max` words (the model's spacing
    /// between them kept, the rest after the last kept word dropped).
    pub fn text(&self) -> String {
        cut_words(&self.text, self.max)
    }

    /// Whether the text was cut.
    pub fn exceeded(&self) -> bool {
        self.text.split_whitespace().count() > self.max
    }
}

/// The first `max` whitespace-separated words of `text`, with the text's
/// own spacing between them and no leading or trailing space.
pub fn cut_words(text: &str, max: usize) -> String {
    let t = text.trim_start();
    let mut end = 0;
    let mut words = 0;
    let mut in_word = false;
    for (i, ch) in t.char_indices() {
        if ch.is_whitespace() {
            if in_word {
                in_word = false;
                words += 1;
                end = i;
                if words == max {
                    break;
                }
            }
        } else {
            in_word = true;
        }
    }
    if in_word && words < max {
        end = t.len();
    }
    t[..end].to_string()
}

/// The token budget of an extraction unless the caller sets one.
pub const EXTRACT_MAX_TOKENS: usize = 512;

/// The chat an extraction is generated from.
pub fn extract_messages(schema: &serde_json::Value, text: &str) -> Vec<Message> {
    vec![
        Message::new(
            "system",
            format!(
                "Extract the information in the user's text as one JSON object \
                 that follows this JSON schema:\n{schema}\nAnswer with the JSON only."
            ),
        ),
        Message::new("user", text),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(check_labels(&s(&[])).unwrap_err().contains("empty"));
        assert!(check_labels(&s(&["a", " "]))
            .unwrap_err()
            .contains("label 1"));
        assert!(check_labels(&s(&["a", "b", "a"]))
            .unwrap_err()
            .contains("twice"));
        assert!(check_labels(&s(&["a", "b"])).is_ok());
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = softmax(&[-1.0, -3.0, -1000.0, -0.5]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(p[3] > p[0] && p[0] > p[1] && p[1] > p[2]);
        assert!((p[0] / p[1] - 2f64.exp()).abs() < 1e-9);
    }

    #[test]
    fn words_are_cut_at_the_limit() {
        assert_eq!(cut_words("  one two  three four", 2), "one two");
        assert_eq!(cut_words("one two", 5), "one two");
        assert_eq!(cut_words("one two ", 2), "one two");
        assert_eq!(cut_words("a\nb c", 2), "a\nb");
        assert_eq!(cut_words("", 3), "");
        let mut w = WordLimit::new(2);
        assert!(!w.push("one tw"));
        assert!(!w.push("o "));
        assert!(w.push("thr"));
        assert_eq!(w.text(), "one two");
        assert!(w.exceeded());
    }
}
