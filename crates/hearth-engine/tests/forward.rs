//! Every architecture against the independent f32 reference, batch
//! invariance, and the errors the forward pass must raise.

mod common;

use std::sync::Arc;

use common::{Arch, N_VOCAB};
use hearth_engine::{BatchItem, EngineError, Model, Want};
use hearth_gguf::{GgmlType, GgufFile, GgufWriter, Value};

const TOKENS: [u32; 9] = [3, 17, 5, 39, 0, 22, 22, 8, 11];

fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn run_all(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(64);
    let mut items = [BatchItem {
        cache: &mut cache,
        tokens,
        want: Want::All,
        adapter: None,
    }];
    model.forward(&mut items).unwrap().remove(0)
}

/// Every sequence's logits at every position, all in one forward pass.
fn run_together(model: &Model, seqs: &[&[u32]]) -> Vec<Vec<f32>> {
    let mut caches: Vec<_> = seqs.iter().map(|_| model.new_cache(64)).collect();
    let mut items: Vec<BatchItem> = caches
        .iter_mut()
        .zip(seqs)
        .map(|(c, s)| BatchItem {
            cache: c,
            tokens: s,
            want: Want::All,
            adapter: None,
        })
        .collect();
    model.forward(&mut items).unwrap()
}

/// Relative logit error allowed against the plain f32 reference forward:
/// attention runs in F16 (query, cached keys and values, and the running
/// value sum, as llama.cpp's flash attention does), which costs ~1e-3;
/// a wrong RoPE pairing, norm or mask misses by whole percent.
const REL_TOL: f32 = 3e-3;

fn check_arch(arch: Arch) {
    let m = common::tiny(arch, 7);
    let reference = common::reference_logits(&m, &TOKENS);
    for threads in [1, 2] {
        let model = common::load(&m, GgmlType::F32, threads);
        // Whole prompt at once.
        let all = run_all(&model, &TOKENS);
        for (p, want) in reference.iter().enumerate() {
            let got = &all[p * N_VOCAB..(p + 1) * N_VOCAB];
            let err = max_rel_err(got, want);
            assert!(
                err < REL_TOL,
                "{arch:?} t={threads} pos {p}: relative error {err}"
            );
        }
        // Token by token through the cache gives the same numbers.
        let mut cache = model.new_cache(64);
        for (p, tok) in TOKENS.iter().enumerate() {
            let mut items = [BatchItem {
                cache: &mut cache,
                tokens: std::slice::from_ref(tok),
                want: Want::Last,
                adapter: None,
            }];
            let got = model.forward(&mut items).unwrap().remove(0);
            let err = max_rel_err(&got, &reference[p]);
            assert!(
                err < REL_TOL,
                "{arch:?} decode pos {p}: relative error {err}"
            );
        }
    }
}

#[test]
fn llama_matches_reference() {
    check_arch(Arch::Llama);
}

#[test]
fn qwen2_matches_reference() {
    check_arch(Arch::Qwen2);
}

#[test]
fn qwen3_matches_reference() {
    check_arch(Arch::Qwen3);
}

#[test]
fn gemma3_matches_reference() {
    check_arch(Arch::Gemma3);
}

/// A prompt planned as one ([`hearth_engine::KvCache::plan_one_call`]) of
/// at least 64 tokens takes the tiled attention arithmetic (F32
/// accumulator, keys in tiles of 64): every architecture still matches the
/// f32 reference at every position, across a tile boundary and (Gemma 3)
/// with sliding-window layers whose keys start inside a tile; and the
/// numbers are not the one-row form's, so the plan did choose the other
/// arithmetic.
#[test]
fn tiled_prompts_match_reference() {
    let tokens: Vec<u32> = (0..75).map(|i| (i * 13 + 7) % N_VOCAB as u32).collect();
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Gemma3] {
        let m = common::tiny(arch, 8);
        let reference = common::reference_logits(&m, &tokens);
        let model = common::load(&m, GgmlType::F32, 2);
        let run = |plan: bool| {
            let mut cache = model.new_cache(80);
            if plan {
                cache.plan_one_call(tokens.len());
                assert!((0..tokens.len()).all(|p| cache.forms_at(p).tiled));
            }
            let mut items = [BatchItem {
                cache: &mut cache,
                tokens: &tokens,
                want: Want::All,
                adapter: None,
            }];
            model.forward(&mut items).unwrap().remove(0)
        };
        let tiled = run(true);
        for (p, want) in reference.iter().enumerate() {
            let got = &tiled[p * N_VOCAB..(p + 1) * N_VOCAB];
            let err = max_rel_err(got, want);
            assert!(
                err < REL_TOL,
                "{arch:?} tiled pos {p}: relative error {err}"
            );
        }
        assert!(tiled != run(false), "{arch:?}: the plan changed nothing");
    }
}

/// Decoding past position 256, where llama.cpp splits a one-row batch's
/// keys between its threads and merges their softmaxes
/// ([`hearth_engine::Forms::one_row`]): every architecture still matches
/// the f32 reference (Gemma 3's windowed layers with a first range that
/// falls wholly outside the window). The bound is wider than [`REL_TOL`]
/// because the one-row form sums hundreds of values in F16, split or not
/// (0.006-0.009 here at positions 40-299 alike). And the split is taken:
/// Gemma 3's last four prompt positions, planned as llama-server batches
/// them (four rows, keys in one run), give other bits than the same
/// positions decoded.
#[test]
fn split_decoding_matches_reference() {
    const LONG_TOL: f32 = 2e-2;
    let tokens: Vec<u32> = (0..300).map(|i| (i * 29 + 3) % N_VOCAB as u32).collect();
    assert!(hearth_engine::Forms::one_row(299).kv_chunk > 0);
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Gemma3] {
        let m = common::tiny(arch, 8);
        let reference = common::reference_logits(&m, &tokens);
        let model = common::load(&m, GgmlType::F32, 2);
        let decode = |plan: bool| {
            let mut cache = model.new_cache(320);
            if plan {
                cache.plan_prompt(tokens.len());
            }
            let mut got = Vec::new();
            for t in &tokens {
                let mut items = [BatchItem {
                    cache: &mut cache,
                    tokens: std::slice::from_ref(t),
                    want: Want::Last,
                    adapter: None,
                }];
                got.push(model.forward(&mut items).unwrap().remove(0));
            }
            got
        };
        let got = decode(false);
        for (p, want) in reference.iter().enumerate() {
            let err = max_rel_err(&got[p], want);
            assert!(
                err < LONG_TOL,
                "{arch:?} decoding pos {p}: relative error {err}"
            );
        }
        if arch == Arch::Gemma3 {
            let planned = decode(true);
            assert!(planned[299] != got[299], "the split changed nothing");
        }
    }
}

#[test]
fn quantised_weights_stay_close_to_reference() {
    for arch in [Arch::Llama, Arch::Gemma3] {
        let m = common::tiny(arch, 11);
        let reference = common::reference_logits(&m, &TOKENS);
        for ty in [
            GgmlType::Q8_0,
            GgmlType::Q4_1,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            if ty.block_size() > common::N_EMBD {
                continue;
            }
            let model = common::load(&m, ty, 2);
            let all = run_all(&model, &TOKENS);
            let last = &all[(TOKENS.len() - 1) * N_VOCAB..];
            let err = max_rel_err(last, reference.last().unwrap());
            let bound = if ty == GgmlType::Q8_0 { 0.05 } else { 0.35 };
            assert!(err < bound, "{arch:?} {ty}: relative error {err}");
        }
    }
}

/// A sequence's logits are bit-identical alone or beside others, whatever
/// mixes of prefill and decode share the batch.
#[test]
fn batching_never_changes_an_answer() {
    for arch in [Arch::Llama, Arch::Gemma3] {
        let m = common::tiny(arch, 3);
        let model = common::load(&m, GgmlType::Q8_0, 2);
        let seqs: [&[u32]; 3] = [&TOKENS, &[1, 2, 3], &[30, 31, 32, 33, 34, 35]];
        let alone: Vec<Vec<f32>> = seqs.iter().map(|s| run_all(&model, s)).collect();
        let together = run_together(&model, &seqs);
        for i in 0..3 {
            assert!(
                alone[i] == together[i],
                "{arch:?} sequence {i} changed when batched"
            );
        }
        // Decode one more token for sequence 0 beside a fresh prefill of another.
        let mut c0 = model.new_cache(64);
        let mut first = [BatchItem {
            cache: &mut c0,
            tokens: &TOKENS[..8],
            want: Want::None,
            adapter: None,
        }];
        model.forward(&mut first).unwrap();
        let mut c1 = model.new_cache(64);
        let mut mixed = [
            BatchItem {
                cache: &mut c0,
                tokens: &TOKENS[8..],
                want: Want::Last,
                adapter: None,
            },
            BatchItem {
                cache: &mut c1,
                tokens: &[5, 6, 7, 8, 9],
                want: Want::Last,
                adapter: None,
            },
        ];
        let out = model.forward(&mut mixed).unwrap();
        let expect = &alone[0][8 * N_VOCAB..];
        assert!(
            out[0] == expect,
            "{arch:?}: decode beside a prefill changed the logits"
        );
    }
}

/// Prompts long enough for the prefill matmuls to split by token runs
/// (32 tokens and more on two threads; the runs cut through sequences):
/// each sequence's logits are the same alone (short ones split by rows)
/// or batched, for the quantised formats with their own prefill kernels.
#[test]
fn long_prompts_batch_like_short_ones() {
    let long: Vec<u32> = (0..61).map(|i| (i * 7 + 3) % N_VOCAB as u32).collect();
    let mid: Vec<u32> = (0..37).map(|i| (i * 5 + 1) % N_VOCAB as u32).collect();
    let short: Vec<u32> = (0..11).map(|i| (i * 3 + 2) % N_VOCAB as u32).collect();
    for (arch, ty) in [
        (Arch::Llama, GgmlType::Q4_1),
        (Arch::Gemma3, GgmlType::Q5_0),
        (Arch::Llama, GgmlType::Q8_0),
    ] {
        let m = common::tiny(arch, 4);
        let model = common::load(&m, ty, 2);
        let seqs: [&[u32]; 3] = [&long, &mid, &short];
        let alone: Vec<Vec<f32>> = seqs.iter().map(|s| run_all(&model, s)).collect();
        let together = run_together(&model, &seqs);
        for i in 0..3 {
            assert!(
                alone[i] == together[i],
                "{arch:?} {ty}: sequence {i} changed when batched"
            );
        }
    }
}

/// A prompt long enough for one pass to split its matmuls by tokens (and
/// run gate, up and the gated activation as separate steps) gives the same
/// bits as feeding it a few tokens at a time, where the small passes split
/// by rows and apply the activation and the down matrix's quantisation
/// inside the gate and up tasks.
#[test]
fn one_long_pass_equals_many_small_ones() {
    let tokens: Vec<u32> = (0..140).map(|i| (i * 11 + 5) % N_VOCAB as u32).collect();
    for (arch, ty) in [
        (Arch::Llama, GgmlType::Q4_1),
        (Arch::Gemma3, GgmlType::Q8_0),
        (Arch::Qwen3, GgmlType::F32),
    ] {
        let m = common::tiny(arch, 6);
        let model = common::load(&m, ty, 2);
        let mut whole = model.new_cache(160);
        let mut items = [BatchItem {
            cache: &mut whole,
            tokens: &tokens,
            want: Want::All,
            adapter: None,
        }];
        let expect = model.forward(&mut items).unwrap().remove(0);
        let mut cache = model.new_cache(160);
        let mut got = Vec::new();
        for part in tokens.chunks(9) {
            let mut items = [BatchItem {
                cache: &mut cache,
                tokens: part,
                want: Want::All,
                adapter: None,
            }];
            got.extend(model.forward(&mut items).unwrap().remove(0));
        }
        assert!(
            got == expect,
            "{arch:?} {ty}: small passes changed the logits"
        );
    }
}

#[test]
fn threads_do_not_change_results() {
    let m = common::tiny(Arch::Qwen2, 5);
    let one = run_all(&common::load(&m, GgmlType::Q8_0, 1), &TOKENS);
    let two = run_all(&common::load(&m, GgmlType::Q8_0, 2), &TOKENS);
    let three = run_all(&common::load(&m, GgmlType::Q8_0, 3), &TOKENS);
    assert!(one == two && two == three);
}

#[test]
fn context_overflow_is_an_error() {
    let model = common::load(&common::tiny(Arch::Llama, 1), GgmlType::F32, 1);
    let mut cache = model.new_cache(8);
    let mut items = [BatchItem {
        cache: &mut cache,
        tokens: &TOKENS,
        want: Want::Last,
        adapter: None,
    }];
    match model.forward(&mut items) {
        Err(EngineError::ContextFull {
            needed: 9,
            n_ctx: 8,
        }) => {}
        other => panic!("expected ContextFull, got {:?}", other.map(|_| ())),
    }
    assert_eq!(cache.len(), 0, "a refused batch leaves the cache as it was");
}

#[test]
fn bad_tokens_and_empty_items_are_errors() {
    let model = common::load(&common::tiny(Arch::Llama, 1), GgmlType::F32, 1);
    let mut cache = model.new_cache(8);
    let mut items = [BatchItem {
        cache: &mut cache,
        tokens: &[N_VOCAB as u32],
        want: Want::Last,
        adapter: None,
    }];
    assert!(matches!(
        model.forward(&mut items),
        Err(EngineError::BadToken { .. })
    ));
    let mut items = [BatchItem {
        cache: &mut cache,
        tokens: &[],
        want: Want::Last,
        adapter: None,
    }];
    assert!(matches!(
        model.forward(&mut items),
        Err(EngineError::EmptyItem)
    ));
}

fn rewrite(arch: Arch, f: impl Fn(&str, &Value) -> Option<Value>) -> Vec<u8> {
    let bytes = common::write_gguf(&common::tiny(arch, 1), GgmlType::F32);
    let src = GgufFile::from_bytes(bytes).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        if let Some(nv) = f(k, v) {
            w.add(k, nv);
        }
    }
    for t in src.tensors() {
        w.add_tensor(&t.name, &t.dims, t.ggml_type, src.tensor_data(t).to_vec())
            .unwrap();
    }
    w.to_bytes()
}

fn load_err(bytes: Vec<u8>) -> String {
    let f = Arc::new(GgufFile::from_bytes(bytes).unwrap());
    match Model::from_file(f, 1) {
        Ok(_) => panic!("model loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_architecture_is_named() {
    let e = load_err(rewrite(Arch::Llama, |k, v| {
        Some(if k == "general.architecture" {
            Value::String("mamba9".into())
        } else {
            v.clone()
        })
    }));
    assert!(e.contains("mamba9"), "{e}");
}

#[test]
fn missing_hyperparameter_is_named() {
    let e = load_err(rewrite(Arch::Qwen3, |k, v| {
        (k != "qwen3.block_count").then(|| v.clone())
    }));
    assert!(e.contains("qwen3.block_count"), "{e}");
}

#[test]
fn wrong_shape_is_named() {
    let e = load_err(rewrite(Arch::Llama, |k, v| {
        Some(if k == "llama.feed_forward_length" {
            Value::U32(64)
        } else {
            v.clone()
        })
    }));
    assert!(e.contains("ffn_gate.weight") && e.contains("shape"), "{e}");
}

/// A logits vector handed back is refilled by the next pass on the same
/// thread (the same allocation), with the numbers a fresh one gets.
#[test]
fn recycled_logits_are_reused_and_refilled() {
    let m = common::tiny(Arch::Llama, 9);
    let model = common::load(&m, GgmlType::Q8_0, 2);
    let last = |model: &Model| {
        let mut cache = model.new_cache(64);
        let mut items = [BatchItem {
            cache: &mut cache,
            tokens: &TOKENS,
            want: Want::Last,
            adapter: None,
        }];
        model.forward(&mut items).unwrap().remove(0)
    };
    let first = last(&model);
    let expect = first.clone();
    let ptr = first.as_ptr();
    model.recycle_logits(first);
    let second = last(&model);
    assert_eq!(second.as_ptr(), ptr, "the recycled vector was not reused");
    assert!(second == expect, "a recycled vector changed the logits");
    // A prompt's every-position logits go back too, and change nothing.
    model.recycle_logits(run_all(&model, &TOKENS));
    assert!(last(&model) == expect);
}
