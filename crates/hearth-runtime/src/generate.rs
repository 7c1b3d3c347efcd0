//! One generation from start to end, streamed: the command line's loop over
//! a single [`Sequence`](crate::Sequence).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use hearth_engine::Adapter;

use hearth_sample::{ConstraintSpec, SamplerConfig};

use crate::error::Result;
use crate::sequence::{SeqParams, Step, StopReason};
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
    /// Output the generation must follow (see [`SeqParams::constraint`]).
    pub constraint: Option<ConstraintSpec>,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            max_tokens: 512,
            sampler: SamplerConfig::default(),
            ignore_eos: false,
            top_logprobs: 0,
            n_ctx: None,
            constraint: None,
        }
    }
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
    /// Of the decode time, what computing constraint masks took, and how
    /// many masks were computed (0 without a constraint).
    pub mask_ms: f64,
    pub masks: u64,
}

impl Runtime {
    /// Generate from `prompt_ids`; `on_text` receives each piece of text as
    /// soon as it forms whole characters, and may stop the generation.
    pub fn generate(
        &self,
        prompt_ids: &[u32],
        opts: &GenOptions,
        on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenOutput> {
        self.generate_with_adapter(prompt_ids, opts, None, on_text)
    }

    /// [`Runtime::generate`] with a LoRA adapter applied (unmerged).
    ///
    /// The adapter is an argument rather than a field of [`GenOptions`] so
    /// that callers building `GenOptions` field by field keep compiling.
    pub fn generate_with_adapter(
        &self,
        prompt_ids: &[u32],
        opts: &GenOptions,
        adapter: Option<Arc<Adapter>>,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenOutput> {
        let params = SeqParams {
            max_tokens: opts.max_tokens,
            sampler: opts.sampler.clone(),
            ignore_eos: opts.ignore_eos,
            top_logprobs: opts.top_logprobs,
            adapter,
            constraint: opts.constraint.clone(),
            ..SeqParams::default()
        };
        let mut seq = self.start(prompt_ids.to_vec(), params, opts.n_ctx)?;
        let t0 = Instant::now();
        let mut prefill_ms = None;
        while seq.finished().is_none() {
            self.step_batch(&mut [&mut seq], usize::MAX)?;
            prefill_ms.get_or_insert_with(|| t0.elapsed().as_secs_f64() * 1e3);
            let piece = seq.take_text();
            if !piece.is_empty() && on_text(&piece).is_break() {
                seq.cancel();
            }
        }
        // Text released by the final step (a flushed partial character).
        let piece = seq.take_text();
        if !piece.is_empty() {
            let _ = on_text(&piece);
        }
        let total_ms = t0.elapsed().as_secs_f64() * 1e3;
        let prefill_ms = prefill_ms.unwrap_or(0.0);
        if let Some(e) = seq.constraint_error() {
            return Err(crate::RuntimeError::Constraint(e.to_string()));
        }
        let (mask_time, masks) = seq.constraint_stats();
        Ok(GenOutput {
            prompt_ids: seq.prompt().to_vec(),
            completion_ids: seq.completion().to_vec(),
            text: seq.text().to_string(),
            steps: seq.steps().to_vec(),
            stop: seq.finished().unwrap_or(StopReason::Length),
            prefill_ms,
            decode_ms: total_ms - prefill_ms,
            mask_ms: mask_time.as_secs_f64() * 1e3,
            masks,
        })
    }

    /// Feed tokens to one sequence and return the logits of the last.
    pub(crate) fn step(
        &self,
        cache: &mut hearth_engine::KvCache,
        tokens: &[u32],
        adapter: Option<&Adapter>,
    ) -> Result<Vec<f32>> {
        let mut items = [hearth_engine::BatchItem {
            cache,
            tokens,
            want: hearth_engine::Want::Last,
            adapter,
        }];
        Ok(self.model.forward(&mut items)?.remove(0))
    }
}
