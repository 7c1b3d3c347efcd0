//! The decoder-only transformer that every supported architecture is an
//! instance of, and its batched forward pass.
//!
//! Architectures (one file each under `arch/`) read their hyperparameters and
//! tensor names from the GGUF file and fill a [`Transformer`]; the switches
//! here (biases, QK norms, post-norms, GELU, embedding scale, sliding windows,
//! per-layer RoPE bases) are what distinguishes them.
//!
//! The forward pass takes a batch of sequences, each with its own KV cache and
//! position, and runs all their tokens through each matrix at once. Every
//! number a sequence sees is computed from that sequence alone, in an order
//! that does not depend on the batch: activations are quantised per row,
//! each output element of a matmul is one dot product in the kernel's fixed
//! order, and attention reads only the sequence's own cache. So a sequence's
//! logits are bit-identical alone or batched.
//!
//! Each sequence may carry its own LoRA adapter (or none). The base matmul
//! runs once over every token of the batch; the low-rank part is grouped by
//! adapter (gather the rows of the tokens that use adapter `j`, compute
//! `(X_j·Aᵀ)·Bᵀ`, add `s·` that into their output rows), so the cost of an
//! adapter grows with its tokens, not with the number of sequences. Each
//! low-rank output element is again one fixed-order dot product per token,
//! so adapters keep the batch invariance: a sequence's logits do not depend
//! on which adapters, if any, its neighbours carry.

use std::sync::Arc;

use half::f16;
use half::slice::HalfFloatSliceExt;
use hearth_gguf::{GgmlType, GgufFile};
use hearth_kernels as k;

use crate::error::{EngineError, Result};
use crate::kv_cache::KvCache;
use crate::kv_pool::KvGeometry;
use crate::lora::{Adapter, LoraMatrix, Role};
use crate::pool::{SharedMut, ThreadPool};
use crate::prompt_plan::Forms;
use crate::weights::Matrix;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: silu(gate) · up.
    Silu,
    /// GeGLU with the tanh approximation of GELU.
    GeluTanh,
}

/// Shape and behaviour shared by all layers.
#[derive(Clone, Debug)]
pub struct Hyper {
    pub arch: String,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub n_rot: usize,
    /// Rotate pairs `(i, i + n_rot/2)` (GPT-NeoX style) instead of `(2i, 2i+1)`.
    pub rope_neox: bool,
    /// Multiplies queries before they meet the keys (Gemma scales queries
    /// this way; the others scale the scores instead).
    pub q_scale: Option<f32>,
    /// Multiplies each query-key score.
    pub kq_scale: f32,
    /// Multiplies the token embeddings (Gemma: sqrt(n_embd)).
    pub embed_scale: Option<f32>,
    pub activation: Activation,
}

pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub wo: Matrix,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    /// Per-head RMS norms of queries and keys (Qwen3, Gemma 3).
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    /// Norms applied to the attention and FFN outputs before the residual add (Gemma).
    pub post_attn_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Matrix,
    pub w_up: Matrix,
    pub w_down: Matrix,
    pub post_ffn_norm: Option<Vec<f32>>,
    pub rope_base: f32,
    /// Keys older than this many positions are invisible (sliding-window layers).
    pub window: Option<usize>,
}

pub struct Transformer {
    pub file: Arc<GgufFile>,
    pub hp: Hyper,
    pub token_embd: Matrix,
    pub output_norm: Vec<f32>,
    pub output: Matrix,
    pub layers: Vec<Layer>,
}

/// Which positions of a batch item need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    None,
    Last,
    All,
    /// Positions from this index of the item's tokens to its end.
    From(usize),
}

/// One sequence's share of a batch.
pub struct BatchItem<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
    pub want: Want,
    /// The LoRA adapter this sequence runs with, checked against this model
    /// when it was loaded.
    pub adapter: Option<&'a Adapter>,
}

/// The tokens of a batch (indices into the flattened batch, in order) that
/// run with one adapter.
struct LoraGroup<'a> {
    adapter: &'a Adapter,
    toks: Vec<usize>,
}

/// Which adapters a matmul call applies: the batch's groups, the layer, and
/// the role of each job of the call.
#[derive(Clone, Copy)]
struct LoraUse<'a> {
    groups: &'a [LoraGroup<'a>],
    /// The flattened batch's tokens: their forms pick the F32 matmuls'
    /// order ([`Forms::batched`]).
    toks: &'a [Tok],
    layer: usize,
    roles: &'a [Role],
}

/// Where a token of the flattened batch came from.
#[derive(Clone, Copy)]
struct Tok {
    item: usize,
    pos: usize,
    /// The arithmetic the position takes ([`KvCache::plan_prompt`]).
    forms: Forms,
}

impl Transformer {
    /// The shape of one position's keys and values, in blocks of
    /// `block_positions` positions.
    pub fn kv_geometry(&self, block_positions: usize) -> KvGeometry {
        let hp = &self.hp;
        KvGeometry {
            n_layer: hp.n_layer,
            n_head_kv: hp.n_head_kv,
            k_dim: hp.n_head_kv * hp.head_dim_k,
            v_dim: hp.n_head_kv * hp.head_dim_v,
            block_positions,
        }
    }

    fn weights(&self, m: &Matrix) -> &[u8] {
        &self.file.bytes()[m.range.clone()]
    }

    /// Run one batched forward pass; returns, per item, the logits of the
    /// wanted positions (`rows × n_vocab`, row-major).
    pub fn forward(&self, pool: &ThreadPool, items: &mut [BatchItem]) -> Result<Vec<Vec<f32>>> {
        let hp = &self.hp;
        let mut toks = Vec::new();
        for (i, it) in items.iter().enumerate() {
            if it.tokens.is_empty() {
                return Err(EngineError::EmptyItem);
            }
            it.cache.check_room(it.tokens.len())?;
            let (found, expected) = (it.cache.geometry(), self.kv_geometry(0));
            let shape = |g: KvGeometry| (g.n_layer, g.n_head_kv, g.k_dim, g.v_dim);
            if shape(found) != shape(expected) {
                let text = |g: KvGeometry| {
                    format!(
                        "{} layers × {} heads × {}+{}",
                        g.n_layer, g.n_head_kv, g.k_dim, g.v_dim
                    )
                };
                return Err(EngineError::CacheShape {
                    found: text(found),
                    expected: text(expected),
                });
            }
            for (j, &id) in it.tokens.iter().enumerate() {
                if id as usize >= hp.n_vocab {
                    return Err(EngineError::BadToken {
                        id,
                        n_vocab: hp.n_vocab,
                    });
                }
                let pos = it.cache.len() + j;
                toks.push(Tok {
                    item: i,
                    pos,
                    forms: it.cache.forms_at(pos),
                });
            }
        }
        // Adapters are checked before any block is taken.
        for it in items.iter() {
            if let Some(a) = it.adapter {
                a.check_base(hp)?;
            }
        }
        // Every block the pass writes is taken now, all items or none, so a
        // full pool fails the pass before any cache changes.
        for i in 0..items.len() {
            if let Err(e) = items[i].cache.reserve(items[i].tokens.len()) {
                for it in items[..i].iter_mut() {
                    it.cache.release_unused();
                }
                return Err(e);
            }
        }
        let n_tok = toks.len();
        let d = hp.n_embd;
        // Group tokens by adapter (by id: the same adapter in two sequences is one group).
        let mut groups: Vec<LoraGroup> = Vec::new();
        let mut t0 = 0;
        for it in items.iter() {
            let n = it.tokens.len();
            if let Some(a) = it.adapter {
                let g = match groups.iter().position(|g| g.adapter.id() == a.id()) {
                    Some(g) => g,
                    None => {
                        groups.push(LoraGroup {
                            adapter: a,
                            toks: Vec::new(),
                        });
                        groups.len() - 1
                    }
                };
                groups[g].toks.extend(t0..t0 + n);
            }
            t0 += n;
        }
        let lora = |layer: usize, roles: &'static [Role]| {
            (!groups.is_empty()).then_some(LoraUse {
                groups: &groups,
                toks: &toks,
                layer,
                roles,
            })
        };

        // Embeddings.
        let mut x = vec![0f32; n_tok * d];
        let embd = self.weights(&self.token_embd);
        let erb = self.token_embd.row_bytes();
        let mut t = 0;
        for it in items.iter() {
            for &id in it.tokens {
                let row = &embd[id as usize * erb..(id as usize + 1) * erb];
                k::dequantize_row(self.token_embd.ty, row, &mut x[t * d..(t + 1) * d]);
                if let Some(s) = hp.embed_scale {
                    k::scale_inplace(&mut x[t * d..(t + 1) * d], s);
                }
                t += 1;
            }
        }

        let q_dim = hp.n_head * hp.head_dim_k;
        let k_dim = hp.n_head_kv * hp.head_dim_k;
        let v_dim = hp.n_head_kv * hp.head_dim_v;
        let o_dim = hp.n_head * hp.head_dim_v;
        let mut h = vec![0f32; n_tok * d];
        let mut q = vec![0f32; n_tok * q_dim];
        let mut kk = vec![0f32; n_tok * k_dim];
        let mut vv = vec![0f32; n_tok * v_dim];
        let mut att = vec![0f32; n_tok * o_dim];
        let mut o = vec![0f32; n_tok * d];
        let mut gate = vec![0f32; n_tok * hp.n_ff];
        let mut up = vec![0f32; n_tok * hp.n_ff];
        let mut acts = ActCache {
            forms: batched_runs(&toks),
            ..ActCache::default()
        };

        for (li, layer) in self.layers.iter().enumerate() {
            // Decode-sized passes only: a prompt's thousands of slots would
            // push the matmuls' data out of L1, and its writes are a small
            // part of its pass.
            if n_tok <= PREFETCH_SLOTS_UP_TO {
                for tok in &toks {
                    items[tok.item].cache.prefetch_slot(li, tok.pos);
                }
            }
            // Attention block.
            rms_rows(pool, &x, &layer.attn_norm, hp.rms_eps, &mut h, d);
            acts.clear();
            self.matmuls(
                pool,
                &mut [
                    (&layer.wq, &mut q),
                    (&layer.wk, &mut kk),
                    (&layer.wv, &mut vv),
                ],
                &h,
                n_tok,
                &mut acts,
                lora(li, &[Role::Q, Role::K, Role::V]),
            );
            add_bias(&mut q, layer.bq.as_deref());
            add_bias(&mut kk, layer.bk.as_deref());
            add_bias(&mut vv, layer.bv.as_deref());
            self.position_heads(pool, layer, &toks, &mut q, &mut kk);
            for (ti, tok) in toks.iter().enumerate() {
                items[tok.item].cache.write(
                    li,
                    tok.pos,
                    &kk[ti * k_dim..(ti + 1) * k_dim],
                    &vv[ti * v_dim..(ti + 1) * v_dim],
                );
            }
            let caches: Vec<&KvCache> = items.iter().map(|it| &*it.cache).collect();
            self.attention(pool, li, &toks, &caches, &q, &mut att);
            acts.clear();
            self.matmul(
                pool,
                (&layer.wo, &mut o),
                &att,
                n_tok,
                &mut acts,
                lora(li, &[Role::O]),
            );
            if let Some(w) = &layer.post_attn_norm {
                rms_rows_inplace(pool, &mut o, w, hp.rms_eps, d);
            }
            k::add_inplace(&mut x, &o);

            // Feed-forward block. llama.cpp keeps only the output rows
            // after the last layer's attention, so its last feed-forward
            // multiplies one row at a time when a pass wants few logits
            // (decoding, a prompt's last token): that layer's K-quant
            // products take the one-row forms for every token here.
            if li + 1 == self.layers.len() {
                acts.forms.clear();
            }
            rms_rows(pool, &x, &layer.ffn_norm, hp.rms_eps, &mut h, d);
            acts.clear();
            let gate_up = lora(li, &[Role::Gate, Role::Up]);
            if !self.gated_in_pass(
                pool, layer, &h, n_tok, &mut gate, &mut up, &mut acts, gate_up,
            ) {
                self.matmuls(
                    pool,
                    &mut [(&layer.w_gate, &mut gate), (&layer.w_up, &mut up)],
                    &h,
                    n_tok,
                    &mut acts,
                    gate_up,
                );
                gated(hp.activation, &mut gate, &up);
                acts.clear();
            }
            self.matmul(
                pool,
                (&layer.w_down, &mut o),
                &gate,
                n_tok,
                &mut acts,
                lora(li, &[Role::Down]),
            );
            if let Some(w) = &layer.post_ffn_norm {
                rms_rows_inplace(pool, &mut o, w, hp.rms_eps, d);
            }
            k::add_inplace(&mut x, &o);
        }
        for it in items.iter_mut() {
            it.cache.advance(it.tokens.len());
        }

        // Logits for the wanted rows only: the output matrix is the largest
        // in the model, so prompt positions nobody asked about are skipped.
        let mut rows = Vec::new();
        let mut counts = vec![0usize; items.len()];
        let mut start = 0;
        for (i, it) in items.iter().enumerate() {
            let n = it.tokens.len();
            let from = match it.want {
                Want::None => n,
                Want::Last => n - 1,
                Want::All => 0,
                Want::From(f) => f.min(n),
            };
            for j in from..n {
                rows.push(start + j);
            }
            counts[i] = n - from;
            start += n;
        }
        let mut spare = SPARE_ROWS.take();
        let mut out: Vec<Vec<f32>> = counts
            .iter()
            .map(|&c| {
                let mut v = spare.pop().unwrap_or_default();
                v.clear();
                v.reserve(c * hp.n_vocab);
                v
            })
            .collect();
        SPARE_ROWS.set(spare);
        if rows.is_empty() {
            return Ok(out);
        }
        let mut xs = vec![0f32; rows.len() * d];
        for (r, &src) in rows.iter().enumerate() {
            k::rms_norm(
                &x[src * d..(src + 1) * d],
                &self.output_norm,
                hp.rms_eps,
                &mut xs[r * d..(r + 1) * d],
            );
        }
        // Reused between passes, as the matmul scratch is.
        // The matmul writes every element, so only growth is cleared.
        let mut logits = LOGITS.take();
        logits.truncate(rows.len() * hp.n_vocab);
        logits.resize(rows.len() * hp.n_vocab, 0.0);
        acts.clear();
        self.matmul(
            pool,
            (&self.output, &mut logits),
            &xs,
            rows.len(),
            &mut acts,
            None,
        );
        // Each sequence's rows are copied out by a pool task: one thread
        // copying eight streams' rows (1.5 MB for SmolLM2) took 120 µs a
        // step while the others waited (8 streams, median of four
        // alternating runs: 519 -> 526 t/s).
        let firsts: Vec<usize> = counts
            .iter()
            .scan(0, |r, &c| {
                *r += c;
                Some(*r - c)
            })
            .collect();
        let nv = hp.n_vocab;
        let shared_out = SharedMut::new(&mut out);
        pool.run(counts.len(), &|i| {
            // SAFETY: task i alone touches sequence i's vector.
            let v = unsafe { &mut shared_out.slice(i..i + 1)[0] };
            v.extend_from_slice(&logits[firsts[i] * nv..(firsts[i] + counts[i]) * nv]);
        });
        keep(&LOGITS, logits);
        Ok(out)
    }

    /// Take back a logits vector that [`Self::forward`] returned, for a
    /// later pass on this thread to fill. Decode returns one vocabulary-
    /// sized row per sequence per step (0.2 MB for SmolLM2, 1 MB for Gemma
    /// 3); allocated afresh each step, those rows went back to the kernel
    /// when freed and page-faulted in again on the next. Only a few
    /// rows' worth is kept: a prompt's every-position logits are let go.
    pub fn recycle_logits(&self, v: Vec<f32>) {
        const MAX_SPARES: usize = 64;
        if v.capacity() > 4 * self.hp.n_vocab {
            return;
        }
        let mut spare = SPARE_ROWS.take();
        if spare.len() < MAX_SPARES {
            spare.push(v);
        }
        SPARE_ROWS.set(spare);
    }

    /// `out[t][r] = W[r] · x[t]` for `n_tok` rows of `x`.
    fn matmul(
        &self,
        pool: &ThreadPool,
        (w, out): (&Matrix, &mut [f32]),
        x: &[f32],
        n_tok: usize,
        acts: &mut ActCache,
        lora: Option<LoraUse>,
    ) {
        self.matmuls(pool, &mut [(w, out)], x, n_tok, acts, lora);
    }

    /// Several matrices reading the same input (Q, K and V; gate and up) in
    /// one pass of the pool, so the workers wake once instead of once per
    /// matrix. The input is quantised once per activation format.
    ///
    /// With adapters, the same pass also computes each adapter group's
    /// `T = X_g·Aᵀ` (from the f32 input, one task per chunk of the group's
    /// tokens, shared by the jobs); a second pass adds `s·T·Bᵀ` into the
    /// group's output rows, split by output rows.
    fn matmuls(
        &self,
        pool: &ThreadPool,
        jobs: &mut [(&Matrix, &mut [f32])],
        x: &[f32],
        n_tok: usize,
        acts: &mut ActCache,
        lora: Option<LoraUse>,
    ) {
        for (w, out) in jobs.iter() {
            debug_assert_eq!(out.len(), n_tok * w.n_out);
            acts.ensure(pool, k::vec_dot_type(w.ty), x, w.n_in, n_tok);
        }
        let acts = &*acts;
        let threads = pool.n_threads();
        // Split by tokens only for long prompts: each task then decodes the
        // whole weight matrix for its own tokens, which pays off once a task
        // has many of them. A burst of short prompts (8 requests of ~15
        // tokens) is faster split by rows: 120 tokens measured 700-720
        // against 550-630 prompt t/s (SmolLM2, 2 threads).
        if splits_by_tokens(n_tok, threads) {
            self.matmuls_by_columns(pool, jobs, n_tok, acts);
            if let Some(lu) = lora {
                self.lora_after(pool, jobs, x, lu);
            }
            return;
        }
        // Each task writes its rows of every token straight into the
        // token-major output (`gemm_strided`, column stride `n_out`).
        //
        // Several tokens take one chunk per thread per matrix: every task
        // rewrites all the activation columns for its kernel, which costs
        // more than finer chunks save in balance (8 streams of SmolLM2, 2
        // threads: 425-432 t/s with four chunks per thread, 430-440 with
        // two, 451-462 with one; beside a busy process, 221 against 227).
        // Decode keeps four per thread.
        let mut tasks = Vec::new();
        for (j, (w, _)) in jobs.iter().enumerate() {
            let chunk = row_chunk(w.n_out, n_tok, threads, 4);
            for start in (0..w.n_out).step_by(chunk) {
                tasks.push(Task::Base {
                    job: j,
                    rows: start..(start + chunk).min(w.n_out),
                });
            }
        }
        let n_in = jobs.first().map_or(0, |(w, _)| w.n_in);
        let plan = LoraPlan::new(lora, jobs.len());
        if let Some(lu) = lora {
            tasks.extend(
                plan.down_chunks(lu, threads)
                    .map(|(group, toks)| Task::LoraDown { group, toks }),
            );
        }
        let mut t_all = vec![0f32; plan.t_len];
        let shared_t = SharedMut::new(&mut t_all);
        let outs: Vec<(&Matrix, SharedMut<f32>)> = jobs
            .iter_mut()
            .map(|(w, out)| (*w, SharedMut::new(out)))
            .collect();
        pool.run(tasks.len(), &|i| {
            let (j, rows) = match &tasks[i] {
                Task::Base { job, rows } => (*job, rows),
                Task::LoraDown { group, toks } => {
                    if let Some(lu) = lora {
                        lora_down(&plan, lu, x, n_in, *group, toks.clone(), &shared_t);
                    }
                    return;
                }
            };
            let (w, ref out) = outs[j];
            let xq = acts.find(k::vec_dot_type(w.ty));
            // SAFETY: the tasks of matrix j cover disjoint row ranges.
            unsafe { self.gemm_rows(w, rows.clone(), xq, n_tok, &acts.forms, out) };
        });
        if let Some(lu) = lora {
            if !plan.parts.is_empty() {
                self.lora_up(pool, &plan, lu, &t_all, &outs);
            }
        }
    }

    /// Gate and up for a small batch (decode), with the gated activation
    /// and its quantisation for the down matrix done by the same tasks, so
    /// neither runs on one thread between the passes. Each task takes the
    /// same rows of both matrices for every token, then applies the
    /// activation to those rows and quantises their blocks into `acts`
    /// (cleared, then holding only the down matrix's input).
    ///
    /// The numbers are those of [`Self::matmuls`] followed by [`gated`] and
    /// the down matrix's quantisation: the activation is elementwise (its
    /// SIMD lanes see whole multiples of eight elements either way) and
    /// quantisation works block by block, so row chunks aligned to both
    /// give the same bits. Returns false, having done nothing, where that
    /// does not hold or where adapters must first add into gate and up.
    #[allow(clippy::too_many_arguments)]
    fn gated_in_pass(
        &self,
        pool: &ThreadPool,
        layer: &Layer,
        x: &[f32],
        n_tok: usize,
        gate: &mut [f32],
        up: &mut [f32],
        acts: &mut ActCache,
        lora: Option<LoraUse>,
    ) -> bool {
        let (wg, wu, wd) = (&layer.w_gate, &layer.w_up, &layer.w_down);
        let threads = pool.n_threads();
        let n_ff = wg.n_out;
        let down_ty = k::vec_dot_type(wd.ty);
        // Whole quantisation blocks, and whole eight-lane vectors of the activation.
        let align = down_ty.block_size().max(8).next_multiple_of(8);
        if lora.is_some()
            || splits_by_tokens(n_tok, threads)
            || wu.n_out != n_ff
            || wd.n_in != n_ff
            || !n_ff.is_multiple_of(align)
        {
            return false;
        }
        acts.ensure(pool, k::vec_dot_type(wg.ty), x, wg.n_in, n_tok);
        acts.ensure(pool, k::vec_dot_type(wu.ty), x, wu.n_in, n_tok);
        let chunk = row_chunk(n_ff, n_tok, threads, align);
        let rb = k::row_bytes(down_ty, n_ff);
        let mut down_in = vec![0u8; rb * n_tok];
        {
            let acts = &*acts;
            let (xg, xu) = (
                acts.find(k::vec_dot_type(wg.ty)),
                acts.find(k::vec_dot_type(wu.ty)),
            );
            let (gs, us, ds) = (
                SharedMut::new(gate),
                SharedMut::new(up),
                SharedMut::new(&mut down_in),
            );
            pool.run(n_ff.div_ceil(chunk), &|i| {
                let rows = i * chunk..((i + 1) * chunk).min(n_ff);
                let len = rows.len();
                // SAFETY: rows `rows` of gate and up belong to this task alone.
                unsafe {
                    self.gemm_rows(wg, rows.clone(), xg, n_tok, &acts.forms, &gs);
                    self.gemm_rows(wu, rows.clone(), xu, n_tok, &acts.forms, &us);
                }
                let (b0, b1) = (
                    k::row_bytes(down_ty, rows.start),
                    k::row_bytes(down_ty, rows.end),
                );
                for t in 0..n_tok {
                    let at = t * n_ff + rows.start;
                    // SAFETY: as above; the gemm calls have returned, so these
                    // are the only references to this task's floats and bytes.
                    let (g, u, q) = unsafe {
                        (
                            gs.slice(at..at + len),
                            &*us.slice(at..at + len),
                            ds.slice(t * rb + b0..t * rb + b1),
                        )
                    };
                    gated(self.hp.activation, g, u);
                    k::quantize_row(down_ty, g, q);
                }
            });
        }
        acts.clear();
        acts.entries.push((down_ty, down_in));
        true
    }

    /// Rows `rows` of `w` against the `n_tok` activation columns `xq`,
    /// written into those rows of every token of the token-major `out`
    /// (`n_tok` rows of `w.n_out`), straight from the kernel; the tokens in
    /// `forms` take those float orders ([`k::Rows`]), the rest the one-row
    /// ones.
    ///
    /// # Safety
    /// No other task may touch rows `rows` of `out` during the call.
    unsafe fn gemm_rows(
        &self,
        w: &Matrix,
        rows: std::ops::Range<usize>,
        xq: &[u8],
        n_tok: usize,
        forms: &[(std::ops::Range<usize>, k::Rows)],
        out: &SharedMut<f32>,
    ) {
        let xb = k::row_bytes(k::vec_dot_type(w.ty), w.n_in);
        for (cols, form) in form_runs(w.ty, 0..n_tok, forms) {
            // SAFETY: `ptr_at` checks that the run's last token's rows are
            // inside `out`; the caller owns these rows of every token.
            unsafe {
                let y = out.ptr_at(
                    cols.start * w.n_out + rows.start,
                    (cols.len() - 1) * w.n_out + rows.len(),
                );
                let x = &xq[cols.start * xb..cols.end * xb];
                k::gemm_strided(
                    w.ty,
                    w.n_in,
                    self.weights(w),
                    rows.clone(),
                    x,
                    cols.len(),
                    y,
                    w.n_out,
                    form,
                );
            }
        }
    }

    /// Both LoRA passes after a base product that ran on its own (the
    /// prefill split by tokens): `T = X_g·Aᵀ` per group and token chunk,
    /// then [`Self::lora_up`]. The arithmetic per token is the same as when
    /// the first pass shares the base's pool pass, so results do not depend
    /// on which split a batch took.
    fn lora_after(
        &self,
        pool: &ThreadPool,
        jobs: &mut [(&Matrix, &mut [f32])],
        x: &[f32],
        lu: LoraUse,
    ) {
        let plan = LoraPlan::new(Some(lu), jobs.len());
        if plan.parts.is_empty() {
            return;
        }
        let n_in = jobs.first().map_or(0, |(w, _)| w.n_in);
        let tasks: Vec<_> = plan.down_chunks(lu, pool.n_threads()).collect();
        let mut t_all = vec![0f32; plan.t_len];
        let shared_t = SharedMut::new(&mut t_all);
        pool.run(tasks.len(), &|i| {
            let (g, ref toks) = tasks[i];
            lora_down(&plan, lu, x, n_in, g, toks.clone(), &shared_t);
        });
        let outs: Vec<(&Matrix, SharedMut<f32>)> = jobs
            .iter_mut()
            .map(|(w, out)| (*w, SharedMut::new(out)))
            .collect();
        self.lora_up(pool, &plan, lu, &t_all, &outs);
    }

    /// The second LoRA pass: `out[t][o] += s · B[o] · T[t]` for each part's
    /// tokens, split over output rows.
    fn lora_up(
        &self,
        pool: &ThreadPool,
        plan: &LoraPlan,
        lu: LoraUse,
        t_all: &[f32],
        outs: &[(&Matrix, SharedMut<f32>)],
    ) {
        let threads = pool.n_threads();
        let mut tasks = Vec::new();
        for (pi, p) in plan.parts.iter().enumerate() {
            let chunk = crate::pool::chunk_size(p.m.n_out, threads, 64, 8);
            for start in (0..p.m.n_out).step_by(chunk) {
                tasks.push((pi, start..(start + chunk).min(p.m.n_out)));
            }
        }
        pool.run(tasks.len(), &|i| {
            let (pi, ref rows) = tasks[i];
            let p = &plan.parts[pi];
            let toks = &lu.groups[p.group].toks;
            let (r, n_out) = (p.m.rank, p.m.n_out);
            let out = &outs[p.job].1;
            LORA_U.with(|cell| {
                let mut u = cell.borrow_mut();
                u.resize(rows.len(), 0.0);
                for (c, &tok) in toks.iter().enumerate() {
                    let t = &t_all[p.t_off + c * r..p.t_off + (c + 1) * r];
                    p.m.up(rows.clone(), t, lu.toks[tok].forms.batched, &mut u);
                    let base = tok * n_out;
                    // SAFETY: these rows of token `tok`'s output belong to
                    // this task alone: groups hold disjoint tokens and a
                    // part's row chunks do not overlap.
                    let dst = unsafe { out.slice(base + rows.start..base + rows.end) };
                    for (d, v) in dst.iter_mut().zip(u.iter()) {
                        *d += p.m.scale * v;
                    }
                }
            });
        });
    }

    /// Prefill-sized [`Self::matmuls`]: each task takes every row of one
    /// matrix for a run of tokens. gemm's `[column][row]` output for tokens
    /// `c0..c1` is exactly those tokens' output rows, so it is written in
    /// place (no scratch, no scatter), and each token's activations are
    /// prepared by one task only.
    fn matmuls_by_columns(
        &self,
        pool: &ThreadPool,
        jobs: &mut [(&Matrix, &mut [f32])],
        n_tok: usize,
        acts: &ActCache,
    ) {
        // At most 256 tokens a task: the kernels' per-thread scratch for the
        // prepared activations grows with the tokens of one call.
        let chunk = crate::pool::chunk_size(n_tok, pool.n_threads(), 4, 4).min(256);
        let mut tasks = Vec::new();
        for j in 0..jobs.len() {
            for c0 in (0..n_tok).step_by(chunk) {
                tasks.push((j, c0..(c0 + chunk).min(n_tok)));
            }
        }
        let outs: Vec<(&Matrix, SharedMut<f32>)> = jobs
            .iter_mut()
            .map(|(w, out)| (*w, SharedMut::new(out)))
            .collect();
        pool.run(tasks.len(), &|i| {
            let (j, ref cols) = tasks[i];
            let (w, ref out) = outs[j];
            let xb = k::row_bytes(k::vec_dot_type(w.ty), w.n_in);
            let xq = &acts.find(k::vec_dot_type(w.ty))[cols.start * xb..cols.end * xb];
            // SAFETY: the tasks of matrix j cover disjoint token ranges, so
            // disjoint output rows.
            let y = unsafe { out.slice(cols.start * w.n_out..cols.end * w.n_out) };
            for (run, form) in form_runs(w.ty, cols.clone(), &acts.forms) {
                let (a, b) = (run.start - cols.start, run.end - cols.start);
                k::gemm_rows(
                    w.ty,
                    w.n_in,
                    self.weights(w),
                    0..w.n_out,
                    &xq[a * xb..b * xb],
                    run.len(),
                    &mut y[a * w.n_out..b * w.n_out],
                    form,
                );
            }
        });
    }

    /// Per-token work on the fresh queries and keys: QK norms, RoPE (one
    /// angle table per token, shared by its heads) and query scaling.
    /// Tokens are independent, so they are spread over the pool.
    fn position_heads(
        &self,
        pool: &ThreadPool,
        layer: &Layer,
        toks: &[Tok],
        q: &mut [f32],
        kk: &mut [f32],
    ) {
        let hp = &self.hp;
        let q_dim = hp.n_head * hp.head_dim_k;
        let k_dim = hp.n_head_kv * hp.head_dim_k;
        let (qs, ks) = (SharedMut::new(q), SharedMut::new(kk));
        pool.for_chunks(toks.len(), 4, 1, &|range| {
            let mut cos_sin = vec![0f32; hp.n_rot];
            for ti in range {
                k::rope_cache(toks[ti].pos, hp.n_rot, layer.rope_base, &mut cos_sin);
                // SAFETY: token ti's query and key rows belong to this chunk alone.
                let qrow = unsafe { qs.slice(ti * q_dim..(ti + 1) * q_dim) };
                // SAFETY: as above.
                let krow = unsafe { ks.slice(ti * k_dim..(ti + 1) * k_dim) };
                for head in qrow.chunks_exact_mut(hp.head_dim_k) {
                    if let Some(w) = &layer.q_norm {
                        k::rms_norm_inplace(head, w, hp.rms_eps);
                    }
                    k::rope_apply(head, &cos_sin, hp.rope_neox);
                    if let Some(s) = hp.q_scale {
                        k::scale_inplace(head, s);
                    }
                }
                for head in krow.chunks_exact_mut(hp.head_dim_k) {
                    if let Some(w) = &layer.k_norm {
                        k::rms_norm_inplace(head, w, hp.rms_eps);
                    }
                    k::rope_apply(head, &cos_sin, hp.rope_neox);
                }
            }
        });
    }

    /// Causal (and, for windowed layers, sliding-window) attention of every
    /// token of the batch over its own sequence's cache, in llama.cpp's
    /// flash attention arithmetic, which has two forms; the cache says which
    /// positions take which ([`KvCache::plan_prompt`]), so the choice never
    /// depends on the batch:
    /// - one row at a time ([`Self::attend_row`]): one task per (token, KV
    ///   head);
    /// - tiled ([`Self::attend_tiled`]): one task per (run of up to
    ///   [`k::ATTN_TILE`] consecutive positions of one sequence, KV head).
    ///
    /// Either way a task serves all the query heads that share its KV head
    /// while the group's keys and values are hot in cache, and every row's
    /// arithmetic depends only on its own query and its sequence's keys.
    /// Tiled tasks are handed out largest first (the later positions of a
    /// prompt see the most keys) so that no thread is left with a big one
    /// at the end.
    ///
    /// Blocks hold every layer, so a sliding-window layer cannot free the
    /// blocks behind its window while global layers still read them.
    fn attention(
        &self,
        pool: &ThreadPool,
        li: usize,
        toks: &[Tok],
        caches: &[&KvCache],
        q: &[f32],
        att: &mut [f32],
    ) {
        let n_kv = self.hp.n_head_kv;
        let mut rows: Vec<usize> = Vec::new();
        let mut tiled: Vec<std::ops::Range<usize>> = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            let t = toks[i];
            let mut j = i + 1;
            if t.forms.tiled {
                while j < toks.len()
                    && j - i < k::ATTN_TILE
                    && toks[j].forms.tiled
                    && toks[j].item == t.item
                {
                    j += 1;
                }
                tiled.push(i..j);
            } else {
                rows.push(i);
            }
            i = j;
        }
        let shared_att = SharedMut::new(att);
        let n_tiled = tiled.len() * n_kv;
        pool.run(n_tiled + rows.len() * n_kv, &|task| {
            if task < n_tiled {
                let u = tiled.len() - 1 - task / n_kv;
                self.attend_tiled(
                    li,
                    toks,
                    tiled[u].clone(),
                    task % n_kv,
                    caches,
                    q,
                    &shared_att,
                );
            } else {
                let t = task - n_tiled;
                self.attend_row(li, toks, rows[t / n_kv], t % n_kv, caches, q, &shared_att);
            }
        });
    }

    /// Token `ti`'s query heads of KV head `kvh`, one row at a time
    /// ([`k::attn_online_f16`]): the query rounded to F16, keys taken one at
    /// a time in order with a running softmax, values summed into an F16
    /// accumulator. Keys and values are read block by block from the
    /// cache's block table (in each block, one KV head's rows are one
    /// contiguous run); the running state carries from one block's run of
    /// keys to the next, so a paged cache gives bit-identical results to
    /// one contiguous buffer. A token whose forms split the keys
    /// ([`crate::Forms::kv_chunk`]) runs each range of cells with its own
    /// state and merges them ([`k::attn_online_merge`]).
    #[allow(clippy::too_many_arguments)]
    fn attend_row(
        &self,
        li: usize,
        toks: &[Tok],
        ti: usize,
        kvh: usize,
        caches: &[&KvCache],
        q: &[f32],
        att: &SharedMut<f32>,
    ) {
        let hp = &self.hp;
        let (hdk, hdv) = (hp.head_dim_k, hp.head_dim_v);
        let group = hp.n_head / hp.n_head_kv;
        let tok = toks[ti];
        let cache = caches[tok.item];
        let spans = KeySpans {
            next: self.first_key(li, tok.pos),
            end: tok.pos + 1,
            block: cache.geometry().block_positions,
        };
        let heads = kvh * group..(kvh + 1) * group;
        // The group's query heads, one after another.
        let q_group = &q[ti * hp.n_head * hdk + heads.start * hdk..][..group * hdk];
        prefetch_head(cache, li, kvh, &spans, hdk, hdv);
        let start = ti * hp.n_head * hdv + heads.start * hdv;
        // SAFETY: the task for (ti, kvh) alone writes the slices of token
        // ti's heads in this KV head's group.
        let out = unsafe { att.slice(start..start + group * hdv) };
        // The key ranges, each with its own running softmax: one, or
        // llama.cpp's split-KV ranges of `kv_chunk` cells from cell 0.
        let chunk = match tok.forms.kv_chunk {
            0 => usize::MAX,
            c => c,
        };
        let n_parts = spans.end.div_ceil(chunk).max(1);
        ONLINE.with(|cell| {
            let (q16, acc, states) = &mut *cell.borrow_mut();
            for h in 0..group {
                q16.clear();
                q16.extend(
                    q_group[h * hdk..(h + 1) * hdk]
                        .iter()
                        .map(|&v| f16::from_f32(v)),
                );
                acc.clear();
                acc.resize(n_parts * hdv, f16::ZERO);
                states.clear();
                states.resize(n_parts, (f32::NEG_INFINITY, 0f32));
                for (part, (state, acc)) in states.iter_mut().zip(acc.chunks_mut(hdv)).enumerate() {
                    let range = KeySpans {
                        next: spans.next.max(part.saturating_mul(chunk)),
                        end: spans.end.min(part.saturating_add(1).saturating_mul(chunk)),
                        block: spans.block,
                    };
                    for (b, slot, len) in range {
                        let key_rows = &cache.key_rows(li, b, kvh)[slot * hdk..];
                        let value_rows = &cache.value_rows(li, b, kvh)[slot * hdv..];
                        let run = k::KvRun {
                            keys: key_rows,
                            k_stride: hdk,
                            values: value_rows,
                            v_stride: hdv,
                            n: len,
                        };
                        k::attn_online_f16(q16, run, hp.kq_scale, state, acc);
                    }
                }
                let out = &mut out[h * hdv..(h + 1) * hdv];
                if n_parts == 1 {
                    k::attn_online_finish(states[0], acc, out);
                } else {
                    k::attn_online_merge(states, acc, out);
                }
            }
        });
    }

    /// Tokens `run` (consecutive positions of one sequence) and their query
    /// heads of KV head `kvh`, tiled ([`k::attn_tile_row`]): the keys are
    /// taken in tiles of [`k::ATTN_TILE`] positions starting at multiples of
    /// it, as llama.cpp's tiles start in a sequence's cache; each tile is
    /// widened to F32 once (keys transposed) and serves every row and query
    /// head of the run. The rows' F32 queries, accumulators and running
    /// states live in thread-local scratch.
    #[allow(clippy::too_many_arguments)]
    fn attend_tiled(
        &self,
        li: usize,
        toks: &[Tok],
        run: std::ops::Range<usize>,
        kvh: usize,
        caches: &[&KvCache],
        q: &[f32],
        att: &SharedMut<f32>,
    ) {
        const T: usize = k::ATTN_TILE;
        let hp = &self.hp;
        let (hdk, hdv) = (hp.head_dim_k, hp.head_dim_v);
        let group = hp.n_head / hp.n_head_kv;
        let n = run.len();
        let cache = caches[toks[run.start].item];
        let bp = cache.geometry().block_positions;
        let p0 = toks[run.start].pos;
        let end = p0 + n;
        let kv_first = self.first_key(li, p0);
        TILED.with(|cell| {
            let scratch = &mut *cell.borrow_mut();
            scratch.keys_t.resize(hdk * T, 0.0);
            scratch.values.resize(T * hdv, 0.0);
            scratch.key.resize(hdk, 0.0);
            scratch.acc.clear();
            scratch.acc.resize(group * n * hdv, 0.0);
            scratch.state.clear();
            scratch.state.resize(group * n, (f32::NEG_INFINITY, 0.0));
            for t0 in (kv_first / T * T..end).step_by(T) {
                // Only keys some row can see are widened; the kernel never
                // reads the others.
                for p in kv_first.max(t0)..end.min(t0 + T) {
                    let (b, slot, j) = (p / bp, p % bp, p - t0);
                    let key = &cache.key_rows(li, b, kvh)[slot * hdk..][..hdk];
                    key.convert_to_f32_slice(&mut scratch.key);
                    for (d, &x) in scratch.key.iter().enumerate() {
                        scratch.keys_t[d * T + j] = x;
                    }
                    let value = &cache.value_rows(li, b, kvh)[slot * hdv..][..hdv];
                    value.convert_to_f32_slice(&mut scratch.values[j * hdv..][..hdv]);
                }
                let tile = k::KvTile {
                    keys_t: &scratch.keys_t,
                    values: &scratch.values,
                };
                for h in 0..group {
                    let head = kvh * group + h;
                    for r in 0..n {
                        let p = p0 + r;
                        let (lo, hi) = (self.first_key(li, p).max(t0), (p + 1).min(t0 + T));
                        if lo >= hi {
                            continue;
                        }
                        let ti = run.start + r;
                        let qrow = &q[(ti * hp.n_head + head) * hdk..][..hdk];
                        let i = h * n + r;
                        k::attn_tile_row(
                            qrow,
                            tile,
                            lo - t0..hi - t0,
                            hp.kq_scale,
                            &mut scratch.state[i],
                            &mut scratch.acc[i * hdv..][..hdv],
                        );
                    }
                }
            }
            for r in 0..n {
                let ti = run.start + r;
                let start = (ti * hp.n_head + kvh * group) * hdv;
                // SAFETY: the task for (run, kvh) alone writes the slices of
                // the run's tokens' heads in this KV head's group.
                let out = unsafe { att.slice(start..start + group * hdv) };
                for h in 0..group {
                    let i = h * n + r;
                    k::attn_tile_finish(
                        scratch.state[i],
                        &scratch.acc[i * hdv..][..hdv],
                        &mut out[h * hdv..(h + 1) * hdv],
                    );
                }
            }
        });
    }

    /// The first key position that position `pos` sees in layer `li`.
    fn first_key(&self, li: usize, pos: usize) -> usize {
        match self.layers[li].window {
            Some(w) => (pos + 1).saturating_sub(w),
            None => 0,
        }
    }
}

/// The runs of consecutive keys `next..end` that lie in one block each, as
/// (block, first slot in it, keys).
#[derive(Clone)]
struct KeySpans {
    next: usize,
    end: usize,
    block: usize,
}

impl Iterator for KeySpans {
    type Item = (usize, usize, usize);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let (b, slot) = (self.next / self.block, self.next % self.block);
        let len = (self.block - slot).min(self.end - self.next);
        self.next += len;
        Some((b, slot, len))
    }
}

/// Puts a reusable buffer back for the next call, unless it is larger than
/// a decode step needs (a perplexity pass's logits run to hundreds of MiB,
/// which must not stay resident outside the memory governor's view).
fn keep(slot: &'static std::thread::LocalKey<std::cell::Cell<Vec<f32>>>, v: Vec<f32>) {
    const MAX_KEPT: usize = 16 << 20;
    if v.capacity() * std::mem::size_of::<f32>() <= MAX_KEPT {
        slot.set(v);
    }
}

/// A one-row attention task's query head in F16, and per key range its F16
/// value accumulator and running state ([`Transformer::attend_row`]).
type OnlineScratch = (Vec<f16>, Vec<f16>, Vec<(f32, f32)>);

/// A tiled attention task's working set ([`Transformer::attend_tiled`]).
#[derive(Default)]
struct TiledScratch {
    /// The current key tile, transposed, in F32.
    keys_t: Vec<f32>,
    /// The current value tile in F32.
    values: Vec<f32>,
    /// One key row widened before it is transposed.
    key: Vec<f32>,
    /// Per (query head, row): the F32 accumulator and the running state.
    acc: Vec<f32>,
    state: Vec<(f32, f32)>,
}

thread_local! {
    static TILED: std::cell::RefCell<TiledScratch> = std::cell::RefCell::new(TiledScratch::default());
    static ONLINE: std::cell::RefCell<OnlineScratch> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
    /// The logits of the wanted rows before they are split per item.
    static LOGITS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// Logits vectors handed back by [`Transformer::recycle_logits`] for
    /// the next pass's output (the forward pass's own thread).
    static SPARE_ROWS: std::cell::Cell<Vec<Vec<f32>>> = const { std::cell::Cell::new(Vec::new()) };
    /// A LoRA task's `B·t` rows for one token before they are scaled into the output.
    static LORA_U: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One task of a matmul pass.
enum Task {
    /// Rows `rows` of job `job`'s base matmul, for every token.
    Base {
        job: usize,
        rows: std::ops::Range<usize>,
    },
    /// `T = X·Aᵀ` for positions `toks` of adapter group `group`, every job.
    LoraDown {
        group: usize,
        toks: std::ops::Range<usize>,
    },
}

/// One (adapter group, job) whose adapter adapts that job's matrix.
struct LoraPart<'a> {
    group: usize,
    job: usize,
    m: &'a LoraMatrix,
    /// Where its `T` (group tokens × rank) starts in the pass's buffer.
    t_off: usize,
}

/// The first LoRA product for tokens `toks` (indices into group `group`'s
/// tokens): `T = X·Aᵀ` for every part of the plan in that group, written to
/// that part's rows of the pass's `T` buffer.
fn lora_down(
    plan: &LoraPlan,
    lu: LoraUse,
    x: &[f32],
    n_in: usize,
    group: usize,
    toks: std::ops::Range<usize>,
    shared_t: &SharedMut<f32>,
) {
    let idx = &lu.groups[group].toks[toks.clone()];
    for p in plan.parts.iter().filter(|p| p.group == group) {
        let r = p.m.rank;
        let at = p.t_off + toks.start * r;
        // SAFETY: each (part, token chunk) owns its own rows of `t_all`.
        let t = unsafe { shared_t.slice(at..at + toks.len() * r) };
        for (&tok, t) in idx.iter().zip(t.chunks_exact_mut(r)) {
            p.m.down(
                &x[tok * n_in..(tok + 1) * n_in],
                lu.toks[tok].forms.batched,
                t,
            );
        }
    }
}

struct LoraPlan<'a> {
    parts: Vec<LoraPart<'a>>,
    t_len: usize,
}

impl<'a> LoraPlan<'a> {
    fn new(lora: Option<LoraUse<'a>>, n_jobs: usize) -> LoraPlan<'a> {
        let mut parts = Vec::new();
        let mut t_len = 0;
        if let Some(lu) = lora {
            debug_assert_eq!(lu.roles.len(), n_jobs);
            for (g, grp) in lu.groups.iter().enumerate() {
                for (j, &role) in lu.roles.iter().enumerate() {
                    if let Some(m) = grp.adapter.matrix(lu.layer, role) {
                        parts.push(LoraPart {
                            group: g,
                            job: j,
                            m,
                            t_off: t_len,
                        });
                        t_len += grp.toks.len() * m.rank;
                    }
                }
            }
        }
        LoraPlan { parts, t_len }
    }

    /// The first LoRA product's tasks: (group, chunk of its tokens) for
    /// every group the plan has parts in.
    fn down_chunks(
        &self,
        lu: LoraUse<'a>,
        threads: usize,
    ) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> + '_ {
        lu.groups
            .iter()
            .enumerate()
            .filter(|(g, _)| self.parts.iter().any(|p| p.group == *g))
            .flat_map(move |(g, grp)| {
                let n = grp.toks.len();
                let chunk = crate::pool::chunk_size(n, threads, 4, 1);
                (0..n)
                    .step_by(chunk.max(1))
                    .map(move |start| (g, start..(start + chunk).min(n)))
            })
    }
}

/// Activations quantised for the matrices that read them, kept per format so
/// that Q, K and V (or gate and up) quantise their shared input once.
#[derive(Default)]
struct ActCache {
    entries: Vec<(GgmlType, Vec<u8>)>,
    /// The pass's runs of consecutive tokens that take batched K-quant
    /// float orders ([`k::Rows`]), sorted; tokens outside them take the
    /// one-row orders (not touched by [`ActCache::clear`]).
    forms: Vec<(std::ops::Range<usize>, k::Rows)>,
}

impl ActCache {
    fn clear(&mut self) {
        self.entries.clear();
    }

    fn find(&self, ty: GgmlType) -> &[u8] {
        &self
            .entries
            .iter()
            .find(|(t, _)| *t == ty)
            .expect("quantised by ensure() before use")
            .1
    }

    fn ensure(&mut self, pool: &ThreadPool, ty: GgmlType, x: &[f32], n: usize, n_tok: usize) {
        if self.entries.iter().any(|(t, _)| *t == ty) {
            return;
        }
        let rb = ty.row_bytes(n).expect("matrix widths are whole blocks");
        let mut buf = vec![0u8; rb * n_tok];
        let out = SharedMut::new(&mut buf);
        pool.for_chunks(n_tok, 16, 1, &|rows| {
            for t in rows {
                // SAFETY: row t of the buffer belongs to this chunk alone.
                let dst = unsafe { out.slice(t * rb..(t + 1) * rb) };
                k::quantize_row(ty, &x[t * n..(t + 1) * n], dst);
            }
        });
        self.entries.push((ty, buf));
    }
}

/// The runs of consecutive tokens with the same batched K-quant float
/// orders, leaving out the one-row tokens.
fn batched_runs(toks: &[Tok]) -> Vec<(std::ops::Range<usize>, k::Rows)> {
    let mut runs: Vec<(std::ops::Range<usize>, k::Rows)> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if t.forms.rows == k::Rows::SINGLE {
            continue;
        }
        match runs.last_mut() {
            Some((r, f)) if r.end == i && *f == t.forms.rows => r.end = i + 1,
            _ => runs.push((i..i + 1, t.forms.rows)),
        }
    }
    runs
}

/// `cols` split where the float order changes: runs inside `forms` take
/// their orders, the rest [`k::Rows::SINGLE`]. Formats whose order does not
/// depend on the batch get `cols` whole. An iterator, so the matmuls' hot
/// path allocates nothing.
fn form_runs<'a>(
    ty: GgmlType,
    cols: std::ops::Range<usize>,
    forms: &'a [(std::ops::Range<usize>, k::Rows)],
) -> FormRuns<'a> {
    FormRuns {
        at: cols.start,
        end: cols.end,
        forms: if k::Rows::matters_for(ty) { forms } else { &[] },
    }
}

/// See [`form_runs`].
struct FormRuns<'a> {
    at: usize,
    end: usize,
    /// The runs not yet passed, sorted.
    forms: &'a [(std::ops::Range<usize>, k::Rows)],
}

impl Iterator for FormRuns<'_> {
    type Item = (std::ops::Range<usize>, k::Rows);

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.end {
            return None;
        }
        while let Some(((run, _), rest)) = self.forms.split_first() {
            if run.end > self.at {
                break;
            }
            self.forms = rest;
        }
        let (to, form) = match self.forms.first() {
            Some((run, form)) if run.start <= self.at => (run.end.min(self.end), *form),
            Some((run, _)) => (run.start.min(self.end), k::Rows::SINGLE),
            None => (self.end, k::Rows::SINGLE),
        };
        let out = self.at..to;
        self.at = to;
        Some((out, form))
    }
}

/// The largest pass whose KV slots are asked for ahead of their write
/// ([`KvCache::prefetch_slot`]; eight decoding sequences of SmolLM2, 2
/// threads, median of four alternating runs: 526 -> 542 t/s).
const PREFETCH_SLOTS_UP_TO: usize = 32;

/// Positions whose keys and values an attention task asks the CPU to
/// fetch up front ([`prefetch_head`]): 128 positions of SmolLM2's 64-wide
/// heads are 16 KiB of keys and as much of values, which L1 holds.
const PREFETCH_POSITIONS: usize = 128;

/// Asks for the first [`PREFETCH_POSITIONS`] keys and values one attention
/// task reads (KV head `kvh` of layer `li`), before it starts on them.
/// Each block holds a head's run of 4 KiB or so, too short for the hardware
/// prefetcher to get going before the run ends, so in decode (a few dozen
/// to a few hundred positions a task) attention was waiting on memory:
/// asking for all of it at once overlaps those waits (8 streams of SmolLM2,
/// 2 threads, median of seven alternating runs: 575 -> 586 t/s). Longer
/// histories are only partly asked for; the rest streams from the blocks'
/// long runs as before.
fn prefetch_head(cache: &KvCache, li: usize, kvh: usize, spans: &KeySpans, hdk: usize, hdv: usize) {
    let mut left = PREFETCH_POSITIONS;
    for (b, slot, len) in spans.clone() {
        let n = len.min(left);
        k::prefetch(&cache.key_rows(li, b, kvh)[slot * hdk..][..n * hdk]);
        k::prefetch(&cache.value_rows(li, b, kvh)[slot * hdv..][..n * hdv]);
        left -= n;
        if left == 0 {
            break;
        }
    }
}

/// RMS norm of every row of `x` into `out`, rows spread over the pool.
fn rms_rows(pool: &ThreadPool, x: &[f32], w: &[f32], eps: f32, out: &mut [f32], d: usize) {
    let shared = SharedMut::new(out);
    pool.for_chunks(x.len() / d, 16, 1, &|rows| {
        // SAFETY: these rows of `out` belong to this chunk alone.
        let o = unsafe { shared.slice(rows.start * d..rows.end * d) };
        for (xr, or) in x[rows.start * d..rows.end * d]
            .chunks_exact(d)
            .zip(o.chunks_exact_mut(d))
        {
            k::rms_norm(xr, w, eps, or);
        }
    });
}

fn rms_rows_inplace(pool: &ThreadPool, x: &mut [f32], w: &[f32], eps: f32, d: usize) {
    let n_rows = x.len() / d;
    let shared = SharedMut::new(x);
    pool.for_chunks(n_rows, 16, 1, &|rows| {
        // SAFETY: these rows belong to this chunk alone.
        let xs = unsafe { shared.slice(rows.start * d..rows.end * d) };
        for xr in xs.chunks_exact_mut(d) {
            k::rms_norm_inplace(xr, w, eps);
        }
    });
}

/// Whether a pass of `n_tok` tokens splits its matmuls by token runs
/// ([`Transformer::matmuls_by_columns`]) rather than by rows.
fn splits_by_tokens(n_tok: usize, threads: usize) -> bool {
    n_tok >= 64 * threads
}

/// Rows per task when a matmul of `n` rows is split by rows: about four
/// chunks per thread for decode, one per thread for several tokens (see
/// [`Transformer::matmuls`]), a multiple of `align`.
fn row_chunk(n: usize, n_tok: usize, threads: usize, align: usize) -> usize {
    if n_tok == 1 {
        crate::pool::chunk_size(n, threads, 16, align)
    } else {
        crate::pool::chunk_size_in(n, threads, align, align)
    }
}

/// `gate = act(gate) · up`, elementwise.
fn gated(act: Activation, gate: &mut [f32], up: &[f32]) {
    match act {
        Activation::Silu => k::silu_mul_inplace(gate, up),
        Activation::GeluTanh => k::gelu_tanh_mul_inplace(gate, up),
    }
}

fn add_bias(x: &mut [f32], b: Option<&[f32]>) {
    if let Some(b) = b {
        for row in x.chunks_exact_mut(b.len()) {
            k::add_inplace(row, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pass's columns split where the K-quant float order changes, and
    /// only for the formats that have batched orders.
    #[test]
    fn form_runs_split_only_where_the_order_changes() {
        let quad = k::Rows {
            quad: true,
            wide: true,
        };
        let wide = k::Rows {
            quad: false,
            wide: true,
        };
        // Tokens 2..6 quad, 6..8 wide; the rest single.
        let forms = vec![(2..6, quad), (6..8, wide)];
        let single = k::Rows::SINGLE;
        let runs = |ty, cols, forms| form_runs(ty, cols, forms).collect::<Vec<_>>();
        assert_eq!(
            runs(GgmlType::Q4_K, 0..10, &forms),
            vec![(0..2, single), (2..6, quad), (6..8, wide), (8..10, single)]
        );
        assert_eq!(
            runs(GgmlType::Q6_K, 3..7, &forms),
            vec![(3..6, quad), (6..7, wide)]
        );
        assert_eq!(runs(GgmlType::Q6_K, 8..9, &forms), vec![(8..9, single)]);
        assert_eq!(runs(GgmlType::Q8_0, 0..10, &forms), vec![(0..10, single)]);
        assert_eq!(runs(GgmlType::Q4_K, 0..10, &[]), vec![(0..10, single)]);
        let toks: Vec<Tok> = [single, quad, quad, wide, single]
            .iter()
            .enumerate()
            .map(|(i, &rows)| Tok {
                item: 0,
                pos: i,
                forms: Forms {
                    tiled: false,
                    kv_chunk: 0,
                    batched: true,
                    rows,
                },
            })
            .collect();
        assert_eq!(batched_runs(&toks), vec![(1..3, quad), (3..4, wide)]);
    }
}
