//! Which arithmetic each position of a prompt takes: the batches llama.cpp
//! would have cut the prompt into.
//!
//! llama.cpp's kernels change form with the number of rows in a batch
//! (tiled flash attention from [`ATTN_TILE`] rows, Q4_K's four-row order,
//! Q6_K's order from eight rows; see [`hearth_kernels::Rows`]; and a batch
//! of one row, as in decoding, splits its attention's keys between the
//! threads once the cache view reaches 512 cells), so the same prompt
//! gives different bits depending on how it was batched. hearth
//! reproduces a chosen batching by position, never by how many rows a pass
//! happens to carry: a sequence's answer stays the same however its prompt
//! is chunked, batched beside others or partly reused.
//!
//! This module owns only the cutting rule and the lookup. The engine reads
//! a position's forms through [`KvCache`](crate::KvCache), which holds a
//! plan; it does not know where the rule comes from.

use std::ops::Range;

use hearth_kernels::{Rows, ATTN_TILE};

/// Rows in one of llama.cpp's prompt batches (its default `n_ubatch`).
pub const PROMPT_UBATCH: usize = 512;

/// Tokens llama-server keeps for a last, separate batch of a prompt when
/// the model has sliding-window layers, so that it can checkpoint the state
/// just before them (its "checkpoint offsets" 4 and 4 + `n_ubatch`).
const CHECKPOINT_TAIL: usize = 4;

/// llama.cpp views its KV cache in multiples of this many cells.
const KV_PAD: usize = 256;

/// A one-row batch whose cache view is at least this many cells splits its
/// attention's keys between the threads.
const SPLIT_KV_FROM: usize = 512;

/// The threads the reference ran with (the golden files' `-t 2`): how many
/// ranges a split attention's keys fall into.
pub const REFERENCE_THREADS: usize = 2;

/// The arithmetic one position takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forms {
    /// Tiled flash attention (F32 accumulator) rather than the one-row form.
    pub tiled: bool,
    /// One-row attention whose keys fall into [`REFERENCE_THREADS`] ranges
    /// of `kv_chunk` cells each, every range with its own running softmax,
    /// merged at the end (llama.cpp's split-KV decode); 0 when the keys
    /// are taken in one run.
    pub kv_chunk: usize,
    /// The position's batch has two rows or more, so llama.cpp's F32
    /// matmuls (LoRA's products) take tinyBLAS, not its dot product.
    pub batched: bool,
    /// The K-quant float orders.
    pub rows: Rows,
}

impl Forms {
    /// What a position in a batch of one row takes, as every decoding step
    /// is: the one-row forms, with the keys split once llama.cpp's view of
    /// the cache (the used cells, padded to [`KV_PAD`]) reaches
    /// [`SPLIT_KV_FROM`] cells. It views cells from the sequence's first
    /// and has one cell per position.
    pub fn one_row(pos: usize) -> Forms {
        let view = (pos + 1).next_multiple_of(KV_PAD);
        Forms {
            tiled: false,
            kv_chunk: if view >= SPLIT_KV_FROM {
                view.div_ceil(REFERENCE_THREADS)
            } else {
                0
            },
            batched: false,
            rows: Rows::SINGLE,
        }
    }
}

/// A prompt's positions cut into llama.cpp's batches. Positions past the
/// prompt (generated or scored tokens) take [`Forms::one_row`], as decoding
/// one token at a time does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PromptPlan {
    /// Consecutive batches covering `0..len`.
    batches: Vec<Range<usize>>,
}

impl PromptPlan {
    /// No prompt: every position takes the one-row forms.
    pub fn none() -> PromptPlan {
        PromptPlan::default()
    }

    /// The prompt decoded in one call, as `llama-perplexity`, `llama-bench`
    /// and the library do: batches of [`PROMPT_UBATCH`] rows from the
    /// start, the remainder last.
    pub fn one_call(len: usize) -> PromptPlan {
        PromptPlan::cut(len, &[])
    }

    /// The prompt as `llama-server` decodes a request's. For a model with
    /// sliding-window layers it decodes the last [`CHECKPOINT_TAIL`] tokens
    /// as a batch of their own, and the [`PROMPT_UBATCH`] before them as
    /// another, so that it can checkpoint the windowed cache; otherwise it
    /// decodes as [`Self::one_call`] does (its 2048-token calls are whole
    /// batches).
    pub fn server(len: usize, sliding_window: bool) -> PromptPlan {
        if !sliding_window {
            return PromptPlan::one_call(len);
        }
        // The server breaks a call when exactly this many tokens remain,
        // which it only checks after adding one.
        let cuts: Vec<usize> = [CHECKPOINT_TAIL + PROMPT_UBATCH, CHECKPOINT_TAIL]
            .into_iter()
            .filter(|&tail| len > tail)
            .map(|tail| len - tail)
            .collect();
        PromptPlan::cut(len, &cuts)
    }

    /// Calls ending at `cuts` (ascending, inside `0..len`) and at `len`,
    /// each split into batches of [`PROMPT_UBATCH`] rows from its start.
    fn cut(len: usize, cuts: &[usize]) -> PromptPlan {
        let mut batches = Vec::new();
        let mut start = 0;
        for end in cuts.iter().copied().chain(std::iter::once(len)) {
            while start < end {
                let stop = end.min(start + PROMPT_UBATCH);
                batches.push(start..stop);
                start = stop;
            }
        }
        PromptPlan { batches }
    }

    /// Positions the plan covers.
    pub fn len(&self) -> usize {
        self.batches.last().map_or(0, |b| b.end)
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The batches, in order.
    pub fn batches(&self) -> &[Range<usize>] {
        &self.batches
    }

    /// The forms position `pos` takes.
    pub fn forms_at(&self, pos: usize) -> Forms {
        let i = self.batches.partition_point(|b| b.end <= pos);
        let Some(b) = self.batches.get(i) else {
            return Forms::one_row(pos);
        };
        let rows = b.len();
        if rows == 1 {
            return Forms::one_row(pos);
        }
        Forms {
            tiled: rows >= ATTN_TILE,
            kv_chunk: 0,
            batched: true,
            rows: Rows {
                // Q4_K takes rows four at a time, the last `rows % 4` alone.
                quad: pos - b.start < rows - rows % 4,
                wide: rows >= 8,
            },
        }
    }

    /// How many of the first `n` positions take the same forms under both
    /// plans: a prefix computed under one serves the other only that far.
    pub fn agrees_for(&self, other: &PromptPlan, n: usize) -> usize {
        (0..n)
            .find(|&p| self.forms_at(p) != other.forms_at(p))
            .unwrap_or(n)
    }
}
