//! Generation: prefill the prompt, then sample one token per forward pass,
//! streaming text as whole UTF-8 characters.

use std::ops::ControlFlow;

use hearth_engine::{BatchItem, Want};
use hearth_sample::{Sampler, SamplerConfig};
use hearth_text::Detokenizer;
use serde::Serialize;

use crate::error::{Result, RuntimeError};
use crate::Runtime;

#[derive(Clone, Debug)]
pub struct GenOptions {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Ban end-of-generation tokens (their logits set to −∞) so that exactly
    /// `max_tokens` come, as the golden references were made.
    pub ignore_eos: bool,
    /// Report the top K log-probabilities at each step, from the raw logits.
    pub top_logprobs: usize,
    pub n_ctx: Option<usize>,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            max_tokens: 512,
            sampler: SamplerConfig::default(),
            ignore_eos: false,
            top_logprobs: 0,
            n_ctx: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TopEntry {
    pub id: u32,
    pub logprob: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub token: u32,
    pub top: Vec<TopEntry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    Eos,
    /// `max_tokens` were generated.
    Length,
    /// The context is full.
    Context,
    /// The caller asked to stop.
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct GenOutput {
    pub prompt_ids: Vec<u32>,
    pub completion_ids: Vec<u32>,
    pub text: String,
    pub steps: Vec<Step>,
    pub stop: StopReason,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

impl Runtime {
    /// Generate from `prompt_ids`; `on_text` receives each piece of text as
    /// soon as it forms whole characters, and may stop the generation.
    pub fn generate(
        &self,
        prompt_ids: &[u32],
        opts: &GenOptions,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenOutput> {
        if prompt_ids.is_empty() {
            return Err(RuntimeError::EmptyPrompt);
        }
        let n_ctx = self.context(opts.n_ctx);
        if prompt_ids.len() > n_ctx {
            return Err(RuntimeError::PromptTooLong {
                n_prompt: prompt_ids.len(),
                n_ctx,
            });
        }
        let mut cache = self.model.new_cache(n_ctx);
        let mut sampler = Sampler::new(opts.sampler.clone());
        let mut detok = Detokenizer::new(false);
        let banned: &[u32] = if opts.ignore_eos {
            self.tokenizer.eog_ids()
        } else {
            &[]
        };
        for &t in prompt_ids {
            sampler.accept(t);
        }

        let t0 = std::time::Instant::now();
        let mut logits = self.step(&mut cache, prompt_ids)?;
        let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = std::time::Instant::now();

        let mut out = GenOutput {
            prompt_ids: prompt_ids.to_vec(),
            completion_ids: Vec::new(),
            text: String::new(),
            steps: Vec::new(),
            stop: StopReason::Length,
            prefill_ms,
            decode_ms: 0.0,
        };
        for i in 0..opts.max_tokens {
            let top = if opts.top_logprobs > 0 {
                hearth_sample::top_logprobs(&logits, opts.top_logprobs)
                    .into_iter()
                    .map(|(id, logprob)| TopEntry { id, logprob })
                    .collect()
            } else {
                Vec::new()
            };
            hearth_sample::ban(&mut logits, banned);
            let token = sampler.sample(&logits);
            sampler.accept(token);
            out.steps.push(Step { token, top });
            if self.tokenizer.is_eog(token) && !opts.ignore_eos {
                out.stop = StopReason::Eos;
                break;
            }
            out.completion_ids.push(token);
            let piece = detok.push(&self.tokenizer, token);
            if !piece.is_empty() {
                out.text.push_str(&piece);
                if on_text(&piece).is_break() {
                    out.stop = StopReason::Cancelled;
                    break;
                }
            }
            if i + 1 == opts.max_tokens {
                break;
            }
            if cache.len() + 1 > n_ctx {
                out.stop = StopReason::Context;
                break;
            }
            logits = self.step(&mut cache, &[token])?;
        }
        let rest = detok.finish();
        if !rest.is_empty() {
            out.text.push_str(&rest);
            let _ = on_text(&rest);
        }
        out.decode_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok(out)
    }

    /// Feed tokens to one sequence and return the logits of the last.
    pub(crate) fn step(
        &self,
        cache: &mut hearth_engine::KvCache,
        tokens: &[u32],
    ) -> Result<Vec<f32>> {
        let mut items = [BatchItem {
            cache,
            tokens,
            want: Want::Last,
        }];
        Ok(self.model.forward(&mut items)?.remove(0))
    }
}
